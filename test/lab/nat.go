package lab

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
)

// NATTable is the name of the nftables table of the ModeKernelNAT peer
// balancer inside the lb namespace.
const NATTable = "tslbpeer"

// natRuleset returns the nft -f input for the kernel peer balancer: DNAT
// VIP:VIPPort (and every ExtraPorts entry) to the backends round-robin
// (one counter per port), SNAT everything DNATed towards
// the backends to snat with the configured port range, and optionally
// overwrite the timestamp option of client SYNs with NOPs.
func natRuleset(c NATConfig, vip, snat netip.Addr, backends []netip.Addr) string {
	var m strings.Builder
	for i, b := range backends {
		if i > 0 {
			m.WriteString(", ")
		}
		fmt.Fprintf(&m, "%d : %s", i, b)
	}
	var s strings.Builder
	fmt.Fprintf(&s, "table ip %s {\n", NATTable)
	fmt.Fprintf(&s, "  chain prerouting {\n    type nat hook prerouting priority dstnat; policy accept;\n")
	for _, p := range append([]PortMap{{c.VIPPort, c.BackendPort}}, c.ExtraPorts...) {
		fmt.Fprintf(&s, "    ip daddr %s tcp dport %d dnat to numgen inc mod %d map { %s } : %d\n",
			vip, p.VIPPort, len(backends), m.String(), p.BackendPort)
	}
	s.WriteString("  }\n")
	fmt.Fprintf(&s, "  chain postrouting {\n    type nat hook postrouting priority srcnat; policy accept;\n")
	fmt.Fprintf(&s, "    oifname %q ct status dnat meta l4proto tcp snat to %s:%d-%d\n  }\n",
		lbBackendIf, snat, c.PortMin, c.PortMax)
	if c.StripTS {
		// nft 1.0.x: "reset tcp option" replaces the option with NOPs.
		fmt.Fprintf(&s, "  chain forward {\n    type filter hook forward priority mangle; policy accept;\n")
		fmt.Fprintf(&s, "    tcp flags & (syn|ack) == syn tcp option timestamp exists reset tcp option timestamp\n  }\n")
	}
	s.WriteString("}\n")
	return s.String()
}

// setupKernelNAT turns the lb namespace into the nftables peer balancer.
func (l *Lab) setupKernelNAT() error {
	lb := l.LB
	for _, a := range []struct {
		ifname string
		addr   netip.Prefix
	}{
		{lbClientIf, netip.PrefixFrom(vipAddr, clientNet.Bits())},
		{lbBackendIf, netip.PrefixFrom(snatAddr, backendNet.Bits())},
	} {
		link, err := lb.Link(a.ifname)
		if err != nil {
			return err
		}
		na := &netlink.Addr{IPNet: &net.IPNet{IP: net.IP(a.addr.Addr().AsSlice()), Mask: net.CIDRMask(a.addr.Bits(), 32)}}
		if err := lb.nl.AddrAdd(link, na); err != nil {
			return fmt.Errorf("lab: address %v on %s in %s: %w", a.addr, a.ifname, lb.Name, err)
		}
	}
	if err := lb.Sysctl("net.ipv4.ip_forward", "1"); err != nil {
		return err
	}
	var backends []netip.Addr
	for _, b := range l.Backends {
		backends = append(backends, b.Addr)
	}
	rules := natRuleset(l.cfg.NAT, vipAddr, snatAddr, backends)
	if err := lb.nft(rules); err != nil {
		return err
	}
	if d := l.cfg.NAT.CTTimeWait; d > 0 {
		// The conntrack sysctls are per namespace and exist once the nat
		// table has pulled in conntrack for this namespace.
		secs := strconv.Itoa(int(d / time.Second))
		if err := lb.Sysctl("net.netfilter.nf_conntrack_tcp_timeout_time_wait", secs); err != nil {
			return err
		}
	}
	return nil
}

// nft loads rules with `nft -f -` inside the namespace.
func (n *NS) nft(rules string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmd := n.Command(ctx, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(rules)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("lab: nft -f in %s: %w: %s", n.Name, err, strings.TrimSpace(string(out)))
	}
	return nil
}
