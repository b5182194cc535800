package lb

import (
	"net/netip"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"tslb/config"
	"tslb/lb/link"
	"tslb/nat"
)

// service is one VIP:port of a snapshot. It is immutable once the snapshot
// is stored, except for the schedulers' own state.
type service struct {
	name     string
	vip      nat.Addr16
	port     uint16
	ts       nat.TSMode
	backends []*backend
	// scheds holds one scheduler per worker (round-robin state is per
	// worker, so picking takes no lock another worker contends); hashing
	// schedulers share one instance.
	scheds []Scheduler

	halfOpenMax int64 // services[].half_open_max (0: none)
	*serviceState
	synProxy   config.SYNProxyMode
	proxyAbove int64 // syn_proxy_threshold

	hc            *config.HealthCheck
	timeWaitNs    int64 // the backends' TIME_WAIT (services[].time_wait)
	isn           bool  // isn_translation
	exhaustion    config.Exhaustion
	exhaustWaitNs int64

	created      prometheus.Counter
	active       prometheus.Gauge
	redispatched [2]prometheus.Counter // SYN re-dispatched after the backend's RST, after its silence
	syns         prometheus.Counter
	cookies      [numCookieResults]prometheus.Counter
	refused      [numRefusals]prometheus.Counter
	exhausted    [numExhaust]prometheus.Counter
}

// serviceState is the part of a service that outlives reloads (by name):
// its flows do.
type serviceState struct {
	halfOpen    atomic.Int64 // half-open flows, every worker
	proxyUntil  atomic.Int64 // syn_proxy auto: answer with cookies until (unix ns)
	cookieUntil atomic.Int64 // the last cookie sent is valid until (unix ns)
}

// SYN cookie outcomes, as metric labels.
const (
	cookieSent = iota
	cookieValid
	cookieInvalid
	numCookieResults
)

var cookieResultNames = [numCookieResults]string{"sent", "valid", "invalid"}

// Refusal reasons of a new SYN, as metric labels.
const (
	refusedTableFull = iota
	refusedNoBackend
	refusedSNAT
	numRefusals
)

var refusalNames = [numRefusals]string{"table_full", "no_backend", "snat_exhausted"}

// backend is one real server of a service in one snapshot.
type backend struct {
	ap     netip.AddrPort
	addr   nat.Addr16
	port   uint16
	weight int // 0: drained (weight 0 or drain: true)
	nic    *nic
	hop    nat.Addr16
	*backendState
}

// backendState is the part of a backend that outlives reloads.
type backendState struct {
	up    atomic.Bool  // health: false after fall failed checks
	flows atomic.Int64 // live flows, for least_conn
	// Passive health: consecutive refused or unanswered SYNs, and until
	// when (unix ns) the backend gets no new flows.
	passiveFails    atomic.Int32
	downUntil       atomic.Int64
	passiveFailures prometheus.Counter
	passiveDowns    prometheus.Counter
	created         prometheus.Counter
	active          prometheus.Gauge
	collisions      [numSignatures]prometheus.Counter
	repairs         prometheus.Counter
	health          healthRecord // the latest active probe, for the status page
}

// usable reports whether be may get a new flow at now: up by the active
// health check and not taken out by the passive one.
func (be *backend) usable(now int64) bool {
	return be.up.Load() && be.downUntil.Load() <= now
}

// nic is one of tslb's links as every worker sees it: its addresses and
// neighbour table (shared, read-mostly), and each worker's queue on it (for
// statistics; a worker sends only on its own).
type nic struct {
	name    string
	ifname  string // the interface
	idx     int    // position in shared.nics
	mac     nat.MAC
	mtu     int
	subnets []netip.Prefix
	gw      nat.Addr16 // IPv4 next hop for off-link IPv4 destinations
	hasGW   bool
	gw6     nat.Addr16 // IPv6 next hop
	hasGW6  bool
	neigh   *neighTable
	steer   link.Steering
	queues  []link.Queue // by worker

	arpReq, arpReply, arpGratuitous prometheus.Counter

	// downs counts the interface going down (worker 0's queue reports
	// each ENETDOWN once); down is set until a frame arrives again, and
	// the first worker to see one re-announces tslb's addresses.
	downs atomic.Uint64
	down  atomic.Bool
	// upAt is when frames arrived again after the last down (unix ns):
	// a SYN sent before it may have died with the link, which passive
	// health does not blame on the backend.
	upAt atomic.Int64
}

// onLink reports whether a is on nic's subnets or is its gateway.
func (l *nic) onLink(a nat.Addr16) bool {
	na := a.Addr()
	for _, p := range l.subnets {
		if p.Contains(na) {
			return true
		}
	}
	return (l.hasGW && a == l.gw) || (l.hasGW6 && a == l.gw6)
}

type ownedKind uint8

const (
	ownedVIP ownedKind = iota + 1
	ownedSNAT
	ownedKernel // health.source: the kernel's, frames to it are ignored
)

// ownedAddr is one address tslb owns (or leaves to the kernel).
type ownedAddr struct {
	kind ownedKind
	svcs []*service // a VIP's services (a few: scanned)
}

// service returns the VIP's service on port, or nil.
func (o *ownedAddr) service(port uint16) *service {
	for _, s := range o.svcs {
		if s.port == port {
			return s
		}
	}
	return nil
}

var broadcast = nat.MAC{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}

func less(a, b nat.Addr16) bool {
	for i := range a {
		if a[i] != b[i] {
			return a[i] < b[i]
		}
	}
	return false
}

// hostPort formats a and port as host:port ([v6]:port for IPv6).
func hostPort(a nat.Addr16, port uint16) string {
	return netip.AddrPortFrom(a.Addr(), port).String()
}
