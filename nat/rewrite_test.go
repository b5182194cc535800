package nat_test

import (
	"encoding/binary"
	"math/rand/v2"
	"reflect"
	"slices"
	"testing"

	"tslb/nat"
)

// tupleSpec describes a frame for tupleFrame.
type tupleSpec struct {
	proto        uint8 // nat.ProtoTCP, nat.ProtoUDP or nat.ProtoICMP
	src, dst     nat.Addr4
	sport, dport uint16 // TCP and UDP only
	payload      []byte
	fragment     bool // set MF: Decode leaves L4 = 0
	noUDPCsum    bool // UDP checksum 0 (none, RFC 768)
	partial      bool // L4 checksum holds the folded pseudo-header sum
	pad          int  // Ethernet padding after the datagram (full mode only)
}

// tupleFrame returns an Ethernet/IPv4 frame carrying a TCP segment (20-byte
// header), a UDP datagram or an ICMP echo request, with correct checksums.
func tupleFrame(s tupleSpec) []byte {
	var l4 []byte
	csumOff := -1
	switch s.proto {
	case nat.ProtoTCP:
		l4 = make([]byte, 20+len(s.payload))
		binary.BigEndian.PutUint32(l4[4:], 0x01020304)
		binary.BigEndian.PutUint32(l4[8:], 0x05060708)
		l4[12] = 5 << 4
		l4[13] = nat.TCPFlagACK
		binary.BigEndian.PutUint16(l4[14:], 501)
		copy(l4[20:], s.payload)
		csumOff = 16
	case nat.ProtoUDP:
		l4 = make([]byte, 8+len(s.payload))
		binary.BigEndian.PutUint16(l4[4:], uint16(len(l4)))
		copy(l4[8:], s.payload)
		csumOff = 6
	case nat.ProtoICMP:
		l4 = make([]byte, 8+len(s.payload))
		l4[0] = 8 // echo request
		binary.BigEndian.PutUint32(l4[4:], 0x00010002)
		copy(l4[8:], s.payload)
		binary.BigEndian.PutUint16(l4[2:], ^nat.Fold(nat.Checksum(l4, 0)))
	}
	if csumOff >= 0 {
		binary.BigEndian.PutUint16(l4[0:], s.sport)
		binary.BigEndian.PutUint16(l4[2:], s.dport)
		ph := nat.PseudoHeaderSum(s.src, s.dst, s.proto, uint16(len(l4)))
		var c uint16
		switch {
		case s.proto == nat.ProtoUDP && s.noUDPCsum:
		case s.partial:
			c = nat.Fold(ph)
		default:
			if c = ^nat.Fold(nat.Checksum(l4, ph)); c == 0 && s.proto == nat.ProtoUDP {
				c = 0xffff
			}
		}
		binary.BigEndian.PutUint16(l4[csumOff:], c)
	}
	f := make([]byte, 14+20+len(l4)+s.pad)
	copy(f[0:6], macB[:])
	copy(f[6:12], macA[:])
	binary.BigEndian.PutUint16(f[12:], nat.EtherTypeIPv4)
	ip := f[14:34]
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], uint16(20+len(l4)))
	binary.BigEndian.PutUint16(ip[4:], 0x4321)
	if s.fragment {
		binary.BigEndian.PutUint16(ip[6:], 0x2000) // MF
	}
	ip[8] = 64
	ip[9] = s.proto
	copy(ip[12:16], s.src[:])
	copy(ip[16:20], s.dst[:])
	nat.IPv4(ip).SetChecksum(nat.IPv4(ip).ComputeChecksum())
	copy(f[34:], l4)
	return f
}

// tupleCsumOff returns the offset of the L4 checksum within the L4 header,
// or -1 for a protocol whose checksum has no pseudo header.
func tupleCsumOff(proto uint8) int {
	switch proto {
	case nat.ProtoTCP:
		return 16
	case nat.ProtoUDP:
		return 6
	}
	return -1
}

// checkTupleCsums fails t unless frame's IPv4 checksum and L4 checksum are
// right by full recompute. In partial mode the L4 field must be exactly
// the folded pseudo-header sum and CompletePartial must then give the full
// checksum. frame must have decoded without a fragment error.
func checkTupleCsums(t *testing.T, frame []byte, partial bool) {
	t.Helper()
	p := nat.Packet{PartialCsum: partial}
	if err := p.Decode(frame); err != nil {
		t.Fatalf("Decode: %v", err)
	}
	ip := nat.IPv4(frame[14:])
	if got, want := ip.Checksum(), ip.ComputeChecksum(); got != want {
		t.Fatalf("IPv4 checksum %#04x, want %#04x", got, want)
	}
	l4 := frame[p.L4 : p.L4+p.L4Len]
	off := tupleCsumOff(p.Proto)
	if off < 0 {
		if got := nat.Fold(nat.Checksum(l4, 0)); got != 0xffff {
			t.Fatalf("ICMP checksum does not verify: sum %#04x", got)
		}
		return
	}
	got := binary.BigEndian.Uint16(l4[off:])
	if p.Proto == nat.ProtoUDP && got == 0 && !partial {
		return // no checksum; the caller checks it stayed 0
	}
	ph := nat.PseudoHeaderSum(p.Src, p.Dst, p.Proto, uint16(len(l4)))
	full := ^nat.Fold(nat.Checksum(l4[off+2:], nat.Checksum(l4[:off], ph)))
	if full == 0 && p.Proto == nat.ProtoUDP {
		full = 0xffff
	}
	if partial {
		if want := nat.Fold(ph); got != want {
			t.Fatalf("partial L4 field %#04x, want pseudo-header sum %#04x", got, want)
		}
		done := slices.Clone(frame)
		nat.CompletePartial(done, p.L4, off)
		got = binary.BigEndian.Uint16(done[p.L4+off:])
		if got == 0 && p.Proto == nat.ProtoUDP {
			got = 0xffff
		}
	}
	if got != full {
		t.Fatalf("L4 checksum %#04x, want %#04x (partial=%v)", got, full, partial)
	}
}

// setTupleBoth decodes two copies of frame, rewrites one with the four
// setters (in the datapath's order) and the other with SetTuple, and fails
// t unless the frames and the decoded Packets are identical. It returns
// the SetTuple frame.
func setTupleBoth(t *testing.T, frame []byte, partial bool, src nat.Addr4, sport uint16, dst nat.Addr4, dport uint16) []byte {
	t.Helper()
	a, b := slices.Clone(frame), slices.Clone(frame)
	pa, pb := nat.Packet{PartialCsum: partial}, nat.Packet{PartialCsum: partial}
	errA, errB := pa.Decode(a), pb.Decode(b)
	if errA != errB {
		t.Fatalf("Decode: %v vs %v", errA, errB)
	}
	pa.SetSrc(src)
	pa.SetSrcPort(sport)
	pa.SetDst(dst)
	pa.SetDstPort(dport)
	pb.SetTuple(src, sport, dst, dport)
	if !slices.Equal(a, b) {
		t.Fatalf("frames differ\nsetters  % x\nSetTuple % x\norig     % x", a, b, frame)
	}
	pa.Frame, pb.Frame = nil, nil
	if !reflect.DeepEqual(pa, pb) {
		t.Fatalf("Packet fields differ\nsetters  %+v\nSetTuple %+v", pa, pb)
	}
	return b
}

// randTupleAddr returns a random address, the old one, or an extreme,
// so that unchanged words and all-ones/all-zero words are exercised.
func randTupleAddr(r *rand.Rand, old nat.Addr4) nat.Addr4 {
	switch r.IntN(8) {
	case 0:
		return old
	case 1:
		return nat.Addr4{}
	case 2:
		return nat.Addr4{0xff, 0xff, 0xff, 0xff}
	}
	var a nat.Addr4
	binary.BigEndian.PutUint32(a[:], r.Uint32())
	return a
}

// randTuplePort is randTupleAddr for a port.
func randTuplePort(r *rand.Rand, old uint16) uint16 {
	switch r.IntN(8) {
	case 0:
		return old
	case 1:
		return 0
	case 2:
		return 0xffff
	}
	return uint16(r.Uint32())
}

func TestSetTupleMatchesSetters(t *testing.T) {
	r := rand.New(rand.NewPCG(11, 12))
	var odd, counts = 0, map[uint8]int{}
	for i := range 2000 {
		var s tupleSpec
		s.proto = []uint8{nat.ProtoTCP, nat.ProtoUDP}[i%2]
		s.partial = i%4 >= 2
		binary.BigEndian.PutUint32(s.src[:], r.Uint32())
		binary.BigEndian.PutUint32(s.dst[:], r.Uint32())
		s.sport, s.dport = uint16(r.Uint32()), uint16(r.Uint32())
		s.payload = make([]byte, r.IntN(1500))
		for j := range s.payload {
			s.payload[j] = byte(r.Uint32())
		}
		if len(s.payload)%2 == 1 {
			odd++
		}
		if !s.partial && r.IntN(8) == 0 {
			s.pad = 1 + r.IntN(20)
		}
		s.noUDPCsum = s.proto == nat.ProtoUDP && !s.partial && r.IntN(8) == 0
		frame := tupleFrame(s)
		checkTupleCsums(t, frame, s.partial) // the builder is right

		src, dst := randTupleAddr(r, s.src), randTupleAddr(r, s.dst)
		sport, dport := randTuplePort(r, s.sport), randTuplePort(r, s.dport)
		got := setTupleBoth(t, frame, s.partial, src, sport, dst, dport)
		checkTupleCsums(t, got, s.partial)

		var p nat.Packet
		if err := p.Decode(got); err != nil {
			t.Fatal(err)
		}
		if p.Src != src || p.Dst != dst {
			t.Fatalf("packet %d: addresses %v %v, want %v %v", i, p.Src, p.Dst, src, dst)
		}
		u := got[p.L4:]
		wantSport, wantDport := sport, dport
		if s.proto == nat.ProtoUDP { // the setters leave UDP ports alone
			wantSport, wantDport = s.sport, s.dport
		}
		if gs, gd := binary.BigEndian.Uint16(u[0:]), binary.BigEndian.Uint16(u[2:]); gs != wantSport || gd != wantDport {
			t.Fatalf("packet %d: ports %d %d, want %d %d", i, gs, gd, wantSport, wantDport)
		}
		if s.noUDPCsum && (u[6] != 0 || u[7] != 0) {
			t.Fatalf("packet %d: zero UDP checksum changed to % x", i, u[6:8])
		}
		counts[s.proto]++
	}
	if odd < 500 || counts[nat.ProtoTCP] != 1000 || counts[nat.ProtoUDP] != 1000 {
		t.Fatalf("coverage: %d odd payloads, %v per protocol", odd, counts)
	}
}

func TestSetTupleEdges(t *testing.T) {
	ones := nat.Addr4{0xff, 0xff, 0xff, 0xff}
	tests := []struct {
		name    string
		spec    tupleSpec
		csum    int // if >= 0, overwrite the L4 checksum field (no validity check)
		src     nat.Addr4
		dst     nat.Addr4
		sp, dp  uint16
		checkOK bool
	}{
		{name: "tcp_unchanged", spec: tupleSpec{proto: nat.ProtoTCP, src: ipC, dst: ipV, sport: 1, dport: 2}, csum: -1,
			src: ipC, dst: ipV, sp: 1, dp: 2, checkOK: true},
		{name: "tcp_zero_to_ones", spec: tupleSpec{proto: nat.ProtoTCP, sport: 0, dport: 0}, csum: -1,
			src: ones, dst: ones, sp: 0xffff, dp: 0xffff, checkOK: true},
		{name: "tcp_ones_to_zero", spec: tupleSpec{proto: nat.ProtoTCP, src: ones, dst: ones, sport: 0xffff, dport: 0xffff}, csum: -1,
			checkOK: true},
		{name: "tcp_field_ffff_unchanged", spec: tupleSpec{proto: nat.ProtoTCP, src: ipC, dst: ipV, sport: 1, dport: 2}, csum: 0xffff,
			src: ipC, dst: ipV, sp: 1, dp: 2},
		{name: "tcp_field_0000_unchanged", spec: tupleSpec{proto: nat.ProtoTCP, src: ipC, dst: ipV, sport: 1, dport: 2}, csum: 0,
			src: ipC, dst: ipV, sp: 1, dp: 2},
		{name: "tcp_partial_field_0000_ones_to_zero", spec: tupleSpec{proto: nat.ProtoTCP, src: ones, dst: ones, partial: true}, csum: 0},
		{name: "tcp_partial_odd", spec: tupleSpec{proto: nat.ProtoTCP, src: ipC, dst: ipV, sport: 1, dport: 2, partial: true, payload: []byte("odd")},
			csum: -1, src: nat.Addr4{198, 18, 0, 1}, dst: nat.Addr4{198, 18, 1, 2}, sp: 40000, dp: 8080, checkOK: true},
		{name: "udp_csum_becomes_ffff", spec: tupleSpec{proto: nat.ProtoUDP, src: ipC, dst: ipV, sport: 53, dport: 53}, csum: 0xffff,
			src: ipV, dst: ipC, sp: 1, dp: 1},
		{name: "udp_no_csum", spec: tupleSpec{proto: nat.ProtoUDP, src: ipC, dst: ipV, sport: 53, dport: 53, noUDPCsum: true, payload: []byte("x")},
			csum: -1, src: ipV, dst: ipC, sp: 1, dp: 1, checkOK: true},
		{name: "udp_partial", spec: tupleSpec{proto: nat.ProtoUDP, src: ipC, dst: ipV, sport: 53, dport: 53, partial: true, payload: []byte("hello")},
			csum: -1, src: ipV, dst: ones, sp: 1, dp: 1, checkOK: true},
		{name: "icmp_addresses_only", spec: tupleSpec{proto: nat.ProtoICMP, src: ipC, dst: ipV, payload: []byte("hi!")},
			csum: -1, src: nat.Addr4{198, 18, 0, 1}, dst: nat.Addr4{198, 18, 0, 2}, sp: 7, dp: 9, checkOK: true},
		{name: "icmp_partial", spec: tupleSpec{proto: nat.ProtoICMP, src: ipC, dst: ipV, partial: true},
			csum: -1, src: nat.Addr4{198, 18, 0, 1}, dst: nat.Addr4{198, 18, 0, 2}, checkOK: true},
		{name: "tcp_fragment", spec: tupleSpec{proto: nat.ProtoTCP, src: ipC, dst: ipV, sport: 1, dport: 2, fragment: true, payload: []byte("frag")},
			csum: -1, src: nat.Addr4{198, 18, 0, 1}, dst: nat.Addr4{198, 18, 0, 2}, sp: 7, dp: 9},
		{name: "tcp_padded", spec: tupleSpec{proto: nat.ProtoTCP, src: ipC, dst: ipV, sport: 1, dport: 2, pad: 6},
			csum: -1, src: nat.Addr4{198, 18, 0, 1}, dst: nat.Addr4{198, 18, 0, 2}, sp: 7, dp: 9, checkOK: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			frame := tupleFrame(tt.spec)
			if tt.csum >= 0 {
				binary.BigEndian.PutUint16(frame[34+tupleCsumOff(tt.spec.proto):], uint16(tt.csum))
			}
			got := setTupleBoth(t, frame, tt.spec.partial, tt.src, tt.sp, tt.dst, tt.dp)
			if tt.checkOK {
				checkTupleCsums(t, got, tt.spec.partial)
			}
			if tt.spec.proto == nat.ProtoICMP && !slices.Equal(got[34:], frame[34:]) {
				t.Errorf("ICMP message changed:\n% x\n% x", got[34:], frame[34:])
			}
			if tt.spec.fragment {
				if !slices.Equal(got[34:], frame[34:]) {
					t.Errorf("fragment payload changed")
				}
				if ip := nat.IPv4(got[14:]); ip.Checksum() != ip.ComputeChecksum() || ip.Src() != tt.src || ip.Dst() != tt.dst {
					t.Errorf("fragment IPv4 header wrong: % x", got[14:34])
				}
			}
		})
	}
}

func TestSetTupleNotIPv4(t *testing.T) {
	arp := make([]byte, 14+28)
	binary.BigEndian.PutUint16(arp[12:], nat.EtherTypeARP)
	for name, frame := range map[string][]byte{
		"arp":   arp,
		"short": make([]byte, 10),
		"ipv6":  edit(tupleFrame(tupleSpec{proto: nat.ProtoTCP}), func(b []byte) { b[12], b[13] = 0x86, 0xdd }),
	} {
		orig := slices.Clone(frame)
		var p nat.Packet
		_ = p.Decode(frame)
		before := p
		p.SetTuple(ipV, 1, ipC, 2)
		if !slices.Equal(frame, orig) {
			t.Errorf("%s: frame changed", name)
		}
		before.Frame, p.Frame = nil, nil
		if !reflect.DeepEqual(p, before) {
			t.Errorf("%s: Packet changed to %+v", name, p)
		}
	}
	var zero nat.Packet
	zero.SetTuple(ipV, 1, ipC, 2) // must not panic
}

func TestSetTupleNoAllocs(t *testing.T) {
	for _, proto := range []uint8{nat.ProtoTCP, nat.ProtoUDP, nat.ProtoICMP} {
		for _, partial := range []bool{false, true} {
			frame := tupleFrame(tupleSpec{proto: proto, src: ipC, dst: ipV, sport: 1, dport: 2, partial: partial, payload: make([]byte, 100)})
			p := nat.Packet{PartialCsum: partial}
			if err := p.Decode(frame); err != nil {
				t.Fatal(err)
			}
			var i uint16
			n := testing.AllocsPerRun(1000, func() {
				i++
				p.SetTuple(ipV, i, ipC, ^i)
			})
			if n != 0 {
				t.Errorf("proto %d partial=%v: SetTuple allocs = %v, want 0", proto, partial, n)
			}
		}
	}
}

// FuzzSetTuple builds a TCP, UDP or ICMP frame from the inputs, optionally
// overwrites its L4 checksum field with an arbitrary value, and requires
// SetTuple to produce exactly the frame and Packet the four setters do;
// with an untouched checksum the result must also verify by recompute.
func FuzzSetTuple(f *testing.F) {
	f.Add([]byte("odd"), uint8(0), false, uint32(0xc000020a), uint32(0xc6336401), uint16(40000), uint16(443),
		uint32(0xc6120001), uint32(0xc6120102), uint16(33333), uint16(8443), int32(-1))
	f.Add([]byte{}, uint8(1), true, uint32(0), uint32(0xffffffff), uint16(0), uint16(0xffff),
		uint32(0xffffffff), uint32(0), uint16(0xffff), uint16(0), int32(-1))
	f.Add([]byte("x"), uint8(1), false, uint32(1), uint32(2), uint16(3), uint16(4),
		uint32(1), uint32(2), uint16(3), uint16(4), int32(0xffff))
	f.Add([]byte("ping"), uint8(2), false, uint32(1), uint32(2), uint16(3), uint16(4),
		uint32(5), uint32(6), uint16(7), uint16(8), int32(-1))
	f.Add([]byte("tcp"), uint8(0), true, uint32(0xffffffff), uint32(0xffffffff), uint16(0), uint16(0),
		uint32(0), uint32(0), uint16(0), uint16(0), int32(0))
	f.Fuzz(func(t *testing.T, payload []byte, kind uint8, partial bool, osrc, odst uint32, osport, odport uint16,
		nsrc, ndst uint32, nsport, ndport uint16, csum int32) {
		if len(payload) > 9000 {
			payload = payload[:9000]
		}
		s := tupleSpec{proto: []uint8{nat.ProtoTCP, nat.ProtoUDP, nat.ProtoICMP}[kind%3], partial: partial,
			sport: osport, dport: odport, payload: payload, noUDPCsum: kind&0x10 != 0 && !partial}
		binary.BigEndian.PutUint32(s.src[:], osrc)
		binary.BigEndian.PutUint32(s.dst[:], odst)
		frame := tupleFrame(s)
		check := true
		if csum >= 0 && csum <= 0xffff && s.proto != nat.ProtoICMP {
			binary.BigEndian.PutUint16(frame[34+tupleCsumOff(s.proto):], uint16(csum))
			check = false
		}
		var src, dst nat.Addr4
		binary.BigEndian.PutUint32(src[:], nsrc)
		binary.BigEndian.PutUint32(dst[:], ndst)
		got := setTupleBoth(t, frame, partial, src, nsport, dst, ndport)
		if check {
			checkTupleCsums(t, got, partial)
		}
	})
}
