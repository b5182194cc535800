package config

import (
	"net/netip"
	"time"
)

// TSMode says what the balancer does with TCP timestamp options (RFC 7323)
// on a service's flows.
type TSMode string

// Timestamp modes accepted in services[].timestamps.
const (
	// TSStrip removes the timestamp option from SYNs so it is never
	// negotiated.
	TSStrip TSMode = "strip"
	// TSPassthrough leaves timestamp values untouched.
	TSPassthrough TSMode = "passthrough"
	// TSRewrite rewrites TSval/TSecr with a per-flow offset.
	TSRewrite TSMode = "rewrite"
)

// Defaults applied by Parse (and by ApplyDefaults) to keys that are absent.
const (
	DefaultProtocol      = "tcp"            // services[].protocol
	DefaultScheduler     = "wrr"            // services[].scheduler
	DefaultTimestamps    = TSPassthrough    // services[].timestamps
	DefaultTimeWait      = 60 * time.Second // services[].time_wait
	DefaultWeight        = 1                // services[].backends[].weight (Parse only)
	DefaultHCInterval    = 2 * time.Second  // health_check.interval
	DefaultHCTimeout     = 1 * time.Second  // health_check.timeout
	DefaultHCRise        = 2                // health_check.rise
	DefaultHCFall        = 3                // health_check.fall
	DefaultHCPath        = "/"              // health_check.path (http only)
	DefaultHCStatus      = 200              // health_check.expect_status (http only)
	DefaultPortMin       = 20000            // snat.port_range low end
	DefaultPortMax       = 60999            // snat.port_range high end
	DefaultFlowsMax      = 1 << 20          // flows.max
	DefaultSynTimeout    = 30 * time.Second // flows.timeouts.syn
	DefaultEstTimeout    = time.Hour        // flows.timeouts.established
	DefaultFinTimeout    = 2 * time.Minute  // flows.timeouts.fin
	DefaultTWTimeout     = 60 * time.Second // flows.timeouts.time_wait
	DefaultClosedTimeout = 10 * time.Second // flows.timeouts.closed
	DefaultMetricsListen = "127.0.0.1:9100" // metrics.listen (Parse only: "" disables)
	DefaultLogLevel      = "info"           // log.level
)

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
	// Subnets are the IPv4 prefixes that are on-link through Interface.
	Subnets []netip.Prefix
	// Gateway is the next hop for destinations outside every link's
	// subnets; the zero (invalid) Addr means none. At most one link has
	// one, and it lies inside one of that link's Subnets.
	Gateway netip.Addr
}

// Service is one load-balanced VIP:port.
type Service struct {
	// Name is unique and matches [a-z0-9_-]+.
	Name string
	// VIP is the IPv4 address clients connect to.
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
	// (1s to 10m).
	TimeWait time.Duration
	// Backends are the real servers; at least one has Weight > 0.
	Backends []Backend
	// HealthCheck probes the backends; nil means no health checking.
	HealthCheck *HealthCheck
}

// Backend is one real server of a service.
type Backend struct {
	// Address is the backend's IPv4 address and TCP port.
	Address netip.AddrPort
	// Weight is the relative share of new flows (0 to 1000); 0 drains the
	// backend: existing flows continue, new ones go elsewhere.
	Weight int
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
	// Addresses are the unique IPv4 SNAT addresses; at least one.
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
	// TimeWait applies once both FINs are acknowledged.
	TimeWait time.Duration
	// Closed applies after a RST.
	Closed time.Duration
}

// Metrics configures the Prometheus HTTP listener.
type Metrics struct {
	// Listen is the host:port to serve /metrics on; "" disables metrics.
	Listen string
}

// Log configures logging.
type Log struct {
	// Level is one of "debug", "info", "warn" or "error".
	Level string
}

// Detector configures the SNAT collision detector.
type Detector struct {
	// PcapDir is a directory for collision pcaps; "" means none.
	PcapDir string
}

// ApplyDefaults fills in the documented default of every field whose zero
// value means "not set", the same way Parse does for absent keys. It is meant
// for a Config built in Go before Validate or Marshal. Fields whose zero value
// is meaningful are left alone: Backend.Weight (0 drains), Metrics.Listen (""
// disables), Link.Gateway and Service.HealthCheck (none). A HealthCheck's
// Path and ExpectStatus are defaulted only for Type "http".
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
	t := &c.Flows.Timeouts
	setDefault(&t.Syn, DefaultSynTimeout)
	setDefault(&t.Established, DefaultEstTimeout)
	setDefault(&t.Fin, DefaultFinTimeout)
	setDefault(&t.TimeWait, DefaultTWTimeout)
	setDefault(&t.Closed, DefaultClosedTimeout)
	setDefault(&c.Log.Level, DefaultLogLevel)
}

// setDefault stores def in *p if *p is the zero value.
func setDefault[T comparable](p *T, def T) {
	var zero T
	if *p == zero {
		*p = def
	}
}
