package lb

import (
	"encoding/json"
	"math"
	"net/http"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"tslb/config"
	"tslb/lb/link"
	"tslb/lb/snat"
	"tslb/nat"
)

// Status is what a person (the status page, `tslb status`) sees of a
// running balancer: every service, backend, SNAT pair and link with the
// figures that matter, as one JSON document (/status.json). Its shape is
// versioned by Schema; every field is documented here, and docs/status.md
// (README, "Status page") mirrors it.
type Status struct {
	// Schema is "tslb-status/1".
	Schema string `json:"schema"`
	// Time is when the status was taken.
	Time time.Time `json:"time"`
	// Started is when the balancer started.
	Started time.Time `json:"started"`
	// Workers is the number of datapath workers.
	Workers int `json:"workers"`
	// Stopping is true once a graceful stop began (no new flows).
	Stopping bool            `json:"stopping"`
	Config   ConfigStatus    `json:"config"`
	Flows    FlowsStatus     `json:"flows"`
	Services []ServiceStatus `json:"services"`
	SNAT     []SNATStatus    `json:"snat"`
	Links    []LinkStatus    `json:"links"`
	// Drops counts every dropped frame by reason (only non-zero reasons).
	Drops map[string]uint64 `json:"drops"`
	// Collisions are the latest collision signatures the detector saw
	// (at most 32, newest last).
	Collisions []CollisionStatus `json:"collisions"`
}

// ConfigStatus is the running configuration's version and reloads.
type ConfigStatus struct {
	Source  string `json:"source"`  // the file it was loaded from
	Version int    `json:"version"` // 0 at start, +1 per applied reload
	// LastReload is the time of the last reload attempt (zero if none),
	// LastReloadOK its outcome and LastReloadError its error.
	LastReload      time.Time `json:"last_reload,omitzero"`
	LastReloadOK    bool      `json:"last_reload_ok"`
	LastReloadError string    `json:"last_reload_error,omitempty"`
}

// FlowsStatus is the flow table.
type FlowsStatus struct {
	Entries  int64 `json:"entries"`
	Capacity int64 `json:"capacity"`
	HalfOpen int64 `json:"half_open"`
}

// ServiceStatus is one service.
type ServiceStatus struct {
	Name       string `json:"name"`
	VIP        string `json:"vip"`
	Port       uint16 `json:"port"`
	Timestamps string `json:"timestamps"`
	Scheduler  string `json:"scheduler"`
	// SYNProxy is the configured mode; SYNProxyActive whether new SYNs
	// are answered with cookies now.
	SYNProxy       string          `json:"syn_proxy"`
	SYNProxyActive bool            `json:"syn_proxy_active"`
	FlowsActive    float64         `json:"flows_active"`
	FlowsCreated   float64         `json:"flows_created"`
	HalfOpen       int64           `json:"half_open"`
	Backends       []BackendStatus `json:"backends"`
}

// BackendStatus is one backend of a service.
type BackendStatus struct {
	Address string `json:"address"`
	Weight  int    `json:"weight"` // 0: drained
	Drain   bool   `json:"drain"`
	// Up is the active health check's verdict (true without a check);
	// PassiveDown says passive health took it out of new flows until
	// PassiveDownUntil.
	Up               bool      `json:"up"`
	PassiveDown      bool      `json:"passive_down"`
	PassiveDownUntil time.Time `json:"passive_down_until,omitzero"`
	// HealthCheck is the check type ("" for none); LastCheck, LastCheckOK
	// and LastCheckError the latest probe; Transitions how often it
	// changed between up and down.
	HealthCheck    string    `json:"health_check,omitempty"`
	LastCheck      time.Time `json:"last_check,omitzero"`
	LastCheckOK    bool      `json:"last_check_ok"`
	LastCheckError string    `json:"last_check_error,omitempty"`
	Transitions    uint64    `json:"transitions"`
	FlowsActive    int64     `json:"flows_active"`
	FlowsCreated   float64   `json:"flows_created"`
	Collisions     float64   `json:"collisions"`
	Repairs        float64   `json:"repairs"`
}

// SNATStatus is one (SNAT address, backend) pair, all workers' shares.
type SNATStatus struct {
	SNAT     string `json:"snat"`
	Backend  string `json:"backend"`
	InUse    int    `json:"in_use"`
	TimeWait int    `json:"time_wait"`
	Free     int    `json:"free"`
	// EntryRate is tuples entering TIME_WAIT per second (~10 s EWMA);
	// SecondsToExhaustion is Free / EntryRate, null when nothing enters.
	EntryRate           float64  `json:"time_wait_entries_per_second"`
	SecondsToExhaustion *float64 `json:"seconds_to_exhaustion"`
	// Allocations by kind: fresh, early_reuse_isn and early_reuse_ts
	// (reuses proven safe), forced.
	Allocations map[string]uint64 `json:"allocations"`
}

// LinkStatus is one link, all workers' queues.
type LinkStatus struct {
	Name          string `json:"name"`
	RxPackets     uint64 `json:"rx_packets"`
	TxPackets     uint64 `json:"tx_packets"`
	RxBytes       uint64 `json:"rx_bytes"`
	TxBytes       uint64 `json:"tx_bytes"`
	TxErrors      uint64 `json:"tx_errors"`
	KernelPackets uint64 `json:"kernel_packets"`
	KernelDrops   uint64 `json:"kernel_drops"`
	Neighbours    int    `json:"neighbours"`
}

// CollisionStatus is one collision the detector saw.
type CollisionStatus struct {
	Time      time.Time `json:"time"`
	Backend   string    `json:"backend"`
	Tuple     string    `json:"tuple"`
	Client    string    `json:"client"`
	Signature string    `json:"signature"`
	Repaired  bool      `json:"repaired"`
	// Pcap is the capture file's base name in detector.pcap_dir ("" when
	// none is written); the status page links /pcap/<name>.
	Pcap string `json:"pcap,omitempty"`
}

// StatusSchema is Status.Schema.
const StatusSchema = "tslb-status/1"

// collisionLog keeps the latest collisions for the status page.
type collisionLog struct {
	mu     sync.Mutex
	recent []CollisionStatus
}

const collisionLogMax = 32

func (c *collisionLog) add(e CollisionStatus) {
	c.mu.Lock()
	if len(c.recent) == collisionLogMax {
		copy(c.recent, c.recent[1:])
		c.recent = c.recent[:collisionLogMax-1]
	}
	c.recent = append(c.recent, e)
	c.mu.Unlock()
}

func (c *collisionLog) list() []CollisionStatus {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]CollisionStatus(nil), c.recent...)
}

// healthRecord is what the status page shows of a backend's last probe.
type healthRecord struct {
	mu          sync.Mutex
	at          time.Time
	ok          bool
	err         string
	transitions uint64
}

func (h *healthRecord) note(ok bool, err error, transition bool) {
	h.mu.Lock()
	h.at, h.ok = time.Now(), ok
	h.err = ""
	if err != nil {
		h.err = err.Error()
	}
	if transition {
		h.transitions++
	}
	h.mu.Unlock()
}

func counterValue(c prometheus.Collector) float64 {
	m, ok := c.(prometheus.Metric)
	if !ok {
		return 0
	}
	var d dto.Metric
	if m.Write(&d) != nil {
		return 0
	}
	switch {
	case d.Counter != nil:
		return d.Counter.GetValue()
	case d.Gauge != nil:
		return d.Gauge.GetValue()
	}
	return 0
}

// Status returns the balancer's status now.
func (b *Balancer) Status() *Status {
	sh := b.sh
	s := sh.snap.Load()
	now := sh.clock()
	st := &Status{Schema: StatusSchema, Time: time.Unix(0, now).UTC(), Started: b.started.UTC(), Workers: sh.workers,
		Stopping: sh.stopping.Load(), Drops: map[string]uint64{}}
	b.reloadMu.Lock()
	st.Config = ConfigStatus{Source: s.cfg.Source, Version: s.version, LastReload: b.lastReload,
		LastReloadOK: b.lastReloadErr == "", LastReloadError: b.lastReloadErr}
	b.reloadMu.Unlock()
	st.Flows = FlowsStatus{Entries: int64(b.FlowCount()), Capacity: sh.flowsMax}
	for _, w := range b.workers {
		st.Flows.HalfOpen += w.c.halfOpen.Load()
	}
	for _, sv := range s.svcList {
		ss := ServiceStatus{Name: sv.name, VIP: sv.vip.Text(), Port: sv.port, Timestamps: string(sv.ts),
			Scheduler: s.cfg.Services[serviceIndex(s, sv)].Scheduler, SYNProxy: string(sv.synProxy),
			SYNProxyActive: sv.synProxy == config.SYNProxyOn || (sv.synProxy == config.SYNProxyAuto && now < sv.proxyUntil.Load()),
			FlowsActive:    counterValue(sv.active), FlowsCreated: counterValue(sv.created), HalfOpen: sv.halfOpen.Load()}
		for _, be := range sv.backends {
			bs := BackendStatus{Address: be.ap.String(), Weight: be.weight, Drain: be.weight == 0, Up: be.up.Load(),
				FlowsActive: be.flows.Load(), FlowsCreated: counterValue(be.created), Repairs: counterValue(be.repairs)}
			for _, c := range be.collisions {
				bs.Collisions += counterValue(c)
			}
			if u := be.downUntil.Load(); u > now {
				bs.PassiveDown, bs.PassiveDownUntil = true, time.Unix(0, u).UTC()
			}
			if sv.hc != nil {
				bs.HealthCheck = sv.hc.Type
				be.health.mu.Lock()
				bs.LastCheck, bs.LastCheckOK, bs.LastCheckError, bs.Transitions = be.health.at, be.health.ok, be.health.err, be.health.transitions
				be.health.mu.Unlock()
			}
			ss.Backends = append(ss.Backends, bs)
		}
		st.Services = append(st.Services, ss)
	}
	keys, sum := b.poolUsage(now)
	for _, k := range keys {
		pu := sum[k]
		ps := SNATStatus{SNAT: k.snat.Text(), Backend: k.backend.String(), InUse: pu.u.InUse, TimeWait: pu.u.TimeWait,
			Free: pu.u.Free, EntryRate: pu.u.Rate, Allocations: map[string]uint64{}}
		if e := pu.u.SecondsToExhaustion(); !math.IsInf(e, 0) {
			ps.SecondsToExhaustion = &e
		}
		for kind := snat.Kind(0); kind < snat.NumKinds; kind++ {
			ps.Allocations[kind.String()] = pu.allocs[kind]
		}
		st.SNAT = append(st.SNAT, ps)
	}
	for _, l := range sh.nics {
		var ls link.Stats
		for _, q := range l.queues {
			ls = ls.Add(q.Stats())
		}
		st.Links = append(st.Links, LinkStatus{Name: l.name, RxPackets: ls.RxFrames, TxPackets: ls.TxFrames,
			RxBytes: ls.RxBytes, TxBytes: ls.TxBytes, TxErrors: ls.TxErrors, KernelPackets: ls.KernelPackets,
			KernelDrops: ls.KernelDrops, Neighbours: l.neigh.size()})
	}
	drops, decode := b.dropCounts()
	for r, v := range drops {
		if v > 0 {
			st.Drops[dropReasonNames[r]] += v
		}
	}
	for r, v := range decode {
		if v > 0 {
			st.Drops[nat.Reasons[r]] += v
		}
	}
	st.Collisions = sh.collisions.list()
	sort.SliceStable(st.Services, func(i, j int) bool { return st.Services[i].Name < st.Services[j].Name })
	return st
}

func serviceIndex(s *snapshot, sv *service) int {
	for i, sc := range s.cfg.Services {
		if sc.Name == sv.name {
			return i
		}
	}
	return 0
}

// StatusHandler serves Status as JSON.
func (b *Balancer) StatusHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		enc := json.NewEncoder(w)
		enc.SetIndent("", " ")
		enc.Encode(b.Status())
	})
}

// PcapDir is detector.pcap_dir ("" for none): where the collision
// captures the status page links to are.
func (b *Balancer) PcapDir() string { return b.sh.pcapDir }

// pcapName is the base name of a capture file written by writePcap.
func pcapName(c *flowCapture) string { return filepath.Base(c.name + ".pcap") }
