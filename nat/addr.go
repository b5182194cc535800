package nat

import (
	"encoding/binary"
	"net/netip"
)

// One address type for both families: lb keeps every address in an
// Addr16, IPv4 in its IPv4-mapped form ::ffff:a.b.c.d (RFC 4291 §2.5.5.2),
// so that flows, neighbours and pools of either family share one code
// path and one key type. Mapped() and Unmap() convert; Packet's SrcAddr
// and DstAddr give a decoded packet's addresses in that form.

// v4Prefix is the first 12 bytes of an IPv4-mapped address.
var v4Prefix = [12]byte{10: 0xff, 11: 0xff}

// Mapped returns a as an IPv4-mapped Addr16.
func (a Addr4) Mapped() Addr16 {
	var m Addr16
	m[10], m[11] = 0xff, 0xff
	copy(m[12:], a[:])
	return m
}

// Is4 reports whether a is an IPv4-mapped address (an IPv4 address in
// lb's one address type).
func (a Addr16) Is4() bool { return [12]byte(a[:12]) == v4Prefix }

// Unmap returns the IPv4 address of an IPv4-mapped a (the last 4 bytes).
func (a Addr16) Unmap() Addr4 { return Addr4(a[12:]) }

// AddrFrom returns a in lb's one address type: IPv6 as it is, IPv4 mapped;
// invalid gives the zero Addr16.
func AddrFrom(a netip.Addr) Addr16 {
	switch {
	case a.Is4():
		return Addr4(a.As4()).Mapped()
	case a.Is6():
		return a.As16()
	}
	return Addr16{}
}

// Addr returns a as a netip.Addr, IPv4 for an IPv4-mapped a.
func (a Addr16) Addr() netip.Addr { return netip.AddrFrom16(a).Unmap() }

// Text returns a as text in its own family (dotted decimal for an
// IPv4-mapped a, RFC 5952 otherwise).
func (a Addr16) Text() string {
	if a.Is4() {
		return a.Unmap().String()
	}
	return a.String()
}

// SrcAddr returns the packet's source address in lb's one address type.
func (p *Packet) SrcAddr() Addr16 {
	if p.EtherType == EtherTypeIPv6 {
		return p.Src6
	}
	return p.Src.Mapped()
}

// DstAddr returns the packet's destination address in lb's one type.
func (p *Packet) DstAddr() Addr16 {
	if p.EtherType == EtherTypeIPv6 {
		return p.Dst6
	}
	return p.Dst.Mapped()
}

// SetTupleAny is SetTuple or SetTuple6, by the packet's family; the
// addresses are in lb's one address type.
func (p *Packet) SetTupleAny(src Addr16, sport uint16, dst Addr16, dport uint16) {
	if p.EtherType == EtherTypeIPv6 {
		p.SetTuple6(src, sport, dst, dport)
		return
	}
	p.SetTuple(src.Unmap(), sport, dst.Unmap(), dport)
}

// SetSrcAny and SetDstAny are SetSrc/SetSrc6 and SetDst/SetDst6 by the
// packet's family.
func (p *Packet) SetSrcAny(a Addr16) {
	if p.EtherType == EtherTypeIPv6 {
		p.SetSrc6(a)
		return
	}
	p.SetSrc(a.Unmap())
}

// SetDstAny: see SetSrcAny.
func (p *Packet) SetDstAny(a Addr16) {
	if p.EtherType == EtherTypeIPv6 {
		p.SetDst6(a)
		return
	}
	p.SetDst(a.Unmap())
}

// TCPChecksumValidAny is TCPChecksumValid for either family.
func (p *Packet) TCPChecksumValidAny() bool {
	if p.EtherType != EtherTypeIPv6 {
		return p.TCPChecksumValid()
	}
	t := p.TCP()
	if t == nil {
		return false
	}
	ps := PseudoHeaderSum6(p.Src6, p.Dst6, ProtoTCP, uint32(p.L4Len))
	if p.PartialCsum {
		return t.Checksum() == Fold(ps)
	}
	return Fold(Checksum(t, ps)) == 0xffff
}

// BuildTCPAny is BuildTCP or BuildTCP6 by the family of src (lb's one
// address type); both addresses must be of one family.
func BuildTCPAny(buf []byte, ethSrc, ethDst MAC, src, dst Addr16, sport, dport uint16, seq, ack uint32, flags uint8, window uint16) int {
	if src.Is4() {
		return BuildTCP(buf, ethSrc, ethDst, src.Unmap(), dst.Unmap(), sport, dport, seq, ack, flags, window)
	}
	return BuildTCP6(buf, ethSrc, ethDst, src, dst, sport, dport, seq, ack, flags, window)
}

// BuildTCPOptionsAny is BuildTCPOptions for either family.
func BuildTCPOptionsAny(buf []byte, ethSrc, ethDst MAC, src, dst Addr16, sport, dport uint16, seq, ack uint32, flags uint8, window uint16, o *TCPOptions) int {
	if src.Is4() {
		return BuildTCPOptions(buf, ethSrc, ethDst, src.Unmap(), dst.Unmap(), sport, dport, seq, ack, flags, window, o)
	}
	var opts [MaxOptionsLen]byte
	ol := WriteTCPOptions(opts[:], o)
	if ol < 0 {
		return 0
	}
	n := EthernetHeaderLen + IPv6HeaderLen + TCPMinimumSize + ol
	if len(buf) < n || BuildTCP6(buf, ethSrc, ethDst, src, dst, sport, dport, seq, ack, flags, window) == 0 {
		return 0
	}
	b := buf[:n]
	ip := IPv6(b[EthernetHeaderLen : EthernetHeaderLen+IPv6HeaderLen])
	ip.SetPayloadLength(uint16(TCPMinimumSize + ol))
	t := b[EthernetHeaderLen+IPv6HeaderLen:]
	copy(t[TCPMinimumSize:], opts[:ol])
	t[12] = byte((TCPMinimumSize+ol)/4) << 4
	binary.BigEndian.PutUint16(t[16:], 0)
	binary.BigEndian.PutUint16(t[16:], TCPChecksum6(src, dst, t))
	return n
}
