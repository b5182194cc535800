package lb

import (
	"context"
	"errors"
	"net"

	"tslb/nat"
)

// frameBufSize holds a virtio_net_hdr and the largest GSO superframe the
// kernel hands an AF_PACKET socket (64 KiB IPv4 packet + Ethernet).
const frameBufSize = nat.VirtioNetHdrLen + nat.EthernetHeaderLen + 65535 + 64

// worker reads one link and forwards what it reads. It owns its buffers
// and decoded packet, so the hot path allocates nothing.
type worker struct {
	b        *Balancer
	in       *link
	buf      []byte
	scratch  []byte
	pkt      nat.Packet
	vh       nat.VirtioNetHdr
	icmpErr  nat.ICMPError
	opts     nat.TCPOptions
	pools    []*snatPool // scratch for pickTuple
	scratch2 []byte      // copy of a SYN being re-sent by a repair

	s *snapshot // the configuration this frame is handled under

	// retrying is set while housekeeping re-runs a SYN held by the wait
	// policy; stillWaiting reports that it must keep waiting.
	retrying, stillWaiting bool
}

func (b *Balancer) newWorker(l *link) *worker {
	return &worker{b: b, in: l, buf: make([]byte, frameBufSize), scratch: make([]byte, 128),
		pools: make([]*snatPool, 0, 8)}
}

func (w *worker) run(ctx context.Context) error {
	for {
		n, err := w.in.io.ReadFrame(w.buf)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
		w.handle(n)
	}
}

// handle processes the frame in w.buf[:n] (virtio_net_hdr + Ethernet).
func (w *worker) handle(n int) {
	b := w.b
	w.s = b.snap.Load()
	if !w.retrying {
		w.in.rxPackets.Inc()
	}
	// A read shorter than the virtio header (dropped below as short_frame)
	// must not make the counter go negative: Counter.Add panics.
	if !w.retrying {
		w.in.rxBytes.Add(float64(max(n-nat.VirtioNetHdrLen, 0)))
	}
	if err := w.vh.Decode(w.buf[:n]); err != nil {
		b.m.dropErr(err)
		return
	}
	p := &w.pkt
	if err := p.Decode(w.buf[nat.VirtioNetHdrLen:n]); err != nil {
		b.m.dropErr(err)
		return
	}
	p.PartialCsum = w.vh.Flags&nat.VirtioNetHdrFNeedsCsum != 0
	switch p.EtherType {
	case nat.EtherTypeARP:
		w.handleARP()
	case nat.EtherTypeIPv4:
		w.handleIPv4(n)
	default:
		b.m.dropErr(nat.ErrUnsupportedEtherType)
	}
}

func (w *worker) handleARP() {
	b, l := w.b, w.in
	a := nat.ARP(w.pkt.Frame[nat.EthernetHeaderLen:])
	if !a.IsEthernetIPv4() {
		b.m.dropErr(nat.ErrShortARP)
		return
	}
	sip, tip, op := a.SenderIP(), a.TargetIP(), a.Op()
	forUs := w.s.linkOwned[l.idx][tip]
	onLink := w.onLink(l, sip)
	if onLink && (forUs || op == nat.ARPReply) && sip != (nat.Addr4{}) {
		for _, fr := range l.neigh.learn(sip, a.SenderMAC(), b.now.Load()) {
			w.flushPending(l, a.SenderMAC(), fr)
		}
	}
	if op != nat.ARPRequest {
		return
	}
	if !forUs {
		b.m.drop(dropARPNotOurs)
		return
	}
	sm := a.SenderMAC()
	n := nat.BuildARP(w.scratch[nat.VirtioNetHdrLen:], nat.ARPReply, l.mac, sm, l.mac, tip, sm, sip)
	clear(w.scratch[:nat.VirtioNetHdrLen])
	if w.write(l, w.scratch[:nat.VirtioNetHdrLen+n]) {
		l.arpReply.Inc()
	}
}

func (w *worker) onLink(l *link, a nat.Addr4) bool {
	na := a.Netip()
	for _, p := range l.subnets {
		if p.Contains(na) {
			return true
		}
	}
	return l.hasGW && a == l.gw
}

func (w *worker) handleIPv4(n int) {
	b, p := w.b, &w.pkt
	kind := w.s.owned[p.Dst]
	if kind == ownedKernel {
		return // the kernel's own (health probes): not ours to count
	}
	if kind == 0 {
		b.m.drop(dropNotOurs)
		return
	}
	switch p.Proto {
	case nat.ProtoTCP:
		if kind == ownedVIP {
			w.fromClient(n)
		} else {
			w.fromBackend(n)
		}
	case nat.ProtoICMP:
		w.handleICMP(n, kind)
	default:
		b.m.drop(dropUnsupportedProto)
	}
}

func isSYN(flags uint8) bool {
	return flags&(nat.TCPFlagSYN|nat.TCPFlagACK|nat.TCPFlagRST) == nat.TCPFlagSYN
}

// fromClient forwards a segment from a client to a VIP toward its backend.
func (w *worker) fromClient(n int) {
	b, p := w.b, &w.pkt
	svc := w.s.services[svcKey{p.Dst, p.DstPort}]
	if svc == nil {
		b.m.drop(dropNoService)
		return
	}
	if p.IPv4().TTL() <= 1 {
		// Checked before a flow is made: an expiring SYN must not take a
		// SNAT port.
		b.m.drop(dropTTLExpired)
		return
	}
	k := flowKey{p.Src, p.Dst, p.SrcPort, p.DstPort}
	f := b.flows.get(k)
	syn := isSYN(p.TCPFlags)
	if f != nil && syn {
		switch st := nat.ConnState(f.state.Load()); st {
		case nat.StateTimeWait, nat.StateClosed:
			// A new SYN on a finished flow reopens the tuple (the client
			// reused its port): end the old flow, as conntrack does for a
			// SYN on a TIME_WAIT/CLOSE entry.
			b.removeFlow(f)
			f = nil
		case nat.StateSynSent:
			f.be.collisions[sigSYNRetransmit].Inc()
		}
	}
	if f != nil && f.released.Load() {
		// The connection is over and its backend tuple is back in the
		// pool (maybe already another flow's): late segments stop here.
		b.m.drop(dropAfterClose)
		return
	}
	fresh := false
	if f == nil {
		if !syn {
			b.m.drop(dropNoFlow)
			return
		}
		if b.stopping.Load() {
			b.m.drop(dropShuttingDown)
			return
		}
		var v verdict
		if f, v = w.newFlow(svc, k); f == nil {
			if v == verdictWait {
				w.wait(svc, k, n)
			}
			return
		}
		fresh = true
	}
	now := b.now.Load()
	f.mu.Lock()
	st, rstIgnored := f.tr.Update(nat.SideClient, p.TCPFlags, p.Seq, p.Ack, p.Payload, 0, false)
	if rstIgnored {
		f.mu.Unlock()
		b.m.drop(dropRSTOutOfWindow)
		return
	}
	var grow int
	var err error
	tsNow := f.pool.clock.At(now)
	stripped := f.x.Stripped
	if fresh {
		f.x.TSBase = f.synTS - tsNow
		grow, err = f.x.SetupSYN(p, svc.tsAction, f.isn, f.synTS)
	} else {
		grow, err = f.x.ClientToBackend(p, tsNow)
	}
	if f.x.Stripped != stripped {
		b.m.tsStripped.Inc()
	}
	if err != nil {
		f.mu.Unlock()
		b.m.dropErr(err)
		return
	}
	f.mu.Unlock()
	f.state.Store(uint32(st))
	f.last.Store(now)
	if grow > 0 {
		w.grow(grow)
		n += grow
	}
	if !p.DecTTL() {
		b.m.drop(dropTTLExpired)
		return
	}
	p.SetTuple(f.snat, f.sport, f.baddr, f.bport)
	if syn {
		f.mu.Lock()
		// Kept until the backend answers, to re-send after a repair.
		f.syn = append(f.syn[:0], w.buf[:n]...)
		f.mu.Unlock()
	}
	if f.capt.Load() != nil {
		b.captureFrame(f, w.buf[:n])
	}
	w.transmit(f.be.link, f.be.hop, n)
	if st >= nat.StateTimeWait {
		b.releaseTuple(f)
	}
}

// grow records that the TCP header grew (a synthesised timestamp option):
// a GSO superframe's header length in the virtio header grows with it.
func (w *worker) grow(g int) {
	w.vh.HdrLen += uint16(g)
	if w.vh.GSOType != nat.GSONone {
		w.vh.Encode(w.buf[:nat.VirtioNetHdrLen])
	}
}

// fromBackend forwards a segment from a backend to an SNAT address back to
// the client.
func (w *worker) fromBackend(n int) {
	b, p := w.b, &w.pkt
	f := b.flows.get(flowKey{p.Src, p.Dst, p.SrcPort, p.DstPort})
	if f == nil {
		b.m.drop(dropNoFlow)
		return
	}
	f.mu.Lock()
	if f.tr.State == nat.StateSynSent {
		switch {
		case p.TCPFlags&(nat.TCPFlagACK|nat.TCPFlagSYN|nat.TCPFlagRST) == nat.TCPFlagACK && p.Ack != f.isn+1:
			// The TIME_WAIT (or stale ESTABLISHED) answer: an ACK that
			// does not acknowledge our SYN.
			f.mu.Unlock()
			w.oldACK(f, n)
			return
		case p.TCPFlags&nat.TCPFlagRST != 0:
			f.be.collisions[sigRSTOnSYN].Inc()
		}
	}
	// The tracker works in the client's sequence space.
	ackClient := p.Ack - f.x.SeqDelta
	st, rstIgnored := f.tr.Update(nat.SideBackend, p.TCPFlags, p.Seq, ackClient, p.Payload, 0, false)
	if rstIgnored {
		f.mu.Unlock()
		b.m.drop(dropRSTOutOfWindow)
		return
	}
	if p.TCPFlags&nat.TCPFlagFIN != 0 {
		f.noteBackendFIN(ackClient, p.TCPFlags&nat.TCPFlagACK != 0)
	}
	stripped := f.x.Stripped
	err := f.x.BackendToClient(p)
	if f.x.Stripped != stripped {
		b.m.tsStripped.Inc()
	}
	if st != nat.StateSynSent && f.syn != nil {
		f.syn = nil
	}
	f.mu.Unlock()
	if err != nil {
		b.m.dropErr(err)
		return
	}
	f.state.Store(uint32(st))
	f.last.Store(b.now.Load())
	if !p.DecTTL() {
		b.m.drop(dropTTLExpired)
		return
	}
	if f.capt.Load() != nil {
		b.captureFrame(f, w.buf[:n])
	}
	p.SetTuple(f.vip, f.vport, f.client, f.cport)
	w.transmit(f.clientLink, f.clientHop, n)
	if st >= nat.StateTimeWait {
		b.releaseTuple(f)
	}
}

// schedulerHashKey keys the client-tuple hash given to schedulers.
const schedulerHashKey = 0x7473_6c62_6d61_676c // "tslbmagl"

type verdict uint8

const (
	verdictOK verdict = iota
	verdictRefused
	verdictWait
)

// newFlow creates the flow for a client SYN: backend, SNAT tuple (with the
// TIME_WAIT rules of timewait.go), routes.
func (w *worker) newFlow(svc *service, k flowKey) (*flow, verdict) {
	b, p := w.b, &w.pkt
	if err := p.TCPOptions(&w.opts); err != nil {
		b.m.dropErr(err)
		return nil, verdictRefused
	}
	if !b.flows.reserve() {
		b.m.drop(dropTableFull)
		svc.refused[refusedTableFull].Inc()
		return nil, verdictRefused
	}
	h := k.hash(b.seed)
	// Schedulers get a hash with a fixed key, so that every tslb instance
	// (same configuration) maps a client tuple to the same backend with
	// Maglev; the seeded h spreads SNAT choices and the flow table.
	be := svc.pick(k.hash(schedulerHashKey))
	if be == nil {
		b.flows.unreserve()
		b.m.drop(dropNoBackend)
		svc.refused[refusedNoBackend].Inc()
		return nil, verdictRefused
	}
	cl, hop := b.route(k.src)
	if cl == nil {
		b.flows.unreserve()
		b.m.drop(dropNoRoute)
		return nil, verdictRefused
	}
	now := b.now.Load()
	t, v := w.pickTuple(svc, be, h, now)
	if v != verdictOK {
		b.flows.unreserve()
		return nil, v
	}
	f := &flow{svc: svc, be: be, pool: t.pool,
		client: k.src, vip: k.dst, cport: k.sport, vport: k.dport,
		snat: t.pool.snat, sport: t.port, baddr: be.addr, bport: be.port,
		clientLink: cl, clientHop: hop, created: now,
		isn: t.isn, synTS: t.tsval}
	f.last.Store(now)
	if old, ok := b.flows.insert(f); !ok {
		t.pool.release(t.port, now, t.rec)
		b.flows.unreserve()
		return old, verdictOK
	}
	t.pool.allocs[t.kind].Inc()
	svc.created.Inc()
	svc.active.Inc()
	be.created.Inc()
	be.active.Inc()
	be.flows.Add(1)
	return f, verdictOK
}

func (w *worker) handleICMP(n int, kind ownedKind) {
	b, p := w.b, &w.pkt
	icmp := nat.ICMP(p.Frame[p.L4:])
	switch icmp.Type() {
	case 8: // echo request
		if !p.EchoReply() {
			b.m.drop(dropBadChecksum)
			return
		}
		clear(w.buf[:nat.VirtioNetHdrLen])
		// EchoReply swapped the Ethernet addresses; answer from this
		// link's own MAC even if the request was sent to broadcast.
		nat.Ethernet(w.buf[nat.VirtioNetHdrLen:n]).SetSrc(w.in.mac)
		if w.write(w.in, w.buf[:n]) {
			b.m.icmpEchoReplies.Inc()
		}
		return
	case 3, 11, 12:
	default:
		b.m.drop(dropICMPUnsupported)
		return
	}
	e := &w.icmpErr
	if err := p.ParseICMPError(e); err != nil {
		b.m.dropErr(err)
		return
	}
	if e.InnerProto != nat.ProtoTCP {
		b.m.drop(dropICMPUnsupported)
		return
	}
	// The quoted datagram is one tslb sent: reverse it to get the key of
	// packets arriving from the same peer.
	k := flowKey{e.InnerDst, e.InnerSrc, e.InnerDstPort, e.InnerSrcPort}
	f := b.flows.get(k)
	if f == nil || f.released.Load() || (kind == ownedVIP && k != f.clientKey()) || (kind == ownedSNAT && k != f.backendKey()) {
		b.m.drop(dropICMPNoFlow)
		return
	}
	clear(w.buf[:nat.VirtioNetHdrLen])
	if kind == ownedVIP {
		// About a segment tslb sent to the client: tell the backend, as if
		// about the segment it sent to the SNAT address.
		p.SetSrc(f.snat)
		p.SetDst(f.baddr)
		f.mu.Lock()
		// The quote holds the backend's own seq: unchanged by translation.
		seq := e.InnerSeq
		f.mu.Unlock()
		p.RewriteICMPError(e, f.baddr, f.bport, f.snat, f.sport, seq)
		b.m.icmpTranslated.Inc()
		w.transmit(f.be.link, f.be.hop, n)
		return
	}
	// About a segment tslb sent to the backend: tell the client.
	p.SetSrc(f.vip)
	p.SetDst(f.client)
	f.mu.Lock()
	// The quote is a segment tslb sent the backend: back to client space.
	seq := f.x.QuotedSeqToClient(e.InnerSeq)
	f.mu.Unlock()
	p.RewriteICMPError(e, f.client, f.cport, f.vip, f.vport, seq)
	b.m.icmpTranslated.Inc()
	w.transmit(f.clientLink, f.clientHop, n)
}

// transmit sends w.buf[:n] out of link l to next hop hop.
func (w *worker) transmit(l *link, hop nat.Addr4, n int) { w.transmitFrame(l, hop, w.buf[:n]) }

// transmitScratch sends w.scratch[:n] (a frame tslb built).
func (w *worker) transmitScratch(l *link, hop nat.Addr4, n int) {
	w.transmitFrame(l, hop, w.scratch[:n])
}

// transmitFrame sends frame (virtio_net_hdr + Ethernet) out of link l to
// next hop hop, resolving its MAC through tslb's neighbour table.
func (w *worker) transmitFrame(l *link, hop nat.Addr4, frame []byte) {
	b := w.b
	// The kernel does not accept DATA_VALID on transmit; NEEDS_CSUM and the
	// GSO fields pass through (header growth was added to HdrLen).
	frame[0] &^= nat.VirtioNetHdrFDataValid
	eth := nat.Ethernet(frame[nat.VirtioNetHdrLen:])
	eth.SetSrc(l.mac)
	now := b.now.Load()
	mac, ok, probe := l.neigh.lookup(hop, now)
	if probe {
		w.sendARPRequest(l, hop)
	}
	if !ok {
		queued, probe := l.neigh.enqueue(hop, frame, now)
		if probe {
			w.sendARPRequest(l, hop)
		}
		if !queued {
			b.m.drop(dropNeighbour)
		}
		return
	}
	eth.SetDst(mac)
	w.write(l, frame)
}

func (w *worker) flushPending(l *link, mac nat.MAC, frame []byte) {
	nat.Ethernet(frame[nat.VirtioNetHdrLen:]).SetDst(mac)
	w.write(l, frame)
}

func (w *worker) sendARPRequest(l *link, ip nat.Addr4) {
	n := nat.BuildARP(w.scratch[nat.VirtioNetHdrLen:], nat.ARPRequest, l.mac, broadcast, l.mac, w.b.snap.Load().arpFrom[l.idx], nat.MAC{}, ip)
	clear(w.scratch[:nat.VirtioNetHdrLen])
	if w.write(l, w.scratch[:nat.VirtioNetHdrLen+n]) {
		l.arpReq.Inc()
	}
}

func (w *worker) write(l *link, frame []byte) bool {
	if err := l.io.WriteFrame(frame); err != nil {
		w.b.m.drop(dropTxError)
		return false
	}
	l.txPackets.Inc()
	l.txBytes.Add(float64(len(frame) - nat.VirtioNetHdrLen))
	return true
}
