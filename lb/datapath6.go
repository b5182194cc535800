package lb

import (
	"tslb/lb/link"
	"tslb/lb/snat"
	"tslb/nat"
)

// The IPv6 half of the per-packet path: neighbour discovery instead of
// ARP, ICMPv6 echo and errors; TCP goes to the same handlers as IPv4
// (fromClient, fromBackend), which work on lb's one address type.

func (w *worker) handleIPv6(frame []byte) {
	p := &w.pkt
	if p.Proto == nat.ProtoICMPv6 {
		if t := p.ICMPv6(); t != nil {
			switch t.Type() {
			case nat.ICMPv6TypeNeighborSolicitation, nat.ICMPv6TypeNeighborAdvertisement:
				w.handleNDP()
				return
			}
		}
	}
	oa := w.s.ownedAt(p.Dst6)
	if oa == nil {
		w.c.drop(dropNotOurs)
		return
	}
	switch p.Proto {
	case nat.ProtoTCP:
		w.handleTCP(frame, oa)
	case nat.ProtoICMPv6:
		if oa.kind != ownedKernel {
			w.handleICMP6(frame, oa.kind)
		}
	default:
		if oa.kind != ownedKernel {
			w.c.drop(dropUnsupportedProto)
		}
	}
}

// handleNDP answers Neighbor Solicitations for tslb's own addresses
// (RFC 4861 §7.2.3, §7.2.4) and learns neighbours from solicitations
// and advertisements, with the same rules as ARP: never an address tslb
// owns, only on-link sources.
func (w *worker) handleNDP() {
	p := &w.pkt
	l := w.in
	var nd nat.NDP
	if err := p.ParseNDP(&nd); err != nil {
		w.c.dropErr(err)
		return
	}
	if nd.Type == nat.ICMPv6TypeNeighborAdvertisement {
		if w.s.ownedAt(nd.Target) != nil {
			w.c.drop(dropARPSpoof) // someone claims one of tslb's addresses
			return
		}
		if nd.HasLinkAddr && l.onLink(nd.Target) {
			w.learn(l, nd.Target, nd.LinkAddr)
		}
		return
	}
	if w.s.ownedAt(p.Src6) != nil {
		w.c.drop(dropARPSpoof)
		return
	}
	forUs := w.s.linkOwned[l.idx][nd.Target]
	if nd.HasLinkAddr && !p.Src6.IsUnspecified() && (l.onLink(p.Src6) || linkLocal(p.Src6)) && forUs {
		w.learn(l, p.Src6, nd.LinkAddr)
	}
	if !forUs {
		w.c.drop(dropARPNotOurs)
		return
	}
	dst, ethDst, flags := p.NDPReply(&nd)
	buf := w.scratch()
	n := nat.BuildNA(buf[nat.VirtioNetHdrLen:], l.mac, ethDst, nd.Target, dst, nd.Target, flags)
	if n > 0 && w.sendQueue(l, buf[:nat.VirtioNetHdrLen+n]) {
		l.arpReply.Inc()
	}
}

// linkLocal reports fe80::/10: on-link by definition (RFC 4291 §2.5.6).
func linkLocal(a nat.Addr16) bool { return a[0] == 0xfe && a[1]&0xc0 == 0x80 }

// learn records ip at mac on l and sends what waited for it.
func (w *worker) learn(l *nic, ip nat.Addr16, mac nat.MAC) {
	for _, fr := range l.neigh.learn(ip, mac, w.now) {
		nat.Ethernet(fr[nat.VirtioNetHdrLen:]).SetDst(mac)
		w.keep(fr)
		w.sendQueue(l, fr)
	}
}

// handleICMP6 answers echo requests and translates ICMPv6 errors about a
// flow to its other side, the quoted header included (RFC 4443 §3):
// Packet Too Big reaches the client so that path-MTU discovery works
// through tslb.
func (w *worker) handleICMP6(frame []byte, kind ownedKind) {
	p := &w.pkt
	switch p.ICMPv6().Type() {
	case nat.ICMPv6TypeEchoRequest:
		if !p.EchoReply6() {
			w.c.drop(dropBadChecksum)
			return
		}
		clear(frame[:nat.VirtioNetHdrLen])
		nat.Ethernet(frame[nat.VirtioNetHdrLen:]).SetSrc(w.in.mac)
		if w.sendQueue(w.in, frame) {
			w.c.icmpEchoReplies.Add(1)
		}
		return
	case nat.ICMPv6TypeDestUnreachable, nat.ICMPv6TypePacketTooBig, nat.ICMPv6TypeTimeExceeded, nat.ICMPv6TypeParamProblem:
	default:
		w.c.drop(dropICMPUnsupported)
		return
	}
	e := &w.icmp6Err
	if err := p.ParseICMPv6Error(e); err != nil {
		w.c.dropErr(err)
		return
	}
	if e.InnerProto != nat.ProtoTCP {
		w.c.drop(dropICMPUnsupported)
		return
	}
	k := flowKey{e.InnerDst, e.InnerSrc, e.InnerDstPort, e.InnerSrcPort}
	owner := snat.PortOwner(k.dport, w.sh.workers)
	if kind == ownedVIP {
		owner = link.FlowOwner6(e.InnerDst, k.sport, k.dport, w.sh.workers)
	}
	if owner != w.id {
		w.handOff(w.peers[owner], w.in, frame)
		return
	}
	f := w.flows.get(k)
	if f == nil || f.released || (kind == ownedVIP && k != f.clientKey()) || (kind == ownedSNAT && k != f.backendKey()) {
		w.c.drop(dropICMPNoFlow)
		return
	}
	clear(frame[:nat.VirtioNetHdrLen])
	if kind == ownedVIP {
		p.SetSrc6(f.snat)
		p.SetDst6(f.baddr)
		seq := e.InnerSeq
		if f.px != nil {
			seq -= f.px.SeqDelta
		}
		p.RewriteICMPv6Error(e, f.baddr, f.bport, f.snat, f.sport, seq)
		w.c.icmpTranslated.Add(1)
		w.transmit(f.be.nic, f.be.hop, frame)
		return
	}
	p.SetSrc6(f.vip)
	p.SetDst6(f.client)
	if e.Type == nat.ICMPv6TypePacketTooBig {
		// Where tslb inserts timestamps toward the backend the client must
		// send 12 bytes less, or, on a path MTU under 1292, tslb stops
		// inserting them.
		f.x.PacketTooBigToClient(p)
	}
	p.RewriteICMPv6Error(e, f.client, f.cport, f.vip, f.vport, f.x.QuotedSeqToClient(e.InnerSeq))
	w.c.icmpTranslated.Add(1)
	w.transmit(f.clientNIC, f.clientHop, frame)
}
