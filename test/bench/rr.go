package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/bits"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"tslb/test/lab"
)

// The request/response phase: many connections, each with one small
// message in flight (netperf TCP_RR). The connections are opened first
// (not timed); then every connection sends a request of size bytes, waits
// for the size-byte answer of lab.RRServer and sends the next, until the
// end of the run. With TCP_NODELAY on both ends every transaction is one
// segment each way, so transactions per second measure the balancer's
// per-packet cost, not what TCP coalesces.
//
// The client is a few epoll loops over raw non-blocking sockets (one per
// CPU): no goroutine per connection, no allocation per transaction, one
// read(2) and one write(2) per transaction.

// dialRaw connects a new non-blocking socket of d's namespace, with
// TCP_NODELAY, to dst before deadline and returns its fd. The fd is not
// registered with Go's poller: the caller owns it and closes it with
// unix.Close.
func (d *Dialer) dialRaw(ctx context.Context, dst netip.AddrPort, deadline time.Time) (int, error) {
	fd, sa, err := d.socket(ctx, dst)
	if err != nil {
		return -1, err
	}
	fail := func(err error) (int, error) {
		unix.Close(fd)
		return -1, err
	}
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1); err != nil {
		return fail(fmt.Errorf("bench: TCP_NODELAY: %w", err))
	}
	if err := unix.Connect(fd, sa); err != nil && !errors.Is(err, unix.EINPROGRESS) {
		return fail(err)
	}
	for {
		if err := ctx.Err(); err != nil {
			return fail(err)
		}
		left := time.Until(deadline)
		if left <= 0 {
			return fail(os.ErrDeadlineExceeded)
		}
		pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}
		n, err := unix.Poll(pfd, int(min(left, 100*time.Millisecond)/time.Millisecond)+1)
		if errors.Is(err, unix.EINTR) || n == 0 {
			continue
		}
		if err != nil {
			return fail(err)
		}
		break
	}
	v, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ERROR)
	if err != nil {
		return fail(err)
	}
	if v != 0 {
		return fail(syscall.Errno(v))
	}
	return fd, nil
}

// rrConns is a set of established request/response connections.
type rrConns struct {
	fds []int
	// failed counts connections that could not be established; errs
	// holds up to 5 of their errors.
	failed int
	errs   []string
}

// dialRR opens n connections, connection i from targets[i%len(targets)],
// each bounded by timeout, a few at a time. Connections that fail are
// counted, not retried.
func dialRR(ctx context.Context, targets []Target, n int, timeout time.Duration) *rrConns {
	s := &rrConns{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	for i := range n {
		t := targets[i%len(targets)]
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			fd, err := t.Dialer.dialRaw(ctx, t.Dst, time.Now().Add(timeout))
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				s.failed++
				if len(s.errs) < maxErrors {
					s.errs = append(s.errs, fmt.Sprintf("connect %v: %v", t.Dst, err))
				}
				return
			}
			s.fds = append(s.fds, fd)
		}()
	}
	wg.Wait()
	return s
}

// close closes every connection (the client closes first: the TIME_WAIT
// stays on the client).
func (s *rrConns) close() {
	for _, fd := range s.fds {
		unix.Close(fd)
	}
	s.fds = nil
}

// maxErrors is how many error messages a phase keeps.
const maxErrors = 5

// RRResult is the outcome of a request/response run.
type RRResult struct {
	// Transactions counts answers received complete and correct before
	// the end of the run; transactions in flight at the end are not
	// counted.
	Transactions int64
	// Errors counts connections lost during the run (reset, EOF, a wrong
	// answer, no answer within the timeout); a lost connection is not
	// reopened. FirstErrors holds up to 5 messages.
	Errors      int
	FirstErrors []string
	// Elapsed is the length of the run.
	Elapsed time.Duration
	// Latency is the histogram of transaction times (request written to
	// answer complete), in nanoseconds.
	Latency *Hist
}

// rrClientConn is the state of one client connection.
type rrClientConn struct {
	fd    int
	start time.Duration // when the current request was first written, since the run's base
	sent  int           // request bytes written
	got   int           // answer bytes received
	out   bool          // EPOLLOUT armed
	dead  bool
	idle  bool // the run ended: no new request
}

// runRR runs request/response transactions of size bytes on fds for dur
// with loops epoll loops (connections spread round-robin). A request not
// answered within timeout loses its connection. done, if not nil, counts
// transactions as they complete (updated in batches).
func runRR(ctx context.Context, fds []int, size int, dur, timeout time.Duration, loops int, done *atomic.Int64) RRResult {
	loops = max(1, min(loops, len(fds)))
	base := time.Now()
	res := RRResult{Elapsed: dur, Latency: &Hist{}}
	if len(fds) == 0 {
		return res
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for w := range loops {
		var mine []int
		for i := w; i < len(fds); i += loops {
			mine = append(mine, fds[i])
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rrLoop(ctx, mine, size, base, dur, timeout, done)
			mu.Lock()
			defer mu.Unlock()
			res.Transactions += r.Transactions
			res.Errors += r.Errors
			for _, e := range r.FirstErrors {
				if len(res.FirstErrors) < maxErrors {
					res.FirstErrors = append(res.FirstErrors, e)
				}
			}
			res.Latency.Merge(r.Latency)
		}()
	}
	wg.Wait()
	return res
}

// rrLoop is one epoll loop of runRR over fds; the run is [base, base+dur).
func rrLoop(ctx context.Context, fds []int, size int, base time.Time, dur, timeout time.Duration, done *atomic.Int64) RRResult {
	res := RRResult{Elapsed: dur, Latency: &Hist{}}
	fail := func(err error) RRResult {
		res.Errors = len(fds)
		res.FirstErrors = []string{err.Error()}
		return res
	}
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return fail(fmt.Errorf("bench: epoll_create1: %w", err))
	}
	defer unix.Close(epfd)
	conns := make([]rrClientConn, len(fds))
	for i, fd := range fds {
		conns[i] = rrClientConn{fd: fd}
		// The event carries the connection's index, not its fd.
		if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, fd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(i)}); err != nil {
			return fail(fmt.Errorf("bench: epoll_ctl: %w", err))
		}
	}
	req := bytes.Repeat([]byte{'q'}, size)
	want := lab.RRResponse(size)
	buf := make([]byte, size)
	var pending int64 // transactions not yet added to done
	lost := func(c *rrClientConn, i int, err error) {
		c.dead = true
		unix.EpollCtl(epfd, unix.EPOLL_CTL_DEL, c.fd, nil)
		res.Errors++
		if len(res.FirstErrors) < maxErrors {
			res.FirstErrors = append(res.FirstErrors, fmt.Sprintf("connection %d: %v", i, err))
		}
	}
	// send writes the rest of c's request, arming EPOLLOUT if the socket
	// takes only part of it.
	send := func(c *rrClientConn, i int) {
		for c.sent < size {
			n, err := unix.Write(c.fd, req[c.sent:])
			if errors.Is(err, unix.EAGAIN) {
				break
			}
			if err != nil {
				lost(c, i, err)
				return
			}
			c.sent += n
		}
		if want := c.sent < size; want != c.out {
			ev := uint32(unix.EPOLLIN)
			if want {
				ev |= unix.EPOLLOUT
			}
			if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_MOD, c.fd, &unix.EpollEvent{Events: ev, Fd: int32(i)}); err != nil {
				lost(c, i, err)
				return
			}
			c.out = want
		}
	}
	for i := range conns {
		c := &conns[i]
		c.start = time.Since(base)
		send(c, i)
	}
	events := make([]unix.EpollEvent, 256)
	lastCheck := time.Since(base)
	for {
		now := time.Since(base)
		if now >= dur {
			break
		}
		if now-lastCheck >= 50*time.Millisecond {
			// Unanswered requests and cancellation, every 50 ms.
			lastCheck = now
			if ctx.Err() != nil {
				break
			}
			for i := range conns {
				if c := &conns[i]; !c.dead && !c.idle && now-c.start > timeout {
					lost(c, i, fmt.Errorf("no answer within %v (%d of %d bytes)", timeout, c.got, size))
				}
			}
			if done != nil {
				done.Add(pending)
				pending = 0
			}
		}
		wait := int(min(dur-now, 50*time.Millisecond)/time.Millisecond) + 1
		n, err := unix.EpollWait(epfd, events, wait)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			for i := range conns {
				if !conns[i].dead {
					lost(&conns[i], i, fmt.Errorf("epoll_wait: %w", err))
				}
			}
			break
		}
		for _, ev := range events[:n] {
			i := int(ev.Fd)
			c := &conns[i]
			if c.dead {
				continue
			}
			if ev.Events&unix.EPOLLOUT != 0 {
				send(c, i)
				if c.dead {
					continue
				}
			}
			if ev.Events&(unix.EPOLLIN|unix.EPOLLERR|unix.EPOLLHUP) == 0 {
				continue
			}
			k, err := unix.Read(c.fd, buf[:size-c.got])
			switch {
			case errors.Is(err, unix.EAGAIN):
				continue
			case err != nil:
				lost(c, i, err)
				continue
			case k == 0:
				lost(c, i, errors.New("EOF before the answer"))
				continue
			case c.idle || c.sent < size:
				lost(c, i, errors.New("answer before the request was sent"))
				continue
			case !bytes.Equal(buf[:k], want[c.got:c.got+k]):
				lost(c, i, fmt.Errorf("wrong answer bytes at %d: %q", c.got, buf[:k]))
				continue
			}
			c.got += k
			if c.got < size {
				continue
			}
			t := time.Since(base)
			if t >= dur {
				c.idle = true // answered after the end: not counted
				continue
			}
			res.Latency.Add(int64(t - c.start))
			res.Transactions++
			pending++
			c.start, c.sent, c.got = t, 0, 0
			send(c, i)
		}
	}
	if done != nil {
		done.Add(pending)
	}
	return res
}

// Hist is a histogram of non-negative values (nanoseconds here) with a
// relative resolution of 1/128: values below 128 have a bucket each; above,
// every power of two is split into 128 equal buckets. Add and Quantile
// allocate nothing; the zero Hist is empty and ready.
type Hist struct {
	counts [histBuckets]uint64
	n      uint64
	max    int64
}

const (
	histSub     = 128 // buckets per power of two; also the exact range
	histShift   = 7   // log2(histSub)
	histBuckets = histSub + (63-histShift)*histSub
)

// histIndex returns the bucket of v >= 0.
func histIndex(v int64) int {
	if v < histSub {
		return int(v)
	}
	e := bits.Len64(uint64(v)) - histShift - 1 // v>>e is in [128, 256)
	return histSub + e*histSub + int(v>>e) - histSub
}

// histRange returns the smallest and largest value of bucket i.
func histRange(i int) (lo, hi int64) {
	if i < histSub {
		return int64(i), int64(i)
	}
	e := (i - histSub) / histSub
	m := int64((i-histSub)%histSub + histSub)
	return m << e, (m+1)<<e - 1
}

// Add records v (negative values count as 0).
func (h *Hist) Add(v int64) {
	v = max(v, 0)
	h.counts[histIndex(v)]++
	h.n++
	h.max = max(h.max, v)
}

// Merge adds every value of o to h.
func (h *Hist) Merge(o *Hist) {
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.n += o.n
	h.max = max(h.max, o.max)
}

// Count returns the number of values recorded.
func (h *Hist) Count() uint64 { return h.n }

// Max returns the largest value recorded (0 if none).
func (h *Hist) Max() int64 { return h.max }

// Quantile returns the nearest-rank p-th percentile (0 < p <= 100) as the
// middle of its bucket, never more than the largest value recorded: within
// 1/256 of the exact value. It returns 0 for an empty histogram.
func (h *Hist) Quantile(p float64) int64 {
	if h.n == 0 {
		return 0
	}
	rank := uint64(p / 100 * float64(h.n))
	if float64(rank) < p/100*float64(h.n)-1e-9 {
		rank++
	}
	rank = max(1, min(rank, h.n))
	var cum uint64
	for i, c := range h.counts {
		cum += c
		if cum >= rank {
			lo, hi := histRange(i)
			return min(lo+(hi-lo)/2, h.max)
		}
	}
	return h.max
}

// RR opens conns request/response connections (connection i to
// targets[i%len(targets)], each connect bounded by timeout), runs
// transactions of size bytes on them for dur with loops epoll loops, and
// closes them: the request/response phase of Run for other tests. A
// connection that could not be opened counts as an error, with its
// message in FirstErrors.
func RR(ctx context.Context, targets []Target, conns, size int, dur, timeout time.Duration, loops int) RRResult {
	rc := dialRR(ctx, targets, conns, timeout)
	defer rc.close()
	res := runRR(ctx, rc.fds, size, dur, timeout, loops, nil)
	res.Errors += rc.failed
	res.FirstErrors = append(rc.errs, res.FirstErrors...)
	return res
}
