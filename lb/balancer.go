package lb

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/netip"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"tslb/config"
	"tslb/lb/cluster"
	"tslb/lb/cluster/bgp"
	"tslb/lb/link"
	"tslb/nat"
)

// Options are the parts of a Balancer that are not configuration.
// The zero value means: AF_PACKET links (link.Open), slog's default
// logger, the wall clock, a random seed.
type Options struct {
	Logger *slog.Logger
	// Open opens the queues of a link by interface name (one per worker,
	// cfg.Queues of them); nil means link.Open.
	Open func(name string, cfg link.Config) ([]link.Queue, link.Info, error)
	// Seed seeds the flow hash and port choice; 0 means random.
	Seed uint64
	// Clock returns the time as unix ns; nil means time.Now. Workers read
	// it once per batch of frames.
	Clock func() int64
	// NewAnnouncer makes the BGP speaker of a cluster instance; nil means
	// bgp.NewSpeaker (GoBGP).
	NewAnnouncer func(bgp.Config) (Announcer, error)
	// KernelDrop installs the kernel-side drop of frames to tslb's
	// addresses (datapath.kernel_drop); nil means link.KernelDrop when
	// Open is link.Open, and nothing with other links (tests).
	KernelDrop func(owned map[string][]netip.Addr) (remove func() error, err error)
}

// shared is what every worker reads and none owns: the running snapshot,
// the links (addresses, neighbour tables), timeouts, the flow-table bound,
// the clock and the logger. It is read-mostly: written by reloads, ARP
// learning and the control plane, never per packet.
type shared struct {
	log     *slog.Logger
	clock   func() int64
	seed    uint64
	workers int
	nics    []*nic
	snap    atomic.Pointer[snapshot]
	m       *metrics

	timeouts [8]atomic.Int64 // flow idle timeouts by nat.ConnState, ns
	noRepair atomic.Bool
	stopping atomic.Bool // SIGTERM: no new flows

	flowsMax    int64
	flowsCount  atomic.Int64 // flows in every worker's table (the flows.max bound)
	halfOpenMax int          // flows.half_open_max (each worker holds its share)

	neighDropped atomic.Uint64 // frames dropped from neighbour queues by expiry

	pcapDir string
	pcapMax int

	cookies nat.CookieKey // the SYN proxy's secret, random per start

	collisions collisionLog // the latest collisions, for the status page
}

// Balancer is a running tslb datapath built from one configuration.
type Balancer struct {
	sh      *shared
	workers []*worker
	shards  []*poolShard // by worker
	ledger  *ledgerDir   // the pools' memory-mapped files (state_file set)

	recoveredTW, recoveredUnknown int // tuples read back from the ledger files at start

	started time.Time
	// kernelDrop installs the kernel-side drop (nil: none); removeDrop
	// removes the installed one. Guarded by reloadMu after New.
	kernelDrop    func(map[string][]netip.Addr) (func() error, error)
	removeDrop    func() error
	lastReload    time.Time // guarded by reloadMu
	lastReloadErr string    // guarded by reloadMu

	reloadMu sync.Mutex
	health   healthSet
	cl       *clusterCtl // nil without a cluster section

	closeOnce sync.Once
}

// New builds a Balancer from cfg and opens its links. cfg must be valid
// (config.Parse validated it); it is not modified.
func New(cfg *config.Config, opts Options) (*Balancer, error) {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Open == nil {
		opts.Open = link.Open
		if opts.KernelDrop == nil {
			opts.KernelDrop = link.KernelDrop
		}
	}
	if opts.Seed == 0 {
		opts.Seed = rand.Uint64()
	}
	if opts.Clock == nil {
		opts.Clock = func() int64 { return time.Now().UnixNano() }
	}
	nw := cfg.Datapath.Workers
	if nw <= 0 {
		nw = runtime.NumCPU()
	}
	sh := &shared{
		log: opts.Logger, clock: opts.Clock, seed: opts.Seed, workers: nw,
		flowsMax: int64(cfg.Flows.Max), halfOpenMax: cfg.Flows.HalfOpenMax, pcapDir: cfg.Detector.PcapDir, pcapMax: cfg.Detector.PcapMaxFiles,
	}
	sh.cookies = nat.CookieKey{rand.Uint64(), rand.Uint64(), rand.Uint64(), rand.Uint64()}
	if sh.pcapMax <= 0 {
		sh.pcapMax = config.DefaultPcapMaxFiles
	}
	b := &Balancer{sh: sh, started: time.Now()}
	b.applyTimeouts(cfg)

	// Links first: services need them to route to backends.
	mode := link.Mode(cfg.Datapath.IO)
	front := frontIndex(cfg)
	for i, lc := range cfg.Links {
		// Clients' frames are owned by their flow hash, backends' replies
		// by the SNAT port: a link with SNAT addresses steers the frames
		// to them by port and the rest (a one-arm link also carries
		// clients) by flow hash.
		steer := link.SteerFlowHash
		if linkHoldsSNAT(lc, cfg) {
			var err error
			if steer, err = link.SteerSplit(cfg.SNAT.Addresses); err != nil {
				steer = link.SteerDstPort // more SNAT addresses than the program compares: clients' frames are handed over
			}
		}
		lcfg := link.Config{Mode: mode, Queues: nw, Steering: steer, RingFrames: cfg.Datapath.RingFrames}
		if i == front {
			lcfg.ExtraEtherType = cluster.EtherType // heartbeats
		}
		qs, info, err := opts.Open(lc.Interface, lcfg)
		if err != nil {
			b.closeLinks()
			return nil, fmt.Errorf("lb: link %q: %w", lc.Interface, err)
		}
		if len(qs) != nw {
			for _, q := range qs {
				q.Close()
			}
			b.closeLinks()
			return nil, fmt.Errorf("lb: link %q: %d queues opened, want %d", lc.Interface, len(qs), nw)
		}
		name := lc.Name
		if name == "" {
			name = lc.Interface
		}
		l := &nic{name: name, ifname: lc.Interface, idx: i, mac: nat.MAC(info.MAC), mtu: info.MTU, subnets: lc.Subnets,
			neigh: newNeighTable(), steer: steer, queues: qs}
		if lc.Gateway.IsValid() {
			l.gw, l.hasGW = nat.AddrFrom(lc.Gateway), true
		}
		if lc.Gateway6.IsValid() {
			l.gw6, l.hasGW6 = nat.AddrFrom(lc.Gateway6), true
		}
		sh.nics = append(sh.nics, l)
	}
	sh.m = newMetrics(b)
	for _, l := range sh.nics {
		l.arpReq = sh.m.arpSent.WithLabelValues(l.name, "request")
		l.arpReply = sh.m.arpSent.WithLabelValues(l.name, "reply")
		l.arpGratuitous = sh.m.arpSent.WithLabelValues(l.name, "gratuitous")
	}
	var recovered []ledgerTuple
	if cfg.StateFile != "" {
		d, found, err := openLedgerDir(cfg.StateFile + ".live")
		if err != nil {
			b.closeLinks()
			return nil, err
		}
		b.ledger, recovered = d, found
	}
	for range nw {
		ps := newPoolShard()
		ps.ledger = b.ledger
		b.shards = append(b.shards, ps)
	}

	s, err := b.buildSnapshot(cfg, nil)
	if err != nil {
		b.closeLinks()
		b.closeLedger()
		return nil, err
	}
	sh.snap.Store(s)
	sh.m.configVersion.Set(0)
	for w := range nw {
		wk, err := newWorker(w, sh, b.shards[w])
		if err != nil {
			b.closeLinks()
			b.closeLedger()
			return nil, err
		}
		b.workers = append(b.workers, wk)
	}
	for _, w := range b.workers {
		w.peers = b.workers
	}
	if cfg.Cluster != nil {
		if err := b.newCluster(cfg, front, opts); err != nil {
			b.closeLinks()
			b.closeLedger()
			return nil, err
		}
	}
	b.kernelDrop = opts.KernelDrop
	b.installKernelDrop(s)
	b.workers[0].announce.Store(true)
	switch {
	case len(recovered) > 0:
		tw, live := b.restoreLedger(recovered)
		b.recoveredTW, b.recoveredUnknown = tw, live
		sh.log.Info("TIME_WAIT ledger recovered from the previous run's pool files", "dir", b.ledger.dir,
			"time_wait_tuples", tw, "unknown_tuples", live)
	case cfg.StateFile != "":
		n, err := b.loadState(cfg.StateFile)
		if err != nil {
			sh.log.Warn("state file not loaded: TIME_WAIT ledger starts empty", "file", cfg.StateFile, "err", err)
		} else if n > 0 {
			sh.log.Info("TIME_WAIT ledger restored", "file", cfg.StateFile, "tuples", n)
		}
	}
	return b, nil
}

// linkHoldsSNAT reports whether an SNAT address is on one of lc's subnets:
// that link carries backend traffic, steered by SNAT port.
func linkHoldsSNAT(lc config.Link, cfg *config.Config) bool {
	for _, a := range cfg.SNAT.Addresses {
		for _, p := range lc.Subnets {
			if p.Contains(a) {
				return true
			}
		}
	}
	return false
}

// route returns the link and next hop for dst: dst itself if a link's
// subnet holds it, else the gateway.
func (sh *shared) route(dst nat.Addr16) (*nic, nat.Addr16) {
	a := dst.Addr()
	for _, l := range sh.nics {
		for _, p := range l.subnets {
			if p.Contains(a) {
				return l, dst
			}
		}
	}
	v4 := dst.Is4()
	for _, l := range sh.nics {
		if v4 && l.hasGW {
			return l, l.gw
		}
		if !v4 && l.hasGW6 {
			return l, l.gw6
		}
	}
	return nil, nat.Addr16{}
}

// Registry is the Prometheus registry holding tslb's metrics.
func (b *Balancer) Registry() *prometheus.Registry { return b.sh.m.reg }

// MetricsHandler serves the metrics in the Prometheus text format.
func (b *Balancer) MetricsHandler() http.Handler {
	// Uncompressed: gzip costs 1.5x the gathering itself (BenchmarkMetricsScrape:
	// 0.29 ms plain, 0.74 ms gzip, for 25 KB), which a scrape storm turns into
	// CPU the datapath needs; a scrape every few seconds does not miss it.
	return promhttp.HandlerFor(b.sh.m.reg, promhttp.HandlerOpts{Registry: b.sh.m.reg, DisableCompression: true})
}

// Config is the configuration running now.
func (b *Balancer) Config() *config.Config { return b.sh.snap.Load().cfg }

// Workers is the number of datapath workers.
func (b *Balancer) Workers() int { return b.sh.workers }

// FlowCount is the number of flows in the tables of every worker.
func (b *Balancer) FlowCount() int {
	n := int64(0)
	for _, w := range b.workers {
		n += w.c.flows.Load()
	}
	return int(n)
}

// Run runs the datapath until ctx is done: the workers, a housekeeping
// loop, the health checkers. When ctx ends it stops gracefully: new SYNs
// are refused (counted as shutting_down) while established flows go on,
// until none is left or shutdown.timeout passes; then it stops the
// workers, closes the links and saves the TIME_WAIT ledger to state_file.
// Run returns nil after a clean stop, or the first link error that stopped
// a worker.
func (b *Balancer) Run(ctx context.Context) error {
	inner, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	errc := make(chan error, len(b.workers))
	for _, w := range b.workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := w.run(); err != nil {
				errc <- err
				cancel()
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		b.housekeeping(inner)
	}()
	if b.cl != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b.cl.run(inner, b.sh.snap.Load)
		}()
	}
	b.health.apply(b, b.sh.snap.Load())
	select {
	case <-ctx.Done():
		if b.cl != nil {
			b.cl.beginDrain(inner, b.sh.snap.Load())
		}
		b.drain()
	case <-inner.Done(): // a link failed
	}
	if b.cl != nil {
		b.cl.leave()
	}
	b.health.stopAll()
	cancel()
	for _, w := range b.workers {
		w.stopWorker()
	}
	wg.Wait()
	b.closeLinks()
	if path := b.sh.snap.Load().cfg.StateFile; path != "" {
		if n, err := b.saveState(path); err != nil {
			b.sh.log.Error("state file not saved", "file", path, "err", err)
		} else {
			b.sh.log.Info("TIME_WAIT ledger saved", "file", path, "tuples", n)
		}
	}
	b.closeLedger()
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
	b.sh.stopping.Store(true)
	timeout := b.sh.snap.Load().cfg.Shutdown.Timeout
	if timeout <= 0 {
		return
	}
	deadline := time.Now().Add(timeout)
	open := b.openFlows()
	b.sh.log.Info("stopping: no new flows; waiting for open flows", "open", open, "timeout", timeout)
	for open > 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
		open = b.openFlows()
	}
	if open > 0 {
		b.sh.log.Warn("stopping with flows still open", "open", open)
	}
}

// openFlows counts flows not yet finished (neither in TIME_WAIT nor
// closed), over every worker.
func (b *Balancer) openFlows() int {
	n := int64(0)
	for _, w := range b.workers {
		n += w.c.open.Load()
	}
	return int(n)
}

// Stopping reports whether Run is refusing new flows because it is
// stopping.
func (b *Balancer) Stopping() bool { return b.sh.stopping.Load() }

func (b *Balancer) closeLinks() {
	b.closeOnce.Do(func() {
		b.reloadMu.Lock()
		b.removeKernelDrop()
		b.reloadMu.Unlock()
		for _, l := range b.sh.nics {
			for _, q := range l.queues {
				q.Close()
			}
		}
		for _, w := range b.workers {
			w.poll.Close()
		}
	})
}

// closeLedger unmaps the pools' files: the pools must not be used after.
func (b *Balancer) closeLedger() {
	if b.ledger != nil {
		b.ledger.close()
	}
}

// housekeeping runs what no worker owns, once a second: the pools'
// TIME_WAIT entry rates (seconds to exhaustion) and the neighbour tables'
// expiry.
func (b *Balancer) housekeeping(ctx context.Context) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	last := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case t := <-tick.C:
			dt := t.Sub(last).Seconds()
			last = t
			for _, ps := range b.shards {
				ps.tick(dt)
			}
			now := b.sh.clock()
			for _, l := range b.sh.nics {
				if n := l.neigh.expire(now); n > 0 {
					b.sh.neighDropped.Add(uint64(n))
				}
			}
		}
	}
}

// installKernelDrop (re)installs the kernel-side drop of frames to the
// VIPs and SNAT addresses s owns on each link (datapath.kernel_drop): the
// kernel of tslb's namespace would otherwise route each one and discard it
// in ip_error. A failure is logged and costs only that CPU.
func (b *Balancer) installKernelDrop(s *snapshot) {
	if b.kernelDrop == nil {
		return
	}
	if s.cfg.Datapath.KernelDropOff {
		b.removeKernelDrop()
		return
	}
	owned := map[string][]netip.Addr{}
	n := 0
	for _, l := range b.sh.nics {
		for a := range s.linkOwned[l.idx] {
			if o := s.owned[a]; o != nil && (o.kind == ownedVIP || o.kind == ownedSNAT) {
				owned[l.ifname] = append(owned[l.ifname], a.Addr())
				n++
			}
		}
	}
	for _, as := range owned {
		slices.SortFunc(as, netip.Addr.Compare)
	}
	remove, err := b.kernelDrop(owned)
	if err != nil {
		b.sh.log.Warn("kernel drop not installed: the namespace's kernel routes and discards every frame tslb takes (datapath.kernel_drop)", "err", err)
		b.sh.m.kernelDropRules.Set(0)
		return
	}
	b.removeDrop = remove
	b.sh.m.kernelDropRules.Set(float64(n))
}

// removeKernelDrop removes what installKernelDrop installed.
func (b *Balancer) removeKernelDrop() {
	if b.removeDrop == nil {
		return
	}
	if err := b.removeDrop(); err != nil {
		b.sh.log.Warn("kernel drop: removing the nftables table", "err", err)
	}
	b.removeDrop = nil
	b.sh.m.kernelDropRules.Set(0)
}
