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
// figures that matter, as one JSON document (/status.json, and the answer
// to "status" on the control socket). Its shape is versioned by Schema:
// a field may be added within "tslb-status/1", none renamed or removed.
// Every field is documented here (the README's "Status page" points
// here; TestStatusSchemaDocumented checks it). Times are RFC 3339 in UTC;
// counters count since start (they do not reset on reload); a field
// marked omitempty/omitzero in its tag is absent when empty.
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
	Stopping bool `json:"stopping"`
	// Config is the running configuration's version and last reload.
	Config ConfigStatus `json:"config"`
	// Flows is the flow table's occupancy.
	Flows FlowsStatus `json:"flows"`
	// Services are the configured services, sorted by name.
	Services []ServiceStatus `json:"services"`
	// SNAT is one entry per (SNAT address, backend) pair in use.
	SNAT []SNATStatus `json:"snat"`
	// Links are the configured links, in configuration order.
	Links []LinkStatus `json:"links"`
	// Drops counts every dropped frame by reason (only non-zero reasons).
	Drops map[string]uint64 `json:"drops"`
	// Collisions are the latest collision signatures the detector saw
	// (at most 32, newest last).
	Collisions []CollisionStatus `json:"collisions"`
	// Cluster is the cluster instance's state (ClusterStatus); absent
	// without a cluster section.
	Cluster *ClusterStatus `json:"cluster,omitempty"`
}

// ConfigStatus is the running configuration's version and reloads.
type ConfigStatus struct {
	// Source is the file the configuration was loaded from.
	Source string `json:"source"`
	// Version is 0 at start, +1 per applied reload.
	Version int `json:"version"`
	// LastReload is the time of the last reload attempt (zero if none),
	// LastReloadOK its outcome and LastReloadError its error.
	LastReload      time.Time `json:"last_reload,omitzero"`
	LastReloadOK    bool      `json:"last_reload_ok"`
	LastReloadError string    `json:"last_reload_error,omitempty"`
}

// FlowsStatus is the flow table.
type FlowsStatus struct {
	// Entries is the flows in the table now (every state).
	Entries int64 `json:"entries"`
	// Capacity is flows.max.
	Capacity int64 `json:"capacity"`
	// HalfOpen is the flows that have not completed their handshake.
	HalfOpen int64 `json:"half_open"`
}

// ServiceStatus is one service.
type ServiceStatus struct {
	// Name is services[].name.
	Name string `json:"name"`
	// VIP and Port are the address clients connect to.
	VIP  string `json:"vip"`
	Port uint16 `json:"port"`
	// Timestamps is the timestamp mode: strip, passthrough or rewrite.
	Timestamps string `json:"timestamps"`
	// Scheduler is services[].scheduler (wrr, lc, maglev, ...).
	Scheduler string `json:"scheduler"`
	// SYNProxy is the configured mode; SYNProxyActive whether new SYNs
	// are answered with cookies now.
	SYNProxy       string `json:"syn_proxy"`
	SYNProxyActive bool   `json:"syn_proxy_active"`
	// FlowsActive is the service's open flows (tslb_service_flows_active),
	// FlowsCreated the flows made since start
	// (tslb_service_flows_created_total), HalfOpen those not yet
	// established.
	FlowsActive  float64 `json:"flows_active"`
	FlowsCreated float64 `json:"flows_created"`
	HalfOpen     int64   `json:"half_open"`
	// Backends are the service's backends in configuration order.
	Backends []BackendStatus `json:"backends"`
}

// BackendStatus is one backend of a service.
type BackendStatus struct {
	// Address is the backend's address:port.
	Address string `json:"address"`
	// Weight is its effective weight (0 when drained); Drain is true when
	// it takes no new flows (drain: true or weight 0).
	Weight int  `json:"weight"`
	Drain  bool `json:"drain"`
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
	// FlowsActive is its open flows now, FlowsCreated the flows sent to
	// it since start (the status page's new flows/s is the rate of this
	// counter), Collisions the collisions the detector saw on its tuples
	// (every signature) and Repairs the ones it repaired.
	FlowsActive  int64   `json:"flows_active"`
	FlowsCreated float64 `json:"flows_created"`
	Collisions   float64 `json:"collisions"`
	Repairs      float64 `json:"repairs"`
}

// SNATStatus is one (SNAT address, backend) pair, all workers' shares.
type SNATStatus struct {
	// SNAT is the SNAT address, Backend the backend's address:port.
	SNAT    string `json:"snat"`
	Backend string `json:"backend"`
	// InUse is ports held by open flows; TimeWait tuples the backend
	// keeps in TIME_WAIT (in the ledger); Free ports neither.
	InUse    int `json:"in_use"`
	TimeWait int `json:"time_wait"`
	Free     int `json:"free"`
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
	// Name is links[].name.
	Name string `json:"name"`
	// RxPackets, TxPackets, RxBytes and TxBytes are the frames and bytes
	// tslb received and sent on it; TxErrors the sends that failed.
	RxPackets uint64 `json:"rx_packets"`
	TxPackets uint64 `json:"tx_packets"`
	RxBytes   uint64 `json:"rx_bytes"`
	TxBytes   uint64 `json:"tx_bytes"`
	TxErrors  uint64 `json:"tx_errors"`
	// KernelPackets and KernelDrops are the kernel's PACKET_STATISTICS of
	// its sockets: frames it handed over, and frames lost because a ring
	// was full.
	KernelPackets uint64 `json:"kernel_packets"`
	KernelDrops   uint64 `json:"kernel_drops"`
	// Neighbours is the entries in its neighbour (ARP/NDP) table.
	Neighbours int `json:"neighbours"`
}

// CollisionStatus is one collision the detector saw.
type CollisionStatus struct {
	// Time is when it was seen; Backend the backend's address:port; Tuple
	// the SNAT address:port of the flow; Client the client's address:port.
	Time    time.Time `json:"time"`
	Backend string    `json:"backend"`
	Tuple   string    `json:"tuple"`
	Client  string    `json:"client"`
	// Signature is what gave it away (tslb_collisions_total's signature
	// label, such as old_ack); Repaired whether the detector repaired it.
	Signature string `json:"signature"`
	Repaired  bool   `json:"repaired"`
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
	st.Cluster = b.clusterStatus()
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
