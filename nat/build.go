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
