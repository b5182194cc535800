// Package lb is the running balancer: the model (services, backends,
// schedulers, health checks, the immutable configuration snapshot) and the
// datapath workers that forward frames between tslb's links.
//
// Ownership. Balancer (balancer.go) owns every goroutine: one worker per
// datapath.workers (worker.go), a housekeeping loop, the health checkers
// (health.go). A worker is handed what it needs and nothing else: its own
// queue on every link (package lb/link, one PACKET_FANOUT member each), its
// own flow table (flows.go), its own share of the SNAT ports with their
// TIME_WAIT ledger (pools.go, package lb/snat), its own counters
// (metrics.go), and read-only access to what all workers share (shared:
// the snapshot behind an atomic pointer, the links' addresses and
// neighbour tables, the clock). Nothing a worker touches per packet is
// written by another goroutine, so the per-packet path takes no lock
// another worker contends:
//
//   - the links' fanout programs steer a client's frames by a hash of its
//     tuple and a backend's frames by the SNAT port (a link with SNAT
//     addresses compares each frame's destination with them, so a one-arm
//     link carrying both is steered right: link.SteerSplit), and worker w owns the
//     ports p with p % workers == w, so both directions of a flow reach the
//     worker that created it (ownership is checked per frame; a frame that
//     reached another worker is handed over through the owner's mailbox
//     and counted);
//   - a pool shard's mutex is taken per new or finished flow, only ever
//     contended by a metrics scrape, a reload or the state file;
//   - the neighbour tables are copy-on-write maps behind atomic pointers,
//     written only when ARP teaches something new.
//
// It may not reach into config files, sockets or the network namespace
// itself: configuration arrives as a validated *config.Config, frames
// through lb/link queues opened by Options.Open.
package lb
