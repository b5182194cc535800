package lab

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
)

// ClusterConfig describes a cluster lab: a router running BIRD, client
// namespaces behind it, several tslb instance namespaces on a front
// segment shared with the router, and backends on a segment shared by the
// instances. Zero fields mean the defaults noted.
type ClusterConfig struct {
	// Prefix names every namespace, as Config.Prefix.
	Prefix string
	// Instances is the number of tslb instance namespaces (0 means 3, at
	// most 89).
	Instances int
	// Clients and Backends are as in Config (0 means 1 and 3).
	Clients, Backends int
	// RouterASN and InstanceASN are the router's and every instance's AS
	// numbers (0 means 65000 and 65010).
	RouterASN, InstanceASN uint32
	// HoldTime is the router's BGP hold time (0 means 9s; whole seconds,
	// at least 3s).
	HoldTime time.Duration
	// BFD runs BFD on every session (BIRD's protocol bfd, 300 ms
	// intervals, multiplier 3).
	BFD bool
	// RouterAnnounces are prefixes the router announces to the instances
	// (static blackhole routes), to check that an instance imports
	// nothing. None by default.
	RouterAnnounces []netip.Prefix
}

// Cluster addressing: front 198.18.4.0/24 (router .1, instance i at
// .10+i), clients 198.18.2.0/24 behind the router (router .1, client i at
// .10+i), backends 198.18.1.0/24 (backend i at .10+i); the VIP
// 198.18.0.100 is on no segment: the instances announce it. Instance i
// owns the SNAT address 198.18.1.(100+i) and has the front MAC
// 02:00:5e:12:04:(10+i), as in config/testdata/cluster.
var (
	ClusterFrontNet  = netip.MustParsePrefix("198.18.4.0/24")
	ClusterClientNet = netip.MustParsePrefix("198.18.2.0/24")
	ClusterRouter    = netip.MustParseAddr("198.18.4.1")
	ClusterRouterC   = netip.MustParseAddr("198.18.2.1")
	ClusterVIP       = netip.MustParseAddr("198.18.0.100")
)

// Interface names of the cluster lab.
const (
	ClusterFrontIf   = "tslb-f0" // an instance's link to the front segment
	ClusterBackendIf = "tslb-b0" // an instance's link to the backends
	routerFrontIf    = "front"
	routerClientIf   = "clients"
	frontBr          = "brf"
)

// Instance is one tslb namespace of a cluster lab.
type Instance struct {
	// NS is the instance's namespace, <prefix>-t<ID>.
	NS *NS
	// ID is the member ID, 1..
	ID int
	// MAC is the front interface's MAC address.
	MAC net.HardwareAddr
	// Addr is the kernel's address on the front interface (the BGP
	// session and next-hop address).
	Addr netip.Addr
	// SNAT is the SNAT address the instance owns (on no kernel interface).
	SNAT netip.Addr
}

// Cluster is a cluster lab. It embeds a Lab for the switch, clients,
// backends and their servers (Lab.LB is nil: there is no single
// balancer).
type Cluster struct {
	*Lab
	// Router is the router namespace, <prefix>-r.
	Router *NS
	// Instances are the tslb namespaces, in ID order.
	Instances []*Instance
	// BirdDir holds BIRD's configuration, control socket and log.
	BirdDir string

	ccfg ClusterConfig

	birdMu   sync.Mutex
	bird     *exec.Cmd
	birdDone chan struct{}
}

func (c ClusterConfig) withDefaults() (ClusterConfig, error) {
	base, err := Config{Prefix: c.Prefix, Clients: c.Clients, Backends: c.Backends}.withDefaults()
	if err != nil {
		return c, err
	}
	c.Prefix, c.Clients, c.Backends = base.Prefix, base.Clients, base.Backends
	if c.Instances == 0 {
		c.Instances = 3
	}
	if c.Instances < 0 || c.Instances > maxHosts {
		return c, fmt.Errorf("lab: Instances=%d out of range 1..%d", c.Instances, maxHosts)
	}
	if c.RouterASN == 0 {
		c.RouterASN = 65000
	}
	if c.InstanceASN == 0 {
		c.InstanceASN = 65010
	}
	if c.HoldTime == 0 {
		c.HoldTime = 9 * time.Second
	}
	if c.HoldTime < 3*time.Second || c.HoldTime%time.Second != 0 {
		return c, fmt.Errorf("lab: HoldTime %v must be whole seconds, at least 3s", c.HoldTime)
	}
	for _, p := range c.RouterAnnounces {
		if !p.Addr().Is4() || p != p.Masked() {
			return c, fmt.Errorf("lab: RouterAnnounces %v must be masked IPv4 prefixes", p)
		}
	}
	return c, nil
}

// RequireBird checks, like Require, that BIRD 2 is installed (bird and
// birdc): it skips locally and fails when CI=true.
func RequireBird(t TB) {
	t.Helper()
	var missing []string
	for _, b := range []string{"bird", "birdc"} {
		if _, err := exec.LookPath(b); err != nil {
			missing = append(missing, b)
		}
	}
	if len(missing) == 0 {
		return
	}
	msg := fmt.Sprintf("BIRD not installed (%s missing; test/setup-debian.sh installs bird2)", strings.Join(missing, ", "))
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s (CI=true, not skipping)", msg)
	}
	t.Skipf("%s", msg)
}

// NewClusterT is Require, RequireBird, NewCluster and t.Cleanup(Close).
func NewClusterT(t TB, cfg ClusterConfig) *Cluster {
	t.Helper()
	Require(t)
	RequireBird(t)
	c, err := NewCluster(cfg)
	if err != nil {
		t.Fatalf("lab.NewCluster: %v", err)
	}
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Errorf("cluster lab close: %v", err)
		}
	})
	return c
}

// NewCluster builds a cluster lab and starts BIRD in the router namespace.
// On any error it tears down everything it built.
func NewCluster(cfg ClusterConfig) (*Cluster, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	c := &Cluster{
		Lab: &Lab{
			Prefix: cfg.Prefix, VIP: ClusterVIP, ClientNet: ClusterClientNet, BackendNet: backendNet,
			LBBackendIf: ClusterBackendIf, cfg: Config{Prefix: cfg.Prefix, Clients: cfg.Clients, Backends: cfg.Backends},
		},
		ccfg: cfg,
	}
	if err := c.build(); err != nil {
		if cerr := c.Close(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("lab: teardown after failed build: %w", cerr))
		}
		return nil, err
	}
	return c, nil
}

func (c *Cluster) build() error {
	l := c.Lab
	var err error
	if l.Switch, err = l.newNS("sw", netip.Addr{}, ""); err != nil {
		return err
	}
	if c.Router, err = l.newNS("r", ClusterRouter, routerFrontIf); err != nil {
		return err
	}
	for i := 1; i <= c.ccfg.Instances; i++ {
		ns, err := l.newNS(fmt.Sprintf("t%d", i), hostAddr(ClusterFrontNet, i), ClusterFrontIf)
		if err != nil {
			return err
		}
		snat := backendNet.Addr().As4()
		snat[3] = byte(100 + i)
		c.Instances = append(c.Instances, &Instance{
			NS: ns, ID: i, Addr: ns.Addr, SNAT: netip.AddrFrom4(snat),
			MAC: net.HardwareAddr{0x02, 0x00, 0x5e, 0x12, 0x04, byte(10 + i)},
		})
	}
	for i := 1; i <= c.ccfg.Clients; i++ {
		ns, err := l.newNS(fmt.Sprintf("c%d", i), hostAddr(ClusterClientNet, i), hostIf)
		if err != nil {
			return err
		}
		l.Clients = append(l.Clients, ns)
	}
	for i := 1; i <= c.ccfg.Backends; i++ {
		ns, err := l.newNS(fmt.Sprintf("b%d", i), hostAddr(backendNet, i), hostIf)
		if err != nil {
			return err
		}
		l.Backends = append(l.Backends, ns)
	}
	if err := l.step("namespaces"); err != nil {
		return err
	}
	for _, ns := range l.all {
		for _, k := range []string{"net.ipv6.conf.all.disable_ipv6", "net.ipv6.conf.default.disable_ipv6"} {
			if err := ns.Sysctl(k, "1"); err != nil {
				return err
			}
		}
		if err := ns.Sysctl("net.ipv4.ip_forward", "0"); err != nil {
			return err
		}
		lo, err := ns.Link("lo")
		if err != nil {
			return err
		}
		if err := ns.nl.LinkSetUp(lo); err != nil {
			return fmt.Errorf("lab: lo up in %s: %w", ns.Name, err)
		}
	}
	// The router forwards and hashes flows over ECMP next hops by L4
	// tuple (net/ipv4/route.c fib_multipath_hash, policy 1).
	if err := c.Router.Sysctl("net.ipv4.ip_forward", "1"); err != nil {
		return err
	}
	if err := c.Router.Sysctl("net.ipv4.fib_multipath_hash_policy", "1"); err != nil {
		return err
	}
	// With br_netfilter loaded, bridged frames would cross iptables; keep
	// the switch a plain switch (the sysctl exists per namespace only when
	// the module is loaded).
	if _, err := os.Stat("/proc/sys/net/bridge/bridge-nf-call-iptables"); err == nil {
		if err := l.Switch.Sysctl("net.bridge.bridge-nf-call-iptables", "0"); err != nil {
			return err
		}
	}
	if err := l.step("sysctls"); err != nil {
		return err
	}
	brf, err := l.Switch.addBridge(frontBr, false)
	if err != nil {
		return err
	}
	brc, err := l.Switch.addBridge(clientBr, false)
	if err != nil {
		return err
	}
	brb, err := l.Switch.addBridge(backendBr, false)
	if err != nil {
		return err
	}
	if err := l.step("bridges"); err != nil {
		return err
	}
	if err := l.Switch.addPort(brf, "rf", c.Router, routerFrontIf, netip.PrefixFrom(ClusterRouter, ClusterFrontNet.Bits())); err != nil {
		return err
	}
	if err := l.Switch.addPort(brc, "rc", c.Router, routerClientIf, netip.PrefixFrom(ClusterRouterC, ClusterClientNet.Bits())); err != nil {
		return err
	}
	if err := l.step("router"); err != nil {
		return err
	}
	for i, cl := range l.Clients {
		if err := l.Switch.addPort(brc, fmt.Sprintf("c%d", i+1), cl, hostIf, netip.PrefixFrom(cl.Addr, ClusterClientNet.Bits())); err != nil {
			return err
		}
		if err := cl.defaultRoute(hostIf, ClusterRouterC); err != nil {
			return err
		}
	}
	for _, in := range c.Instances {
		if err := l.Switch.addPort(brf, fmt.Sprintf("tf%d", in.ID), in.NS, ClusterFrontIf, netip.PrefixFrom(in.Addr, ClusterFrontNet.Bits())); err != nil {
			return err
		}
		f, err := in.NS.Link(ClusterFrontIf)
		if err != nil {
			return err
		}
		if err := in.NS.nl.LinkSetHardwareAddr(f, in.MAC); err != nil {
			return fmt.Errorf("lab: MAC of %s in %s: %w", ClusterFrontIf, in.NS.Name, err)
		}
		if err := l.Switch.addPort(brb, fmt.Sprintf("tb%d", in.ID), in.NS, ClusterBackendIf); err != nil {
			return err
		}
		// The kernel reaches the clients through the router (health
		// probes and BGP stay on-link; this is for pings and tools).
		if err := in.NS.defaultRoute(ClusterFrontIf, ClusterRouter); err != nil {
			return err
		}
	}
	if err := l.step("instances"); err != nil {
		return err
	}
	for i, b := range l.Backends {
		if err := l.Switch.addPort(brb, fmt.Sprintf("b%d", i+1), b, hostIf, netip.PrefixFrom(b.Addr, backendNet.Bits())); err != nil {
			return err
		}
	}
	if err := l.step("backends"); err != nil {
		return err
	}
	if c.BirdDir, err = os.MkdirTemp("", c.Prefix+"-bird-"); err != nil {
		return fmt.Errorf("lab: %w", err)
	}
	if err := os.WriteFile(filepath.Join(c.BirdDir, "bird.conf"), []byte(c.birdConfig()), 0o644); err != nil {
		return fmt.Errorf("lab: %w", err)
	}
	if err := c.StartRouter(); err != nil {
		return err
	}
	return l.step("bird")
}

// defaultRoute adds a default route via gw on ifname.
func (n *NS) defaultRoute(ifname string, gw netip.Addr) error {
	link, err := n.Link(ifname)
	if err != nil {
		return err
	}
	r := &netlink.Route{LinkIndex: link.Attrs().Index, Gw: net.IP(gw.AsSlice())}
	if err := n.nl.RouteAdd(r); err != nil {
		return fmt.Errorf("lab: default route via %v in %s: %w", gw, n.Name, err)
	}
	return nil
}

// birdConfig is the router's BIRD 2 configuration: one eBGP session per
// instance (import everything, export only RouterAnnounces), ECMP into
// the kernel (merge paths), optional BFD.
func (c *Cluster) birdConfig() string {
	var b strings.Builder
	fmt.Fprintf(&b, "router id %s;\n", ClusterRouter)
	fmt.Fprintf(&b, "log %q all;\n", filepath.Join(c.BirdDir, "bird.log"))
	b.WriteString("protocol device { scan time 2; }\n")
	b.WriteString("protocol kernel {\n  ipv4 { import none; export where source = RTS_BGP; };\n  merge paths on limit 16;\n}\n")
	if len(c.ccfg.RouterAnnounces) > 0 {
		b.WriteString("protocol static announced {\n  ipv4;\n")
		for _, p := range c.ccfg.RouterAnnounces {
			fmt.Fprintf(&b, "  route %s blackhole;\n", p)
		}
		b.WriteString("}\n")
	}
	if c.ccfg.BFD {
		fmt.Fprintf(&b, "protocol bfd {\n  interface %q { min rx interval 300 ms; min tx interval 300 ms; multiplier 3; };\n}\n", routerFrontIf)
	}
	hold := int(c.ccfg.HoldTime / time.Second)
	fmt.Fprintf(&b, "template bgp tslb {\n  local %s as %d;\n  hold time %d;\n  keepalive time %d;\n  connect delay time 1;\n  connect retry time 2;\n  error wait time 1, 4;\n",
		ClusterRouter, c.ccfg.RouterASN, hold, max(hold/3, 1))
	if c.ccfg.BFD {
		b.WriteString("  bfd on;\n")
	}
	b.WriteString("  ipv4 {\n    import all;\n")
	if len(c.ccfg.RouterAnnounces) > 0 {
		b.WriteString("    export where proto = \"announced\";\n")
	} else {
		b.WriteString("    export none;\n")
	}
	b.WriteString("  };\n}\n")
	for _, in := range c.Instances {
		fmt.Fprintf(&b, "protocol bgp t%d from tslb { neighbor %s as %d; }\n", in.ID, in.Addr, c.ccfg.InstanceASN)
	}
	return b.String()
}

// RouterASN, InstanceASN and HoldTime are the lab's BGP settings (its
// ClusterConfig with the defaults filled in).
func (c *Cluster) RouterASN() uint32       { return c.ccfg.RouterASN }
func (c *Cluster) InstanceASN() uint32     { return c.ccfg.InstanceASN }
func (c *Cluster) HoldTime() time.Duration { return c.ccfg.HoldTime }

// BirdSocket is the path of BIRD's control socket.
func (c *Cluster) BirdSocket() string { return filepath.Join(c.BirdDir, "bird.ctl") }

// StartRouter starts BIRD in the router namespace (in the foreground, a
// child of this process, killed if this process dies) and waits until it
// answers on its control socket.
func (c *Cluster) StartRouter() error {
	c.birdMu.Lock()
	defer c.birdMu.Unlock()
	if c.bird != nil {
		return errors.New("lab: BIRD already running")
	}
	cmd := c.Router.Command(context.Background(), "bird", "-f", "-c", filepath.Join(c.BirdDir, "bird.conf"),
		"-s", c.BirdSocket(), "-P", filepath.Join(c.BirdDir, "bird.pid"))
	out, err := os.OpenFile(filepath.Join(c.BirdDir, "bird.out"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("lab: %w", err)
	}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		out.Close()
		return fmt.Errorf("lab: start bird: %w", err)
	}
	done := make(chan struct{})
	go func() {
		cmd.Wait()
		out.Close()
		close(done)
	}()
	c.bird, c.birdDone = cmd, done
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := c.birdcLocked("show", "status"); err == nil {
			return nil
		}
		select {
		case <-done:
			c.bird = nil
			b, _ := os.ReadFile(filepath.Join(c.BirdDir, "bird.out"))
			return fmt.Errorf("lab: bird exited at start: %s", strings.TrimSpace(string(b)))
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return errors.New("lab: bird does not answer on its control socket after 10 s")
		}
	}
}

// StopRouter stops BIRD: with kill, SIGKILL (sessions die without a
// NOTIFICATION, as on a crash); otherwise SIGTERM (BIRD closes its
// sessions). It waits for the process and its routes to leave the kernel
// (BIRD removes them on a clean stop; after a kill they stay, as they
// would on a crashed router, until StartRouter's BIRD replaces them).
func (c *Cluster) StopRouter(kill bool) error {
	c.birdMu.Lock()
	defer c.birdMu.Unlock()
	if c.bird == nil {
		return nil
	}
	sig := syscall.SIGTERM
	if kill {
		sig = syscall.SIGKILL
	}
	// The process is `ip netns exec`, which execs bird: same pid.
	c.bird.Process.Signal(sig)
	select {
	case <-c.birdDone:
	case <-time.After(10 * time.Second):
		c.bird.Process.Kill()
		<-c.birdDone
	}
	c.bird = nil
	return nil
}

// Birdc runs birdc with args against the router's BIRD and returns its
// output.
func (c *Cluster) Birdc(args ...string) (string, error) {
	c.birdMu.Lock()
	defer c.birdMu.Unlock()
	return c.birdcLocked(args...)
}

func (c *Cluster) birdcLocked(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "birdc", append([]string{"-s", c.BirdSocket()}, args...)...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("lab: birdc %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// RouterNextHops returns the next hops of the router's kernel route to
// prefix, sorted ("ip -j route show exact PREFIX"); none if there is no
// such route.
func (c *Cluster) RouterNextHops(prefix netip.Prefix) ([]netip.Addr, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	out, err := c.Router.Command(ctx, "ip", "-j", "-4", "route", "show", "exact", prefix.String()).Output()
	if err != nil {
		return nil, fmt.Errorf("lab: ip route show in %s: %w", c.Router.Name, err)
	}
	var routes []struct {
		Gateway  string `json:"gateway"`
		Nexthops []struct {
			Gateway string `json:"gateway"`
		} `json:"nexthops"`
	}
	if err := json.Unmarshal(out, &routes); err != nil {
		return nil, fmt.Errorf("lab: ip -j route: %w: %s", err, out)
	}
	var hops []netip.Addr
	for _, r := range routes {
		if r.Gateway != "" {
			if a, err := netip.ParseAddr(r.Gateway); err == nil {
				hops = append(hops, a)
			}
		}
		for _, n := range r.Nexthops {
			if a, err := netip.ParseAddr(n.Gateway); err == nil {
				hops = append(hops, a)
			}
		}
	}
	sortAddrs(hops)
	return hops, nil
}

func sortAddrs(a []netip.Addr) {
	for i := 1; i < len(a); i++ {
		for j := i; j > 0 && a[j].Less(a[j-1]); j-- {
			a[j], a[j-1] = a[j-1], a[j]
		}
	}
}

// Close stops BIRD, then closes the lab (servers, namespaces) and removes
// BirdDir. It is idempotent.
func (c *Cluster) Close() error {
	var errs []error
	if err := c.StopRouter(false); err != nil {
		errs = append(errs, err)
	}
	if c.Lab != nil {
		if err := c.Lab.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	if c.BirdDir != "" {
		if err := os.RemoveAll(c.BirdDir); err != nil {
			errs = append(errs, fmt.Errorf("lab: %w", err))
		}
	}
	return errors.Join(errs...)
}
