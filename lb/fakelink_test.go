package lb

import (
	"errors"
	"sync"
	"testing"
	"time"

	"tslb/lb/link"
)

// fakeLink is one link of the test harness: an in-memory link.Mem queue
// per worker. inject hands a frame to the worker the real fanout program
// would pick (the flow's owner); next returns the frames the datapath
// flushed on any of the link's queues. Frames in both directions start
// with the virtio_net_hdr, as on a real link.
type fakeLink struct {
	name  string
	qs    []*link.Mem
	steer link.Steering // the link's fanout program, as Open was given it
	out   chan []byte

	closeOnce sync.Once
	done      chan struct{}
}

func newFakeLink(name string, queues int, steer link.Steering) (*fakeLink, error) {
	l := &fakeLink{name: name, steer: steer, out: make(chan []byte, 4096), done: make(chan struct{})}
	for range queues {
		q, err := link.NewMem(name, 4096)
		if err != nil {
			return nil, err
		}
		l.qs = append(l.qs, q)
		go func() {
			for {
				select {
				case f := <-q.Out():
					select {
					case l.out <- f:
					case <-l.done:
						return
					}
				case <-l.done:
					return
				}
			}
		}()
	}
	return l, nil
}

// queues returns the link's queues as the datapath opens them.
func (l *fakeLink) queues() []link.Queue {
	out := make([]link.Queue, len(l.qs))
	for i, q := range l.qs {
		out[i] = q
	}
	return out
}

// owner is the queue the link's fanout program delivers frame to (its Go
// mirror, link.Steering.Pick): the worker owning the frame's flow.
func (l *fakeLink) owner(frame []byte) int {
	return l.steer.Pick(frame, len(l.qs))
}

// injectErr hands frame to its owner's queue; usable from any goroutine.
func (l *fakeLink) injectErr(frame []byte) error {
	select {
	case <-l.done:
		return errors.New(l.name + ": inject on a closed link")
	default:
	}
	return l.qs[l.owner(frame)].Inject(frame)
}

// inject hands frame to the datapath and fails the test if the link is
// closed.
func (l *fakeLink) inject(t testing.TB, frame []byte) {
	t.Helper()
	if err := l.injectErr(frame); err != nil {
		t.Fatal(err)
	}
}

// injectTo hands frame to queue i whatever its owner (a frame the fanout
// delivered to the wrong worker).
func (l *fakeLink) injectTo(t testing.TB, i int, frame []byte) {
	t.Helper()
	if err := l.qs[i].Inject(frame); err != nil {
		t.Fatal(err)
	}
}

// Close closes every queue.
func (l *fakeLink) Close() error {
	l.closeOnce.Do(func() {
		close(l.done)
		for _, q := range l.qs {
			q.Close()
		}
	})
	return nil
}

func (l *fakeLink) closed() bool {
	for _, q := range l.qs {
		if !q.Closed() {
			return false
		}
	}
	return true
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
