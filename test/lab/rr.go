package lab

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// RRConfig configures the request/response servers started by
// Lab.StartRRServers.
type RRConfig struct {
	// Port is the TCP port to listen on (0 means 8081).
	Port int
	// Size is the size in bytes of every request and of every response
	// (0 means 64; at most MaxRRSize).
	Size int
}

// MaxRRSize bounds RRConfig.Size.
const MaxRRSize = 1 << 16

// maxRRConns bounds the connections one RRServer keeps open; more are
// accepted and closed at once.
const maxRRConns = 8192

// RRResponse returns the answer of an RRServer to one request of size
// bytes: size bytes of a fixed pattern, so a client can check every
// answer byte for byte.
func RRResponse(size int) []byte {
	b := make([]byte, max(size, 0))
	for i := range b {
		b[i] = 'a' + byte(i%26)
	}
	return b
}

// RRServer is a request/response server inside one backend namespace, the
// far end of a netperf TCP_RR-like load: on every connection it reads
// requests of Size bytes (any content) and answers each with
// RRResponse(Size), as soon as the whole request is in. TCP_NODELAY is set
// on every connection, so with one request in flight each transaction is
// one segment each way.
//
// One goroutine per server runs an epoll loop over the listener and all
// connections (no goroutine per connection, nothing allocated per
// transaction), so the server costs little CPU next to the balancer being
// measured. A client that pipelines requests gets every answer in order;
// while an answer cannot be written in full the connection is not read
// (backpressure).
type RRServer struct {
	// NS is the namespace the server listens in.
	NS *NS
	// ID is the backend's name, "b1", "b2", ...
	ID string
	// Addr is the listening address, e.g. 198.18.1.11:8081.
	Addr netip.AddrPort

	size       int
	lfd, epfd  int
	wake       int           // eventfd: written by Close to stop the loop
	done       chan struct{} // closed when the loop returned
	loopErr    error         // set by the loop before done is closed
	txs, conns atomic.Int64

	closeOnce sync.Once
	closeErr  error
}

// StartRRServers starts one RRServer per backend namespace, listening on
// the backend's address and cfg.Port. They are stopped by l.Close (or
// RRServer.Close). On error the servers already started by this call are
// closed.
func (l *Lab) StartRRServers(cfg RRConfig) ([]*RRServer, error) {
	if cfg.Port == 0 {
		cfg.Port = 8081
	}
	if cfg.Size == 0 {
		cfg.Size = 64
	}
	if cfg.Port < 0 || cfg.Port > 65535 {
		return nil, fmt.Errorf("lab: invalid RR port %d", cfg.Port)
	}
	if cfg.Size < 1 || cfg.Size > MaxRRSize {
		return nil, fmt.Errorf("lab: RR size %d out of range 1..%d", cfg.Size, MaxRRSize)
	}
	var out []*RRServer
	for i, ns := range l.Backends {
		s, err := startRRServer(ns, fmt.Sprintf("b%d", i+1), netip.AddrPortFrom(ns.Addr, uint16(cfg.Port)), cfg.Size)
		if err != nil {
			for _, s := range out {
				s.Close()
			}
			return nil, err
		}
		out = append(out, s)
	}
	l.mu.Lock()
	l.rrServers = append(l.rrServers, out...)
	l.mu.Unlock()
	return out, nil
}

// startRRServer creates the listening socket inside ns and starts the
// loop.
func startRRServer(ns *NS, id string, addr netip.AddrPort, size int) (*RRServer, error) {
	s := &RRServer{NS: ns, ID: id, Addr: addr, size: size, lfd: -1, epfd: -1, wake: -1, done: make(chan struct{})}
	fail := func(err error) (*RRServer, error) {
		for _, fd := range []int{s.lfd, s.epfd, s.wake} {
			if fd >= 0 {
				unix.Close(fd)
			}
		}
		return nil, fmt.Errorf("lab: RR server %s on %v: %w", id, addr, err)
	}
	err := ns.Do(func() error {
		domain := unix.AF_INET6
		var sa unix.Sockaddr = &unix.SockaddrInet6{Port: int(addr.Port()), Addr: addr.Addr().As16()}
		if addr.Addr().Is4() {
			domain, sa = unix.AF_INET, &unix.SockaddrInet4{Port: int(addr.Port()), Addr: addr.Addr().As4()}
		}
		fd, err := unix.Socket(domain, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		s.lfd = fd
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
			return err
		}
		if err := unix.Bind(fd, sa); err != nil {
			return err
		}
		return unix.Listen(fd, 1024)
	})
	if err != nil {
		return fail(err)
	}
	if s.epfd, err = unix.EpollCreate1(unix.EPOLL_CLOEXEC); err != nil {
		return fail(err)
	}
	if s.wake, err = unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC); err != nil {
		return fail(err)
	}
	for _, fd := range []int{s.lfd, s.wake} {
		if err := unix.EpollCtl(s.epfd, unix.EPOLL_CTL_ADD, fd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(fd)}); err != nil {
			return fail(err)
		}
	}
	go s.loop()
	return s, nil
}

// Transactions returns the number of complete requests received so far.
func (s *RRServer) Transactions() int64 { return s.txs.Load() }

// Accepted returns the number of connections accepted so far.
func (s *RRServer) Accepted() int64 { return s.conns.Load() }

// Close stops the loop, closes the listener and every connection (the
// clients see EOF) and waits for the loop. It is idempotent; it returns the
// error that stopped the loop early, if any.
func (s *RRServer) Close() error {
	s.closeOnce.Do(func() {
		var one [8]byte
		binary.NativeEndian.PutUint64(one[:], 1)
		unix.Write(s.wake, one[:])
		<-s.done
		if s.loopErr != nil {
			s.closeErr = fmt.Errorf("lab: RR server %s: %w", s.ID, s.loopErr)
		}
	})
	return s.closeErr
}

// rrServerConn is the state of one server connection.
type rrServerConn struct {
	// in is how many bytes of the current request have arrived.
	in int
	// owed is how many answer bytes are still to be written.
	owed int
	// writing is true while EPOLLOUT (and not EPOLLIN) is armed.
	writing bool
}

// loop serves until Close or an epoll error. It owns every fd of s.
func (s *RRServer) loop() {
	conns := make(map[int]*rrServerConn)
	defer func() {
		for fd := range conns {
			unix.Close(fd)
		}
		unix.Close(s.lfd)
		unix.Close(s.epfd)
		unix.Close(s.wake)
		close(s.done)
	}()
	buf := make([]byte, 64<<10)
	// out holds whole answers back to back: the answer stream is
	// RRResponse(size) repeated, so any pending suffix of it is a slice of
	// out.
	one := RRResponse(s.size)
	out := make([]byte, 0, max(len(buf), s.size)+s.size)
	for len(out) < max(len(buf), s.size) {
		out = append(out, one...)
	}
	drop := func(fd int) {
		unix.EpollCtl(s.epfd, unix.EPOLL_CTL_DEL, fd, nil)
		unix.Close(fd)
		delete(conns, fd)
	}
	// flush writes what c owes; it returns false if fd was dropped.
	flush := func(fd int, c *rrServerConn) bool {
		for c.owed > 0 {
			off := (s.size - c.owed%s.size) % s.size
			n, err := unix.Write(fd, out[off:off+min(c.owed, len(out)-off)])
			if errors.Is(err, unix.EAGAIN) {
				break
			}
			if err != nil {
				drop(fd)
				return false
			}
			c.owed -= n
		}
		want := c.owed > 0
		if want != c.writing {
			ev := uint32(unix.EPOLLIN)
			if want {
				ev = unix.EPOLLOUT
			}
			if err := unix.EpollCtl(s.epfd, unix.EPOLL_CTL_MOD, fd, &unix.EpollEvent{Events: ev, Fd: int32(fd)}); err != nil {
				drop(fd)
				return false
			}
			c.writing = want
		}
		return true
	}
	events := make([]unix.EpollEvent, 256)
	for {
		n, err := unix.EpollWait(s.epfd, events, -1)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			s.loopErr = fmt.Errorf("epoll_wait: %w", err)
			return
		}
		for _, ev := range events[:n] {
			fd := int(ev.Fd)
			switch fd {
			case s.wake:
				return
			case s.lfd:
				for {
					cfd, _, err := unix.Accept4(s.lfd, unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC)
					if err != nil {
						break // EAGAIN, or an aborted connection: try again on the next event
					}
					if len(conns) >= maxRRConns {
						unix.Close(cfd)
						continue
					}
					unix.SetsockoptInt(cfd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
					if err := unix.EpollCtl(s.epfd, unix.EPOLL_CTL_ADD, cfd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(cfd)}); err != nil {
						unix.Close(cfd)
						continue
					}
					conns[cfd] = &rrServerConn{}
					s.conns.Add(1)
				}
			default:
				c := conns[fd]
				if c == nil {
					continue
				}
				if c.writing {
					flush(fd, c)
					continue
				}
				k, err := unix.Read(fd, buf)
				if errors.Is(err, unix.EAGAIN) {
					continue
				}
				if err != nil || k == 0 {
					drop(fd) // EOF or error: the client is gone
					continue
				}
				total := c.in + k
				reqs := total / s.size
				c.in = total % s.size
				c.owed += reqs * s.size
				s.txs.Add(int64(reqs))
				flush(fd, c)
			}
		}
	}
}
