package nat_test

import (
	"encoding/binary"
	"math/rand/v2"
	"net/netip"
	"testing"

	"tslb/nat"
)

// addr16 parses an IPv6 address literal.
func addr16(s string) nat.Addr16 { return nat.Addr16From(netip.MustParseAddr(s)) }

var (
	ip6C   = addr16("2001:db8::10")  // a client
	ip6V   = addr16("2001:db8:1::1") // a VIP
	ip6LL  = addr16("fe80::2")       // a link-local neighbour
	ip6Rtr = addr16("2001:db8:ff::1")
)

// extHdr is one IPv6 extension header for buildIP6: typ is its own type
// (written into the previous header's Next Header) and data its bytes,
// whose first byte (its Next Header) the builder fills in.
type extHdr struct {
	typ  uint8
	data []byte
}

// Extension headers: 8-byte Hop-by-Hop / Destination Options with one
// PadN option, a Routing header (type 4 style, no addresses) with the
// given segments left, a Fragment header.
func hbh() extHdr      { return extHdr{0, []byte{0, 0, 1, 4, 0, 0, 0, 0}} }
func destOpts() extHdr { return extHdr{60, []byte{0, 0, 1, 4, 0, 0, 0, 0}} }
func routing(segsLeft uint8) extHdr {
	return extHdr{43, []byte{0, 0, 4, segsLeft, 0, 0, 0, 0}}
}
func fragment(offset uint16, more bool) extHdr {
	b := []byte{0, 0, 0, 0, 0x12, 0x34, 0x56, 0x78}
	v := offset << 3
	if more {
		v |= 1
	}
	binary.BigEndian.PutUint16(b[2:], v)
	return extHdr{44, b}
}

// ip6Spec describes an Ethernet/IPv6 frame for buildIP6.
type ip6Spec struct {
	srcMAC, dstMAC nat.MAC
	src, dst       nat.Addr16
	hopLimit       uint8 // 0 means 64
	ext            []extHdr
	proto          uint8  // upper-layer Next Header
	l4             []byte // upper-layer bytes, checksum field as given
	pad            int    // Ethernet padding after the packet
}

// buildIP6 assembles the frame; it computes no checksum.
func buildIP6(s ip6Spec) []byte {
	if s.hopLimit == 0 {
		s.hopLimit = 64
	}
	extLen := 0
	for _, e := range s.ext {
		extLen += len(e.data)
	}
	plen := extLen + len(s.l4)
	f := make([]byte, 14+40+plen+s.pad)
	copy(f[0:6], s.dstMAC[:])
	copy(f[6:12], s.srcMAC[:])
	binary.BigEndian.PutUint16(f[12:], nat.EtherTypeIPv6)
	ip := nat.IPv6(f[14:54])
	ip[0] = 0x60
	ip.SetPayloadLength(uint16(plen))
	ip.SetHopLimit(s.hopLimit)
	ip.SetSrc(s.src)
	ip.SetDst(s.dst)
	prev := &ip[6]
	off := 54
	for _, e := range s.ext {
		*prev = e.typ
		copy(f[off:], e.data)
		prev = &f[off]
		off += len(e.data)
	}
	*prev = s.proto
	copy(f[off:], s.l4)
	return f
}

// tcp6Spec describes a TCP segment for buildTCP6.
type tcp6Spec struct {
	srcMAC, dstMAC nat.MAC
	src, dst       nat.Addr16
	sport, dport   uint16
	seq, ack       uint32
	flags          uint8
	win            uint16
	opts           []byte // a multiple of 4 bytes
	payload        []byte
	hopLimit       uint8
	ext            []extHdr
	pad            int
	partial        bool // checksum field holds the folded pseudo-header sum
}

// tcpBytes returns the TCP header and payload with a zero checksum.
func tcpBytes(sport, dport uint16, seq, ack uint32, flags uint8, win uint16, opts, payload []byte) []byte {
	thl := 20 + len(opts)
	t := make([]byte, thl+len(payload))
	binary.BigEndian.PutUint16(t[0:], sport)
	binary.BigEndian.PutUint16(t[2:], dport)
	binary.BigEndian.PutUint32(t[4:], seq)
	binary.BigEndian.PutUint32(t[8:], ack)
	t[12] = byte(thl/4) << 4
	t[13] = flags
	binary.BigEndian.PutUint16(t[14:], win)
	copy(t[20:], opts)
	copy(t[thl:], payload)
	return t
}

// buildTCP6 returns an Ethernet/IPv6/TCP frame whose checksum is right by
// the slow reference refL4Sum6.
func buildTCP6(s tcp6Spec) []byte {
	t := tcpBytes(s.sport, s.dport, s.seq, s.ack, s.flags, s.win, s.opts, s.payload)
	f := buildIP6(ip6Spec{srcMAC: s.srcMAC, dstMAC: s.dstMAC, src: s.src, dst: s.dst, hopLimit: s.hopLimit,
		ext: s.ext, proto: nat.ProtoTCP, l4: t, pad: s.pad})
	l4 := len(f) - s.pad - len(t)
	setL4Csum6(f[l4:len(f)-s.pad], s.src, s.dst, nat.ProtoTCP, 16, s.partial)
	return f
}

// pseudo6 returns the IPv6 pseudo header bytes (RFC 8200 §8.1).
func pseudo6(src, dst nat.Addr16, l4len int, nh uint8) []byte {
	b := append(append([]byte(nil), src[:]...), dst[:]...)
	b = binary.BigEndian.AppendUint32(b, uint32(l4len))
	return append(b, 0, 0, 0, nh)
}

// refL4Sum6 is the slow reference: the folded sum of the pseudo header and
// msg, 0xffff when msg's checksum is right.
func refL4Sum6(src, dst nat.Addr16, nh uint8, msg []byte) uint16 {
	return refSum(append(pseudo6(src, dst, len(msg), nh), msg...))
}

// setL4Csum6 fills the checksum field at off of msg, by the slow
// reference: the full checksum, or the folded pseudo-header sum.
func setL4Csum6(msg []byte, src, dst nat.Addr16, nh uint8, off int, partial bool) {
	msg[off], msg[off+1] = 0, 0
	var c uint16
	if partial {
		c = refSum(pseudo6(src, dst, len(msg), nh))
	} else {
		c = ^refSum(append(pseudo6(src, dst, len(msg), nh), msg...))
	}
	binary.BigEndian.PutUint16(msg[off:], c)
}

// checkFull6 fails t unless frame decodes as IPv6 and its TCP, UDP or
// ICMPv6 checksum is right by the slow reference.
func checkFull6(t testing.TB, frame []byte) {
	t.Helper()
	var p nat.Packet
	if err := p.Decode(frame); err != nil {
		t.Fatalf("Decode: %v", err)
	}
	ip := nat.IPv6(frame[14:])
	msg := frame[p.L4 : p.L4+p.L4Len]
	if s := refL4Sum6(ip.Src(), ip.Dst(), p.Proto, msg); s != 0xffff {
		t.Fatalf("L4 (next header %d) checksum wrong: sum %#04x\n% x", p.Proto, s, frame)
	}
}

// checkPartial6 fails t unless the TCP checksum field of the IPv6 frame
// holds exactly the folded pseudo-header sum, and completing it gives the
// full checksum.
func checkPartial6(t testing.TB, frame []byte) {
	t.Helper()
	var p nat.Packet
	if err := p.Decode(frame); err != nil {
		t.Fatalf("Decode: %v", err)
	}
	tcp := nat.TCP(frame[p.L4 : p.L4+p.L4Len])
	if got, want := tcp.Checksum(), refSum(pseudo6(p.Src6, p.Dst6, len(tcp), nat.ProtoTCP)); got != want {
		t.Fatalf("partial field %#04x, want pseudo-header sum %#04x", got, want)
	}
	done := append([]byte(nil), frame[:p.L4+p.L4Len]...)
	nat.CompletePartial(done, p.L4, 16)
	checkFull6(t, done)
}

// randAddr16 returns a random address, the old one, or an extreme.
func randAddr16(r *rand.Rand, old nat.Addr16) nat.Addr16 {
	var a nat.Addr16
	switch r.IntN(8) {
	case 0:
		return old
	case 1:
		return a
	case 2:
		for i := range a {
			a[i] = 0xff
		}
		return a
	case 3: // only the last word differs
		a = old
		a[15] ^= byte(r.Uint32()) | 1
		return a
	}
	for i := range a {
		a[i] = byte(r.Uint32())
	}
	return a
}

// randExt returns a random valid extension-header chain (possibly empty).
func randExt(r *rand.Rand) []extHdr {
	var e []extHdr
	if r.IntN(3) == 0 {
		e = append(e, hbh())
	}
	if r.IntN(3) == 0 {
		e = append(e, destOpts())
	}
	if r.IntN(4) == 0 {
		e = append(e, routing(0))
	}
	if r.IntN(4) == 0 {
		e = append(e, fragment(0, false)) // atomic
	}
	if r.IntN(3) == 0 {
		d := destOpts()
		d.data = []byte{0, 1, 1, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0} // 16 bytes: one PadN
		e = append(e, d)
	}
	return e
}

// randTCP6 returns a random but well-formed IPv6 TCP frame (random
// extension headers, options layouts as randTCP).
func randTCP6(r *rand.Rand, partial bool) []byte {
	var s tcp6Spec
	s.src, s.dst = randAddr16(r, ip6C), randAddr16(r, ip6V)
	s.sport, s.dport = uint16(r.Uint32()), uint16(r.Uint32())
	s.seq, s.ack = r.Uint32(), r.Uint32()
	s.flags = uint8(r.Uint32())
	s.win = uint16(r.Uint32())
	s.hopLimit = uint8(r.IntN(255) + 1)
	s.ext = randExt(r)
	s.partial = partial
	switch r.IntN(4) {
	case 0:
	case 1:
		s.opts = tsOpts(r.Uint32(), r.Uint32())
	case 2:
		s.opts = []byte{2, 4, 5, 0xa0, 4, 2, 8, 10, 1, 2, 3, 4, 5, 6, 7, 8, 1, 3, 3, 7}
	case 3:
		s.opts = []byte{1, 8, 10, 1, 2, 3, 4, 5, 6, 7, 8, 1, 1, 1, 5, 18,
			1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}
	}
	s.payload = make([]byte, r.IntN(1500))
	for i := range s.payload {
		s.payload[i] = byte(r.Uint32())
	}
	if !partial && r.IntN(8) == 0 {
		s.pad = 1 + r.IntN(20)
	}
	return buildTCP6(s)
}
