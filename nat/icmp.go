package nat

import "encoding/binary"

// EchoReply turns an ICMP echo request into the reply in place: it swaps
// the Ethernet and IPv4 addresses, sets type 0, recomputes the ICMP
// checksum over the whole message, sets TTL 64 and a fresh IPv4 header
// checksum. The request's ICMP checksum is verified first. It returns false,
// changing nothing, if p is not a decoded echo request (type 8, code 0) with
// a correct checksum. Deciding whether the destination is ours is the
// caller's job. PartialCsum is ignored: the ICMP checksum is always full.
func (p *Packet) EchoReply() bool {
	m := p.ICMP()
	if m == nil || m.Type() != ICMPTypeEcho || m.Code() != 0 {
		return false
	}
	if Fold(Checksum(m, 0)) != 0xffff {
		return false
	}
	eth := p.Ethernet()
	s, d := eth.Src(), eth.Dst()
	eth.SetSrc(d)
	eth.SetDst(s)
	ip := IPv4(p.Frame[p.L3:p.L4])
	copy(ip[ipv4SrcOffset:], p.Dst[:])
	copy(ip[ipv4DstOffset:], p.Src[:])
	p.Src, p.Dst = p.Dst, p.Src
	ip.SetTTL(64)
	ip.SetChecksum(ip.ComputeChecksum())
	m[0] = ICMPTypeEchoReply
	m.SetChecksum(0)
	m.SetChecksum(^Fold(Checksum(m, 0)))
	return true
}

// ICMPError describes the datagram quoted in an ICMP error (type 3
// destination unreachable, 11 time exceeded, 12 parameter problem).
type ICMPError struct {
	// Type and Code are the ICMP type and code.
	Type, Code uint8
	// InnerSrc and InnerDst are the quoted IPv4 addresses.
	InnerSrc, InnerDst Addr4
	// InnerProto is the quoted IPv4 protocol (TCP or UDP).
	InnerProto uint8
	// InnerSrcPort and InnerDstPort are the quoted ports.
	InnerSrcPort, InnerDstPort uint16
	// InnerSeq is the quoted TCP sequence number, valid if HasSeq.
	InnerSeq uint32
	// HasSeq says whether InnerSeq was quoted (TCP only).
	HasSeq bool

	innerOff int // frame offset of the quoted IPv4 header
}

// ParseICMPError fills e from an ICMP error message. It needs the quoted
// IPv4 header and at least 8 bytes of the quoted TCP or UDP header (the
// ports, and for TCP the sequence number). It returns ErrNotICMPError for
// other ICMP messages or quoted protocols and ErrShortICMP if too little is
// quoted.
func (p *Packet) ParseICMPError(e *ICMPError) error {
	*e = ICMPError{}
	m := p.ICMP()
	if m == nil {
		return ErrNotICMPError
	}
	switch m.Type() {
	case ICMPTypeDestUnreachable, ICMPTypeTimeExceeded, ICMPTypeParamProblem:
	default:
		return ErrNotICMPError
	}
	in := m[ICMPMinimumSize:]
	if len(in) < IPv4MinimumSize {
		return ErrShortICMP
	}
	if in[0]>>4 != 4 {
		return ErrNotICMPError
	}
	hl := int(in[0]&0x0f) * 4
	if hl < IPv4MinimumSize {
		return ErrNotICMPError
	}
	if len(in) < hl+8 {
		return ErrShortICMP
	}
	proto := in[ipv4ProtocolOffset]
	if proto != ProtoTCP && proto != ProtoUDP {
		return ErrNotICMPError
	}
	l4 := in[hl:]
	e.Type, e.Code = m.Type(), m.Code()
	e.InnerSrc = Addr4(in[ipv4SrcOffset : ipv4SrcOffset+4])
	e.InnerDst = Addr4(in[ipv4DstOffset : ipv4DstOffset+4])
	e.InnerProto = proto
	e.InnerSrcPort = binary.BigEndian.Uint16(l4[0:])
	e.InnerDstPort = binary.BigEndian.Uint16(l4[2:])
	if proto == ProtoTCP {
		e.InnerSeq = binary.BigEndian.Uint32(l4[4:])
		e.HasSeq = true
	}
	e.innerOff = p.L4 + ICMPMinimumSize
	return nil
}

// RewriteICMPError rewrites the quoted header described by e (as filled by
// ParseICMPError on this same packet): the quoted addresses and ports, the
// quoted TCP sequence number (if e.HasSeq and innerSeq != e.InnerSeq), the
// quoted IPv4 header checksum, and the quoted TCP or UDP checksum
// incrementally if its bytes are present (the quote may be truncated). It
// then recomputes the ICMP checksum over the whole message and updates e.
// The outer IPv4 header is not changed. It is a no-op if e was not filled
// from p.
func (p *Packet) RewriteICMPError(e *ICMPError, innerSrc Addr4, innerSrcPort uint16, innerDst Addr4, innerDstPort uint16, innerSeq uint32) {
	m := p.ICMP()
	if m == nil || e.innerOff != p.L4+ICMPMinimumSize {
		return
	}
	in := m[ICMPMinimumSize:]
	if len(in) < IPv4MinimumSize {
		return
	}
	hl := int(in[0]&0x0f) * 4
	if hl < IPv4MinimumSize || len(in) < hl+8 {
		return
	}
	ip := IPv4(in[:hl])
	l4 := in[hl:]
	csumOff, hasCsum := 0, false
	switch e.InnerProto {
	case ProtoTCP:
		csumOff = tcpChecksumOffset
		hasCsum = len(l4) >= tcpChecksumOffset+2
	case ProtoUDP:
		csumOff = 6
		hasCsum = binary.BigEndian.Uint16(l4[6:]) != 0 // 0: no UDP checksum
	default:
		return
	}
	var sum uint32 // one's-complement sum of (~old + new) over all edits
	edit32 := func(f []byte, v uint32) uint32 {
		old := binary.BigEndian.Uint32(f)
		binary.BigEndian.PutUint32(f, v)
		return uint32(^uint16(old>>16)) + uint32(^uint16(old)) + v>>16 + v&0xffff
	}
	edit16 := func(f []byte, v uint16) uint32 {
		old := binary.BigEndian.Uint16(f)
		binary.BigEndian.PutUint16(f, v)
		return uint32(^old) + uint32(v)
	}
	// Addresses: in the quoted IPv4 checksum and the L4 pseudo header.
	addrSum := uint32(Fold(edit32(ip[ipv4SrcOffset:], binary.BigEndian.Uint32(innerSrc[:])) +
		edit32(ip[ipv4DstOffset:], binary.BigEndian.Uint32(innerDst[:]))))
	ip.SetChecksum(^Fold(uint32(^ip.Checksum()) + addrSum))
	sum = addrSum
	sum += edit16(l4[0:], innerSrcPort)
	sum += edit16(l4[2:], innerDstPort)
	if e.HasSeq && innerSeq != e.InnerSeq {
		sum += edit32(l4[4:], innerSeq)
		e.InnerSeq = innerSeq
	}
	if hasCsum {
		c := binary.BigEndian.Uint16(l4[csumOff:])
		c = ^Fold(uint32(^c) + uint32(Fold(sum)))
		if e.InnerProto == ProtoUDP && c == 0 {
			c = 0xffff
		}
		binary.BigEndian.PutUint16(l4[csumOff:], c)
	}
	e.InnerSrc, e.InnerDst = innerSrc, innerDst
	e.InnerSrcPort, e.InnerDstPort = innerSrcPort, innerDstPort
	m.SetChecksum(0)
	m.SetChecksum(^Fold(Checksum(m, 0)))
}
