package nat_test

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
	"reflect"
	"slices"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"tslb/nat"
)

// map6 maps an IPv4 address into 2001:db8:4::/96 for the IPv6 twin of an
// IPv4 test frame.
func map6(a nat.Addr4) nat.Addr16 {
	b := addr16("2001:db8:4::")
	copy(b[12:], a[:])
	return b
}

// to6 returns the IPv6 twin of the IPv4 TCP frame f4: same MACs, mapped
// addresses, hop limit = TTL, the extension headers ext, the same TCP
// segment (checksum redone for IPv6, as a full checksum or, if partial, as
// the folded pseudo-header sum), the same Ethernet padding and the same
// spare capacity.
func to6(f4 []byte, ext []extHdr, partial bool) []byte {
	ip := nat.IPv4(f4[14:])
	tl := int(ip.TotalLen())
	seg := slices.Clone(f4[14+ip.HeaderLen() : 14+tl])
	pad := len(f4) - 14 - tl
	src, dst := map6(ip.Src()), map6(ip.Dst())
	f := buildIP6(ip6Spec{srcMAC: nat.Ethernet(f4).Src(), dstMAC: nat.Ethernet(f4).Dst(), src: src, dst: dst,
		hopLimit: ip.TTL(), ext: ext, proto: nat.ProtoTCP, l4: seg, pad: pad})
	setL4Csum6(f[len(f)-pad-len(seg):len(f)-pad], src, dst, nat.ProtoTCP, 16, partial)
	return withSpare(f, cap(f4)-len(f4))
}

// trCheck6 is trCheck for IPv6: gopacket decodes the frame, the payload
// length covers exactly the extension headers and the segment (and no
// more than the frame), the TCP checksum verifies by the slow reference
// (complete a partial one first with finish6), and the options are
// collected.
func trCheck6(t testing.TB, frame []byte) trDecoded {
	t.Helper()
	pkt := gopacket.NewPacket(frame, layers.LayerTypeEthernet, gopacket.Default)
	if el := pkt.ErrorLayer(); el != nil {
		t.Fatalf("gopacket: %v", el.Error())
	}
	ip, _ := pkt.Layer(layers.LayerTypeIPv6).(*layers.IPv6)
	tcp, _ := pkt.Layer(layers.LayerTypeTCP).(*layers.TCP)
	if ip == nil || tcp == nil {
		t.Fatalf("gopacket found no IPv6/TCP")
	}
	if int(ip.Length) > len(frame)-54 {
		t.Fatalf("payload length %d, frame carries %d", ip.Length, len(frame)-54)
	}
	var p nat.Packet
	if err := p.Decode(frame); err != nil {
		t.Fatalf("Decode: %v", err)
	}
	if seg := len(tcp.Contents) + len(tcp.Payload); seg != p.L4Len || p.L4+p.L4Len != 54+int(ip.Length) {
		t.Fatalf("payload length %d: gopacket's segment %d bytes, ours %d at %d", ip.Length, seg, p.L4Len, p.L4)
	}
	checkFull6(t, frame)
	return trOptions(t, tcp)
}

// finish6 completes a partial checksum of an IPv6 frame on a copy.
func finish6(t testing.TB, frame []byte, partial bool) []byte {
	t.Helper()
	out := slices.Clone(frame)
	if partial {
		var p nat.Packet
		if err := p.Decode(out); err != nil {
			t.Fatalf("Decode: %v", err)
		}
		out = out[:p.L4+p.L4Len]
		nat.CompletePartial(out, p.L4, 16)
	}
	return out
}

// trOptionLayouts are raw option lists (multiples of 4) for the
// translation differential tests: Linux layouts, odd alignments, SACK
// lists too long for an inserted TS, unknown and malformed options.
func trOptionLayouts(r *rand.Rand) [][]byte {
	ts := func() []byte { return tsOpts(r.Uint32(), r.Uint32()) }
	be := func(v ...uint32) []byte {
		var b []byte
		for _, x := range v {
			b = binary.BigEndian.AppendUint32(b, x)
		}
		return b
	}
	return [][]byte{
		nil,
		ts(),
		slices.Concat([]byte{2, 4, 5, 0xb4, 4, 2}, ts()[2:], []byte{1, 3, 3, 7}), // SYN: MSS, SACK-perm+TS, NOP WS
		{2, 4, 5, 0xa0, 1, 1, 4, 2, 1, 3, 3, 7},                                  // SYN without TS
		{2, 4, 5, 0xa0},
		slices.Concat(ts(), []byte{1, 1, 5, 18}, be(r.Uint32(), r.Uint32(), r.Uint32(), r.Uint32())),
		slices.Concat([]byte{1, 1, 5, 34}, be(r.Uint32(), r.Uint32(), r.Uint32(), r.Uint32(), r.Uint32(), r.Uint32(), r.Uint32(), r.Uint32())),
		slices.Concat([]byte{1, 8, 10}, be(r.Uint32(), r.Uint32()), []byte{1, 1, 1, 5, 10}, be(r.Uint32(), r.Uint32()), []byte{1, 1}),
		{30, 4, 0, 0, 1, 1, 1, 1},
		{8, 3, 0, 0}, // malformed TS length
		slices.Concat([]byte{2, 4, 5, 0xb4}, ts(), ts()), // two TS options: refused
	}
}

// TestTranslate6MatchesIPv4 runs random translations (SetupSYN,
// ClientToBackend, BackendToClient, every TS mode, both checksum modes,
// random state, GSO-sized payloads, random extension headers) on an IPv4
// segment and on its IPv6 twin, and requires the same result: the same
// growth and error, the same Translation afterwards, the same TCP bytes
// apart from the checksum, the same decoded fields; and the IPv6 frame
// must be valid on its own terms (payload length, checksum in its mode).
// The IPv4 side is tested against gopacket elsewhere; this proves the
// IPv6 side does the same TCP work and gets its IP header right.
func TestTranslate6MatchesIPv4(t *testing.T) {
	r := rand.New(rand.NewPCG(73, 74))
	ops := map[string]int{}
	grew := 0
	for i := range 4000 {
		op := r.IntN(3)
		var flags uint8
		switch op {
		case 0:
			flags = nat.TCPFlagSYN
		case 1:
			flags = []uint8{nat.TCPFlagACK, nat.TCPFlagACK | nat.TCPFlagPSH, nat.TCPFlagACK | nat.TCPFlagFIN, nat.TCPFlagRST, nat.TCPFlagSYN}[r.IntN(5)]
		case 2:
			flags = []uint8{nat.TCPFlagACK, nat.TCPFlagSYN | nat.TCPFlagACK, nat.TCPFlagRST | nat.TCPFlagACK}[r.IntN(3)]
		}
		layouts := trOptionLayouts(r)
		opts := layouts[r.IntN(len(layouts))]
		payload := make([]byte, []int{0, 1, 100, 1460, 4000}[r.IntN(5)])
		for j := range payload {
			payload[j] = byte(r.Uint32())
		}
		partial := r.IntN(2) == 0
		spare := []int{0, 4, 12, 40}[r.IntN(4)]
		f4 := trRaw(trSeg{src: trSNAT, dst: trBackend, sport: uint16(r.Uint32()), dport: 80, seq: r.Uint32(), ack: r.Uint32(),
			flags: flags, payload: payload}, opts, spare)
		if partial {
			trPartial(f4)
		}
		f6 := to6(f4, randExt(r), partial)

		var p4, p6 nat.Packet
		trDecode(t, &p4, f4, partial)
		trDecode(t, &p6, f6, partial)
		x := nat.Translation{SeqDelta: r.Uint32(), TS: nat.TSAction(r.IntN(5)), TSOff: r.Uint32(), TSBase: r.Uint32(),
			Fallback: r.IntN(4) == 0, BackendTS: r.Uint32(), HaveBackendTS: r.IntN(2) == 0,
			LastTS: r.Uint32(), SentTS: r.IntN(2) == 0, NextSeq: r.Uint32(), HaveSeq: r.IntN(2) == 0}
		x4, x6 := x, x
		mode, isn, tsval, now := testModes[r.IntN(5)], r.Uint32(), r.Uint32(), r.Uint32()
		var g4, g6 int
		var e4, e6 error
		switch op {
		case 0:
			g4, e4 = x4.SetupSYN(&p4, mode, isn, tsval)
			g6, e6 = x6.SetupSYN(&p6, mode, isn, tsval)
		case 1:
			g4, e4 = x4.ClientToBackend(&p4, now)
			g6, e6 = x6.ClientToBackend(&p6, now)
		case 2:
			e4 = x4.BackendToClient(&p4)
			e6 = x6.BackendToClient(&p6)
		}
		ops[[]string{"syn", "c2b", "b2c"}[op]+"/"+map[bool]string{true: "ok", false: "err"}[e4 == nil]]++
		if g4 != g6 || e4 != e6 {
			t.Fatalf("case %d op %d: IPv4 %d %v, IPv6 %d %v", i, op, g4, e4, g6, e6)
		}
		if !reflect.DeepEqual(x4, x6) {
			t.Fatalf("case %d op %d: translations differ\nIPv4 %+v\nIPv6 %+v", i, op, x4, x6)
		}
		seg4 := slices.Clone(p4.Frame[p4.L4 : p4.L4+p4.L4Len])
		seg6 := slices.Clone(p6.Frame[p6.L4 : p6.L4+p6.L4Len])
		seg4[16], seg4[17], seg6[16], seg6[17] = 0, 0, 0, 0
		if !bytes.Equal(seg4, seg6) {
			t.Fatalf("case %d op %d: TCP bytes differ\nIPv4 % x\nIPv6 % x", i, op, seg4, seg6)
		}
		if p4.L4Len != p6.L4Len || p4.TCPHdrLen != p6.TCPHdrLen || p4.Seq != p6.Seq || p4.Ack != p6.Ack || p4.Payload != p6.Payload ||
			len(p4.Frame)-p4.L4 != len(p6.Frame)-p6.L4 {
			t.Fatalf("case %d op %d: decoded fields differ\nIPv4 %+v\nIPv6 %+v", i, op, p4, p6)
		}
		var q nat.Packet
		if err := q.Decode(p6.Frame); err != nil {
			t.Fatalf("case %d: translated IPv6 frame does not decode: %v", i, err)
		}
		if q.L4 != p6.L4 || q.L4Len != p6.L4Len || q.TCPHdrLen != p6.TCPHdrLen || q.Seq != p6.Seq || q.Ack != p6.Ack {
			t.Fatalf("case %d: Packet out of date: %+v vs %+v", i, p6, q)
		}
		if partial {
			checkPartial6(t, p6.Frame)
		} else {
			checkFull6(t, p6.Frame)
		}
		if g6 > 0 {
			grew++
		}
	}
	if grew < 80 || len(ops) != 6 { // only TSRewrite (1 mode in 5) grows
		t.Errorf("coverage: %d grown, ops %v", grew, ops)
	}
}

// TestTranslate6TSSynth runs a TSSynth flow on IPv6 with extension headers
// and checks with gopacket: the SYN and a data segment grow by 12 bytes
// (payload length, not an IPv4 total length), the backend's TSval is
// recorded and NOPed, the SYN-ACK's MSS clamped by 12.
func TestTranslate6TSSynth(t *testing.T) {
	csumModes(t, func(t *testing.T, partial bool) {
		ext := []extHdr{hbh(), destOpts()}
		mk := func(s trSeg, opts []byte, spare int) []byte {
			f4 := trRaw(s, opts, spare)
			return to6(f4, ext, partial)
		}
		syn := mk(trSeg{src: trSNAT, dst: trBackend, sport: 1, dport: 2, seq: 1000, flags: nat.TCPFlagSYN},
			[]byte{2, 4, 5, 0xa0, 1, 1, 4, 2, 1, 3, 3, 7}, 64)
		var p nat.Packet
		trDecode(t, &p, syn, partial)
		plen := nat.IPv6(p.Frame[14:]).PayloadLength()
		var x nat.Translation
		grow, err := x.SetupSYN(&p, nat.TSRewrite, 0xffff_fff0, 777)
		if err != nil || grow != 12 || x.TS != nat.TSActSynth {
			t.Fatalf("SetupSYN = %d, %v, %v", grow, err, x.TS)
		}
		if got := nat.IPv6(p.Frame[14:]).PayloadLength(); got != plen+12 {
			t.Fatalf("payload length %d, want %d", got, plen+12)
		}
		d := trCheck6(t, finish6(t, p.Frame, partial))
		if !d.hasTS || d.tsval != 777 || d.tsecr != 0 || d.mss != 1440 || !d.sackPerm || !d.hasW || d.tcp.Seq != 0xffff_fff0 {
			t.Fatalf("SYN toward backend: %+v", d)
		}

		synack := mk(trSeg{src: trBackend, dst: trSNAT, sport: 2, dport: 1, seq: 5000, ack: 0xffff_fff1, flags: nat.TCPFlagSYN | nat.TCPFlagACK},
			slices.Concat([]byte{2, 4, 5, 0xa0, 4, 2}, tsOpts(4242, 777)[2:], []byte{1, 3, 3, 7}), 0)
		trDecode(t, &p, synack, partial)
		if err := x.BackendToClient(&p); err != nil {
			t.Fatal(err)
		}
		d = trCheck6(t, finish6(t, p.Frame, partial))
		if d.hasTS || d.mss != 1428 || d.tcp.Ack != 1001 || !x.HaveBackendTS || x.BackendTS != 4242 {
			t.Fatalf("SYN-ACK toward client: ts %v mss %d ack %d", d.hasTS, d.mss, d.tcp.Ack)
		}

		data := mk(trSeg{src: trSNAT, dst: trBackend, sport: 1, dport: 2, seq: 1001, ack: 5001, flags: nat.TCPFlagACK,
			payload: bytes.Repeat([]byte("y"), 1428)}, nil, 12)
		trDecode(t, &p, data, partial)
		if grow, err := x.ClientToBackend(&p, 800); err != nil || grow != 12 {
			t.Fatalf("ClientToBackend = %d, %v", grow, err)
		}
		d = trCheck6(t, finish6(t, p.Frame, partial))
		if !d.hasTS || d.tsval != 800 || d.tsecr != 4242 || len(d.tcp.Payload) != 1428 || d.tcp.Seq != 0xffff_fff1 {
			t.Fatalf("data toward backend: ts %v %d/%d payload %d seq %#x", d.hasTS, d.tsval, d.tsecr, len(d.tcp.Payload), d.tcp.Seq)
		}
		// 1428 + 32 (TCP with TS) + 16 (extension headers) + 40 = 1516: the
		// extension headers are the sender's business; without them 1500.
		if got := nat.IPv6(p.Frame[14:]).PayloadLength(); got != 16+32+1428 {
			t.Errorf("payload length %d", got)
		}
		// No room: the frame's capacity does not allow the growth.
		tight := mk(trSeg{src: trSNAT, dst: trBackend, seq: 1001, ack: 5001, flags: nat.TCPFlagACK, payload: []byte("z")}, nil, 11)
		trDecode(t, &p, tight, partial)
		before := slices.Clone(tight)
		if _, err := x.ClientToBackend(&p, 900); err != nat.ErrNoRoom || !bytes.Equal(before, tight) {
			t.Errorf("no capacity: err %v, frame changed %v", err, !bytes.Equal(before, tight))
		}
	})
}

// TestTranslate6GSOSuperframe is TestTranslateGSOSuperframe for IPv6.
func TestTranslate6GSOSuperframe(t *testing.T) {
	payload := make([]byte, 3*1428)
	for i := range payload {
		payload[i] = byte(i)
	}
	f := to6(trRaw(trSeg{src: trSNAT, dst: trBackend, seq: 1, ack: 2, flags: nat.TCPFlagACK, payload: payload}, nil, 12), []extHdr{destOpts()}, true)
	var p nat.Packet
	trDecode(t, &p, f, true)
	x := nat.Translation{TS: nat.TSActSynth, SeqDelta: 100, BackendTS: 5, HaveBackendTS: true}
	g, err := x.ClientToBackend(&p, 42)
	if err != nil || g != 12 {
		t.Fatalf("ClientToBackend = %d, %v", g, err)
	}
	checkPartial6(t, p.Frame)
	d := trCheck6(t, finish6(t, p.Frame, true))
	if !bytes.Equal(d.tcp.Payload, payload) || d.tsval != 42 || d.tsecr != 5 || d.tcp.Seq != 101 {
		t.Fatalf("superframe: ts %d/%d seq %d", d.tsval, d.tsecr, d.tcp.Seq)
	}
}

// TestTranslateMTUClamp checks Translation.MTU: MTU − 40 for IPv4, MTU − 60
// for IPv6 (RFC 8200 §8.3), 12 less for TSSynth's SYN-ACK, MinMSS as the
// floor, never raising, and 0 meaning off.
func TestTranslateMTUClamp(t *testing.T) {
	for _, tt := range []struct {
		name     string
		v6       bool
		mtu      uint16
		synAck   bool
		mode     nat.TSAction
		backTS   bool // the SYN-ACK carries TS (TSSynth stays on)
		in, want uint16
	}{
		{"v4_syn_1500", false, 1500, false, nat.TSActOffset, false, 1460, 1460},
		{"v6_syn_1500", true, 1500, false, nat.TSActOffset, false, 1460, 1440},
		{"v4_syn_1400", false, 1400, false, nat.TSActPass, false, 1460, 1360},
		{"v6_syn_1400", true, 1400, false, nat.TSActPass, false, 1460, 1340},
		{"v6_syn_off", true, 0, false, nat.TSActPass, false, 1460, 1460},
		{"v6_syn_not_raised", true, 9000, false, nat.TSActStrip, false, 1220, 1220},
		{"v6_syn_floor", true, 500, false, nat.TSActPass, false, 1440, nat.MinMSS},
		{"v6_syn_below_floor", true, 500, false, nat.TSActPass, false, 400, 400},
		{"v6_synack_offset_1280", true, 1280, true, nat.TSActOffset, true, 1440, 1220},
		{"v4_synack_offset_1280", false, 1280, true, nat.TSActOffset, true, 1460, 1240},
		{"v6_synack_synth_1500", true, 1500, true, nat.TSActSynth, true, 1440, 1428},
		{"v6_synack_synth_1400", true, 1400, true, nat.TSActSynth, true, 1440, 1328},
		{"v4_synack_synth_1400", false, 1400, true, nat.TSActSynth, true, 1460, 1348},
		{"v6_synack_synth_1280", true, 1280, true, nat.TSActSynth, true, 1440, 1208},
		{"v6_synack_synth_off", true, 0, true, nat.TSActSynth, true, 1440, 1428},
		{"v6_synack_fallback_1400", true, 1400, true, nat.TSActSynth, false, 1440, 1340},
		{"v6_synack_pass_1400", true, 1400, true, nat.TSActPass, false, 1440, 1340},
	} {
		t.Run(tt.name, func(t *testing.T) {
			opts := binary.BigEndian.AppendUint16([]byte{2, 4}, tt.in)
			if tt.backTS || (!tt.synAck && tt.mode != nat.TSActSynth) {
				opts = append(opts, tsOpts(1, 2)...)
			} else {
				opts = append(opts, 1, 1, 1, 1)
			}
			s := trSeg{src: trSNAT, dst: trBackend, seq: 1, flags: nat.TCPFlagSYN}
			if tt.synAck {
				s = trSeg{src: trBackend, dst: trSNAT, seq: 1, ack: 2, flags: nat.TCPFlagSYN | nat.TCPFlagACK}
			}
			f := trRaw(s, opts, 12)
			if tt.v6 {
				f = to6(f, nil, false)
			}
			var p nat.Packet
			trDecode(t, &p, f, false)
			x := nat.Translation{MTU: tt.mtu, TS: tt.mode}
			var err error
			if tt.synAck {
				err = x.BackendToClient(&p)
			} else {
				_, err = x.SetupSYN(&p, map[nat.TSAction]nat.TSMode{nat.TSActPass: nat.TSPassthrough, nat.TSActStrip: nat.TSStrip, nat.TSActOffset: nat.TSRewrite, nat.TSActSynth: nat.TSRewrite}[tt.mode], 1, 1)
			}
			if err != nil {
				t.Fatal(err)
			}
			var d trDecoded
			if tt.v6 {
				d = trCheck6(t, p.Frame)
			} else {
				d = trCheck(t, p.Frame)
			}
			if d.mss != tt.want {
				t.Errorf("MSS %d -> %d, want %d", tt.in, d.mss, tt.want)
			}
			if x.MTU != tt.mtu {
				t.Errorf("MTU %d not kept (%d)", tt.mtu, x.MTU)
			}
		})
	}
	for _, tt := range []struct {
		mtu  int
		v6   bool
		want int
	}{{1500, false, 1460}, {1500, true, 1440}, {1280, true, 1220}, {576, false, 536}, {60, true, 0}, {30, false, 0}, {0, true, 0}} {
		if got := nat.MaxMSS(tt.mtu, tt.v6); got != tt.want {
			t.Errorf("MaxMSS(%d, %v) = %d, want %d", tt.mtu, tt.v6, got, tt.want)
		}
	}
}

func TestTranslate6NoAllocs(t *testing.T) {
	six := func(f []byte) []byte { return to6(f, []extHdr{hbh()}, false) }
	tsData := six(trGopacket(t, trSeg{src: trSNAT, dst: trBackend, seq: 1, ack: 2, flags: nat.TCPFlagACK,
		opts: []layers.TCPOption{nopOpt, nopOpt, tsOpt(3, 4)}, payload: make([]byte, 1000)}, 0))
	plain := six(trGopacket(t, trSeg{src: trSNAT, dst: trBackend, seq: 1, ack: 2, flags: nat.TCPFlagACK, payload: make([]byte, 1000)}, 12))
	sack := six(trGopacket(t, trSeg{src: trBackend, dst: trSNAT, seq: 1, ack: 2, flags: nat.TCPFlagACK,
		opts: []layers.TCPOption{nopOpt, nopOpt, sackOpt(nat.SACKBlock{Start: 5, End: 9})}}, 0))
	syn := six(trGopacket(t, trSeg{src: trSNAT, dst: trBackend, seq: 1, flags: nat.TCPFlagSYN, opts: []layers.TCPOption{mssOpt(1460), sackPermOpt, nopOpt, wsOpt}}, 12))
	synack := six(trGopacket(t, trSeg{src: trBackend, dst: trSNAT, seq: 1, ack: 2, flags: nat.TCPFlagSYN | nat.TCPFlagACK,
		opts: []layers.TCPOption{mssOpt(1440), nopOpt, nopOpt, tsOpt(3, 4)}}, 0))
	buf := make([]byte, 0, 2000)
	var p nat.Packet
	for _, tt := range []struct {
		name  string
		frame []byte
		f     func(x *nat.Translation) error
	}{
		{"offset fast", tsData, func(x *nat.Translation) error { x.TS = nat.TSActOffset; _, err := x.ClientToBackend(&p, 0); return err }},
		{"offset b2c", tsData, func(x *nat.Translation) error { x.TS = nat.TSActOffset; return x.BackendToClient(&p) }},
		{"strip", tsData, func(x *nat.Translation) error { x.TS = nat.TSActStrip; _, err := x.ClientToBackend(&p, 0); return err }},
		{"synth grow", plain, func(x *nat.Translation) error { x.TS = nat.TSActSynth; _, err := x.ClientToBackend(&p, 0); return err }},
		{"synth b2c", tsData, func(x *nat.Translation) error { x.TS = nat.TSActSynth; return x.BackendToClient(&p) }},
		{"sack b2c", sack, func(x *nat.Translation) error { return x.BackendToClient(&p) }},
		{"setup synth", syn, func(x *nat.Translation) error { _, err := x.SetupSYN(&p, nat.TSRewrite, 9, 9); return err }},
		{"synack mtu clamp", synack, func(x *nat.Translation) error { x.TS, x.MTU = nat.TSActSynth, 1400; return x.BackendToClient(&p) }},
	} {
		x := nat.Translation{SeqDelta: 7, TSOff: 3}
		n := testing.AllocsPerRun(200, func() {
			buf = append(buf[:0], tt.frame...)
			if err := p.Decode(buf); err != nil {
				t.Fatal(err)
			}
			if err := tt.f(&x); err != nil {
				t.Fatal(err)
			}
		})
		if n != 0 {
			t.Errorf("%s: %v allocs", tt.name, n)
		}
	}
}

// FuzzTranslateFamilies is the fuzzing form of TestTranslate6MatchesIPv4:
// any frame that decodes as an IPv4 TCP segment is translated as it is
// and as its IPv6 twin (with or without extension headers), and both must
// give the same growth, error, Translation and TCP bytes, the IPv6 frame
// staying valid in its checksum mode.
func FuzzTranslateFamilies(f *testing.F) {
	f.Add(trRaw(trSeg{src: trSNAT, dst: trBackend, seq: 1, flags: nat.TCPFlagSYN}, []byte{2, 4, 5, 180, 1, 1, 4, 2}, 0), uint8(2), uint32(5), uint32(6), uint64(0))
	f.Add(trRaw(trSeg{src: trSNAT, dst: trBackend, seq: 1, ack: 3, flags: nat.TCPFlagACK, payload: []byte("hi")}, []byte{1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2}, 0), uint8(2), uint32(5), uint32(6), uint64(0x19))
	f.Add(trRaw(trSeg{src: trSNAT, dst: trBackend, seq: 1, ack: 3, flags: nat.TCPFlagACK}, []byte{1, 1, 5, 34, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 4, 0, 0, 0, 5, 0, 0, 0, 6, 0, 0, 0, 7, 0, 0, 0, 8}, 0), uint8(3), uint32(5), uint32(6), uint64(0x112))
	f.Add(trRaw(trSeg{src: trBackend, dst: trSNAT, seq: 1, ack: 3, flags: nat.TCPFlagSYN | nat.TCPFlagACK}, []byte{2, 4, 5, 180, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0}, 0), uint8(3), uint32(5), uint32(6), uint64(0x323))
	f.Fuzz(func(t *testing.T, frame []byte, mode uint8, a, b uint32, sel uint64) {
		var p4 nat.Packet
		if p4.Decode(frame) != nil || p4.EtherType != nat.EtherTypeIPv4 || p4.Proto != nat.ProtoTCP || p4.L4 == 0 {
			return
		}
		partial := sel&0x100 != 0
		spare := int(sel % 20)
		f4 := withSpare(frame[:p4.L4+p4.L4Len], spare) // no padding: partial mode completes to the end
		var ext []extHdr
		if sel&0x400 != 0 {
			ext = []extHdr{hbh(), destOpts()}
		}
		f6 := to6(f4, ext, partial)
		f6b := to6(f4, ext, false) // for the MTU clamp below; f4 changes from here on
		if partial {
			trPartial(f4)
		}
		var q4, q6 nat.Packet
		trDecode(t, &q4, f4, partial)
		trDecode(t, &q6, f6, partial)
		x := nat.Translation{SeqDelta: a, TSOff: b, TS: nat.TSAction(mode % 5), TSBase: a ^ b, Fallback: sel&0x200 != 0,
			MTU: uint16(sel >> 48), BackendTS: b, HaveBackendTS: sel&0x800 != 0}
		x4, x6 := x, x
		x4.MTU, x6.MTU = 0, 0 // the MTU clamp differs by family by design
		var g4, g6 int
		var e4, e6 error
		switch (sel >> 4) % 3 {
		case 0:
			g4, e4 = x4.SetupSYN(&q4, testModes[mode%5], a, b)
			g6, e6 = x6.SetupSYN(&q6, testModes[mode%5], a, b)
		case 1:
			g4, e4 = x4.ClientToBackend(&q4, b)
			g6, e6 = x6.ClientToBackend(&q6, b)
		case 2:
			e4 = x4.BackendToClient(&q4)
			e6 = x6.BackendToClient(&q6)
		}
		if g4 != g6 || e4 != e6 || !reflect.DeepEqual(x4, x6) {
			t.Fatalf("IPv4 %d %v %+v\nIPv6 %d %v %+v", g4, e4, x4, g6, e6, x6)
		}
		seg4 := slices.Clone(q4.Frame[q4.L4 : q4.L4+q4.L4Len])
		seg6 := slices.Clone(q6.Frame[q6.L4 : q6.L4+q6.L4Len])
		seg4[16], seg4[17], seg6[16], seg6[17] = 0, 0, 0, 0
		if !bytes.Equal(seg4, seg6) {
			t.Fatalf("TCP bytes differ\nIPv4 % x\nIPv6 % x", seg4, seg6)
		}
		if partial {
			checkPartial6(t, q6.Frame)
		} else {
			checkFull6(t, q6.Frame)
		}
		// And with the MTU clamp on, the IPv6 frame stays valid.
		y := x
		var r6 nat.Packet
		trDecode(t, &r6, f6b, false)
		if (sel>>4)%3 == 0 {
			_, _ = y.SetupSYN(&r6, testModes[mode%5], a, b)
		} else {
			_ = y.BackendToClient(&r6)
		}
		checkFull6(t, r6.Frame)
	})
}

// testModes are the TSMode values fuzzing and random tests draw from: the
// three modes and two invalid ones (which act as passthrough).
var testModes = [5]nat.TSMode{nat.TSPassthrough, nat.TSStrip, nat.TSRewrite, "", "bogus"}
