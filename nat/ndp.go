package nat

import "encoding/binary"

// Neighbor Advertisement flags (RFC 4861 §4.4), as they appear in the
// first byte after the checksum (and in NDP.Flags).
const (
	// NAFlagRouter is the R flag: the sender is a router.
	NAFlagRouter = 0x80
	// NAFlagSolicited is the S flag: the advertisement answers a
	// solicitation. It must be 0 toward a multicast destination.
	NAFlagSolicited = 0x40
	// NAFlagOverride is the O flag: the advertisement should replace a
	// cached link-layer address.
	NAFlagOverride = 0x20
)

// Neighbor discovery sizes and option types (RFC 4861 §4.3, §4.4, §4.6.1).
const (
	// NDPMinLen is the length of a Neighbor Solicitation or
	// Advertisement without options: type, code, checksum, 4 bytes of
	// reserved/flags, the target address.
	NDPMinLen = 24
	// NDPFrameLen is the length of the frames BuildNS and BuildNA write:
	// Ethernet, IPv6, the message and one link-layer address option.
	NDPFrameLen = EthernetHeaderLen + IPv6HeaderLen + NDPMinLen + ndOptLinkAddrLen

	ndOptSourceLinkAddr = 1 // Source Link-Layer Address option
	ndOptTargetLinkAddr = 2 // Target Link-Layer Address option
	ndOptLinkAddrLen    = 8 // one 8-octet unit for an Ethernet address (RFC 2464 §8)
	ndHopLimit          = 255
)

// SolicitedNodeMulticast returns the solicited-node multicast address of
// a, ff02::1:ffXX:XXXX with the low 24 bits of a (RFC 4291 §2.7.1): where
// a Neighbor Solicitation for a is sent (RFC 4861 §7.2.2).
func SolicitedNodeMulticast(a Addr16) Addr16 {
	return Addr16{0xff, 0x02, 11: 0x01, 12: 0xff, 13: a[13], 14: a[14], 15: a[15]}
}

// MulticastMAC returns the Ethernet address an IPv6 multicast address a is
// sent to: 33:33 followed by the low 32 bits of a (RFC 2464 §7). For
// ff02::1:ffXX:XXXX that is 33:33:ff:XX:XX:XX. It does not check that a is
// multicast.
func MulticastMAC(a Addr16) MAC {
	return MAC{0x33, 0x33, a[12], a[13], a[14], a[15]}
}

// IPv6AllNodes returns ff02::1, the link-local all-nodes multicast address
// (RFC 4291 §2.7.1), the destination of unsolicited Neighbor
// Advertisements (RFC 4861 §7.2.6).
func IPv6AllNodes() Addr16 { return Addr16{0xff, 0x02, 15: 0x01} }

// NDP is a parsed Neighbor Solicitation or Neighbor Advertisement. It has
// no pointers, so parsing into it never allocates.
type NDP struct {
	// Type is ICMPv6TypeNeighborSolicitation or
	// ICMPv6TypeNeighborAdvertisement.
	Type uint8
	// Target is the "Target Address": the address being resolved (NS) or
	// advertised (NA).
	Target Addr16
	// Flags holds the R, S and O bits (NAFlag*) of an advertisement; 0 for
	// a solicitation.
	Flags uint8
	// LinkAddr is the Ethernet address of the Source Link-Layer Address
	// option of a solicitation or the Target Link-Layer Address option of
	// an advertisement, valid if HasLinkAddr. An option of that type whose
	// length is not one 8-octet unit is not an Ethernet address and is
	// ignored.
	LinkAddr MAC
	// HasLinkAddr says whether LinkAddr was present.
	HasLinkAddr bool
}

// ParseNDP fills n from a Neighbor Solicitation or Advertisement after
// validating it as RFC 4861 §7.1.1 and §7.1.2 require of a receiver. Any
// failure is ErrBadNDP:
//   - the IPv6 hop limit is not 255 (so the message cannot have come from
//     off the link);
//   - the ICMPv6 checksum is wrong (it is always verified as a full
//     checksum; PartialCsum is ignored, as the kernel sums ND messages in
//     software);
//   - the code is not 0, or the message is shorter than 24 bytes;
//   - the target is a multicast address;
//   - an option has length 0 or runs past the message;
//   - the source is a multicast address, which no IPv6 packet may carry
//     (RFC 4291 §2.7), and which NDPReply would answer;
//   - NS only: the source is the unspecified address (duplicate address
//     detection) but the destination is not a solicited-node multicast
//     address, or there is a Source Link-Layer Address option;
//   - NA only: the destination is multicast and the S flag is set.
//
// Other ICMPv6 messages, and packets that are not ICMPv6, give ErrNotNDP.
// On any error n is the zero NDP. Whether the target is one of tslb's
// addresses is the caller's question.
func (p *Packet) ParseNDP(n *NDP) error {
	*n = NDP{}
	m := p.ICMPv6()
	if m == nil {
		return ErrNotNDP
	}
	typ := m.Type()
	if typ != ICMPv6TypeNeighborSolicitation && typ != ICMPv6TypeNeighborAdvertisement {
		return ErrNotNDP
	}
	if p.Frame[p.L3+ipv6HopLimitOffset] != ndHopLimit || m.Code() != 0 || len(m) < NDPMinLen || p.Src6.IsMulticast() {
		return ErrBadNDP
	}
	if !p.icmpv6Valid(m) {
		return ErrBadNDP
	}
	target := Addr16(m[8:24])
	if target.IsMulticast() {
		return ErrBadNDP
	}
	want := uint8(ndOptSourceLinkAddr)
	if typ == ICMPv6TypeNeighborAdvertisement {
		want = ndOptTargetLinkAddr
	}
	var r NDP
	sawLinkAddr := false
	for opts := m[NDPMinLen:]; len(opts) > 0; {
		if len(opts) < 2 || opts[1] == 0 || int(opts[1])*8 > len(opts) {
			return ErrBadNDP
		}
		l := int(opts[1]) * 8
		if opts[0] == want {
			if !sawLinkAddr && l == ndOptLinkAddrLen {
				r.LinkAddr = MAC(opts[2:8])
				r.HasLinkAddr = true
			}
			sawLinkAddr = true
		}
		opts = opts[l:]
	}
	if typ == ICMPv6TypeNeighborSolicitation {
		if p.Src6.IsUnspecified() && (!p.Dst6.IsSolicitedNodeMulticast() || sawLinkAddr) {
			return ErrBadNDP
		}
	} else {
		r.Flags = m[4] & (NAFlagRouter | NAFlagSolicited | NAFlagOverride)
		if p.Dst6.IsMulticast() && r.Flags&NAFlagSolicited != 0 {
			return ErrBadNDP
		}
	}
	r.Type = typ
	r.Target = target
	*n = r
	return nil
}

// NDPReply returns where and how to answer the Neighbor Solicitation n
// (as parsed from p by ParseNDP) for one of tslb's addresses with BuildNA
// (RFC 4861 §7.2.4): to the solicitation's source with the Solicited and
// Override flags, at the Ethernet address of its Source Link-Layer
// Address option (or, for a unicast probe without one, the frame's
// Ethernet source); or, if the source is the unspecified address
// (duplicate address detection), to all-nodes ff02::1 with the Override
// flag only. Router is never set: tslb is not a router for its
// neighbours. The NA's target is n.Target and its source should be that
// same address.
func (p *Packet) NDPReply(n *NDP) (dst Addr16, ethDst MAC, flags uint8) {
	if p.Src6.IsUnspecified() {
		dst = IPv6AllNodes()
		return dst, MulticastMAC(dst), NAFlagOverride
	}
	ethDst = p.Ethernet().Src()
	if n.HasLinkAddr {
		ethDst = n.LinkAddr
	}
	return p.Src6, ethDst, NAFlagSolicited | NAFlagOverride
}

// buildND writes Ethernet, IPv6 (hop limit 255, Next Header ICMPv6) and an
// ND message of type typ with the first body byte b4, the target and,
// if lla is non-negative, a link-layer address option of that type
// carrying ethSrc, then sets the checksum. It returns the length.
func buildND(b []byte, ethSrc, ethDst MAC, src, dst Addr16, typ, b4 uint8, target Addr16, lla int) int {
	mlen := NDPMinLen
	if lla >= 0 {
		mlen += ndOptLinkAddrLen
	}
	n := EthernetHeaderLen + IPv6HeaderLen + mlen
	b = b[:n]
	clear(b)
	copy(b[0:6], ethDst[:])
	copy(b[6:12], ethSrc[:])
	binary.BigEndian.PutUint16(b[12:], EtherTypeIPv6)
	ip := IPv6(b[EthernetHeaderLen : EthernetHeaderLen+IPv6HeaderLen])
	ip[0] = 6 << 4
	ip.SetPayloadLength(uint16(mlen))
	ip.SetNextHeader(ProtoICMPv6)
	ip.SetHopLimit(ndHopLimit)
	ip.SetSrc(src)
	ip.SetDst(dst)
	m := ICMPv6(b[EthernetHeaderLen+IPv6HeaderLen:])
	m[0] = typ
	m[4] = b4
	copy(m[8:24], target[:])
	if lla >= 0 {
		m[24], m[25] = uint8(lla), 1
		copy(m[26:32], ethSrc[:])
	}
	m.SetChecksum(ICMPv6Checksum(src, dst, m))
	return n
}

// BuildNS writes an Ethernet + IPv6 + ICMPv6 Neighbor Solicitation for
// target from src (RFC 4861 §4.3, §7.2.2) into buf and returns its length:
// NDPFrameLen (86) bytes, or 78 if src is the unspecified address; 0 if
// buf is shorter than NDPFrameLen, if target is multicast (nothing to
// resolve) or if src is (RFC 4291 §2.7). It is
// sent to the target's solicited-node multicast address
// (SolicitedNodeMulticast) at its MAC 33:33:ff:XX:XX:XX (MulticastMAC),
// hop limit 255, with a Source Link-Layer Address option carrying ethSrc,
// unless src is unspecified (duplicate address detection: §4.3 forbids
// the option). The checksum is complete.
func BuildNS(buf []byte, ethSrc MAC, src, target Addr16) int {
	lla := ndOptSourceLinkAddr
	if src.IsUnspecified() {
		lla = -1
	}
	if len(buf) < NDPFrameLen || target.IsMulticast() || src.IsMulticast() {
		return 0
	}
	dst := SolicitedNodeMulticast(target)
	return buildND(buf, ethSrc, MulticastMAC(dst), src, dst, ICMPv6TypeNeighborSolicitation, 0, target, lla)
}

// BuildNA writes an Ethernet + IPv6 + ICMPv6 Neighbor Advertisement for
// target from src to dst (RFC 4861 §4.4, §7.2.4, §7.2.6) with the given
// NAFlag* flags and a Target Link-Layer Address option carrying ethSrc,
// hop limit 255, checksum complete, and returns its length (NDPFrameLen,
// 86 bytes). A multicast dst (ff02::1 for an unsolicited advertisement,
// §7.2.6, which should carry NAFlagOverride) is sent to MulticastMAC(dst)
// and ethDst is ignored. It returns 0, writing nothing, if buf is too
// short or the message would fail ParseNDP's validation or RFC 4861's
// rules for a sender: a multicast dst with NAFlagSolicited, a multicast
// target, or a multicast or unspecified src. Flags other than R, S and O
// are dropped.
func BuildNA(buf []byte, ethSrc, ethDst MAC, src, dst, target Addr16, flags uint8) int {
	if len(buf) < NDPFrameLen || target.IsMulticast() || src.IsMulticast() || src.IsUnspecified() ||
		(dst.IsMulticast() && flags&NAFlagSolicited != 0) {
		return 0
	}
	if dst.IsMulticast() {
		ethDst = MulticastMAC(dst)
	}
	flags &= NAFlagRouter | NAFlagSolicited | NAFlagOverride
	return buildND(buf, ethSrc, ethDst, src, dst, ICMPv6TypeNeighborAdvertisement, flags, target, ndOptTargetLinkAddr)
}
