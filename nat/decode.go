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
	// ErrUnsupportedEtherType means the EtherType is neither IPv4 nor ARP
	// (VLAN tags included).
	ErrUnsupportedEtherType = errors.New("nat: unsupported EtherType")
	// ErrNotICMPError means ParseICMPError was given something other than
	// an ICMP error quoting an IPv4 TCP or UDP header. Reason maps it to
	// "other".
	ErrNotICMPError = errors.New("nat: not an ICMP error about TCP/UDP")
)

// Reasons lists every label Reason can return, for pre-creating metrics.
var Reasons = []string{
	"short_frame", "not_ipv4", "bad_ihl", "bad_total_length", "fragment",
	"short_tcp", "bad_data_offset", "bad_options", "short_icmp", "short_arp",
	"unsupported_ethertype", "bad_ip_checksum", "bad_tcp_checksum", "bad_ip_options",
	"ip_source_route", "other",
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
	}
	return "other"
}

// Packet is a decoded Ethernet/IPv4 frame; Decode fills it in place with no
// allocation. Offsets index Frame.
type Packet struct {
	// Frame is the whole frame as given to Decode, Ethernet padding
	// included.
	Frame []byte
	// EtherType is the Ethernet type field.
	EtherType uint16
	// L3 and L4 are the offsets of the IPv4 header and of the L4 header
	// (0 when absent). For ARP, L3 is the offset of the ARP payload.
	L3, L4 int
	// L4Len is the number of bytes of L4 (header and payload) according to
	// the IPv4 total length.
	L4Len int
	// Proto is the IPv4 protocol field.
	Proto uint8
	// Src and Dst are the IPv4 addresses.
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
}

// Decode validates frame once and fills p (gVisor IsValid style). The view
// getters are safe on the ranges Decode accepted. Ethernet padding past
// the IPv4 total length is accepted and ignored. On error the fields that
// could be decoded are set (for a fragment: the IPv4 fields, L4 = 0) and the
// rest are zero, so the rewrite methods are no-ops where they have nothing
// valid to work on. Decode does not parse TCP options; see TCPOptions.
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

// L4Start returns the offset just past the IPv4 header.
func (p *Packet) L4Start() int {
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
