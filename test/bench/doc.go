// Package bench is the harness behind `tslb bench`: it runs one workload
// through several load balancers, one after another, each in a fresh
// network-namespace lab (package lab) of the same shape, and reports them
// side by side.
//
// Balancers (cells):
//
//	nft-strip          nftables DNAT+SNAT in the lb namespace, TCP timestamp
//	                   option removed from client SYNs, conntrack TIME_WAIT
//	                   timeout Config.CTTimeWait
//	nft-pass           the same without touching timestamps
//	haproxy            HAProxy (Debian package) in mode tcp, a full proxy
//	tslb-strip         tslb, timestamps: strip (its real strip mode, ISN
//	                   translation on)
//	tslb-pass          tslb, timestamps: passthrough
//	tslb-rewrite       tslb, timestamps: rewrite
//	tslb-strip-broken  tslb made into a naive stripping balancer: strip, no
//	                   ISN translation, exhaustion: reuse, no repair
//	direct             no balancer: extra namespaces on the backends' bridge
//	                   connect to the backends directly; it measures the
//	                   load generator itself
//
// Every figure comes from what the clients saw (connect results and times,
// measured by the in-tree load generator on raw non-blocking sockets) and
// from a packet capture on the switch port between the balancer and the
// backends, decoded with gopacket. tslb's own detector counters are
// reported beside them for tslb cells, never instead of them.
//
// Each cell runs four phases: an open-loop run (Config.Conns new
// connections at Config.Rate per second, one HTTP/1.1 GET each, the server
// closes first, captured), a closed-loop run (Config.Workers connections in
// flight for Config.ClosedFor: the maximum request rate), a bulk run (one
// download for Config.BulkFor: Gbit/s) and, last, a request/response run
// (Config.RRConns connections opened first, each then carrying one
// Config.RRSize-byte request and its answer at a time for Config.RRFor,
// TCP_NODELAY on both ends, like netperf TCP_RR: transactions per second
// and balancer CPU per transaction, i.e. the per-packet cost). The
// request/response run uses a service of its own (VIP port 81 to
// lab.RRServer on backend port 8081), so it never meets the TIME_WAIT the
// HTTP phases leave on port 8080.
//
// CPU is measured per phase: utime+stime of the processes in the lb
// namespace (tslb, haproxy) and the system-wide softirq time, from /proc.
// For the request/response run the balancer's CPU per transaction is its
// process CPU divided by the transactions; for nftables, whose work is
// softirq, it is the cell's softirq per transaction minus the direct
// cell's, which needs a direct cell in the same run (RRMethodSoftirq).
//
// Results are written as results.md, results.json (schema SchemaVersion,
// described on Report) and connect-latency.svg.
package bench
