package link

import "encoding/binary"

// Frame builders. Frames carry a 32-bit test marker at the start of the
// TCP/UDP payload (or in the ARP target hardware address) so that lab
// noise is told apart from test frames.

const markerMagic = 0x7e57 // "test"

// ipv4TCP returns an Ethernet frame (no virtio header) with an IPv4 TCP
// segment; ihl (in 32-bit words, >= 5) lets tests add IP options; frag
// sets the flags/fragment-offset field.
func ipv4TCP(dst, src [6]byte, sip, dip [4]byte, sport, dport uint16, ihl int, frag uint16, marker uint32) []byte {
	ipl := ihl * 4
	f := make([]byte, ethLen+ipl+20+8)
	copy(f[0:6], dst[:])
	copy(f[6:12], src[:])
	binary.BigEndian.PutUint16(f[12:], etherTypeIPv4)
	ip := f[ethLen:]
	ip[0] = 0x40 | byte(ihl)
	binary.BigEndian.PutUint16(ip[2:], uint16(len(ip)))
	binary.BigEndian.PutUint16(ip[6:], frag)
	ip[8] = 64
	ip[9] = ipProtoTCP
	copy(ip[12:16], sip[:])
	copy(ip[16:20], dip[:])
	for i := 20; i < ipl; i++ {
		ip[i] = 1 // NOP options
	}
	binary.BigEndian.PutUint16(ip[10:], ipChecksum(ip[:ipl]))
	tcp := ip[ipl:]
	binary.BigEndian.PutUint16(tcp[0:], sport)
	binary.BigEndian.PutUint16(tcp[2:], dport)
	tcp[12] = 5 << 4
	tcp[13] = 0x10 // ACK
	binary.BigEndian.PutUint16(tcp[14:], 65535)
	putMarker(tcp[20:], marker)
	return f
}

// ipv6TCP returns an Ethernet frame with an IPv6 TCP segment; a non-zero
// next replaces TCP as the next header (an extension header in front of
// TCP, which steering must not look through).
func ipv6TCP(dst, src [6]byte, sip, dip [16]byte, sport, dport uint16, next byte, marker uint32) []byte {
	f := make([]byte, ethLen+40+20+8)
	copy(f[0:6], dst[:])
	copy(f[6:12], src[:])
	binary.BigEndian.PutUint16(f[12:], etherTypeIPv6)
	ip := f[ethLen:]
	ip[0] = 0x60
	binary.BigEndian.PutUint16(ip[4:], 28)
	ip[6] = ipProtoTCP
	if next != 0 {
		ip[6] = next
	}
	ip[7] = 64
	copy(ip[8:24], sip[:])
	copy(ip[24:40], dip[:])
	tcp := ip[40:]
	binary.BigEndian.PutUint16(tcp[0:], sport)
	binary.BigEndian.PutUint16(tcp[2:], dport)
	tcp[12] = 5 << 4
	tcp[13] = 0x10
	putMarker(tcp[20:], marker)
	return f
}

// ipv4UDP returns an Ethernet frame with an IPv4 UDP datagram.
func ipv4UDP(dst, src [6]byte, sip, dip [4]byte, sport, dport uint16, marker uint32) []byte {
	f := ipv4TCP(dst, src, sip, dip, sport, dport, 5, 0, 0)
	ip := f[ethLen:]
	ip[9] = 17
	binary.BigEndian.PutUint16(ip[10:], 0)
	binary.BigEndian.PutUint16(ip[10:], ipChecksum(ip[:20]))
	clear(ip[20:])
	binary.BigEndian.PutUint16(ip[20:], sport)
	binary.BigEndian.PutUint16(ip[22:], dport)
	binary.BigEndian.PutUint16(ip[24:], 8+8)
	putMarker(ip[28:], marker)
	return f
}

// arpFrame returns a broadcast ARP request; the marker is in the target
// hardware address field (ignored in a request).
func arpFrame(src [6]byte, sip, tip [4]byte, marker uint32) []byte {
	f := make([]byte, ethLen+28)
	for i := range 6 {
		f[i] = 0xff
	}
	copy(f[6:12], src[:])
	binary.BigEndian.PutUint16(f[12:], etherTypeARP)
	a := f[ethLen:]
	binary.BigEndian.PutUint16(a[0:], 1)
	binary.BigEndian.PutUint16(a[2:], etherTypeIPv4)
	a[4], a[5] = 6, 4
	binary.BigEndian.PutUint16(a[6:], 1)
	copy(a[8:14], src[:])
	copy(a[14:18], sip[:])
	putMarker(a[18:24], marker)
	copy(a[24:28], tip[:])
	return f
}

func putMarker(b []byte, m uint32) {
	binary.BigEndian.PutUint16(b, markerMagic)
	binary.BigEndian.PutUint32(b[2:], m)
}

// markerOf finds the test marker of an Ethernet frame built above.
func markerOf(eth []byte) (uint32, bool) {
	if len(eth) < ethLen+2 {
		return 0, false
	}
	var p []byte
	switch binary.BigEndian.Uint16(eth[12:]) {
	case etherTypeIPv4:
		ip := eth[ethLen:]
		if len(ip) < 20 {
			return 0, false
		}
		l4 := int(ip[0]&0xf) * 4
		switch ip[9] {
		case ipProtoTCP:
			p = ip[min(l4+20, len(ip)):]
		case 17:
			p = ip[min(l4+8, len(ip)):]
		}
	case etherTypeIPv6:
		if len(eth) >= ethLen+60 {
			p = eth[ethLen+60:]
		}
	case etherTypeARP:
		if len(eth) >= ethLen+24 {
			p = eth[ethLen+18:]
		}
	}
	if len(p) < 6 || binary.BigEndian.Uint16(p) != markerMagic {
		return 0, false
	}
	return binary.BigEndian.Uint32(p[2:]), true
}

func ipChecksum(b []byte) uint16 {
	return ^fold(sum16(b, 0))
}

func sum16(b []byte, s uint32) uint32 {
	for len(b) >= 2 {
		s += uint32(binary.BigEndian.Uint16(b))
		b = b[2:]
	}
	if len(b) == 1 {
		s += uint32(b[0]) << 8
	}
	return s
}

func fold(s uint32) uint16 {
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	return uint16(s)
}

// withVnet prepends an empty virtio_net_hdr, as Recv returns frames.
func withVnet(eth []byte) []byte {
	return append(make([]byte, vnetLen, vnetLen+len(eth)), eth...)
}
