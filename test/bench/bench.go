package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"tslb/config"
	"tslb/test/harness"
	"tslb/test/lab"
)

// Cell names.
const (
	CellNFTStrip        = "nft-strip"
	CellNFTPass         = "nft-pass"
	CellHAProxy         = "haproxy"
	CellTSLBStrip       = "tslb-strip"
	CellTSLBPass        = "tslb-pass"
	CellTSLBRewrite     = "tslb-rewrite"
	CellTSLBStripBroken = "tslb-strip-broken"
	CellDirect          = "direct"
)

// AllCells lists every known cell; DefaultCells is the default matrix.
var (
	AllCells     = []string{CellNFTStrip, CellNFTPass, CellHAProxy, CellTSLBStrip, CellTSLBPass, CellTSLBRewrite, CellTSLBStripBroken, CellDirect}
	DefaultCells = []string{CellNFTStrip, CellNFTPass, CellHAProxy, CellTSLBStrip, CellTSLBPass, CellTSLBRewrite}
)

// Fixed workload parameters.
const (
	vipPort     = 80
	backendPort = 8080
	backendTW   = 60 // Linux's TIME_WAIT, seconds; not configurable
	// The request/response phase runs on a service of its own, so its
	// tuples never meet the HTTP phases' TIME_WAIT.
	rrVIPPort     = 81
	rrBackendPort = 8081
)

// Config configures a run. Zero fields mean the defaults noted; the
// defaults take about 2 minutes for DefaultCells.
type Config struct {
	// Binary is the tslb binary for tslb cells (required for them).
	Binary string
	// Cells to run, in order (nil means DefaultCells).
	Cells []string
	// Rate is the open-loop connection rate per second (0 means 100).
	Rate float64
	// Conns is the number of open-loop connections (0 means Rate ×
	// Duration).
	Conns int
	// Duration bounds the open-loop schedule (0 means 12 s).
	Duration time.Duration
	// Ports is the size of the SNAT port range, from PortMin (0 means 256
	// from 20000): the pressure knob.
	Ports   int
	PortMin uint16
	// Backends and Clients are the number of namespaces (0 means 2 each).
	Backends, Clients int
	// CTTimeWait is the conntrack TIME_WAIT timeout of the nft cells (0
	// means 5 s: a balancer that reuses ports early; Linux's default is
	// 120 s).
	CTTimeWait time.Duration
	// ClosedFor and BulkFor are the lengths of the closed-loop and bulk
	// runs (0 means 3 s and 2 s; negative skips the run).
	ClosedFor, BulkFor time.Duration
	// Workers is the closed-loop concurrency (0 means 32).
	Workers int
	// RRFor is the length of the request/response run (0 means 5 s;
	// negative skips it). RRConns connections (0 means 64, at most 4096)
	// each carry one request of RRSize bytes (0 means 64, at most
	// lab.MaxRRSize) and its answer of the same size at a time.
	RRFor   time.Duration
	RRConns int
	RRSize  int
	// Timeout bounds each connection, connect and answer (0 means 5 s, so
	// a SYN retransmitted at 1 s and 3 s still connects).
	Timeout time.Duration
	// BackendTSOff turns the backends' TCP timestamps off.
	BackendTSOff bool
	// OutDir receives the result files and pcaps ("" writes none).
	OutDir string
	// KeepPcap writes DIR/<cell>-collisions.pcap with the first collisions.
	KeepPcap bool
	// Progress receives a progress line per second (nil: none).
	Progress io.Writer
	// LogLevel is tslb's log level ("" means warn).
	LogLevel string
	// TSLBWorkers and TSLBIO are the tslb cells' datapath.workers and
	// datapath.io (0 and "" mean the harness defaults: 2 workers, ring).
	TSLBWorkers int
	TSLBIO      string
	// IPv6 runs every cell over IPv6: dual-stack labs whose VIP, SNAT
	// address and backends are IPv6 (nftables table ip6, HAProxy and tslb
	// on IPv6 addresses).
	IPv6 bool
	// NewLab builds each cell's lab (nil means lab.New). Tests pass a
	// function around lab.NewT. The cell closes the lab when it ends;
	// Lab.Close is idempotent.
	NewLab func(lab.Config) (*lab.Lab, error)
}

func (c Config) withDefaults() (Config, error) {
	if c.Cells == nil {
		c.Cells = DefaultCells
	}
	if c.Rate == 0 {
		c.Rate = 100
	}
	if c.Duration == 0 {
		c.Duration = 12 * time.Second
	}
	if c.Conns == 0 {
		c.Conns = int(c.Rate * c.Duration.Seconds())
	}
	if c.Ports == 0 {
		c.Ports = 256
	}
	if c.PortMin == 0 {
		c.PortMin = 20000
	}
	if c.Backends == 0 {
		c.Backends = 2
	}
	if c.Clients == 0 {
		c.Clients = 2
	}
	if c.CTTimeWait == 0 {
		c.CTTimeWait = 5 * time.Second
	}
	if c.ClosedFor == 0 {
		c.ClosedFor = 3 * time.Second
	}
	if c.BulkFor == 0 {
		c.BulkFor = 2 * time.Second
	}
	if c.Workers == 0 {
		c.Workers = 32
	}
	if c.RRFor == 0 {
		c.RRFor = 5 * time.Second
	}
	if c.RRConns == 0 {
		c.RRConns = 64
	}
	if c.RRSize == 0 {
		c.RRSize = 64
	}
	if c.Timeout == 0 {
		c.Timeout = 5 * time.Second
	}
	if c.LogLevel == "" {
		c.LogLevel = "warn"
	}
	switch {
	case c.Rate < 0 || c.Rate > 100000:
		return c, fmt.Errorf("bench: rate %v out of range 1..100000", c.Rate)
	case c.Conns < 1 || c.Conns > 1000000:
		return c, fmt.Errorf("bench: conns %d out of range 1..1000000", c.Conns)
	case c.Ports < 1 || int(c.PortMin)+c.Ports-1 > 65535:
		return c, fmt.Errorf("bench: port range %d+%d out of 1..65535", c.PortMin, c.Ports)
	case c.Backends < 1 || c.Clients < 1 || c.Backends+c.Clients > 89:
		return c, fmt.Errorf("bench: backends %d and clients %d must be >= 1, together at most 89", c.Backends, c.Clients)
	case c.CTTimeWait < time.Second:
		return c, fmt.Errorf("bench: ct-timewait %v must be at least 1s", c.CTTimeWait)
	case c.Duration < 0 || c.Timeout < 0 || c.Workers < 0:
		return c, errors.New("bench: negative duration, timeout or workers")
	case c.RRConns < 1 || c.RRConns > 4096:
		return c, fmt.Errorf("bench: rr-conns %d out of range 1..4096", c.RRConns)
	case c.RRSize < 1 || c.RRSize > lab.MaxRRSize:
		return c, fmt.Errorf("bench: rr-size %d out of range 1..%d", c.RRSize, lab.MaxRRSize)
	case c.RRFor > 10*time.Minute:
		return c, fmt.Errorf("bench: rr-duration %v longer than 10m", c.RRFor)
	}
	for _, name := range c.Cells {
		if !known(name) {
			return c, fmt.Errorf("bench: unknown cell %q (known: %s)", name, strings.Join(AllCells, ", "))
		}
	}
	return c, nil
}

func known(name string) bool {
	for _, n := range AllCells {
		if n == name {
			return true
		}
	}
	return false
}

// Run runs every cell of cfg one after another and returns the report. A
// cell that cannot start is reported with its status and error; Run
// returns an error only for a bad Config or a cancelled ctx. If OutDir is
// set the result files are written there.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	r := &Report{Schema: SchemaVersion, Started: time.Now().UTC().Truncate(time.Second), Machine: machine(), Config: ConfigJSON{
		Cells: cfg.Cells, Rate: cfg.Rate, Conns: cfg.Conns, Ports: cfg.Ports, PortMin: cfg.PortMin, Backends: cfg.Backends,
		Clients: cfg.Clients, CTTimeWaitS: cfg.CTTimeWait.Seconds(), DurationS: cfg.Duration.Seconds(),
		ClosedS: max(0, cfg.ClosedFor.Seconds()), BulkS: max(0, cfg.BulkFor.Seconds()), Workers: cfg.Workers,
		TimeoutS: cfg.Timeout.Seconds(), BackendTS: !cfg.BackendTSOff, BackendTWSec: backendTW,
		RRConns: cfg.RRConns, RRS: max(0, cfg.RRFor.Seconds()), RRSize: cfg.RRSize, RRVIPPort: rrVIPPort, RRBackendPort: rrBackendPort,
		IPv6: cfg.IPv6}}
	if cfg.OutDir != "" {
		if err := os.MkdirAll(cfg.OutDir, 0o755); err != nil {
			return nil, fmt.Errorf("bench: %w", err)
		}
	}
	for i, name := range cfg.Cells {
		if err := ctx.Err(); err != nil {
			return r, err
		}
		cell := runCell(ctx, cfg, name, fmt.Sprintf("%d/%d", i+1, len(cfg.Cells)))
		r.Cells = append(r.Cells, cell)
	}
	rrCPU(r.Cells)
	if cfg.OutDir != "" {
		if err := r.WriteFiles(cfg.OutDir); err != nil {
			return r, err
		}
	}
	return r, ctx.Err()
}

// balancer is a started balancer of one cell.
type balancer struct {
	desc string
	stop func() error
	// tslb is set for tslb cells.
	tslb *harness.TSLB
	// cpuNote describes the CPU figure; kernel is true for nft cells.
	cpuNote string
	kernel  bool
}

// runCell builds the cell's lab, starts its balancer, runs the phases and
// tears everything down.
func runCell(ctx context.Context, cfg Config, name, pos string) (cell Cell) {
	cell = Cell{Name: name, Status: StatusOK}
	progress := func(format string, a ...any) {
		if cfg.Progress != nil {
			fmt.Fprintf(cfg.Progress, "\r[%s %s] "+format+"\033[K", append([]any{pos, name}, a...)...)
		}
	}
	fail := func(status string, err error) Cell {
		cell.Status, cell.Error = status, oneLine(err.Error())
		if cfg.Progress != nil {
			fmt.Fprintf(cfg.Progress, "\r[%s %s] %s: %v\033[K\n", pos, name, status, err)
		}
		return cell
	}
	progress("building lab")
	lc := lab.Config{Clients: cfg.Clients, Backends: cfg.Backends, IPv6: cfg.IPv6}
	switch name {
	case CellNFTStrip, CellNFTPass, CellHAProxy:
		lc.Mode = lab.ModeKernelNAT
		lc.NAT = lab.NATConfig{VIPPort: vipPort, BackendPort: backendPort, PortMin: cfg.PortMin,
			PortMax: cfg.PortMin + uint16(cfg.Ports-1), StripTS: name == CellNFTStrip, CTTimeWait: cfg.CTTimeWait,
			ExtraPorts: []lab.PortMap{{VIPPort: rrVIPPort, BackendPort: rrBackendPort}}}
	case CellDirect:
		// The extra backend namespaces are the clients: on the backends'
		// bridge, no balancer in between.
		lc.Backends = cfg.Backends + cfg.Clients
	}
	if name == CellHAProxy {
		if _, err := exec.LookPath("haproxy"); err != nil {
			return fail(StatusUnavailable, fmt.Errorf("haproxy not installed (test/setup-debian.sh installs it): %w", err))
		}
	}
	newLab := cfg.NewLab
	if newLab == nil {
		newLab = lab.New
	}
	l, err := newLab(lc)
	if err != nil {
		return fail(StatusFailed, err)
	}
	defer l.Close()
	backends := l.Backends
	clientNS := l.Clients
	if name == CellDirect {
		backends, clientNS = l.Backends[:cfg.Backends], l.Backends[cfg.Backends:]
	}
	if cfg.BackendTSOff {
		for _, b := range backends {
			if err := b.Sysctl("net.ipv4.tcp_timestamps", "0"); err != nil {
				return fail(StatusFailed, err)
			}
		}
	}
	if _, err := l.StartBackends(lab.ServerConfig{Port: backendPort, CloseFirst: true}); err != nil {
		return fail(StatusFailed, err)
	}
	if cfg.RRFor > 0 {
		if _, err := l.StartRRServers(lab.RRConfig{Port: rrBackendPort, Size: cfg.RRSize}); err != nil {
			return fail(StatusFailed, err)
		}
	}
	dir := cfg.OutDir
	if dir == "" {
		if dir, err = os.MkdirTemp("", "tslb-bench-"); err != nil {
			return fail(StatusFailed, err)
		}
		defer os.RemoveAll(dir)
	}
	cellDir := filepath.Join(dir, name)
	if err := os.MkdirAll(cellDir, 0o755); err != nil {
		return fail(StatusFailed, err)
	}
	progress("starting balancer")
	b, err := startBalancer(ctx, cfg, name, l, cellDir)
	if err != nil {
		st := StatusFailed
		if errors.Is(err, exec.ErrNotFound) {
			st = StatusUnavailable
		}
		return fail(st, err)
	}
	defer func() {
		if err := b.stop(); err != nil && cell.Status == StatusOK {
			cell.Status, cell.Error = StatusFailed, fmt.Sprintf("stopping the balancer: %v", err)
		}
	}()
	cell.Balancer = b.desc

	var targets []Target
	var dialers []*Dialer
	for i, ns := range clientNS {
		d := NewDialer(ns)
		defer d.Close()
		dialers = append(dialers, d)
		dst := netip.AddrPortFrom(l.VIP, vipPort)
		if name == CellDirect {
			dst = netip.AddrPortFrom(backends[i%len(backends)].Addr, backendPort)
		}
		targets = append(targets, Target{Dialer: d, Dst: dst})
	}
	// For the direct cell every client namespace must reach every
	// backend: spread the targets over both.
	if name == CellDirect && len(backends) > 1 {
		var ts []Target
		for i := range max(len(clientNS), len(backends)) * len(backends) {
			t := targets[i%len(targets)]
			ts = append(ts, Target{Dialer: t.Dialer, Dst: netip.AddrPortFrom(backends[i%len(backends)].Addr, backendPort)})
		}
		targets = ts
	}

	// Warm up ARP and the balancer: one connection per client namespace,
	// outside the measurement (it takes a port of the range like any other).
	for _, t := range targets[:len(clientNS)] {
		exchange(ctx, t.Dialer, t.Dst, request(t.Dst), cfg.Timeout, time.Time{}, make([]byte, 4096))
	}

	meter := cpuMeter{ns: l.LB.Name, process: !b.kernel}
	m0 := meter.sample()

	// Open loop, captured between balancer and backends.
	var capt, ccapt *lab.Capture
	if name != CellDirect {
		capt, err = l.Switch.Capture("lbb", cfg.Conns*16+2000)
		if err != nil {
			return fail(StatusFailed, err)
		}
		// The clients' side shows whether an old ACK reached the client
		// and how the client's SYN was retransmitted.
		ccapt, err = l.Switch.Capture("lbc", cfg.Conns*16+2000)
		if err != nil {
			return fail(StatusFailed, err)
		}
	}
	var started atomic.Int64
	t0 := time.Now()
	stopTick := ticker(func() {
		progress("open loop %4.1fs  %d/%d connects started", time.Since(t0).Seconds(), started.Load(), cfg.Conns)
	})
	conns := OpenLoop(ctx, targets, cfg.Conns, cfg.Rate, cfg.Timeout, cfg.Duration, &started)
	openCPU := meter.since(m0)
	stopTick()
	var open *OpenStats
	open, cell.ConnectMS = summarizeOpen(conns)
	open.CPU = openCPU
	cell.Open = open
	if capt != nil {
		frames := capt.Stop()
		var coll []int
		st := Analyze(frames, backendPort, &coll)
		st.Dropped = capt.Dropped()
		cell.Capture = &st
		if cfg.KeepPcap && cfg.OutDir != "" && len(coll) > 0 {
			p := filepath.Join(cfg.OutDir, name+"-collisions.pcap")
			if err := lab.WritePcap(p, collisionFrames(frames, coll, backendPort, 20)); err == nil {
				cell.Pcap = p
			}
		}
	}
	if ccapt != nil {
		st := Analyze(ccapt.Stop(), vipPort, nil)
		st.Dropped = ccapt.Dropped()
		cell.ClientCapture = &st
	}
	if b.tslb != nil {
		if m, err := b.tslb.Metrics(ctx); err == nil {
			cell.TSLB = map[string]float64{
				"collisions_old_ack":        m.Sum("tslb_collisions_total", "signature=old_ack"),
				"collisions_rst_on_syn":     m.Sum("tslb_collisions_total", "signature=rst_on_syn"),
				"collisions_syn_retransmit": m.Sum("tslb_collisions_total", "signature=syn_retransmit"),
				"alloc_fresh":               m.Sum("tslb_snat_allocations_total", "kind=fresh"),
				"alloc_early_reuse_ts":      m.Sum("tslb_snat_allocations_total", "kind=early_reuse_ts"),
				"alloc_early_reuse_isn":     m.Sum("tslb_snat_allocations_total", "kind=early_reuse_isn"),
				"alloc_forced":              m.Sum("tslb_snat_allocations_total", "kind=forced"),
				"syn_refused":               m.Sum("tslb_syn_refused_total"),
				"exhaustion_waited":         m.Sum("tslb_snat_exhaustion_total", "outcome=waited"),
				"exhaustion_wait_timeout":   m.Sum("tslb_snat_exhaustion_total", "outcome=wait_timeout"),
				"collision_repairs":         m.Sum("tslb_collision_repairs_total"),
			}
		}
	}

	if cfg.ClosedFor > 0 {
		var done atomic.Int64
		t1 := time.Now()
		stop := ticker(func() {
			progress("closed loop %4.1fs  %d requests", time.Since(t1).Seconds(), done.Load())
		})
		m := meter.sample()
		cr := ClosedLoop(ctx, targets, cfg.Workers, cfg.ClosedFor, cfg.Timeout, &done)
		cpu := meter.since(m)
		stop()
		cell.Closed = &ClosedStats{Requests: cr.OK, Errors: cr.Errors, PerSecond: float64(cr.OK) / cr.Elapsed.Seconds(), DurationS: cr.Elapsed.Seconds(), CPU: cpu}
	}
	if cfg.BulkFor > 0 {
		progress("bulk %v", cfg.BulkFor)
		m := meter.sample()
		n, el, err := Bulk(ctx, targets[0], cfg.BulkFor)
		bs := &BulkStats{Bytes: n, DurationS: el.Seconds(), CPU: meter.since(m)}
		if el > 0 {
			bs.Gbps = float64(n) * 8 / el.Seconds() / 1e9
		}
		if err != nil {
			bs.Error = err.Error()
		}
		cell.Bulk = bs
	}

	if cfg.RRFor > 0 {
		// Last, on its own service: the phases above run as they did
		// before it existed.
		progress("request/response: opening %d connections", cfg.RRConns)
		var bs []netip.Addr
		for _, b := range backends {
			bs = append(bs, b.Addr)
		}
		rc := dialRR(ctx, rrTargets(dialers, bs, l.VIP, name == CellDirect, cfg.RRConns), cfg.RRConns, cfg.Timeout)
		var done atomic.Int64
		t2 := time.Now()
		stop := ticker(func() {
			progress("request/response %4.1fs  %d transactions on %d connections", time.Since(t2).Seconds(), done.Load(), len(rc.fds))
		})
		// The client loops and the servers' loops block in epoll_wait;
		// with a P for each, a loop woken by the kernel never waits for
		// the Go scheduler to hand it one (which showed as 10 ms p99
		// stalls in the direct cell with GOMAXPROCS = 2).
		loops := runtime.NumCPU()
		prev := runtime.GOMAXPROCS(max(runtime.GOMAXPROCS(0), loops+len(l.Backends)+2))
		rx0, rxErr := tslbRxFrames(ctx, b.tslb)
		m := meter.sample()
		res := runRR(ctx, rc.fds, cfg.RRSize, cfg.RRFor, cfg.Timeout, loops, &done)
		cpu := meter.since(m)
		rx1, rxErr1 := tslbRxFrames(ctx, b.tslb)
		runtime.GOMAXPROCS(prev)
		stop()
		cell.RR = summarizeRR(cfg.RRConns, rc, cfg.RRSize, res, cpu)
		rc.close()
		if rxErr == nil && rxErr1 == nil && res.Transactions > 0 {
			v := (rx1 - rx0) / float64(res.Transactions)
			cell.RR.TSLBFramesPerTx = &v
		}
	}

	phases := cell.phaseCPU()
	cell.CPU = sumCPU(b.cpuNote, phases[:]...)
	if cfg.Progress != nil {
		rr := ""
		if cell.RR != nil {
			rr = fmt.Sprintf("; RR %.0f tx/s, %d errors", cell.RR.PerSecond, cell.RR.Errors+cell.RR.ConnectErrors)
		}
		fmt.Fprintf(cfg.Progress, "\r[%s %s] %d/%d ok, %d failed, %d > 500 ms, p99 %s ms%s\033[K\n", pos, name,
			open.Succeeded, open.Attempted, open.Failed(), open.Slow500, ms(open.ConnectP99MS), rr)
	}
	return cell
}

// tslbRxFrames returns the frames tslb has received on all links so far
// (an error if t is nil: not a tslb cell).
func tslbRxFrames(ctx context.Context, t *harness.TSLB) (float64, error) {
	if t == nil {
		return 0, errors.New("bench: not a tslb cell")
	}
	m, err := t.Metrics(ctx)
	if err != nil {
		return 0, err
	}
	return m.Sum("tslb_link_packets_total", "direction=rx"), nil
}

// rrTargets returns one target per request/response connection:
// connection i comes from dialers[i%len(dialers)] and goes to the VIP's
// request/response port, or for the direct cell to backend
// (i/len(dialers))%len(backends), so that every client namespace reaches
// every backend.
func rrTargets(dialers []*Dialer, backends []netip.Addr, vip netip.Addr, direct bool, n int) []Target {
	ts := make([]Target, n)
	for i := range ts {
		ts[i] = Target{Dialer: dialers[i%len(dialers)], Dst: netip.AddrPortFrom(vip, rrVIPPort)}
		if direct {
			ts[i].Dst = netip.AddrPortFrom(backends[i/len(dialers)%len(backends)], rrBackendPort)
		}
	}
	return ts
}

// oneLine folds s into one line of at most 300 bytes, keeping the end
// (where a process's log says why it stopped).
func oneLine(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 300 {
		s = "..." + s[len(s)-297:]
	}
	return s
}

// ticker calls f every second until the returned stop is called.
func ticker(f func()) (stop func()) {
	done := make(chan struct{})
	exited := make(chan struct{})
	go func() {
		defer close(exited)
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				f()
			}
		}
	}()
	return func() { close(done); <-exited }
}

// startBalancer starts the cell's balancer in l.
func startBalancer(ctx context.Context, cfg Config, name string, l *lab.Lab, dir string) (*balancer, error) {
	pmax := cfg.PortMin + uint16(cfg.Ports-1)
	switch name {
	case CellNFTStrip, CellNFTPass:
		d := fmt.Sprintf("nftables DNAT+SNAT, conntrack TIME_WAIT %v", cfg.CTTimeWait)
		if name == CellNFTStrip {
			d += ", TS option reset on SYNs"
		}
		return &balancer{desc: d, stop: func() error { return nil }, kernel: true,
			cpuNote: "kernel softirq; not attributable to a process"}, nil
	case CellDirect:
		return &balancer{desc: "none: clients on the backends' bridge", stop: func() error { return nil }, kernel: true,
			cpuNote: "no balancer"}, nil
	case CellHAProxy:
		return startHAProxy(l, dir, cfg.PortMin, pmax)
	}
	o := tslbOptions(cfg, name, dir)
	if cfg.Binary == "" {
		return nil, errors.New("bench: no tslb binary given")
	}
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	t, err := harness.Start(sctx, l, o)
	if err != nil {
		return nil, err
	}
	desc := fmt.Sprintf("tslb timestamps: %s", o.Timestamps)
	if name == CellTSLBStripBroken {
		desc += ", isn_translation off, exhaustion reuse, no repair (a naive stripping balancer)"
	}
	return &balancer{desc: desc, tslb: t, cpuNote: "tslb process (utime+stime)", stop: func() error {
		code, err := t.Stop(10 * time.Second)
		if err == nil && code != 0 {
			err = fmt.Errorf("tslb exited with code %d: %s", code, t.Log())
		}
		return err
	}}, nil
}

// tslbOptions returns the harness options of tslb cell name: the HTTP
// service VIP:80 → backends:8080 and the request/response service
// VIP:81 → backends:8081, with the cell's timestamp mode and policies.
func tslbOptions(cfg Config, name, dir string) harness.Options {
	o := harness.Options{Binary: cfg.Binary, Dir: dir, PortMin: cfg.PortMin, PortMax: cfg.PortMin + uint16(cfg.Ports-1), LogLevel: cfg.LogLevel,
		Port: vipPort, BackendPort: backendPort, ExtraPorts: []lab.PortMap{{VIPPort: rrVIPPort, BackendPort: rrBackendPort}},
		Workers: cfg.TSLBWorkers, IO: cfg.TSLBIO, IPv6: cfg.IPv6}
	switch name {
	case CellTSLBStrip:
		o.Timestamps = config.TSStrip
	case CellTSLBPass:
		o.Timestamps = config.TSPassthrough
	case CellTSLBRewrite:
		o.Timestamps = config.TSRewrite
	case CellTSLBStripBroken:
		o.Timestamps, o.NoISN, o.Exhaustion, o.NoRepair = config.TSStrip, true, config.ExhaustReuse, true
	}
	return o
}

// haproxyConfig returns the HAProxy configuration of the haproxy cell: a
// TCP proxy on VIP:80 and one on VIP:81 (request/response), each
// round-robin to its backend port, connecting from snat:portMin-portMax.
// HAProxy sets TCP_NODELAY on both sides of every connection.
func haproxyConfig(vip, snat netip.Addr, backends []netip.Addr, portMin, portMax uint16) string {
	var s strings.Builder
	fmt.Fprintf(&s, "global\n  maxconn 8000\n\ndefaults\n  mode tcp\n  timeout connect 5s\n  timeout client 30s\n  timeout server 30s\n")
	for _, p := range []struct {
		name        string
		port, bport int
	}{{"", vipPort, backendPort}, {"_rr", rrVIPPort, rrBackendPort}} {
		fmt.Fprintf(&s, "\nfrontend fe%s\n  bind %s\n  default_backend be%s\n\nbackend be%s\n  balance roundrobin\n", p.name, netip.AddrPortFrom(vip, uint16(p.port)), p.name, p.name)
		for i, b := range backends {
			// [addr]:port works for both families (HAProxy ≥ 1.9).
			src := netip.AddrPortFrom(snat, portMin).String()
			fmt.Fprintf(&s, "  server b%d %s source %s-%d\n", i+1, netip.AddrPortFrom(b, uint16(p.bport)), src, portMax)
		}
	}
	return s.String()
}

// startHAProxy runs `haproxy -f cfg -db` in the lb namespace of a
// ModeKernelNAT lab whose nftables table it deletes first (the lb
// namespace keeps the VIP and SNAT addresses; forwarding is turned off).
func startHAProxy(l *lab.Lab, dir string, portMin, portMax uint16) (*balancer, error) {
	if err := l.StopKernelNAT(); err != nil {
		return nil, err
	}
	var bs []netip.Addr
	for _, b := range l.Backends {
		bs = append(bs, b.Addr)
	}
	path := filepath.Join(dir, "haproxy.cfg")
	if err := os.WriteFile(path, []byte(haproxyConfig(l.VIP, l.SNAT, bs, portMin, portMax)), 0o644); err != nil {
		return nil, err
	}
	logf, err := os.Create(filepath.Join(dir, "haproxy.log"))
	if err != nil {
		return nil, err
	}
	cmd := l.LB.Command(context.Background(), "haproxy", "-f", path, "-db")
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("bench: start haproxy: %w", err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait(); logf.Close() }()
	// Ready when VIP:80 accepts inside the lb namespace.
	deadline := time.Now().Add(10 * time.Second)
	for {
		select {
		case err := <-done:
			b, _ := os.ReadFile(logf.Name())
			return nil, fmt.Errorf("bench: haproxy exited during start (%v): %s", err, b)
		default:
		}
		c, err := l.LB.DialContext(context.Background(), "tcp", netip.AddrPortFrom(l.VIP, vipPort).String())
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			<-done
			return nil, fmt.Errorf("bench: haproxy not listening after 10 s: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	stop := func() error {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
			return nil
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
			return errors.New("bench: haproxy did not stop within 10 s of SIGTERM")
		}
	}
	return &balancer{desc: "HAProxy mode tcp (" + haproxyVersion() + ")", stop: stop, cpuNote: "haproxy process (utime+stime)"}, nil
}

// haproxyVersion returns the first line of `haproxy -v`, shortened.
func haproxyVersion() string {
	out, err := exec.Command("haproxy", "-v").Output()
	if err != nil {
		return "version unknown"
	}
	line, _, _ := strings.Cut(string(out), "\n")
	f := strings.Fields(line)
	if len(f) >= 3 {
		return "HAProxy " + f[2]
	}
	return line
}
