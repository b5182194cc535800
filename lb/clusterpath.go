package lb

import (
	"errors"
	"sync/atomic"
	"time"

	"tslb/config"
	"tslb/lb/cluster"
	"tslb/nat"
)

// The cluster's per-packet part (README "Cluster"): heartbeats in and out
// on the front link, and for every client segment to a VIP that arrives
// on the front link and is not held here, the forwarding decision of
// cluster.Snapshot.Decide. A worker is handed a *clusterPath (nil without
// a cluster section) and its own *clusterCounters; it reads the
// membership's snapshot with one atomic load per frame and takes no lock
// (Members.Observe takes its own, twice a second per member).

// clusterPath is what every worker shares of the cluster: the membership
// machine, the front link and the heartbeat timer. Worker 0 sends the
// heartbeats (the steering programs give it every frame that is not TCP,
// heartbeats included) and drives Members.Tick.
type clusterPath struct {
	members  *cluster.Members
	front    *nic
	interval int64 // heartbeat_interval, ns

	beatNow   atomic.Bool   // send a heartbeat in the next round (drain began, leaving)
	leaving   atomic.Bool   // heartbeats say leaving (the instance stops)
	beatsSent atomic.Uint64 // heartbeats transmitted
	leftSent  atomic.Uint64 // of those, with the leaving flag
	badBeats  [numBeatErrors]atomic.Uint64
	offFront  atomic.Uint64 // heartbeat frames on a link that is not the front link
}

// Heartbeat frames ParseHeartbeat refused, by reason (metric labels).
var beatErrors = []error{cluster.ErrShort, cluster.ErrMagic, cluster.ErrVersion, cluster.ErrFlags,
	cluster.ErrMemberID, cluster.ErrGeneration, cluster.ErrReserved, cluster.ErrSource}

const numBeatErrors = 9 // beatErrors and "other"

var beatErrorNames = [numBeatErrors]string{"short", "bad_magic", "bad_version", "bad_flags",
	"member_id_zero", "generation_zero", "reserved_set", "bad_source", "other"}

func (cp *clusterPath) badBeat(err error) {
	for i, e := range beatErrors {
		if errors.Is(err, e) {
			cp.badBeats[i].Add(1)
			return
		}
	}
	cp.badBeats[numBeatErrors-1].Add(1)
}

// lostSlots is the size of the table a worker remembers the flows it
// counted as lost in (a direct-mapped cache of tuple hashes).
const lostSlots = 1024

// clusterCounters are one worker's cluster counters; only that worker
// writes them (seen is not even read by anyone else).
type clusterCounters struct {
	// verdicts counts Decide's verdicts other than Local, and frames this
	// stopping instance passed on (forward_owner).
	verdicts [cluster.NumVerdicts]atomic.Uint64
	// ownerDead counts the not_held frames whose previous owner is dead:
	// frames of flows lost with a dead peer; lostFlows counts distinct
	// such flows (as far as seen tells them apart).
	ownerDead, lostFlows atomic.Uint64
	// stoppingSYNs counts SYNs a peer forwarded while this instance
	// stops, passed on to their owner in this instance's view.
	stoppingSYNs atomic.Uint64
	seen         [lostSlots]uint64
	_            [64]byte
}

// clusterHash is the ownership key of the client segment in w.pkt.
func (w *worker) clusterHash() uint64 {
	p := &w.pkt
	if p.IsIPv6() {
		return cluster.TupleHash6([16]byte(p.Src6), p.SrcPort, [16]byte(p.Dst6), p.DstPort)
	}
	return cluster.TupleHash([4]byte(p.Src), p.SrcPort, [4]byte(p.Dst), p.DstPort)
}

// clusterSteer applies the cluster's ownership to the client segment in
// w.pkt (frame is its whole frame), which arrived on the front link for
// service svc; f is its flow here, if any. It reports whether it took the
// frame (forwarded it to another member, or dropped and counted it);
// false means the frame is this instance's to handle.
func (w *worker) clusterSteer(frame []byte, svc *service, f *flow, syn bool) bool {
	s := w.cl.members.Snapshot()
	from, pc := s.PeerByMAC(cluster.MAC(nat.Ethernet(w.pkt.Frame).Src()))
	if pc != nil {
		pc.ReceivedFrom.Add(1)
	}
	if f != nil {
		return false // held: Decide's first rule
	}
	h := w.clusterHash()
	v, to := s.Decide(h, syn, false, from)
	switch v {
	case cluster.Local:
		if syn && from != 0 && w.sh.stopping.Load() {
			// A peer whose view still has this instance in it sent a SYN
			// this stopping instance would refuse: pass it on to the
			// owner of this instance's view (never back to the sender).
			if o := s.Current.Owner(h); o != 0 && o != s.Self && o != from {
				w.clc.stoppingSYNs.Add(1)
				return w.clusterForward(s, o, frame, cluster.ForwardOwner)
			}
		}
		return false
	case cluster.ForwardOwner:
		return w.clusterForward(s, to, frame, v)
	}
	// This instance owns the flow and does not hold it. While it has SYN
	// cookies outstanding, a pure ACK may answer one of them: the cookie
	// check goes first (acceptCookie takes the frame, or leaves it when it
	// cannot be a cookie ACK).
	if !syn && svc.synProxy != config.SYNProxyOff && w.now < svc.cookieUntil.Load() && w.acceptCookie(svc, frame) {
		return true
	}
	if v == cluster.ForwardPrevious {
		return w.clusterForward(s, to, frame, v)
	}
	w.clc.verdicts[v].Add(1)
	if v == cluster.DropNotHeld {
		if po := s.Previous.Owner(h); po != 0 && po != s.Self && !s.Live(po) {
			w.clc.ownerDead.Add(1)
			if slot := &w.clc.seen[h%lostSlots]; *slot != h {
				*slot = h
				w.clc.lostFlows.Add(1)
			}
		}
	}
	return true
}

// clusterForward sends frame, unchanged but for its Ethernet addresses,
// to member to on the front link, and counts it under verdict v.
func (w *worker) clusterForward(s *cluster.Snapshot, to cluster.MemberID, frame []byte, v cluster.Verdict) bool {
	mac, pc, ok := s.Peer(to)
	if !ok {
		w.clc.verdicts[cluster.DropNoOwner].Add(1)
		return true
	}
	front := w.cl.front
	// As in transmit: DATA_VALID is refused on transmit; NEEDS_CSUM and
	// the GSO fields go with the frame (the owner's kernel-facing socket
	// sees what this one saw).
	frame[0] &^= nat.VirtioNetHdrFDataValid
	eth := nat.Ethernet(frame[nat.VirtioNetHdrLen:])
	eth.SetSrc(front.mac)
	eth.SetDst(nat.MAC(mac))
	if w.sendQueue(front, frame) {
		pc.ForwardedTo.Add(1)
		w.clc.verdicts[v].Add(1)
	}
	return true
}

// clusterICMP forwards an ICMP error about a flow this instance does not
// hold (its quote names a VIP flow: client k.dst... reversed) to the
// flow's current owner, when the error came in on the front link. It
// reports whether it took the frame.
func (w *worker) clusterICMP(frame []byte, k flowKey) bool {
	if w.flows.get(k) != nil {
		return false
	}
	s := w.cl.members.Snapshot()
	var h uint64
	if k.src.Is4() {
		h = cluster.TupleHash([4]byte(k.src.Unmap()), k.sport, [4]byte(k.dst.Unmap()), k.dport)
	} else {
		h = cluster.TupleHash6([16]byte(k.src), k.sport, [16]byte(k.dst), k.dport)
	}
	from, _ := s.PeerByMAC(cluster.MAC(nat.Ethernet(w.pkt.Frame).Src()))
	o := s.Current.Owner(h)
	if from != 0 || o == 0 || o == s.Self {
		return false // forwarded once already, or ours: handled (or dropped) here
	}
	return w.clusterForward(s, o, frame, cluster.ForwardOwner)
}

// heartbeat takes a heartbeat frame received on w.in.
func (w *worker) heartbeat(frame []byte) {
	cp := w.cl
	if w.in != cp.front {
		cp.offFront.Add(1)
		return
	}
	hb, err := cluster.ParseHeartbeat(frame[nat.VirtioNetHdrLen:])
	if err != nil {
		cp.badBeat(err)
		return
	}
	cp.members.Observe(hb, w.now)
}

// clusterTimers (worker 0) sends a heartbeat every interval, or at once
// when asked, and expires silent members.
func (w *worker) clusterTimers() {
	cp := w.cl
	if w.now < w.nextBeat && !cp.beatNow.Load() {
		return
	}
	cp.beatNow.Store(false)
	w.nextBeat = w.now + cp.interval
	cp.members.Tick(w.now)
	leaving := cp.leaving.Load()
	buf := w.scratch()
	frame := cluster.AppendHeartbeat(buf[:nat.VirtioNetHdrLen], cp.members.NextHeartbeat(leaving))
	if w.sendQueue(cp.front, frame) {
		cp.beatsSent.Add(1)
		if leaving {
			cp.leftSent.Add(1)
		}
	}
}

// clusterSleep bounds worker 0's sleep by its next heartbeat.
func (w *worker) clusterSleep(d time.Duration) time.Duration {
	if w.cl == nil || w.id != 0 {
		return d
	}
	return max(0, min(d, time.Duration(w.nextBeat-w.sh.clock())))
}
