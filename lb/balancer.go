package lb

import (
	"context"
	"fmt"
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
	weight int
	link   *link
	hop    nat.Addr4

	created    prometheus.Counter
	active     prometheus.Gauge
	flows      atomic.Int64 // live flows, for least_conn
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
	owned   map[nat.Addr4]bool // addresses tslb answers ARP for on this link
	arpFrom nat.Addr4          // sender address of tslb's ARP requests
	neigh   *neighTable

	rxPackets, rxBytes, txPackets, txBytes prometheus.Counter
	arpReq, arpReply, arpGratuitous        prometheus.Counter
}

type ownedKind uint8

const (
	ownedVIP ownedKind = iota + 1
	ownedSNAT
)

type svcKey struct {
	vip  nat.Addr4
	port uint16
}

// Balancer is a running tslb datapath built from one configuration.
type Balancer struct {
	cfg  *config.Config
	log  *slog.Logger
	seed uint64

	links    []*link
	services map[svcKey]*service
	svcList  []*service
	owned    map[nat.Addr4]ownedKind
	flows    *flowTable
	snat     *snatTable
	m        *metrics

	timeouts [8]int64 // by nat.ConnState, ns
	now      atomic.Int64

	waitq    waitQueue
	noRepair bool
	pcapDir  string
	pcapMax  int

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
		cfg:      cfg,
		log:      opts.Logger,
		seed:     opts.Seed,
		services: make(map[svcKey]*service),
		owned:    make(map[nat.Addr4]ownedKind),
		noRepair: cfg.Detector.NoRepair,
		pcapDir:  cfg.Detector.PcapDir,
		pcapMax:  cfg.Detector.PcapMaxFiles,
	}
	b.waitq.keys = make(map[flowKey]bool)
	if b.pcapMax <= 0 {
		b.pcapMax = config.DefaultPcapMaxFiles
	}
	b.now.Store(time.Now().UnixNano())
	b.flows = newFlowTable(cfg.Flows.Max, b.seed)
	t := cfg.Flows.Timeouts
	for st, d := range map[nat.ConnState]time.Duration{
		nat.StateNew: t.Syn, nat.StateSynSent: t.Syn, nat.StateSynRecv: t.Syn,
		nat.StateEstablished: t.Established, nat.StateFinWait: t.Fin, nat.StateClosing: t.Fin,
		nat.StateTimeWait: t.TimeWait, nat.StateClosed: t.Closed,
	} {
		b.timeouts[st] = int64(d)
	}

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
			owned: make(map[nat.Addr4]bool), neigh: newNeighTable()}
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

	own := func(a netip.Addr, kind ownedKind) {
		a4 := nat.Addr4From(a)
		b.owned[a4] = kind
		for _, l := range b.links {
			for _, p := range l.subnets {
				if p.Contains(a) {
					l.owned[a4] = true
				}
			}
		}
	}
	var snatAddrs []nat.Addr4
	for _, a := range cfg.SNAT.Addresses {
		own(a, ownedSNAT)
		snatAddrs = append(snatAddrs, nat.Addr4From(a))
	}
	var allBackends []netip.AddrPort
	for _, sc := range cfg.Services {
		own(sc.VIP, ownedVIP)
		s := &service{name: sc.Name, vip: nat.Addr4From(sc.VIP), port: sc.Port, ts: sc.Timestamps,
			timeWaitNs: int64(sc.TimeWait), noISN: sc.NoISNTranslation, exhaustion: sc.Exhaustion,
			exhaustWaitNs: int64(sc.ExhaustionWait)}
		switch sc.Timestamps {
		case config.TSStrip:
			s.tsAction = nat.TSStrip
		case config.TSRewrite:
			s.tsAction = nat.TSOffset // TSSynth when the client's SYN has no TS
		default:
			s.tsAction = nat.TSPass
		}
		if s.exhaustion == "" {
			s.exhaustion = config.DefaultExhaustion
		}
		if s.exhaustWaitNs == 0 {
			s.exhaustWaitNs = int64(config.DefaultExhaustionWait)
		}
		if s.timeWaitNs == 0 {
			s.timeWaitNs = int64(config.DefaultTimeWait)
		}
		for i := range s.exhausted {
			s.exhausted[i] = b.m.exhaustion.WithLabelValues(s.name, exhaustNames[i])
		}
		s.created = b.m.flowsCreated.WithLabelValues(s.name)
		s.active = b.m.flowsActive.WithLabelValues(s.name)
		for i, r := range []string{"table_full", "no_backend", "snat_exhausted"} {
			s.refused[i] = b.m.synRefused.WithLabelValues(s.name, r)
		}
		for _, bc := range sc.Backends {
			be := &backend{ap: bc.Address, addr: nat.Addr4From(bc.Address.Addr()), port: bc.Address.Port(), weight: bc.Weight}
			be.link, be.hop = b.route(be.addr)
			if be.link == nil {
				b.closeLinks()
				return nil, fmt.Errorf("lb: service %q: no link reaches backend %s", sc.Name, bc.Address)
			}
			be.created = b.m.backendCreated.WithLabelValues(s.name, bc.Address.String())
			be.active = b.m.backendActive.WithLabelValues(s.name, bc.Address.String())
			for i := range be.collisions {
				be.collisions[i] = b.m.collisions.WithLabelValues(bc.Address.String(), signatureNames[i])
			}
			be.repairs = b.m.repairs.WithLabelValues(bc.Address.String())
			s.backends = append(s.backends, be)
			allBackends = append(allBackends, bc.Address)
		}
		sched, err := newScheduler(sc.Scheduler, s.backends)
		if err != nil {
			b.closeLinks()
			return nil, err
		}
		s.sched = sched
		b.services[svcKey{s.vip, s.port}] = s
		b.svcList = append(b.svcList, s)
	}
	for _, l := range b.links {
		// ARP requests go out from an address tslb owns on that link
		// (0.0.0.0, an ARP probe, if it owns none there).
		for a := range l.owned {
			if l.arpFrom == (nat.Addr4{}) || less(a, l.arpFrom) {
				l.arpFrom = a
			}
		}
	}
	b.snat = newSNATTable(snatAddrs, cfg.SNAT.PortMin, cfg.SNAT.PortMax, allBackends, b.seed, b.m)
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

// Config is the configuration the balancer was built from.
func (b *Balancer) Config() *config.Config { return b.cfg }

// FlowCount is the number of flows in the table.
func (b *Balancer) FlowCount() int { return int(b.flows.count.Load()) }

// Run runs the datapath until ctx is done: one worker per link, a clock, a
// reaper. It closes the links before returning. Run returns nil after a
// clean stop, or the first link error that stopped a worker.
func (b *Balancer) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errc := make(chan error, len(b.links))
	for _, l := range b.links {
		w := b.newWorker(l)
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := w.run(ctx); err != nil {
				errc <- err
				cancel()
			}
		}()
	}
	b.announce()
	wg.Add(1)
	go func() {
		defer wg.Done()
		b.housekeeping(ctx)
	}()
	<-ctx.Done()
	b.closeLinks() // unblocks the readers
	wg.Wait()
	select {
	case err := <-errc:
		return err
	default:
		return nil
	}
}

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
	for _, l := range b.links {
		for a := range l.owned {
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
				for _, p := range b.snat.pools() {
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
	return now-f.last.Load() > b.timeouts[f.state.Load()]
}

func (b *Balancer) flowExpired(f *flow) {
	b.m.flowsExpired.WithLabelValues(nat.ConnState(f.state.Load()).String()).Inc()
	b.removeFlow(f)
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
	f.mu.Unlock()
	b.flows.remove(f)
	f.pool.release(f.sport, b.now.Load(), rec)
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
