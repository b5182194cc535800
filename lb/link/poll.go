package link

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Poller waits until one of a worker's queues has frames, a timeout
// passes, or another goroutine calls Wake. It watches the queues'
// descriptors together with an eventfd of its own in an epoll instance of
// its own, and waits for that epoll descriptor through the Go runtime's
// network poller: the waiting goroutine is parked, no OS thread blocks in
// a system call, so the runtime neither hands its P to another thread nor
// has to get one back at every wakeup (with a blocking poll(2) that cost
// was a good part of the datapath's CPU under request/response traffic).
// If the epoll descriptor cannot join the runtime's poller, Wait falls
// back to poll(2).
//
// Closing a queue wakes every Poller built over it: closing a descriptor
// does not wake a poll(2) already blocked on it (Linux keeps the file
// referenced by the waiter; the wait ends only at its timeout, then
// reporting POLLNVAL), so a queue's Close calls Wake on its Pollers. The
// worker then sees ErrClosed from Recv and must stop waiting on that
// queue: its descriptor number may be reused.
type Poller struct {
	// The pads keep each worker's Poller (written per wait: events, nev)
	// off the cache lines of the Poller allocated next to it.
	_   [64]byte
	fds []unix.PollFd
	qs  []Queue // qs[i] owns fds[i+1]

	// Spinning (SetSpin): queues whose readiness is a memory read.
	spin   time.Duration
	peek   []interface{ ready() bool }
	wakeup atomic.Bool // Wake was called (seen by a spinning Wait)

	mu     sync.Mutex // guards efd against Wake after Close
	efd    int
	closed bool

	// The epoll instance, parked on through the runtime's poller.
	ep     *os.File
	epRaw  syscall.RawConn
	epFd   int
	events [16]unix.EpollEvent
	nev    int
	waitFn func(fd uintptr) bool
	_      [64]byte
}

// NewPoller returns a Poller over the descriptors of qs (queues without
// one are skipped).
func NewPoller(qs []Queue) (*Poller, error) {
	efd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("link: eventfd: %w", err)
	}
	p := &Poller{efd: efd}
	p.fds = append(p.fds, unix.PollFd{Fd: int32(efd), Events: unix.POLLIN})
	for _, q := range qs {
		if fd := q.Fd(); fd >= 0 {
			p.fds = append(p.fds, unix.PollFd{Fd: int32(fd), Events: unix.POLLIN})
			p.qs = append(p.qs, q)
		}
		if w, ok := q.(interface{ wakeOnClose(*Poller) }); ok {
			w.wakeOnClose(p)
		}
		if r, ok := q.(interface{ ready() bool }); ok {
			p.peek = append(p.peek, r)
		}
	}
	p.openEpoll()
	return p, nil
}

// openEpoll sets up the epoll instance; on any failure the Poller keeps
// to poll(2).
func (p *Poller) openEpoll() {
	ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return
	}
	for i, fd := range p.fds {
		ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(i)}
		if unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, int(fd.Fd), &ev) != nil {
			unix.Close(ep)
			return
		}
	}
	if unix.SetNonblock(ep, true) != nil {
		unix.Close(ep)
		return
	}
	f := os.NewFile(uintptr(ep), "tslb-poller")
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return
	}
	// A deadline works only on a descriptor the runtime poller took: this
	// is how to know it did.
	if f.SetReadDeadline(time.Time{}) != nil {
		f.Close()
		return
	}
	p.ep, p.epRaw, p.epFd = f, rc, ep
	p.waitFn = func(fd uintptr) bool {
		n, err := p.epollNow(int(fd))
		if err != nil || n <= 0 {
			p.nev = 0
			return err != nil && err != unix.EINTR && err != unix.EAGAIN
		}
		p.nev = n
		return true
	}
}

// epollNow is epoll_wait with a zero timeout: it never sleeps, so it is a
// raw system call (no hand-off of the P).
func (p *Poller) epollNow(ep int) (int, error) {
	r, _, e := unix.RawSyscall6(unix.SYS_EPOLL_PWAIT, uintptr(ep), uintptr(unsafe.Pointer(&p.events[0])), uintptr(len(p.events)), 0, 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(r), nil
}

// waitEpoll is Wait through the runtime poller.
func (p *Poller) waitEpoll(deadline time.Time) (woken bool, err error) {
	n, err := p.epollNow(p.epFd)
	if err != nil && err != unix.EINTR {
		return false, fmt.Errorf("link: epoll_wait: %w", err)
	}
	p.nev = max(n, 0)
	if p.nev == 0 {
		if err := p.ep.SetReadDeadline(deadline); err != nil {
			return false, fmt.Errorf("link: poller deadline: %w", err)
		}
		if err := p.epRaw.Read(p.waitFn); err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				return false, nil
			}
			return false, fmt.Errorf("link: poller: %w", err)
		}
	}
	for _, ev := range p.events[:p.nev] {
		i := int(ev.Fd)
		switch {
		case i == 0:
			var buf [8]byte
			p.wakeup.Store(false)
			unix.Read(p.efd, buf[:])
			woken = true
		case ev.Events&unix.EPOLLERR != 0 && i-1 < len(p.qs):
			if e, ok := p.qs[i-1].(interface{ pollErr() }); ok {
				e.pollErr()
			}
		}
	}
	return woken, nil
}

// Wait blocks until a queue is readable, Wake is called, a queue is
// closed, or timeout passes (a negative timeout waits without limit). It
// reports whether it was woken by Wake (or a queue's Close). A signal
// does not end the wait early: poll(2) is restarted with the time left
// (the Go runtime's own signals interrupt it with EINTR).
func (p *Poller) Wait(timeout time.Duration) (woken bool, err error) {
	var deadline time.Time
	if timeout >= 0 {
		deadline = time.Now().Add(timeout)
	}
	if p.spin > 0 && len(p.peek) > 0 && p.spinning(deadline) {
		return false, nil
	}
	if p.ep != nil {
		return p.waitEpoll(deadline)
	}
	for {
		ms := -1
		if timeout >= 0 {
			left := time.Until(deadline)
			ms = int((max(left, 0) + time.Millisecond - 1) / time.Millisecond)
		}
		for i := range p.fds {
			p.fds[i].Revents = 0
		}
		_, err = unix.Poll(p.fds, ms)
		if err != unix.EINTR {
			break
		}
	}
	if err != nil {
		return false, fmt.Errorf("link: poll: %w", err)
	}
	if p.fds[0].Revents&unix.POLLIN != 0 {
		var buf [8]byte
		p.wakeup.Store(false)
		unix.Read(p.efd, buf[:])
		woken = true
	}
	// A pending socket error (ENETDOWN) makes poll(2) report POLLERR
	// until it is read; a ring queue reads it here and returns it from
	// its next Recv, so the worker does not spin.
	for i, fd := range p.fds[1:] {
		if fd.Revents&unix.POLLERR != 0 {
			if e, ok := p.qs[i].(interface{ pollErr() }); ok {
				e.pollErr()
			}
		}
	}
	return woken, nil
}

// SetSpin makes Wait, before it sleeps in poll(2), look at the rings of
// its ModeRing queues (a memory read each) for up to d, and return as
// soon as one has a frame. A worker that drains its rings faster than
// frames arrive otherwise sleeps and is woken (a context switch, and an
// inter-processor wakeup paid by the kernel's receive path) for almost
// every frame; spinning keeps it awake across short gaps at the price of
// up to d of CPU each time the link goes idle. 0 (the default) disables
// it. SetSpin must not be called while Wait runs.
func (p *Poller) SetSpin(d time.Duration) { p.spin = d }

// spinning looks at the rings until one has a frame (true), Wake is
// called, d passes, or the deadline (if set) passes.
func (p *Poller) spinning(deadline time.Time) bool {
	end := time.Now().Add(p.spin)
	if !deadline.IsZero() && deadline.Before(end) {
		end = deadline
	}
	for i := 0; ; i++ {
		for _, r := range p.peek {
			if r.ready() {
				return true
			}
		}
		if p.wakeup.Load() || (i%16 == 15 && time.Now().After(end)) {
			return false
		}
	}
}

// Wake makes a current or the next Wait return at once. It is safe from
// any goroutine, and a no-op after Close.
func (p *Poller) Wake() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return
	}
	p.wakeup.Store(true)
	one := [8]byte{1}
	unix.Write(p.efd, one[:])
}

// Close releases the eventfd and the epoll instance. It must not be
// called while Wait runs.
func (p *Poller) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil
	}
	p.closed = true
	if p.ep != nil {
		p.ep.Close()
	}
	return unix.Close(p.efd)
}

// pollerSet is the Pollers a queue wakes when it is closed.
type pollerSet struct {
	mu   sync.Mutex
	ps   []*Poller
	done bool // wake was called: later Pollers are woken at once
}

func (s *pollerSet) add(p *Poller) {
	s.mu.Lock()
	done := s.done
	if !done {
		s.ps = append(s.ps, p)
	}
	s.mu.Unlock()
	if done {
		p.Wake()
	}
}

func (s *pollerSet) wake() {
	s.mu.Lock()
	ps := s.ps
	s.ps, s.done = nil, true
	s.mu.Unlock()
	for _, p := range ps {
		p.Wake()
	}
}
