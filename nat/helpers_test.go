package nat_test

import (
	"encoding/binary"
	"math/rand/v2"
	"testing"

	"tslb/nat"
)

// tcpSpec describes a TCP segment for buildTCP.
type tcpSpec struct {
	srcMAC, dstMAC nat.MAC
	src, dst       nat.Addr4
	sport, dport   uint16
	seq, ack       uint32
	flags          uint8
	win            uint16
	opts           []byte // must be a multiple of 4 bytes
	payload        []byte
	ttl            uint8
	pad            int // Ethernet padding after the datagram
}

var (
	macA = nat.MAC{0x02, 0, 0, 0, 0, 0x0a}
	macB = nat.MAC{0x02, 0, 0, 0, 0, 0x0b}
	ipC  = nat.Addr4{192, 0, 2, 10}
	ipV  = nat.Addr4{198, 51, 100, 1}
)

// buildTCP returns an Ethernet/IPv4/TCP frame with correct checksums.
func buildTCP(s tcpSpec) []byte {
	if s.ttl == 0 {
		s.ttl = 64
	}
	thl := 20 + len(s.opts)
	tl := 20 + thl + len(s.payload)
	f := make([]byte, 14+tl+s.pad)
	copy(f[0:6], s.dstMAC[:])
	copy(f[6:12], s.srcMAC[:])
	binary.BigEndian.PutUint16(f[12:], nat.EtherTypeIPv4)
	ip := f[14:34]
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], uint16(tl))
	binary.BigEndian.PutUint16(ip[4:], 0x1234)
	binary.BigEndian.PutUint16(ip[6:], 0x4000) // DF
	ip[8] = s.ttl
	ip[9] = nat.ProtoTCP
	copy(ip[12:16], s.src[:])
	copy(ip[16:20], s.dst[:])
	nat.IPv4(ip).SetChecksum(nat.IPv4(ip).ComputeChecksum())
	t := f[34 : 14+tl]
	binary.BigEndian.PutUint16(t[0:], s.sport)
	binary.BigEndian.PutUint16(t[2:], s.dport)
	binary.BigEndian.PutUint32(t[4:], s.seq)
	binary.BigEndian.PutUint32(t[8:], s.ack)
	t[12] = byte(thl/4) << 4
	t[13] = s.flags
	binary.BigEndian.PutUint16(t[14:], s.win)
	copy(t[20:], s.opts)
	copy(t[thl:], s.payload)
	nat.TCP(t).SetChecksum(nat.TCPChecksum(s.src, s.dst, t))
	return f
}

// tsOpts is NOP NOP TS(tsval, tsecr), the Linux established layout.
func tsOpts(tsval, tsecr uint32) []byte {
	b := []byte{1, 1, 8, 10, 0, 0, 0, 0, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(b[4:], tsval)
	binary.BigEndian.PutUint32(b[8:], tsecr)
	return b
}

// randTCP returns a random but well-formed TCP frame.
func randTCP(r *rand.Rand) []byte {
	var s tcpSpec
	binary.BigEndian.PutUint32(s.src[:], r.Uint32())
	binary.BigEndian.PutUint32(s.dst[:], r.Uint32())
	s.sport, s.dport = uint16(r.Uint32()), uint16(r.Uint32())
	s.seq, s.ack = r.Uint32(), r.Uint32()
	s.flags = uint8(r.Uint32())
	s.win = uint16(r.Uint32())
	s.ttl = uint8(r.IntN(255) + 1)
	switch r.IntN(4) {
	case 0:
	case 1:
		s.opts = tsOpts(r.Uint32(), r.Uint32())
	case 2: // MSS, SACK-permitted+TS, NOP WS (Linux SYN)
		s.opts = []byte{2, 4, 5, 0xb4, 4, 2, 8, 10, 1, 2, 3, 4, 5, 6, 7, 8, 1, 3, 3, 7}
	case 3: // TS then SACK with 2 blocks, TS at an odd-aligned offset
		s.opts = []byte{1, 8, 10, 1, 2, 3, 4, 5, 6, 7, 8, 1, 1, 1, 5, 18,
			1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}
	}
	s.payload = make([]byte, r.IntN(1500))
	for i := range s.payload {
		s.payload[i] = byte(r.Uint32())
	}
	return buildTCP(s)
}

// checkFull fails t unless the IPv4 and TCP checksums of frame are right.
func checkFull(t *testing.T, frame []byte) {
	t.Helper()
	var p nat.Packet
	if err := p.Decode(frame); err != nil {
		t.Fatalf("Decode: %v", err)
	}
	ip := nat.IPv4(frame[14:])
	if got, want := ip.Checksum(), ip.ComputeChecksum(); got != want {
		t.Fatalf("IPv4 checksum = %#04x, want %#04x", got, want)
	}
	if p.Proto == nat.ProtoTCP {
		tcp := nat.TCP(frame[p.L4 : p.L4+p.L4Len])
		if got, want := tcp.Checksum(), nat.TCPChecksum(p.Src, p.Dst, tcp); got != want {
			t.Fatalf("TCP checksum = %#04x, want %#04x", got, want)
		}
	}
}
