package lb

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

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
	numDropReasons
)

var dropReasonNames = [numDropReasons]string{
	"not_ours", "no_service", "no_flow", "unsupported_proto", "icmp_unsupported",
	"icmp_no_flow", "bad_checksum", "ttl_expired", "no_route", "neighbour_unresolved",
	"tx_error", "table_full", "no_backend", "snat_exhausted", "rst_out_of_window",
	"arp_not_ours", "shutting_down", "after_close",
}

// metrics holds every collector. Children whose labels are known from the
// configuration are resolved when it loads, never per packet.
type metrics struct {
	reg *prometheus.Registry

	packets *prometheus.CounterVec // link, direction
	bytes   *prometheus.CounterVec
	drops   *prometheus.CounterVec // reason

	dropByReason [numDropReasons]prometheus.Counter
	dropDecode   map[string]prometheus.Counter

	flowsActive     *prometheus.GaugeVec   // service
	flowsCreated    *prometheus.CounterVec // service
	synRefused      *prometheus.CounterVec // service, reason
	backendCreated  *prometheus.CounterVec // service, backend
	backendActive   *prometheus.GaugeVec   // service, backend
	flowsExpired    *prometheus.CounterVec // state
	flowsClosed     *prometheus.CounterVec // closed_first
	arpSent         *prometheus.CounterVec // link, op
	icmpTranslated  prometheus.Counter
	icmpEchoReplies prometheus.Counter
	tsStripped      prometheus.Counter
	flowsTotal      prometheus.GaugeFunc

	allocations *prometheus.CounterVec // snat, backend, kind
	exhaustion  *prometheus.CounterVec // service, outcome
	collisions  *prometheus.CounterVec // backend, signature
	repairs     *prometheus.CounterVec // backend
	translation *prometheus.CounterVec // event
	trEvents    [numTrEvents]prometheus.Counter

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
	m.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m.packets = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tslb_link_packets_total", Help: "Frames by link and direction (rx, tx). A GSO superframe counts once.",
	}, []string{"link", "direction"})
	m.bytes = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tslb_link_bytes_total", Help: "Ethernet bytes by link and direction (rx, tx).",
	}, []string{"link", "direction"})
	m.drops = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tslb_drops_total", Help: "Frames dropped by the datapath, by reason.",
	}, []string{"reason"})
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
	m.flowsExpired = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tslb_flows_expired_total", Help: "Flows removed from the table by timeout, by the TCP state they were in.",
	}, []string{"state"})
	m.flowsClosed = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tslb_flows_closed_total", Help: "Flows that ended with FINs or RST, by the side that closed first (client, backend) or reset.",
	}, []string{"closed_first"})
	m.arpSent = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tslb_arp_sent_total", Help: "ARP frames sent, by link and op (request, reply, gratuitous).",
	}, []string{"link", "op"})
	m.icmpTranslated = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "tslb_icmp_errors_translated_total", Help: "ICMP errors about a flow translated to the other side (outer and quoted headers).",
	})
	m.icmpEchoReplies = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "tslb_icmp_echo_replies_total", Help: "ICMP echo requests to a VIP or SNAT address answered.",
	})
	m.tsStripped = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "tslb_timestamps_stripped_total", Help: "TCP timestamp options removed (services with timestamps: strip).",
	})
	m.flowsTotal = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "tslb_flow_table_entries", Help: "Flows in the table, all services.",
	}, func() float64 { return float64(b.flows.count.Load()) })
	m.allocations = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tslb_snat_allocations_total",
		Help: "Backend tuples handed to new flows, per SNAT address and backend, by kind: fresh, early_reuse_isn (in TIME_WAIT, made acceptable by ISN translation), early_reuse_ts (by a newer TSval), forced (exhaustion: reuse, no guarantee).",
	}, []string{"snat", "backend", "kind"})
	m.exhaustion = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tslb_snat_exhaustion_total",
		Help: "Exhaustion policy decisions when no tuple could be used safely, by service and outcome: waited, wait_served, wait_timeout, rejected, reused.",
	}, []string{"service", "outcome"})
	m.collisions = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tslb_collisions_total",
		Help: "Collision signatures seen on tslb's own flows, by backend: old_ack (SYN answered by an ACK that does not acknowledge it), rst_on_syn, syn_retransmit.",
	}, []string{"backend", "signature"})
	m.repairs = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tslb_collision_repairs_total",
		Help: "Old-ACK collisions repaired (RST to the backend with seq = its ack, SYN re-sent), by backend.",
	}, []string{"backend"})
	m.translation = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "tslb_translation_events_total",
		Help: "Unusual input met by sequence/timestamp translation, by event (counted when the flow ends).",
	}, []string{"event"})
	for i := range m.trEvents {
		m.trEvents[i] = m.translation.WithLabelValues(trEventNames[i])
	}
	m.reg.MustRegister(m.allocations, m.exhaustion, m.collisions, m.repairs, m.translation)
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
	m.reg.MustRegister(m.reloads, m.lastReloadOK, m.lastReloadTime, m.configVersion, m.backendUp, m.healthTransitions, m.healthChecks)
	m.reg.MustRegister(m.packets, m.bytes, m.drops, m.flowsActive, m.flowsCreated, m.synRefused,
		m.backendCreated, m.backendActive, m.flowsExpired, m.flowsClosed, m.arpSent,
		m.icmpTranslated, m.icmpEchoReplies, m.tsStripped, m.flowsTotal)
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "tslb_flow_table_capacity", Help: "Configured maximum number of flows (flows.max).",
	}, func() float64 { return float64(b.flows.max) }))
	m.reg.MustRegister(&snatCollector{b: b})
	m.reg.MustRegister(&neighCollector{b: b})

	for i := range m.dropByReason {
		m.dropByReason[i] = m.drops.WithLabelValues(dropReasonNames[i])
	}
	m.dropDecode = make(map[string]prometheus.Counter, len(nat.Reasons))
	for _, r := range nat.Reasons {
		m.dropDecode[r] = m.drops.WithLabelValues(r)
	}
	for _, s := range nat.States {
		m.flowsExpired.WithLabelValues(s.String())
	}
	for _, s := range []string{"client", "backend", "reset"} {
		m.flowsClosed.WithLabelValues(s)
	}
	return m
}

func (m *metrics) drop(r dropReason) { m.dropByReason[r].Inc() }

func (m *metrics) dropErr(err error) {
	if c, ok := m.dropDecode[nat.Reason(err)]; ok {
		c.Inc()
		return
	}
	m.drops.WithLabelValues("other").Inc()
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
	neighDesc = prometheus.NewDesc("tslb_arp_table_entries",
		"Entries in tslb's own neighbour (ARP) table, per link.", []string{"link"}, nil)
)

// snatCollector reads the port pools at scrape time.
type snatCollector struct{ b *Balancer }

func (c *snatCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{snatInUseDesc, snatTWDesc, snatFreeDesc, snatRateDesc, snatExhaustDesc} {
		ch <- d
	}
}

func (c *snatCollector) Collect(ch chan<- prometheus.Metric) {
	now := c.b.now.Load()
	for _, p := range c.b.snap.Load().snat.pools() {
		u := p.usage(now)
		lv := []string{p.snat.String(), p.backend.String()}
		ch <- prometheus.MustNewConstMetric(snatInUseDesc, prometheus.GaugeValue, float64(u.inUse), lv...)
		ch <- prometheus.MustNewConstMetric(snatTWDesc, prometheus.GaugeValue, float64(u.timeWait), lv...)
		ch <- prometheus.MustNewConstMetric(snatFreeDesc, prometheus.GaugeValue, float64(u.free), lv...)
		ch <- prometheus.MustNewConstMetric(snatRateDesc, prometheus.GaugeValue, u.rate, lv...)
		ch <- prometheus.MustNewConstMetric(snatExhaustDesc, prometheus.GaugeValue, u.secondsToExhaustion(), lv...)
	}
}

type neighCollector struct{ b *Balancer }

func (c *neighCollector) Describe(ch chan<- *prometheus.Desc) { ch <- neighDesc }
func (c *neighCollector) Collect(ch chan<- prometheus.Metric) {
	for _, l := range c.b.links {
		ch <- prometheus.MustNewConstMetric(neighDesc, prometheus.GaugeValue, float64(l.neigh.size()), l.name)
	}
}
