package link

import (
	"fmt"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// MemFrameCap is the capacity of each frame a Mem queue hands out: the
// largest frame it accepts (a virtio_net_hdr and a 64 KiB superframe)
// plus room to grow it.
const MemFrameCap = 10 + 14 + 65535 + 256

// Mem is an in-memory Queue for tests and benchmarks: the test injects
// frames (Inject) that Recv hands to the worker, and reads what the worker
// flushed (Out). Its descriptor is an eventfd that is readable while
// injected frames wait, so a Poller works over it as over a socket.
type Mem struct {
	name string

	mu   sync.Mutex
	in   [][]byte
	efd  int
	bufs [][]byte // frames handed out by the last Recv (owned)

	pending [][]byte
	out     chan []byte
	// FailSend makes Flush refuse every frame (counted as TxErrors), as
	// a full socket buffer would.
	FailSend atomic.Bool

	// recvErr, when set, is what the next Recv returns (once), as a
	// socket reports ENETDOWN when its interface goes down.
	recvErr   error
	c         counters
	closeOnce sync.Once
	done      chan struct{}
	pollers   pollerSet
}

// NewMem returns a Mem queue whose Out channel buffers outCap frames.
func NewMem(name string, outCap int) (*Mem, error) {
	efd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("link: eventfd: %w", err)
	}
	return &Mem{name: name, efd: efd, out: make(chan []byte, outCap), done: make(chan struct{})}, nil
}

// Name returns the name given to NewMem.
func (m *Mem) Name() string { return m.name }

// Inject queues a copy of frame for Recv. It fails after Close.
func (m *Mem) Inject(frame []byte) error { return m.InjectBatch(frame) }

// InjectBatch queues copies of frames at once, so that one Recv (of a
// large enough batch) returns them together, as a busy ring would.
func (m *Mem) InjectBatch(frames ...[]byte) error {
	cs := make([][]byte, len(frames))
	for i, f := range frames {
		cs[i] = append(make([]byte, 0, MemFrameCap), f...)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	select {
	case <-m.done:
		return ErrClosed
	default:
	}
	m.in = append(m.in, cs...)
	one := [8]byte{1}
	unix.Write(m.efd, one[:])
	return nil
}

// FailRecv makes the next Recv return err once (then frames flow again),
// and makes the queue readable so that a waiting worker sees it.
func (m *Mem) FailRecv(err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.recvErr = err
	one := [8]byte{1}
	unix.Write(m.efd, one[:])
}

// Pending returns how many injected frames Recv has not taken yet.
func (m *Mem) Pending() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.in)
}

// Out returns the frames the worker flushed, one copy each, in order.
func (m *Mem) Out() <-chan []byte { return m.out }

// Fd implements Queue.
func (m *Mem) Fd() int { return m.efd }

// Recv implements Queue.
func (m *Mem) Recv(frames [][]byte) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	select {
	case <-m.done:
		return 0, ErrClosed
	default:
	}
	if err := m.recvErr; err != nil {
		m.recvErr = nil
		if len(m.in) == 0 {
			var buf [8]byte
			unix.Read(m.efd, buf[:])
		}
		return 0, err
	}
	n := min(len(frames), len(m.in))
	for i := 0; i < n; i++ {
		frames[i] = m.in[i]
		m.c.local.RxFrames++
		m.c.local.RxBytes += uint64(max(len(m.in[i])-10, 0))
	}
	m.bufs = append(m.bufs[:0], m.in[:n]...)
	m.in = append(m.in[:0], m.in[n:]...)
	if len(m.in) == 0 {
		var buf [8]byte
		unix.Read(m.efd, buf[:])
	}
	m.c.publish()
	return n, nil
}

// Release implements Queue.
func (m *Mem) Release() { m.bufs = m.bufs[:0] }

// Send implements Queue.
func (m *Mem) Send(frame []byte) error {
	select {
	case <-m.done:
		return ErrClosed
	default:
	}
	m.pending = append(m.pending, frame)
	return nil
}

// Flush implements Queue: every pending frame is copied to Out (blocking
// while Out is full, until Close).
func (m *Mem) Flush() error {
	if m.Closed() {
		m.c.local.TxErrors += uint64(len(m.pending))
		m.pending = m.pending[:0]
		m.c.publish()
		return ErrClosed
	}
	defer func() { m.pending = m.pending[:0]; m.c.publish() }()
	for _, f := range m.pending {
		if m.FailSend.Load() {
			m.c.local.TxErrors++
			continue
		}
		c := append([]byte(nil), f...)
		select {
		case m.out <- c:
			m.c.local.TxFrames++
			m.c.local.TxBytes += uint64(max(len(f)-10, 0))
		case <-m.done:
			return ErrClosed
		}
	}
	return nil
}

// Stats implements Queue.
func (m *Mem) Stats() Stats { return m.c.load() }

// Closed reports whether Close was called.
func (m *Mem) Closed() bool {
	select {
	case <-m.done:
		return true
	default:
		return false
	}
}

// Close implements Queue. It wakes the Pollers built over m.
func (m *Mem) Close() error {
	m.closeOnce.Do(func() {
		m.mu.Lock()
		close(m.done)
		unix.Close(m.efd)
		m.mu.Unlock()
		m.pollers.wake()
	})
	return nil
}

func (m *Mem) wakeOnClose(p *Poller) { m.pollers.add(p) }

var _ Queue = (*Mem)(nil)
