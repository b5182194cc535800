package config_test

import (
	"net"
	"net/netip"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"tslb/config"
)

var clusterFiles = []string{"testdata/cluster/a.yaml", "testdata/cluster/b.yaml", "testdata/cluster/c.yaml"}

func loadCluster(t *testing.T) []*config.Config {
	t.Helper()
	var out []*config.Config
	for _, f := range clusterFiles {
		c, err := config.Load(f)
		if err != nil {
			t.Fatalf("Load(%s): %v", f, err)
		}
		out = append(out, c)
	}
	return out
}

func TestClusterFilesParse(t *testing.T) {
	cs := loadCluster(t)
	for i, c := range cs {
		cl := c.Cluster
		if cl == nil || cl.Name != "edge" || int(cl.ID) != i+1 || cl.Link != "front" || len(cl.Members) != 3 {
			t.Fatalf("%s: cluster %+v", c.Source, cl)
		}
		self := cl.Self()
		if self == nil || self.Address != netip.AddrFrom4([4]byte{198, 18, 4, byte(11 + i)}) {
			t.Fatalf("%s: self %+v", c.Source, self)
		}
		// router_id and local_address default to the member address.
		if cl.BGP.RouterID != self.Address || cl.BGP.LocalAddress != self.Address || cl.BGP.ListenPort != 179 {
			t.Errorf("%s: bgp defaults %+v", c.Source, cl.BGP)
		}
		if cl.HeartbeatInterval != 500*time.Millisecond || cl.DeadAfter != 2*time.Second {
			t.Errorf("%s: timers %v %v", c.Source, cl.HeartbeatInterval, cl.DeadAfter)
		}
		want := []config.BGPPeer{{Address: netip.MustParseAddr("198.18.4.1"), ASN: 65000, HoldTime: 9 * time.Second}}
		if !reflect.DeepEqual(cl.BGP.Peers, want) || cl.BGP.ASN != 65010 {
			t.Errorf("%s: peers %+v", c.Source, cl.BGP.Peers)
		}
		if mac, _ := net.ParseMAC("02:00:5e:12:04:0b"); cl.Members[0].MAC.String() != mac.String() {
			t.Errorf("%s: mac %v", c.Source, cl.Members[0].MAC)
		}
	}
	// A file without the section has no cluster.
	if c := mustParse(t, minimal); c.Cluster != nil || c.FrontLink() != "" {
		t.Errorf("minimal config has a cluster: %+v", c.Cluster)
	}
	// The front link, given or derived from the member address.
	if l := cs[0].FrontLink(); l != "front" {
		t.Errorf("FrontLink = %q", l)
	}
	if l := mustParse(t, clusterSrc(t, "  link: front\n", "")).FrontLink(); l != "front" {
		t.Errorf("derived FrontLink = %q", l)
	}
}

// clusterSrc returns instance 1's file with old replaced by new.
func clusterSrc(t *testing.T, old, new string) string {
	t.Helper()
	b, err := os.ReadFile(clusterFiles[0])
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), old) {
		t.Fatalf("%q not in %s", old, clusterFiles[0])
	}
	return strings.Replace(string(b), old, new, 1)
}

func TestClusterDefaultsAndBFD(t *testing.T) {
	c := mustParse(t, clusterSrc(t, "        hold_time: 9s\n", "        passive: true\n        bfd:\n          min_tx: 100ms\n"))
	p := c.Cluster.BGP.Peers[0]
	if !p.Passive || p.HoldTime != config.DefaultBGPHoldTime || p.BFD == nil ||
		*p.BFD != (config.BFD{MinTx: 100 * time.Millisecond, MinRx: 300 * time.Millisecond, Multiplier: 3}) {
		t.Errorf("peer %+v bfd %+v", p, p.BFD)
	}
	c = mustParse(t, clusterSrc(t, "  heartbeat_interval: 500ms\n  dead_after: 2s\n", ""))
	if c.Cluster.HeartbeatInterval != config.DefaultHeartbeatInterval || c.Cluster.DeadAfter != config.DefaultDeadAfter {
		t.Errorf("timer defaults %v %v", c.Cluster.HeartbeatInterval, c.Cluster.DeadAfter)
	}
	// An explicit 0s is an error, not the default.
	errs := parseErrors(t, clusterSrc(t, "heartbeat_interval: 500ms", "heartbeat_interval: 0s"))
	if !hasError(errs, "cluster.heartbeat_interval", 28, "out of range") {
		t.Errorf("0s heartbeat: %v", errs)
	}
	// A wrong local address; a VIP on another member's SNAT address; a
	// member address that is a backend; a link that does not exist.
	for _, tt := range []struct{ old, new, key, msg string }{
		{"    asn: 65010\n", "    asn: 65010\n    local_address: 198.18.4.12\n", "cluster.bgp.local_address", "not this instance's member address"},
		{"vip: 198.18.0.100", "vip: 198.18.1.103", "services[0].vip", "cluster.members[2].snat_addresses[0]"},
		{"address: 198.18.4.13", "address: 198.18.1.13", "cluster.members[2].address", "services[0].backends[2]"},
		{"link: front", "link: back", "cluster.link", `no link is named "back"`},
		{"link: front", "link: backends", "cluster.link", `not on link "backends"`},
		{"    peers:\n      - address: 198.18.4.1\n", "    peers:\n      - address: 198.18.4.12\n", "cluster.bgp.peers[0].address", "cluster.members[1]"},
		{"  name: edge\n", "  name: Edge\n", "cluster.name", "[a-z0-9_-]"},
		{"      snat_addresses: [198.18.1.102]\n", "      snat_addresses: []\n", "cluster.members[1].snat_addresses", "at least one"},
		{"      address: 198.18.4.12\n", "      address: 198.18.1.12\n", "cluster.members", "more than one link"},
	} {
		errs := parseErrors(t, clusterSrc(t, tt.old, tt.new))
		found := false
		for _, e := range errs {
			found = found || (e.Key == tt.key && strings.Contains(e.Msg, tt.msg) && e.Line > 0)
		}
		if !found {
			t.Errorf("%q -> %q: want %s %q, got\n%v", tt.old, tt.new, tt.key, tt.msg, errs)
		}
	}
}

func TestCheckCluster(t *testing.T) {
	cs := loadCluster(t)
	if errs := config.CheckCluster(cs); errs != nil {
		t.Fatalf("the three instances: %v", errs)
	}
	parse := func(src, name string) *config.Config {
		c, err := config.Parse([]byte(src), name)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		return c
	}
	b, _ := os.ReadFile(clusterFiles[1])
	bsrc := string(b)
	for _, tt := range []struct {
		name string
		cfgs []*config.Config
		key  string
		line int
		msg  string
	}{
		{"same instance twice", []*config.Config{cs[0], cs[1], cs[0]}, "cluster.id", 26, "also the id of testdata/cluster/a.yaml"},
		{"other name", []*config.Config{cs[0], parse(strings.Replace(bsrc, "name: edge", "name: edge2", 1), "b2.yaml")}, "cluster.name", 25, `"edge2" differs`},
		{"other member mac", []*config.Config{cs[0], parse(strings.Replace(bsrc, "mac: 02:00:5e:12:04:0d", "mac: 02:00:5e:12:04:0e", 1), "b2.yaml")},
			"cluster.members[2]", 39, "member 3 differs"},
		{"member missing", []*config.Config{cs[0], parse(strings.Replace(bsrc, "    - id: 3\n      mac: 02:00:5e:12:04:0d\n      address: 198.18.4.13\n      snat_addresses: [198.18.1.103]\n", "", 1), "b2.yaml")},
			"cluster.members", 30, "member 3 of testdata/cluster/a.yaml is missing"},
		{"extra member", []*config.Config{parse(clusterSrc(t, "    - id: 3\n      mac: 02:00:5e:12:04:0d\n      address: 198.18.4.13\n      snat_addresses: [198.18.1.103]\n", ""), "a2.yaml"), cs[1]},
			"cluster.members[2].id", 39, "member 3 is not in the member list of a2.yaml"},
		{"timers", []*config.Config{cs[0], parse(strings.Replace(bsrc, "dead_after: 2s", "dead_after: 3s", 1), "b2.yaml")}, "cluster.dead_after", 29, "3s differs from 2s"},
		{"no cluster", []*config.Config{cs[0], mustParse(t, minimal)}, "", 1, "no cluster section"},
		{"snat overlap across files", []*config.Config{cs[0], mustParse(t, strings.Replace(minimal, "198.18.1.100", "198.18.1.101", 1))},
			"snat.addresses[0]", 13, "also an SNAT address of testdata/cluster/a.yaml"},
	} {
		errs := config.CheckCluster(tt.cfgs)
		if !hasError(errs, tt.key, tt.line, tt.msg) {
			t.Errorf("%s: want %s line %d %q, got\n%v", tt.name, tt.key, tt.line, tt.msg, errs)
		}
	}
}

func TestClusterRoundTrip(t *testing.T) {
	cs := loadCluster(t)
	bfd := mustParse(t, clusterSrc(t, "        hold_time: 9s\n", "        passive: true\n        bfd:\n          min_tx: 100ms\n          multiplier: 5\n"))
	for _, c := range append(cs, bfd) {
		out, err := c.Marshal()
		if err != nil {
			t.Fatalf("%s: Marshal: %v", c.Source, err)
		}
		back, err := config.Parse(out, c.Source)
		if err != nil {
			t.Fatalf("%s: Parse(Marshal()): %v\n%s", c.Source, err, out)
		}
		sameConfig(t, back, c)
	}
}

func TestClusterRestartKeys(t *testing.T) {
	base := func() *config.Config {
		c, err := config.Load(clusterFiles[0])
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	addr := netip.MustParseAddr
	for _, tt := range []struct {
		name   string
		mutate func(c *config.Config)
		want   []string
	}{
		// A reload applies these.
		{"other member's address", func(c *config.Config) { c.Cluster.Members[1].Address = addr("198.18.4.22") }, nil},
		{"member added", func(c *config.Config) {
			c.Cluster.Members = append(c.Cluster.Members, config.ClusterMember{ID: 4, Address: addr("198.18.4.14")})
		}, nil},
		{"member removed", func(c *config.Config) { c.Cluster.Members = c.Cluster.Members[:2] }, nil},
		{"peers", func(c *config.Config) {
			c.Cluster.BGP.Peers = append(c.Cluster.BGP.Peers, config.BGPPeer{Address: addr("198.18.4.2"), ASN: 65000, HoldTime: 3 * time.Second})
			c.Cluster.BGP.Peers[0].HoldTime = 30 * time.Second
		}, nil},
		// These need a restart.
		{"cluster removed", func(c *config.Config) { c.Cluster = nil }, []string{"cluster"}},
		{"name", func(c *config.Config) { c.Cluster.Name = "other" }, []string{"cluster.name"}},
		{"id", func(c *config.Config) { c.Cluster.ID = 2 }, []string{"cluster.id"}},
		{"link", func(c *config.Config) { c.Cluster.Link = "" }, []string{"cluster.link"}},
		{"timers", func(c *config.Config) { c.Cluster.DeadAfter = 3 * time.Second }, []string{"cluster.dead_after"}},
		{"own mac", func(c *config.Config) { c.Cluster.Members[0].MAC = net.HardwareAddr{2, 0, 0, 0, 0, 9} }, []string{"cluster.members[0].mac"}},
		{"own address", func(c *config.Config) { c.Cluster.Members[0].Address = addr("198.18.4.21") }, []string{"cluster.members[0].address"}},
		{"asn", func(c *config.Config) { c.Cluster.BGP.ASN = 65011 }, []string{"cluster.bgp.asn"}},
		{"listen port", func(c *config.Config) { c.Cluster.BGP.ListenPort = 1179 }, []string{"cluster.bgp.listen_port"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			old, o := base(), base()
			tt.mutate(o)
			if got := old.RestartKeysDiffer(o); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("RestartKeysDiffer = %q, want %q", got, tt.want)
			}
		})
	}
}

// TestExampleClusterBlock: the commented cluster section of example.yaml,
// uncommented, makes a valid file (so the reference stays accurate).
func TestExampleClusterBlock(t *testing.T) {
	data, err := os.ReadFile("example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	in := false
	n := 0
	for _, l := range strings.Split(string(data), "\n") {
		switch {
		case strings.HasPrefix(l, "# cluster:"):
			in = true
		case in && !strings.HasPrefix(l, "#"):
			in = false
		}
		if in {
			l = strings.TrimPrefix(strings.TrimPrefix(l, "#"), " ")
			n++
		}
		out = append(out, l)
	}
	if n < 10 {
		t.Fatalf("example.yaml has no commented cluster block (%d lines)", n)
	}
	c, err := config.Parse([]byte(strings.Join(out, "\n")), "example+cluster")
	if err != nil {
		t.Fatalf("example.yaml with its cluster block uncommented: %v", err)
	}
	if c.Cluster == nil || len(c.Cluster.Members) < 2 || len(c.Cluster.BGP.Peers) == 0 {
		t.Fatalf("cluster = %+v", c.Cluster)
	}
}

func TestClusterValidateGo(t *testing.T) {
	c := goConfig()
	c.ApplyDefaults()
	c.Cluster = &config.Cluster{Name: "edge", ID: 1, Members: []config.ClusterMember{
		{ID: 1, MAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}, Address: netip.MustParseAddr("198.18.0.11"), SNATAddresses: c.SNAT.Addresses},
		{ID: 2, MAC: net.HardwareAddr{2, 0, 0, 0, 0, 2}, Address: netip.MustParseAddr("198.18.0.12"), SNATAddresses: []netip.Addr{netip.MustParseAddr("198.18.1.102")}},
	}, BGP: config.BGP{ASN: 65010, Peers: []config.BGPPeer{{Address: netip.MustParseAddr("198.18.0.1"), ASN: 65000}}}}
	c.ApplyDefaults()
	if errs := c.Validate(); errs != nil {
		t.Fatalf("valid Go cluster: %v", errs)
	}
	if c.Cluster.BGP.RouterID != netip.MustParseAddr("198.18.0.11") || c.Cluster.BGP.Peers[0].HoldTime != config.DefaultBGPHoldTime {
		t.Errorf("ApplyDefaults: %+v", c.Cluster.BGP)
	}
	c.Cluster.Members[1].SNATAddresses = []netip.Addr{c.SNAT.Addresses[1]}
	if errs := c.Validate(); !hasError(errs, "cluster.members[1].snat_addresses[0]", 0, "must be disjoint") {
		t.Errorf("overlap: %v", errs)
	}
}
