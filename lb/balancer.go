package lb

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"tslb/config"
	"tslb/nat"
)

// Options are the parts of a Balancer that are not configuration.
// The zero value means: AF_PACKET links, slog's default logger, wall clock.
type Options struct {
	Logger *slog.Logger
	// Open opens a link by interface name; nil means OpenAFPacket.
	Open func(name string) (LinkIO, LinkInfo, error)
	// Seed seeds the flow hash and port choice; 0 means random.
	Seed uint64
}

type service struct {
	name     string
	vip      nat.Addr4
	port     uint16
	ts       config.TSMode
	tsAction nat.TSAction
	sched    Scheduler
	backends []*backend

	hc            *config.HealthCheck
	timeWaitNs    int64 // the backends' TIME_WAIT (services[].time_wait)
	noISN         bool  // isn_translation: false
	exhaustion    string
	exhaustWaitNs int64

	created   prometheus.Counter
	active    prometheus.Gauge
	refused   [3]prometheus.Counter // table_full, no_backend, snat_exhausted
	exhausted [numExhaust]prometheus.Counter
}

const (
	refusedTableFull = iota
	refusedNoBackend
	refusedSNAT
)

type backend struct {
	ap     netip.AddrPort
	addr   nat.Addr4
	port   uint16
	weight int // 0: drained (weight 0 or drain: true)
	link   *link
	hop    nat.Addr4
	*backendState
}

// backendState is the part of a backend that outlives reloads.
type backendState struct {
	up         atomic.Bool  // health: false after fall failed checks
	flows      atomic.Int64 // live flows, for least_conn
	created    prometheus.Counter
	active     prometheus.Gauge
	collisions [numSignatures]prometheus.Counter
	repairs    prometheus.Counter
}

type link struct {
	name    string
	io      LinkIO
	mac     nat.MAC
	mtu     int
	subnets []netip.Prefix
	gw      nat.Addr4
	hasGW   bool
	idx     int // position in Balancer.links
	neigh   *neighTable

	rxPackets, rxBytes, txPackets, txBytes prometheus.Counter
	arpReq, arpReply, arpGratuitous        prometheus.Counter
}

type ownedKind uint8

const (
	ownedVIP ownedKind = iota + 1
	ownedSNAT
	ownedKernel // health.source: the kernel's, frames to it are ignored
)

type svcKey struct {
	vip  nat.Addr4
	port uint16
}

// Balancer is a running tslb datapath built from one configuration.
type Balancer struct {
	log  *slog.Logger
	seed uint64

	links []*link
	snap  atomic.Pointer[snapshot]
	flows *flowTable
	m     *metrics

	timeouts [8]atomic.Int64 // by nat.ConnState, ns
	now      atomic.Int64

	waitq    waitQueue
	noRepair atomic.Bool
	pcapDir  string
	pcapMax  int

	reloadMu sync.Mutex
	health   healthSet
	stopping atomic.Bool // SIGTERM: no new flows

	closeOnce sync.Once
}

// New builds a Balancer from cfg and opens its links. cfg must be valid
// (config.Parse validated it); it is not modified.
func New(cfg *config.Config, opts Options) (*Balancer, error) {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Open == nil {
		opts.Open = OpenAFPacket
	}
	if opts.Seed == 0 {
		opts.Seed = rand.Uint64()
	}
	b := &Balancer{
		log:     opts.Logger,
		seed:    opts.Seed,
		pcapDir: cfg.Detector.PcapDir,
		pcapMax: cfg.Detector.PcapMaxFiles,
	}
	b.waitq.keys = make(map[flowKey]bool)
	if b.pcapMax <= 0 {
		b.pcapMax = config.DefaultPcapMaxFiles
	}
	b.now.Store(time.Now().UnixNano())
	b.flows = newFlowTable(cfg.Flows.Max, b.seed)
	b.applyTimeouts(cfg)

	// Links first: services need them to route to backends.
	for _, lc := range cfg.Links {
		io, info, err := opts.Open(lc.Interface)
		if err != nil {
			b.closeLinks()
			return nil, err
		}
		name := lc.Name
		if name == "" {
			name = lc.Interface
		}
		l := &link{name: name, io: io, mac: info.MAC, mtu: info.MTU, subnets: lc.Subnets,
			idx: len(b.links), neigh: newNeighTable()}
		if lc.Gateway.IsValid() {
			l.gw, l.hasGW = nat.Addr4From(lc.Gateway), true
		}
		b.links = append(b.links, l)
	}
	b.m = newMetrics(b)
	for _, l := range b.links {
		l.rxPackets = b.m.packets.WithLabelValues(l.name, "rx")
		l.txPackets = b.m.packets.WithLabelValues(l.name, "tx")
		l.rxBytes = b.m.bytes.WithLabelValues(l.name, "rx")
		l.txBytes = b.m.bytes.WithLabelValues(l.name, "tx")
		l.arpReq = b.m.arpSent.WithLabelValues(l.name, "request")
		l.arpReply = b.m.arpSent.WithLabelValues(l.name, "reply")
		l.arpGratuitous = b.m.arpSent.WithLabelValues(l.name, "gratuitous")
	}

	s, err := b.buildSnapshot(cfg, nil)
	if err != nil {
		b.closeLinks()
		return nil, err
	}
	b.snap.Store(s)
	b.m.configVersion.Set(0)
	if cfg.StateFile != "" {
		n, err := b.loadState(cfg.StateFile)
		if err != nil {
			b.log.Warn("state file not loaded: TIME_WAIT ledger starts empty", "file", cfg.StateFile, "err", err)
		} else if n > 0 {
			b.log.Info("TIME_WAIT ledger restored", "file", cfg.StateFile, "tuples", n)
		}
	}
	return b, nil
}

func less(a, b nat.Addr4) bool {
	for i := range a {
		if a[i] != b[i] {
			return a[i] < b[i]
		}
	}
	return false
}

// route returns the link and next hop for dst: dst itself if a link's
// subnet holds it, else the gateway.
func (b *Balancer) route(dst nat.Addr4) (*link, nat.Addr4) {
	a := dst.Netip()
	for _, l := range b.links {
		for _, p := range l.subnets {
			if p.Contains(a) {
				return l, dst
			}
		}
	}
	for _, l := range b.links {
		if l.hasGW {
			return l, l.gw
		}
	}
	return nil, nat.Addr4{}
}

// Registry is the Prometheus registry holding tslb's metrics.
func (b *Balancer) Registry() *prometheus.Registry { return b.m.reg }

// MetricsHandler serves the metrics in the Prometheus text format.
func (b *Balancer) MetricsHandler() http.Handler {
	return promhttp.HandlerFor(b.m.reg, promhttp.HandlerOpts{Registry: b.m.reg})
}

// Config is the configuration running now.
func (b *Balancer) Config() *config.Config { return b.snap.Load().cfg }

// FlowCount is the number of flows in the table.
func (b *Balancer) FlowCount() int { return int(b.flows.count.Load()) }

// Run runs the datapath until ctx is done: one worker per link, a clock, a
// reaper, the health checkers. When ctx ends it stops gracefully: new SYNs
// are refused (counted as shutting_down) while established flows go on,
// until none is left or shutdown.timeout passes; then it closes the links
// and saves the TIME_WAIT ledger to state_file. Run returns nil after a
// clean stop, or the first link error that stopped a worker.
func (b *Balancer) Run(ctx context.Context) error {
	inner, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	errc := make(chan error, len(b.links))
	for _, l := range b.links {
		w := b.newWorker(l)
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := w.run(inner); err != nil {
				errc <- err
				cancel()
			}
		}()
	}
	b.announce()
	wg.Add(1)
	go func() {
		defer wg.Done()
		b.housekeeping(inner)
	}()
	b.health.apply(b, b.snap.Load())
	select {
	case <-ctx.Done():
		b.drain()
	case <-inner.Done(): // a link failed
	}
	b.health.stopAll()
	cancel()
	b.closeLinks() // unblocks the readers
	wg.Wait()
	if path := b.snap.Load().cfg.StateFile; path != "" {
		if n, err := b.saveState(path); err != nil {
			b.log.Error("state file not saved", "file", path, "err", err)
		} else {
			b.log.Info("TIME_WAIT ledger saved", "file", path, "tuples", n)
		}
	}
	select {
	case err := <-errc:
		return err
	default:
		return nil
	}
}

// drain refuses new flows and waits, up to shutdown.timeout, until no flow
// is open (every one finished, reset or timed out).
func (b *Balancer) drain() {
	b.stopping.Store(true)
	timeout := b.snap.Load().cfg.Shutdown.Timeout
	if timeout <= 0 {
		return
	}
	deadline := time.Now().Add(timeout)
	open := b.openFlows()
	b.log.Info("stopping: no new flows; waiting for open flows", "open", open, "timeout", timeout)
	for open > 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
		open = b.openFlows()
	}
	if open > 0 {
		b.log.Warn("stopping with flows still open", "open", open)
	}
}

// openFlows counts flows not yet finished (neither in TIME_WAIT nor closed).
func (b *Balancer) openFlows() int {
	n := 0
	for i := range b.flows.shards {
		sh := &b.flows.shards[i]
		sh.mu.Lock()
		for k, f := range sh.m {
			if k != f.clientKey() {
				continue
			}
			if st := nat.ConnState(f.state.Load()); st != nat.StateTimeWait && st != nat.StateClosed {
				n++
			}
		}
		sh.mu.Unlock()
	}
	return n
}

// Stopping reports whether Run is refusing new flows because it is
// stopping.
func (b *Balancer) Stopping() bool { return b.stopping.Load() }

func (b *Balancer) closeLinks() {
	b.closeOnce.Do(func() {
		for _, l := range b.links {
			l.io.Close()
		}
	})
}

// announce sends a gratuitous ARP for every owned address on each link so
// that switches and neighbours learn tslb's MAC at once.
func (b *Balancer) announce() {
	buf := make([]byte, nat.VirtioNetHdrLen+64)
	s := b.snap.Load()
	for _, l := range b.links {
		for a := range s.linkOwned[l.idx] {
			n := nat.BuildARP(buf[nat.VirtioNetHdrLen:], nat.ARPRequest, l.mac, broadcast, l.mac, a, nat.MAC{}, a)
			clear(buf[:nat.VirtioNetHdrLen])
			if err := l.io.WriteFrame(buf[:nat.VirtioNetHdrLen+n]); err == nil {
				l.arpGratuitous.Inc()
			}
		}
	}
}

var broadcast = nat.MAC{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}

// housekeeping advances the coarse clock every millisecond, retries SYNs
// held by the wait policy every 10 ms, reaps expired flows and neighbour
// entries every 250 ms (one quarter of the shards each time) and updates
// the TIME_WAIT rates every second. Its own worker (no link of its own)
// re-runs held SYNs through the datapath.
func (b *Balancer) housekeeping(ctx context.Context) {
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	hk := b.newWorker(nil)
	var expired []*flow
	next := 0
	start := time.Now()
	lastReap, lastWait, lastRate := start, start, start
	for {
		select {
		case <-ctx.Done():
			return
		case t := <-tick.C:
			now := t.UnixNano()
			b.now.Store(now)
			if t.Sub(lastWait) >= 10*time.Millisecond {
				lastWait = t
				b.retryWaiting(hk, now)
			}
			if d := t.Sub(lastRate); d >= time.Second {
				lastRate = t
				for _, p := range b.snap.Load().snat.pools() {
					p.tick(d.Seconds())
				}
			}
			if t.Sub(lastReap) < 250*time.Millisecond {
				continue
			}
			lastReap = t
			for i := 0; i < numShards/4; i++ {
				expired = b.flows.collect(next, expired[:0], func(f *flow) bool { return b.expired(f, now) })
				for _, f := range expired {
					b.flowExpired(f)
				}
				next = (next + 1) % numShards
			}
			if next == 0 {
				for _, l := range b.links {
					if n := l.neigh.expire(now); n > 0 {
						b.m.dropByReason[dropNeighbour].Add(float64(n))
					}
				}
			}
		}
	}
}

func (b *Balancer) expired(f *flow, now int64) bool {
	return now-f.last.Load() > b.timeouts[f.state.Load()].Load()
}

func (b *Balancer) flowExpired(f *flow) {
	b.m.flowsExpired.WithLabelValues(nat.ConnState(f.state.Load()).String()).Inc()
	b.removeFlow(f)
}

// releaseTuple returns the backend tuple of a finished flow (TIME_WAIT or
// RST) to its pool at once, into the TIME_WAIT ledger if the backend keeps
// it, instead of holding it for the flow's timeout: the ledger, not the
// flow table, decides when the tuple may carry a new SYN. The flow leaves
// the backend side of the table; its client key stays until it times out.
func (b *Balancer) releaseTuple(f *flow) {
	f.mu.Lock()
	if f.dead || f.released.Load() {
		f.mu.Unlock()
		return
	}
	rec := b.ledgerRecord(f)
	f.released.Store(true)
	f.mu.Unlock()
	b.flows.removeKey(f.backendKey(), f)
	f.pool.release(f.sport, b.now.Load(), rec)
}

// removeFlow takes f out of the table and returns its SNAT tuple to the
// pool, into the TIME_WAIT ledger if the backend may still hold it.
func (b *Balancer) removeFlow(f *flow) {
	f.mu.Lock()
	if f.dead {
		f.mu.Unlock()
		return
	}
	f.dead = true
	first, reset := f.tr.ClosedFirst, f.tr.ResetBy
	rec := b.ledgerRecord(f)
	x := f.x
	released := f.released.Swap(true)
	f.mu.Unlock()
	b.flows.remove(f)
	if !released {
		f.pool.release(f.sport, b.now.Load(), rec)
	}
	f.svc.active.Dec()
	f.be.active.Dec()
	f.be.flows.Add(-1)
	b.m.translationEvents(&x)
	if c := f.capt.Load(); c != nil {
		b.writeCapture(c)
	}
	switch {
	case first == nat.SideClient:
		b.m.flowsClosed.WithLabelValues("client").Inc()
	case first == nat.SideBackend:
		b.m.flowsClosed.WithLabelValues("backend").Inc()
	case reset != nat.SideNone:
		b.m.flowsClosed.WithLabelValues("reset").Inc()
	}
}
