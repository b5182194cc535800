package lab

import (
	"context"
	"net/netip"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestClusterConfigDefaults(t *testing.T) {
	c, err := ClusterConfig{}.withDefaults()
	if err != nil || c.Instances != 3 || c.Clients != 1 || c.Backends != 3 || c.RouterASN != 65000 || c.InstanceASN != 65010 || c.HoldTime != 9*time.Second {
		t.Errorf("defaults: %+v %v", c, err)
	}
	for _, bad := range []ClusterConfig{
		{Instances: 90}, {Instances: -1}, {HoldTime: 2 * time.Second}, {HoldTime: 3500 * time.Millisecond},
		{Prefix: "a-b"}, {RouterAnnounces: []netip.Prefix{netip.MustParsePrefix("198.19.255.1/24")}},
	} {
		if _, err := bad.withDefaults(); err == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
}

func TestBirdConfig(t *testing.T) {
	c := &Cluster{ccfg: ClusterConfig{Instances: 2, RouterASN: 65000, InstanceASN: 65010, HoldTime: 9 * time.Second, BFD: true,
		RouterAnnounces: []netip.Prefix{netip.MustParsePrefix("198.19.255.0/24")}}, BirdDir: "/x"}
	c.Instances = []*Instance{{ID: 1, Addr: netip.MustParseAddr("198.18.4.11")}, {ID: 2, Addr: netip.MustParseAddr("198.18.4.12")}}
	got := c.birdConfig()
	for _, w := range []string{
		"router id 198.18.4.1;", "merge paths on limit 16;", "export where source = RTS_BGP;",
		"local 198.18.4.1 as 65000;", "hold time 9;", "bfd on;", `interface "front"`,
		"route 198.19.255.0/24 blackhole;", `export where proto = "announced";`,
		"protocol bgp t1 from tslb { neighbor 198.18.4.11 as 65010; }",
		"protocol bgp t2 from tslb { neighbor 198.18.4.12 as 65010; }",
	} {
		if !strings.Contains(got, w) {
			t.Errorf("bird.conf lacks %q:\n%s", w, got)
		}
	}
}

// ping runs one ping from ns to addr and reports whether it was answered.
func ping(t *testing.T, ns *NS, addr netip.Addr) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	out, err := ns.Command(ctx, "ping", "-c", "1", "-W", "2", addr.String()).CombinedOutput()
	if err != nil {
		return &pingError{ns.Name, addr, string(out)}
	}
	return nil
}

type pingError struct {
	from string
	to   netip.Addr
	out  string
}

func (e *pingError) Error() string { return e.from + " cannot ping " + e.to.String() + ": " + e.out }

// TestClusterTopology builds a cluster lab (2 instances, 2 clients, 2
// backends), checks its wiring, sysctls, addresses and BIRD, pings
// across it, and checks that Close leaves nothing behind.
func TestClusterTopology(t *testing.T) {
	Require(t)
	RequireBird(t)
	prefix := uniquePrefix(t, "cl")
	c, err := NewCluster(ClusterConfig{Prefix: prefix, Instances: 2, Clients: 2, Backends: 2})
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	defer func() {
		if !closed {
			c.Close()
		}
	}()
	want := []string{prefix + "-sw", prefix + "-r", prefix + "-t1", prefix + "-t2", prefix + "-c1", prefix + "-c2", prefix + "-b1", prefix + "-b2"}
	have := netnsList(t, prefix)
	for _, w := range want {
		found := false
		for _, h := range have {
			found = found || h == w
		}
		if !found {
			t.Errorf("namespace %s missing (have %v)", w, have)
		}
	}
	if len(have) != len(want) {
		t.Errorf("namespaces %v, want %v", have, want)
	}
	// Sysctls: the router forwards and hashes L4; instances do not forward.
	for _, kv := range [][3]string{
		{"r", "net.ipv4.ip_forward", "1"}, {"r", "net.ipv4.fib_multipath_hash_policy", "1"},
		{"t1", "net.ipv4.ip_forward", "0"}, {"t2", "net.ipv4.ip_forward", "0"},
	} {
		ns := map[string]*NS{"r": c.Router, "t1": c.Instances[0].NS, "t2": c.Instances[1].NS}[kv[0]]
		if v, err := ns.ReadSysctl(kv[1]); err != nil || v != kv[2] {
			t.Errorf("%s %s = %q (%v), want %s", ns.Name, kv[1], v, err, kv[2])
		}
	}
	// Instances: the front MAC and kernel address, nothing on the backend
	// link; no SNAT or VIP on any kernel interface.
	for _, in := range c.Instances {
		f, err := in.NS.Link(ClusterFrontIf)
		if err != nil {
			t.Fatal(err)
		}
		if f.Attrs().HardwareAddr.String() != in.MAC.String() {
			t.Errorf("%s: MAC %v, want %v", in.NS.Name, f.Attrs().HardwareAddr, in.MAC)
		}
		fa, _ := in.NS.Addrs(ClusterFrontIf)
		ba, _ := in.NS.Addrs(ClusterBackendIf)
		if len(fa) != 1 || fa[0] != netip.PrefixFrom(in.Addr, 24) || len(ba) != 0 {
			t.Errorf("%s: front %v backend %v", in.NS.Name, fa, ba)
		}
		if in.SNAT != netip.AddrFrom4([4]byte{198, 18, 1, byte(100 + in.ID)}) {
			t.Errorf("instance %d SNAT %v", in.ID, in.SNAT)
		}
	}
	// Pings: client -> router, client -> instance (through the router),
	// router -> instances, backends -> each other.
	for _, p := range []struct {
		from *NS
		to   netip.Addr
	}{
		{c.Clients[0], ClusterRouterC}, {c.Clients[1], ClusterRouter},
		{c.Clients[0], c.Instances[0].Addr}, {c.Clients[1], c.Instances[1].Addr},
		{c.Router, c.Instances[0].Addr}, {c.Router, c.Instances[1].Addr},
		{c.Backends[0], c.Backends[1].Addr},
	} {
		if err := ping(t, p.from, p.to); err != nil {
			t.Error(err)
		}
	}
	// Nothing answers on the VIP yet: no instance announces it.
	if hops, err := c.RouterNextHops(netip.PrefixFrom(ClusterVIP, 32)); err != nil || len(hops) != 0 {
		t.Errorf("route to the VIP before any announcement: %v %v", hops, err)
	}
	// BIRD runs with a session per instance (not established: nothing
	// speaks BGP in the instances yet).
	out, err := c.Birdc("show", "protocols")
	if err != nil || !strings.Contains(out, "t1") || !strings.Contains(out, "t2") {
		t.Errorf("birdc show protocols: %v\n%s", err, out)
	}
	pid := c.bird.Process.Pid
	dir := c.BirdDir
	// Backends serve through the embedded Lab.
	if _, err := c.StartBackends(ServerConfig{}); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	closed = true
	if left := netnsList(t, prefix); len(left) != 0 {
		t.Errorf("namespaces left after Close: %v", left)
	}
	if err := syscall.Kill(pid, 0); err == nil {
		t.Errorf("bird (pid %d) still running after Close", pid)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("%s left after Close: %v", dir, err)
	}
	if err := c.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

// TestClusterFailureTearsDown: a build that fails halfway, at every step,
// leaves no namespace, process or directory behind.
func TestClusterFailureTearsDown(t *testing.T) {
	Require(t)
	RequireBird(t)
	for _, step := range []string{"namespaces", "router", "instances", "bird"} {
		prefix := uniquePrefix(t, "cf")
		failSteps.Store(prefix, step)
		c, err := NewCluster(ClusterConfig{Prefix: prefix, Instances: 2})
		failSteps.Delete(prefix)
		if err == nil {
			c.Close()
			t.Fatalf("step %s: NewCluster succeeded", step)
		}
		if left := netnsList(t, prefix); len(left) != 0 {
			t.Errorf("step %s: namespaces left: %v", step, left)
		}
		out, _ := os.ReadDir(os.TempDir())
		for _, e := range out {
			if strings.HasPrefix(e.Name(), prefix+"-bird-") {
				t.Errorf("step %s: %s left in %s", step, e.Name(), os.TempDir())
			}
		}
	}
}
