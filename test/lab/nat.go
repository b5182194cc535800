package lab

import (
	"context"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// NATTable is the name of the nftables table of the ModeKernelNAT peer
// balancer inside the lb namespace.
const NATTable = "tslbpeer"

// natRuleset returns the nft -f input for the kernel peer balancer of one
// family (vip, snat and backends all IPv4: table ip; all IPv6: table ip6):
// DNAT
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
	fam, snatTo := "ip", snat.String()
	if vip.Is6() {
		fam, snatTo = "ip6", "["+snat.String()+"]"
	}
	var s strings.Builder
	fmt.Fprintf(&s, "table %s %s {\n", fam, NATTable)
	fmt.Fprintf(&s, "  chain prerouting {\n    type nat hook prerouting priority dstnat; policy accept;\n")
	for _, p := range append([]PortMap{{c.VIPPort, c.BackendPort}}, c.ExtraPorts...) {
		fmt.Fprintf(&s, "    %s daddr %s tcp dport %d dnat to numgen inc mod %d map { %s } : %d\n",
			fam, vip, p.VIPPort, len(backends), m.String(), p.BackendPort)
	}
	s.WriteString("  }\n")
	fmt.Fprintf(&s, "  chain postrouting {\n    type nat hook postrouting priority srcnat; policy accept;\n")
	fmt.Fprintf(&s, "    oifname %q ct status dnat meta l4proto tcp snat to %s:%d-%d\n  }\n",
		lbBackendIf, snatTo, c.PortMin, c.PortMax)
	if c.StripTS {
		// nft 1.0.x: "reset tcp option" replaces the option with NOPs.
		fmt.Fprintf(&s, "  chain forward {\n    type filter hook forward priority mangle; policy accept;\n")
		fmt.Fprintf(&s, "    tcp flags & (syn|ack) == syn tcp option timestamp exists reset tcp option timestamp\n  }\n")
	}
	s.WriteString("}\n")
	return s.String()
}

// setupKernelNAT turns the lb namespace into the nftables peer balancer:
// for each of the lab's families, the VIP and SNAT addresses on its links,
// forwarding on and a table (ip, and ip6 in a dual-stack lab).
func (l *Lab) setupKernelNAT() error {
	lb := l.LB
	for _, f := range l.families() {
		for _, a := range []struct {
			ifname string
			addr   netip.Prefix
		}{
			{lbClientIf, netip.PrefixFrom(f.VIP, f.ClientNet.Bits())},
			{lbBackendIf, netip.PrefixFrom(f.SNAT, f.BackendNet.Bits())},
		} {
			link, err := lb.Link(a.ifname)
			if err != nil {
				return err
			}
			if err := lb.addAddr(link, a.addr); err != nil {
				return err
			}
		}
		var backends []netip.Addr
		for _, b := range l.Backends {
			if f.VIP.Is6() {
				backends = append(backends, b.Addr6)
			} else {
				backends = append(backends, b.Addr4)
			}
		}
		if err := lb.nft(natRuleset(l.cfg.NAT, f.VIP, f.SNAT, backends)); err != nil {
			return err
		}
	}
	if err := l.setForwarding(true); err != nil {
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

// families returns the lab's addressing per family: IPv4, and IPv6 in a
// dual-stack lab.
func (l *Lab) families() []Addressing {
	if l.IPv6() {
		return []Addressing{l.V4, l.V6}
	}
	return []Addressing{l.V4}
}

// setForwarding switches IP forwarding in the lb namespace, for every
// family of the lab.
func (l *Lab) setForwarding(on bool) error {
	v := "0"
	if on {
		v = "1"
	}
	if err := l.LB.Sysctl("net.ipv4.ip_forward", v); err != nil {
		return err
	}
	if l.IPv6() {
		return l.LB.Sysctl("net.ipv6.conf.all.forwarding", v)
	}
	return nil
}

// StopKernelNAT deletes the nftables tables of a ModeKernelNAT lab and
// turns forwarding off; the VIP and SNAT addresses stay on the lb
// namespace's links (for a proxy such as HAProxy to bind).
func (l *Lab) StopKernelNAT() error {
	for _, f := range l.families() {
		fam := "ip"
		if f.VIP.Is6() {
			fam = "ip6"
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		out, err := l.LB.Command(ctx, "nft", "delete", "table", fam, NATTable).CombinedOutput()
		cancel()
		if err != nil {
			return fmt.Errorf("lab: nft delete table %s %s: %v: %s", fam, NATTable, err, strings.TrimSpace(string(out)))
		}
	}
	return l.setForwarding(false)
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
