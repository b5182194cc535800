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
