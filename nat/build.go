package nat

import "encoding/binary"

// BuildTCP writes an Ethernet + IPv4 + TCP segment with no options and no
// payload into buf and returns its length (54 bytes; buf must hold at
// least that, else it returns 0). Checksums are complete. tslb uses it for
// the RSTs it sends itself: the reset of a refused client and the
// TIME_WAIT "assassination" of the collision repair (RFC 1337; Linux
// tcp_rfc1337=0 lets an RST with seq == rcv_nxt end a TIME_WAIT).
func BuildTCP(buf []byte, ethSrc, ethDst MAC, src, dst Addr4, sport, dport uint16, seq, ack uint32, flags uint8, window uint16) int {
	const n = EthernetHeaderLen + IPv4MinimumSize + TCPMinimumSize
	if len(buf) < n {
		return 0
	}
	b := buf[:n]
	clear(b)
	copy(b[0:6], ethDst[:])
	copy(b[6:12], ethSrc[:])
	binary.BigEndian.PutUint16(b[12:], EtherTypeIPv4)
	ip := b[EthernetHeaderLen:]
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], IPv4MinimumSize+TCPMinimumSize)
	binary.BigEndian.PutUint16(ip[6:], 0x4000) // DF
	ip[8] = 64
	ip[9] = ProtoTCP
	copy(ip[12:16], src[:])
	copy(ip[16:20], dst[:])
	binary.BigEndian.PutUint16(ip[10:], IPv4(ip[:IPv4MinimumSize]).ComputeChecksum())
	t := ip[IPv4MinimumSize:]
	binary.BigEndian.PutUint16(t[0:], sport)
	binary.BigEndian.PutUint16(t[2:], dport)
	binary.BigEndian.PutUint32(t[4:], seq)
	binary.BigEndian.PutUint32(t[8:], ack)
	t[12] = 5 << 4
	t[13] = flags
	binary.BigEndian.PutUint16(t[14:], window)
	binary.BigEndian.PutUint16(t[16:], TCPChecksum(src, dst, t[:TCPMinimumSize]))
	return n
}

// BuildTCP6 is BuildTCP for IPv6: it writes an Ethernet + IPv6 + TCP
// segment with no extension headers, no options and no payload into buf
// and returns its length (74 bytes; buf must hold at least that, else it
// returns 0). Traffic class and flow label are 0, the hop limit 64, the
// TCP checksum complete (RFC 8200 §8.1 pseudo header; IPv6 has no header
// checksum). tslb uses it for the RSTs (and ACKs) it sends itself.
func BuildTCP6(buf []byte, ethSrc, ethDst MAC, src, dst Addr16, sport, dport uint16, seq, ack uint32, flags uint8, window uint16) int {
	const n = EthernetHeaderLen + IPv6HeaderLen + TCPMinimumSize
	if len(buf) < n {
		return 0
	}
	b := buf[:n]
	clear(b)
	copy(b[0:6], ethDst[:])
	copy(b[6:12], ethSrc[:])
	binary.BigEndian.PutUint16(b[12:], EtherTypeIPv6)
	ip := IPv6(b[EthernetHeaderLen : EthernetHeaderLen+IPv6HeaderLen])
	ip[0] = 6 << 4
	ip.SetPayloadLength(TCPMinimumSize)
	ip.SetNextHeader(ProtoTCP)
	ip.SetHopLimit(64)
	ip.SetSrc(src)
	ip.SetDst(dst)
	t := b[EthernetHeaderLen+IPv6HeaderLen:]
	binary.BigEndian.PutUint16(t[0:], sport)
	binary.BigEndian.PutUint16(t[2:], dport)
	binary.BigEndian.PutUint32(t[4:], seq)
	binary.BigEndian.PutUint32(t[8:], ack)
	t[12] = 5 << 4
	t[13] = flags
	binary.BigEndian.PutUint16(t[14:], window)
	binary.BigEndian.PutUint16(t[16:], TCPChecksum6(src, dst, t[:TCPMinimumSize]))
	return n
}

// BuildTCPOptions is BuildTCP with the TCP options of o (written by
// WriteTCPOptions: MSS, SACK-permitted, timestamps, window scale, SACK
// blocks) and no payload. It returns the frame's length, or 0 if buf is
// too short or the options do not fit. tslb uses it for the SYN-ACKs of
// its SYN proxy and the SYNs it opens toward backends for them.
func BuildTCPOptions(buf []byte, ethSrc, ethDst MAC, src, dst Addr4, sport, dport uint16, seq, ack uint32, flags uint8, window uint16, o *TCPOptions) int {
	var opts [MaxOptionsLen]byte
	ol := WriteTCPOptions(opts[:], o)
	if ol < 0 {
		return 0
	}
	n := EthernetHeaderLen + IPv4MinimumSize + TCPMinimumSize + ol
	if len(buf) < n || BuildTCP(buf, ethSrc, ethDst, src, dst, sport, dport, seq, ack, flags, window) == 0 {
		return 0
	}
	b := buf[:n]
	ip := b[EthernetHeaderLen:]
	binary.BigEndian.PutUint16(ip[2:], uint16(IPv4MinimumSize+TCPMinimumSize+ol))
	binary.BigEndian.PutUint16(ip[10:], 0)
	binary.BigEndian.PutUint16(ip[10:], IPv4(ip[:IPv4MinimumSize]).ComputeChecksum())
	t := ip[IPv4MinimumSize:]
	copy(t[TCPMinimumSize:], opts[:ol])
	t[12] = byte((TCPMinimumSize+ol)/4) << 4
	binary.BigEndian.PutUint16(t[16:], 0)
	binary.BigEndian.PutUint16(t[16:], TCPChecksum(src, dst, t))
	return n
}
