package config

import (
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Validate runs the semantic checks on c and returns every problem found,
// sorted by line, or nil. Parse runs it on every file; it is also meant for a
// Config built in Go (after ApplyDefaults if it relies on defaults), whose
// errors then have line 0 and print as "FILE: KEY: MSG".
func (c *Config) Validate() Errors {
	v := &validator{c: c}
	v.links()
	v.services()
	v.snat()
	v.datapath()
	v.flows()
	v.misc()
	v.health()
	v.passive()
	v.process()
	v.cluster()
	v.errs.sort()
	return v.errs
}

// validator accumulates the errors of one Validate call.
type validator struct {
	c    *Config
	errs Errors
}

// add records an error for path unless Parse already reported one for path
// or an ancestor of it.
func (v *validator) add(path, format string, args ...any) {
	if v.c.meta.isBad(path) {
		return
	}
	v.errs = append(v.errs, Error{
		File: v.c.Source,
		Line: v.c.meta.line(path),
		Key:  path,
		Msg:  fmt.Sprintf(format, args...),
	})
}

// unicast4 checks that a is a usable unicast IPv4 address and reports why
// not under path; it returns whether a is usable.
func (v *validator) unicast4(path string, a netip.Addr) bool {
	switch {
	case !a.IsValid():
		v.add(path, "required: an IPv4 address")
	case !a.Is4():
		v.add(path, "%s is not an IPv4 address", a)
	case a.IsUnspecified() || a.IsLoopback() || a.IsMulticast() || a == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		v.add(path, "%s is not a usable unicast address", a)
	default:
		return true
	}
	return false
}

// subnetsUsable reports whether the link subnets are complete enough for
// on-link checks: at least one, and all of them valid IPv4 prefixes.
// Otherwise every address would be reported again for an error already
// reported on the links.
func (v *validator) subnetsUsable() bool {
	n := 0
	for _, l := range v.c.Links {
		for _, s := range l.Subnets {
			if !s.IsValid() || !s.Addr().Is4() {
				return false
			}
			n++
		}
	}
	return n > 0
}

// offLink reports whether a is outside every link subnet, when that can be
// told (see subnetsUsable).
func (v *validator) offLink(a netip.Addr) bool {
	return v.subnetsUsable() && v.onLink(a) == ""
}

// onLink returns the path of the first link subnet containing a, or "".
func (v *validator) onLink(a netip.Addr) string {
	for i, l := range v.c.Links {
		for j, s := range l.Subnets {
			if s.IsValid() && s.Addr().Is4() && s.Contains(a) {
				return indexPath(indexPath("links", i)+".subnets", j)
			}
		}
	}
	return ""
}

// gatewayLink returns the index of the first link with a gateway, or -1.
func (v *validator) gatewayLink() int {
	for i, l := range v.c.Links {
		if l.Gateway.IsValid() {
			return i
		}
	}
	return -1
}

// notGateway reports a that equals some link's gateway.
func (v *validator) notGateway(path string, a netip.Addr) {
	for i, l := range v.c.Links {
		if l.Gateway.IsValid() && l.Gateway == a {
			v.add(path, "%s is links[%d].gateway", a, i)
		}
	}
}

// validIfname reports whether s is acceptable as a Linux interface name
// (dev_valid_name in net/core/dev.c).
func validIfname(s string) bool {
	if len(s) == 0 || len(s) > 15 || s == "." || s == ".." {
		return false
	}
	for _, r := range s {
		if r == '/' || r == ':' || r <= ' ' || r == 0x7f {
			return false
		}
	}
	return true
}

// validServiceName reports whether s matches [a-z0-9_-]+.
func validServiceName(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '_' || r == '-') {
			return false
		}
	}
	return true
}

func (v *validator) links() {
	links := v.c.Links
	if len(links) == 0 {
		v.add("links", "at least one link is required")
		return
	}
	ifaces := map[string]int{}
	names := map[string]int{}
	gw := -1
	for i, l := range links {
		p := indexPath("links", i)
		ifaceDup := false
		switch {
		case l.Interface == "":
			v.add(p+".interface", "required: a Linux interface name")
		case !validIfname(l.Interface):
			v.add(p+".interface", "%q is not a valid interface name (1..15 bytes, no '/', ':' or spaces)", l.Interface)
		default:
			if j, dup := ifaces[l.Interface]; dup {
				v.add(p+".interface", "interface %q is also used by links[%d]", l.Interface, j)
				ifaceDup = true
			} else {
				ifaces[l.Interface] = i
			}
		}
		name := l.Name
		if name == "" {
			name = l.Interface
		}
		// A name defaulted from a duplicate interface is the same error.
		if name != "" && !(ifaceDup && name == l.Interface) {
			if j, dup := names[name]; dup {
				v.add(p+".name", "link name %q is also used by links[%d]", name, j)
			} else {
				names[name] = i
			}
		}
		for j, s := range l.Subnets {
			sp := indexPath(p+".subnets", j)
			switch {
			case !s.IsValid():
				v.add(sp, "required: an IPv4 prefix")
			case !s.Addr().Is4():
				v.add(sp, "%s is not an IPv4 prefix", s)
			case s != s.Masked():
				v.add(sp, "%s has host bits set (did you mean %s?)", s, s.Masked())
			}
		}
		if len(l.Subnets) == 0 && !l.Gateway.IsValid() {
			v.add(p+".subnets", "at least one subnet is required unless gateway is set")
		}
		if l.Gateway.IsValid() {
			gp := p + ".gateway"
			if v.unicast4(gp, l.Gateway) {
				inside := false
				for _, s := range l.Subnets {
					inside = inside || (s.IsValid() && s.Contains(l.Gateway))
				}
				if !inside {
					v.add(gp, "gateway %s is not inside any of this link's subnets", l.Gateway)
				}
			}
			if gw >= 0 {
				v.add(gp, "only one link may have a gateway; links[%d] already has one", gw)
			} else {
				gw = i
			}
		}
	}
	// Overlapping subnets, on different links or repeated on one.
	type sub struct {
		p    netip.Prefix
		path string
	}
	var seen []sub
	for i, l := range links {
		for j, s := range l.Subnets {
			if !s.IsValid() || !s.Addr().Is4() {
				continue
			}
			sp := indexPath(indexPath("links", i)+".subnets", j)
			for _, o := range seen {
				if o.p.Overlaps(s) {
					v.add(sp, "%s overlaps %s (%s)", s, o.p, o.path)
					break
				}
			}
			seen = append(seen, sub{s, sp})
		}
	}
}

func (v *validator) services() {
	c := v.c
	if len(c.Services) == 0 {
		v.add("services", "at least one service is required")
		return
	}
	names := map[string]int{}
	vipPorts := map[netip.AddrPort]int{}
	for i, s := range c.Services {
		p := indexPath("services", i)
		switch {
		case s.Name == "":
			v.add(p+".name", "required: a service name")
		case !validServiceName(s.Name):
			v.add(p+".name", "%q must match [a-z0-9_-]+", s.Name)
		default:
			if j, dup := names[s.Name]; dup {
				v.add(p+".name", "duplicate service name %q (also services[%d])", s.Name, j)
			} else {
				names[s.Name] = i
			}
		}
		vp := p + ".vip"
		if v.unicast4(vp, s.VIP) {
			// A cluster's VIPs are routed to the instances (announced
			// with BGP), so they need not be on a link.
			if v.offLink(s.VIP) && c.Cluster == nil {
				v.add(vp, "VIP %s is not inside any link's subnets", s.VIP)
			}
			v.notGateway(vp, s.VIP)
			for k, a := range c.SNAT.Addresses {
				if a == s.VIP {
					v.add(vp, "VIP %s equals snat.addresses[%d]", s.VIP, k)
				}
			}
			if s.Port != 0 {
				ap := netip.AddrPortFrom(s.VIP, s.Port)
				if j, dup := vipPorts[ap]; dup {
					v.add(vp, "%s is also used by services[%d]", ap, j)
				} else {
					vipPorts[ap] = i
				}
			}
		}
		if s.Port == 0 {
			v.add(p+".port", "required: a TCP port 1..65535")
		}
		if s.Protocol != "tcp" {
			v.add(p+".protocol", "protocol %q is not supported; only \"tcp\"", s.Protocol)
		}
		switch s.Scheduler {
		case "rr", "wrr", "least_conn", "maglev":
		default:
			v.add(p+".scheduler", "unknown scheduler %q (supported: rr, wrr, least_conn, maglev)", s.Scheduler)
		}
		switch s.Timestamps {
		case TSStrip, TSPassthrough, TSRewrite:
		default:
			v.add(p+".timestamps", "unknown timestamps mode %q (supported: strip, passthrough, rewrite)", s.Timestamps)
		}
		if s.TimeWait < time.Second || s.TimeWait > 10*time.Minute {
			v.add(p+".time_wait", "%s is out of range 1s..10m", s.TimeWait)
		}
		switch s.SYNProxy {
		case SYNProxyOff, SYNProxyAuto, SYNProxyOn:
		default:
			v.add(p+".syn_proxy", "unknown mode %q (supported: off, auto, on)", s.SYNProxy)
		}
		if s.SYNProxyThreshold < 1 || s.SYNProxyThreshold > 1_000_000 {
			v.add(p+".syn_proxy_threshold", "%d is out of range 1..1000000", s.SYNProxyThreshold)
		}
		if s.HalfOpenMax < 0 {
			v.add(p+".half_open_max", "%d must not be negative (0: only flows.half_open_max)", s.HalfOpenMax)
		}
		switch s.Exhaustion {
		case ExhaustWait:
			if s.ExhaustionWait < 10*time.Millisecond || s.ExhaustionWait > 30*time.Second {
				v.add(p+".exhaustion_wait", "%s is out of range 10ms..30s", s.ExhaustionWait)
			}
		case ExhaustReject, ExhaustReuse:
			if s.ExhaustionWait != 0 {
				v.add(p+".exhaustion_wait", "only valid with exhaustion: wait (exhaustion is %q)", s.Exhaustion)
			}
		default:
			v.add(p+".exhaustion", "unknown exhaustion policy %q (supported: wait, reject, reuse)", s.Exhaustion)
		}
		v.backends(p, s)
		if s.HealthCheck != nil {
			v.healthCheck(p+".health_check", s.HealthCheck)
		}
	}
}

func (v *validator) backends(p string, s Service) {
	c := v.c
	bp := p + ".backends"
	if len(s.Backends) == 0 {
		v.add(bp, "at least one backend is required")
		return
	}
	gw := v.gatewayLink()
	seen := map[netip.AddrPort]int{}
	live := false
	for j, b := range s.Backends {
		p := indexPath(bp, j)
		ap := p + ".address"
		a := b.Address.Addr()
		if v.unicast4(ap, a) {
			if b.Address.Port() == 0 {
				v.add(ap, "port must be 1..65535")
			}
			if k, dup := seen[b.Address]; dup {
				v.add(ap, "duplicate backend %s (also %s[%d])", b.Address, bp, k)
			} else {
				seen[b.Address] = j
			}
			if gw < 0 && v.offLink(a) {
				v.add(ap, "backend %s is not inside any link's subnets and no link has a gateway", a)
			}
			v.notGateway(ap, a)
			for k, o := range c.Services {
				if o.VIP == a {
					v.add(ap, "backend %s equals the VIP of services[%d]", a, k)
				}
			}
			for k, sa := range c.SNAT.Addresses {
				if sa == a {
					v.add(ap, "backend %s equals snat.addresses[%d]", a, k)
				}
			}
		}
		if b.Weight < 0 || b.Weight > 1000 {
			v.add(p+".weight", "%d is out of range 0..1000", b.Weight)
		}
		live = live || (b.Weight > 0 && !b.Drain)
	}
	if !live {
		v.add(bp, "every backend has weight 0 or is drained; at least one must have weight > 0 and not be drained")
	}
}

func (v *validator) healthCheck(p string, hc *HealthCheck) {
	switch hc.Type {
	case "tcp", "http":
	case "":
		v.add(p+".type", "required: tcp or http")
	default:
		v.add(p+".type", "unknown health check type %q (supported: tcp, http)", hc.Type)
	}
	if hc.Interval <= 0 {
		v.add(p+".interval", "%s must be positive", hc.Interval)
	}
	if hc.Timeout <= 0 {
		v.add(p+".timeout", "%s must be positive", hc.Timeout)
	} else if hc.Interval > 0 && hc.Timeout >= hc.Interval {
		v.add(p+".timeout", "timeout %s must be shorter than interval %s", hc.Timeout, hc.Interval)
	}
	if hc.Rise < 1 || hc.Rise > 100 {
		v.add(p+".rise", "%d is out of range 1..100", hc.Rise)
	}
	if hc.Fall < 1 || hc.Fall > 100 {
		v.add(p+".fall", "%d is out of range 1..100", hc.Fall)
	}
	if hc.Type == "http" {
		if !strings.HasPrefix(hc.Path, "/") {
			v.add(p+".path", "%q must start with /", hc.Path)
		}
		if hc.ExpectStatus < 100 || hc.ExpectStatus > 599 {
			v.add(p+".expect_status", "%d is out of range 100..599", hc.ExpectStatus)
		}
	} else {
		if hc.Path != "" {
			v.add(p+".path", "only valid with type http")
		}
		if hc.ExpectStatus != 0 {
			v.add(p+".expect_status", "only valid with type http")
		}
	}
}

func (v *validator) snat() {
	s := v.c.SNAT
	if len(s.Addresses) == 0 {
		v.add("snat.addresses", "at least one SNAT address is required")
	}
	seen := map[netip.Addr]int{}
	for i, a := range s.Addresses {
		p := indexPath("snat.addresses", i)
		if !v.unicast4(p, a) {
			continue
		}
		if j, dup := seen[a]; dup {
			v.add(p, "duplicate SNAT address %s (also snat.addresses[%d])", a, j)
			continue
		}
		seen[a] = i
		if v.offLink(a) {
			v.add(p, "SNAT address %s is not inside any link's subnets", a)
		}
		v.notGateway(p, a)
	}
	const pr = "snat.port_range"
	if s.PortMin < 1024 {
		v.add(pr, "lowest port %d is below 1024", s.PortMin)
	}
	if s.PortMin > s.PortMax {
		v.add(pr, "range %d-%d is reversed", s.PortMin, s.PortMax)
	} else if w := v.c.Datapath.Workers; w > 0 && int(s.PortMax)-int(s.PortMin)+1 < w {
		v.add(pr, "range %d-%d holds fewer ports than datapath.workers (%d): every worker needs its own share", s.PortMin, s.PortMax, w)
	}
}

func (v *validator) datapath() {
	dp := v.c.Datapath
	if dp.Workers < 0 || dp.Workers > MaxWorkers {
		v.add("datapath.workers", "%d is out of range 0..%d (0: one per CPU)", dp.Workers, MaxWorkers)
	}
	switch dp.IO {
	case "ring", "socket":
	default:
		v.add("datapath.io", "unknown I/O mode %q (supported: ring, socket)", dp.IO)
	}
	if r := dp.RingFrames; r < 64 || r > 65536 || r&(r-1) != 0 {
		v.add("datapath.ring_frames", "%d must be a power of two in 64..65536", r)
	}
}

func (v *validator) flows() {
	f := v.c.Flows
	if f.Max < 1 || f.Max > 100_000_000 {
		v.add("flows.max", "%d is out of range 1..100000000", f.Max)
	} else if f.HalfOpenMax < 1 || f.HalfOpenMax > f.Max {
		v.add("flows.half_open_max", "%d is out of range 1..flows.max (%d)", f.HalfOpenMax, f.Max)
	}
	t := f.Timeouts
	for _, x := range []struct {
		key string
		d   time.Duration
	}{
		{"syn", t.Syn}, {"established", t.Established}, {"fin", t.Fin},
		{"time_wait", t.TimeWait}, {"closed", t.Closed},
	} {
		if x.d <= 0 {
			v.add("flows.timeouts."+x.key, "%s must be positive", x.d)
		}
	}
}

func (v *validator) misc() {
	if n := v.c.Detector.PcapMaxFiles; n < 1 || n > 100_000 {
		v.add("detector.pcap_max_files", "%d is out of range 1..100000", n)
	}
	if l := v.c.Metrics.Listen; l != "" {
		_, port, err := net.SplitHostPort(l)
		if err != nil {
			v.add("metrics.listen", "%q must be host:port (or \"\" to disable)", l)
		} else if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
			v.add("metrics.listen", "%q: port must be 1..65535", l)
		}
	}
	switch v.c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		v.add("log.level", "unknown level %q (supported: debug, info, warn, error)", v.c.Log.Level)
	}
	if !ValidLogFormat(v.c.Log.Format) {
		v.add("log.format", "unknown format %q (supported: text, json)", v.c.Log.Format)
	}
}

// health checks health.source: an IPv4 address the kernel owns, so none of
// the addresses tslb itself answers for or talks to, and on-link unless a
// link has a gateway.
func (v *validator) passive() {
	ph := v.c.Health.Passive
	if ph.Off {
		return
	}
	if ph.SYNTimeout < 10*time.Millisecond || ph.SYNTimeout > 10*time.Second {
		v.add("health.passive.syn_timeout", "%s is out of range 10ms..10s", ph.SYNTimeout)
	}
	if ph.Retries < 0 || ph.Retries > 8 {
		v.add("health.passive.retries", "%d is out of range 0..8", ph.Retries)
	}
	if ph.Fall < 1 || ph.Fall > 100 {
		v.add("health.passive.fall", "%d is out of range 1..100", ph.Fall)
	}
	if ph.DownFor < time.Second || ph.DownFor > time.Hour {
		v.add("health.passive.down_for", "%s is out of range 1s..1h", ph.DownFor)
	}
}

func (v *validator) health() {
	const p = "health.source"
	c := v.c
	a := c.Health.Source
	if !a.IsValid() || !v.unicast4(p, a) {
		return
	}
	for i, s := range c.Services {
		if s.VIP == a {
			v.add(p, "%s is the VIP of services[%d]; the kernel must not own a VIP", a, i)
		}
	}
	for i, sa := range c.SNAT.Addresses {
		if sa == a {
			v.add(p, "%s equals snat.addresses[%d]; the kernel must not own an SNAT address", a, i)
		}
	}
backends:
	for i, s := range c.Services {
		for j, b := range s.Backends {
			if b.Address.Addr() == a {
				v.add(p, "%s is the address of services[%d].backends[%d]", a, i, j)
				break backends
			}
		}
	}
	v.notGateway(p, a)
	if v.gatewayLink() < 0 && v.offLink(a) {
		v.add(p, "health probe source %s is not inside any link's subnets and no link has a gateway", a)
	}
}

// maxSocketPath is the longest unix socket path Linux accepts: sun_path is
// 108 bytes including the terminating NUL.
const maxSocketPath = 107

// process checks the keys about tslb's process: control.socket,
// shutdown.timeout and state_file.
func (v *validator) process() {
	c := v.c
	switch s := c.Control.Socket; {
	case s == "":
	case !filepath.IsAbs(s):
		v.add("control.socket", "%q must be an absolute path (or \"\" to disable)", s)
	case len(s) > maxSocketPath:
		v.add("control.socket", "path is %d bytes; a unix socket path is at most %d", len(s), maxSocketPath)
	}
	if t := c.Shutdown.Timeout; t < 0 || t > MaxShutdownTimeout {
		v.add("shutdown.timeout", "%s is out of range 0s..1h", t)
	}
	if s := c.StateFile; s != "" && !filepath.IsAbs(s) {
		v.add("state_file", "%q must be an absolute path (or \"\" for none)", s)
	}
}

// ValidLogFormat reports whether f is a log.format value: "text" or "json".
func ValidLogFormat(f string) bool { return f == "text" || f == "json" }
