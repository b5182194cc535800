package config

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"time"

	"gopkg.in/yaml.v3"
)

// Defaults and limits of the cluster section.
const (
	DefaultHeartbeatInterval = 500 * time.Millisecond // cluster.heartbeat_interval
	DefaultDeadAfter         = 2 * time.Second        // cluster.dead_after
	DefaultBGPHoldTime       = 9 * time.Second        // cluster.bgp.peers[].hold_time
	DefaultBGPPort           = 179                    // cluster.bgp.listen_port
	DefaultBFDInterval       = 300 * time.Millisecond // cluster.bgp.peers[].bfd.min_tx, min_rx
	DefaultBFDMultiplier     = 3                      // cluster.bgp.peers[].bfd.multiplier
	MaxClusterMembers        = 256
)

// Cluster makes this tslb one instance of several behind a router that
// spreads clients over them with ECMP (README "Cluster"): every instance
// announces the VIPs with BGP, owns its own SNAT addresses, and forwards
// a client frame it does not own to the owner (Maglev over the live
// members) on the front segment, where the instances exchange heartbeats.
type Cluster struct {
	// Name names the cluster ([a-z0-9_-]+, 1..64 bytes); heartbeats carry
	// a hash of it, so two clusters can share a segment.
	Name string
	// ID is this instance's member ID: one of Members.
	ID uint16
	// Link is the name of the link on the front segment (links[].name),
	// where heartbeats and forwarded frames go; "" means the link whose
	// subnets hold this instance's member address.
	Link string
	// HeartbeatInterval is how often the instance sends a heartbeat
	// (50ms..10s).
	HeartbeatInterval time.Duration
	// DeadAfter is how long a member may stay silent before it is dead: at
	// least twice HeartbeatInterval, at most 60s.
	DeadAfter time.Duration
	// Members are every instance of the cluster, this one included, the
	// same list in every instance's file (1..MaxClusterMembers).
	Members []ClusterMember
	// BGP announces the VIPs to the routers.
	BGP BGP
}

// ClusterMember is one instance of a cluster.
type ClusterMember struct {
	// ID is unique and 1..65535.
	ID uint16
	// MAC is the instance's MAC address on the front segment (unicast).
	MAC net.HardwareAddr
	// Address is the instance's kernel address on the front segment: its
	// BGP next hop and session address. The kernel owns it (like
	// health.source), tslb does not.
	Address netip.Addr
	// SNATAddresses are the SNAT addresses the instance owns: for this
	// instance the same set as snat.addresses, and disjoint from every
	// other member's.
	SNATAddresses []netip.Addr
}

// BGP configures the speaker that announces the VIPs.
type BGP struct {
	// ASN is the local AS number (1..4294967295, not 23456).
	ASN uint32
	// RouterID is the BGP identifier; Parse defaults it to this
	// instance's member address.
	RouterID netip.Addr
	// LocalAddress is the sessions' source and listen address; Parse
	// defaults it to this instance's member address, and it must equal
	// it.
	LocalAddress netip.Addr
	// ListenPort is the TCP port for passive sessions (1..65535; Parse
	// defaults it to 179).
	ListenPort uint16
	// Peers are the routers; at least one.
	Peers []BGPPeer
}

// BGPPeer is one router.
type BGPPeer struct {
	// Address is the router's address on the front segment (single hop:
	// inside the front link's subnets).
	Address netip.Addr
	// ASN is the router's AS number.
	ASN uint32
	// HoldTime is the proposed hold time, whole seconds in 3s..65535s
	// (Parse defaults it to DefaultBGPHoldTime).
	HoldTime time.Duration
	// Passive makes tslb wait for the router to connect.
	Passive bool
	// BFD enables BFD on the session; nil means off.
	BFD *BFD
}

// BFD are a session's BFD timers.
type BFD struct {
	// MinTx and MinRx are the desired transmit and required receive
	// intervals (10ms..10s).
	MinTx, MinRx time.Duration
	// Multiplier is the detection multiplier (1..255).
	Multiplier int
}

// Member returns the member entry with id, or nil.
func (c *Cluster) Member(id uint16) *ClusterMember {
	for i := range c.Members {
		if c.Members[i].ID == id {
			return &c.Members[i]
		}
	}
	return nil
}

// FrontLink returns the name of the cluster's front link: cluster.link,
// or the link whose subnets hold this instance's member address; "" if c
// has no cluster or no such link.
func (c *Config) FrontLink() string {
	cl := c.Cluster
	if cl == nil {
		return ""
	}
	if cl.Link != "" {
		return cl.Link
	}
	if self := cl.Self(); self != nil {
		for _, l := range c.Links {
			for _, s := range l.Subnets {
				if s.Contains(self.Address) {
					return l.Name
				}
			}
		}
	}
	return ""
}

// Self returns this instance's member entry, or nil.
func (c *Cluster) Self() *ClusterMember { return c.Member(c.ID) }

// applyDefaults fills the cluster's defaults (ApplyDefaults and Parse).
func (c *Cluster) applyDefaults() {
	setDefault(&c.HeartbeatInterval, DefaultHeartbeatInterval)
	setDefault(&c.DeadAfter, DefaultDeadAfter)
	setDefault(&c.BGP.ListenPort, DefaultBGPPort)
	if self := c.Self(); self != nil {
		setDefault(&c.BGP.RouterID, self.Address)
		setDefault(&c.BGP.LocalAddress, self.Address)
	}
	for i := range c.BGP.Peers {
		p := &c.BGP.Peers[i]
		setDefault(&p.HoldTime, DefaultBGPHoldTime)
		if b := p.BFD; b != nil {
			setDefault(&b.MinTx, DefaultBFDInterval)
			setDefault(&b.MinRx, DefaultBFDInterval)
			setDefault(&b.Multiplier, DefaultBFDMultiplier)
		}
	}
}

// cluster decodes the cluster section.
func (d *decoder) cluster(n *yaml.Node, path string) *Cluster {
	c := &Cluster{HeartbeatInterval: DefaultHeartbeatInterval, DeadAfter: DefaultDeadAfter, BGP: BGP{ListenPort: DefaultBGPPort}}
	known := []string{"name", "id", "link", "heartbeat_interval", "dead_after", "members", "bgp"}
	d.mapping(n, path, known, func(key string, v *yaml.Node, p string) {
		switch key {
		case "name":
			c.Name, _ = d.str(v, p)
		case "id":
			x, _ := d.integer(v, p, 1, 65535)
			c.ID = uint16(x)
		case "link":
			c.Link, _ = d.str(v, p)
		case "heartbeat_interval":
			c.HeartbeatInterval, _ = d.duration(v, p)
		case "dead_after":
			c.DeadAfter, _ = d.duration(v, p)
		case "members":
			c.Members = list(d, v, p, func() ClusterMember { return ClusterMember{} }, d.clusterMember)
		case "bgp":
			d.bgp(v, p, &c.BGP)
		}
	})
	// The addresses default to this instance's member address, unless
	// the key was given and wrong (a default would hide its error).
	if self := c.Self(); self != nil {
		if !d.m.bad[joinPath(path, "bgp.router_id")] {
			setDefault(&c.BGP.RouterID, self.Address)
		}
		if !d.m.bad[joinPath(path, "bgp.local_address")] {
			setDefault(&c.BGP.LocalAddress, self.Address)
		}
	}
	return c
}

func (d *decoder) clusterMember(n *yaml.Node, path string, m *ClusterMember) {
	d.mapping(n, path, []string{"id", "mac", "address", "snat_addresses"}, func(key string, v *yaml.Node, p string) {
		switch key {
		case "id":
			x, _ := d.integer(v, p, 1, 65535)
			m.ID = uint16(x)
		case "mac":
			s, ok := d.str(v, p)
			if !ok {
				return
			}
			mac, err := net.ParseMAC(s)
			if err != nil || len(mac) != 6 {
				d.errAt(deref(v).Line, p, "%q is not a MAC address (such as 02:00:5e:00:00:01)", s)
				return
			}
			m.MAC = mac
		case "address":
			m.Address, _ = d.addr(v, p)
		case "snat_addresses":
			m.SNATAddresses = list(d, v, p, func() netip.Addr { return netip.Addr{} }, func(it *yaml.Node, p string, out *netip.Addr) {
				*out, _ = d.addr(it, p)
			})
		}
	})
}

func (d *decoder) bgp(n *yaml.Node, path string, b *BGP) {
	d.mapping(n, path, []string{"asn", "router_id", "local_address", "listen_port", "peers"}, func(key string, v *yaml.Node, p string) {
		switch key {
		case "asn":
			x, _ := d.integer(v, p, 0, 4294967295)
			b.ASN = uint32(x)
		case "router_id":
			b.RouterID, _ = d.addr(v, p)
		case "local_address":
			b.LocalAddress, _ = d.addr(v, p)
		case "listen_port":
			x, _ := d.integer(v, p, 1, 65535)
			b.ListenPort = uint16(x)
		case "peers":
			b.Peers = list(d, v, p, func() BGPPeer { return BGPPeer{HoldTime: DefaultBGPHoldTime} }, d.bgpPeer)
		}
	})
}

func (d *decoder) bgpPeer(n *yaml.Node, path string, bp *BGPPeer) {
	d.mapping(n, path, []string{"address", "asn", "hold_time", "passive", "bfd"}, func(key string, v *yaml.Node, p string) {
		switch key {
		case "address":
			bp.Address, _ = d.addr(v, p)
		case "asn":
			x, _ := d.integer(v, p, 0, 4294967295)
			bp.ASN = uint32(x)
		case "hold_time":
			bp.HoldTime, _ = d.duration(v, p)
		case "passive":
			bp.Passive, _ = d.boolean(v, p)
		case "bfd":
			b := &BFD{MinTx: DefaultBFDInterval, MinRx: DefaultBFDInterval, Multiplier: DefaultBFDMultiplier}
			d.mapping(v, p, []string{"min_tx", "min_rx", "multiplier"}, func(key string, v *yaml.Node, p string) {
				switch key {
				case "min_tx":
					b.MinTx, _ = d.duration(v, p)
				case "min_rx":
					b.MinRx, _ = d.duration(v, p)
				case "multiplier":
					x, _ := d.integer(v, p, 1, 255)
					b.Multiplier = int(x)
				}
			})
			bp.BFD = b
		}
	})
}

// validASN reports whether a is usable as an AS number: not 0 (reserved,
// RFC 7607) and not 23456 (AS_TRANS, RFC 6793).
func validASN(a uint32) bool { return a != 0 && a != 23456 }

// cluster checks the cluster section and its relations with the rest of
// the file.
func (v *validator) cluster() {
	cl := v.c.Cluster
	if cl == nil {
		return
	}
	const p = "cluster"
	if cl.Name == "" || len(cl.Name) > 64 || !validServiceName(cl.Name) {
		v.add(p+".name", "%q: required, 1..64 characters of [a-z0-9_-]", cl.Name)
	}
	if hb := cl.HeartbeatInterval; hb < 50*time.Millisecond || hb > 10*time.Second {
		v.add(p+".heartbeat_interval", "%s is out of range 50ms..10s", hb)
	}
	if da := cl.DeadAfter; da < 2*cl.HeartbeatInterval || da > time.Minute {
		v.add(p+".dead_after", "%s must be at least twice heartbeat_interval (%s) and at most 60s", da, cl.HeartbeatInterval)
	}
	if len(cl.Members) == 0 || len(cl.Members) > MaxClusterMembers {
		v.add(p+".members", "%d members; want 1..%d", len(cl.Members), MaxClusterMembers)
	}
	ids := map[uint16]int{}
	macs := map[string]int{}
	addrs := map[netip.Addr]string{}
	snats := map[netip.Addr]string{}
	front := map[string]int{} // link path -> members on it
	for i, m := range cl.Members {
		mp := indexPath(p+".members", i)
		if m.ID == 0 {
			v.add(mp+".id", "required: 1..65535")
		} else if j, dup := ids[m.ID]; dup {
			v.add(mp+".id", "duplicate member id %d (also cluster.members[%d])", m.ID, j)
		} else {
			ids[m.ID] = i
		}
		switch {
		case len(m.MAC) == 0:
			v.add(mp+".mac", "required: the instance's MAC on the front segment")
		case len(m.MAC) != 6 || m.MAC[0]&1 != 0 || slices.Equal(m.MAC, make(net.HardwareAddr, 6)):
			v.add(mp+".mac", "%s is not a unicast Ethernet address", m.MAC)
		default:
			if j, dup := macs[m.MAC.String()]; dup {
				v.add(mp+".mac", "duplicate MAC %s (also cluster.members[%d])", m.MAC, j)
			} else {
				macs[m.MAC.String()] = i
			}
		}
		ap := mp + ".address"
		if v.unicast4(ap, m.Address) {
			if o, dup := addrs[m.Address]; dup {
				v.add(ap, "duplicate address %s (also %s)", m.Address, o)
			} else {
				addrs[m.Address] = ap
			}
			if l := v.onLink(m.Address); l == "" {
				if v.subnetsUsable() {
					v.add(ap, "member address %s is not inside any link's subnets (the front segment)", m.Address)
				}
			} else {
				front[parentPath(parentPath(l))]++
			}
			v.notTSLBAddress(ap, m.Address)
		}
		if len(m.SNATAddresses) == 0 {
			v.add(mp+".snat_addresses", "at least one SNAT address is required")
		}
		for j, a := range m.SNATAddresses {
			sp := indexPath(mp+".snat_addresses", j)
			if !v.unicast4(sp, a) {
				continue
			}
			if o, dup := snats[a]; dup {
				v.add(sp, "SNAT address %s is also %s: members' SNAT addresses must be disjoint", a, o)
			} else {
				snats[a] = sp
			}
		}
	}
	// Member and SNAT addresses never coincide.
	for a, ap := range addrs {
		if sp, ok := snats[a]; ok {
			v.add(sp, "%s is the address of %s", a, ap)
		}
	}
	if len(front) > 1 {
		v.add(p+".members", "member addresses lie on more than one link; they share one front segment")
	}
	self := cl.Self()
	if cl.ID == 0 {
		v.add(p+".id", "required: this instance's member id")
	} else if self == nil {
		v.add(p+".id", "%d is not the id of any cluster.members entry", cl.ID)
	}
	if self != nil {
		// This instance's SNAT addresses are exactly its member entry's.
		want := slices.Clone(self.SNATAddresses)
		have := slices.Clone(v.c.SNAT.Addresses)
		cmp := func(a, b netip.Addr) int { return a.Compare(b) }
		slices.SortFunc(want, cmp)
		slices.SortFunc(have, cmp)
		if !slices.Equal(want, have) {
			v.add("snat.addresses", "%v differ from cluster.members[%d].snat_addresses %v (this instance, cluster.id %d)",
				v.c.SNAT.Addresses, ids[cl.ID], self.SNATAddresses, cl.ID)
		}
	}
	// The front link.
	if cl.Link != "" {
		found := false
		for _, l := range v.c.Links {
			found = found || l.Name == cl.Link
		}
		if !found {
			v.add(p+".link", "no link is named %q", cl.Link)
		} else if self != nil && self.Address.IsValid() {
			if l := v.onLink(self.Address); l != "" && v.c.Links[linkIndex(l)].Name != cl.Link {
				v.add(p+".link", "this instance's address %s is not on link %q", self.Address, cl.Link)
			}
		}
	}
	// VIPs are announced: none may be a member's address or another
	// member's SNAT address.
	for i, s := range v.c.Services {
		if ap, ok := addrs[s.VIP]; ok {
			v.add(indexPath("services", i)+".vip", "VIP %s is the address of %s", s.VIP, ap)
		}
		if sp, ok := snats[s.VIP]; ok {
			v.add(indexPath("services", i)+".vip", "VIP %s is %s", s.VIP, sp)
		}
	}
	v.bgp(self)
}

// linkIndex returns i of a path "links[i]...".
func linkIndex(path string) int {
	var i int
	fmt.Sscanf(path, "links[%d]", &i)
	return i
}

// notTSLBAddress reports a kernel address (member address) that equals a
// VIP, SNAT address, backend or gateway of the file.
func (v *validator) notTSLBAddress(path string, a netip.Addr) {
	for i, sa := range v.c.SNAT.Addresses {
		if sa == a {
			v.add(path, "%s equals snat.addresses[%d]; the kernel owns a member address, tslb owns SNAT addresses", a, i)
		}
	}
	for i, s := range v.c.Services {
		for j, b := range s.Backends {
			if b.Address.Addr() == a {
				v.add(path, "%s is the address of services[%d].backends[%d]", a, i, j)
			}
		}
	}
	v.notGateway(path, a)
}

func (v *validator) bgp(self *ClusterMember) {
	b := v.c.Cluster.BGP
	const p = "cluster.bgp"
	if !validASN(b.ASN) {
		v.add(p+".asn", "AS number %d is not usable (1..4294967295, not 23456)", b.ASN)
	}
	v.unicast4(p+".router_id", b.RouterID)
	if v.unicast4(p+".local_address", b.LocalAddress) && self != nil && self.Address.IsValid() && b.LocalAddress != self.Address {
		v.add(p+".local_address", "%s is not this instance's member address %s", b.LocalAddress, self.Address)
	}
	if b.ListenPort == 0 {
		v.add(p+".listen_port", "required: 1..65535")
	}
	if len(b.Peers) == 0 {
		v.add(p+".peers", "at least one BGP peer is required")
	}
	seen := map[netip.Addr]int{}
	for i, pe := range b.Peers {
		pp := indexPath(p+".peers", i)
		if v.unicast4(pp+".address", pe.Address) {
			if j, dup := seen[pe.Address]; dup {
				v.add(pp+".address", "duplicate peer %s (also cluster.bgp.peers[%d])", pe.Address, j)
			}
			seen[pe.Address] = i
			for j, m := range v.c.Cluster.Members {
				if m.Address == pe.Address {
					v.add(pp+".address", "%s is the address of cluster.members[%d]", pe.Address, j)
				}
			}
			if v.offLink(pe.Address) {
				v.add(pp+".address", "peer %s is not inside any link's subnets (sessions are single hop)", pe.Address)
			}
		}
		if !validASN(pe.ASN) {
			v.add(pp+".asn", "AS number %d is not usable (1..4294967295, not 23456)", pe.ASN)
		}
		if h := pe.HoldTime; h < 3*time.Second || h > 65535*time.Second || h%time.Second != 0 {
			v.add(pp+".hold_time", "%s must be whole seconds in 3s..65535s", h)
		}
		if bf := pe.BFD; bf != nil {
			for _, x := range []struct {
				key string
				d   time.Duration
			}{{"min_tx", bf.MinTx}, {"min_rx", bf.MinRx}} {
				if x.d < 10*time.Millisecond || x.d > 10*time.Second {
					v.add(pp+".bfd."+x.key, "%s is out of range 10ms..10s", x.d)
				}
			}
			if bf.Multiplier < 1 || bf.Multiplier > 255 {
				v.add(pp+".bfd.multiplier", "%d is out of range 1..255", bf.Multiplier)
			}
		}
	}
}

// CheckCluster checks the rules that span the files of one cluster, one
// Config per instance (each already valid on its own): every file has a
// cluster section with the same name, heartbeat timers and member list
// (ids, MACs, addresses and SNAT addresses, in any order); the files are
// for different instances (cluster.id); and no two files' snat.addresses
// overlap. Errors name the file and line of the key that differs from the
// first file.
func CheckCluster(cfgs []*Config) Errors {
	var errs Errors
	add := func(c *Config, key, format string, args ...any) {
		errs = append(errs, Error{File: c.Source, Line: c.meta.line(key), Key: key, Msg: fmt.Sprintf(format, args...)})
	}
	if len(cfgs) == 0 {
		return nil
	}
	first := cfgs[0]
	ids := map[uint16]*Config{}
	snat := map[netip.Addr]*Config{}
	for _, c := range cfgs {
		for i, a := range c.SNAT.Addresses {
			if o, dup := snat[a]; dup && o != c {
				add(c, indexPath("snat.addresses", i), "%s is also an SNAT address of %s", a, o.Source)
			} else {
				snat[a] = c
			}
		}
		cl := c.Cluster
		if cl == nil {
			add(c, "", "no cluster section (every file of a cluster needs one)")
			continue
		}
		if o, dup := ids[cl.ID]; dup {
			add(c, "cluster.id", "%d is also the id of %s", cl.ID, o.Source)
		} else {
			ids[cl.ID] = c
		}
		if c == first || first.Cluster == nil {
			continue
		}
		f := first.Cluster
		if cl.Name != f.Name {
			add(c, "cluster.name", "%q differs from %q in %s", cl.Name, f.Name, first.Source)
		}
		if cl.HeartbeatInterval != f.HeartbeatInterval {
			add(c, "cluster.heartbeat_interval", "%s differs from %s in %s", cl.HeartbeatInterval, f.HeartbeatInterval, first.Source)
		}
		if cl.DeadAfter != f.DeadAfter {
			add(c, "cluster.dead_after", "%s differs from %s in %s", cl.DeadAfter, f.DeadAfter, first.Source)
		}
		for i, m := range cl.Members {
			o := f.Member(m.ID)
			mp := indexPath("cluster.members", i)
			if o == nil {
				add(c, mp+".id", "member %d is not in the member list of %s", m.ID, first.Source)
				continue
			}
			if !sameMember(m, *o) {
				add(c, mp, "member %d differs from its entry in %s", m.ID, first.Source)
			}
		}
		for _, o := range f.Members {
			if cl.Member(o.ID) == nil {
				add(c, "cluster.members", "member %d of %s is missing", o.ID, first.Source)
			}
		}
	}
	return errs
}

// sameMember compares two member entries, SNAT addresses as a set.
func sameMember(a, b ClusterMember) bool {
	if a.ID != b.ID || a.MAC.String() != b.MAC.String() || a.Address != b.Address {
		return false
	}
	x, y := slices.Clone(a.SNATAddresses), slices.Clone(b.SNATAddresses)
	cmp := func(a, b netip.Addr) int { return a.Compare(b) }
	slices.SortFunc(x, cmp)
	slices.SortFunc(y, cmp)
	return slices.Equal(x, y)
}
