package config

import "slices"

// RestartKeysDiffer returns the key paths whose values differ between c (the
// running configuration) and o (a newly loaded one) and that cannot be
// applied by a hot reload: a change to any of them needs a restart. It
// returns nil when a hot reload can apply o.
//
// Those keys are every links key, every snat key, flows.max, metrics.listen,
// control.socket, state_file and every datapath key. Each differing key is listed once, in file
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
			diff(a.Gateway != b.Gateway, p+".gateway")
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
	return keys
}
