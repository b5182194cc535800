package lb

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	"tslb/config"
	"tslb/nat"
)

// snapshot is everything the datapath derives from one configuration:
// services and their schedulers, owned addresses, the SNAT pools. It is
// immutable once stored; a reload builds a new one and swaps it in with
// one atomic store (b.snap), so a packet always sees one whole
// configuration. Backends' state, the SNAT pools (with their TIME_WAIT
// ledgers, owned by the workers) and the flows carry over from one
// snapshot to the next.
type snapshot struct {
	cfg     *config.Config
	version int
	// owned maps every address tslb answers for (and the kernel's
	// health.source) to what it is; a VIP's entry lists its services.
	owned   map[nat.Addr16]*ownedAddr
	ownedT  *addrMap[*ownedAddr] // owned, for the per-packet lookups
	svcList []*service
	// per link (by index): addresses tslb answers ARP and neighbour
	// solicitations for there, and the source address of its ARP requests
	// (0.0.0.0 = ARP probe if none) and neighbour solicitations (:: if
	// none).
	linkOwned []map[nat.Addr16]bool
	arpFrom   []nat.Addr16
	ndFrom    []nat.Addr16
	// snatAddrs are the SNAT addresses in configuration order (the pools
	// themselves are the workers', in Balancer.shards).
	snatAddrs []nat.Addr16
}

// buildSnapshot derives a snapshot from cfg. prev (nil at start) lends its
// backends (same service name and address: keeps health state, live-flow
// count). Every worker's pool shard gains the pools of new backends.
func (b *Balancer) buildSnapshot(cfg *config.Config, prev *snapshot) (*snapshot, error) {
	sh := b.sh
	s := &snapshot{cfg: cfg, owned: make(map[nat.Addr16]*ownedAddr),
		linkOwned: make([]map[nat.Addr16]bool, len(sh.nics)), arpFrom: make([]nat.Addr16, len(sh.nics)),
		ndFrom: make([]nat.Addr16, len(sh.nics))}
	if prev != nil {
		s.version = prev.version + 1
	}
	for i := range s.linkOwned {
		s.linkOwned[i] = make(map[nat.Addr16]bool)
	}
	own := func(a netip.Addr, kind ownedKind) {
		a4 := nat.AddrFrom(a)
		if s.owned[a4] == nil {
			s.owned[a4] = &ownedAddr{kind: kind}
		}
		for i, l := range sh.nics {
			for _, p := range l.subnets {
				if p.Contains(a) {
					s.linkOwned[i][a4] = true
				}
			}
		}
	}
	oldStates := make(map[string]*backendState)
	oldServices := make(map[string]*serviceState)
	if prev != nil {
		for _, ps := range prev.svcList {
			oldServices[ps.name] = ps.serviceState
			for _, be := range ps.backends {
				oldStates[ps.name+"|"+be.ap.String()] = be.backendState
			}
		}
	}
	for _, a := range cfg.SNAT.Addresses {
		own(a, ownedSNAT)
		s.snatAddrs = append(s.snatAddrs, nat.AddrFrom(a))
	}
	for _, src := range []netip.Addr{cfg.Health.Source, cfg.Health.Source6} {
		if src.IsValid() {
			s.owned[nat.AddrFrom(src)] = &ownedAddr{kind: ownedKernel}
		}
	}
	var allBackends []netip.AddrPort
	for _, sc := range cfg.Services {
		own(sc.VIP, ownedVIP)
		sv := &service{name: sc.Name, vip: nat.AddrFrom(sc.VIP), port: sc.Port, ts: sc.Timestamps,
			timeWaitNs: int64(sc.TimeWait), isn: !sc.NoISNTranslation, exhaustion: sc.Exhaustion,
			exhaustWaitNs: int64(sc.ExhaustionWait), hc: sc.HealthCheck,
			halfOpenMax: int64(sc.HalfOpenMax), synProxy: sc.SYNProxy, proxyAbove: int64(sc.SYNProxyThreshold)}
		sv.serviceState = oldServices[sc.Name]
		if sv.serviceState == nil {
			sv.serviceState = &serviceState{}
		}
		m := sh.m
		for i := range sv.exhausted {
			sv.exhausted[i] = m.exhaustion.WithLabelValues(sv.name, exhaustNames[i])
		}
		sv.created = m.flowsCreated.WithLabelValues(sv.name)
		sv.active = m.flowsActive.WithLabelValues(sv.name)
		for i, r := range refusalNames {
			sv.refused[i] = m.synRefused.WithLabelValues(sv.name, r)
		}
		sv.syns = m.syns.WithLabelValues(sv.name)
		for i, r := range cookieResultNames {
			sv.cookies[i] = m.cookies.WithLabelValues(sv.name, r)
		}
		sv.redispatched[0] = m.redispatched.WithLabelValues(sv.name, "rst")
		sv.redispatched[1] = m.redispatched.WithLabelValues(sv.name, "timeout")
		for _, bc := range sc.Backends {
			// Backend objects are per snapshot and immutable (schedulers
			// read weight without locks); what must outlive a reload —
			// health, live flows, metric children — is in backendState.
			w := bc.Weight
			if bc.Drain {
				w = 0
			}
			be := &backend{ap: bc.Address, addr: nat.AddrFrom(bc.Address.Addr()), port: bc.Address.Port(), weight: w,
				backendState: oldStates[sc.Name+"|"+bc.Address.String()]}
			if be.backendState == nil {
				st := &backendState{}
				st.up.Store(true)
				st.created = m.backendCreated.WithLabelValues(sv.name, bc.Address.String())
				st.active = m.backendActive.WithLabelValues(sv.name, bc.Address.String())
				for i := range st.collisions {
					st.collisions[i] = m.collisions.WithLabelValues(bc.Address.String(), signatureNames[i])
				}
				st.repairs = m.repairs.WithLabelValues(bc.Address.String())
				st.passiveFailures = m.passiveFailures.WithLabelValues(sv.name, bc.Address.String())
				st.passiveDowns = m.passiveDowns.WithLabelValues(sv.name, bc.Address.String())
				be.backendState = st
			}
			be.nic, be.hop = sh.route(be.addr)
			if be.nic == nil {
				return nil, fmt.Errorf("lb: service %q: no link reaches backend %s", sc.Name, bc.Address)
			}
			sv.backends = append(sv.backends, be)
			allBackends = append(allBackends, bc.Address)
		}
		scheds, err := newSchedulers(sc.Scheduler, sv.backends, sh.workers)
		if err != nil {
			return nil, err
		}
		sv.scheds = scheds
		oa := s.owned[sv.vip]
		oa.svcs = append(oa.svcs, sv)
		s.svcList = append(s.svcList, sv)
	}
	for i := range sh.nics {
		s.arpFrom[i] = nat.Addr4{}.Mapped()
		first4, first6 := true, true
		for a := range s.linkOwned[i] {
			switch {
			case a.Is4() && (first4 || less(a, s.arpFrom[i])):
				s.arpFrom[i], first4 = a, false
			case !a.Is4() && (first6 || less(a, s.ndFrom[i])):
				s.ndFrom[i], first6 = a, false
			}
		}
		if first6 {
			// No IPv6 address of tslb's on this link (only an IPv6
			// gateway, say): solicit from the link-local address the
			// kernel itself has on the interface (modified EUI-64 of its
			// MAC, RFC 4291 §2.5.1), never from :: (RFC 4861 keeps that
			// for duplicate address detection).
			s.ndFrom[i] = eui64LinkLocal(sh.nics[i].mac)
		}
	}
	s.ownClusterAddr(cfg)
	s.ownedT = newAddrMap[*ownedAddr](len(s.owned))
	for a, o := range s.owned {
		s.ownedT.set(a, o)
	}
	for w, ps := range b.shards {
		if err := ps.ensure(s.snatAddrs, cfg.SNAT.PortMin, cfg.SNAT.PortMax, allBackends, w, sh.workers, sh.seed); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// pick asks the scheduler for a backend that is up. A scheduler does not
// know health: a down backend it returns is skipped by asking again with
// another hash (round-robin schedulers advance anyway), at most once per
// backend.
func (s *service) pick(h uint64, worker int, now int64) *backend {
	return s.pickExcept(h, worker, now, nil)
}

// pickExcept is pick avoiding the backends in not (a SYN re-dispatched
// after they failed it).
func (s *service) pickExcept(h uint64, worker int, now int64, not []*backend) *backend {
	sched := s.scheds[worker]
	// The first pass wants a usable backend. If every backend the
	// scheduler offered is out by passive health (or down), the second
	// takes one the active check (if any) still calls up rather than
	// refuse every client: passive health guards against one bad backend,
	// not against an outage of all (Envoy's "panic" rule).
	for pass := range 2 {
		for i := 0; i <= len(s.backends); i++ {
			be := sched.Pick(h + uint64(i)*0x9e3779b97f4a7c15)
			if be == nil {
				return nil
			}
			ok := be.usable(now)
			if pass == 1 {
				ok = be.up.Load()
			}
			if ok && !tried(not, be) {
				return be
			}
		}
	}
	return nil
}

func tried(not []*backend, be *backend) bool {
	for _, b := range not {
		if b != nil && b.ap == be.ap {
			return true
		}
	}
	return false
}

// restartKeys lists the configuration keys whose change a hot reload cannot
// apply (config.RestartKeysDiffer: links, snat, flows.max, listeners,
// state_file), plus health.source: the probes' source address is the
// kernel's, set up outside tslb.
func restartKeys(a, c *config.Config) []string {
	out := a.RestartKeysDiffer(c)
	if a.Health.Source != c.Health.Source || a.Health.Source6 != c.Health.Source6 {
		out = append(out, "health.source")
	}
	return out
}

// Reload swaps in cfg (already validated by config.Load) without touching
// established flows: services, backends, weights, drains, schedulers,
// timestamp modes, health checks, timeouts and detector settings change at
// once for new flows; flows of a removed backend or service keep going
// (drain); the SNAT pools and their TIME_WAIT ledger stay. Keys that need
// a restart (links, snat, flows.max, listeners, state_file,
// health.source) make it fail, keeping the running configuration.
func (b *Balancer) Reload(cfg *config.Config) error {
	b.reloadMu.Lock()
	defer b.reloadMu.Unlock()
	m := b.sh.m
	b.lastReload = time.Now()
	prev := b.sh.snap.Load()
	if keys := restartKeys(prev.cfg, cfg); len(keys) > 0 {
		m.reloads.WithLabelValues("failure").Inc()
		m.lastReloadOK.Set(0)
		err := fmt.Errorf("lb: reload: these keys need a restart: %v", keys)
		b.lastReloadErr = err.Error()
		return err
	}
	s, err := b.buildSnapshot(cfg, prev)
	if err == nil && b.cl != nil {
		err = b.cl.reload(context.Background(), prev.cfg, cfg)
	}
	if err != nil {
		m.reloads.WithLabelValues("failure").Inc()
		m.lastReloadOK.Set(0)
		b.lastReloadErr = err.Error()
		return err
	}
	b.lastReloadErr = ""
	b.applyTimeouts(cfg)
	b.sh.snap.Store(s)
	b.health.apply(b, s)
	b.installKernelDrop(s)
	m.reloads.WithLabelValues("success").Inc()
	m.lastReloadOK.Set(1)
	m.configVersion.Set(float64(s.version))
	m.lastReloadTime.Set(float64(time.Now().Unix()))
	b.workers[0].announce.Store(true)
	b.workers[0].poll.Wake()
	return nil
}

// ReloadFailed counts a reload that failed before it reached Reload (the
// file did not parse or validate).
func (b *Balancer) ReloadFailed(err error) {
	b.sh.m.reloads.WithLabelValues("failure").Inc()
	b.sh.m.lastReloadOK.Set(0)
	b.reloadMu.Lock()
	b.lastReload = time.Now()
	if err != nil {
		b.lastReloadErr = err.Error()
	}
	b.reloadMu.Unlock()
}

// applyTimeouts sets the flow timeouts by state (read by the reaper).
func (b *Balancer) applyTimeouts(cfg *config.Config) {
	t := cfg.Flows.Timeouts
	for st, d := range map[nat.ConnState]time.Duration{
		nat.StateNew: t.Syn, nat.StateSynSent: t.Syn, nat.StateSynRecv: t.Syn,
		nat.StateEstablished: t.Established, nat.StateFinWait: t.Fin, nat.StateClosing: t.Fin,
		nat.StateTimeWait: t.TimeWait, nat.StateClosed: t.Closed,
	} {
		b.sh.timeouts[st].Store(int64(d))
	}
	b.sh.noRepair.Store(cfg.Detector.NoRepair)
}

// ownedAt returns what tslb owns at a, or nil.
func (s *snapshot) ownedAt(a nat.Addr16) *ownedAddr {
	o, _ := s.ownedT.get(a)
	return o
}

// eui64LinkLocal is fe80::/64 with the modified EUI-64 interface
// identifier of mac (RFC 4291 §2.5.1, Appendix A): what the kernel gives an
// Ethernet interface with addr_gen_mode 0 (the default).
func eui64LinkLocal(mac nat.MAC) nat.Addr16 {
	return nat.Addr16{0xfe, 0x80, 8: mac[0] ^ 0x02, 9: mac[1], 10: mac[2], 11: 0xff, 12: 0xfe, 13: mac[3], 14: mac[4], 15: mac[5]}
}
