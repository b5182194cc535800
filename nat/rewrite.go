package nat

import "encoding/binary"

// SetTuple rewrites source and destination address and port in one pass:
// one IPv4 header checksum update and one L4 checksum update (RFC 1624
// eqn. 3, HC' = ~(~HC + ~m + m'), on the combined difference of all the
// changed words), respecting p.PartialCsum (partial mode: only the address
// change goes into the uncomplemented pseudo-header sum; ports are not part
// of it). Zero allocations.
//
// The frame and p's decoded fields (Src, Dst, SrcPort, DstPort) end up
// exactly as after SetSrc(src), SetSrcPort(sport), SetDst(dst),
// SetDstPort(dport), byte for byte: one's-complement sums of the same
// words give the same non-zero result in any grouping, and only an
// all-zero sum could tell 0x0000 from 0xffff, which happens either way or
// not at all. Like the setters, ports are rewritten only for TCP; UDP and
// ICMP get the addresses (UDP with its pseudo-header checksum update,
// ICMP with none, its checksum having no pseudo header); a fragment
// (L4 == 0) gets the addresses and the IPv4 checksum only. It is a no-op
// unless the frame decoded as IPv4.
func (p *Packet) SetTuple(src Addr4, sport uint16, dst Addr4, dport uint16) {
	if p.L3 == 0 || p.EtherType != EtherTypeIPv4 {
		return
	}
	ip := p.Frame[p.L3 : p.L3+IPv4MinimumSize]
	a := ip[ipv4SrcOffset : ipv4DstOffset+4]
	ns, nd := binary.BigEndian.Uint32(src[:]), binary.BigEndian.Uint32(dst[:])
	d := delta32(binary.BigEndian.Uint32(a[0:4]), ns) + delta32(binary.BigEndian.Uint32(a[4:8]), nd)
	binary.BigEndian.PutUint32(a[0:4], ns)
	binary.BigEndian.PutUint32(a[4:8], nd)
	c := ip[ipv4ChecksumOffset : ipv4ChecksumOffset+2]
	binary.BigEndian.PutUint16(c, ^Fold(uint32(^binary.BigEndian.Uint16(c))+d))
	p.Src, p.Dst = src, dst
	if p.L4 == 0 {
		return
	}
	if p.Proto != ProtoTCP {
		p.updateL4Pseudo(d)
		return
	}
	t := p.Frame[p.L4 : p.L4+TCPMinimumSize]
	ports := uint32(sport)<<16 | uint32(dport)
	ck := binary.BigEndian.Uint16(t[tcpChecksumOffset:])
	if p.PartialCsum {
		ck = Fold(uint32(ck) + d)
	} else {
		ck = ^Fold(uint32(^ck) + d + delta32(binary.BigEndian.Uint32(t[tcpSrcPortOffset:]), ports))
	}
	binary.BigEndian.PutUint32(t[tcpSrcPortOffset:], ports)
	binary.BigEndian.PutUint16(t[tcpChecksumOffset:], ck)
	p.SrcPort, p.DstPort = sport, dport
}

// SetTuple6 is the IPv6 twin of SetTuple (RFC 8200): it rewrites source
// and destination address and port in one pass with one L4 checksum
// update over the combined difference of the sixteen address words and
// the two port words (RFC 1624 eqn. 3). There is no IP header checksum in
// IPv6. In partial mode only the address change goes into the
// uncomplemented pseudo-header sum. Zero allocations.
//
// As for SetTuple, the frame and p's decoded fields (Src6, Dst6, SrcPort,
// DstPort) end up exactly as after SetSrc6(src), SetSrcPort(sport),
// SetDst6(dst), SetDstPort(dport). Ports are rewritten only for TCP; UDP
// and ICMPv6 get the addresses with their pseudo-header checksum update
// (the ICMPv6 checksum covers the pseudo header, RFC 4443 §2.3, unlike
// ICMPv4's); a packet Decode stopped in the extension headers (L4 == 0)
// gets the addresses only. It is a no-op unless the frame decoded as IPv6.
func (p *Packet) SetTuple6(src Addr16, sport uint16, dst Addr16, dport uint16) {
	if p.L3 == 0 || p.EtherType != EtherTypeIPv6 {
		return
	}
	a := p.Frame[p.L3+ipv6SrcOffset : p.L3+ipv6DstOffset+16]
	d := sumAddrsDelta(a, &src, &dst)
	p.Src6, p.Dst6 = src, dst
	if p.L4 == 0 {
		return
	}
	if p.Proto != ProtoTCP {
		p.updateL4Pseudo(d)
		return
	}
	t := p.Frame[p.L4 : p.L4+TCPMinimumSize]
	ports := uint32(sport)<<16 | uint32(dport)
	ck := binary.BigEndian.Uint16(t[tcpChecksumOffset:])
	if p.PartialCsum {
		ck = Fold(uint32(ck) + d)
	} else {
		ck = ^Fold(uint32(^ck) + d + delta32(binary.BigEndian.Uint32(t[tcpSrcPortOffset:]), ports))
	}
	binary.BigEndian.PutUint32(t[tcpSrcPortOffset:], ports)
	binary.BigEndian.PutUint16(t[tcpChecksumOffset:], ck)
	p.SrcPort, p.DstPort = sport, dport
}
