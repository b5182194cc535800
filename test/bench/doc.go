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
// Each cell runs three phases: an open-loop run (Config.Conns new
// connections at Config.Rate per second, one HTTP/1.1 GET each, the server
// closes first, captured), a closed-loop run (Config.Workers connections in
// flight for Config.ClosedFor: the maximum request rate) and a bulk run (one
// download for Config.BulkFor: Gbit/s).
//
// Results are written as results.md, results.json (schema SchemaVersion,
// described on Report) and connect-latency.svg.
package bench
