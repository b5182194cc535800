package nat

import (
	"encoding/binary"
	"errors"
)

// Decode errors. They are package-level values, so returning one never
// allocates; Reason maps each to a metric label.
var (
	// ErrShortFrame means the frame is too short for its Ethernet or IPv4
	// header (or a virtio-net header is too short).
	ErrShortFrame = errors.New("nat: short frame")
	// ErrNotIPv4 means the IPv4 EtherType carries a version other than 4.
	ErrNotIPv4 = errors.New("nat: not IPv4")
	// ErrBadIHL means the IPv4 header length is below 5 words or runs past
	// the frame.
	ErrBadIHL = errors.New("nat: bad IPv4 header length")
	// ErrBadTotalLength means the IPv4 total length is shorter than the
	// header or longer than the frame.
	ErrBadTotalLength = errors.New("nat: bad IPv4 total length")
	// ErrFragment means the datagram is an IPv4 fragment (MF set or a
	// non-zero offset).
	ErrFragment = errors.New("nat: IPv4 fragment")
	// ErrShortTCP means the IPv4 payload is shorter than a TCP header.
	ErrShortTCP = errors.New("nat: short TCP header")
	// ErrBadDataOffset means the TCP data offset is below 5 words or runs
	// past the segment.
	ErrBadDataOffset = errors.New("nat: bad TCP data offset")
	// ErrBadOptions means the TCP option list is malformed.
	ErrBadOptions = errors.New("nat: bad TCP options")
	// ErrShortICMP means the IPv4 payload is shorter than an ICMP header,
	// or an ICMP error quotes too little of the offending datagram.
	ErrShortICMP = errors.New("nat: short ICMP message")
	// ErrShortARP means the frame is too short for an ARP payload.
	ErrShortARP = errors.New("nat: short ARP packet")
	// ErrUnsupportedEtherType means the EtherType is neither IPv4, IPv6
	// nor ARP (VLAN tags included).
	ErrUnsupportedEtherType = errors.New("nat: unsupported EtherType")

	// ErrNotIPv6 means the IPv6 EtherType carries a version other than 6.
	ErrNotIPv6 = errors.New("nat: not IPv6")
	// ErrBadPayloadLength means the IPv6 payload length runs past the
	// frame (RFC 8200 §3).
	ErrBadPayloadLength = errors.New("nat: bad IPv6 payload length")
	// ErrJumbogram means an IPv6 payload length of 0 with a Hop-by-Hop
	// header: a jumbogram (RFC 2675), or a Linux BIG TCP superframe. tslb
	// supports neither; keep its links' gso_max_size at 65536 or below.
	ErrJumbogram = errors.New("nat: IPv6 jumbogram")
	// ErrFragment6 means the IPv6 packet carries a Fragment header with a
	// non-zero offset or the M flag (RFC 8200 §4.5); tslb does not
	// reassemble. Atomic fragments (RFC 6946) are decoded.
	ErrFragment6 = errors.New("nat: IPv6 fragment")
	// ErrShortExtHeader means an IPv6 extension header runs past the
	// payload length (RFC 8200 §4).
	ErrShortExtHeader = errors.New("nat: truncated IPv6 extension header")
	// ErrBadExtHeader means a Hop-by-Hop Options header that does not
	// immediately follow the IPv6 header (RFC 8200 §4.1).
	ErrBadExtHeader = errors.New("nat: misplaced IPv6 Hop-by-Hop header")
	// ErrExtHeaderLimit means a chain of more than 8 IPv6 extension
	// headers; RFC 8200 §4.1's order never needs more than 5 of the
	// headers Decode walks.
	ErrExtHeaderLimit = errors.New("nat: too many IPv6 extension headers")
	// ErrRoutingHeader means an IPv6 Routing header with Segments Left
	// above 0: the packet still has to be source-routed on, which tslb,
	// not its final destination, does not do (RFC 8200 §4.4).
	ErrRoutingHeader = errors.New("nat: IPv6 routing header with segments left")
	// ErrUnsupportedNextHeader means the IPv6 header chain leads to
	// something other than TCP, UDP, ICMPv6 or No Next Header: AH, ESP,
	// Mobility, HIP, Shim6, an experimental value or another transport.
	// Decode cannot tell an unknown extension header from an unknown
	// transport (RFC 8200 §4.8), so it stops at any of them.
	ErrUnsupportedNextHeader = errors.New("nat: unsupported IPv6 next header")
	// ErrBadNDP means a Neighbor Solicitation or Advertisement that fails
	// the validation of RFC 4861 §7.1 (ParseNDP).
	ErrBadNDP = errors.New("nat: invalid neighbor discovery message")
	// ErrNotNDP means ParseNDP was given something other than an ICMPv6
	// Neighbor Solicitation or Advertisement. Reason maps it to "other".
	ErrNotNDP = errors.New("nat: not a neighbor solicitation or advertisement")
	// ErrNotICMPError means ParseICMPError (ParseICMPv6Error) was given
	// something other than an ICMP (ICMPv6) error quoting an IPv4 (IPv6)
	// TCP or UDP header. Reason maps it to "other".
	ErrNotICMPError = errors.New("nat: not an ICMP error about TCP/UDP")
)

// Reasons lists every label Reason can return, for pre-creating metrics.
var Reasons = []string{
	"short_frame", "not_ipv4", "bad_ihl", "bad_total_length", "fragment",
	"short_tcp", "bad_data_offset", "bad_options", "short_icmp", "short_arp",
	"unsupported_ethertype", "bad_ip_checksum", "bad_tcp_checksum", "bad_ip_options",
	"ip_source_route", "not_ipv6", "bad_payload_length", "jumbogram",
	"ipv6_fragment", "short_ext_header", "bad_ext_header", "ext_header_limit",
	"routing_header", "unsupported_next_header", "bad_ndp", "not_ndp",
	"icmp_quote_unsupported", "no_room_for_options", "not_tcp", "other",
}

// Reason maps an error from this package to a short stable metric label.
// Errors it does not know (including nil) give "other".
func Reason(err error) string {
	switch err {
	case ErrShortFrame:
		return "short_frame"
	case ErrNotIPv4:
		return "not_ipv4"
	case ErrBadIHL:
		return "bad_ihl"
	case ErrBadTotalLength:
		return "bad_total_length"
	case ErrFragment:
		return "fragment"
	case ErrShortTCP:
		return "short_tcp"
	case ErrBadDataOffset:
		return "bad_data_offset"
	case ErrBadOptions:
		return "bad_options"
	case ErrShortICMP:
		return "short_icmp"
	case ErrShortARP:
		return "short_arp"
	case ErrUnsupportedEtherType:
		return "unsupported_ethertype"
	case ErrBadIPChecksum:
		return "bad_ip_checksum"
	case ErrBadTCPChecksum:
		return "bad_tcp_checksum"
	case ErrBadIPOptions:
		return "bad_ip_options"
	case ErrSourceRoute:
		return "ip_source_route"
	case ErrNotIPv6:
		return "not_ipv6"
	case ErrBadPayloadLength:
		return "bad_payload_length"
	case ErrJumbogram:
		return "jumbogram"
	case ErrFragment6:
		return "ipv6_fragment"
	case ErrShortExtHeader:
		return "short_ext_header"
	case ErrBadExtHeader:
		return "bad_ext_header"
	case ErrExtHeaderLimit:
		return "ext_header_limit"
	case ErrRoutingHeader:
		return "routing_header"
	case ErrUnsupportedNextHeader:
		return "unsupported_next_header"
	case ErrBadNDP:
		return "bad_ndp"
	case ErrNotNDP:
		return "not_ndp"
	case ErrNotICMPError:
		return "icmp_quote_unsupported"
	case ErrNoRoom:
		return "no_room_for_options"
	case ErrNotTCP:
		return "not_tcp"
	}
	return "other"
}

// Packet is a decoded Ethernet/IPv4, Ethernet/IPv6 or ARP frame; Decode
// fills it in place with no allocation. Offsets index Frame.
//
// Addresses: an IPv4 packet has Src and Dst, an IPv6 packet Src6 and Dst6;
// the other family's pair is zero. EtherType (or IsIPv6) tells which is
// valid. Two fixed-size pairs instead of one netip.Addr or a 16-byte pair
// for both keep the IPv4 path exactly as it was (4-byte keys, 4-byte
// copies, no family test in the IPv4 rewrites) and keep Packet
// pointer-free. Everything after the IP header (ports, sequence numbers,
// TCP header, options) is family-neutral and shared, and so are the
// methods that only touch it: the port, seq and option setters, the
// translation, SetTuple's TCP half. Methods that touch the IP header
// exist once per family (SetSrc/SetSrc6, SetTuple/SetTuple6, EchoReply/
// EchoReply6, ParseICMPError/ParseICMPv6Error) or dispatch on EtherType
// in one place (DecTTL, TTL, the length field when options grow).
type Packet struct {
	// Frame is the whole frame as given to Decode, Ethernet padding
	// included.
	Frame []byte
	// EtherType is the Ethernet type field.
	EtherType uint16
	// L3 and L4 are the offsets of the IP header and of the L4 header
	// (0 when absent). For ARP, L3 is the offset of the ARP payload. For
	// IPv6, L4 is past the extension headers Decode walked.
	L3, L4 int
	// L4Len is the number of bytes of L4 (header and payload) according to
	// the IPv4 total length (the IPv6 payload length less the extension
	// headers).
	L4Len int
	// Proto is the IPv4 protocol field, or the IPv6 upper-layer protocol:
	// the Next Header value at the end of the extension-header chain.
	Proto uint8
	// Src and Dst are the IPv4 addresses (zero for IPv6).
	Src, Dst Addr4
	// SrcPort and DstPort are the TCP ports (TCP only).
	SrcPort, DstPort uint16
	// TCPFlags is the TCP flags byte.
	TCPFlags uint8
	// Seq and Ack are the TCP sequence and acknowledgement numbers.
	Seq, Ack uint32
	// TCPHdrLen is the TCP header length in bytes, options included.
	TCPHdrLen int
	// Payload is the TCP payload length.
	Payload int
	// PartialCsum tells the rewrite functions that the L4 checksum field
	// holds only the (non-complemented, folded) pseudo-header sum because
	// the sender offloaded the checksum (Linux CHECKSUM_PARTIAL, virtio
	// NEEDS_CSUM). It is set by the caller (from the virtio_net_hdr), never
	// by Decode: Decode leaves it as it is, so set it for every frame.
	PartialCsum bool
	// Src6 and Dst6 are the IPv6 addresses (zero for IPv4). They come last
	// so that the fields the IPv4 path uses keep the offsets (and cache
	// lines) they had before IPv6.
	Src6, Dst6 Addr16
}

// Decode validates frame once and fills p (gVisor IsValid style). The view
// getters are safe on the ranges Decode accepted. Ethernet padding past
// the IPv4 total length (IPv6 payload length) is accepted and ignored. On
// error the fields that could be decoded are set (for a fragment: the IP
// fields, L4 = 0) and the rest are zero, so the rewrite methods are no-ops
// where they have nothing valid to work on. Decode does not parse TCP
// options; see TCPOptions.
//
// IPv6 (RFC 8200): the extension-header chain (Hop-by-Hop, Routing with
// Segments Left 0, Destination Options, atomic Fragment) is walked to the
// upper layer, at most 8 headers; TCP, UDP and ICMPv6 are decoded as for
// IPv4; No Next Header (RFC 8200 §4.7) decodes with Proto 59 and no upper
// layer to act on (L4 where one would start, L4Len the bytes to ignore),
// as an IPv4 protocol Decode does not parse does; anything else is
// ErrUnsupportedNextHeader. See walkExt for the
// rules and the error variables for each drop. After an IPv6 extension
// header error L3, Src6 and Dst6 are set, Proto is the Next Header value
// where the walk stopped (for a fragment: the fragmented protocol) and L4
// is 0.
func (p *Packet) Decode(frame []byte) error {
	*p = Packet{Frame: frame, PartialCsum: p.PartialCsum}
	if len(frame) < EthernetHeaderLen {
		return ErrShortFrame
	}
	p.EtherType = binary.BigEndian.Uint16(frame[12:14])
	switch p.EtherType {
	case EtherTypeIPv4:
	case EtherTypeARP:
		if len(frame)-EthernetHeaderLen < ARPLen {
			return ErrShortARP
		}
		p.L3 = EthernetHeaderLen
		return nil
	case EtherTypeIPv6:
		return p.decode6(frame)
	default:
		return ErrUnsupportedEtherType
	}
	ip := frame[EthernetHeaderLen:]
	if len(ip) < IPv4MinimumSize {
		return ErrShortFrame
	}
	if ip[0]>>4 != 4 {
		return ErrNotIPv4
	}
	hl := int(ip[0]&0x0f) * 4
	if hl < IPv4MinimumSize || hl > len(ip) {
		return ErrBadIHL
	}
	tl := int(binary.BigEndian.Uint16(ip[ipv4TotalLenOffset:]))
	if tl < hl || tl > len(ip) {
		return ErrBadTotalLength
	}
	p.L3 = EthernetHeaderLen
	p.Proto = ip[ipv4ProtocolOffset]
	p.Src = Addr4(ip[ipv4SrcOffset : ipv4SrcOffset+4])
	p.Dst = Addr4(ip[ipv4DstOffset : ipv4DstOffset+4])
	if binary.BigEndian.Uint16(ip[ipv4FlagsFragOffset:])&(ipv4FlagMF|ipv4FragOffsetMask) != 0 {
		return ErrFragment
	}
	l4 := EthernetHeaderLen + hl
	l4len := tl - hl
	switch p.Proto {
	case ProtoTCP:
		if l4len < TCPMinimumSize {
			return ErrShortTCP
		}
		t := frame[l4 : l4+l4len]
		doff := int(t[tcpDataOffset]>>4) * 4
		if doff < TCPMinimumSize || doff > l4len {
			return ErrBadDataOffset
		}
		p.SrcPort = binary.BigEndian.Uint16(t[tcpSrcPortOffset:])
		p.DstPort = binary.BigEndian.Uint16(t[tcpDstPortOffset:])
		p.Seq = binary.BigEndian.Uint32(t[tcpSeqOffset:])
		p.Ack = binary.BigEndian.Uint32(t[tcpAckOffset:])
		p.TCPFlags = t[tcpFlagsOffset]
		p.TCPHdrLen = doff
		p.Payload = l4len - doff
	case ProtoICMP:
		if l4len < ICMPMinimumSize {
			return ErrShortICMP
		}
	}
	p.L4 = l4
	p.L4Len = l4len
	return nil
}

// Ethernet returns the Ethernet header view of the frame.
func (p *Packet) Ethernet() Ethernet { return Ethernet(p.Frame[:EthernetHeaderLen]) }

// IPv4 returns the IPv4 header view (nil unless the frame decoded as IPv4).
func (p *Packet) IPv4() IPv4 {
	if p.L3 == 0 || p.EtherType != EtherTypeIPv4 {
		return nil
	}
	return IPv4(p.Frame[p.L3:p.L4Start()])
}

// IPv6 returns the view of the fixed IPv6 header (nil unless the frame
// decoded as IPv6 far enough to set L3).
func (p *Packet) IPv6() IPv6 {
	if p.L3 == 0 || p.EtherType != EtherTypeIPv6 {
		return nil
	}
	return IPv6(p.Frame[p.L3 : p.L3+IPv6HeaderLen])
}

// IsIPv6 reports whether p decoded as IPv6 (far enough to set L3 and the
// addresses Src6 and Dst6).
func (p *Packet) IsIPv6() bool { return p.L3 != 0 && p.EtherType == EtherTypeIPv6 }

// TTL returns the IPv4 TTL or the IPv6 hop limit, or 0 if p is not a
// decoded IP packet.
func (p *Packet) TTL() uint8 {
	if p.L3 == 0 {
		return 0
	}
	switch p.EtherType {
	case EtherTypeIPv4:
		return p.Frame[p.L3+ipv4TTLOffset]
	case EtherTypeIPv6:
		return p.Frame[p.L3+ipv6HopLimitOffset]
	}
	return 0
}

// L4Start returns the offset just past the IPv4 header, or for IPv6 past
// the fixed header (where extension headers, if any, start; L4 is past
// them).
func (p *Packet) L4Start() int {
	if p.EtherType == EtherTypeIPv6 {
		return p.L3 + IPv6HeaderLen
	}
	return p.L3 + int(p.Frame[p.L3]&0x0f)*4
}

// TCP returns the TCP view of the segment (header and payload), or nil if
// the packet is not a decoded TCP segment.
func (p *Packet) TCP() TCP {
	if p.L4 == 0 || p.Proto != ProtoTCP {
		return nil
	}
	return TCP(p.Frame[p.L4 : p.L4+p.L4Len])
}

// ICMPv6 returns the ICMPv6 view of the message (RFC 4443 §2.1), or nil
// if the packet is not a decoded IPv6 ICMPv6 message.
func (p *Packet) ICMPv6() ICMPv6 {
	if p.L4 == 0 || p.Proto != ProtoICMPv6 || p.EtherType != EtherTypeIPv6 {
		return nil
	}
	return ICMPv6(p.Frame[p.L4 : p.L4+p.L4Len])
}

// ICMP returns the ICMP view of the message, or nil if the packet is not a
// decoded ICMP message.
func (p *Packet) ICMP() ICMP {
	if p.L4 == 0 || p.Proto != ProtoICMP {
		return nil
	}
	return ICMP(p.Frame[p.L4 : p.L4+p.L4Len])
}

// ARP returns the ARP view, or nil if the frame is not a decoded ARP packet.
func (p *Packet) ARP() ARP {
	if p.L3 == 0 || p.EtherType != EtherTypeARP {
		return nil
	}
	return ARP(p.Frame[p.L3:])
}

// decode6 is Decode for EtherType IPv6 (RFC 8200). It is a separate
// function so that the IPv4 path of Decode stays as it was.
func (p *Packet) decode6(frame []byte) error {
	ip := frame[EthernetHeaderLen:]
	if len(ip) < IPv6HeaderLen {
		return ErrShortFrame
	}
	if ip[0]>>4 != 6 {
		return ErrNotIPv6
	}
	plen := int(binary.BigEndian.Uint16(ip[ipv6PayloadLenOffset:]))
	nh := ip[ipv6NextHeaderOffset]
	if plen == 0 && nh == ipv6HopByHop {
		return ErrJumbogram
	}
	if plen > len(ip)-IPv6HeaderLen {
		return ErrBadPayloadLength
	}
	p.L3 = EthernetHeaderLen
	p.Src6 = Addr16(ip[ipv6SrcOffset : ipv6SrcOffset+16])
	p.Dst6 = Addr16(ip[ipv6DstOffset : ipv6DstOffset+16])
	ext := 0
	if isExtHeader(nh) {
		var err error
		ext, nh, err = walkExt(ip[IPv6HeaderLen:IPv6HeaderLen+plen], nh)
		if err != nil {
			p.Proto = nh
			return err
		}
	}
	p.Proto = nh
	l4 := EthernetHeaderLen + IPv6HeaderLen + ext
	l4len := plen - ext
	switch nh {
	case ProtoTCP:
		if l4len < TCPMinimumSize {
			return ErrShortTCP
		}
		t := frame[l4 : l4+l4len]
		doff := int(t[tcpDataOffset]>>4) * 4
		if doff < TCPMinimumSize || doff > l4len {
			return ErrBadDataOffset
		}
		p.SrcPort = binary.BigEndian.Uint16(t[tcpSrcPortOffset:])
		p.DstPort = binary.BigEndian.Uint16(t[tcpDstPortOffset:])
		p.Seq = binary.BigEndian.Uint32(t[tcpSeqOffset:])
		p.Ack = binary.BigEndian.Uint32(t[tcpAckOffset:])
		p.TCPFlags = t[tcpFlagsOffset]
		p.TCPHdrLen = doff
		p.Payload = l4len - doff
	case ProtoICMPv6:
		if l4len < ICMPMinimumSize {
			return ErrShortICMP
		}
	case ProtoUDP, ProtoNoNextHeader:
	default:
		return ErrUnsupportedNextHeader
	}
	p.L4 = l4
	p.L4Len = l4len
	return nil
}
