package lb

import (
	"context"
	"slices"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"tslb/lb/cluster"
	"tslb/lb/cluster/bgp"
)

// Cluster metrics and status: read at scrape time from the membership
// machine, the workers' cluster counters and the BGP speaker.

var (
	clMemberUpDesc = prometheus.NewDesc("tslb_cluster_member_up",
		"1 if the cluster member is live (heard within cluster.dead_after; this instance always), by member id.", []string{"member"}, nil)
	clMemberDrainDesc = prometheus.NewDesc("tslb_cluster_member_draining",
		"1 if the cluster member is live and draining (takes no new flows).", []string{"member"}, nil)
	clMemberRestartsDesc = prometheus.NewDesc("tslb_cluster_member_restarts_total",
		"Restarts of a member seen (a heartbeat with a new generation).", []string{"member"}, nil)
	clMemberDeathsDesc = prometheus.NewDesc("tslb_cluster_member_deaths_total",
		"Times a member went from live to dead (silent for dead_after, or leaving).", []string{"member"}, nil)
	clForwardedDesc = prometheus.NewDesc("tslb_cluster_frames_forwarded_total",
		"Client frames forwarded to another member on the front segment, by member.", []string{"member"}, nil)
	clReceivedDesc = prometheus.NewDesc("tslb_cluster_frames_received_total",
		"Client frames another member forwarded here, by member.", []string{"member"}, nil)
	clDecisionsDesc = prometheus.NewDesc("tslb_cluster_decisions_total",
		"Client frames of flows not held here, by what the ownership decision did: forward_owner, forward_previous (second chance), not_held, views_disagree, no_owner (the last three dropped).",
		[]string{"verdict"}, nil)
	clOwnerDeadDesc = prometheus.NewDesc("tslb_cluster_owner_dead_frames_total",
		"Dropped client frames (not_held) whose previous owner is a dead member: frames of flows lost with a dead peer.", nil, nil)
	clFlowsLostDesc = prometheus.NewDesc("tslb_cluster_flows_lost_total",
		"Distinct flows whose frames were dropped because their owner died (as far as a 1024-slot table per worker tells flows apart).", nil, nil)
	clStoppingSYNDesc = prometheus.NewDesc("tslb_cluster_stopping_syns_passed_total",
		"SYNs a member forwarded to this stopping instance and that it passed on to their owner.", nil, nil)
	clBeatsSentDesc = prometheus.NewDesc("tslb_cluster_heartbeats_sent_total",
		"Heartbeats sent on the front link.", nil, nil)
	clBeatsRecvDesc = prometheus.NewDesc("tslb_cluster_heartbeats_received_total",
		"Heartbeats received, by outcome: accepted, other_cluster, unknown_member, wrong_mac, from_self, stale.", []string{"outcome"}, nil)
	clBeatsBadDesc = prometheus.NewDesc("tslb_cluster_heartbeats_invalid_total",
		"Heartbeat frames (EtherType 0x88B5) refused: malformed, by reason, or off_front (on a link that is not the front link).", []string{"reason"}, nil)
	clReadyDesc = prometheus.NewDesc("tslb_cluster_ready",
		"1 once the membership has heard every member or waited dead_after (VIPs may be announced).", nil, nil)
	clDrainingDesc = prometheus.NewDesc("tslb_cluster_draining",
		"1 while this instance drains (tslb drain, SIGTERM).", nil, nil)
	clViewDesc = prometheus.NewDesc("tslb_cluster_view_members",
		"Members in this instance's current and previous views.", []string{"view"}, nil)
	bgpUpDesc = prometheus.NewDesc("tslb_bgp_session_up",
		"1 if the BGP session to the peer is established.", []string{"peer"}, nil)
	bgpStateDesc = prometheus.NewDesc("tslb_bgp_session_state",
		"The BGP session's FSM state: 1 for the current one (idle, connect, active, opensent, openconfirm, established).", []string{"peer", "state"}, nil)
	bgpEstabDesc = prometheus.NewDesc("tslb_bgp_session_establishments_total",
		"Transitions of the session to Established (a flapping peer shows more than one).", []string{"peer"}, nil)
	bgpRecvDesc = prometheus.NewDesc("tslb_bgp_routes_received",
		"Routes the peer sent (none are imported: a router announcing anything to tslb shows here).", []string{"peer"}, nil)
	bgpAdvDesc = prometheus.NewDesc("tslb_bgp_routes_advertised",
		"Routes sent to the peer.", []string{"peer"}, nil)
	bgpAnnouncedDesc = prometheus.NewDesc("tslb_bgp_routes_announced",
		"VIP prefixes this instance announces now.", nil, nil)
	bgpAnnounceOpsDesc = prometheus.NewDesc("tslb_bgp_route_changes_total",
		"Announcements and withdrawals of VIP prefixes, by op.", []string{"op"}, nil)
)

var bgpStates = []string{"idle", "connect", "active", "opensent", "openconfirm", "established"}

// clusterCollector exports the cluster's state at scrape time.
type clusterCollector struct{ b *Balancer }

func (c *clusterCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{clMemberUpDesc, clMemberDrainDesc, clMemberRestartsDesc, clMemberDeathsDesc,
		clForwardedDesc, clReceivedDesc, clDecisionsDesc, clOwnerDeadDesc, clFlowsLostDesc, clStoppingSYNDesc,
		clBeatsSentDesc, clBeatsRecvDesc, clBeatsBadDesc, clReadyDesc, clDrainingDesc, clViewDesc,
		bgpUpDesc, bgpStateDesc, bgpEstabDesc, bgpRecvDesc, bgpAdvDesc, bgpAnnouncedDesc, bgpAnnounceOpsDesc} {
		ch <- d
	}
}

func b2f(v bool) float64 {
	if v {
		return 1
	}
	return 0
}

// clusterTotals sums the workers' cluster counters.
type clusterTotals struct {
	verdicts                          [cluster.NumVerdicts]uint64
	ownerDead, lostFlows, stoppingSYN uint64
}

func (c *clusterCtl) totals() clusterTotals {
	var t clusterTotals
	for _, wc := range c.clc {
		for i := range t.verdicts {
			t.verdicts[i] += wc.verdicts[i].Load()
		}
		t.ownerDead += wc.ownerDead.Load()
		t.lostFlows += wc.lostFlows.Load()
		t.stoppingSYN += wc.stoppingSYNs.Load()
	}
	return t
}

func (c *clusterCollector) Collect(ch chan<- prometheus.Metric) {
	cl := c.b.cl
	gauge := func(d *prometheus.Desc, v float64, lv ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, lv...)
	}
	counter := func(d *prometheus.Desc, v uint64, lv ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), lv...)
	}
	for _, m := range cl.members.Status() {
		id := strconv.Itoa(int(m.ID))
		gauge(clMemberUpDesc, b2f(m.Live), id)
		gauge(clMemberDrainDesc, b2f(m.Draining), id)
		counter(clMemberRestartsDesc, m.Restarts, id)
		counter(clMemberDeathsDesc, m.Deaths, id)
		if !m.Self {
			counter(clForwardedDesc, m.Forwarded, id)
			counter(clReceivedDesc, m.Received, id)
		}
	}
	t := cl.totals()
	for v := cluster.Verdict(1); int(v) < cluster.NumVerdicts; v++ {
		counter(clDecisionsDesc, t.verdicts[v], v.String())
	}
	counter(clOwnerDeadDesc, t.ownerDead)
	counter(clFlowsLostDesc, t.lostFlows)
	counter(clStoppingSYNDesc, t.stoppingSYN)
	counter(clBeatsSentDesc, cl.path.beatsSent.Load())
	for o, v := range cl.members.Stats() {
		counter(clBeatsRecvDesc, v, cluster.Outcome(o).String())
	}
	for i, n := range beatErrorNames {
		counter(clBeatsBadDesc, cl.path.badBeats[i].Load(), n)
	}
	counter(clBeatsBadDesc, cl.path.offFront.Load(), "off_front")
	gauge(clReadyDesc, b2f(cl.members.Ready(c.b.sh.clock())))
	gauge(clDrainingDesc, b2f(cl.draining.Load()))
	s := cl.members.Snapshot()
	gauge(clViewDesc, float64(s.Current.Len()), "current")
	gauge(clViewDesc, float64(s.Previous.Len()), "previous")

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if peers, err := cl.peers(ctx); err == nil {
		for _, p := range peers {
			a := p.Address.String()
			gauge(bgpUpDesc, b2f(p.Established), a)
			for _, st := range bgpStates {
				gauge(bgpStateDesc, b2f(p.State == st), a, st)
			}
			counter(bgpEstabDesc, p.Establishments, a)
			gauge(bgpRecvDesc, float64(p.Received), a)
			gauge(bgpAdvDesc, float64(p.Advertised), a)
		}
	}
	cl.mu.Lock()
	gauge(bgpAnnouncedDesc, float64(len(cl.announced)))
	counter(bgpAnnounceOpsDesc, cl.announces, "announce")
	counter(bgpAnnounceOpsDesc, cl.withdrawn, "withdraw")
	cl.mu.Unlock()
}

// peers returns the BGP sessions' state, or an error when the speaker is
// not running.
func (c *clusterCtl) peers(ctx context.Context) ([]bgp.PeerState, error) {
	c.mu.Lock()
	started := c.started
	c.mu.Unlock()
	if !started {
		return nil, bgp.ErrNotStarted
	}
	return c.speaker.Peers(ctx)
}

// ClusterStatus is the cluster section of Status (absent without a
// cluster section).
type ClusterStatus struct {
	// Name is cluster.name; Self this instance's cluster.id.
	Name string `json:"name"`
	Self uint16 `json:"self"`
	// Ready: heard every member or waited dead_after; Draining: tslb
	// drain or SIGTERM began.
	Ready    bool `json:"ready"`
	Draining bool `json:"draining"`
	// Current and Previous are the member IDs of the two views.
	Current  []uint16 `json:"current_view"`
	Previous []uint16 `json:"previous_view"`
	// Members are every configured member, by ascending ID.
	Members []ClusterMemberStatus `json:"members"`
	// Decisions counts the frames of flows not held here by verdict
	// (tslb_cluster_decisions_total); FlowsLost the flows lost with a
	// dead member (tslb_cluster_flows_lost_total).
	Decisions map[string]uint64 `json:"decisions"`
	FlowsLost uint64            `json:"flows_lost"`
	// BGP is the instance's BGP speaker.
	BGP BGPStatus `json:"bgp"`
}

// ClusterMemberStatus is one member as this instance sees it.
type ClusterMemberStatus struct {
	// ID, MAC and Address are the member's cluster.members[] entry; Self
	// marks this instance.
	ID      uint16 `json:"id"`
	MAC     string `json:"mac"`
	Address string `json:"address"`
	Self    bool   `json:"self"`
	// Live: heard within dead_after; Draining: its heartbeats say it is
	// draining.
	Live     bool `json:"live"`
	Draining bool `json:"draining"`
	Agrees   bool `json:"agrees"` // its last heartbeat carried our current view
	// LastHeard is its last heartbeat (absent for self and never heard).
	LastHeard time.Time `json:"last_heard,omitzero"`
	// Restarts counts the new generations (restarts) seen after its
	// first; Deaths its transitions from live to dead.
	Restarts uint64 `json:"restarts"`
	Deaths   uint64 `json:"deaths"`
	// Forwarded and Received count the client frames this instance
	// forwarded to it and received from it.
	Forwarded uint64 `json:"frames_forwarded"`
	Received  uint64 `json:"frames_received"`
}

// BGPStatus is the speaker: announced prefixes, VIPs not announced with
// the reason, sessions.
type BGPStatus struct {
	// Announced are the prefixes announced now (sorted); NotAnnounced
	// maps each VIP prefix held back to the reason.
	Announced    []string          `json:"announced"`
	NotAnnounced map[string]string `json:"not_announced,omitempty"`
	// Peers are the configured sessions.
	Peers []BGPPeerStatus `json:"peers"`
	// LastError is the speaker's last error ("" if none).
	LastError string `json:"last_error,omitempty"`
}

// BGPPeerStatus is one BGP session.
type BGPPeerStatus struct {
	// Address and ASN are the neighbour's.
	Address string `json:"address"`
	ASN     uint32 `json:"asn"`
	// State is the FSM state (idle, connect, active, opensent,
	// openconfirm, established); Since when it became established
	// (absent otherwise); Establishments how often it did since start.
	State          string    `json:"state"`
	Since          time.Time `json:"since,omitzero"`
	Establishments uint64    `json:"establishments"`
	// Received counts the routes the neighbour sent, Advertised those
	// sent to it.
	Received   uint64 `json:"routes_received"`
	Advertised uint64 `json:"routes_advertised"`
	// LastError is the session's last error; BFD the BFD session's state
	// (absent without BFD).
	LastError string `json:"last_error,omitempty"`
	BFD       string `json:"bfd,omitempty"`
}

// clusterStatus returns the cluster section of Status, nil without one.
func (b *Balancer) clusterStatus() *ClusterStatus {
	cl := b.cl
	if cl == nil {
		return nil
	}
	s := cl.members.Snapshot()
	ids := func(v *cluster.View) []uint16 {
		out := []uint16{}
		if v != nil {
			for _, id := range v.Members {
				out = append(out, uint16(id))
			}
		}
		return out
	}
	st := &ClusterStatus{Name: cl.name, Self: uint16(s.Self), Ready: cl.members.Ready(b.sh.clock()), Draining: cl.draining.Load(),
		Current: ids(s.Current), Previous: ids(s.Previous), Decisions: map[string]uint64{}}
	for _, m := range cl.members.Status() {
		ms := ClusterMemberStatus{ID: uint16(m.ID), MAC: macString(m.MAC), Address: m.Addr.String(), Self: m.Self, Live: m.Live,
			Draining: m.Draining, Agrees: m.Agrees, Restarts: m.Restarts, Deaths: m.Deaths, Forwarded: m.Forwarded, Received: m.Received}
		if m.LastHeard != 0 && !m.Self {
			ms.LastHeard = time.Unix(0, m.LastHeard)
		}
		st.Members = append(st.Members, ms)
	}
	t := cl.totals()
	for v := cluster.Verdict(1); int(v) < cluster.NumVerdicts; v++ {
		st.Decisions[v.String()] = t.verdicts[v]
	}
	st.FlowsLost = t.lostFlows
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	peers, _ := cl.peers(ctx)
	for _, p := range peers {
		ps := BGPPeerStatus{Address: p.Address.String(), ASN: p.ASN, State: p.State, Establishments: p.Establishments,
			Received: p.Received, Advertised: p.Advertised, LastError: p.LastError, BFD: p.BFD}
		if p.Established {
			ps.Since = p.Since
		}
		st.BGP.Peers = append(st.BGP.Peers, ps)
	}
	cl.mu.Lock()
	st.BGP.Announced = []string{}
	for pfx := range cl.announced {
		st.BGP.Announced = append(st.BGP.Announced, pfx.String())
	}
	for pfx, r := range cl.why {
		if r != "" {
			if st.BGP.NotAnnounced == nil {
				st.BGP.NotAnnounced = map[string]string{}
			}
			st.BGP.NotAnnounced[pfx.String()] = r
		}
	}
	st.BGP.LastError = cl.lastErr
	cl.mu.Unlock()
	slices.Sort(st.BGP.Announced)
	return st
}

func macString(m cluster.MAC) string {
	const hex = "0123456789abcdef"
	b := make([]byte, 0, 17)
	for i, c := range m {
		if i > 0 {
			b = append(b, ':')
		}
		b = append(b, hex[c>>4], hex[c&15])
	}
	return string(b)
}
