package lab

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"
)

func TestHostAddr6(t *testing.T) {
	for _, tc := range []struct {
		p    netip.Prefix
		i    int
		want string
	}{
		{labV6.ClientNet, 1, "fd00:5e18::11"},
		{labV6.BackendNet, 3, "fd00:5e18:0:1::13"},
		{labV6.BackendNet, 89, "fd00:5e18:0:1::99"},
	} {
		if got := hostAddr6(tc.p, tc.i); got.String() != tc.want {
			t.Errorf("hostAddr6(%v, %d) = %v, want %s", tc.p, tc.i, got, tc.want)
		}
	}
	if got := RoutedNet(1); got.String() != "fd00:5e18:0:11::/64" || !IPv6Prefix.Contains(got.Addr()) {
		t.Errorf("RoutedNet(1) = %v, want fd00:5e18:0:11::/64", got)
	}
	if !IPv6Prefix.Contains(labV6.VIP) || !IPv6Prefix.Contains(labV6.SNAT) {
		t.Errorf("VIP %v or SNAT %v outside %v", labV6.VIP, labV6.SNAT, IPv6Prefix)
	}
}

// TestDualStackTopology: a dual-stack userspace lab has IPv6 as its
// primary family, IPv4 still configured, addresses usable at once (no
// DAD), no IPv6 address at all in the lb namespace, forwarding off, and
// IPv6 working on each bridge but not routed between them.
func TestDualStackTopology(t *testing.T) {
	t.Parallel()
	l := NewT(t, Config{Clients: 2, Backends: 2, IPv6: true})
	if !l.IPv6() || l.VIP != netip.MustParseAddr("fd00:5e18::100") || l.SNAT != netip.MustParseAddr("fd00:5e18:0:1::100") ||
		l.V4.VIP != netip.MustParseAddr("198.18.0.100") || l.BackendNet != netip.MustParsePrefix("fd00:5e18:0:1::/64") {
		t.Fatalf("addressing: VIP %v SNAT %v V4 %+v V6 %+v", l.VIP, l.SNAT, l.V4, l.V6)
	}
	for _, h := range []struct {
		ns         *NS
		want4, six string
	}{
		{l.Clients[1], "198.18.0.12/24", "fd00:5e18::12/64"},
		{l.Backends[0], "198.18.1.11/24", "fd00:5e18:0:1::11/64"},
	} {
		as4, err := h.ns.Addrs("eth0")
		if err != nil {
			t.Fatal(err)
		}
		as6, err := h.ns.Addrs6("eth0")
		if err != nil {
			t.Fatal(err)
		}
		var global []string
		for _, a := range as6 {
			if !a.Addr().IsLinkLocalUnicast() {
				global = append(global, a.String())
			}
		}
		if len(as4) != 1 || as4[0].String() != h.want4 || len(global) != 1 || global[0] != h.six ||
			h.ns.Addr.String()+"/64" != h.six || h.ns.Addr6 != h.ns.Addr || h.ns.Addr4 != as4[0].Addr() {
			t.Errorf("%s: IPv4 %v, IPv6 %v (Addr %v Addr4 %v Addr6 %v), want %s and %s", h.ns.Name, as4, as6, h.ns.Addr, h.ns.Addr4, h.ns.Addr6, h.want4, h.six)
		}
	}
	for _, ifname := range []string{l.LBClientIf, l.LBBackendIf} {
		if as, err := l.LB.Addrs6(ifname); err != nil || len(as) != 0 {
			t.Errorf("lb %s: IPv6 addresses %v (%v), want none: tslb owns the VIP and SNAT addresses", ifname, as, err)
		}
	}
	for _, c := range []struct {
		ns        *NS
		key, want string
	}{
		{l.LB, "net.ipv6.conf.all.forwarding", "0"},
		{l.LB, "net.ipv4.ip_forward", "0"},
		{l.LB, "net.ipv6.conf.tslb-b0.addr_gen_mode", "1"},
		{l.LB, "net.ipv6.conf.tslb-c0.disable_ipv6", "0"},
		{l.Clients[0], "net.ipv6.conf.eth0.accept_dad", "0"},
		{l.Clients[0], "net.ipv6.conf.eth0.accept_ra", "0"},
		{l.Backends[1], "net.ipv6.conf.all.forwarding", "0"},
		{l.Switch, "net.ipv6.conf.all.disable_ipv6", "1"},
	} {
		if v, err := c.ns.ReadSysctl(c.key); err != nil || v != c.want {
			t.Errorf("%s: %s = %q (%v), want %s", c.ns.Name, c.key, v, err, c.want)
		}
	}

	// IPv6 works across a bridge at once (c1 -> c2), not between subnets.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	checkL2(ctx, t, l, "tcp", "fd00:5e18::12", "fd00:5e18::11", "fd00:5e18:0:1::11", "-6")
}

// TestKernelNAT6: the dual-stack kernel peer balancer NATs IPv6 (table
// ip6) and IPv4 (table ip): requests to both VIPs arrive from the SNAT
// address of their family; StopKernelNAT removes both tables.
func TestKernelNAT6(t *testing.T) {
	t.Parallel()
	l := NewT(t, Config{Clients: 1, Backends: 2, Mode: ModeKernelNAT, IPv6: true})
	bs, err := l.StartBackends(ServerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if bs[1].Addr != netip.MustParseAddrPort("[fd00:5e18:0:1::12]:8080") {
		t.Fatalf("backend 2 listens on %v", bs[1].Addr)
	}
	if v, err := l.LB.ReadSysctl("net.ipv6.conf.all.forwarding"); v != "1" {
		t.Errorf("lb IPv6 forwarding = %q (%v)", v, err)
	}
	ctx := context.Background()
	r := Requests(ctx, l.Clients, "http://[fd00:5e18::100]/", 40, 4, 5*time.Second, 30*time.Second, false)
	if r.OK != 40 || len(r.ByBackend) != 2 {
		t.Fatalf("IPv6 requests: OK=%d errors %d %v, by backend %v", r.OK, r.Errors, r.FirstErrors, r.ByBackend)
	}
	for _, b := range bs {
		if ips := b.RemoteIPs(); len(ips) != 1 || ips[l.SNAT] != b.Requests() {
			t.Errorf("%s saw sources %v, want only %v", b.ID, ips, l.SNAT)
		}
	}
	// The IPv4 side of the dual-stack lab: the backends listen on one
	// address only, so dial the IPv4 VIP and expect the kernel's answer
	// (a refused connect from the backend through the NAT), not silence.
	dctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	_, err = l.Clients[0].DialContext(dctx, "tcp", "198.18.0.100:80")
	if err == nil || !strings.Contains(err.Error(), "refused") {
		t.Errorf("IPv4 VIP: dial error %v, want connection refused by the backend", err)
	}
	if err := l.StopKernelNAT(); err != nil {
		t.Fatal(err)
	}
	out, err := l.LB.Command(ctx, "nft", "list", "tables").CombinedOutput()
	if err != nil || strings.Contains(string(out), NATTable) {
		t.Errorf("after StopKernelNAT: nft list tables: %v %q", err, out)
	}
}
