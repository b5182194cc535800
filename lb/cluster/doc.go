// Package cluster is the pure part of running several tslb instances
// behind one router that spreads clients over them with ECMP: who the
// members are, which of them are alive, which one owns a flow, and the
// heartbeat frames that tell them apart. Its sub-package bgp announces the
// VIPs to the router.
//
// The design (README "Cluster"):
//
//   - every instance announces each VIP as a /32 with BGP while it is
//     healthy, next hop its own kernel address on the front segment it
//     shares with the router; the router hashes clients over the instances
//     with L4 ECMP;
//   - every instance owns disjoint SNAT addresses, so return traffic from
//     the backends reaches the instance that created the flow directly;
//   - the owner of a flow is the same on every instance: Maglev over the
//     live, non-draining members, keyed by a hash of the client tuple that
//     does not depend on the instance ([TupleHash]); an instance that gets a
//     client frame it does not own forwards it at L2 to the owner's MAC;
//   - after a membership change every instance keeps the previous table
//     too, and a non-SYN frame for a flow its current owner does not hold
//     gets a second chance at the previous owner ([Snapshot.Decide]);
//   - members find each other with heartbeat frames on the front segment
//     (EtherType 0x88B5, every 500 ms; a member silent for 2 s is dead).
//
// What it owns: the membership state machine ([Members]: Observe a parsed
// heartbeat, Tick the clock, publish immutable [Snapshot]s), the Maglev
// table over member IDs ([View.Owner]), the forwarding decision for one
// client frame ([Snapshot.Decide]), the heartbeat frame codec
// ([AppendHeartbeat], [ParseHeartbeat]) and the tuple hash.
//
// What it may not touch: sockets, links and frames of the datapath (the
// datapath reads heartbeat frames off its front link, hands them to
// ParseHeartbeat and Members.Observe, and sends the frames
// AppendHeartbeat builds), the flow table (Decide is told whether the
// flow is held), package lb (it imports neither lb nor config: the caller
// translates configuration into [Config]) and clocks: every time is an
// int64 of nanoseconds passed in by the caller, so tests run on a fake
// clock.
//
// Per-frame cost. ParseHeartbeat, Members.Observe in the steady state (a
// heartbeat that changes nothing), Snapshot.Decide, View.Owner and
// TupleHash allocate nothing; a Snapshot is read with one atomic load.
// Only a change of membership builds a new Maglev table (measured in the
// README) and allocates.
//
// Heartbeats are not authenticated: the front segment is trusted, as for
// VRRP without authentication. A heartbeat is accepted only from a
// configured member ID and that member's configured MAC, for this
// cluster's ID.
package cluster
