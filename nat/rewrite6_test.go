package nat_test

import (
	"encoding/binary"
	"math/rand/v2"
	"reflect"
	"slices"
	"testing"

	"tslb/nat"
)

// tuple6Spec describes a frame for tuple6Frame.
type tuple6Spec struct {
	proto        uint8 // nat.ProtoTCP, nat.ProtoUDP or nat.ProtoICMPv6
	src, dst     nat.Addr16
	sport, dport uint16 // TCP and UDP only
	payload      []byte
	ext          []extHdr
	noUDPCsum    bool // UDP checksum 0 (invalid in IPv6, but must stay 0)
	partial      bool // L4 checksum holds the folded pseudo-header sum
	pad          int  // Ethernet padding (full mode only)
}

// tuple6CsumOff returns the offset of the L4 checksum in the L4 header.
func tuple6CsumOff(proto uint8) int {
	switch proto {
	case nat.ProtoTCP:
		return 16
	case nat.ProtoUDP:
		return 6
	}
	return 2 // ICMPv6
}

// tuple6Frame returns an Ethernet/IPv6 frame carrying a TCP segment
// (20-byte header), a UDP datagram or an ICMPv6 echo request, with a
// checksum right by the slow reference.
func tuple6Frame(s tuple6Spec) []byte {
	var l4 []byte
	switch s.proto {
	case nat.ProtoTCP:
		l4 = tcpBytes(s.sport, s.dport, 0x01020304, 0x05060708, nat.TCPFlagACK, 501, nil, s.payload)
	case nat.ProtoUDP:
		l4 = make([]byte, 8+len(s.payload))
		binary.BigEndian.PutUint16(l4[0:], s.sport)
		binary.BigEndian.PutUint16(l4[2:], s.dport)
		binary.BigEndian.PutUint16(l4[4:], uint16(len(l4)))
		copy(l4[8:], s.payload)
	case nat.ProtoICMPv6:
		l4 = make([]byte, 8+len(s.payload))
		l4[0] = nat.ICMPv6TypeEchoRequest
		binary.BigEndian.PutUint32(l4[4:], 0x00010002)
		copy(l4[8:], s.payload)
	}
	f := buildIP6(ip6Spec{srcMAC: macA, dstMAC: macB, src: s.src, dst: s.dst, ext: s.ext, proto: s.proto, l4: l4, pad: s.pad})
	msg := f[len(f)-s.pad-len(l4) : len(f)-s.pad]
	off := tuple6CsumOff(s.proto)
	setL4Csum6(msg, s.src, s.dst, s.proto, off, s.partial)
	c := binary.BigEndian.Uint16(msg[off:])
	if s.proto == nat.ProtoUDP && !s.partial && c == 0 {
		binary.BigEndian.PutUint16(msg[off:], 0xffff) // RFC 8200 §8.1: a computed 0 is sent as 0xffff
	}
	if s.noUDPCsum && s.proto == nat.ProtoUDP {
		msg[6], msg[7] = 0, 0
	}
	return f
}

// checkTuple6Csums fails t unless the L4 checksum of the IPv6 frame is
// right by the slow reference (partial mode: the field is exactly the
// pseudo-header sum and completes to the full checksum). A UDP checksum
// of 0 is accepted as is; the callers check it stayed 0.
func checkTuple6Csums(t *testing.T, frame []byte, partial bool) {
	t.Helper()
	var p nat.Packet
	if err := p.Decode(frame); err != nil {
		t.Fatalf("Decode: %v", err)
	}
	msg := frame[p.L4 : p.L4+p.L4Len]
	off := tuple6CsumOff(p.Proto)
	got := binary.BigEndian.Uint16(msg[off:])
	if p.Proto == nat.ProtoUDP && got == 0 && !partial {
		return
	}
	if partial {
		if want := refSum(pseudo6(p.Src6, p.Dst6, len(msg), p.Proto)); got != want {
			t.Fatalf("partial field %#04x, want pseudo-header sum %#04x", got, want)
		}
		done := slices.Clone(frame[:p.L4+p.L4Len])
		nat.CompletePartial(done, p.L4, off)
		msg = done[p.L4:]
	}
	if s := refL4Sum6(p.Src6, p.Dst6, p.Proto, msg); s != 0xffff {
		t.Fatalf("L4 checksum wrong (sum %#04x, partial=%v)", s, partial)
	}
}

// setTuple6Both rewrites two copies of frame, one with the four setters
// (in the datapath's order), one with SetTuple6, and fails t unless the
// frames and Packets are identical. It returns the SetTuple6 frame.
func setTuple6Both(t *testing.T, frame []byte, partial bool, src nat.Addr16, sport uint16, dst nat.Addr16, dport uint16) []byte {
	t.Helper()
	a, b := slices.Clone(frame), slices.Clone(frame)
	pa, pb := nat.Packet{PartialCsum: partial}, nat.Packet{PartialCsum: partial}
	errA, errB := pa.Decode(a), pb.Decode(b)
	if errA != errB {
		t.Fatalf("Decode: %v vs %v", errA, errB)
	}
	pa.SetSrc6(src)
	pa.SetSrcPort(sport)
	pa.SetDst6(dst)
	pa.SetDstPort(dport)
	pb.SetTuple6(src, sport, dst, dport)
	if !slices.Equal(a, b) {
		t.Fatalf("frames differ\nsetters   % x\nSetTuple6 % x\norig      % x", a, b, frame)
	}
	pa.Frame, pb.Frame = nil, nil
	if !reflect.DeepEqual(pa, pb) {
		t.Fatalf("Packet fields differ\nsetters   %+v\nSetTuple6 %+v", pa, pb)
	}
	return b
}

func TestSetTuple6MatchesSetters(t *testing.T) {
	r := rand.New(rand.NewPCG(71, 72))
	counts := map[uint8]int{}
	odd, ext := 0, 0
	for i := range 3000 {
		var s tuple6Spec
		s.proto = []uint8{nat.ProtoTCP, nat.ProtoUDP, nat.ProtoICMPv6}[i%3]
		s.partial = i%6 >= 3
		s.src, s.dst = randAddr16(r, ip6C), randAddr16(r, ip6V)
		s.sport, s.dport = uint16(r.Uint32()), uint16(r.Uint32())
		s.ext = randExt(r)
		s.payload = make([]byte, r.IntN(1500))
		for j := range s.payload {
			s.payload[j] = byte(r.Uint32())
		}
		if len(s.payload)%2 == 1 {
			odd++
		}
		if len(s.ext) > 0 {
			ext++
		}
		if !s.partial && r.IntN(8) == 0 {
			s.pad = 1 + r.IntN(20)
		}
		s.noUDPCsum = s.proto == nat.ProtoUDP && !s.partial && r.IntN(8) == 0
		frame := tuple6Frame(s)
		checkTuple6Csums(t, frame, s.partial) // the builder is right

		src, dst := randAddr16(r, s.src), randAddr16(r, s.dst)
		sport, dport := randTuplePort(r, s.sport), randTuplePort(r, s.dport)
		got := setTuple6Both(t, frame, s.partial, src, sport, dst, dport)
		checkTuple6Csums(t, got, s.partial)

		var p nat.Packet
		if err := p.Decode(got); err != nil {
			t.Fatal(err)
		}
		if p.Src6 != src || p.Dst6 != dst {
			t.Fatalf("packet %d: addresses %v %v, want %v %v", i, p.Src6, p.Dst6, src, dst)
		}
		u := got[p.L4:]
		if s.proto == nat.ProtoTCP {
			if gs, gd := binary.BigEndian.Uint16(u[0:]), binary.BigEndian.Uint16(u[2:]); gs != sport || gd != dport {
				t.Fatalf("packet %d: ports %d %d, want %d %d", i, gs, gd, sport, dport)
			}
		} else if !slices.Equal(u[:4], frame[p.L4:p.L4+4]) && s.proto == nat.ProtoUDP {
			t.Fatalf("packet %d: UDP ports changed", i)
		}
		if s.noUDPCsum && (u[6] != 0 || u[7] != 0) {
			t.Fatalf("packet %d: zero UDP checksum changed to % x", i, u[6:8])
		}
		counts[s.proto]++
	}
	if odd < 1000 || ext < 1000 || counts[nat.ProtoTCP] != 1000 || counts[nat.ProtoUDP] != 1000 || counts[nat.ProtoICMPv6] != 1000 {
		t.Fatalf("coverage: %d odd payloads, %d with extension headers, %v per protocol", odd, ext, counts)
	}
}

func TestSetTuple6Edges(t *testing.T) {
	var zero, ones nat.Addr16
	for i := range ones {
		ones[i] = 0xff
	}
	tests := []struct {
		name    string
		spec    tuple6Spec
		csum    int // if >= 0, overwrite the L4 checksum field (no validity check)
		src     nat.Addr16
		dst     nat.Addr16
		sp, dp  uint16
		checkOK bool
	}{
		{name: "tcp_unchanged", spec: tuple6Spec{proto: nat.ProtoTCP, src: ip6C, dst: ip6V, sport: 1, dport: 2}, csum: -1,
			src: ip6C, dst: ip6V, sp: 1, dp: 2, checkOK: true},
		{name: "tcp_zero_to_ones", spec: tuple6Spec{proto: nat.ProtoTCP}, csum: -1, src: ones, dst: ones, sp: 0xffff, dp: 0xffff, checkOK: true},
		{name: "tcp_ones_to_zero", spec: tuple6Spec{proto: nat.ProtoTCP, src: ones, dst: ones, sport: 0xffff, dport: 0xffff}, csum: -1,
			src: zero, dst: zero, checkOK: true},
		{name: "tcp_field_ffff_unchanged", spec: tuple6Spec{proto: nat.ProtoTCP, src: ip6C, dst: ip6V, sport: 1, dport: 2}, csum: 0xffff,
			src: ip6C, dst: ip6V, sp: 1, dp: 2},
		{name: "tcp_field_0000_unchanged", spec: tuple6Spec{proto: nat.ProtoTCP, src: ip6C, dst: ip6V, sport: 1, dport: 2}, csum: 0,
			src: ip6C, dst: ip6V, sp: 1, dp: 2},
		{name: "tcp_partial_field_0000_ones_to_zero", spec: tuple6Spec{proto: nat.ProtoTCP, src: ones, dst: ones, partial: true}, csum: 0},
		{name: "tcp_partial_odd_ext", spec: tuple6Spec{proto: nat.ProtoTCP, src: ip6C, dst: ip6V, sport: 1, dport: 2, partial: true,
			payload: []byte("odd"), ext: []extHdr{hbh(), destOpts()}}, csum: -1, src: ip6LL, dst: ip6Rtr, sp: 40000, dp: 8080, checkOK: true},
		{name: "udp_csum_becomes_ffff", spec: tuple6Spec{proto: nat.ProtoUDP, src: ip6C, dst: ip6V, sport: 53, dport: 53}, csum: 0xffff,
			src: ip6V, dst: ip6C, sp: 1, dp: 1},
		{name: "udp_no_csum", spec: tuple6Spec{proto: nat.ProtoUDP, src: ip6C, dst: ip6V, sport: 53, dport: 53, noUDPCsum: true, payload: []byte("x")},
			csum: -1, src: ip6V, dst: ip6C, sp: 1, dp: 1, checkOK: true},
		{name: "udp_partial", spec: tuple6Spec{proto: nat.ProtoUDP, src: ip6C, dst: ip6V, sport: 53, dport: 53, partial: true, payload: []byte("hello")},
			csum: -1, src: ip6V, dst: ones, sp: 1, dp: 1, checkOK: true},
		{name: "icmpv6_pseudo_header", spec: tuple6Spec{proto: nat.ProtoICMPv6, src: ip6C, dst: ip6V, payload: []byte("hi!")},
			csum: -1, src: ip6LL, dst: ip6Rtr, sp: 7, dp: 9, checkOK: true},
		{name: "icmpv6_partial", spec: tuple6Spec{proto: nat.ProtoICMPv6, src: ip6C, dst: ip6V, partial: true},
			csum: -1, src: ip6LL, dst: ip6Rtr, checkOK: true},
		{name: "tcp_padded", spec: tuple6Spec{proto: nat.ProtoTCP, src: ip6C, dst: ip6V, sport: 1, dport: 2, pad: 6},
			csum: -1, src: ip6LL, dst: ip6Rtr, sp: 7, dp: 9, checkOK: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			frame := tuple6Frame(tt.spec)
			var p nat.Packet
			if err := p.Decode(frame); err != nil {
				t.Fatal(err)
			}
			if tt.csum >= 0 {
				binary.BigEndian.PutUint16(frame[p.L4+tuple6CsumOff(tt.spec.proto):], uint16(tt.csum))
			}
			got := setTuple6Both(t, frame, tt.spec.partial, tt.src, tt.sp, tt.dst, tt.dp)
			if tt.checkOK {
				checkTuple6Csums(t, got, tt.spec.partial)
			}
			if tt.spec.proto == nat.ProtoICMPv6 && !slices.Equal(got[p.L4+4:], frame[p.L4+4:]) {
				t.Errorf("ICMPv6 body changed")
			}
		})
	}
}

// TestSetTuple6StoppedInExtHeaders checks that a packet Decode stopped in
// its extension headers (a fragment) gets the addresses and nothing else.
func TestSetTuple6StoppedInExtHeaders(t *testing.T) {
	frame := buildTCP6(tcp6Spec{src: ip6C, dst: ip6V, sport: 1, dport: 2, ext: []extHdr{fragment(0, true)}, payload: []byte("frag")})
	orig := slices.Clone(frame)
	var p nat.Packet
	if err := p.Decode(frame); err != nat.ErrFragment6 {
		t.Fatalf("Decode = %v", err)
	}
	p.SetTuple6(ip6LL, 7, ip6Rtr, 9)
	if ip := nat.IPv6(frame[14:]); ip.Src() != ip6LL || ip.Dst() != ip6Rtr || p.Src6 != ip6LL || p.Dst6 != ip6Rtr {
		t.Errorf("addresses not rewritten")
	}
	if !slices.Equal(frame[54:], orig[54:]) || !slices.Equal(frame[:22], orig[:22]) {
		t.Errorf("more than the addresses changed")
	}
}

func TestSetTuple6NotIPv6(t *testing.T) {
	arp := make([]byte, 14+28)
	binary.BigEndian.PutUint16(arp[12:], nat.EtherTypeARP)
	for name, frame := range map[string][]byte{
		"arp":    arp,
		"short":  make([]byte, 10),
		"ipv4":   tupleFrame(tupleSpec{proto: nat.ProtoTCP}),
		"jumbo":  edit(with(hbh()), func(b []byte) { b[18], b[19] = 0, 0 }),
		"v4in86": edit(tupleFrame(tupleSpec{proto: nat.ProtoTCP}), func(b []byte) { b[12], b[13] = 0x86, 0xdd }),
	} {
		orig := slices.Clone(frame)
		var p nat.Packet
		_ = p.Decode(frame)
		before := p
		p.SetTuple6(ip6V, 1, ip6C, 2)
		p.SetSrc6(ip6V)
		p.SetDst6(ip6C)
		if !slices.Equal(frame, orig) {
			t.Errorf("%s: frame changed", name)
		}
		before.Frame, p.Frame = nil, nil
		if !reflect.DeepEqual(p, before) {
			t.Errorf("%s: Packet changed to %+v", name, p)
		}
	}
	var zero nat.Packet
	zero.SetTuple6(ip6V, 1, ip6C, 2) // must not panic
}

func TestSetTuple6NoAllocs(t *testing.T) {
	for _, proto := range []uint8{nat.ProtoTCP, nat.ProtoUDP, nat.ProtoICMPv6} {
		for _, partial := range []bool{false, true} {
			frame := tuple6Frame(tuple6Spec{proto: proto, src: ip6C, dst: ip6V, sport: 1, dport: 2, partial: partial, payload: make([]byte, 100)})
			p := nat.Packet{PartialCsum: partial}
			if err := p.Decode(frame); err != nil {
				t.Fatal(err)
			}
			var i uint16
			n := testing.AllocsPerRun(1000, func() {
				i++
				p.SetTuple6(ip6V, i, ip6C, ^i)
			})
			if n != 0 {
				t.Errorf("proto %d partial=%v: SetTuple6 allocs = %v, want 0", proto, partial, n)
			}
		}
	}
}

// FuzzSetTuple6 builds a TCP, UDP or ICMPv6 packet (with or without
// extension headers) from the inputs, optionally overwrites its L4
// checksum field with an arbitrary value, and requires SetTuple6 to give
// exactly what the four setters give; with an untouched checksum the
// result must also verify by the slow reference, in both checksum modes.
// It is the incremental-vs-full checksum fuzz for IPv6 address rewrites.
func FuzzSetTuple6(f *testing.F) {
	f.Add([]byte("odd"), uint8(0), false, ip6C[:], ip6V[:], uint16(40000), uint16(443), ip6LL[:], ip6Rtr[:], uint16(33333), uint16(8443), int32(-1))
	f.Add([]byte{}, uint8(1), true, make([]byte, 16), slices.Repeat([]byte{0xff}, 16), uint16(0), uint16(0xffff),
		slices.Repeat([]byte{0xff}, 16), make([]byte, 16), uint16(0xffff), uint16(0), int32(-1))
	f.Add([]byte("x"), uint8(0x21), false, ip6C[:], ip6V[:], uint16(3), uint16(4), ip6C[:], ip6V[:], uint16(3), uint16(4), int32(0xffff))
	f.Add([]byte("ping"), uint8(0x42), false, ip6C[:], ip6V[:], uint16(3), uint16(4), ip6V[:], ip6C[:], uint16(7), uint16(8), int32(-1))
	f.Add([]byte("tcp"), uint8(0x60), true, slices.Repeat([]byte{0xff}, 16), slices.Repeat([]byte{0xff}, 16), uint16(0), uint16(0),
		make([]byte, 16), make([]byte, 16), uint16(0), uint16(0), int32(0))
	f.Fuzz(func(t *testing.T, payload []byte, kind uint8, partial bool, osrc, odst []byte, osport, odport uint16,
		nsrc, ndst []byte, nsport, ndport uint16, csum int32) {
		if len(payload) > 9000 {
			payload = payload[:9000]
		}
		a16 := func(b []byte) (a nat.Addr16) { copy(a[:], b); return a }
		s := tuple6Spec{proto: []uint8{nat.ProtoTCP, nat.ProtoUDP, nat.ProtoICMPv6}[kind%3], partial: partial,
			src: a16(osrc), dst: a16(odst), sport: osport, dport: odport, payload: payload,
			noUDPCsum: kind&0x10 != 0 && !partial}
		if kind&0x20 != 0 {
			s.ext = []extHdr{hbh(), destOpts()}
		}
		if kind&0x40 != 0 {
			s.ext = append(s.ext, routing(0), fragment(0, false))
		}
		frame := tuple6Frame(s)
		check := true
		if csum >= 0 && csum <= 0xffff {
			var p nat.Packet
			if err := p.Decode(frame); err != nil {
				t.Fatal(err)
			}
			binary.BigEndian.PutUint16(frame[p.L4+tuple6CsumOff(s.proto):], uint16(csum))
			check = false
		}
		got := setTuple6Both(t, frame, partial, a16(nsrc), nsport, a16(ndst), ndport)
		if check {
			checkTuple6Csums(t, got, partial)
		}
	})
}
