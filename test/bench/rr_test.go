package bench

import (
	"context"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"tslb/test/lab"
)

func TestHistExactBelow128(t *testing.T) {
	var h Hist
	for v := int64(127); v >= 0; v-- {
		h.Add(v)
	}
	h.Add(-5) // counts as 0
	if h.Count() != 129 || h.Max() != 127 {
		t.Fatalf("count %d max %d", h.Count(), h.Max())
	}
	// Values 0,0,1,...,127: rank 65 of 129 is 63.
	for _, tt := range []struct {
		p    float64
		want int64
	}{{50, 63}, {1, 0}, {100, 127}, {99, 126}} {
		if got := h.Quantile(tt.p); got != tt.want {
			t.Errorf("Quantile(%v) = %d, want %d", tt.p, got, tt.want)
		}
	}
	var empty Hist
	if empty.Quantile(50) != 0 || empty.Max() != 0 {
		t.Error("empty histogram is not 0")
	}
}

func TestHistBuckets(t *testing.T) {
	for _, v := range []int64{128, 129, 255, 256, 257, 1000, 1 << 20, 123456789, 1<<40 + 12345, math.MaxInt64} {
		i := histIndex(v)
		if i < 0 || i >= histBuckets {
			t.Fatalf("histIndex(%d) = %d out of range", v, i)
		}
		lo, hi := histRange(i)
		if v < lo || v > hi {
			t.Errorf("%d not in its bucket %d [%d, %d]", v, i, lo, hi)
		}
		if float64(hi-lo+1) > float64(lo)/histSub+1 {
			t.Errorf("bucket %d [%d, %d] wider than 1/128 of its values", i, lo, hi)
		}
		if i > 0 {
			if plo, phi := histRange(i - 1); phi+1 != lo || plo > phi {
				t.Errorf("bucket %d [%d, %d] does not follow bucket %d ending at %d", i, lo, hi, i-1, phi)
			}
		}
	}
}

// TestHistQuantileMatchesPercentile compares the histogram with the exact
// nearest-rank Percentile of the same values (log-normal around 1 ms, as
// transaction times are).
func TestHistQuantileMatchesPercentile(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	var a, b Hist
	var exact []float64
	for i := range 50000 {
		v := int64(math.Exp(r.NormFloat64()*1.5) * 1e6)
		exact = append(exact, float64(v))
		if i%2 == 0 {
			a.Add(v)
		} else {
			b.Add(v)
		}
	}
	a.Merge(&b)
	slices.Sort(exact)
	if a.Count() != 50000 || a.Max() != int64(exact[len(exact)-1]) {
		t.Fatalf("merged count %d max %d, want 50000 and %v", a.Count(), a.Max(), exact[len(exact)-1])
	}
	for _, p := range []float64{1, 50, 90, 99, 99.9, 100} {
		want := Percentile(exact, p)
		got := float64(a.Quantile(p))
		if math.Abs(got-want) > want/256+1 {
			t.Errorf("Quantile(%v) = %v, exact %v: off by more than 1/256", p, got, want)
		}
	}
}

// rrServer is a request/response server on loopback in the test's own
// namespace. For every size-byte request it writes answer(i) for the i-th
// request of the connection, in two writes to exercise partial reads; a
// nil answer means none (the connection stays open), an empty one closes
// the connection. It returns its address and a
// function returning the requests it received.
func rrServer(t *testing.T, size int, answer func(i int) []byte) (netip.AddrPort, func() int64) {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var reqs atomic.Int64
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			c.(*net.TCPConn).SetNoDelay(true)
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				buf := make([]byte, size)
				for i := 0; ; i++ {
					if _, err := io.ReadFull(c, buf); err != nil {
						return
					}
					reqs.Add(1)
					a := answer(i)
					switch {
					case a == nil:
						io.Copy(io.Discard, c) // until the client or the cleanup closes
						return
					case len(a) == 0:
						return // close
					}
					half := len(a) / 2
					if _, err := c.Write(a[:half]); err != nil {
						return
					}
					if _, err := c.Write(a[half:]); err != nil {
						return
					}
				}
			}()
		}
	}()
	return netip.MustParseAddrPort(ln.Addr().String()), reqs.Load
}

// rawDial returns a connected non-blocking socket to ap, closed when the
// test ends.
func rawDial(t *testing.T, ap netip.AddrPort) int {
	t.Helper()
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	if err := unix.Connect(fd, &unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()}); err != nil {
		t.Fatal(err)
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		t.Fatal(err)
	}
	return fd
}

func TestRunRR(t *testing.T) {
	for _, tt := range []struct {
		name         string
		size, conns  int
		loops        int
		answer       func(size, i int) []byte
		timeout      time.Duration // 0: 5 s
		dur          time.Duration // 0: 300 ms
		wantErrors   int           // per connection: 0 or 1
		wantErr      string        // in FirstErrors
		wantTxPerCon int           // exact transactions per connection, 0: any > 0
	}{
		{name: "64 bytes, 8 connections, 2 loops", size: 64, conns: 8, loops: 2},
		{name: "3000 bytes, 3 connections, more loops than connections", size: 3000, conns: 3, loops: 5},
		{name: "one byte", size: 1, conns: 2, loops: 1},
		{name: "wrong answer", size: 64, conns: 3, loops: 2, answer: func(size, i int) []byte {
			a := lab.RRResponse(size)
			if i == 2 {
				a[size-1] ^= 1
			}
			return a
		}, wantErrors: 1, wantErr: "wrong answer", wantTxPerCon: 2},
		{name: "server closes", size: 64, conns: 2, loops: 1, answer: func(size, i int) []byte {
			if i == 4 {
				return []byte{}
			}
			return lab.RRResponse(size)
		}, wantErrors: 1, wantErr: "EOF before the answer", wantTxPerCon: 4},
		{name: "no answer", size: 64, conns: 2, loops: 2, timeout: 100 * time.Millisecond, dur: time.Second, answer: func(size, i int) []byte {
			if i == 3 {
				return nil
			}
			return lab.RRResponse(size)
		}, wantErrors: 1, wantErr: "no answer within 100ms", wantTxPerCon: 3},
	} {
		t.Run(tt.name, func(t *testing.T) {
			answer := tt.answer
			if answer == nil {
				answer = func(size, _ int) []byte { return lab.RRResponse(size) }
			}
			timeout := tt.timeout
			if timeout == 0 {
				timeout = 5 * time.Second
			}
			dur := tt.dur
			if dur == 0 {
				dur = 300 * time.Millisecond
			}
			addr, served := rrServer(t, tt.size, func(i int) []byte { return answer(tt.size, i) })
			var fds []int
			for range tt.conns {
				fds = append(fds, rawDial(t, addr))
			}
			var done atomic.Int64
			r := runRR(context.Background(), fds, tt.size, dur, timeout, tt.loops, &done)
			if r.Errors != tt.wantErrors*tt.conns {
				t.Errorf("%d errors, want %d: %v", r.Errors, tt.wantErrors*tt.conns, r.FirstErrors)
			}
			if tt.wantErr != "" && (len(r.FirstErrors) == 0 || !strings.Contains(r.FirstErrors[0], tt.wantErr)) {
				t.Errorf("first errors %q, want %q", r.FirstErrors, tt.wantErr)
			}
			if tt.wantTxPerCon > 0 && r.Transactions != int64(tt.wantTxPerCon*tt.conns) {
				t.Errorf("%d transactions, want %d", r.Transactions, tt.wantTxPerCon*tt.conns)
			}
			if r.Transactions == 0 {
				t.Fatal("no transaction")
			}
			if done.Load() != r.Transactions || r.Latency.Count() != uint64(r.Transactions) || r.Elapsed != dur {
				t.Errorf("done %d, %d latencies, elapsed %v for %d transactions", done.Load(), r.Latency.Count(), r.Elapsed, r.Transactions)
			}
			// Every counted transaction was served; at most one request
			// per connection was still in flight at the end.
			if s := served(); s < r.Transactions || s > r.Transactions+int64(tt.conns) {
				t.Errorf("server saw %d requests for %d transactions on %d connections", s, r.Transactions, tt.conns)
			}
		})
	}
}

func TestRunRRNoConnections(t *testing.T) {
	r := runRR(context.Background(), nil, 64, time.Second, time.Second, 2, nil)
	if r.Transactions != 0 || r.Errors != 0 || r.Latency.Count() != 0 {
		t.Errorf("runRR without connections = %+v", r)
	}
}

func TestRRTargets(t *testing.T) {
	c1, c2 := &Dialer{}, &Dialer{}
	vip := netip.MustParseAddr("198.18.0.100")
	b1, b2 := netip.MustParseAddr("198.18.1.11"), netip.MustParseAddr("198.18.1.12")
	ts := rrTargets([]*Dialer{c1, c2}, []netip.Addr{b1, b2}, vip, false, 5)
	if len(ts) != 5 || ts[0].Dialer != c1 || ts[1].Dialer != c2 || ts[4].Dialer != c1 || ts[3].Dst != netip.AddrPortFrom(vip, 81) {
		t.Errorf("balancer targets %+v", ts)
	}
	// direct: every (client, backend) pair gets the same share.
	pairs := map[[2]any]int{}
	for _, tg := range rrTargets([]*Dialer{c1, c2}, []netip.Addr{b1, b2}, vip, true, 64) {
		if tg.Dst.Port() != 8081 {
			t.Fatalf("direct target %v, want a backend's port 8081", tg.Dst)
		}
		pairs[[2]any{tg.Dialer, tg.Dst.Addr()}]++
	}
	if len(pairs) != 4 {
		t.Errorf("direct pairs %v, want all four", pairs)
	}
	for p, n := range pairs {
		if n != 16 {
			t.Errorf("pair %v has %d connections, want 16", p, n)
		}
	}
}

func TestSummarizeRR(t *testing.T) {
	h := &Hist{}
	for i := int64(1); i <= 100; i++ {
		h.Add(i * 10000) // 0.01 .. 1 ms
	}
	rc := &rrConns{fds: []int{3, 4, 5}, failed: 1, errs: []string{"connect 198.18.0.100:81: refused"}}
	cpu := &PhaseCPU{SoftirqSystemS: 1}
	s := summarizeRR(4, rc, 64, RRResult{Transactions: 100, Errors: 1, FirstErrors: []string{"connection 2: EOF"}, Elapsed: 2 * time.Second, Latency: h}, cpu)
	if s.Conns != 4 || s.Established != 3 || s.ConnectErrors != 1 || s.Errors != 1 || s.SizeBytes != 64 || s.PerSecond != 50 || s.DurationS != 2 || s.CPU != cpu {
		t.Errorf("summary %+v", s)
	}
	if len(s.FirstErrors) != 2 || !strings.HasPrefix(s.FirstErrors[0], "connect") {
		t.Errorf("first errors %q, want the connect error first", s.FirstErrors)
	}
	if math.Abs(s.LatencyP50MS-0.5) > 0.5/256 || math.Abs(s.LatencyP99MS-0.99) > 0.99/256 || s.LatencyMaxMS != 1 {
		t.Errorf("latencies p50 %v p99 %v max %v", s.LatencyP50MS, s.LatencyP99MS, s.LatencyMaxMS)
	}
}

func f64(v float64) *float64 { return &v }

func TestRRCPU(t *testing.T) {
	rr := func(tx int64, bal *float64, soft float64) *RRStats {
		return &RRStats{Transactions: tx, CPU: &PhaseCPU{BalancerS: bal, SoftirqSystemS: soft, GeneratorS: 2 * soft}}
	}
	cells := []Cell{
		{Name: CellNFTPass, RR: rr(200000, nil, 3)},    // 15 µs softirq/tx
		{Name: CellDirect, RR: rr(400000, nil, 2)},     // 5 µs softirq/tx
		{Name: CellHAProxy, RR: rr(100000, f64(2), 1)}, // 20 µs process/tx
		{Name: CellTSLBRewrite, RR: rr(0, f64(0.1), 0.1)},
		{Name: CellTSLBPass, RR: rr(50000, nil, 0.5)}, // process CPU unreadable
		{Name: CellNFTStrip},                          // RR skipped
	}
	rrCPU(cells)
	near := func(p *float64, want float64) bool { return p != nil && math.Abs(*p-want) < 1e-9 }
	nft, direct, hap, tslb0, tslbPass := cells[0].RR, cells[1].RR, cells[2].RR, cells[3].RR, cells[4].RR
	// (3 s − 2 s / 400000 × 200000) / 200000 = 10 µs.
	if !near(nft.BalancerUSPerTx, 10) || nft.BalancerMethod != RRMethodSoftirq || !near(nft.SoftirqUSPerTx, 15) {
		t.Errorf("nft-pass: %v µs/tx by %q, softirq %v", nft.BalancerUSPerTx, nft.BalancerMethod, nft.SoftirqUSPerTx)
	}
	if direct.BalancerUSPerTx != nil || direct.BalancerMethod != RRMethodNone || !near(direct.SoftirqUSPerTx, 5) || !near(direct.GeneratorUSPerTx, 10) {
		t.Errorf("direct: %v by %q, softirq %v", direct.BalancerUSPerTx, direct.BalancerMethod, direct.SoftirqUSPerTx)
	}
	if !near(hap.BalancerUSPerTx, 20) || hap.BalancerMethod != RRMethodProcess || !near(hap.SoftirqUSPerTx, 10) {
		t.Errorf("haproxy: %v by %q, softirq %v", hap.BalancerUSPerTx, hap.BalancerMethod, hap.SoftirqUSPerTx)
	}
	if tslb0.BalancerUSPerTx != nil || tslb0.SoftirqUSPerTx != nil || tslb0.GeneratorUSPerTx != nil || tslb0.BalancerMethod != RRMethodNone {
		t.Errorf("no transactions: %+v", tslb0)
	}
	if tslbPass.BalancerUSPerTx != nil || tslbPass.BalancerMethod != RRMethodNone || rrCPUText(tslbPass) != "–" {
		t.Errorf("unreadable process CPU: %+v", tslbPass)
	}
	if got := rrCPUText(nft); got != "10.0 (softirq)" {
		t.Errorf("nft text %q", got)
	}
	if got := rrCPUText(hap); got != "20.0" {
		t.Errorf("haproxy text %q", got)
	}

	// Without a direct cell (or one without transactions) nftables' figure
	// is not measured; the others do not change.
	for _, d := range []*RRStats{nil, rr(0, nil, 1)} {
		cells := []Cell{{Name: CellNFTStrip, RR: rr(1000, nil, 1)}, {Name: CellTSLBRewrite, RR: rr(1000, f64(0.01), 1)}}
		if d != nil {
			cells = append(cells, Cell{Name: CellDirect, RR: d})
		}
		rrCPU(cells)
		if n := cells[0].RR; n.BalancerUSPerTx != nil || n.BalancerMethod != RRMethodNeedsDirect || rrCPUText(n) != "n/a (needs direct)" || !near(n.SoftirqUSPerTx, 1000) {
			t.Errorf("nft without direct (%v): %+v", d, n)
		}
		if !near(cells[1].RR.BalancerUSPerTx, 10) {
			t.Errorf("tslb without direct: %v", cells[1].RR.BalancerUSPerTx)
		}
	}
}

func TestSumCPU(t *testing.T) {
	a := cpuSample{at: t0, proc: 10, procOK: true, soft: 100, self: 3}
	b := cpuSample{at: t0.Add(1500 * time.Millisecond), proc: 10.75, procOK: true, soft: 100.5, self: 4.25}
	p := phaseBetween(a, b)
	if p.BalancerS == nil || *p.BalancerS != 0.75 || p.SoftirqSystemS != 0.5 || p.GeneratorS != 1.25 || p.WallS != 1.5 {
		t.Errorf("phaseBetween = %+v", p)
	}
	b.procOK = false
	if p := phaseBetween(a, b); p.BalancerS != nil {
		t.Errorf("phaseBetween with an unread end = %v, want null", *p.BalancerS)
	}

	c := sumCPU("tslb", &PhaseCPU{BalancerS: f64(1), SoftirqSystemS: 0.5, GeneratorS: 2}, nil, &PhaseCPU{BalancerS: f64(0.25), SoftirqSystemS: 0.25, GeneratorS: 0.5})
	if c.BalancerS == nil || *c.BalancerS != 1.25 || c.SoftirqSystemS != 0.75 || c.GeneratorS != 2.5 || c.BalancerNote != "tslb" {
		t.Errorf("sumCPU = %+v", c)
	}
	c = sumCPU("kernel", &PhaseCPU{SoftirqSystemS: 1}, &PhaseCPU{BalancerS: f64(1), SoftirqSystemS: 1})
	if c.BalancerS != nil || c.SoftirqSystemS != 2 {
		t.Errorf("sumCPU with a null phase = %+v, want null balancer", c)
	}
	if c := sumCPU("none"); c.BalancerS != nil || c.SoftirqSystemS != 0 {
		t.Errorf("sumCPU() = %+v", c)
	}
}
