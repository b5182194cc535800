package nat

import (
	"encoding/binary"
	"math/bits"
)

// Checksum returns the Internet checksum sum (RFC 1071) of b added to
// initial: the one's-complement sum of b as big-endian 16-bit words (an odd
// trailing byte is the high byte of a word padded with zero), plus initial,
// folded to 16 bits. The result is therefore always <= 0xffff and can be
// passed as initial to a further call, or added to a few other sums, without
// overflow. It is not complemented: the checksum field value is
// ^Fold(sum). Summing a slice that starts at an odd offset of the checksummed
// data gives a byte-swapped result; callers keep even alignment.
func Checksum(b []byte, initial uint32) uint32 {
	acc := uint64(initial)
	for len(b) >= 16 {
		acc += uint64(binary.BigEndian.Uint32(b[0:4])) +
			uint64(binary.BigEndian.Uint32(b[4:8])) +
			uint64(binary.BigEndian.Uint32(b[8:12])) +
			uint64(binary.BigEndian.Uint32(b[12:16]))
		b = b[16:]
	}
	for len(b) >= 4 {
		acc += uint64(binary.BigEndian.Uint32(b))
		b = b[4:]
	}
	if len(b) >= 2 {
		acc += uint64(binary.BigEndian.Uint16(b))
		b = b[2:]
	}
	if len(b) == 1 {
		acc += uint64(b[0]) << 8
	}
	// Fold 64 -> 32 -> 16 bits (RFC 1071 §2(C): end-around carry).
	acc = (acc >> 32) + (acc & 0xffffffff)
	acc = (acc >> 32) + (acc & 0xffffffff)
	return uint32(Fold(uint32(acc)))
}

// Fold folds the carries of a 32-bit one's-complement sum into 16 bits. It
// does not complement: a checksum field holds ^Fold(sum).
func Fold(sum uint32) uint16 {
	sum = (sum >> 16) + (sum & 0xffff)
	sum += sum >> 16
	return uint16(sum)
}

// PseudoHeaderSum returns the (unfolded, non-complemented) sum of the IPv4
// pseudo header for an L4 checksum: addresses, protocol and L4 length.
func PseudoHeaderSum(src, dst Addr4, proto uint8, l4len uint16) uint32 {
	return uint32(binary.BigEndian.Uint16(src[0:2])) + uint32(binary.BigEndian.Uint16(src[2:4])) +
		uint32(binary.BigEndian.Uint16(dst[0:2])) + uint32(binary.BigEndian.Uint16(dst[2:4])) +
		uint32(proto) + uint32(l4len)
}

// PseudoHeaderSum6 returns the (unfolded, non-complemented) sum of the
// IPv6 pseudo header for an upper-layer checksum (RFC 8200 §8.1): source
// and destination address, the upper-layer packet length as 32 bits and
// the next-header value (of the upper layer, not of the first extension
// header). The result is below 2^18, so adding it to a few folded sums
// cannot overflow.
func PseudoHeaderSum6(src, dst Addr16, nextHeader uint8, l4len uint32) uint32 {
	acc := uint64(binary.BigEndian.Uint32(src[0:])) + uint64(binary.BigEndian.Uint32(src[4:])) +
		uint64(binary.BigEndian.Uint32(src[8:])) + uint64(binary.BigEndian.Uint32(src[12:])) +
		uint64(binary.BigEndian.Uint32(dst[0:])) + uint64(binary.BigEndian.Uint32(dst[4:])) +
		uint64(binary.BigEndian.Uint32(dst[8:])) + uint64(binary.BigEndian.Uint32(dst[12:]))
	return fold64(acc) + l4len>>16 + l4len&0xffff + uint32(nextHeader)
}

// TCPChecksum6 computes the full TCP checksum of the segment tcp (header
// and payload) sent from src to dst over IPv6, with the checksum field
// treated as zero. The pseudo-header destination is dst: tslb only
// decodes packets whose Routing header, if any, has no segments left, so
// dst is the final destination RFC 8200 §8.1 asks for.
func TCPChecksum6(src, dst Addr16, tcp []byte) uint16 {
	s := PseudoHeaderSum6(src, dst, ProtoTCP, uint32(len(tcp)))
	if len(tcp) < tcpChecksumOffset+2 {
		return ^Fold(Checksum(tcp, s))
	}
	s = Checksum(tcp[:tcpChecksumOffset], s)
	s = Checksum(tcp[tcpChecksumOffset+2:], s)
	return ^Fold(s)
}

// TCPChecksum computes the full TCP checksum of the segment tcp (header and
// payload) sent from src to dst, with the checksum field treated as zero.
// It is meant for tests, generated packets and software completion.
func TCPChecksum(src, dst Addr4, tcp []byte) uint16 {
	s := PseudoHeaderSum(src, dst, ProtoTCP, uint16(len(tcp)))
	if len(tcp) < tcpChecksumOffset+2 {
		return ^Fold(Checksum(tcp, s))
	}
	s = Checksum(tcp[:tcpChecksumOffset], s)
	s = Checksum(tcp[tcpChecksumOffset+2:], s)
	return ^Fold(s)
}

// CompletePartial completes an offloaded checksum in software: it sums
// frame[start:] (whose checksum field at frame[start+offset:] holds the
// pseudo-header sum, as in Linux CHECKSUM_PARTIAL) and stores the
// complemented result at frame[start+offset:]. start and offset are the
// virtio-net header's csum_start and csum_offset. The sum runs to the end
// of frame, so frame must not carry Ethernet padding. Out-of-range
// arguments make it a no-op.
func CompletePartial(frame []byte, start, offset int) {
	if start < 0 || offset < 0 || start > len(frame) || offset > len(frame)-start-2 {
		return
	}
	s := Checksum(frame[start:], 0)
	binary.BigEndian.PutUint16(frame[start+offset:], ^Fold(s))
}

// update16 applies RFC 1624 eqn. 3, HC' = ~(~HC + ~m + m'), for one
// 16-bit word changing from old to new under a full checksum hc.
func update16(hc, old, new uint16) uint16 {
	return ^Fold(uint32(^hc) + uint32(^old) + uint32(new))
}

// update32 is update16 for a 32-bit field (two 16-bit words).
func update32(hc uint16, old, new uint32) uint16 {
	return ^Fold(uint32(^hc) + uint32(^uint16(old>>16)) + uint32(^uint16(old)) +
		new>>16 + new&0xffff)
}

// update64 is update16 for two 32-bit fields changing at once.
func update64(hc uint16, old1, old2, new1, new2 uint32) uint16 {
	return ^Fold(uint32(^hc) +
		uint32(^uint16(old1>>16)) + uint32(^uint16(old1)) + new1>>16 + new1&0xffff +
		uint32(^uint16(old2>>16)) + uint32(^uint16(old2)) + new2>>16 + new2&0xffff)
}

// delta32 returns ~old + new over the two 16-bit words of a 32-bit field,
// the part of RFC 1624 eqn. 3 that does not depend on the checksum.
func delta32(old, new uint32) uint32 {
	return uint32(^uint16(old>>16)) + uint32(^uint16(old)) + new>>16 + new&0xffff
}

// sumAddrDelta returns the one's-complement sum of ~old + new over the
// eight 16-bit words of a 128-bit address field f changing to a, folded
// to 16 bits (RFC 1624 eqn. 3, the part that does not depend on the
// checksum), and writes a into f.
func sumAddrDelta(f []byte, a *Addr16) uint32 {
	le := binary.LittleEndian
	_ = f[15]
	acc, c := bits.Add64(^le.Uint64(f[0:]), ^le.Uint64(f[8:]), 0)
	acc, c = bits.Add64(acc, le.Uint64(a[0:]), c)
	acc, c = bits.Add64(acc, le.Uint64(a[8:]), c)
	copy(f[:16], a[:])
	return foldLE64(acc, c)
}

// sumAddrsDelta is sumAddrDelta for the 32 bytes of an IPv6 source and
// destination address changing to src and dst at once (SetTuple6).
func sumAddrsDelta(f []byte, src, dst *Addr16) uint32 {
	le := binary.LittleEndian
	_ = f[31]
	acc, c := bits.Add64(^le.Uint64(f[0:]), ^le.Uint64(f[8:]), 0)
	acc, c = bits.Add64(acc, ^le.Uint64(f[16:]), c)
	acc, c = bits.Add64(acc, ^le.Uint64(f[24:]), c)
	acc, c = bits.Add64(acc, le.Uint64(src[0:]), c)
	acc, c = bits.Add64(acc, le.Uint64(src[8:]), c)
	acc, c = bits.Add64(acc, le.Uint64(dst[0:]), c)
	acc, c = bits.Add64(acc, le.Uint64(dst[8:]), c)
	copy(f[0:16], src[:])
	copy(f[16:32], dst[:])
	return foldLE64(acc, c)
}

// foldLE64 finishes a one's-complement sum of little-endian 64-bit words
// (acc with a pending carry c) as the big-endian 16-bit sum. RFC 1071
// §2(B): the sum is independent of byte order up to swapping the bytes
// of the result, so the words are loaded without byte swaps, folded
// (end-around carries, RFC 1071 §2(C)) and the 16-bit result swapped
// once. A complemented 64-bit word is the four complemented 16-bit words
// in any byte order, so ~old needs no swap either.
func foldLE64(acc, c uint64) uint32 {
	acc, c = bits.Add64(acc, 0, c)
	acc += c // acc was all ones only if c is now 1: no further carry
	t := acc>>32 + acc&0xffffffff
	t = t>>16 + t&0xffff
	t = t>>16 + t&0xffff
	t = t>>16 + t&0xffff
	return uint32(bits.ReverseBytes16(uint16(t)))
}

// fold64 folds a sum of 32-bit words to 16 bits (end-around carry).
func fold64(acc uint64) uint32 {
	acc = (acc >> 32) + (acc & 0xffffffff)
	acc = (acc >> 32) + (acc & 0xffffffff)
	return uint32(Fold(uint32(acc)))
}

// updateL4Pseudo patches the L4 checksum for a pseudo-header change whose
// delta32 is d, in full or partial mode.
func (p *Packet) updateL4Pseudo(d uint32) {
	if p.L4 == 0 {
		return
	}
	var off int
	switch p.Proto {
	case ProtoTCP:
		off = p.L4 + tcpChecksumOffset
	case ProtoUDP:
		if p.L4Len < 8 || p.L4+8 > len(p.Frame) {
			return
		}
		off = p.L4 + 6
	case ProtoICMPv6:
		// Unlike ICMPv4, the ICMPv6 checksum covers the pseudo header
		// (RFC 4443 §2.3). Decode guarantees 8 bytes.
		if p.EtherType != EtherTypeIPv6 {
			return
		}
		off = p.L4 + 2
	default:
		return
	}
	f := p.Frame[off : off+2]
	c := binary.BigEndian.Uint16(f)
	switch {
	case p.PartialCsum:
		c = Fold(uint32(c) + d)
	case p.Proto == ProtoUDP:
		if c == 0 { // no UDP checksum (RFC 768)
			return
		}
		if c = ^Fold(uint32(^c) + d); c == 0 {
			c = 0xffff
		}
	default:
		c = ^Fold(uint32(^c) + d)
	}
	binary.BigEndian.PutUint16(f, c)
}

// setAddr writes a at frame offset p.L3+off and fixes both checksums.
func (p *Packet) setAddr(off int, a Addr4) bool {
	if p.L3 == 0 || p.EtherType != EtherTypeIPv4 {
		return false
	}
	ip := p.Frame[p.L3 : p.L3+IPv4MinimumSize]
	f := ip[off : off+4]
	new := binary.BigEndian.Uint32(a[:])
	d := delta32(binary.BigEndian.Uint32(f), new)
	binary.BigEndian.PutUint32(f, new)
	c := ip[ipv4ChecksumOffset : ipv4ChecksumOffset+2]
	binary.BigEndian.PutUint16(c, ^Fold(uint32(^binary.BigEndian.Uint16(c))+d))
	p.updateL4Pseudo(d)
	return true
}

// SetSrc rewrites the IPv4 source address, updating the IPv4 header
// checksum and the TCP (or UDP) checksum's pseudo-header part in either
// checksum mode. It is a no-op unless the frame decoded as IPv4.
func (p *Packet) SetSrc(a Addr4) {
	if p.setAddr(ipv4SrcOffset, a) {
		p.Src = a
	}
}

// SetDst rewrites the IPv4 destination address like SetSrc.
func (p *Packet) SetDst(a Addr4) {
	if p.setAddr(ipv4DstOffset, a) {
		p.Dst = a
	}
}

// setAddr6 writes a at frame offset p.L3+off (the source or destination
// address of the IPv6 header) and fixes the L4 checksum's pseudo-header
// part. IPv6 has no header checksum.
func (p *Packet) setAddr6(off int, a *Addr16) bool {
	if p.L3 == 0 || p.EtherType != EtherTypeIPv6 {
		return false
	}
	p.updateL4Pseudo(sumAddrDelta(p.Frame[p.L3+off:p.L3+off+16], a))
	return true
}

// SetSrc6 rewrites the IPv6 source address, updating the TCP, UDP or
// ICMPv6 checksum's pseudo-header part (RFC 8200 §8.1) in either checksum
// mode: RFC 1624 eqn. 3 over the address's eight 16-bit words. It is a
// no-op unless the frame decoded as IPv6.
func (p *Packet) SetSrc6(a Addr16) {
	if p.setAddr6(ipv6SrcOffset, &a) {
		p.Src6 = a
	}
}

// SetDst6 rewrites the IPv6 destination address like SetSrc6.
func (p *Packet) SetDst6(a Addr16) {
	if p.setAddr6(ipv6DstOffset, &a) {
		p.Dst6 = a
	}
}

// tcpSet16 writes a 16-bit TCP header field at off and, in full mode only,
// updates the TCP checksum. It reports whether the packet is TCP.
func (p *Packet) tcpSet16(off int, v uint16) bool {
	if p.L4 == 0 || p.Proto != ProtoTCP {
		return false
	}
	t := p.Frame[p.L4 : p.L4+TCPMinimumSize]
	old := binary.BigEndian.Uint16(t[off:])
	binary.BigEndian.PutUint16(t[off:], v)
	if !p.PartialCsum {
		TCP(t).SetChecksum(update16(TCP(t).Checksum(), old, v))
	}
	return true
}

// tcpSet32 is tcpSet16 for a 32-bit field.
func (p *Packet) tcpSet32(off int, v uint32) bool {
	if p.L4 == 0 || p.Proto != ProtoTCP {
		return false
	}
	t := p.Frame[p.L4 : p.L4+TCPMinimumSize]
	old := binary.BigEndian.Uint32(t[off:])
	binary.BigEndian.PutUint32(t[off:], v)
	if !p.PartialCsum {
		TCP(t).SetChecksum(update32(TCP(t).Checksum(), old, v))
	}
	return true
}

// SetSrcPort rewrites the TCP source port. The TCP checksum is updated in
// full mode and left alone in partial mode (ports are not in the pseudo
// header). It is a no-op unless the packet decoded as TCP.
func (p *Packet) SetSrcPort(port uint16) {
	if p.tcpSet16(tcpSrcPortOffset, port) {
		p.SrcPort = port
	}
}

// SetDstPort rewrites the TCP destination port like SetSrcPort.
func (p *Packet) SetDstPort(port uint16) {
	if p.tcpSet16(tcpDstPortOffset, port) {
		p.DstPort = port
	}
}

// SetSeq rewrites the TCP sequence number like SetSrcPort.
func (p *Packet) SetSeq(v uint32) {
	if p.tcpSet32(tcpSeqOffset, v) {
		p.Seq = v
	}
}

// SetAck rewrites the TCP acknowledgement number like SetSrcPort.
func (p *Packet) SetAck(v uint32) {
	if p.tcpSet32(tcpAckOffset, v) {
		p.Ack = v
	}
}

// DecTTL decrements the IPv4 TTL and updates the header checksum, or
// decrements the IPv6 hop limit (RFC 8200 §3; no checksum covers it). It
// returns false, changing nothing, if the TTL or hop limit would reach 0
// (or the frame is not IP).
func (p *Packet) DecTTL() bool {
	if p.L3 == 0 || p.EtherType != EtherTypeIPv4 {
		return p.decHopLimit()
	}
	ip := p.Frame[p.L3 : p.L3+IPv4MinimumSize]
	ttl := ip[ipv4TTLOffset]
	if ttl <= 1 {
		return false
	}
	old := binary.BigEndian.Uint16(ip[ipv4TTLOffset:])
	ip[ipv4TTLOffset] = ttl - 1
	IPv4(ip).SetChecksum(update16(IPv4(ip).Checksum(), old, old-0x100))
	return true
}

// decHopLimit is DecTTL for IPv6.
func (p *Packet) decHopLimit() bool {
	if p.L3 == 0 || p.EtherType != EtherTypeIPv6 {
		return false
	}
	hl := &p.Frame[p.L3+ipv6HopLimitOffset]
	if *hl <= 1 {
		return false
	}
	*hl--
	return true
}

// sumAligned returns the sum of seg[start:end] widened to 16-bit word
// boundaries of seg, for updating a checksum over a changed byte range.
func sumAligned(seg []byte, start, end int) uint32 {
	s := start &^ 1
	e := (end + 1) &^ 1
	if e > len(seg) {
		e = len(seg)
	}
	return Checksum(seg[s:e], 0)
}

// updateRange applies RFC 1624 eqn. 3 to the full checksum hc for a
// range whose aligned sum changed from oldSum to newSum.
func updateRange(hc uint16, oldSum, newSum uint32) uint16 {
	return ^Fold(uint32(^hc) + uint32(^Fold(oldSum)) + newSum)
}
