package lb

import (
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
// configuration. Backends, SNAT pools (with their TIME_WAIT ledgers) and
// the flow table carry over from one snapshot to the next.
type snapshot struct {
	cfg      *config.Config
	version  int
	services map[svcKey]*service
	svcList  []*service
	owned    map[nat.Addr4]ownedKind
	// per link (by index): addresses tslb answers ARP for there, and the
	// sender address of its ARP requests (0.0.0.0 = ARP probe if none).
	linkOwned []map[nat.Addr4]bool
	arpFrom   []nat.Addr4
	snat      *snatTable
}

// buildSnapshot derives a snapshot from cfg. prev (nil at start) lends its
// backends (same service name and address: keeps health state, live-flow
// count) and its SNAT pools (keeps the ledger).
func (b *Balancer) buildSnapshot(cfg *config.Config, prev *snapshot) (*snapshot, error) {
	s := &snapshot{cfg: cfg, services: make(map[svcKey]*service), owned: make(map[nat.Addr4]ownedKind),
		linkOwned: make([]map[nat.Addr4]bool, len(b.links)), arpFrom: make([]nat.Addr4, len(b.links))}
	if prev != nil {
		s.version = prev.version + 1
	}
	for i := range s.linkOwned {
		s.linkOwned[i] = make(map[nat.Addr4]bool)
	}
	own := func(a netip.Addr, kind ownedKind) {
		a4 := nat.Addr4From(a)
		s.owned[a4] = kind
		for i, l := range b.links {
			for _, p := range l.subnets {
				if p.Contains(a) {
					s.linkOwned[i][a4] = true
				}
			}
		}
	}
	oldStates := make(map[string]*backendState)
	if prev != nil {
		for _, ps := range prev.svcList {
			for _, be := range ps.backends {
				oldStates[ps.name+"|"+be.ap.String()] = be.backendState
			}
		}
	}
	var snatAddrs []nat.Addr4
	for _, a := range cfg.SNAT.Addresses {
		own(a, ownedSNAT)
		snatAddrs = append(snatAddrs, nat.Addr4From(a))
	}
	if cfg.Health.Source.IsValid() {
		s.owned[nat.Addr4From(cfg.Health.Source)] = ownedKernel
	}
	var allBackends []netip.AddrPort
	for _, sc := range cfg.Services {
		own(sc.VIP, ownedVIP)
		sv := &service{name: sc.Name, vip: nat.Addr4From(sc.VIP), port: sc.Port, ts: sc.Timestamps,
			timeWaitNs: int64(sc.TimeWait), noISN: sc.NoISNTranslation, exhaustion: sc.Exhaustion,
			exhaustWaitNs: int64(sc.ExhaustionWait), hc: sc.HealthCheck}
		switch sc.Timestamps {
		case config.TSStrip:
			sv.tsAction = nat.TSStrip
		case config.TSRewrite:
			sv.tsAction = nat.TSOffset // TSSynth when the client's SYN has no TS
		default:
			sv.tsAction = nat.TSPass
		}
		if sv.exhaustion == "" {
			sv.exhaustion = config.DefaultExhaustion
		}
		if sv.exhaustWaitNs == 0 {
			sv.exhaustWaitNs = int64(config.DefaultExhaustionWait)
		}
		if sv.timeWaitNs == 0 {
			sv.timeWaitNs = int64(config.DefaultTimeWait)
		}
		for i := range sv.exhausted {
			sv.exhausted[i] = b.m.exhaustion.WithLabelValues(sv.name, exhaustNames[i])
		}
		sv.created = b.m.flowsCreated.WithLabelValues(sv.name)
		sv.active = b.m.flowsActive.WithLabelValues(sv.name)
		for i, r := range []string{"table_full", "no_backend", "snat_exhausted"} {
			sv.refused[i] = b.m.synRefused.WithLabelValues(sv.name, r)
		}
		for _, bc := range sc.Backends {
			// Backend objects are per snapshot and immutable (schedulers
			// read weight without locks); what must outlive a reload —
			// health, live flows, metric children — is in backendState.
			w := bc.Weight
			if bc.Drain {
				w = 0
			}
			be := &backend{ap: bc.Address, addr: nat.Addr4From(bc.Address.Addr()), port: bc.Address.Port(), weight: w,
				backendState: oldStates[sc.Name+"|"+bc.Address.String()]}
			if be.backendState == nil {
				st := &backendState{}
				st.up.Store(true)
				st.created = b.m.backendCreated.WithLabelValues(sv.name, bc.Address.String())
				st.active = b.m.backendActive.WithLabelValues(sv.name, bc.Address.String())
				for i := range st.collisions {
					st.collisions[i] = b.m.collisions.WithLabelValues(bc.Address.String(), signatureNames[i])
				}
				st.repairs = b.m.repairs.WithLabelValues(bc.Address.String())
				be.backendState = st
			}
			be.link, be.hop = b.route(be.addr)
			if be.link == nil {
				return nil, fmt.Errorf("lb: service %q: no link reaches backend %s", sc.Name, bc.Address)
			}
			sv.backends = append(sv.backends, be)
			allBackends = append(allBackends, bc.Address)
		}
		sched, err := newScheduler(sc.Scheduler, sv.backends)
		if err != nil {
			return nil, err
		}
		sv.sched = sched
		s.services[svcKey{sv.vip, sv.port}] = sv
		s.svcList = append(s.svcList, sv)
	}
	for i := range b.links {
		for a := range s.linkOwned[i] {
			if s.arpFrom[i] == (nat.Addr4{}) || less(a, s.arpFrom[i]) {
				s.arpFrom[i] = a
			}
		}
	}
	var prevSNAT *snatTable
	if prev != nil {
		prevSNAT = prev.snat
	}
	s.snat = newSNATTable(snatAddrs, cfg.SNAT.PortMin, cfg.SNAT.PortMax, allBackends, b.seed, b.m, prevSNAT)
	return s, nil
}

// pick asks the scheduler for a backend that is up. A scheduler does not
// know health: a down backend it returns is skipped by asking again with
// another hash (round-robin schedulers advance anyway), at most once per
// backend.
func (s *service) pick(h uint64) *backend {
	for i := 0; i <= len(s.backends); i++ {
		be := s.sched.Pick(h + uint64(i)*0x9e3779b97f4a7c15)
		if be == nil || be.up.Load() {
			return be
		}
	}
	return nil
}

// restartKeys lists the configuration keys whose change a hot reload cannot
// apply (config.RestartKeysDiffer: links, snat, flows.max, listeners,
// state_file), plus health.source: the probes' source address is the
// kernel's, set up outside tslb.
func restartKeys(a, c *config.Config) []string {
	out := a.RestartKeysDiffer(c)
	if a.Health.Source != c.Health.Source {
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
	prev := b.snap.Load()
	if keys := restartKeys(prev.cfg, cfg); len(keys) > 0 {
		b.m.reloads.WithLabelValues("failure").Inc()
		b.m.lastReloadOK.Set(0)
		return fmt.Errorf("lb: reload: these keys need a restart: %v", keys)
	}
	s, err := b.buildSnapshot(cfg, prev)
	if err != nil {
		b.m.reloads.WithLabelValues("failure").Inc()
		b.m.lastReloadOK.Set(0)
		return err
	}
	b.applyTimeouts(cfg)
	b.snap.Store(s)
	b.health.apply(b, s)
	b.m.reloads.WithLabelValues("success").Inc()
	b.m.lastReloadOK.Set(1)
	b.m.configVersion.Set(float64(s.version))
	b.m.lastReloadTime.Set(float64(time.Now().Unix()))
	go b.announce()
	return nil
}

// ReloadFailed counts a reload that failed before it reached Reload (the
// file did not parse or validate).
func (b *Balancer) ReloadFailed() {
	b.m.reloads.WithLabelValues("failure").Inc()
	b.m.lastReloadOK.Set(0)
}

// applyTimeouts sets the flow timeouts by state (read by the reaper).
func (b *Balancer) applyTimeouts(cfg *config.Config) {
	t := cfg.Flows.Timeouts
	for st, d := range map[nat.ConnState]time.Duration{
		nat.StateNew: t.Syn, nat.StateSynSent: t.Syn, nat.StateSynRecv: t.Syn,
		nat.StateEstablished: t.Established, nat.StateFinWait: t.Fin, nat.StateClosing: t.Fin,
		nat.StateTimeWait: t.TimeWait, nat.StateClosed: t.Closed,
	} {
		b.timeouts[st].Store(int64(d))
	}
	b.noRepair.Store(cfg.Detector.NoRepair)
}
