package config

import "slices"

// RestartKeysDiffer returns the key paths whose values differ between c (the
// running configuration) and o (a newly loaded one) and that cannot be
// applied by a hot reload: a change to any of them needs a restart. It
// returns nil when a hot reload can apply o.
//
// Those keys are every links key (a link's gateway of either family: one
// key, gateway), every snat key, flows.max, metrics.listen,
// control.socket, state_file, every datapath key, and of the cluster
// section: adding or removing it ("cluster"), cluster.name, cluster.id,
// cluster.link, cluster.heartbeat_interval, cluster.dead_after, this
// instance's own member entry (its mac, address and snat_addresses, named
// by their index in o), cluster.bgp.asn, router_id, local_address and
// listen_port. A reload applies the other members (added, removed or
// changed: the membership state machine takes the new list, keeping the
// liveness of members whose id and MAC stay) and cluster.bgp.peers (the
// speaker adds, removes and updates sessions; unchanged ones stay up).
// health.source (either family: Health.Source, Health.Source6) is not
// listed: whether the probes' source can change on reload is the
// balancer's decision. Each differing key is listed once, in file
// order, by the most precise path that tells it: "links[1].subnets",
// "snat.port_range", "flows.max". A change in the number of links is reported
// as "links". Order matters in lists (links, subnets, SNAT addresses). Both
// c and o must be non-nil; neither is modified.
func (c *Config) RestartKeysDiffer(o *Config) []string {
	var keys []string
	diff := func(differ bool, key string) {
		if differ {
			keys = append(keys, key)
		}
	}
	if len(c.Links) != len(o.Links) {
		keys = append(keys, "links")
	} else {
		for i := range c.Links {
			a, b := c.Links[i], o.Links[i]
			p := indexPath("links", i)
			diff(a.Name != b.Name, p+".name")
			diff(a.Interface != b.Interface, p+".interface")
			diff(!slices.Equal(a.Subnets, b.Subnets), p+".subnets")
			diff(a.Gateway != b.Gateway || a.Gateway6 != b.Gateway6, p+".gateway")
		}
	}
	diff(!slices.Equal(c.SNAT.Addresses, o.SNAT.Addresses), "snat.addresses")
	diff(c.SNAT.PortMin != o.SNAT.PortMin || c.SNAT.PortMax != o.SNAT.PortMax, "snat.port_range")
	diff(c.Flows.Max != o.Flows.Max, "flows.max")
	diff(c.Metrics.Listen != o.Metrics.Listen, "metrics.listen")
	diff(c.Control.Socket != o.Control.Socket, "control.socket")
	diff(c.StateFile != o.StateFile, "state_file")
	diff(c.Datapath.Workers != o.Datapath.Workers, "datapath.workers")
	diff(c.Datapath.IO != o.Datapath.IO, "datapath.io")
	diff(c.Datapath.RingFrames != o.Datapath.RingFrames, "datapath.ring_frames")
	diff(c.Datapath.KernelDropOff != o.Datapath.KernelDropOff, "datapath.kernel_drop")
	keys = append(keys, clusterRestartKeys(c.Cluster, o.Cluster)...)
	return keys
}

// clusterRestartKeys is RestartKeysDiffer for the cluster section.
func clusterRestartKeys(a, b *Cluster) []string {
	switch {
	case a == nil && b == nil:
		return nil
	case a == nil || b == nil:
		return []string{"cluster"}
	}
	var keys []string
	diff := func(differ bool, key string) {
		if differ {
			keys = append(keys, key)
		}
	}
	diff(a.Name != b.Name, "cluster.name")
	diff(a.ID != b.ID, "cluster.id")
	diff(a.Link != b.Link, "cluster.link")
	diff(a.HeartbeatInterval != b.HeartbeatInterval, "cluster.heartbeat_interval")
	diff(a.DeadAfter != b.DeadAfter, "cluster.dead_after")
	if a.ID == b.ID {
		sa, sb := a.Self(), b.Self()
		i := slices.IndexFunc(b.Members, func(m ClusterMember) bool { return m.ID == b.ID })
		if sa != nil && sb != nil {
			p := indexPath("cluster.members", i)
			diff(sa.MAC.String() != sb.MAC.String(), p+".mac")
			diff(sa.Address != sb.Address, p+".address")
			diff(!slices.Equal(sa.SNATAddresses, sb.SNATAddresses), p+".snat_addresses")
		}
	}
	diff(a.BGP.ASN != b.BGP.ASN, "cluster.bgp.asn")
	diff(a.BGP.RouterID != b.BGP.RouterID, "cluster.bgp.router_id")
	diff(a.BGP.LocalAddress != b.BGP.LocalAddress, "cluster.bgp.local_address")
	diff(a.BGP.ListenPort != b.BGP.ListenPort, "cluster.bgp.listen_port")
	return keys
}
