// Package lab builds network-namespace labs in which tslb is tested end to
// end against real Linux TCP stacks.
//
// A lab is a set of network namespaces joined by veth pairs and two bridges
// in a switch namespace. Every name derives from Config.Prefix (default
// "tslbt" plus four random hex digits, so concurrent labs never collide):
//
//	client ns  <P>-c1..cN : eth0 198.18.0.(10+i)/24 ----+
//	                                                     brc (bridge in switch ns <P>-sw)
//	lb ns      <P>-lb     : tslb-c0 (no address) -------+
//	                        tslb-b0 (no address) -------+
//	                                                     brb (bridge in <P>-sw)
//	backend ns <P>-b1..bM : eth0 198.18.1.(10+i)/24 ----+
//
// The VIP 198.18.0.100 is on-link for the clients and the SNAT address
// 198.18.1.100 for the backends. In ModeUserspace (the default) both are
// owned by a userspace balancer in the lb namespace, which answers ARP
// itself: the lb namespace has no addresses on tslb-c0/tslb-b0 and
// net.ipv4.ip_forward=0, so its kernel neither answers nor forwards. In
// ModeKernelNAT the lb namespace is the peer balancer used for
// comparisons: it owns both addresses, forwards, and runs an nftables
// table "tslbpeer" that DNATs VIP:port (and NATConfig.ExtraPorts) to the
// backends round-robin and SNATs to 198.18.1.100 with a given port range,
// optionally stripping the TCP timestamp option from SYNs.
//
// Servers run in-process, listening inside the backend namespaces:
// Lab.StartBackends starts an HTTP server per backend (Backend),
// Lab.StartRRServers a request/response server (RRServer: fixed-size
// requests, each answered at once, one epoll loop per backend) for
// per-packet measurements.
//
// Every lab namespace has IPv6 disabled (to keep the wire quiet) and its
// loopback up (tslb's metrics listen on 127.0.0.1 in the lb namespace),
// unless Config.IPv6 builds a dual-stack lab: clients and backends then
// also get fd00:5e18::(10+i)/64 and fd00:5e18:0:1::(10+i)/64 (the VIP
// fd00:5e18::100, the SNAT address fd00:5e18:0:1::100; Lab.V4 and Lab.V6
// hold each family's addressing, and the Lab's VIP, SNAT and NS.Addr are
// IPv6), without DAD or router advertisements; the lb namespace gets no
// IPv6 address (not even link-local) and forwards nothing, and in
// ModeKernelNAT a table ip6 "tslbpeer" NATs IPv6 as the ip one does IPv4.
// Lab.RouteBackend puts an IPv6 router with a smaller MTU in front of a
// backend, for path-MTU tests.
// Offloads stay at the kernel defaults — veth TSO, GSO and checksum offload
// on — because the balancer must cope with them; NS.SetOffloads exists only
// as a documented fallback.
//
// Rules the package keeps:
//   - traffic flows only between namespaces the lab creates, over veth pairs
//     whose ends are created directly inside lab namespaces;
//   - addresses come only from 198.18.0.0/15 (RFC 2544 benchmarking) and
//     the ULA prefix fd00:5e18::/48 (IPv6Prefix);
//   - the host's (root namespace's) interfaces, routes, sysctls and
//     firewall are never touched: NS.Sysctl accepts only per-namespace net.*
//     keys and runs on a thread switched into the namespace;
//   - every namespace is removed by Lab.Close, including when New fails
//     halfway; Destroy(prefix) removes leftovers after a crash, and
//     Attach(prefix) reopens a lab left up by another process;
//   - loops are bounded (request counts, capture sizes, timeouts).
//
// Code that must run inside a namespace uses NS.Do, which locks a fresh
// goroutine to its OS thread, switches it with setns and switches it back;
// if switching back fails the goroutine exits still locked so the runtime
// discards the thread. Netlink work uses netlink.NewHandleAt and needs no
// thread switching.
//
// Tests call NewT, which calls Require: without root or namespaces the test
// is skipped locally, but fails when CI=true, so the lab is never silently
// skipped in CI.
package lab
