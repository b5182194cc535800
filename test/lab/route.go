package lab

import (
	"context"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
)

// Interface of a routed backend's router towards its server.
const routerServerIf = "r0"

// RoutedNet returns the IPv6 subnet behind backend i (0-based) once
// RouteBackend has put a router there: fd00:5e18:0:<10+i>::/64.
func RoutedNet(i int) netip.Prefix {
	a := labV6.BackendNet.Addr().As16()
	a[6], a[7] = byte((0x10+i)>>8), byte(0x10+i)
	return netip.PrefixFrom(netip.AddrFrom16(a), 64)
}

// RouteBackend puts an IPv6 router between the balancer and backend i
// (0-based) of a dual-stack lab, for path-MTU tests: a new namespace
// <prefix>-s<i+1> (the server) hangs off backend namespace i by a veth
// pair whose router end ("r0") has MTU mtu, and backend namespace i
// forwards IPv6 between its eth0 and r0. The server is host 11 of
// RoutedNet(i) (::11, the router ::1), with a default route through the
// router that sends at most mtu-byte packets but advertises the MSS of a
// 1500-byte link (advmss 1440), so its peers send full-size segments that
// only the router's Packet Too Big can make smaller. l.Backends[i] becomes
// the server namespace; the router namespace is returned. Its address on
// the backend bridge is the server's gateway for the balancer. Call it
// before StartBackends.
func (l *Lab) RouteBackend(i, mtu int) (*NS, error) {
	if !l.IPv6() {
		return nil, fmt.Errorf("lab: RouteBackend needs a dual-stack lab (Config.IPv6)")
	}
	if i < 0 || i >= len(l.Backends) {
		return nil, fmt.Errorf("lab: no backend %d", i)
	}
	if mtu < 1280 || mtu > 1500 {
		return nil, fmt.Errorf("lab: router MTU %d out of 1280..1500", mtu)
	}
	router := l.Backends[i]
	net6 := RoutedNet(i)
	a := net6.Addr().As16()
	a[15] = 1
	gw, host := netip.AddrFrom16(a), hostAddr6(net6, 1) // ::1 and ::11
	srv, err := l.newNS(fmt.Sprintf("s%d", i+1), host, hostIf)
	if err != nil {
		return nil, err
	}
	srv.Addr6 = host
	if err := l.ipv6Sysctls(srv); err != nil {
		return nil, err
	}
	lo, err := srv.Link("lo")
	if err != nil {
		return nil, err
	}
	if err := srv.nl.LinkSetUp(lo); err != nil {
		return nil, fmt.Errorf("lab: lo up in %s: %w", srv.Name, err)
	}
	veth := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: routerServerIf, MTU: mtu},
		PeerName:      hostIf,
		PeerNamespace: netlink.NsFd(int(srv.handle)),
	}
	if err := router.nl.LinkAdd(veth); err != nil {
		return nil, fmt.Errorf("lab: veth %s/%s:%s: %w", router.Name, srv.Name, hostIf, err)
	}
	for _, end := range []struct {
		ns     *NS
		ifname string
		addr   netip.Addr
		mtu    int
	}{{router, routerServerIf, gw, mtu}, {srv, hostIf, host, 1500}} {
		link, err := end.ns.Link(end.ifname)
		if err != nil {
			return nil, err
		}
		if err := end.ns.nl.LinkSetMTU(link, end.mtu); err != nil {
			return nil, fmt.Errorf("lab: MTU %d on %s in %s: %w", end.mtu, end.ifname, end.ns.Name, err)
		}
		if err := end.ns.addAddr(link, netip.PrefixFrom(end.addr, 64)); err != nil {
			return nil, err
		}
		if err := end.ns.nl.LinkSetUp(link); err != nil {
			return nil, fmt.Errorf("lab: %s up in %s: %w", end.ifname, end.ns.Name, err)
		}
	}
	if err := router.Sysctl("net.ipv6.conf.all.forwarding", "1"); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := srv.Command(ctx, "ip", "-6", "route", "add", "default", "via", gw.String(), "dev", hostIf,
		"mtu", strconv.Itoa(mtu), "advmss", "1440").CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("lab: default route in %s: %v: %s", srv.Name, err, strings.TrimSpace(string(out)))
	}
	l.Backends[i] = srv
	return router, nil
}
