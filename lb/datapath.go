package lb

import (
	"tslb/config"
	"tslb/lb/cluster"
	"tslb/lb/link"
	"tslb/lb/snat"
	"tslb/nat"
)

// The per-packet path of a worker. Every handler works on w.pkt, decoded
// from frame (virtio_net_hdr + Ethernet) in place, and sends what it
// forwards with w.transmit, which keeps a reference until the batch is
// flushed.

// handle processes one frame received on w.in.
func (w *worker) handle(frame []byte) {
	if err := w.vh.Decode(frame); err != nil {
		w.c.dropErr(err)
		return
	}
	p := &w.pkt
	if err := p.Decode(frame[nat.VirtioNetHdrLen:]); err != nil {
		if err == nat.ErrUnsupportedEtherType {
			switch p.EtherType {
			case cluster.EtherType:
				if w.cl != nil {
					w.heartbeat(frame)
					return
				}
			case etherTypeVLAN, etherTypeQinQ, etherTypeQinQ1:
				w.c.drop(dropVLANTagged)
				return
			}
		}
		w.c.dropErr(err)
		return
	}
	p.PartialCsum = w.vh.Flags&nat.VirtioNetHdrFNeedsCsum != 0
	switch p.EtherType {
	case nat.EtherTypeARP:
		w.handleARP()
	case nat.EtherTypeIPv4:
		w.handleIPv4(frame)
	case nat.EtherTypeIPv6:
		w.handleIPv6(frame)
	default:
		w.c.dropErr(nat.ErrUnsupportedEtherType)
	}
}

// EtherTypes of VLAN tags: 802.1Q, 802.1ad, and the old QinQ 0x9100.
const (
	etherTypeVLAN  = 0x8100
	etherTypeQinQ  = 0x88a8
	etherTypeQinQ1 = 0x9100
)

// outFrame returns the frame (virtio header included) of the packet in w.pkt
// after a rewrite that may have grown it.
func outFrame(frame []byte, p *nat.Packet) []byte {
	return frame[:nat.VirtioNetHdrLen+len(p.Frame)]
}

func (w *worker) handleARP() {
	l := w.in
	a := nat.ARP(w.pkt.Frame[nat.EthernetHeaderLen:])
	if !a.IsEthernetIPv4() {
		w.c.dropErr(nat.ErrShortARP)
		return
	}
	sip, tip, op := a.SenderIP().Mapped(), a.TargetIP().Mapped(), a.Op()
	if w.s.ownedAt(sip) != nil {
		// Someone claims one of tslb's addresses (a forged reply, or an
		// address conflict): never learn it, never answer it.
		w.c.drop(dropARPSpoof)
		return
	}
	forUs := w.s.linkOwned[l.idx][tip]
	// Learn from replies and from requests for tslb's addresses; from any
	// other request only a new MAC for an address already known (RFC 826's
	// merge rule: a host announcing its new MAC by gratuitous ARP).
	if l.onLink(sip) && (forUs || op == nat.ARPReply || l.neigh.known(sip)) && sip != (nat.Addr4{}).Mapped() {
		for _, fr := range l.neigh.learn(sip, a.SenderMAC(), w.now) {
			nat.Ethernet(fr[nat.VirtioNetHdrLen:]).SetDst(a.SenderMAC())
			w.keep(fr)
			w.sendQueue(l, fr)
		}
	}
	if op != nat.ARPRequest {
		return
	}
	if !forUs {
		w.c.drop(dropARPNotOurs)
		return
	}
	sm := a.SenderMAC()
	buf := w.scratch()
	n := nat.BuildARP(buf[nat.VirtioNetHdrLen:], nat.ARPReply, l.mac, sm, l.mac, tip.Unmap(), sm, sip.Unmap())
	if w.sendQueue(l, buf[:nat.VirtioNetHdrLen+n]) {
		l.arpReply.Inc()
	}
}

func (w *worker) handleIPv4(frame []byte) {
	p := &w.pkt
	oa := w.s.ownedAt(p.Dst.Mapped())
	if oa == nil {
		w.c.drop(dropNotOurs)
		return
	}
	switch p.Proto {
	case nat.ProtoTCP:
		w.handleTCP(frame, oa)
	case nat.ProtoICMP:
		if oa.kind != ownedKernel {
			w.handleICMP(frame, oa.kind)
		}
	default:
		if oa.kind != ownedKernel {
			w.c.drop(dropUnsupportedProto)
		}
	}
}

// handleTCP dispatches a TCP segment to an owned address of either family:
// client → VIP, backend → SNAT, after checking that this worker owns its
// flow (the fanout steering's Go mirror; a miss is handed over).
func (w *worker) handleTCP(frame []byte, oa *ownedAddr) {
	p := &w.pkt
	switch oa.kind {
	case ownedKernel:
		return // the kernel's own (health probes): not ours to count
	case ownedVIP:
		var o int
		if p.IsIPv6() {
			o = link.FlowOwner6(p.Src6, p.SrcPort, p.DstPort, w.sh.workers)
		} else {
			o = link.FlowOwner([4]byte(p.Src), p.SrcPort, p.DstPort, w.sh.workers)
		}
		if o != w.id {
			w.handOff(w.peers[o], w.in, frame)
			return
		}
		w.fromClient(frame, oa)
	default:
		if o := snat.PortOwner(p.DstPort, w.sh.workers); o != w.id {
			w.handOff(w.peers[o], w.in, frame)
			return
		}
		w.fromBackend(frame)
	}
}

func isSYN(flags uint8) bool {
	return flags&(nat.TCPFlagSYN|nat.TCPFlagACK|nat.TCPFlagRST) == nat.TCPFlagSYN
}

// fromClient forwards a segment from a client to a VIP toward its backend.
func (w *worker) fromClient(frame []byte, vip *ownedAddr) {
	p := &w.pkt
	svc := vip.service(p.DstPort)
	if svc == nil {
		w.c.drop(dropNoService)
		return
	}
	if p.TTL() <= 1 {
		// Checked before a flow is made: an expiring SYN must not take a
		// SNAT port.
		w.c.drop(dropTTLExpired)
		return
	}
	if badFlags(p.TCPFlags) {
		w.c.drop(dropBadTCPFlags)
		return
	}
	k := flowKey{p.SrcAddr(), p.DstAddr(), p.SrcPort, p.DstPort}
	f := w.flows.get(k)
	syn := isSYN(p.TCPFlags)
	if w.cl != nil && w.in == w.cl.front && w.clusterSteer(frame, svc, f, syn) {
		return // another member's, or no live member's
	}
	if f != nil && syn {
		switch f.state {
		case nat.StateTimeWait, nat.StateClosed:
			// A new SYN on a finished flow reopens the tuple (the client
			// reused its port): end the old flow, as conntrack does for a
			// SYN on a TIME_WAIT/CLOSE entry.
			w.removeFlow(f)
			f = nil
		case nat.StateSynSent:
			f.be.collisions[sigSYNRetransmit].Inc()
		}
	}
	if f != nil && f.released {
		// The connection is over and its backend tuple is back in the
		// pool (maybe already another flow's): late segments stop here.
		w.c.drop(dropAfterClose)
		return
	}
	if f != nil && f.pxs != nil {
		// Proxied, the backend has not answered: hold the client's
		// segments; a retransmitted SYN gets the same cookie again.
		if syn {
			w.sendCookie(svc)
		} else {
			w.holdForProxy(f, frame)
		}
		return
	}
	fresh := false
	if f == nil {
		if !syn {
			if svc.synProxy != config.SYNProxyOff && w.acceptCookie(svc, frame) {
				return
			}
			w.c.drop(dropNoFlow)
			return
		}
		if w.sh.stopping.Load() {
			w.c.drop(dropShuttingDown)
			return
		}
		if r := w.admitSYN(); r != -1 {
			if r != dropCounted {
				w.c.drop(r)
			}
			return
		}
		if w.synth == nil {
			svc.syns.Inc()
			if w.shouldProxy(svc) {
				w.sendCookie(svc)
				return
			}
		}
		var v snat.Verdict
		if f, v = w.newFlow(svc, k); f == nil {
			if v == snat.Wait {
				w.wait(svc, k, frame)
			}
			return
		}
		fresh = true
	}
	now := w.now
	if fresh && !w.s.cfg.Health.Passive.Off && len(frame) <= arenaSlotLen {
		// Kept, as the client sent it, until the backend answers: to be
		// re-dispatched if it does not (passive.go).
		f.csyn = append(f.csyn[:0], frame...)
	}
	st, rstIgnored := f.tr.Update(nat.SideClient, p.TCPFlags, p.Seq, p.Ack, p.Payload, 0, false)
	if rstIgnored {
		w.c.drop(dropRSTOutOfWindow)
		return
	}
	if f.px != nil {
		// The acknowledgement side into the backend's space (SYN proxy).
		if err := f.px.ToBackend(p); err != nil {
			w.c.dropErr(err)
			return
		}
	}
	var grow int
	var err error
	tsNow := f.pool.Clock.At(now)
	stripped := f.x.Stripped
	if fresh {
		f.x.TSBase = f.synTS - tsNow
		grow, err = f.x.SetupSYN(p, svc.ts, f.isn, f.synTS)
	} else {
		grow, err = f.x.ClientToBackend(p, tsNow)
	}
	if f.x.Stripped != stripped {
		w.c.tsStripped.Add(1)
	}
	if err != nil {
		w.c.dropErr(err)
		if fresh {
			// The SYN cannot go (no room for its options): the new flow
			// must not keep a tuple or be blamed on the backend.
			f.noLedger = true
			w.removeFlow(f)
		}
		return
	}
	f.state = st
	f.last = now
	if f.halfOpen && st >= nat.StateEstablished {
		w.closeHalf(f)
	}
	if grow > 0 {
		w.grow(frame, grow)
	}
	if !p.DecTTL() {
		w.c.drop(dropTTLExpired)
		return
	}
	p.SetTupleAny(f.snat, f.sport, f.baddr, f.bport)
	frame = outFrame(frame, p)
	if syn {
		// Kept until the backend answers, to re-send after a repair.
		f.syn = append(f.syn[:0], frame...)
	}
	if f.capt != nil {
		w.captureFrame(f, frame)
	}
	w.transmit(f.be.nic, f.be.hop, frame)
	if st >= nat.StateTimeWait {
		w.releaseTuple(f)
	}
}

// grow records that the TCP header grew (a synthesised timestamp option):
// a GSO superframe's header length in the virtio header grows with it.
func (w *worker) grow(frame []byte, g int) {
	w.vh.HdrLen += uint16(g)
	if w.vh.GSOType != nat.GSONone {
		w.vh.Encode(frame[:nat.VirtioNetHdrLen])
	}
}

// fromBackend forwards a segment from a backend to an SNAT address back to
// the client.
func (w *worker) fromBackend(frame []byte) {
	p := &w.pkt
	k := flowKey{p.SrcAddr(), p.DstAddr(), p.SrcPort, p.DstPort}
	f := w.flows.get(k)
	if f == nil {
		if w.probeIdx == nil || !w.probeAnswer(k) {
			w.c.drop(dropNoFlow)
		}
		return
	}
	if f.tr.State == nat.StateSynSent {
		switch {
		case p.TCPFlags&(nat.TCPFlagACK|nat.TCPFlagSYN|nat.TCPFlagRST) == nat.TCPFlagACK && p.Ack != f.isn+1:
			// The TIME_WAIT (or stale ESTABLISHED) answer: an ACK that
			// does not acknowledge our SYN.
			w.oldACK(f, frame)
			return
		case p.TCPFlags&nat.TCPFlagRST != 0:
			f.be.collisions[sigRSTOnSYN].Inc()
			// A refusal acknowledges the SYN (RFC 9293 §3.10.7.3: any
			// other RST in SYN-SENT is ignored).
			refused := p.TCPFlags&nat.TCPFlagACK != 0 && p.Ack == f.isn+1
			if refused && w.redispatch(f, false) {
				return // the client never sees the refusal
			}
			if refused && f.pxs != nil {
				// The client is connected to tslb's cookie SYN-ACK: reset
				// it in its own window.
				w.sendTCP(f.clientNIC, f.clientHop, f.vip, f.client, f.vport, f.cport, f.pxs.cookie+1, 0, nat.TCPFlagRST)
				w.removeFlow(f)
				return
			}
		case p.TCPFlags&(nat.TCPFlagSYN|nat.TCPFlagACK) == nat.TCPFlagSYN|nat.TCPFlagACK:
			w.passiveSuccess(f)
			if f.pxs != nil && p.Ack == f.isn+1 {
				w.proxyEstablished(f)
				return
			}
		}
	}
	if f.px != nil {
		// The backend's sequence space and clock into the client's (SYN
		// proxy), before the tracker: it works in the client's view.
		if err := f.px.ToClient(p); err != nil {
			w.c.dropErr(err)
			return
		}
	}
	// The tracker works in the client's sequence space.
	ackClient := p.Ack - f.x.SeqDelta
	st, rstIgnored := f.tr.Update(nat.SideBackend, p.TCPFlags, p.Seq, ackClient, p.Payload, 0, false)
	if rstIgnored {
		w.c.drop(dropRSTOutOfWindow)
		return
	}
	if p.TCPFlags&nat.TCPFlagFIN != 0 {
		f.noteBackendFIN(ackClient, p.TCPFlags&nat.TCPFlagACK != 0)
	}
	stripped := f.x.Stripped
	err := f.x.BackendToClient(p)
	if f.x.Stripped != stripped {
		w.c.tsStripped.Add(1)
	}
	if st != nat.StateSynSent && f.syn != nil {
		f.syn = nil
	}
	if err != nil {
		w.c.dropErr(err)
		return
	}
	f.state = st
	if f.halfOpen && st >= nat.StateEstablished {
		w.closeHalf(f)
	}
	if !f.halfOpen {
		// A half-open flow's idle time runs from the client: the backend's
		// SYN-ACK retransmits toward a spoofed client (1, 2, 4, 8 s ...)
		// must not keep it, and its tuple, alive.
		f.last = w.now
	}
	if !p.DecTTL() {
		w.c.drop(dropTTLExpired)
		return
	}
	if f.capt != nil {
		w.captureFrame(f, frame)
	}
	p.SetTupleAny(f.vip, f.vport, f.client, f.cport)
	w.transmit(f.clientNIC, f.clientHop, outFrame(frame, p))
	if st >= nat.StateTimeWait {
		w.releaseTuple(f)
	}
}

// schedulerHashKey keys the client-tuple hash given to schedulers.
const schedulerHashKey = 0x7473_6c62_6d61_676c // "tslbmagl"

// newFlow creates the flow for a client SYN: backend, SNAT tuple (lb/snat
// picks it under the service's TIME_WAIT rules), routes. It returns nil
// and the verdict when the SYN is refused (snat.Reject, answered with an
// RST where the policy says so) or must wait (snat.Wait).
func (w *worker) newFlow(svc *service, k flowKey) (*flow, snat.Verdict) {
	p := &w.pkt
	if err := p.TCPOptions(&w.opts); err != nil {
		w.c.dropErr(err)
		return nil, snat.Reject
	}
	sh := w.sh
	if !w.makeRoom(svc) {
		w.c.drop(dropHalfOpenFull)
		return nil, snat.Reject
	}
	if sh.flowsCount.Add(1) > sh.flowsMax {
		sh.flowsCount.Add(-1)
		w.c.drop(dropTableFull)
		svc.refused[refusedTableFull].Inc()
		return nil, snat.Reject
	}
	// Schedulers get a hash with a fixed key, so that every tslb instance
	// (same configuration) maps a client tuple to the same backend with
	// Maglev; the seeded hash spreads SNAT choices.
	be := svc.pick(k.hash(schedulerHashKey), w.id, w.now)
	if be == nil {
		sh.flowsCount.Add(-1)
		w.c.drop(dropNoBackend)
		svc.refused[refusedNoBackend].Inc()
		return nil, snat.Reject
	}
	cl, hop := sh.route(k.src)
	if cl == nil {
		sh.flowsCount.Add(-1)
		w.c.drop(dropNoRoute)
		return nil, snat.Reject
	}
	now := w.now
	w.req = snat.Request{Seq: p.Seq, HasTS: w.opts.HasTS, TSVal: w.opts.TSVal, Mode: svc.ts,
		ISNTranslation: svc.isn, Exhaustion: svc.exhaustion}
	ps := w.pools
	ps.mu.Lock()
	w.pl = ps.poolsFor(w.s.snatAddrs, be.ap, k.hash(sh.seed), w.pl[:0])
	t, v := snat.Pick(w.pl, &w.req, now)
	if v == snat.OK {
		t.Pool.Allocs[t.Kind]++
	}
	ps.mu.Unlock()
	clear(w.pl)
	switch v {
	case snat.Wait, snat.Reject:
		sh.flowsCount.Add(-1)
		if !w.retrying {
			w.c.drop(dropSNATExhausted)
		}
		if v == snat.Reject {
			svc.refused[refusedSNAT].Inc()
			svc.exhausted[exhaustRejected].Inc()
			w.resetClient()
		}
		return nil, v
	}
	if t.Kind == snat.Forced {
		svc.exhausted[exhaustReused].Inc()
	}
	f := &flow{svc: svc, be: be, pool: t.Pool,
		client: k.src, vip: k.dst, cport: k.sport, vport: k.dport,
		snat: t.Pool.SNAT, sport: t.Port, baddr: be.addr, bport: be.port,
		clientNIC: cl, clientHop: hop, created: now, last: now, sentAt: now,
		isn: t.ISN, synTS: t.TSVal}
	w.flows.insert(f)
	w.c.flows.Add(1)
	w.c.open.Add(1)
	w.openHalf(f)
	if w.synth != nil {
		f.pxs = w.synth
		w.synthFlow = f
	}
	svc.created.Inc()
	svc.active.Inc()
	be.created.Inc()
	be.active.Inc()
	be.flows.Add(1)
	return f, snat.OK
}

func (w *worker) handleICMP(frame []byte, kind ownedKind) {
	p := &w.pkt
	icmp := nat.ICMP(p.Frame[p.L4:])
	switch icmp.Type() {
	case nat.ICMPTypeEcho:
		if !p.EchoReply() {
			w.c.drop(dropBadChecksum)
			return
		}
		clear(frame[:nat.VirtioNetHdrLen])
		// EchoReply swapped the Ethernet addresses; answer from this
		// link's own MAC even if the request was sent to broadcast.
		nat.Ethernet(frame[nat.VirtioNetHdrLen:]).SetSrc(w.in.mac)
		if w.sendQueue(w.in, frame) {
			w.c.icmpEchoReplies.Add(1)
		}
		return
	case nat.ICMPTypeDestUnreachable, nat.ICMPTypeTimeExceeded, nat.ICMPTypeParamProblem:
	default:
		w.c.drop(dropICMPUnsupported)
		return
	}
	e := &w.icmpErr
	if err := p.ParseICMPError(e); err != nil {
		w.c.dropErr(err)
		return
	}
	if e.InnerProto != nat.ProtoTCP {
		w.c.drop(dropICMPUnsupported)
		return
	}
	// The quoted datagram is one tslb sent: reverse it to get the key of
	// packets arriving from the same peer.
	k := flowKey{e.InnerDst.Mapped(), e.InnerSrc.Mapped(), e.InnerDstPort, e.InnerSrcPort}
	owner := snat.PortOwner(k.dport, w.sh.workers)
	if kind == ownedVIP {
		owner = link.FlowOwner([4]byte(e.InnerDst), k.sport, k.dport, w.sh.workers)
	}
	if owner != w.id {
		w.handOff(w.peers[owner], w.in, frame)
		return
	}
	if kind == ownedVIP && w.cl != nil && w.in == w.cl.front && w.clusterICMP(frame, k) {
		return
	}
	f := w.flows.get(k)
	if f == nil || f.released || (kind == ownedVIP && k != f.clientKey()) || (kind == ownedSNAT && k != f.backendKey()) {
		w.c.drop(dropICMPNoFlow)
		return
	}
	clear(frame[:nat.VirtioNetHdrLen])
	if kind == ownedVIP {
		// About a segment tslb sent to the client: tell the backend, as if
		// about the segment it sent to the SNAT address. The quote holds
		// the backend's own seq: unchanged by translation.
		p.SetSrc(f.snat.Unmap())
		p.SetDst(f.baddr.Unmap())
		seq := e.InnerSeq
		if f.px != nil {
			seq -= f.px.SeqDelta // proxied: the client knows it in the cookie's space
		}
		p.RewriteICMPError(e, f.baddr.Unmap(), f.bport, f.snat.Unmap(), f.sport, seq)
		w.c.icmpTranslated.Add(1)
		w.transmit(f.be.nic, f.be.hop, frame)
		return
	}
	// About a segment tslb sent to the backend: tell the client; the
	// quote is in the backend's space.
	p.SetSrc(f.vip.Unmap())
	p.SetDst(f.client.Unmap())
	p.RewriteICMPError(e, f.client.Unmap(), f.cport, f.vip.Unmap(), f.vport, f.x.QuotedSeqToClient(e.InnerSeq))
	w.c.icmpTranslated.Add(1)
	w.transmit(f.clientNIC, f.clientHop, frame)
}

// transmit sends frame (virtio_net_hdr + Ethernet) out of link l to next
// hop hop, resolving its MAC through tslb's neighbour table; a frame for
// an unresolved hop waits (copied) in the table's pending queue.
func (w *worker) transmit(l *nic, hop nat.Addr16, frame []byte) {
	// The kernel does not accept DATA_VALID on transmit; NEEDS_CSUM and the
	// GSO fields pass through (header growth was added to HdrLen).
	frame[0] &^= nat.VirtioNetHdrFDataValid
	eth := nat.Ethernet(frame[nat.VirtioNetHdrLen:])
	eth.SetSrc(l.mac)
	mac, ok, probe := l.neigh.lookup(hop, w.now)
	if probe {
		w.solicit(l, hop)
	}
	if !ok {
		queued, probe := l.neigh.enqueue(hop, frame, w.now)
		if probe {
			w.solicit(l, hop)
		}
		if !queued {
			w.c.drop(dropNeighbour)
		}
		return
	}
	eth.SetDst(mac)
	w.sendQueue(l, frame)
}

// solicit asks for the MAC of ip on link l: an ARP request for IPv4, a
// Neighbor Solicitation to its solicited-node multicast address for IPv6
// (RFC 4861 §7.2.2), from an address tslb owns on the link.
func (w *worker) solicit(l *nic, ip nat.Addr16) {
	buf := w.scratch()
	var n int
	if ip.Is4() {
		n = nat.BuildARP(buf[nat.VirtioNetHdrLen:], nat.ARPRequest, l.mac, broadcast, l.mac, w.s.arpFrom[l.idx].Unmap(), nat.MAC{}, ip.Unmap())
	} else {
		n = nat.BuildNS(buf[nat.VirtioNetHdrLen:], l.mac, w.s.ndFrom[l.idx], ip)
	}
	if n > 0 && w.sendQueue(l, buf[:nat.VirtioNetHdrLen+n]) {
		l.arpReq.Inc()
	}
}
