package config

import (
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"slices"
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

// familyName is "IPv4" or "IPv6", for messages.
func familyName(is6 bool) string {
	if is6 {
		return "IPv6"
	}
	return "IPv4"
}

// unicast checks that a is a usable unicast address of either family for
// the role what ("a VIP", "an SNAT address", ...) and reports why not
// under path; it returns whether a is usable. IPv6 link-local addresses
// (fe80::/10) are refused unless linkLocal: they are valid on one link
// only and never routed, while tslb's VIPs, SNAT and backend addresses are
// reached across routers (a gateway is the exception: a router is often
// known by its link-local address). Zones (fe80::1%eth0) are refused: the
// link says which interface.
func (v *validator) unicast(path string, a netip.Addr, what string, linkLocal bool) bool {
	switch {
	case !a.IsValid():
		v.add(path, "required: an IPv4 or IPv6 address")
	case a.Zone() != "":
		v.add(path, "%s: zone identifiers are not allowed (the link names the interface)", a)
	case a.Is4In6():
		v.add(path, "%s is an IPv4-mapped IPv6 address; use the IPv4 form %s", a, a.Unmap())
	case a.IsUnspecified() || a.IsLoopback() || a.IsMulticast() || a == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		v.add(path, "%s is not a usable unicast address", a)
	case a.Is6() && a.IsLinkLocalUnicast() && !linkLocal:
		v.add(path, "%s is link-local (fe80::/10), valid on one link only and never routed: %s needs global scope (a global or ULA address)", a, what)
	default:
		return true
	}
	return false
}

// unicast4 is unicast for the keys that are IPv4 only (the cluster
// section).
func (v *validator) unicast4(path string, a netip.Addr) bool {
	switch {
	case !a.IsValid():
		v.add(path, "required: an IPv4 address")
	case a.Is6() && !a.Is4In6():
		v.add(path, "%s is not an IPv4 address (the cluster section is IPv4 only)", a)
	default:
		return v.unicast(path, a, "", false)
	}
	return false
}

// familyField checks that a, held by a Go field of one family (is6), is
// of that family; other names the twin field. Parse always files an
// address under its own family (IPv4-mapped ones as IPv6).
func (v *validator) familyField(path string, a netip.Addr, is6 bool, other string) bool {
	if a.Is4() == is6 {
		v.add(path, "%s is not an %s address (an %s one goes in %s)", a, familyName(is6), familyName(!is6), other)
		return false
	}
	return true
}

// subnetProblem says why s is not acceptable as a link subnet, or "".
// IPv6 subnets must be unicast prefixes of global scope: not IPv4-mapped
// (::ffff:0:0/96, "use the IPv4 form"), not multicast (ff00::/8) and not
// link-local (fe80::/10 is on every link already, and tslb's addresses
// need global scope).
func subnetProblem(s netip.Prefix) string {
	a := s.Addr()
	switch {
	case !s.IsValid():
		return "required: an IPv4 or IPv6 prefix"
	case a.Is4In6() && s.Bits() >= 96:
		return fmt.Sprintf("%s is an IPv4-mapped prefix; use the IPv4 form %s", s, netip.PrefixFrom(a.Unmap(), s.Bits()-96))
	case s != s.Masked():
		return fmt.Sprintf("%s has host bits set (did you mean %s?)", s, s.Masked())
	case a.Is6() && a.IsMulticast() && s.Bits() >= 8:
		return fmt.Sprintf("%s is a multicast prefix (ff00::/8); a subnet is a unicast prefix", s)
	case a.Is6() && a.IsLinkLocalUnicast() && s.Bits() >= 10:
		return fmt.Sprintf("%s is link-local (fe80::/10): every link has it already, and tslb's addresses need global scope; list the link's global or ULA prefix", s)
	}
	return ""
}

// subnetOK reports whether on-link checks may use s. A prefix with host
// bits set is reported but still says what the user meant.
func subnetOK(s netip.Prefix) bool {
	p := subnetProblem(s)
	return p == "" || s.IsValid() && s != s.Masked() && subnetProblem(s.Masked()) == ""
}

// subnetsUsable reports whether the link subnets are complete enough for
// on-link checks: at least one, and all of them acceptable. Otherwise
// every address would be reported again for an error already reported on
// the links.
func (v *validator) subnetsUsable() bool {
	n := 0
	for _, l := range v.c.Links {
		for _, s := range l.Subnets {
			if !subnetOK(s) {
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

// offLinkNote explains an off-link a whose family no link has a subnet
// of, or returns "".
func (v *validator) offLinkNote(a netip.Addr) string {
	for _, l := range v.c.Links {
		for _, s := range l.Subnets {
			if s.Addr().Is6() == a.Is6() {
				return ""
			}
		}
	}
	return fmt.Sprintf(" (no link has an %s subnet)", familyName(a.Is6()))
}

// onLink returns the path of the first link subnet containing a, or "".
// Prefixes only contain addresses of their own family.
func (v *validator) onLink(a netip.Addr) string {
	for i, l := range v.c.Links {
		for j, s := range l.Subnets {
			if subnetOK(s) && s.Contains(a) {
				return indexPath(indexPath("links", i)+".subnets", j)
			}
		}
	}
	return ""
}

// gatewayLink returns the index of the first link with a gateway of the
// family (IPv6 if is6), or -1.
func (v *validator) gatewayLink(is6 bool) int {
	for i, l := range v.c.Links {
		if is6 && l.Gateway6.IsValid() || !is6 && l.Gateway.IsValid() {
			return i
		}
	}
	return -1
}

// notGateway reports a that equals some link's gateway of either family.
func (v *validator) notGateway(path string, a netip.Addr) {
	for i, l := range v.c.Links {
		if l.Gateway.IsValid() && l.Gateway == a || l.Gateway6.IsValid() && l.Gateway6 == a {
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
	gw := map[bool]int{false: -1, true: -1} // link with a gateway, per family (is6)
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
			if msg := subnetProblem(s); msg != "" {
				v.add(indexPath(p+".subnets", j), "%s", msg)
			}
		}
		if len(l.Subnets) == 0 && !l.Gateway.IsValid() && !l.Gateway6.IsValid() {
			v.add(p+".subnets", "at least one subnet is required unless gateway is set")
		}
		for _, g := range []struct {
			a     netip.Addr
			is6   bool
			other string
		}{{l.Gateway, false, "Link.Gateway6"}, {l.Gateway6, true, "Link.Gateway"}} {
			if !g.a.IsValid() {
				continue
			}
			fam := familyName(g.is6)
			gp := v.c.meta.famPath(p+".gateway", g.is6)
			if v.familyField(gp, g.a, g.is6, g.other) && v.unicast(gp, g.a, "a gateway", g.is6) && !g.a.IsLinkLocalUnicast() {
				// A link-local IPv6 gateway is on-link on every link
				// (RFC 4291 section 2.5.6).
				inside := false
				for _, s := range l.Subnets {
					inside = inside || (s.IsValid() && s.Contains(g.a))
				}
				if !inside {
					v.add(gp, "gateway %s is not inside any of this link's %s subnets", g.a, fam)
				}
			}
			if j := gw[g.is6]; j >= 0 {
				v.add(gp, "only one link may have an %s gateway; links[%d] already has one", fam, j)
			} else {
				gw[g.is6] = i
			}
		}
	}
	// Overlapping subnets, on different links or repeated on one. Prefixes
	// of different families never overlap.
	type sub struct {
		p    netip.Prefix
		path string
	}
	var seen []sub
	for i, l := range links {
		for j, s := range l.Subnets {
			if !subnetOK(s) {
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
		vipOK := v.unicast(vp, s.VIP, "a VIP", false)
		if vipOK {
			is6 := s.VIP.Is6()
			// A cluster's VIPs are routed to the instances (announced
			// with BGP), so they need not be on a link.
			if c.Cluster != nil && is6 {
				v.add(vp, "IPv6 VIP %s with a cluster section: the cluster is IPv4 only (its BGP speaker announces IPv4 routes)", s.VIP)
			} else if v.offLink(s.VIP) && c.Cluster == nil {
				v.add(vp, "VIP %s is not inside any link's subnets%s", s.VIP, v.offLinkNote(s.VIP))
			}
			v.notGateway(vp, s.VIP)
			for k, a := range c.SNAT.Addresses {
				if a == s.VIP {
					v.add(vp, "VIP %s equals snat.addresses[%d]", s.VIP, k)
				}
			}
			// One service is one family: its flows to the backends leave
			// from an SNAT address of the VIP's family. (With a cluster
			// an IPv6 VIP is refused above already.)
			if len(c.SNAT.Addresses) > 0 && (c.Cluster == nil || !is6) && !slices.ContainsFunc(c.SNAT.Addresses, func(a netip.Addr) bool { return a.IsValid() && a.Is6() == is6 }) {
				v.add(vp, "no %s address in snat.addresses: a service is one family, and its flows to the backends leave from an SNAT address of the VIP's family", familyName(is6))
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
		v.backends(p, s, vipOK)
		if s.HealthCheck != nil {
			v.healthCheck(p+".health_check", s.HealthCheck)
		}
	}
}

// backends checks a service's backends; vipOK says s.VIP passed its
// checks, so its family is the service's.
func (v *validator) backends(p string, s Service, vipOK bool) {
	c := v.c
	bp := p + ".backends"
	if len(s.Backends) == 0 {
		v.add(bp, "at least one backend is required")
		return
	}
	seen := map[netip.AddrPort]int{}
	live := false
	for j, b := range s.Backends {
		p := indexPath(bp, j)
		ap := p + ".address"
		a := b.Address.Addr()
		if v.unicast(ap, a, "a backend address", false) {
			if b.Address.Port() == 0 {
				v.add(ap, "port must be 1..65535")
			}
			if k, dup := seen[b.Address]; dup {
				v.add(ap, "duplicate backend %s (also %s[%d])", b.Address, bp, k)
			} else {
				seen[b.Address] = j
			}
			if vipOK && a.Is6() != s.VIP.Is6() {
				v.add(ap, "backend %s is %s but VIP %s is %s: a service is one family (put the %s backends in a service with an %s VIP)",
					a, familyName(a.Is6()), s.VIP, familyName(s.VIP.Is6()), familyName(a.Is6()), familyName(a.Is6()))
			} else if v.gatewayLink(a.Is6()) < 0 && v.offLink(a) {
				v.add(ap, "backend %s is not inside any link's subnets and no link has an %s gateway", a, familyName(a.Is6()))
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
		if !v.unicast(p, a, "an SNAT address", false) {
			continue
		}
		if j, dup := seen[a]; dup {
			v.add(p, "duplicate SNAT address %s (also snat.addresses[%d])", a, j)
			continue
		}
		seen[a] = i
		if v.offLink(a) {
			v.add(p, "SNAT address %s is not inside any link's subnets%s", a, v.offLinkNote(a))
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

// passive checks health.passive.
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

// health checks health.source, one address per family: an address the
// kernel owns, so none of the addresses tslb itself answers for or talks
// to, and on-link unless a link has a gateway of its family.
func (v *validator) health() {
	c := v.c
	for _, x := range []struct {
		a     netip.Addr
		is6   bool
		other string
	}{{c.Health.Source, false, "Health.Source6"}, {c.Health.Source6, true, "Health.Source"}} {
		a := x.a
		p := c.meta.famPath("health.source", x.is6)
		if !a.IsValid() || !v.familyField(p, a, x.is6, x.other) || !v.unicast(p, a, "the health probe source", false) {
			continue
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
		if v.gatewayLink(x.is6) < 0 && v.offLink(a) {
			v.add(p, "health probe source %s is not inside any link's subnets and no link has an %s gateway", a, familyName(x.is6))
		}
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
