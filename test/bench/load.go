package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"tslb/test/lab"
)

// Outcome classifies one connection attempt.
type Outcome uint8

const (
	// OK: connected, sent a GET and read a complete 200 answer.
	OK Outcome = iota
	// Reset: ECONNRESET, ECONNREFUSED or EPIPE, in connect or later.
	Reset
	// Timeout: the connect or the request did not finish in time.
	Timeout
	// Other: any other error (bad answer, socket error).
	Other
)

// String returns the outcome's name as used in results.json.
func (o Outcome) String() string {
	switch o {
	case OK:
		return "ok"
	case Reset:
		return "reset"
	case Timeout:
		return "timeout"
	default:
		return "other"
	}
}

// Conn is the result of one connection attempt.
type Conn struct {
	// Start is when connect(2) was called.
	Start time.Time
	// Connect is the time from connect(2) to the socket being established;
	// zero if it never was.
	Connect time.Duration
	// Total is the time from connect(2) to the end of the answer or error.
	Total time.Duration
	// Outcome classifies the attempt; Err holds the error if not OK.
	Outcome Outcome
	Err     error
}

// Dialer creates TCP sockets inside one namespace and connects them. The
// socket is created on a thread that stays in the namespace (no setns per
// connection); connect and I/O happen on any thread, through Go's poller,
// so thousands of connections can be in flight.
type Dialer struct {
	ns   *lab.NS
	reqs chan sockReq
	done chan error
	once sync.Once
}

// sockReq asks the namespace thread for a socket of domain (AF_INET or
// AF_INET6).
type sockReq struct {
	domain int
	res    chan sockResult
}

type sockResult struct {
	fd  int
	err error
}

// NewDialer starts a Dialer for ns. Close it to free its thread.
func NewDialer(ns *lab.NS) *Dialer {
	d := &Dialer{ns: ns, reqs: make(chan sockReq), done: make(chan error, 1)}
	go func() {
		d.done <- ns.Do(func() error {
			for r := range d.reqs {
				fd, err := unix.Socket(r.domain, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
				r.res <- sockResult{fd, err}
			}
			return nil
		})
	}()
	return d
}

// Close stops the socket thread. It is idempotent.
func (d *Dialer) Close() {
	d.once.Do(func() {
		close(d.reqs)
		<-d.done
	})
}

// socket returns a new non-blocking TCP socket in the namespace, of dst's
// family, and dst as a socket address.
func (d *Dialer) socket(ctx context.Context, dst netip.AddrPort) (int, unix.Sockaddr, error) {
	fd, err := d.socketFD(ctx, dst)
	if err != nil {
		return -1, nil, err
	}
	if dst.Addr().Is4() {
		return fd, &unix.SockaddrInet4{Port: int(dst.Port()), Addr: dst.Addr().As4()}, nil
	}
	return fd, &unix.SockaddrInet6{Port: int(dst.Port()), Addr: dst.Addr().As16()}, nil
}

func (d *Dialer) socketFD(ctx context.Context, dst netip.AddrPort) (int, error) {
	r := make(chan sockResult, 1)
	domain := unix.AF_INET6
	if dst.Addr().Is4() {
		domain = unix.AF_INET
	}
	select {
	case d.reqs <- sockReq{domain, r}:
	case <-ctx.Done():
		return -1, ctx.Err()
	case err := <-d.done:
		d.done <- err
		return -1, fmt.Errorf("bench: dialer of %s stopped: %v", d.ns.Name, err)
	}
	res := <-r
	if res.err != nil {
		return -1, fmt.Errorf("bench: socket in %s: %w", d.ns.Name, res.err)
	}
	return res.fd, nil
}

// Dial connects to dst before deadline and returns the connected socket
// and the connect time (connect(2) to established).
func (d *Dialer) Dial(ctx context.Context, dst netip.AddrPort, deadline time.Time) (*os.File, time.Duration, error) {
	fd, sa, err := d.socket(ctx, dst)
	if err != nil {
		return nil, 0, err
	}
	start := time.Now()
	if err := unix.Connect(fd, sa); err != nil && !errors.Is(err, unix.EINPROGRESS) {
		unix.Close(fd)
		return nil, 0, err
	}
	f := os.NewFile(uintptr(fd), "tcp")
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, 0, err
	}
	f.SetWriteDeadline(deadline)
	var cerr error
	werr := rc.Write(func(fd uintptr) bool {
		v, err := unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_ERROR)
		if err != nil {
			cerr = err
			return true
		}
		if v != 0 {
			cerr = syscall.Errno(v)
			return true
		}
		if _, err := unix.Getpeername(int(fd)); err != nil {
			return false // still connecting: wait for writability
		}
		return true
	})
	el := time.Since(start)
	if werr == nil {
		werr = cerr
	}
	if werr != nil {
		f.Close()
		return nil, 0, werr
	}
	f.SetWriteDeadline(time.Time{})
	return f, el, nil
}

// request is the GET every connection sends; the server answers with its
// id and closes.
func request(host netip.AddrPort) []byte {
	return fmt.Appendf(nil, "GET / HTTP/1.1\r\nHost: %s\r\nUser-Agent: tslb-bench\r\n\r\n", host)
}

var ok200 = []byte("HTTP/1.1 200 ")

// exchange dials dst, sends req and reads the answer until the server
// closes, all before deadline.
// A zero end means no bound beyond timeout; otherwise the exchange also
// ends at end.
func exchange(ctx context.Context, d *Dialer, dst netip.AddrPort, req []byte, timeout time.Duration, end time.Time, buf []byte) Conn {
	c := Conn{Start: time.Now()}
	deadline := c.Start.Add(timeout)
	if !end.IsZero() && end.Before(deadline) {
		deadline = end
	}
	f, ct, err := d.Dial(ctx, dst, deadline)
	if err != nil {
		c.Total = time.Since(c.Start)
		c.Outcome, c.Err = classify(err), err
		return c
	}
	defer f.Close()
	c.Connect = ct
	f.SetDeadline(deadline)
	if _, err := f.Write(req); err != nil {
		c.Total = time.Since(c.Start)
		c.Outcome, c.Err = classify(err), err
		return c
	}
	n, head := 0, make([]byte, 0, len(ok200))
	for {
		k, err := f.Read(buf)
		if len(head) < len(ok200) {
			head = append(head, buf[:min(k, len(ok200)-len(head))]...)
		}
		n += k
		if err == io.EOF {
			break
		}
		if err != nil {
			c.Total = time.Since(c.Start)
			c.Outcome, c.Err = classify(err), err
			return c
		}
	}
	c.Total = time.Since(c.Start)
	if !bytes.Equal(head, ok200) {
		c.Outcome, c.Err = Other, fmt.Errorf("bench: bad answer %q (%d bytes)", head, n)
	}
	return c
}

// classify maps an error to an Outcome.
func classify(err error) Outcome {
	switch {
	case err == nil:
		return OK
	case errors.Is(err, unix.ECONNRESET), errors.Is(err, unix.ECONNREFUSED), errors.Is(err, unix.EPIPE):
		return Reset
	case errors.Is(err, os.ErrDeadlineExceeded), errors.Is(err, unix.ETIMEDOUT), errors.Is(err, context.DeadlineExceeded):
		return Timeout
	default:
		return Other
	}
}

// Target is one client namespace's dialer and the address it connects to.
type Target struct {
	Dialer *Dialer
	Dst    netip.AddrPort
}

// OpenLoop opens n connections at rate per second, round-robin over the
// targets, whatever the answers take (an open-loop load: a slow answer
// does not delay the next connection). Connection i starts at
// start + i/rate; the run stops scheduling at maxDur, and each connection
// is bounded by timeout. started, if not nil, counts connections started.
func OpenLoop(ctx context.Context, targets []Target, n int, rate float64, timeout, maxDur time.Duration, started *atomic.Int64) []Conn {
	res := make([]Conn, 0, n)
	var mu sync.Mutex
	var wg sync.WaitGroup
	reqs := make([][]byte, len(targets))
	for i, t := range targets {
		reqs[i] = request(t.Dst)
	}
	start := time.Now()
	bufs := sync.Pool{New: func() any { b := make([]byte, 4096); return &b }}
	for i := 0; i < n; i++ {
		at := start.Add(time.Duration(float64(i) / rate * float64(time.Second)))
		if at.Sub(start) > maxDur {
			break
		}
		if d := time.Until(at); d > 0 {
			t := time.NewTimer(d)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
			}
		}
		if ctx.Err() != nil {
			break
		}
		if started != nil {
			started.Add(1)
		}
		wg.Add(1)
		go func(t Target, req []byte) {
			defer wg.Done()
			bp := bufs.Get().(*[]byte)
			c := exchange(ctx, t.Dialer, t.Dst, req, timeout, time.Time{}, *bp)
			bufs.Put(bp)
			mu.Lock()
			res = append(res, c)
			mu.Unlock()
		}(targets[i%len(targets)], reqs[i%len(targets)])
	}
	wg.Wait()
	return res
}

// ClosedResult summarises a ClosedLoop run.
type ClosedResult struct {
	OK, Errors int
	Elapsed    time.Duration
}

// ClosedLoop keeps workers connections in flight for dur (each opens a
// connection, GETs, waits for the close, repeats) and counts the answers:
// the maximum request rate of new connections. Exchanges still running at
// the end of dur are cut and not counted.
func ClosedLoop(ctx context.Context, targets []Target, workers int, dur, timeout time.Duration, done *atomic.Int64) ClosedResult {
	var ok, bad atomic.Int64
	start := time.Now()
	end := start.Add(dur)
	ctx, cancel := context.WithDeadline(ctx, end)
	defer cancel()
	var wg sync.WaitGroup
	for w := range workers {
		t := targets[w%len(targets)]
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, buf := request(t.Dst), make([]byte, 4096)
			for ctx.Err() == nil {
				c := exchange(ctx, t.Dialer, t.Dst, req, timeout, end, buf)
				if c.Outcome != OK && !time.Now().Before(end) {
					return // cut by the end of the run: not counted
				}
				if c.Outcome == OK {
					ok.Add(1)
				} else {
					bad.Add(1)
				}
				if done != nil {
					done.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	return ClosedResult{OK: int(ok.Load()), Errors: int(bad.Load()), Elapsed: dur}
}

// Bulk downloads from t for dur on one connection (GET /bytes, as many as
// the backend may send) and returns the bytes received and the time.
func Bulk(ctx context.Context, t Target, dur time.Duration) (int64, time.Duration, error) {
	start := time.Now()
	f, _, err := t.Dialer.Dial(ctx, t.Dst, start.Add(5*time.Second))
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	end := time.Now().Add(dur)
	f.SetDeadline(end)
	req := fmt.Appendf(nil, "GET /bytes?n=%d&seed=1 HTTP/1.1\r\nHost: %s\r\n\r\n", int64(1)<<36, t.Dst)
	if _, err := f.Write(req); err != nil {
		return 0, 0, err
	}
	buf := make([]byte, 256<<10)
	var n int64
	t0 := time.Now()
	for {
		k, err := f.Read(buf)
		n += int64(k)
		if err != nil {
			el := time.Since(t0)
			if errors.Is(err, os.ErrDeadlineExceeded) {
				err = nil
			}
			return n, el, err
		}
	}
}
