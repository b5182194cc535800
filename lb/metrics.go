package lb

import (
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"tslb/lb/link"
	"tslb/lb/snat"
	"tslb/nat"
)

// dropReason is why the datapath dropped a frame. Decode errors from nat
// have their own labels (nat.Reasons); these are the datapath's.
type dropReason int

const (
	dropNotOurs          dropReason = iota // IPv4 to an address tslb does not own
	dropNoService                          // TCP to a VIP on a port with no service
	dropNoFlow                             // non-SYN TCP segment with no flow
	dropUnsupportedProto                   // neither TCP nor ICMP to a VIP or SNAT address
	dropICMPUnsupported                    // ICMP type tslb does not handle
	dropICMPNoFlow                         // ICMP error quoting no known flow
	dropBadChecksum                        // ICMP echo request with a bad checksum
	dropTTLExpired                         // TTL would reach 0 when forwarded
	dropNoRoute                            // no link reaches the next hop
	dropNeighbour                          // next hop MAC unresolved (queue full or timed out)
	dropTxError                            // the link refused the frame
	dropTableFull                          // SYN refused: flow table full
	dropNoBackend                          // SYN refused: service has no usable backend
	dropSNATExhausted                      // SYN refused: no free SNAT port
	dropRSTOutOfWindow                     // RST whose seq is outside the window (RFC 5961 §3)
	dropARPNotOurs                         // ARP request for an address tslb does not own
	dropShuttingDown                       // SYN refused: tslb is stopping (SIGTERM)
	dropAfterClose                         // client segment of a finished flow whose tuple was released
	dropOwnerGone                          // frame for a flow of a worker that stopped
	dropPortZero                           // SYN from or to TCP port 0
	dropBadTCPFlags                        // SYN with FIN or RST
	dropSourceOwned                        // SYN whose source is one of tslb's addresses
	dropSourceMartian                      // SYN from 0/8, 127/8, 224/4 or 240/4
	dropSourceWrongLink                    // SYN whose source is not reachable through the link it came in on
	dropVLANTagged                         // 802.1Q/802.1ad-tagged frame on an untagged link
	dropARPSpoof                           // ARP claiming one of tslb's own addresses (not learned)
	dropHalfOpenFull                       // SYN refused: the service's half-open flows are all other workers'
	dropBadCookie                          // ACK with no flow and no valid SYN cookie
	dropProxyPending                       // client segment of a proxied flow beyond what it holds until the backend answers
	dropLinkTruncated                      // frame larger than a ring slot with no copy buffer free (lb/link Stats.Truncated)

	numDropReasons

	// dropCounted: admitSYN counted the drop itself (a nat reason).
	dropCounted dropReason = -2
)

var dropReasonNames = [numDropReasons]string{
	"not_ours", "no_service", "no_flow", "unsupported_proto", "icmp_unsupported",
	"icmp_no_flow", "bad_checksum", "ttl_expired", "no_route", "neighbour_unresolved",
	"tx_error", "table_full", "no_backend", "snat_exhausted", "rst_out_of_window",
	"arp_not_ours", "shutting_down", "after_close", "owner_gone",
	"port_zero", "bad_tcp_flags", "source_owned", "source_martian", "source_wrong_link",
	"vlan_tagged", "arp_spoof", "half_open_full", "syncookie_invalid", "synproxy_pending_full",
	"link_truncated",
}

// decodeIndex maps nat.Reason labels to their index in nat.Reasons.
var decodeIndex = func() map[string]int {
	m := make(map[string]int, len(nat.Reasons))
	for i, r := range nat.Reasons {
		m[r] = i
	}
	return m
}()

// workerCounters are one worker's per-packet counters. Only the worker
// adds to them (atomically: a scrape reads them meanwhile; an uncontended
// atomic add on a line no other core writes); the collector sums every
// worker's at scrape time, so no counter is shared by workers.
type workerCounters struct {
	drops           [numDropReasons]atomic.Uint64
	decode          []atomic.Uint64 // by index in nat.Reasons
	tsStripped      atomic.Uint64
	icmpEchoReplies atomic.Uint64
	icmpTranslated  atomic.Uint64
	handoffs        atomic.Uint64 // frames this worker handed to the owning worker
	halfOpen        atomic.Int64  // half-open flows in this worker's table
	halfOpenEvicted atomic.Uint64 // half-open flows evicted to make room
	probesSent      atomic.Uint64 // probes of tuples of unknown state (probe.go)
	probesFreed     atomic.Uint64 // ... answered with an RST: freed
	probesReset     atomic.Uint64 // ... answered with an ACK: reset, freed
	flows           atomic.Int64  // flows in this worker's table
	open            atomic.Int64  // of those, not finished (neither TIME_WAIT nor closed)
	_               [64]byte
}

func newWorkerCounters(nics int) *workerCounters {
	return &workerCounters{decode: make([]atomic.Uint64, len(nat.Reasons))}
}

func (c *workerCounters) drop(r dropReason) { c.drops[r].Add(1) }

func (c *workerCounters) dropErr(err error) {
	i, ok := decodeIndex[nat.Reason(err)]
	if !ok {
		i = decodeIndex["other"]
	}
	c.decode[i].Add(1)
}

// metrics holds the registry and the collectors of events that happen per
// flow or per control-plane action (children resolved when a
// configuration loads, never per packet). Per-packet counts are the
// workers' own (workerCounters, link.Stats), summed by datapathCollector.
type metrics struct {
	reg *prometheus.Registry

	flowsActive                              *prometheus.GaugeVec   // service
	flowsCreated                             *prometheus.CounterVec // service
	synRefused                               *prometheus.CounterVec // service, reason
	backendCreated                           *prometheus.CounterVec // service, backend
	backendActive                            *prometheus.GaugeVec   // service, backend
	flowsExpired                             [8]prometheus.Counter  // by nat.ConnState
	closedClient, closedBackend, closedReset prometheus.Counter
	arpSent                                  *prometheus.CounterVec // link, op
	kernelDropRules                          prometheus.Gauge

	exhaustion      *prometheus.CounterVec // service, outcome
	redispatched    *prometheus.CounterVec // service, reason
	syns            *prometheus.CounterVec // service
	cookies         *prometheus.CounterVec // service, result
	passiveFailures *prometheus.CounterVec // service, backend
	passiveDowns    *prometheus.CounterVec // service, backend
	collisions      *prometheus.CounterVec // backend, signature
	repairs         *prometheus.CounterVec // backend
	trEvents        [numTrEvents]prometheus.Counter

	reloads           *prometheus.CounterVec // result
	lastReloadOK      prometheus.Gauge
	lastReloadTime    prometheus.Gauge
	configVersion     prometheus.Gauge
	backendUp         *prometheus.GaugeVec   // service, backend
	healthTransitions *prometheus.CounterVec // service, backend, to
	healthChecks      *prometheus.CounterVec // service, backend, result
}

// Translation events: bad input the sequence/timestamp translation met,
// added up when a flow ends (nat.Translation counts them per flow).
const (
	trBadOptions = iota
	trNoRoom
	trUnexpectedTS
	trMissingTS
	trSACKTrimmed
	trDroppedOpts
	trSeqJumps
	numTrEvents
)

var trEventNames = [numTrEvents]string{"bad_options", "no_room", "unexpected_ts", "missing_ts", "sack_trimmed", "dropped_options", "seq_jump"}

func (m *metrics) translationEvents(x *nat.Translation) {
	for i, v := range [numTrEvents]uint32{x.BadOptions, x.NoRoom, x.UnexpectedTS, x.MissingTS, x.SACKTrimmed, x.DroppedOpts, x.SeqJumps} {
		if v > 0 {
			m.trEvents[i].Add(float64(v))
		}
	}
}

func newMetrics(b *Balancer) *metrics {
	m := &metrics{reg: prometheus.NewRegistry()}
	// The process collector reads several /proc files per scrape (stat,
	// limits, fd, netstat: about 0.2 ms); its figures change slowly, so a
	// scrape storm is answered from a copy at most a second old.
	m.reg.MustRegister(collectors.NewGoCollector(),
		newCachedCollector(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), time.Second, time.Now))
	m.kernelDropRules = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "tslb_kernel_drop_addresses",
		Help: "Addresses (VIPs, SNAT) whose packets the kernel of tslb's namespace drops at ingress after tslb's sockets took them (datapath.kernel_drop); 0 when off or not installed.",
	})
	m.reg.MustRegister(m.kernelDropRules)
	m.flowsActive = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "tslb_flows_active", Help: "Flows in the flow table, by service.",
	}, []string{"service"})
	m.flowsCreated = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tslb_flows_created_total", Help: "Flows created, by service.",
	}, []string{"service"})
	m.synRefused = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tslb_syn_refused_total", Help: "Client SYNs refused, by service and reason (table_full, no_backend, snat_exhausted).",
	}, []string{"service", "reason"})
	m.backendCreated = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tslb_backend_flows_created_total", Help: "Flows sent to each backend.",
	}, []string{"service", "backend"})
	m.backendActive = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "tslb_backend_flows_active", Help: "Flows in the table for each backend.",
	}, []string{"service", "backend"})
	expired := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tslb_flows_expired_total", Help: "Flows removed from the table by timeout, by the TCP state they were in.",
	}, []string{"state"})
	for _, s := range nat.States {
		m.flowsExpired[s] = expired.WithLabelValues(s.String())
	}
	closed := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tslb_flows_closed_total", Help: "Flows that ended with FINs or RST, by the side that closed first (client, backend) or reset.",
	}, []string{"closed_first"})
	m.closedClient, m.closedBackend, m.closedReset = closed.WithLabelValues("client"), closed.WithLabelValues("backend"), closed.WithLabelValues("reset")
	m.arpSent = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tslb_arp_sent_total", Help: "ARP frames sent, by link and op (request, reply, gratuitous).",
	}, []string{"link", "op"})
	m.exhaustion = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tslb_snat_exhaustion_total",
		Help: "Exhaustion policy decisions when no tuple could be used safely, by service and outcome: waited, wait_served, wait_timeout, rejected, reused.",
	}, []string{"service", "outcome"})
	m.syns = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tslb_syns_total", Help: "Client SYNs with no flow yet (each would make a flow or a cookie SYN-ACK), by service.",
	}, []string{"service"})
	m.cookies = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tslb_synproxy_cookies_total",
		Help: "SYN proxy cookies, by service and result: sent (a cookie SYN-ACK answered a SYN), valid (an ACK returned one: a flow was made), invalid (an ACK matched no flow and no cookie).",
	}, []string{"service", "result"})
	m.redispatched = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tslb_syn_redispatched_total",
		Help: "Client SYNs re-sent to another backend because the first refused them (rst) or did not answer within health.passive.syn_timeout (timeout), by service.",
	}, []string{"service", "reason"})
	m.passiveFailures = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tslb_backend_passive_failures_total",
		Help: "SYNs a backend refused or did not answer (passive health), by service and backend.",
	}, []string{"service", "backend"})
	m.passiveDowns = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tslb_backend_passive_downs_total",
		Help: "Times passive health took a backend out of new flows (health.passive.fall failures in a row), by service and backend.",
	}, []string{"service", "backend"})
	m.collisions = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tslb_collisions_total",
		Help: "Collision signatures seen on tslb's own flows, by backend: old_ack (SYN answered by an ACK that does not acknowledge it), rst_on_syn, syn_retransmit.",
	}, []string{"backend", "signature"})
	m.repairs = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tslb_collision_repairs_total",
		Help: "Old-ACK collisions repaired (RST to the backend with seq = its ack, SYN re-sent), by backend.",
	}, []string{"backend"})
	translation := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tslb_translation_events_total",
		Help: "Unusual input met by sequence/timestamp translation, by event (counted when the flow ends).",
	}, []string{"event"})
	for i := range m.trEvents {
		m.trEvents[i] = translation.WithLabelValues(trEventNames[i])
	}
	m.reloads = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tslb_config_reloads_total", Help: "Configuration reloads (SIGHUP, tslb reload), by result: success, failure.",
	}, []string{"result"})
	m.lastReloadOK = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "tslb_config_last_reload_successful", Help: "1 if the last reload applied, 0 if it failed (the previous configuration kept running).",
	})
	m.lastReloadTime = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "tslb_config_last_reload_timestamp_seconds", Help: "Unix time of the last successful reload.",
	})
	m.configVersion = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "tslb_config_version", Help: "Running configuration version: 0 at start, +1 per successful reload.",
	})
	m.backendUp = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "tslb_backend_up", Help: "Health of each backend with a health check: 1 up, 0 down (no new flows).",
	}, []string{"service", "backend"})
	m.healthTransitions = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tslb_backend_health_transitions_total", Help: "Health state changes, by the state entered (up, down).",
	}, []string{"service", "backend", "to"})
	m.healthChecks = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tslb_backend_health_checks_total", Help: "Health probes, by result (ok, fail).",
	}, []string{"service", "backend", "result"})
	m.lastReloadOK.Set(1)
	m.reg.MustRegister(m.flowsActive, m.flowsCreated, m.synRefused, m.backendCreated, m.backendActive,
		expired, closed, m.arpSent, m.exhaustion, m.syns, m.cookies, m.redispatched, m.passiveFailures, m.passiveDowns, m.collisions, m.repairs, translation,
		m.reloads, m.lastReloadOK, m.lastReloadTime, m.configVersion, m.backendUp, m.healthTransitions, m.healthChecks)
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "tslb_flow_table_capacity", Help: "Configured maximum number of flows (flows.max).",
	}, func() float64 { return float64(b.sh.flowsMax) }))
	m.reg.MustRegister(&datapathCollector{b: b}, &snatCollector{b: b}, &neighCollector{b: b})
	return m
}

var (
	packetsDesc = prometheus.NewDesc("tslb_link_packets_total",
		"Frames by link and direction (rx, tx). A GSO superframe counts once.", []string{"link", "direction"}, nil)
	bytesDesc = prometheus.NewDesc("tslb_link_bytes_total",
		"Ethernet bytes by link and direction (rx, tx).", []string{"link", "direction"}, nil)
	kernelPacketsDesc = prometheus.NewDesc("tslb_link_kernel_packets_total",
		"Frames the kernel handed tslb's packet sockets on the link (PACKET_STATISTICS tp_packets, summed over workers).", []string{"link"}, nil)
	kernelDropsDesc = prometheus.NewDesc("tslb_link_kernel_drops_total",
		"Frames the kernel dropped because a packet socket's ring or buffer was full (PACKET_STATISTICS tp_drops): lost before tslb saw them.", []string{"link"}, nil)
	kernelFreezeDesc = prometheus.NewDesc("tslb_link_kernel_freezes_total",
		"Times a TPACKET_V3 ring froze its queue (tp_freeze_q_cnt); 0 with TPACKET_V2 rings.", []string{"link"}, nil)
	linkDownDesc = prometheus.NewDesc("tslb_link_down_total",
		"Times the link's interface went down under tslb (ENETDOWN on its packet sockets); tslb keeps its sockets and resumes when it is up.", []string{"link"}, nil)
	copiedDesc = prometheus.NewDesc("tslb_link_copied_frames_total",
		"Received frames larger than a ring slot (GSO superframes), read through the TP_STATUS_COPY path.", []string{"link"}, nil)
	dropsDesc = prometheus.NewDesc("tslb_drops_total",
		"Frames dropped by the datapath, by reason.", []string{"reason"}, nil)
	strippedDesc = prometheus.NewDesc("tslb_timestamps_stripped_total",
		"TCP timestamp options removed (services with timestamps: strip).", nil, nil)
	echoDesc = prometheus.NewDesc("tslb_icmp_echo_replies_total",
		"ICMP echo requests to a VIP or SNAT address answered.", nil, nil)
	icmpTrDesc = prometheus.NewDesc("tslb_icmp_errors_translated_total",
		"ICMP errors about a flow translated to the other side (outer and quoted headers).", nil, nil)
	entriesDesc = prometheus.NewDesc("tslb_flow_table_entries",
		"Flows in the table, all services and workers.", nil, nil)
	workerRxDesc = prometheus.NewDesc("tslb_worker_rx_frames_total",
		"Frames received by each datapath worker, all links.", []string{"worker"}, nil)
	workerFlowsDesc = prometheus.NewDesc("tslb_worker_flows",
		"Flows in each datapath worker's table.", []string{"worker"}, nil)
	probeDesc = prometheus.NewDesc("tslb_ledger_probes_total",
		"Probes of tuples left in an unknown state by a crash (result sent), and how they ended: freed (the backend answered with an RST: it held nothing) or reset (it answered with an ACK; tslb reset its connection).",
		[]string{"result"}, nil)
	recoveredDesc = prometheus.NewDesc("tslb_ledger_recovered_tuples",
		"Tuples read back at start from the previous run's ledger files, by state: time_wait (records kept), unknown (live when tslb stopped: quarantined and probed).",
		[]string{"state"}, nil)
	halfOpenDesc = prometheus.NewDesc("tslb_half_open_flows",
		"Flows whose handshake is not complete (a SYN forwarded), all services.", nil, nil)
	evictedDesc = prometheus.NewDesc("tslb_half_open_evicted_total",
		"Half-open flows evicted to make room for a new SYN (flows.half_open_max, services[].half_open_max); their backends were reset.", nil, nil)
	handoffDesc = prometheus.NewDesc("tslb_worker_handoffs_total",
		"Frames a worker received for a flow another worker owns and handed over (fanout steering missed; ICMP errors).", []string{"worker"}, nil)
)

// datapathCollector sums the workers' counters and the queues' statistics
// at scrape time.
type datapathCollector struct{ b *Balancer }

func (c *datapathCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{packetsDesc, bytesDesc, kernelPacketsDesc, kernelDropsDesc, kernelFreezeDesc, copiedDesc, linkDownDesc,
		dropsDesc, strippedDesc, echoDesc, icmpTrDesc, entriesDesc, workerRxDesc, workerFlowsDesc, handoffDesc,
		probeDesc, recoveredDesc, halfOpenDesc, evictedDesc} {
		ch <- d
	}
}

// dropCounts sums the drops by reason: the workers' own, and those only
// the links or the shared neighbour code see (tx errors, frames the kernel
// took a VLAN tag off, frames too large for a ring slot, unresolved
// neighbours). decode is indexed like nat.Reasons.
func (b *Balancer) dropCounts() (drops [numDropReasons]uint64, decode []uint64) {
	decode = make([]uint64, len(nat.Reasons))
	for _, w := range b.workers {
		for r := range drops {
			drops[r] += w.c.drops[r].Load()
		}
		for r := range decode {
			decode[r] += w.c.decode[r].Load()
		}
	}
	for _, l := range b.sh.nics {
		for _, q := range l.queues {
			s := q.Stats()
			drops[dropTxError] += s.TxErrors
			drops[dropVLANTagged] += s.VLANTagged
			drops[dropLinkTruncated] += s.Truncated
		}
	}
	drops[dropNeighbour] += b.sh.neighDropped.Load()
	return drops, decode
}

func (c *datapathCollector) Collect(ch chan<- prometheus.Metric) {
	b := c.b
	counter := func(d *prometheus.Desc, v uint64, lv ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), lv...)
	}
	workerRx := make([]uint64, len(b.workers))
	for _, l := range b.sh.nics {
		var st link.Stats
		for w, q := range l.queues {
			s := q.Stats()
			st = st.Add(s)
			if w < len(workerRx) {
				workerRx[w] += s.RxFrames
			}
		}
		counter(packetsDesc, st.RxFrames, l.name, "rx")
		counter(packetsDesc, st.TxFrames, l.name, "tx")
		counter(bytesDesc, st.RxBytes, l.name, "rx")
		counter(bytesDesc, st.TxBytes, l.name, "tx")
		counter(kernelPacketsDesc, st.KernelPackets, l.name)
		counter(kernelDropsDesc, st.KernelDrops, l.name)
		counter(kernelFreezeDesc, st.FreezeCount, l.name)
		counter(copiedDesc, st.CopyFrames, l.name)
		counter(linkDownDesc, l.downs.Load(), l.name)
	}
	drops, decode := b.dropCounts()
	var stripped, echo, icmpTr, pSent, pFreed, pReset uint64
	var entries, halfOpen int64
	var evicted uint64
	for i, w := range b.workers {
		wc := w.c
		stripped += wc.tsStripped.Load()
		echo += wc.icmpEchoReplies.Load()
		icmpTr += wc.icmpTranslated.Load()
		pSent += wc.probesSent.Load()
		pFreed += wc.probesFreed.Load()
		pReset += wc.probesReset.Load()
		f := wc.flows.Load()
		entries += f
		halfOpen += wc.halfOpen.Load()
		evicted += wc.halfOpenEvicted.Load()
		id := strconv.Itoa(i)
		counter(workerRxDesc, workerRx[i], id)
		ch <- prometheus.MustNewConstMetric(workerFlowsDesc, prometheus.GaugeValue, float64(f), id)
		counter(handoffDesc, wc.handoffs.Load(), id)
	}
	for r, v := range drops {
		counter(dropsDesc, v, dropReasonNames[r])
	}
	for r, v := range decode {
		counter(dropsDesc, v, nat.Reasons[r])
	}
	counter(probeDesc, pSent, "sent")
	counter(probeDesc, pFreed, "freed")
	counter(probeDesc, pReset, "reset")
	ch <- prometheus.MustNewConstMetric(recoveredDesc, prometheus.GaugeValue, float64(b.recoveredTW), "time_wait")
	ch <- prometheus.MustNewConstMetric(recoveredDesc, prometheus.GaugeValue, float64(b.recoveredUnknown), "unknown")
	counter(strippedDesc, stripped)
	counter(echoDesc, echo)
	counter(icmpTrDesc, icmpTr)
	ch <- prometheus.MustNewConstMetric(entriesDesc, prometheus.GaugeValue, float64(entries))
	ch <- prometheus.MustNewConstMetric(halfOpenDesc, prometheus.GaugeValue, float64(halfOpen))
	counter(evictedDesc, evicted)
}

var (
	snatLabels    = []string{"snat", "backend"}
	snatInUseDesc = prometheus.NewDesc("tslb_snat_ports_in_use",
		"Backend tuples held by live flows, per SNAT address and backend.", snatLabels, nil)
	snatTWDesc = prometheus.NewDesc("tslb_snat_ports_time_wait",
		"Backend tuples in the backend's TIME_WAIT now (tslb's ledger), per SNAT address and backend.", snatLabels, nil)
	snatFreeDesc = prometheus.NewDesc("tslb_snat_ports_free",
		"Backend tuples free (neither in use nor in TIME_WAIT), per SNAT address and backend.", snatLabels, nil)
	snatRateDesc = prometheus.NewDesc("tslb_snat_time_wait_entries_per_second",
		"Rate at which tuples enter TIME_WAIT (backend closed first), smoothed over ~10 s.", snatLabels, nil)
	snatExhaustDesc = prometheus.NewDesc("tslb_snat_seconds_to_exhaustion",
		"Free tuples divided by the rate at which tuples enter TIME_WAIT: seconds until new flows to this backend need early reuse or the exhaustion policy, if the rate holds (+Inf when nothing enters).", snatLabels, nil)
	snatAllocDesc = prometheus.NewDesc("tslb_snat_allocations_total",
		"Backend tuples handed to new flows, per SNAT address and backend, by kind: fresh, early_reuse_isn (in TIME_WAIT, made acceptable by ISN translation), early_reuse_ts (by a newer TSval), forced (exhaustion: reuse, no guarantee).",
		[]string{"snat", "backend", "kind"}, nil)
	neighChangesDesc = prometheus.NewDesc("tslb_neighbour_changes_total",
		"Neighbour entries (ARP or NDP) whose MAC address changed, per link: a host replaced or moved.", []string{"link"}, nil)
	neighDesc = prometheus.NewDesc("tslb_arp_table_entries",
		"Entries in tslb's own neighbour (ARP) table, per link.", []string{"link"}, nil)
)

// snatCollector reads the workers' pools at scrape time and adds up each
// (SNAT address, backend) pair's shares.
type snatCollector struct{ b *Balancer }

func (c *snatCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{snatInUseDesc, snatTWDesc, snatFreeDesc, snatRateDesc, snatExhaustDesc, snatAllocDesc} {
		ch <- d
	}
}

type pairUsage struct {
	u      snat.Usage
	allocs [snat.NumKinds]uint64
}

// poolUsage sums every worker's share of every pair, in the order the
// pairs appear in worker 0's shard.
func (b *Balancer) poolUsage(now int64) ([]poolKey, map[poolKey]*pairUsage) {
	var keys []poolKey
	sum := make(map[poolKey]*pairUsage)
	for _, ps := range b.shards {
		ps.mu.Lock()
		for _, p := range ps.list {
			k := poolKey{p.SNAT, p.Backend}
			pu := sum[k]
			if pu == nil {
				pu = &pairUsage{}
				sum[k] = pu
				keys = append(keys, k)
			}
			u := p.Usage(now)
			pu.u.InUse += u.InUse
			pu.u.TimeWait += u.TimeWait
			pu.u.Free += u.Free
			pu.u.Rate += u.Rate
			for i, a := range p.Allocs {
				pu.allocs[i] += a
			}
		}
		ps.mu.Unlock()
	}
	return keys, sum
}

func (c *snatCollector) Collect(ch chan<- prometheus.Metric) {
	keys, sum := c.b.poolUsage(c.b.sh.clock())
	for _, k := range keys {
		pu := sum[k]
		lv := []string{k.snat.Text(), k.backend.String()}
		ch <- prometheus.MustNewConstMetric(snatInUseDesc, prometheus.GaugeValue, float64(pu.u.InUse), lv...)
		ch <- prometheus.MustNewConstMetric(snatTWDesc, prometheus.GaugeValue, float64(pu.u.TimeWait), lv...)
		ch <- prometheus.MustNewConstMetric(snatFreeDesc, prometheus.GaugeValue, float64(pu.u.Free), lv...)
		ch <- prometheus.MustNewConstMetric(snatRateDesc, prometheus.GaugeValue, pu.u.Rate, lv...)
		ch <- prometheus.MustNewConstMetric(snatExhaustDesc, prometheus.GaugeValue, pu.u.SecondsToExhaustion(), lv...)
		for kind := snat.Kind(0); kind < snat.NumKinds; kind++ {
			ch <- prometheus.MustNewConstMetric(snatAllocDesc, prometheus.CounterValue, float64(pu.allocs[kind]), lv[0], lv[1], kind.String())
		}
	}
}

type neighCollector struct{ b *Balancer }

func (c *neighCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- neighDesc
	ch <- neighChangesDesc
}
func (c *neighCollector) Collect(ch chan<- prometheus.Metric) {
	for _, l := range c.b.sh.nics {
		ch <- prometheus.MustNewConstMetric(neighDesc, prometheus.GaugeValue, float64(l.neigh.size()), l.name)
		ch <- prometheus.MustNewConstMetric(neighChangesDesc, prometheus.CounterValue, float64(l.neigh.changes.Load()), l.name)
	}
}

// cachedCollector serves the metrics of c collected at most every apart:
// prometheus.Metric values are immutable, so the same ones can be sent to
// every scrape in between.
type cachedCollector struct {
	c     prometheus.Collector
	every time.Duration
	now   func() time.Time

	mu   sync.Mutex
	at   time.Time
	last []prometheus.Metric
}

func newCachedCollector(c prometheus.Collector, every time.Duration, now func() time.Time) *cachedCollector {
	return &cachedCollector{c: c, every: every, now: now}
}

func (c *cachedCollector) Describe(ch chan<- *prometheus.Desc) { c.c.Describe(ch) }

func (c *cachedCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	if t := c.now(); c.last == nil || t.Sub(c.at) >= c.every {
		fresh := make(chan prometheus.Metric, 32)
		done := make(chan struct{})
		var ms []prometheus.Metric
		go func() {
			for m := range fresh {
				ms = append(ms, m)
			}
			close(done)
		}()
		c.c.Collect(fresh)
		close(fresh)
		<-done
		c.last, c.at = ms, t
	}
	last := c.last
	c.mu.Unlock()
	for _, m := range last {
		ch <- m
	}
}
