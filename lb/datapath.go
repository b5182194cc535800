package lb

import (
	"context"
	"errors"
	"net"

	"tslb/config"
	"tslb/nat"
)

// frameBufSize holds a virtio_net_hdr and the largest GSO superframe the
// kernel hands an AF_PACKET socket (64 KiB IPv4 packet + Ethernet).
const frameBufSize = nat.VirtioNetHdrLen + nat.EthernetHeaderLen + 65535 + 64

// worker reads one link and forwards what it reads. It owns its buffers
// and decoded packet, so the hot path allocates nothing.
type worker struct {
	b       *Balancer
	in      *link
	buf     []byte
	scratch []byte
	pkt     nat.Packet
	vh      nat.VirtioNetHdr
	icmpErr nat.ICMPError
}

func (b *Balancer) newWorker(l *link) *worker {
	return &worker{b: b, in: l, buf: make([]byte, frameBufSize), scratch: make([]byte, 128)}
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
	w.in.rxPackets.Inc()
	// A read shorter than the virtio header (dropped below as short_frame)
	// must not make the counter go negative: Counter.Add panics.
	w.in.rxBytes.Add(float64(max(n-nat.VirtioNetHdrLen, 0)))
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
	forUs := l.owned[tip]
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
	kind := b.owned[p.Dst]
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
	svc := b.services[svcKey{p.Dst, p.DstPort}]
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
	if f != nil && isSYN(p.TCPFlags) {
		// A new SYN on a finished flow reopens the tuple (the client reused
		// its port): end the old flow, as conntrack does for a SYN on a
		// TIME_WAIT/CLOSE entry.
		if st := nat.ConnState(f.state.Load()); st == nat.StateTimeWait || st == nat.StateClosed {
			b.removeFlow(f)
			f = nil
		}
	}
	if f == nil {
		if !isSYN(p.TCPFlags) {
			b.m.drop(dropNoFlow)
			return
		}
		if f = w.newFlow(svc, k); f == nil {
			return
		}
	}
	if !w.track(f, nat.SideClient) {
		return
	}
	if svc.ts == config.TSStrip && p.TCPHdrLen > 20 && p.StripTimestamps() {
		b.m.tsStripped.Inc()
	}
	if !p.DecTTL() {
		b.m.drop(dropTTLExpired)
		return
	}
	p.SetSrc(f.snat)
	p.SetSrcPort(f.sport)
	p.SetDst(f.baddr)
	p.SetDstPort(f.bport)
	w.transmit(f.be.link, f.be.hop, n)
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
	if !w.track(f, nat.SideBackend) {
		return
	}
	if f.svc.ts == config.TSStrip && p.TCPHdrLen > 20 && p.StripTimestamps() {
		b.m.tsStripped.Inc()
	}
	if !p.DecTTL() {
		b.m.drop(dropTTLExpired)
		return
	}
	p.SetSrc(f.vip)
	p.SetSrcPort(f.vport)
	p.SetDst(f.client)
	p.SetDstPort(f.cport)
	w.transmit(f.clientLink, f.clientHop, n)
}

// track feeds the segment to the flow's tracker. It returns false when the
// segment must be dropped (an RST outside the window).
func (w *worker) track(f *flow, from nat.Side) bool {
	p := &w.pkt
	f.mu.Lock()
	st, rstIgnored := f.tr.Update(from, p.TCPFlags, p.Seq, p.Ack, p.Payload, 0, false)
	f.mu.Unlock()
	f.state.Store(uint32(st))
	f.last.Store(w.b.now.Load())
	if rstIgnored {
		w.b.m.drop(dropRSTOutOfWindow)
		return false
	}
	return true
}

// newFlow creates the flow for a client SYN: backend, SNAT tuple, routes.
func (w *worker) newFlow(svc *service, k flowKey) *flow {
	b := w.b
	if !b.flows.reserve() {
		b.m.drop(dropTableFull)
		svc.refused[refusedTableFull].Inc()
		return nil
	}
	h := k.hash(b.seed)
	be := svc.sched.Pick(h)
	if be == nil {
		b.flows.unreserve()
		b.m.drop(dropNoBackend)
		svc.refused[refusedNoBackend].Inc()
		return nil
	}
	pool, port, ok := b.snat.alloc(be.ap, h)
	if !ok {
		b.flows.unreserve()
		b.m.drop(dropSNATExhausted)
		svc.refused[refusedSNAT].Inc()
		return nil
	}
	cl, hop := b.route(k.src)
	if cl == nil {
		pool.free(port)
		b.flows.unreserve()
		b.m.drop(dropNoRoute)
		return nil
	}
	now := b.now.Load()
	f := &flow{svc: svc, be: be, pool: pool,
		client: k.src, vip: k.dst, cport: k.sport, vport: k.dport,
		snat: pool.snat, sport: port, baddr: be.addr, bport: be.port,
		clientLink: cl, clientHop: hop, created: now}
	f.last.Store(now)
	if old, ok := b.flows.insert(f); !ok {
		pool.free(port)
		b.flows.unreserve()
		return old
	}
	svc.created.Inc()
	svc.active.Inc()
	be.created.Inc()
	be.active.Inc()
	return f
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
	if f == nil || (kind == ownedVIP && k != f.clientKey()) || (kind == ownedSNAT && k != f.backendKey()) {
		b.m.drop(dropICMPNoFlow)
		return
	}
	clear(w.buf[:nat.VirtioNetHdrLen])
	if kind == ownedVIP {
		// About a segment tslb sent to the client: tell the backend, as if
		// about the segment it sent to the SNAT address.
		p.SetSrc(f.snat)
		p.SetDst(f.baddr)
		p.RewriteICMPError(e, f.baddr, f.bport, f.snat, f.sport, e.InnerSeq)
		b.m.icmpTranslated.Inc()
		w.transmit(f.be.link, f.be.hop, n)
		return
	}
	// About a segment tslb sent to the backend: tell the client.
	p.SetSrc(f.vip)
	p.SetDst(f.client)
	p.RewriteICMPError(e, f.client, f.cport, f.vip, f.vport, e.InnerSeq)
	b.m.icmpTranslated.Inc()
	w.transmit(f.clientLink, f.clientHop, n)
}

// transmit sends w.buf[:n] out of link l to next hop hop, resolving its MAC
// through tslb's neighbour table.
func (w *worker) transmit(l *link, hop nat.Addr4, n int) {
	b := w.b
	// The kernel does not accept DATA_VALID on transmit; NEEDS_CSUM and the
	// GSO fields pass through unchanged (header lengths are unchanged).
	w.buf[0] &^= nat.VirtioNetHdrFDataValid
	eth := nat.Ethernet(w.buf[nat.VirtioNetHdrLen:n])
	eth.SetSrc(l.mac)
	now := b.now.Load()
	mac, ok, probe := l.neigh.lookup(hop, now)
	if probe {
		w.sendARPRequest(l, hop)
	}
	if !ok {
		queued, probe := l.neigh.enqueue(hop, w.buf[:n], now)
		if probe {
			w.sendARPRequest(l, hop)
		}
		if !queued {
			b.m.drop(dropNeighbour)
		}
		return
	}
	eth.SetDst(mac)
	w.write(l, w.buf[:n])
}

func (w *worker) flushPending(l *link, mac nat.MAC, frame []byte) {
	nat.Ethernet(frame[nat.VirtioNetHdrLen:]).SetDst(mac)
	w.write(l, frame)
}

func (w *worker) sendARPRequest(l *link, ip nat.Addr4) {
	n := nat.BuildARP(w.scratch[nat.VirtioNetHdrLen:], nat.ARPRequest, l.mac, broadcast, l.mac, l.arpFrom, nat.MAC{}, ip)
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
