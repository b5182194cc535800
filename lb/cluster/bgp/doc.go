// Package bgp announces a tslb instance's VIPs to its upstream routers: a
// BGP speaker embedding GoBGP (github.com/osrg/gobgp/v4) as a library.
//
// A Speaker holds one BGP instance (local ASN, router ID, the instance's
// front kernel address as session source and listen address) and its
// peers. Announce adds a /32 (any prefix) with a next hop, Withdraw
// removes it, Stop withdraws everything, waits (bounded) until no peer
// still has a route in its Adj-RIB-Out, and closes every session with a
// Cease NOTIFICATION. The speaker imports nothing: a global import policy
// rejects every route a peer sends, and Peers counts what was received
// and rejected.
//
// Why GoBGP v4 (v4.8.0) rather than v3 (v3.37.0): v4 has single-hop BFD
// (RFC 5880/5881: asynchronous mode, per-peer timers, a BGP hard reset
// when BFD goes down; no authentication, echo or demand mode), logs with
// log/slog like tslb (v3 uses logrus), and its path API takes
// netip-based Go values (apiutil.Path) instead of protobuf Any
// attributes. Both pull in gRPC and protobuf as library dependencies; no
// gRPC server is started (no GrpcListenAddress).
//
// What it owns: the GoBGP server and its goroutines (Start starts them,
// Stop ends them); the TCP sessions use the kernel stack of the process's
// network namespace (tslb's), so the kernel must own LocalAddress. It does
// not decide what to announce or when: the caller (tslb's cluster glue)
// announces a VIP while the instance is healthy and ready
// (cluster.Members.Ready) and withdraws it on drain, stop, or when the
// VIP's service has no healthy backend.
package bgp
