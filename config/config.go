package config

import (
	"net/netip"
	"time"

	"tslb/nat"
)

// TSMode says what the balancer does with TCP timestamp options (RFC 7323)
// on a service's flows. It is nat.TSMode, the one vocabulary of the idea
// (the datapath acts on the same values config parses).
type TSMode = nat.TSMode

// Timestamp modes accepted in services[].timestamps.
const (
	// TSStrip removes the timestamp option from SYNs so it is never
	// negotiated.
	TSStrip = nat.TSStrip
	// TSPassthrough leaves timestamp values untouched.
	TSPassthrough = nat.TSPassthrough
	// TSRewrite makes tslb own the timestamp clock toward the backends
	// (TSval shifted per flow, or synthesised for clients without TS).
	TSRewrite = nat.TSRewrite
)

// Exhaustion is what tslb does when no SNAT tuple toward the chosen
// backend can be used safely (every port is in use, or its tuple is still
// in the backend's TIME_WAIT and cannot be reused safely):
// services[].exhaustion.
type Exhaustion string

// Exhaustion policies.
const (
	// ExhaustWait holds the client's SYN for up to Service.ExhaustionWait
	// for a tuple to become usable, then resets the client.
	ExhaustWait Exhaustion = "wait"
	// ExhaustReject resets the client at once.
	ExhaustReject Exhaustion = "reject"
	// ExhaustReuse reuses the oldest TIME_WAIT tuple anyway; the collision
	// detector repairs the flow if the backend still holds the old
	// connection.
	ExhaustReuse Exhaustion = "reuse"
)

// Defaults applied by Parse (and by ApplyDefaults) to keys that are absent.
const (
	DefaultProtocol       = "tcp"                  // services[].protocol
	DefaultScheduler      = "wrr"                  // services[].scheduler
	DefaultTimestamps     = TSPassthrough          // services[].timestamps
	DefaultTimeWait       = 60 * time.Second       // services[].time_wait
	DefaultISNTranslation = true                   // services[].isn_translation (Service.NoISNTranslation false)
	DefaultExhaustion     = ExhaustWait            // services[].exhaustion
	DefaultExhaustionWait = 1 * time.Second        // services[].exhaustion_wait (exhaustion wait only)
	DefaultWeight         = 1                      // services[].backends[].weight (Parse only)
	DefaultHCInterval     = 2 * time.Second        // health_check.interval
	DefaultHCTimeout      = 1 * time.Second        // health_check.timeout
	DefaultHCRise         = 2                      // health_check.rise
	DefaultHCFall         = 3                      // health_check.fall
	DefaultHCPath         = "/"                    // health_check.path (http only)
	DefaultHCStatus       = 200                    // health_check.expect_status (http only)
	DefaultPortMin        = 20000                  // snat.port_range low end
	DefaultPortMax        = 60999                  // snat.port_range high end
	DefaultFlowsMax       = 1 << 20                // flows.max
	DefaultSynTimeout     = 5 * time.Second        // flows.timeouts.syn
	DefaultHalfOpenMax    = 65536                  // flows.half_open_max
	DefaultSYNProxy       = SYNProxyAuto           // services[].syn_proxy
	DefaultSYNProxyThresh = 256                    // services[].syn_proxy_threshold
	DefaultPassiveSYN     = 500 * time.Millisecond // health.passive.syn_timeout
	DefaultPassiveRetries = 2                      // health.passive.retries
	DefaultPassiveFall    = 3                      // health.passive.fall
	DefaultPassiveDownFor = 10 * time.Second       // health.passive.down_for
	DefaultEstTimeout     = time.Hour              // flows.timeouts.established
	DefaultFinTimeout     = 2 * time.Minute        // flows.timeouts.fin
	DefaultTWTimeout      = 2 * time.Second        // flows.timeouts.time_wait
	DefaultClosedTimeout  = 5 * time.Second        // flows.timeouts.closed
	DefaultMetricsListen  = "127.0.0.1:9100"       // metrics.listen (Parse only: "" disables)
	DefaultLogLevel       = "info"                 // log.level
	DefaultLogFormat      = "text"                 // log.format
	DefaultRepair         = true                   // detector.repair (Detector.NoRepair false)
	DefaultPcapMaxFiles   = 100                    // detector.pcap_max_files
)

// Defaults of the control, shutdown and state keys and of backend draining.
// ApplyDefaults sets none of them: their zero values are meaningful.
const (
	DefaultControlSocket   = "/run/tslb.sock" // control.socket (Parse only: "" disables)
	DefaultShutdownTimeout = 30 * time.Second // shutdown.timeout (Parse only: 0 stops at once)
	DefaultDrain           = false            // services[].backends[].drain
	DefaultStateFile       = ""               // state_file ("" = none)
)

// MaxShutdownTimeout is the largest shutdown.timeout accepted.
const MaxShutdownTimeout = time.Hour

// Config is a whole, validated tslb configuration.
//
// A *Config returned by Parse or Load is immutable by convention: the running
// balancer replaces whole snapshots on reload and readers never lock, so
// nobody may modify one after it has been handed out.
type Config struct {
	// Links are the AF_PACKET links tslb owns; at least one.
	Links []Link
	// Services are the load-balanced TCP services; at least one.
	Services []Service
	// SNAT is the source address and port pool for backend-side flows.
	SNAT SNAT
	// Flows bounds the flow table and sets its idle timeouts.
	Flows Flows
	// Metrics configures the Prometheus listener.
	Metrics Metrics
	// Log configures logging.
	Log Log
	// Detector configures the collision detector.
	Detector Detector
	// Health configures how tslb sends its health probes.
	Health Health
	// Control configures the control socket `tslb reload` talks to.
	Control Control
	// Shutdown configures the graceful stop on SIGTERM.
	Shutdown Shutdown
	// StateFile is where tslb saves its TIME_WAIT ledger on stop and
	// reloads it from on start; "" (the default) means none. If set, it
	// is an absolute path.
	StateFile string
	// Datapath configures the packet I/O and the datapath workers.
	Datapath Datapath
	// Cluster makes this tslb one instance of a cluster behind ECMP; nil
	// (no cluster section) means a single instance.
	Cluster *Cluster
	// Source is the file path the configuration was loaded from; it
	// prefixes every error.
	Source string

	// meta holds the line of every key path seen by Parse; nil for a
	// Config built in Go.
	meta *meta
}

// Link is one network interface tslb reads and writes raw frames on.
type Link struct {
	// Name identifies the link in logs and metrics; defaults to Interface.
	Name string
	// Interface is the Linux interface name (1 to 15 bytes).
	Interface string
	// Subnets are the IPv4 and IPv6 prefixes that are on-link through
	// Interface. IPv6 ones are unicast prefixes of global scope (global
	// or ULA): not IPv4-mapped, multicast or link-local. Prefixes overlap
	// only within a family, and no two subnets may overlap.
	Subnets []netip.Prefix
	// Gateway is the IPv4 next hop for IPv4 destinations outside every
	// link's subnets; the zero (invalid) Addr means none. At most one
	// link has one, and it lies inside one of that link's IPv4 Subnets.
	Gateway netip.Addr
	// Gateway6 is the IPv6 next hop for IPv6 destinations outside every
	// link's subnets (the zero Addr means none); at most one link has
	// one. It lies inside one of that link's IPv6 subnets, or is
	// link-local (fe80::/10, no zone: on-link on every link, the usual
	// way to name a router); the datapath resolves it with neighbour
	// discovery on this link. YAML: the link's `gateway` key holds at
	// most one address of each family (a scalar, or a list of two).
	Gateway6 netip.Addr
}

// Service is one load-balanced VIP:port.
type Service struct {
	// Name is unique and matches [a-z0-9_-]+.
	Name string
	// VIP is the IPv4 or IPv6 address clients connect to. A service is
	// one family: every backend has the VIP's family, and snat.addresses
	// holds at least one address of it. IPv6 VIPs are global or ULA
	// unicast (not link-local) and need no cluster section (the cluster
	// is IPv4 only).
	VIP netip.Addr
	// Port is the TCP port clients connect to (1 to 65535).
	Port uint16
	// Protocol is the transport protocol; only "tcp" is supported.
	Protocol string
	// Scheduler picks a backend for each new flow: "rr" or "wrr".
	Scheduler string
	// Timestamps says how TCP timestamp options are handled.
	Timestamps TSMode
	// TimeWait is the TIME_WAIT length assumed for the backends
	// (1s to 10m). tslb's TIME_WAIT ledger remembers each backend tuple
	// (SNAT address and port, backend address and port) for this long
	// after its flow has closed, long after the flow itself has left the
	// flow table (see Timeouts.TimeWait).
	TimeWait time.Duration
	// NoISNTranslation turns ISN translation off (services[].isn_translation
	// false). With translation on, tslb may shift the sequence space of a
	// flow that reuses a backend tuple still in TIME_WAIT, so the backend
	// accepts the new SYN. The zero value means translation on, so a
	// Service built in Go gets the safe default.
	NoISNTranslation bool
	// Exhaustion is what tslb does when no SNAT tuple toward the chosen
	// backend can be used safely: ExhaustWait, ExhaustReject or
	// ExhaustReuse.
	Exhaustion Exhaustion
	// ExhaustionWait is how long a SYN is held under ExhaustWait before
	// the client is reset (10ms to 30s). It is only valid with
	// ExhaustWait and is 0 for the other policies.
	ExhaustionWait time.Duration
	// Backends are the real servers; at least one has Weight > 0 and is
	// not drained.
	Backends []Backend
	// HealthCheck probes the backends; nil means no health checking.
	HealthCheck *HealthCheck
	// HalfOpenMax bounds the service's half-open flows (a SYN forwarded,
	// the handshake not complete); 0 means only flows.half_open_max
	// applies. A new SYN beyond it evicts the service's oldest half-open
	// flow, never an established one.
	HalfOpenMax int
	// SYNProxy is SYNProxyOff, SYNProxyAuto (the default: tslb answers
	// client SYNs itself with SYN cookies while the service has more than
	// SYNProxyThreshold half-open flows) or SYNProxyOn (always).
	SYNProxy SYNProxyMode
	// SYNProxyThreshold is the half-open count above which SYNProxyAuto
	// answers with cookies (1 to 1000000).
	SYNProxyThreshold int
}

// SYNProxyMode is services[].syn_proxy.
type SYNProxyMode string

// SYN proxy modes.
const (
	SYNProxyOff  SYNProxyMode = "off"
	SYNProxyAuto SYNProxyMode = "auto"
	SYNProxyOn   SYNProxyMode = "on"
)

// Backend is one real server of a service.
type Backend struct {
	// Address is the backend's address, of its service's VIP's family,
	// and TCP port. YAML: "198.18.1.11:8080" or "[2001:db8:1::11]:8080"
	// (quoted: unquoted brackets start a YAML list).
	Address netip.AddrPort
	// Weight is the relative share of new flows (0 to 1000); 0 drains the
	// backend: existing flows continue, new ones go elsewhere.
	Weight int
	// Drain marks the backend as draining: it gets no new flows, whatever
	// its Weight, and its existing flows continue. At least one backend of
	// a service has Weight > 0 and is not drained.
	Drain bool
}

// HealthCheck configures active probing of a service's backends.
type HealthCheck struct {
	// Type is "tcp" (connect) or "http" (GET Path, expect ExpectStatus).
	Type string
	// Interval is the time between probes.
	Interval time.Duration
	// Timeout bounds one probe; it is shorter than Interval.
	Timeout time.Duration
	// Rise is how many consecutive successes mark a backend up (1 to 100).
	Rise int
	// Fall is how many consecutive failures mark a backend down (1 to 100).
	Fall int
	// Path is the HTTP request path; only for Type "http".
	Path string
	// ExpectStatus is the HTTP status that counts as success (100 to 599);
	// only for Type "http".
	ExpectStatus int
}

// SNAT is the pool of source addresses and ports used towards backends.
type SNAT struct {
	// Addresses are the unique SNAT addresses, IPv4 and IPv6; at least
	// one, and at least one of each family a service's VIP has. A flow
	// uses an address of its service's family.
	Addresses []netip.Addr
	// PortMin is the lowest SNAT port (at least 1024).
	PortMin uint16
	// PortMax is the highest SNAT port (at least PortMin).
	PortMax uint16
}

// Flows bounds the flow table.
type Flows struct {
	// Max is the maximum number of tracked flows (1 to 100000000).
	Max int
	// HalfOpenMax bounds the flows whose handshake is not complete, all
	// services (1 to Max; 0 means DefaultHalfOpenMax, or Max if smaller).
	// Past it a new SYN evicts the oldest half-open flow: a SYN flood
	// never takes established flows' room or every SNAT tuple.
	HalfOpenMax int
	// Timeouts are the idle timeouts per TCP state.
	Timeouts Timeouts
}

// Timeouts are flow idle timeouts by TCP state; all are positive.
type Timeouts struct {
	// Syn applies after a SYN with no answer yet.
	Syn time.Duration
	// Established applies to established flows.
	Established time.Duration
	// Fin applies after one or both FINs, before the close completes.
	Fin time.Duration
	// TimeWait is how long a flow whose FINs are both acknowledged stays
	// in the flow table (under its client key) to absorb late segments,
	// which are dropped; its backend tuple returns to the pool at once. It
	// is not the backend's TIME_WAIT: that is Service.TimeWait, which
	// tslb's TIME_WAIT ledger tracks per backend tuple.
	TimeWait time.Duration
	// Closed is the same after an RST.
	Closed time.Duration
}

// Datapath configures how tslb moves frames: how many workers share the
// links and how each reads and writes them. Every key needs a restart.
type Datapath struct {
	// Workers is the number of datapath workers (1 to MaxWorkers); 0 means
	// one per CPU (runtime.NumCPU). Each worker has its own socket on
	// every link (one PACKET_FANOUT group per link), its own flows and its
	// own share of the SNAT ports (the ports p with p % Workers == the
	// worker's index), so the snat.port_range must hold at least Workers
	// ports.
	Workers int
	// IO is "ring" (memory-mapped receive ring, batched transmit; the
	// default) or "socket" (one read(2)/write(2) per frame: the fallback).
	IO string
	// RingFrames is the number of slots of each (link, worker) receive
	// ring, a power of two from 64 to 65536 (0 means DefaultRingFrames).
	RingFrames int
	// KernelDropOff (datapath.kernel_drop: false) leaves the kernel of
	// tslb's namespace to route and discard the frames tslb takes. By
	// default tslb installs an nftables netdev ingress table (link.
	// KernelDrop) that drops packets to its VIPs and SNAT addresses after
	// its packet sockets have their copy.
	KernelDropOff bool
}

// Datapath limits and defaults.
const (
	MaxWorkers        = 256
	DefaultDatapathIO = "ring"
	DefaultRingFrames = 4096
)

// Metrics configures the Prometheus HTTP listener.
type Metrics struct {
	// Listen is the host:port to serve /metrics on; "" disables metrics.
	Listen string
}

// Log configures logging.
type Log struct {
	// Level is one of "debug", "info", "warn" or "error".
	Level string
	// Format is the log line format: "text" (logfmt key=value pairs, the
	// log/slog text handler) or "json" (one JSON object per line, the
	// log/slog JSON handler). `tslb run -log-format` overrides it.
	Format string
}

// Detector configures the SNAT collision detector.
type Detector struct {
	// PcapDir is a directory for collision pcaps; "" means none.
	PcapDir string
	// PcapMaxFiles caps the number of pcap files kept in PcapDir
	// (1 to 100000).
	PcapMaxFiles int
	// NoRepair turns collision repair off (detector.repair false): the
	// detector then only reports collisions. The zero value means repair
	// on, so a Config built in Go gets the default.
	NoRepair bool
}

// Health configures tslb's health probes.
type Health struct {
	// Source is the IPv4 address the probes to IPv4 backends are sent
	// from; the zero (invalid) Addr means none (the kernel picks one).
	// tslb probes through the kernel's TCP stack, so Source must be an
	// address of a kernel interface in tslb's network namespace; the
	// kernel must own this address and only this one, never a VIP or SNAT
	// address (the kernel would answer or reset tslb's flows). Source
	// therefore equals no VIP, SNAT address or backend address, and lies
	// inside one of the links' subnets unless a link has an IPv4 gateway.
	Source netip.Addr
	// Source6 is Source for probes to IPv6 backends (the zero Addr means
	// none: the kernel picks), with the same rules in IPv6 (global or ULA
	// scope, not link-local). YAML: health.source holds at most one
	// address of each family (a scalar, or a list of two).
	Source6 netip.Addr
	// Passive is passive health checking and SYN re-dispatch.
	Passive PassiveHealth
}

// PassiveHealth configures what tslb learns from the SYNs it forwards: a
// backend that answers a SYN with an RST, or not at all within SYNTimeout,
// gets the SYN re-sent to another backend (the client sees no error), up
// to Retries times per connection, and counts a failure; Fall consecutive
// failures take it out of new flows for DownFor (or until an active health
// check brings it back). The zero value is off; Parse and ApplyDefaults
// turn it on with the Default* values.
type PassiveHealth struct {
	// Off disables it (health.passive.enabled: false).
	Off bool
	// SYNTimeout is how long a backend may take to answer a SYN (10ms..10s).
	SYNTimeout time.Duration
	// Retries bounds re-dispatches per connection (0..8; 0 only counts
	// failures; ApplyDefaults, for a Config built in Go, takes 0 as unset).
	Retries int
	// Fall is how many consecutive failures mark a backend down (1..100).
	Fall int
	// DownFor is how long a passively failed backend gets no new flows
	// (1s..1h).
	DownFor time.Duration
}

// Control configures the control socket.
type Control struct {
	// Socket is the path of the unix socket `tslb reload` talks to; ""
	// disables it. If set, it is an absolute path. Parse defaults it to
	// DefaultControlSocket; ApplyDefaults leaves "" alone.
	Socket string
}

// Shutdown configures the graceful stop.
type Shutdown struct {
	// Timeout bounds the graceful stop (0 to MaxShutdownTimeout): on
	// SIGTERM tslb stops accepting new flows and lets existing flows
	// finish for at most this long; 0 stops at once. Parse defaults it to
	// DefaultShutdownTimeout; ApplyDefaults leaves 0 alone.
	Timeout time.Duration
}

// ApplyDefaults fills in the documented default of every field whose zero
// value means "not set", the same way Parse does for absent keys. It is meant
// for a Config built in Go before Validate or Marshal. Fields whose zero value
// is meaningful are left alone: Backend.Weight (0 drains), Metrics.Listen and
// Control.Socket ("" disables), Shutdown.Timeout (0 stops at once),
// Link.Gateway, Link.Gateway6, Service.HealthCheck, Health.Source,
// Health.Source6 and StateFile (none); the booleans Service.NoISNTranslation,
// Detector.NoRepair and Backend.Drain need no default, their zero value is
// the default. A HealthCheck's Path and ExpectStatus are defaulted only for
// Type "http", and Service.ExhaustionWait only for Exhaustion ExhaustWait.
func (c *Config) ApplyDefaults() {
	for i := range c.Links {
		l := &c.Links[i]
		if l.Name == "" {
			l.Name = l.Interface
		}
	}
	for i := range c.Services {
		s := &c.Services[i]
		setDefault(&s.Protocol, DefaultProtocol)
		setDefault(&s.Scheduler, DefaultScheduler)
		setDefault(&s.Timestamps, DefaultTimestamps)
		setDefault(&s.TimeWait, DefaultTimeWait)
		setDefault(&s.Exhaustion, DefaultExhaustion)
		setDefault(&s.SYNProxy, DefaultSYNProxy)
		setDefault(&s.SYNProxyThreshold, DefaultSYNProxyThresh)
		if s.Exhaustion == ExhaustWait {
			setDefault(&s.ExhaustionWait, DefaultExhaustionWait)
		}
		if hc := s.HealthCheck; hc != nil {
			setDefault(&hc.Interval, DefaultHCInterval)
			setDefault(&hc.Timeout, DefaultHCTimeout)
			setDefault(&hc.Rise, DefaultHCRise)
			setDefault(&hc.Fall, DefaultHCFall)
			if hc.Type == "http" {
				setDefault(&hc.Path, DefaultHCPath)
				setDefault(&hc.ExpectStatus, DefaultHCStatus)
			}
		}
	}
	if c.SNAT.PortMin == 0 && c.SNAT.PortMax == 0 {
		c.SNAT.PortMin, c.SNAT.PortMax = DefaultPortMin, DefaultPortMax
	}
	setDefault(&c.Flows.Max, DefaultFlowsMax)
	setDefault(&c.Flows.HalfOpenMax, min(DefaultHalfOpenMax, c.Flows.Max))
	t := &c.Flows.Timeouts
	setDefault(&t.Syn, DefaultSynTimeout)
	setDefault(&t.Established, DefaultEstTimeout)
	setDefault(&t.Fin, DefaultFinTimeout)
	setDefault(&t.TimeWait, DefaultTWTimeout)
	setDefault(&t.Closed, DefaultClosedTimeout)
	setDefault(&c.Log.Level, DefaultLogLevel)
	setDefault(&c.Log.Format, DefaultLogFormat)
	setDefault(&c.Detector.PcapMaxFiles, DefaultPcapMaxFiles)
	setDefault(&c.Datapath.IO, DefaultDatapathIO)
	if !c.Health.Passive.Off {
		p := &c.Health.Passive
		setDefault(&p.SYNTimeout, DefaultPassiveSYN)
		setDefault(&p.Fall, DefaultPassiveFall)
		setDefault(&p.DownFor, DefaultPassiveDownFor)
		setDefault(&p.Retries, DefaultPassiveRetries) // Go callers: 0 counts as unset
	}
	setDefault(&c.Datapath.RingFrames, DefaultRingFrames)
	if c.Cluster != nil {
		c.Cluster.applyDefaults()
	}
}

// setDefault stores def in *p if *p is the zero value.
func setDefault[T comparable](p *T, def T) {
	var zero T
	if *p == zero {
		*p = def
	}
}
