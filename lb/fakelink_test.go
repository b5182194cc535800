package lb

import (
	"net"
	"sync"
	"testing"
	"time"
)

// fakeLink is an in-memory LinkIO. ReadFrame blocks until the test injects
// a frame (or the link is closed); WriteFrame records a copy of every frame
// the datapath writes on a channel the test reads. Frames in both
// directions start with the virtio_net_hdr, as on a real link.
type fakeLink struct {
	name string
	in   chan []byte // frames injected by the test, read by the datapath
	out  chan []byte // frames written by the datapath, read by the test

	closeOnce sync.Once
	done      chan struct{}
}

func newFakeLink(name string) *fakeLink {
	return &fakeLink{
		name: name,
		in:   make(chan []byte),
		out:  make(chan []byte, 4096),
		done: make(chan struct{}),
	}
}

// ReadFrame implements LinkIO. A frame longer than b is truncated, as a
// socket read into a short buffer would be.
func (l *fakeLink) ReadFrame(b []byte) (int, error) {
	select {
	case <-l.done:
		return 0, net.ErrClosed
	default:
	}
	select {
	case f := <-l.in:
		return copy(b, f), nil
	case <-l.done:
		return 0, net.ErrClosed
	}
}

// WriteFrame implements LinkIO. It keeps a copy: the datapath reuses its
// buffers.
func (l *fakeLink) WriteFrame(b []byte) error {
	c := append([]byte(nil), b...)
	select {
	case <-l.done:
		return net.ErrClosed
	default:
	}
	select {
	case l.out <- c:
		return nil
	case <-l.done:
		return net.ErrClosed
	}
}

// Close implements LinkIO; it unblocks ReadFrame and WriteFrame.
func (l *fakeLink) Close() error {
	l.closeOnce.Do(func() { close(l.done) })
	return nil
}

func (l *fakeLink) closed() bool {
	select {
	case <-l.done:
		return true
	default:
		return false
	}
}

// inject hands frame to the datapath. It fails the test if the link's
// worker does not take it in time (it is stuck, or the link is closed).
func (l *fakeLink) inject(t testing.TB, frame []byte) {
	t.Helper()
	select {
	case l.in <- frame:
	case <-l.done:
		t.Fatalf("%s: inject on a closed link", l.name)
	case <-time.After(5 * time.Second):
		t.Fatalf("%s: datapath did not read the injected frame", l.name)
	}
}

// next returns the next frame the datapath wrote, failing the test if none
// comes within the timeout.
func (l *fakeLink) next(t testing.TB) []byte {
	t.Helper()
	select {
	case f := <-l.out:
		return f
	case <-time.After(5 * time.Second):
		t.Fatalf("%s: no frame written within 5s", l.name)
		return nil
	}
}
