package link

import (
	"fmt"
	"time"

	"golang.org/x/sys/unix"
)

// Poller waits until one of a worker's queues has frames, a timeout
// passes, or another goroutine calls Wake. It polls the queues'
// descriptors together with an eventfd of its own, with poll(2).
type Poller struct {
	fds []unix.PollFd
	efd int
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
		}
	}
	return p, nil
}

// Wait blocks until a queue is readable, Wake is called, or timeout
// passes (a negative timeout waits without limit). It reports whether it
// was woken by Wake.
func (p *Poller) Wait(timeout time.Duration) (woken bool, err error) {
	ms := -1
	if timeout >= 0 {
		ms = int((timeout + time.Millisecond - 1) / time.Millisecond)
	}
	for i := range p.fds {
		p.fds[i].Revents = 0
	}
	_, err = unix.Poll(p.fds, ms)
	if err == unix.EINTR {
		err = nil
	}
	if err != nil {
		return false, fmt.Errorf("link: poll: %w", err)
	}
	if p.fds[0].Revents&unix.POLLIN != 0 {
		var buf [8]byte
		unix.Read(p.efd, buf[:])
		woken = true
	}
	return woken, nil
}

// Wake makes a current or the next Wait return at once. It is safe from
// any goroutine.
func (p *Poller) Wake() {
	one := [8]byte{1}
	unix.Write(p.efd, one[:])
}

// Close releases the eventfd.
func (p *Poller) Close() error { return unix.Close(p.efd) }
