package nat

import (
	"encoding/binary"
	"net/netip"
	"strconv"
)

// Addr4 is an IPv4 address in network byte order. It is comparable and
// pointer-free, unlike netip.Addr it needs no zone handling.
type Addr4 [4]byte

// Addr4From converts a to an Addr4. IPv4-mapped IPv6 addresses are
// unmapped; any other non-IPv4 address gives the zero Addr4.
func Addr4From(a netip.Addr) Addr4 {
	a = a.Unmap()
	if !a.Is4() {
		return Addr4{}
	}
	return a.As4()
}

// Netip returns a as a netip.Addr.
func (a Addr4) Netip() netip.Addr { return netip.AddrFrom4(a) }

// String returns a in dotted-decimal form.
func (a Addr4) String() string {
	b := make([]byte, 0, 15)
	for i, v := range a {
		if i > 0 {
			b = append(b, '.')
		}
		b = strconv.AppendUint(b, uint64(v), 10)
	}
	return string(b)
}

// IP protocol numbers.
const (
	// ProtoICMP is the IP protocol number of ICMP.
	ProtoICMP = 1
	// ProtoTCP is the IP protocol number of TCP.
	ProtoTCP = 6
	// ProtoUDP is the IP protocol number of UDP.
	ProtoUDP = 17
)

// IPv4 header sizes and offsets.
const (
	// IPv4MinimumSize is the length of an IPv4 header without options.
	IPv4MinimumSize     = 20
	ipv4TotalLenOffset  = 2
	ipv4FlagsFragOffset = 6
	ipv4TTLOffset       = 8
	ipv4ProtocolOffset  = 9
	ipv4ChecksumOffset  = 10
	ipv4SrcOffset       = 12
	ipv4DstOffset       = 16
	ipv4FlagMF          = 0x2000
	ipv4FragOffsetMask  = 0x1fff
)

// IPv4 is a view of an IPv4 header. Decode checks its length before the
// view is used; the getters do not.
type IPv4 []byte

// HeaderLen returns the header length in bytes ("IHL" * 4).
func (b IPv4) HeaderLen() int { return int(b[0]&0x0f) * 4 }

// TotalLen returns the "total length" field.
func (b IPv4) TotalLen() uint16 { return binary.BigEndian.Uint16(b[ipv4TotalLenOffset:]) }

// Protocol returns the "protocol" field.
func (b IPv4) Protocol() uint8 { return b[ipv4ProtocolOffset] }

// TTL returns the "time to live" field.
func (b IPv4) TTL() uint8 { return b[ipv4TTLOffset] }

// SetTTL sets the "time to live" field without touching the checksum.
func (b IPv4) SetTTL(v uint8) { b[ipv4TTLOffset] = v }

// Src returns the "source address" field.
func (b IPv4) Src() Addr4 { return Addr4(b[ipv4SrcOffset : ipv4SrcOffset+4]) }

// Dst returns the "destination address" field.
func (b IPv4) Dst() Addr4 { return Addr4(b[ipv4DstOffset : ipv4DstOffset+4]) }

// Checksum returns the "header checksum" field.
func (b IPv4) Checksum() uint16 { return binary.BigEndian.Uint16(b[ipv4ChecksumOffset:]) }

// SetChecksum sets the "header checksum" field.
func (b IPv4) SetChecksum(v uint16) { binary.BigEndian.PutUint16(b[ipv4ChecksumOffset:], v) }

// MoreFragments reports whether the "more fragments" flag is set.
func (b IPv4) MoreFragments() bool {
	return binary.BigEndian.Uint16(b[ipv4FlagsFragOffset:])&ipv4FlagMF != 0
}

// FragmentOffset returns the "fragment offset" field in bytes.
func (b IPv4) FragmentOffset() uint16 {
	return (binary.BigEndian.Uint16(b[ipv4FlagsFragOffset:]) & ipv4FragOffsetMask) * 8
}

// ComputeChecksum returns the header checksum of b[:HeaderLen()] computed
// with the checksum field treated as zero.
func (b IPv4) ComputeChecksum() uint16 {
	hl := b.HeaderLen()
	s := Checksum(b[:ipv4ChecksumOffset], 0)
	s = Checksum(b[ipv4ChecksumOffset+2:hl], s)
	return ^Fold(s)
}
