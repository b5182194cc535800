package nat

import (
	"encoding/binary"
	"net/netip"
)

// Addr16 is an IPv6 address in network byte order. Like Addr4 it is
// comparable and pointer-free (no zone), so it can sit in a Packet and in
// flow keys without allocation.
type Addr16 [16]byte

// Addr16From converts a to an Addr16. Any IPv6 address is accepted, an
// IPv4-mapped one (::ffff:a.b.c.d) included, and its zone is dropped; an
// IPv4 or invalid address gives the zero Addr16 (the unspecified address
// ::), as Addr4From does the other way round.
func Addr16From(a netip.Addr) Addr16 {
	if !a.Is6() {
		return Addr16{}
	}
	return a.As16()
}

// Netip returns a as a netip.Addr (without zone).
func (a Addr16) Netip() netip.Addr { return netip.AddrFrom16(a) }

// String returns a in RFC 5952 form (as netip.Addr does).
func (a Addr16) String() string { return a.Netip().String() }

// IsMulticast reports whether a is in ff00::/8 (RFC 4291 §2.7).
func (a Addr16) IsMulticast() bool { return a[0] == 0xff }

// IsUnspecified reports whether a is :: (RFC 4291 §2.5.2).
func (a Addr16) IsUnspecified() bool { return a == Addr16{} }

// IsSolicitedNodeMulticast reports whether a is in ff02::1:ff00:0/104, the
// solicited-node multicast prefix (RFC 4291 §2.7.1).
func (a Addr16) IsSolicitedNodeMulticast() bool {
	return a[0] == 0xff && a[1] == 0x02 && a[2]|a[3]|a[4]|a[5]|a[6]|a[7]|a[8]|a[9]|a[10] == 0 &&
		a[11] == 0x01 && a[12] == 0xff
}

// IPv6 sizes, offsets and next-header values.
const (
	// EtherTypeIPv6 is the EtherType of IPv6 (RFC 2464 §3).
	EtherTypeIPv6 = 0x86dd
	// IPv6HeaderLen is the length of the fixed IPv6 header (RFC 8200 §3).
	IPv6HeaderLen = 40
	// IPv6MinMTU is the minimum link MTU of IPv6 (RFC 8200 §5): no Packet
	// Too Big may make a node send smaller packets (RFC 8201 §4).
	IPv6MinMTU = 1280
	// ProtoICMPv6 is the next-header value of ICMPv6 (RFC 4443 §1).
	ProtoICMPv6 = 58
	// ProtoNoNextHeader is IPv6's "No Next Header" (RFC 8200 §4.7):
	// nothing follows; any bytes up to the payload length are ignored.
	ProtoNoNextHeader = 59

	// Extension headers tslb walks (RFC 8200 §4).
	ipv6HopByHop = 0  // Hop-by-Hop Options (§4.3)
	ipv6Routing  = 43 // Routing (§4.4)
	ipv6Fragment = 44 // Fragment (§4.5)
	ipv6DestOpts = 60 // Destination Options (§4.6)

	ipv6PayloadLenOffset = 4
	ipv6NextHeaderOffset = 6
	ipv6HopLimitOffset   = 7
	ipv6SrcOffset        = 8
	ipv6DstOffset        = 24

	// maxExtHeaders bounds the extension-header walk. RFC 8200 §4.1's
	// order allows Hop-by-Hop, Destination Options twice, Routing and one
	// (atomic) Fragment among the headers Decode walks: 5; 8 leaves room
	// and still bounds what a hostile chain costs.
	maxExtHeaders = 8
)

// IPv6 is a view of the fixed IPv6 header (RFC 8200 §3). Decode checks
// its length before the view is used; the getters do not.
type IPv6 []byte

// Version returns the "Version" field (6).
func (b IPv6) Version() uint8 { return b[0] >> 4 }

// TrafficClass returns the 8-bit "Traffic Class" field.
func (b IPv6) TrafficClass() uint8 { return b[0]<<4 | b[1]>>4 }

// SetTrafficClass sets the "Traffic Class" field.
func (b IPv6) SetTrafficClass(v uint8) {
	b[0] = b[0]&0xf0 | v>>4
	b[1] = b[1]&0x0f | v<<4
}

// FlowLabel returns the 20-bit "Flow Label" field.
func (b IPv6) FlowLabel() uint32 { return binary.BigEndian.Uint32(b[0:4]) & 0x000f_ffff }

// SetFlowLabel sets the "Flow Label" field to the low 20 bits of v.
func (b IPv6) SetFlowLabel(v uint32) {
	w := binary.BigEndian.Uint32(b[0:4])
	binary.BigEndian.PutUint32(b[0:4], w&0xfff0_0000|v&0x000f_ffff)
}

// PayloadLength returns the "Payload Length" field: the bytes after the
// fixed header, extension headers included.
func (b IPv6) PayloadLength() uint16 { return binary.BigEndian.Uint16(b[ipv6PayloadLenOffset:]) }

// SetPayloadLength sets the "Payload Length" field (IPv6 has no header
// checksum to update).
func (b IPv6) SetPayloadLength(v uint16) { binary.BigEndian.PutUint16(b[ipv6PayloadLenOffset:], v) }

// NextHeader returns the "Next Header" field.
func (b IPv6) NextHeader() uint8 { return b[ipv6NextHeaderOffset] }

// SetNextHeader sets the "Next Header" field.
func (b IPv6) SetNextHeader(v uint8) { b[ipv6NextHeaderOffset] = v }

// HopLimit returns the "Hop Limit" field.
func (b IPv6) HopLimit() uint8 { return b[ipv6HopLimitOffset] }

// SetHopLimit sets the "Hop Limit" field.
func (b IPv6) SetHopLimit(v uint8) { b[ipv6HopLimitOffset] = v }

// Src returns the "Source Address" field.
func (b IPv6) Src() Addr16 { return Addr16(b[ipv6SrcOffset : ipv6SrcOffset+16]) }

// Dst returns the "Destination Address" field.
func (b IPv6) Dst() Addr16 { return Addr16(b[ipv6DstOffset : ipv6DstOffset+16]) }

// SetSrc sets the "Source Address" field without touching any checksum;
// Packet.SetSrc6 keeps the L4 checksum right.
func (b IPv6) SetSrc(a Addr16) { copy(b[ipv6SrcOffset:ipv6SrcOffset+16], a[:]) }

// SetDst sets the "Destination Address" field like SetSrc.
func (b IPv6) SetDst(a Addr16) { copy(b[ipv6DstOffset:ipv6DstOffset+16], a[:]) }

// isExtHeader reports whether nh is an extension header walkExt follows.
func isExtHeader(nh uint8) bool {
	return nh == ipv6HopByHop || nh == ipv6Routing || nh == ipv6Fragment || nh == ipv6DestOpts
}

// walkExt follows the extension-header chain of the IPv6 payload b (the
// bytes after the fixed header, bounded by the payload length or by what
// an ICMPv6 error quotes), whose first header is nh. It returns the offset
// in b of the first header that is not an extension header walkExt
// follows, and that header's next-header value.
//
// RFC 8200 §4: Hop-by-Hop, Routing and Destination Options share the
// format "Next Header, Hdr Ext Len in 8-octet units not counting the
// first 8"; the Fragment header is 8 bytes. Errors:
//   - ErrShortExtHeader: a header runs past b;
//   - ErrBadExtHeader: Hop-by-Hop anywhere but first (§4.1: "must
//     immediately follow the IPv6 header");
//   - ErrExtHeaderLimit: more than maxExtHeaders headers;
//   - ErrRoutingHeader: a Routing header with Segments Left > 0. §4.4 then
//     makes the destination forward the packet to the next segment, which
//     tslb does not do; and the L4 checksum of such a packet covers the
//     final destination from the Routing header (§8.1), which a rewrite
//     of the destination would not fix. Segments Left 0 is ignored, as
//     §4.4 says, whatever the routing type (RFC 5095's type 0 included);
//   - ErrFragment6: a Fragment header with a non-zero offset or M set.
//     An atomic fragment (offset 0, M 0) is processed in isolation, as
//     RFC 6946 §4 requires, so the walk goes on behind it. The returned
//     next header is then the fragment's Next Header (the fragmented
//     protocol) and off points past the Fragment header.
func walkExt(b []byte, nh uint8) (off int, next uint8, err error) {
	for n := 0; isExtHeader(nh); n++ {
		if n == maxExtHeaders {
			return off, nh, ErrExtHeaderLimit
		}
		if nh == ipv6HopByHop && n > 0 {
			return off, nh, ErrBadExtHeader
		}
		if len(b)-off < 8 {
			return off, nh, ErrShortExtHeader
		}
		h := b[off:]
		l := 8
		switch nh {
		case ipv6Fragment:
			// Fragment Offset (13 bits), Res (2 bits, ignored on
			// reception), M (1 bit).
			if binary.BigEndian.Uint16(h[2:4])&0xfff9 != 0 {
				return off + 8, h[0], ErrFragment6
			}
		case ipv6Routing:
			l = (int(h[1]) + 1) * 8
			if l > len(b)-off {
				return off, nh, ErrShortExtHeader
			}
			if h[3] != 0 {
				return off, nh, ErrRoutingHeader
			}
		default:
			l = (int(h[1]) + 1) * 8
			if l > len(b)-off {
				return off, nh, ErrShortExtHeader
			}
		}
		nh = h[0]
		off += l
	}
	return off, nh, nil
}
