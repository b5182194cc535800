package nat

import "encoding/binary"

// ICMPv6 types (RFC 4443 §2.1, RFC 4861 §4).
const (
	// ICMPv6TypeDestUnreachable is Destination Unreachable (RFC 4443 §3.1).
	ICMPv6TypeDestUnreachable = 1
	// ICMPv6TypePacketTooBig is Packet Too Big (RFC 4443 §3.2).
	ICMPv6TypePacketTooBig = 2
	// ICMPv6TypeTimeExceeded is Time Exceeded (RFC 4443 §3.3).
	ICMPv6TypeTimeExceeded = 3
	// ICMPv6TypeParamProblem is Parameter Problem (RFC 4443 §3.4).
	ICMPv6TypeParamProblem = 4
	// ICMPv6TypeEchoRequest is Echo Request (RFC 4443 §4.1).
	ICMPv6TypeEchoRequest = 128
	// ICMPv6TypeEchoReply is Echo Reply (RFC 4443 §4.2).
	ICMPv6TypeEchoReply = 129
	// ICMPv6TypeNeighborSolicitation is Neighbor Solicitation (RFC 4861 §4.3).
	ICMPv6TypeNeighborSolicitation = 135
	// ICMPv6TypeNeighborAdvertisement is Neighbor Advertisement (RFC 4861 §4.4).
	ICMPv6TypeNeighborAdvertisement = 136
)

// ICMPv6 is a view of an ICMPv6 message (RFC 4443 §2.1): type, code,
// checksum, then the message body. Decode checks that it has at least the
// 8 bytes of the fixed part every message tslb handles has.
type ICMPv6 []byte

// Type returns the "Type" field.
func (b ICMPv6) Type() uint8 { return b[0] }

// Code returns the "Code" field.
func (b ICMPv6) Code() uint8 { return b[1] }

// Checksum returns the "Checksum" field.
func (b ICMPv6) Checksum() uint16 { return binary.BigEndian.Uint16(b[2:]) }

// SetChecksum sets the "Checksum" field.
func (b ICMPv6) SetChecksum(v uint16) { binary.BigEndian.PutUint16(b[2:], v) }

// MTU returns the "MTU" field of a Packet Too Big (RFC 4443 §3.2). For
// Parameter Problem the same 32 bits are the "Pointer" (§3.4); for the
// other errors they are unused.
func (b ICMPv6) MTU() uint32 { return binary.BigEndian.Uint32(b[4:]) }

// ICMPv6Checksum computes the ICMPv6 checksum of msg sent from src to dst
// (RFC 4443 §2.3: the IPv6 pseudo header of RFC 8200 §8.1 with Next
// Header 58, then the message), with the checksum field treated as zero.
func ICMPv6Checksum(src, dst Addr16, msg []byte) uint16 {
	s := PseudoHeaderSum6(src, dst, ProtoICMPv6, uint32(len(msg)))
	if len(msg) < 4 {
		return ^Fold(Checksum(msg, s))
	}
	s = Checksum(msg[:2], s)
	return ^Fold(Checksum(msg[4:], s))
}

// icmpv6Valid reports whether the full ICMPv6 checksum of the decoded
// message m of p verifies.
func (p *Packet) icmpv6Valid(m ICMPv6) bool {
	return Fold(Checksum(m, PseudoHeaderSum6(p.Src6, p.Dst6, ProtoICMPv6, uint32(len(m))))) == 0xffff
}

// EchoReply6 turns an ICMPv6 Echo Request into the Echo Reply in place
// (RFC 4443 §4.2): it swaps the Ethernet and IPv6 addresses, sets type
// 129, hop limit 64, and updates the checksum. The request's checksum is
// verified first (over the pseudo header: unlike ICMPv4, the ICMPv6
// checksum covers the addresses). Swapping the addresses does not change
// the pseudo-header sum, so the update only covers the type. It returns
// false, changing nothing, if p is not a decoded Echo Request (type 128,
// code 0) with a correct checksum, if its destination is multicast (a
// reply must come from a unicast address, RFC 4443 §4.2, which the swap
// cannot give), or if its source is (no packet may carry a multicast
// source, RFC 4291 §2.7, and the reply would go to it). Extension headers
// of the request are kept as they are.
// Deciding whether the destination is ours is the caller's job.
// PartialCsum is ignored: the checksum is always full.
func (p *Packet) EchoReply6() bool {
	m := p.ICMPv6()
	if m == nil || m.Type() != ICMPv6TypeEchoRequest || m.Code() != 0 || p.Dst6.IsMulticast() || p.Src6.IsMulticast() {
		return false
	}
	if !p.icmpv6Valid(m) {
		return false
	}
	eth := p.Ethernet()
	s, d := eth.Src(), eth.Dst()
	eth.SetSrc(d)
	eth.SetDst(s)
	ip := IPv6(p.Frame[p.L3 : p.L3+IPv6HeaderLen])
	ip.SetSrc(p.Dst6)
	ip.SetDst(p.Src6)
	p.Src6, p.Dst6 = p.Dst6, p.Src6
	ip.SetHopLimit(64)
	m[0] = ICMPv6TypeEchoReply
	m.SetChecksum(update16(m.Checksum(), ICMPv6TypeEchoRequest<<8, ICMPv6TypeEchoReply<<8))
	return true
}

// ICMPv6Error describes the packet quoted in an ICMPv6 error message
// (RFC 4443 §3: Destination Unreachable, Packet Too Big, Time Exceeded,
// Parameter Problem), the IPv6 twin of ICMPError.
type ICMPv6Error struct {
	// Type and Code are the ICMPv6 type and code.
	Type, Code uint8
	// Param is the 32-bit field after the checksum: the MTU of a Packet
	// Too Big (§3.2), the Pointer of a Parameter Problem (§3.4, an offset
	// into the quoted packet, which rewriting does not move), unused
	// otherwise.
	Param uint32
	// InnerSrc and InnerDst are the quoted IPv6 addresses.
	InnerSrc, InnerDst Addr16
	// InnerProto is the quoted upper-layer protocol (TCP or UDP).
	InnerProto uint8
	// InnerSrcPort and InnerDstPort are the quoted ports.
	InnerSrcPort, InnerDstPort uint16
	// InnerSeq is the quoted TCP sequence number, valid if HasSeq.
	InnerSeq uint32
	// HasSeq says whether InnerSeq was quoted (TCP only).
	HasSeq bool

	innerOff int // frame offset of the quoted IPv6 header
	innerL4  int // frame offset of the quoted TCP or UDP header
}

// ParseICMPv6Error fills e from an ICMPv6 error message (types 1 to 4).
// It needs the quoted fixed IPv6 header, its extension headers (walked as
// Decode does: a quoted fragment other than an atomic one, a misplaced
// Hop-by-Hop header, a Routing header with segments left, or another
// upper layer than TCP or UDP give ErrNotICMPError) and at least 8 bytes
// of the quoted TCP or UDP header (the ports, and for TCP the sequence
// number). A quote too short for any of these gives ErrShortICMP. RFC
// 4443 §2.4(c) has the sender quote as much as fits in 1280 bytes, so
// real quotes are whole headers. The checksum is not verified; the
// rewrite preserves it either way.
func (p *Packet) ParseICMPv6Error(e *ICMPv6Error) error {
	*e = ICMPv6Error{}
	m := p.ICMPv6()
	if m == nil {
		return ErrNotICMPError
	}
	switch m.Type() {
	case ICMPv6TypeDestUnreachable, ICMPv6TypePacketTooBig, ICMPv6TypeTimeExceeded, ICMPv6TypeParamProblem:
	default:
		return ErrNotICMPError
	}
	in := m[ICMPMinimumSize:]
	if len(in) < IPv6HeaderLen {
		return ErrShortICMP
	}
	if in[0]>>4 != 6 {
		return ErrNotICMPError
	}
	ext, proto, err := walkExt(in[IPv6HeaderLen:], in[ipv6NextHeaderOffset])
	switch err {
	case nil:
	case ErrShortExtHeader:
		return ErrShortICMP
	default:
		return ErrNotICMPError
	}
	if proto != ProtoTCP && proto != ProtoUDP {
		return ErrNotICMPError
	}
	l4 := in[IPv6HeaderLen+ext:]
	if len(l4) < 8 {
		return ErrShortICMP
	}
	e.Type, e.Code = m.Type(), m.Code()
	e.Param = m.MTU()
	e.InnerSrc = IPv6(in).Src()
	e.InnerDst = IPv6(in).Dst()
	e.InnerProto = proto
	e.InnerSrcPort = binary.BigEndian.Uint16(l4[0:])
	e.InnerDstPort = binary.BigEndian.Uint16(l4[2:])
	if proto == ProtoTCP {
		e.InnerSeq = binary.BigEndian.Uint32(l4[4:])
		e.HasSeq = true
	}
	e.innerOff = p.L4 + ICMPMinimumSize
	e.innerL4 = e.innerOff + IPv6HeaderLen + ext
	return nil
}

// RewriteICMPv6Error rewrites the quoted packet described by e (as filled
// by ParseICMPv6Error on this same packet): the quoted addresses, ports
// and, if e.HasSeq and innerSeq != e.InnerSeq, the quoted TCP sequence
// number; the quoted TCP or UDP checksum incrementally if its bytes are
// present (the quote may be truncated; the quoted pseudo header covers the
// quoted addresses); and the ICMPv6 checksum incrementally for every byte
// it changed (the outer pseudo header is left to SetTuple6 or
// SetSrc6/SetDst6, which update the same field for the outer addresses).
// In partial-checksum mode the ICMPv6 field is not touched: quoted bytes
// are not in the pseudo header. There is no quoted header checksum in
// IPv6. It updates e. It is a no-op if e was not filled from p.
//
// Unlike RewriteICMPError, which recomputes the ICMP checksum, every
// update is incremental (RFC 1624): a message that arrived with a bad
// checksum keeps it, so the client drops it as it would have.
func (p *Packet) RewriteICMPv6Error(e *ICMPv6Error, innerSrc Addr16, innerSrcPort uint16, innerDst Addr16, innerDstPort uint16, innerSeq uint32) {
	m := p.ICMPv6()
	if m == nil || e.innerOff != p.L4+ICMPMinimumSize || e.innerL4 < e.innerOff+IPv6HeaderLen ||
		e.innerL4 > p.L4+p.L4Len-8 {
		return
	}
	in := p.Frame[e.innerOff : p.L4+p.L4Len]
	l4 := p.Frame[e.innerL4 : p.L4+p.L4Len]
	csumOff, hasCsum := 0, false
	switch e.InnerProto {
	case ProtoTCP:
		csumOff = tcpChecksumOffset
		hasCsum = len(l4) >= tcpChecksumOffset+2
	case ProtoUDP:
		csumOff = 6
		hasCsum = binary.BigEndian.Uint16(l4[6:]) != 0 // 0: none (invalid in IPv6, left alone)
	default:
		return
	}
	edit16 := func(f []byte, v uint16) uint32 {
		old := binary.BigEndian.Uint16(f)
		binary.BigEndian.PutUint16(f, v)
		return uint32(^old) + uint32(v)
	}
	// Addresses: in the quoted L4 pseudo header and in the ICMPv6 message.
	sum := sumAddrDelta(in[ipv6SrcOffset:], &innerSrc) + sumAddrDelta(in[ipv6DstOffset:], &innerDst)
	sum += edit16(l4[0:], innerSrcPort)
	sum += edit16(l4[2:], innerDstPort)
	if e.HasSeq && innerSeq != e.InnerSeq {
		sum += delta32(binary.BigEndian.Uint32(l4[4:]), innerSeq)
		binary.BigEndian.PutUint32(l4[4:], innerSeq)
		e.InnerSeq = innerSeq
	}
	msum := uint32(Fold(sum)) // what the ICMPv6 message's sum changed by so far
	if hasCsum {
		old := binary.BigEndian.Uint16(l4[csumOff:])
		c := ^Fold(uint32(^old) + uint32(Fold(sum)))
		if e.InnerProto == ProtoUDP && c == 0 {
			c = 0xffff
		}
		binary.BigEndian.PutUint16(l4[csumOff:], c)
		msum += uint32(^old) + uint32(c)
	}
	if !p.PartialCsum {
		m.SetChecksum(^Fold(uint32(^m.Checksum()) + uint32(Fold(msum))))
	}
	e.InnerSrc, e.InnerDst = innerSrc, innerDst
	e.InnerSrcPort, e.InnerDstPort = innerSrcPort, innerDstPort
}

// PacketTooBigToClient adjusts p, a decoded Packet Too Big from the
// backend's side about x's flow, before it goes to the client, and returns
// the MTU the client gets (0 if p is no Packet Too Big). tslb adds no
// encapsulation, so the MTU normally passes unchanged. In TSActSynth every
// client segment reaches the backend 12 bytes longer, so the MTU is
// lowered by 12 (LowerPacketTooBigMTU), unless the path MTU is under 1292:
// the client would then have to send packets under 1280 bytes, which no
// IPv6 node does (RFC 8201 §4), and its 1280-byte packets would grow to
// 1292 at tslb and meet the same Packet Too Big for ever (a black hole).
// There x falls back instead (Fallback: nothing is inserted toward the
// backend any more) and the MTU passes unchanged. Linux backends accept
// segments without the option on a connection that negotiated timestamps
// (RFC 7323 §3.2 lets a receiver drop them; Linux does not), and the
// TIME_WAIT ledger keeps LastTS, the newest TSval the backend saw.
func (x *Translation) PacketTooBigToClient(p *Packet) uint32 {
	m := p.ICMPv6()
	if m == nil || m.Type() != ICMPv6TypePacketTooBig {
		return 0
	}
	mtu := m.MTU()
	if x.action() != TSActSynth {
		return mtu
	}
	if mtu < IPv6MinMTU+tsOptLen {
		x.Fallback = true
		return mtu
	}
	mtu, _ = p.LowerPacketTooBigMTU(tsOptLen)
	return mtu
}

// LowerPacketTooBigMTU lowers the MTU advertised by an ICMPv6 Packet Too
// Big (RFC 4443 §3.2) by by bytes, to no less than IPv6MinMTU, updating
// the checksum (full mode; in partial mode the field is left alone, the
// MTU not being in the pseudo header). It returns the MTU the message now
// carries and whether p is a Packet Too Big; by 0 changes nothing.
//
// tslb adds no encapsulation, so a Packet Too Big forwarded to a client
// normally keeps its MTU (call nothing). The exception is a flow whose
// client->backend segments tslb grows: in TSActSynth every one carries 12
// more bytes of TCP options than the client sent, so a Packet Too Big
// from the backend side should reach that client lowered by 12. An MTU
// already at or below 1280 is left alone: RFC 8201 §4 forbids a node to
// go below 1280 anyway, and the SYN-ACK MSS clamp of TSActSynth keeps those
// segments within it.
func (p *Packet) LowerPacketTooBigMTU(by uint32) (uint32, bool) {
	m := p.ICMPv6()
	if m == nil || m.Type() != ICMPv6TypePacketTooBig {
		return 0, false
	}
	old := m.MTU()
	mtu := old
	switch {
	case old <= IPv6MinMTU:
	case old-IPv6MinMTU < by:
		mtu = IPv6MinMTU
	default:
		mtu = old - by
	}
	if mtu == old {
		return old, true
	}
	binary.BigEndian.PutUint32(m[4:], mtu)
	if !p.PartialCsum {
		m.SetChecksum(update32(m.Checksum(), old, mtu))
	}
	return mtu, true
}
