package lab

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Mode selects what owns the VIP and SNAT addresses in the lb namespace.
type Mode int

const (
	// ModeUserspace leaves the lb namespace without addresses and with
	// ip_forward=0, for a userspace balancer (tslb) that answers ARP for the
	// VIP and SNAT addresses itself. It is the default.
	ModeUserspace Mode = iota
	// ModeKernelNAT configures the lb namespace as the kernel peer balancer:
	// VIP and SNAT addresses on its links, ip_forward=1 and an nftables
	// DNAT/SNAT ruleset (table "tslbpeer").
	ModeKernelNAT
)

// String returns the mode's name.
func (m Mode) String() string {
	switch m {
	case ModeUserspace:
		return "userspace"
	case ModeKernelNAT:
		return "kernelnat"
	default:
		return fmt.Sprintf("Mode(%d)", int(m))
	}
}

// Config describes a lab. The zero Config is valid: a random prefix, one
// client and three backends in ModeUserspace.
type Config struct {
	// Prefix names every namespace (<Prefix>-sw, <Prefix>-lb, <Prefix>-c1,
	// ...). It must be 1 to 24 characters of [A-Za-z0-9_]; "" means "tslbt"
	// followed by four random hex digits, so concurrent labs never collide.
	Prefix string
	// Clients is the number of client namespaces (0 means 1, at most 89).
	Clients int
	// Backends is the number of backend namespaces (0 means 3, at most 89).
	Backends int
	// Mode selects who owns the VIP and SNAT addresses.
	Mode Mode
	// NAT configures the kernel balancer; it is used only in ModeKernelNAT.
	NAT NATConfig
	// IPv6 builds a dual-stack lab whose primary family is IPv6: every
	// client and backend gets an IPv6 address (ULA fd00:5e18::/48, see
	// Lab.V6) besides its IPv4 one, usable at once (accept_dad=0, added
	// with nodad), and Lab.VIP, SNAT, ClientNet, BackendNet and NS.Addr are
	// the IPv6 ones. Router advertisements are ignored and IPv6 forwarding
	// is off in every namespace; the lb namespace has no link-local
	// addresses (addr_gen_mode 1), so in ModeUserspace its kernel owns no
	// IPv6 address at all, as it owns no IPv4 one. The bridges do no
	// multicast snooping, so neighbour solicitations reach tslb, which
	// joins no group. In ModeKernelNAT both families are NATed.
	IPv6 bool
}

// NATConfig configures the nftables peer balancer of ModeKernelNAT. Zero
// fields mean the documented defaults.
type NATConfig struct {
	// VIPPort is the service port on the VIP (0 means 80).
	VIPPort uint16
	// BackendPort is the port the backends listen on (0 means 8080).
	BackendPort uint16
	// ExtraPorts are further services on the VIP, each DNATed to its
	// backend port on the same backends, round-robin with its own counter
	// (none by default). Both ports of an entry must be nonzero.
	ExtraPorts []PortMap
	// PortMin and PortMax bound the SNAT source ports (0 means 20000 and
	// 60999).
	PortMin, PortMax uint16
	// StripTS removes the TCP timestamp option from client SYNs (it is
	// overwritten with NOPs), as DPVS does.
	StripTS bool
	// CTTimeWait sets net.netfilter.nf_conntrack_tcp_timeout_time_wait in
	// the lb namespace (whole seconds, at least 1); 0 keeps the kernel
	// default (120 s).
	CTTimeWait time.Duration
}

// PortMap maps a VIP port to the port the backends serve it on.
type PortMap struct {
	VIPPort, BackendPort uint16
}

// Lab is a set of network namespaces wired as in the package comment.
type Lab struct {
	// Prefix is the prefix of every namespace name.
	Prefix string
	// LB is the balancer namespace, Switch the one holding the bridges.
	LB, Switch *NS
	// Clients and Backends are the end-host namespaces, in order c1.., b1...
	Clients, Backends []*NS
	// VIP (198.18.0.100) and SNAT (198.18.1.100) are the balancer's
	// addresses, on-link for clients and backends respectively: those of
	// V6 in a dual-stack lab (Config.IPv6).
	VIP, SNAT netip.Addr
	// ClientNet (198.18.0.0/24) and BackendNet (198.18.1.0/24) are the two
	// lab subnets (those of V6 in a dual-stack lab).
	ClientNet, BackendNet netip.Prefix
	// V4 is the lab's IPv4 addressing, V6 its IPv6 addressing (the zero
	// Addressing unless the lab is dual-stack).
	V4, V6 Addressing
	// LBClientIf and LBBackendIf are the lb namespace's interfaces towards
	// the clients ("tslb-c0") and the backends ("tslb-b0").
	LBClientIf, LBBackendIf string

	cfg Config

	mu       sync.Mutex
	all      []*NS // every namespace created, in creation order
	backends []*Backend
	// rrServers are the request/response servers of StartRRServers.
	rrServers []*RRServer

	closeOnce sync.Once
	closeErr  error
}

// Addressing is one family's addresses of a lab.
type Addressing struct {
	// VIP and SNAT are the balancer's addresses, on-link for clients and
	// backends respectively.
	VIP, SNAT netip.Addr
	// ClientNet and BackendNet are the two subnets.
	ClientNet, BackendNet netip.Prefix
}

// IsValid reports whether a is set (a dual-stack lab's V6).
func (a Addressing) IsValid() bool { return a.VIP.IsValid() }

// Fixed lab addressing: 198.18.0.0/15 (RFC 2544) and, in dual-stack labs,
// fd00:5e18::/48 (a ULA prefix) with one /64 per segment. Host i of a
// subnet is .10+i in IPv4 and ::<10+i> (the same digits, read as hex) in
// IPv6: 198.18.1.11 and fd00:5e18:0:1::11.
var (
	vipAddr    = netip.MustParseAddr("198.18.0.100")
	snatAddr   = netip.MustParseAddr("198.18.1.100")
	clientNet  = netip.MustParsePrefix("198.18.0.0/24")
	backendNet = netip.MustParsePrefix("198.18.1.0/24")

	labV4 = Addressing{VIP: vipAddr, SNAT: snatAddr, ClientNet: clientNet, BackendNet: backendNet}
	labV6 = Addressing{
		VIP:        netip.MustParseAddr("fd00:5e18::100"),
		SNAT:       netip.MustParseAddr("fd00:5e18:0:1::100"),
		ClientNet:  netip.MustParsePrefix("fd00:5e18::/64"),
		BackendNet: netip.MustParsePrefix("fd00:5e18:0:1::/64"),
	}
)

// IPv6Prefix is the ULA prefix of every IPv6 address of the labs.
var IPv6Prefix = netip.MustParsePrefix("fd00:5e18::/48")

// Interface names. Only namespace names derive from the prefix; interface
// names live inside the lab namespaces and never collide with the host's.
const (
	lbClientIf  = "tslb-c0"
	lbBackendIf = "tslb-b0"
	hostIf      = "eth0"
	clientBr    = "brc"
	backendBr   = "brb"
	swLBClient  = "lbc"
	swLBBackend = "lbb"
	maxHosts    = 89 // .11 .. .99: below the .100 VIP/SNAT
	maxPrefix   = 24
	netnsDir    = "/run/netns"
)

// testHookStep, if set, is called with the lab prefix after each build
// step of New; an error aborts New. Tests use it to inject failures
// halfway. It is set only before any lab is built.
var testHookStep func(prefix, step string) error

// New builds a lab. On any error it tears down everything it built and
// returns the error.
func New(cfg Config) (*Lab, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	l := &Lab{
		Prefix:      cfg.Prefix,
		LBClientIf:  lbClientIf,
		LBBackendIf: lbBackendIf,
		cfg:         cfg,
	}
	l.setAddressing(cfg.IPv6)
	if err := l.build(); err != nil {
		if cerr := l.Close(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("lab: teardown after failed build: %w", cerr))
		}
		return nil, err
	}
	return l, nil
}

// setAddressing sets the lab's addressing fields for an IPv4-only or a
// dual-stack lab.
func (l *Lab) setAddressing(dual bool) {
	l.V4 = labV4
	p := labV4
	if dual {
		l.V6 = labV6
		p = labV6
	}
	l.VIP, l.SNAT, l.ClientNet, l.BackendNet = p.VIP, p.SNAT, p.ClientNet, p.BackendNet
}

// IPv6 reports whether the lab is dual-stack with IPv6 as its primary
// family (Config.IPv6).
func (l *Lab) IPv6() bool { return l.V6.IsValid() }

// withDefaults validates c and fills in defaults.
func (c Config) withDefaults() (Config, error) {
	if c.Prefix == "" {
		var b [2]byte
		if _, err := rand.Read(b[:]); err != nil {
			return c, fmt.Errorf("lab: random prefix: %w", err)
		}
		c.Prefix = "tslbt" + hex.EncodeToString(b[:])
	}
	if err := checkPrefix(c.Prefix); err != nil {
		return c, err
	}
	if c.Clients == 0 {
		c.Clients = 1
	}
	if c.Backends == 0 {
		c.Backends = 3
	}
	if c.Clients < 0 || c.Clients > maxHosts {
		return c, fmt.Errorf("lab: Clients=%d out of range 1..%d", c.Clients, maxHosts)
	}
	if c.Backends < 0 || c.Backends > maxHosts {
		return c, fmt.Errorf("lab: Backends=%d out of range 1..%d", c.Backends, maxHosts)
	}
	switch c.Mode {
	case ModeUserspace, ModeKernelNAT:
	default:
		return c, fmt.Errorf("lab: invalid mode %v", c.Mode)
	}
	n := &c.NAT
	if n.VIPPort == 0 {
		n.VIPPort = 80
	}
	if n.BackendPort == 0 {
		n.BackendPort = 8080
	}
	if n.PortMin == 0 {
		n.PortMin = 20000
	}
	if n.PortMax == 0 {
		n.PortMax = 60999
	}
	for _, p := range n.ExtraPorts {
		if p.VIPPort == 0 || p.BackendPort == 0 || p.VIPPort == n.VIPPort {
			return c, fmt.Errorf("lab: NAT extra port %d->%d: ports must be nonzero and differ from VIPPort %d", p.VIPPort, p.BackendPort, n.VIPPort)
		}
	}
	if n.PortMin > n.PortMax {
		return c, fmt.Errorf("lab: NAT port range %d-%d is empty", n.PortMin, n.PortMax)
	}
	if n.CTTimeWait < 0 || (n.CTTimeWait > 0 && n.CTTimeWait < time.Second) {
		return c, fmt.Errorf("lab: NAT CTTimeWait %v must be 0 or at least 1s", n.CTTimeWait)
	}
	return c, nil
}

// checkPrefix reports whether p is usable as a namespace name prefix. The
// dash is excluded so that Destroy(p) can never match another prefix's
// namespaces.
func checkPrefix(p string) error {
	if p == "" {
		return errors.New("lab: empty prefix")
	}
	if len(p) > maxPrefix {
		return fmt.Errorf("lab: prefix %q longer than %d characters", p, maxPrefix)
	}
	for _, r := range p {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '_':
		default:
			return fmt.Errorf("lab: prefix %q: character %q not in [A-Za-z0-9_]", p, r)
		}
	}
	return nil
}

// step runs the failure-injection hook.
func (l *Lab) step(name string) error {
	if testHookStep != nil {
		if err := testHookStep(l.Prefix, name); err != nil {
			return fmt.Errorf("lab: step %s: %w", name, err)
		}
	}
	return nil
}

// build creates all namespaces and links. Everything created is recorded
// in l.all before the next action so Close can remove it.
func (l *Lab) build() error {
	var err error
	if l.Switch, err = l.newNS("sw", netip.Addr{}, ""); err != nil {
		return err
	}
	if l.LB, err = l.newNS("lb", netip.Addr{}, ""); err != nil {
		return err
	}
	for i := 1; i <= l.cfg.Clients; i++ {
		ns, err := l.newNS(fmt.Sprintf("c%d", i), hostAddr(clientNet, i), hostIf)
		if err != nil {
			return err
		}
		l.setHostAddr6(ns, l.V6.ClientNet, i)
		l.Clients = append(l.Clients, ns)
	}
	for i := 1; i <= l.cfg.Backends; i++ {
		ns, err := l.newNS(fmt.Sprintf("b%d", i), hostAddr(backendNet, i), hostIf)
		if err != nil {
			return err
		}
		l.setHostAddr6(ns, l.V6.BackendNet, i)
		l.Backends = append(l.Backends, ns)
	}
	if err := l.step("namespaces"); err != nil {
		return err
	}

	// Quiet, uniform namespaces before any link exists: links created
	// later inherit "default".
	for _, ns := range l.all {
		if err := l.ipv6Sysctls(ns); err != nil {
			return err
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
	if err := l.step("sysctls"); err != nil {
		return err
	}

	if err := l.Switch.bridgeNetfilterOff(); err != nil {
		return err
	}
	brc, err := l.Switch.addBridge(clientBr, l.IPv6())
	if err != nil {
		return err
	}
	brb, err := l.Switch.addBridge(backendBr, l.IPv6())
	if err != nil {
		return err
	}
	if err := l.step("bridges"); err != nil {
		return err
	}
	for i, c := range l.Clients {
		if err := l.Switch.addPort(brc, fmt.Sprintf("c%d", i+1), c, hostIf, c.prefixes(l)...); err != nil {
			return err
		}
	}
	if err := l.step("clients"); err != nil {
		return err
	}
	if err := l.Switch.addPort(brc, swLBClient, l.LB, lbClientIf); err != nil {
		return err
	}
	if err := l.Switch.addPort(brb, swLBBackend, l.LB, lbBackendIf); err != nil {
		return err
	}
	if err := l.step("lb"); err != nil {
		return err
	}
	for i, b := range l.Backends {
		if err := l.Switch.addPort(brb, fmt.Sprintf("b%d", i+1), b, hostIf, b.prefixes(l)...); err != nil {
			return err
		}
	}
	if err := l.step("backends"); err != nil {
		return err
	}
	if l.cfg.Mode == ModeKernelNAT {
		if err := l.setupKernelNAT(); err != nil {
			return err
		}
		if err := l.step("kernelnat"); err != nil {
			return err
		}
	}
	return nil
}

// hostAddr returns the address of host i (1-based) in subnet p: .10+i.
func hostAddr(p netip.Prefix, i int) netip.Addr {
	a := p.Addr().As4()
	a[3] = byte(10 + i)
	return netip.AddrFrom4(a)
}

// hostAddr6 returns the IPv6 address of host i (1-based) in the /64 p:
// ::<10+i>, the decimal digits read as hex, so that 198.18.1.11 and
// fd00:5e18:0:1::11 are the same host.
func hostAddr6(p netip.Prefix, i int) netip.Addr {
	a := p.Addr().As16()
	v := 0
	for _, d := range strconv.Itoa(10 + i) {
		v = v<<4 | int(d-'0')
	}
	a[14], a[15] = byte(v>>8), byte(v)
	return netip.AddrFrom16(a)
}

// setHostAddr6 gives ns its IPv6 address in a dual-stack lab (host i of
// p) and makes it the primary one.
func (l *Lab) setHostAddr6(ns *NS, p netip.Prefix, i int) {
	if !l.IPv6() {
		return
	}
	ns.Addr6 = hostAddr6(p, i)
	ns.Addr = ns.Addr6
}

// prefixes returns the addresses of a client or backend namespace with
// their subnets' lengths (every lab subnet is a /24 and, in IPv6, a /64):
// IPv4 and, in a dual-stack lab, IPv6.
func (n *NS) prefixes(l *Lab) []netip.Prefix {
	out := []netip.Prefix{netip.PrefixFrom(n.Addr4, l.V4.BackendNet.Bits())}
	if n.Addr6.IsValid() {
		out = append(out, netip.PrefixFrom(n.Addr6, 64))
	}
	return out
}

// ipv6Sysctls sets a namespace's IPv6 sysctls before any link exists
// (links created later inherit "default"): IPv6 off in an IPv4-only lab
// and in the switch namespace; otherwise on, without DAD (addresses are
// usable at once), router advertisements ignored, forwarding off, and in
// the lb namespace no link-local addresses.
func (l *Lab) ipv6Sysctls(ns *NS) error {
	set := func(kv ...string) error {
		for i := 0; i < len(kv); i += 2 {
			for _, scope := range []string{"all", "default"} {
				if err := ns.Sysctl("net.ipv6.conf."+scope+"."+kv[i], kv[i+1]); err != nil {
					return err
				}
			}
		}
		return nil
	}
	if !l.IPv6() || ns == l.Switch {
		return set("disable_ipv6", "1")
	}
	if err := set("disable_ipv6", "0", "accept_dad", "0", "accept_ra", "0", "forwarding", "0"); err != nil {
		return err
	}
	if ns == l.LB {
		return ns.Sysctl("net.ipv6.conf.default.addr_gen_mode", "1")
	}
	return nil
}

// newNS creates the named namespace <prefix>-<suffix> and records it.
func (l *Lab) newNS(suffix string, addr netip.Addr, ifname string) (*NS, error) {
	name := l.Prefix + "-" + suffix
	h, err := createNamedNS(name)
	if err != nil {
		return nil, err
	}
	ns := &NS{Name: name, Addr: addr, Addr4: addr, If: ifname, handle: h}
	l.mu.Lock()
	l.all = append(l.all, ns)
	l.mu.Unlock()
	ns.nl, err = netlink.NewHandleAt(h)
	if err != nil {
		return nil, fmt.Errorf("lab: netlink handle in %s: %w", name, err)
	}
	return ns, nil
}

// createNamedNS creates a network namespace pinned at /run/netns/name (as
// `ip netns add` does) and returns an open handle to it. The calling
// goroutine's namespace is not changed: the work happens on a separate
// locked thread that is discarded if it cannot be switched back.
func createNamedNS(name string) (netns.NsHandle, error) {
	if err := os.MkdirAll(netnsDir, 0o755); err != nil {
		return netns.None(), fmt.Errorf("lab: %w", err)
	}
	p := filepath.Join(netnsDir, name)
	f, err := os.OpenFile(p, os.O_CREATE|os.O_EXCL|os.O_RDONLY, 0o444)
	if err != nil {
		return netns.None(), fmt.Errorf("lab: create namespace %s: %w", name, err)
	}
	f.Close()

	type result struct {
		h   netns.NsHandle
		err error
	}
	rc := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			rc <- result{netns.None(), err}
			return
		}
		defer orig.Close()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			rc <- result{netns.None(), fmt.Errorf("unshare: %w", err)}
			return
		}
		var r result
		self := fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid())
		if err := unix.Mount(self, p, "none", unix.MS_BIND, ""); err != nil {
			r.err = fmt.Errorf("bind mount: %w", err)
		} else if r.h, err = netns.GetFromPath(p); err != nil {
			r.err = err
		}
		if err := netns.Set(orig); err != nil {
			r.err = errors.Join(r.err, fmt.Errorf("restore netns: %w", err))
			rc <- r // thread stays locked and dies with the goroutine
			return
		}
		runtime.UnlockOSThread()
		rc <- r
	}()
	r := <-rc
	if r.err != nil {
		if r.h.IsOpen() {
			r.h.Close()
		}
		removeNamedNS(name)
		return netns.None(), fmt.Errorf("lab: create namespace %s: %w", name, r.err)
	}
	return r.h, nil
}

// removeNamedNS unmounts and removes /run/netns/name. A missing name is
// not an error.
func removeNamedNS(name string) error {
	p := filepath.Join(netnsDir, name)
	uerr := unix.Unmount(p, unix.MNT_DETACH)
	if err := os.Remove(p); err != nil {
		if os.IsNotExist(err) {
			return nil
		}
		if uerr != nil && !errors.Is(uerr, unix.EINVAL) {
			return fmt.Errorf("lab: delete namespace %s: %w", name, errors.Join(uerr, err))
		}
		return fmt.Errorf("lab: delete namespace %s: %w", name, err)
	}
	return nil
}

// addBridge creates an up bridge in n, without multicast snooping if
// noSnooping is set.
func (n *NS) addBridge(name string, noSnooping bool) (netlink.Link, error) {
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: name}}
	if noSnooping {
		off := false
		br.MulticastSnooping = &off
	}
	if err := n.nl.LinkAdd(br); err != nil {
		return nil, fmt.Errorf("lab: bridge %s in %s: %w", name, n.Name, err)
	}
	link, err := n.Link(name)
	if err != nil {
		return nil, err
	}
	if err := n.nl.LinkSetUp(link); err != nil {
		return nil, fmt.Errorf("lab: bridge %s up in %s: %w", name, n.Name, err)
	}
	return link, nil
}

// addPort creates a veth pair: swName in n (the switch namespace),
// enslaved to br, and peerName inside peer, with the addresses addrs.
// Both ends are brought up. The peer end is created directly inside
// peer, so no interface ever appears in the host namespace.
func (n *NS) addPort(br netlink.Link, swName string, peer *NS, peerName string, addrs ...netip.Prefix) error {
	veth := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: swName, MasterIndex: br.Attrs().Index},
		PeerName:      peerName,
		PeerNamespace: netlink.NsFd(int(peer.handle)),
	}
	if err := n.nl.LinkAdd(veth); err != nil {
		return fmt.Errorf("lab: veth %s/%s:%s: %w", n.Name, peer.Name, peerName, err)
	}
	sw, err := n.Link(swName)
	if err != nil {
		return err
	}
	if err := n.nl.LinkSetUp(sw); err != nil {
		return fmt.Errorf("lab: %s up in %s: %w", swName, n.Name, err)
	}
	pl, err := peer.Link(peerName)
	if err != nil {
		return err
	}
	for _, addr := range addrs {
		if err := peer.addAddr(pl, addr); err != nil {
			return err
		}
	}
	if err := peer.nl.LinkSetUp(pl); err != nil {
		return fmt.Errorf("lab: %s up in %s: %w", peerName, peer.Name, err)
	}
	return nil
}

// addAddr adds addr to link; IPv6 addresses without duplicate address
// detection (IFA_F_NODAD), so that they are usable at once.
func (n *NS) addAddr(link netlink.Link, addr netip.Prefix) error {
	a := &netlink.Addr{IPNet: &net.IPNet{
		IP:   net.IP(addr.Addr().AsSlice()),
		Mask: net.CIDRMask(addr.Bits(), addr.Addr().BitLen()),
	}}
	if addr.Addr().Is6() {
		a.Flags = unix.IFA_F_NODAD
	}
	if err := n.nl.AddrAdd(link, a); err != nil {
		return fmt.Errorf("lab: address %v on %s in %s: %w", addr, link.Attrs().Name, n.Name, err)
	}
	return nil
}

// Close stops the lab's backend servers (HTTP and request/response) and
// captures and removes every namespace the lab created. It is idempotent
// and safe on a partially built lab; later calls return the first call's
// error.
//
// The kernel frees a namespace, and the veth pairs in it, once nothing
// refers to it: processes started with NS.Command and sockets the caller
// still holds (from Listen or DialContext) keep an unnamed namespace alive
// until they exit or are closed. The names are gone either way.
func (l *Lab) Close() error {
	l.closeOnce.Do(func() {
		var errs []error
		l.mu.Lock()
		bs := l.backends
		l.backends = nil
		rs := l.rrServers
		l.rrServers = nil
		all := l.all
		l.all = nil
		l.mu.Unlock()
		for _, b := range bs {
			if err := b.Close(); err != nil {
				errs = append(errs, err)
			}
		}
		for _, s := range rs {
			if err := s.Close(); err != nil {
				errs = append(errs, err)
			}
		}
		for _, ns := range all {
			ns.stopCaptures()
			ns.close()
			if err := removeNamedNS(ns.Name); err != nil {
				errs = append(errs, err)
			}
		}
		l.closeErr = errors.Join(errs...)
	})
	return l.closeErr
}

// Namespaces returns the names of the existing namespaces whose names
// start with prefix followed by "-", sorted as the directory lists them.
func Namespaces(prefix string) ([]string, error) {
	if err := checkPrefix(prefix); err != nil {
		return nil, err
	}
	ents, err := os.ReadDir(netnsDir)
	if err != nil {
		if os.IsNotExist(err) {
			return nil, nil
		}
		return nil, fmt.Errorf("lab: %w", err)
	}
	var out []string
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), prefix+"-") {
			out = append(out, e.Name())
		}
	}
	return out, nil
}

// Destroy removes every namespace named prefix-*, for cleaning up after a
// crashed process (`tslb lab down`). It refuses an empty or invalid prefix.
// Links inside those namespaces disappear with them.
func Destroy(prefix string) error {
	names, err := Namespaces(prefix)
	if err != nil {
		return err
	}
	var errs []error
	for _, n := range names {
		if err := removeNamedNS(n); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Attach returns a Lab for the namespaces prefix-* built earlier by New,
// possibly in another process (e.g. `tslb lab up`). It opens the
// namespaces; it does not check or change their configuration. Close on the
// returned Lab removes the namespaces, as for a Lab from New.
func Attach(prefix string) (*Lab, error) {
	names, err := Namespaces(prefix)
	if err != nil {
		return nil, err
	}
	have := make(map[string]bool, len(names))
	for _, n := range names {
		have[n] = true
	}
	if !have[prefix+"-sw"] || !have[prefix+"-lb"] {
		return nil, fmt.Errorf("lab: no lab with prefix %q (need %s-sw and %s-lb)", prefix, prefix, prefix)
	}
	l := &Lab{
		Prefix:      prefix,
		LBClientIf:  lbClientIf,
		LBBackendIf: lbBackendIf,
	}
	l.setAddressing(false)
	open := func(suffix string, addr netip.Addr, ifname string) (*NS, error) {
		name := prefix + "-" + suffix
		h, err := netns.GetFromPath(filepath.Join(netnsDir, name))
		if err != nil {
			return nil, fmt.Errorf("lab: open namespace %s: %w", name, err)
		}
		nl, err := netlink.NewHandleAt(h)
		if err != nil {
			h.Close()
			return nil, fmt.Errorf("lab: netlink handle in %s: %w", name, err)
		}
		ns := &NS{Name: name, Addr: addr, Addr4: addr, If: ifname, handle: h, nl: nl}
		l.all = append(l.all, ns)
		return ns, nil
	}
	fail := func(err error) (*Lab, error) {
		for _, ns := range l.all {
			ns.close()
		}
		return nil, err
	}
	if l.Switch, err = open("sw", netip.Addr{}, ""); err != nil {
		return fail(err)
	}
	if l.LB, err = open("lb", netip.Addr{}, ""); err != nil {
		return fail(err)
	}
	for i := 1; i <= maxHosts && have[fmt.Sprintf("%s-c%d", prefix, i)]; i++ {
		ns, err := open(fmt.Sprintf("c%d", i), hostAddr(clientNet, i), hostIf)
		if err != nil {
			return fail(err)
		}
		l.Clients = append(l.Clients, ns)
	}
	for i := 1; i <= maxHosts && have[fmt.Sprintf("%s-b%d", prefix, i)]; i++ {
		ns, err := open(fmt.Sprintf("b%d", i), hostAddr(backendNet, i), hostIf)
		if err != nil {
			return fail(err)
		}
		l.Backends = append(l.Backends, ns)
	}
	return l, nil
}
