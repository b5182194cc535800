package nat_test

import (
	"encoding/binary"
	"slices"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"tslb/nat"
)

var (
	ip6SNAT    = addr16("2001:db8:2::1")
	ip6Backend = addr16("2001:db8:3::2")
)

func TestEchoReply6(t *testing.T) {
	frame := slices.Clone(goldenPing6)
	var p nat.Packet
	if err := p.Decode(frame); err != nil {
		t.Fatal(err)
	}
	if !p.EchoReply6() {
		t.Fatal("EchoReply6 = false")
	}
	if p.EchoReply6() { // a reply is not a request
		t.Fatal("EchoReply6 accepted its own reply")
	}
	want := []byte{
		0x02, 0, 0, 0, 0, 0x0a, 0x02, 0, 0, 0, 0, 0x0b, 0x86, 0xdd, // MACs swapped
		0x60, 0x00, 0x00, 0x00, 0x00, 0x0a,
		0x3a, 0x40, // ICMPv6, hop limit 64
		0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0x00, 0x01, // addresses swapped
		0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x00, 0x10,
		0x81, 0x00, // echo reply, code 0
		0xba, 0xca, // checksum, computed independently (Python)
		0x00, 0x01, 0x00, 0x02, 'h', 'i',
	}
	if !slices.Equal(frame, want) {
		t.Errorf("reply\n% x\nwant\n% x", frame, want)
	}
	if p.Src6 != ip6V || p.Dst6 != ip6C {
		t.Error("Packet addresses not swapped")
	}
	buf := make([]byte, len(goldenPing6))
	n := testing.AllocsPerRun(100, func() {
		copy(buf, goldenPing6)
		if p.Decode(buf) != nil || !p.EchoReply6() {
			t.Fatal("EchoReply6 = false")
		}
	})
	if n != 0 {
		t.Errorf("EchoReply6 allocs = %v", n)
	}
	// With extension headers and another hop limit: kept, hop limit 64.
	req := buildIP6(ip6Spec{srcMAC: macA, dstMAC: macB, src: ip6C, dst: ip6V, hopLimit: 3, ext: []extHdr{hbh(), destOpts()},
		proto: nat.ProtoICMPv6, l4: slices.Clone(goldenPing6[54:])})
	if err := p.Decode(req); err != nil || !p.EchoReply6() {
		t.Fatalf("with extension headers: %v", err)
	}
	checkFull6(t, req)
	if req[21] != 64 || req[54] != 60 || req[62] != nat.ProtoICMPv6 || nat.IPv6(req[14:]).Src() != ip6V {
		t.Errorf("reply with extension headers: % x", req[14:70])
	}
}

func TestEchoReply6Rejects(t *testing.T) {
	mcast := buildIP6(ip6Spec{src: ip6C, dst: addr16("ff02::1"), proto: nat.ProtoICMPv6, l4: slices.Clone(goldenPing6[54:])})
	setL4Csum6(mcast[54:], ip6C, addr16("ff02::1"), nat.ProtoICMPv6, 2, false)
	mcastSrc := buildIP6(ip6Spec{src: addr16("ff02::1"), dst: ip6V, proto: nat.ProtoICMPv6, l4: slices.Clone(goldenPing6[54:])})
	setL4Csum6(mcastSrc[54:], addr16("ff02::1"), ip6V, nat.ProtoICMPv6, 2, false)
	for name, f := range map[string][]byte{
		"bad_checksum":  edit(goldenPing6, func(b []byte) { b[57] ^= 1 }),
		"code_1":        edit(goldenPing6, func(b []byte) { b[55] = 1; b[57] -= 1 }),
		"multicast_dst": mcast,
		"multicast_src": mcastSrc,
		"echo_reply":    edit(goldenPing6, func(b []byte) { b[54] = 129; b[56]-- }),
		"tcp":           goldenSYN6,
		"ipv4_ping":     goldenPing,
		"arp":           goldenARP,
	} {
		var p nat.Packet
		if err := p.Decode(slices.Clone(f)); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		before := slices.Clone(p.Frame)
		if p.EchoReply6() {
			t.Errorf("%s: EchoReply6 = true", name)
		}
		if !slices.Equal(before, p.Frame) {
			t.Errorf("%s: frame changed", name)
		}
	}
	// The IPv4 EchoReply refuses an ICMPv6 echo.
	var p nat.Packet
	if err := p.Decode(slices.Clone(goldenPing6)); err != nil || p.EchoReply() {
		t.Error("EchoReply accepted ICMPv6")
	}
}

// icmp6Inner returns the IPv6 packet (no Ethernet) the errors quote: a
// TCP segment [SNAT]:40000 -> [backend]:80, seq 0x11111111, with the
// extension headers ext; or a UDP datagram if udp is set.
func icmp6Inner(ext []extHdr, udp bool) []byte {
	if udp {
		f := tuple6Frame(tuple6Spec{proto: nat.ProtoUDP, src: ip6SNAT, dst: ip6Backend, sport: 40000, dport: 53, ext: ext, payload: []byte("query")})
		return f[14:]
	}
	return buildTCP6(tcp6Spec{src: ip6SNAT, dst: ip6Backend, sport: 40000, dport: 80, seq: 0x11111111, ack: 0x22222222,
		flags: nat.TCPFlagACK, opts: tsOpts(5, 6), ext: ext, payload: []byte("payload!")})[14:]
}

// icmp6ErrorFrame builds an ICMPv6 error of type/code with the 32-bit
// parameter param from a router to the SNAT address, quoting the first
// quote bytes of inner, with a checksum right by the slow reference (or
// the pseudo-header sum if partial).
func icmp6ErrorFrame(typ, code uint8, param uint32, inner []byte, quote int, partial bool) []byte {
	m := make([]byte, 8+quote)
	m[0], m[1] = typ, code
	binary.BigEndian.PutUint32(m[4:], param)
	copy(m[8:], inner[:quote])
	f := buildIP6(ip6Spec{srcMAC: macB, dstMAC: macA, src: ip6Rtr, dst: ip6SNAT, proto: nat.ProtoICMPv6, l4: m})
	setL4Csum6(f[54:], ip6Rtr, ip6SNAT, nat.ProtoICMPv6, 2, partial)
	return f
}

func TestICMPv6Error(t *testing.T) {
	types := []struct {
		typ, code uint8
		param     uint32
	}{{1, 4, 0}, {2, 0, 1400}, {3, 0, 0}, {4, 0, 40}}
	for _, ext := range [][]extHdr{nil, {hbh(), destOpts()}} {
		inner := icmp6Inner(ext, false)
		e0 := 40 + 8*len(ext) // quoted TCP header offset in the quote
		var fullCsum uint16
		// 8 bytes of TCP (no checksum); up to the checksum; the header; the whole packet
		for qi, quote := range []int{e0 + 8, e0 + 18, e0 + 32, len(inner)} {
			for _, ty := range types {
				frame := icmp6ErrorFrame(ty.typ, ty.code, ty.param, inner, quote, false)
				var p nat.Packet
				if err := p.Decode(frame); err != nil {
					t.Fatal(err)
				}
				var e nat.ICMPv6Error
				if err := p.ParseICMPv6Error(&e); err != nil {
					t.Fatalf("ext %d quote %d type %d: %v", len(ext), quote, ty.typ, err)
				}
				if e.Type != ty.typ || e.Code != ty.code || e.Param != ty.param || e.InnerSrc != ip6SNAT || e.InnerDst != ip6Backend ||
					e.InnerProto != nat.ProtoTCP || e.InnerSrcPort != 40000 || e.InnerDstPort != 80 || e.InnerSeq != 0x11111111 || !e.HasSeq {
					t.Fatalf("quote %d: %+v", quote, e)
				}
				// Back to the client's view: [client]:5555 -> [VIP]:443, seq - 0x1000.
				n := testing.AllocsPerRun(1, func() {
					p.RewriteICMPv6Error(&e, ip6C, 5555, ip6V, 443, 0x11111111-0x1000)
				})
				if n != 0 {
					t.Errorf("RewriteICMPv6Error allocs = %v", n)
				}
				var e2 nat.ICMPv6Error
				if err := p.ParseICMPv6Error(&e2); err != nil {
					t.Fatal(err)
				}
				if e2 != e || e2.InnerSrc != ip6C || e2.InnerDst != ip6V || e2.InnerSrcPort != 5555 || e2.InnerDstPort != 443 || e2.InnerSeq != 0x11110111 {
					t.Errorf("quote %d: after rewrite %+v (e %+v)", quote, e2, e)
				}
				checkFull6(t, frame) // the ICMPv6 checksum, over the outer pseudo header
				in := frame[62:]
				switch qi {
				case 3: // whole packet quoted: its TCP checksum must verify
					seg := in[e0:]
					if s := refL4Sum6(ip6C, ip6V, nat.ProtoTCP, seg); s != 0xffff {
						t.Errorf("quoted TCP checksum wrong (sum %#x)", s)
					}
					fullCsum = nat.TCP(seg).Checksum()
				}
				// The outer addresses: SNAT -> client, router kept as is.
				p.SetTuple6(ip6Rtr, 0, ip6C, 0)
				checkFull6(t, frame)
				if quote >= e0+32 {
					// gopacket decodes the rewritten quote.
					pkt := gopacket.NewPacket(frame, layers.LayerTypeEthernet, gopacket.Default)
					icmp, _ := pkt.Layer(layers.LayerTypeICMPv6).(*layers.ICMPv6)
					if icmp == nil || icmp.TypeCode.Type() != ty.typ {
						t.Fatalf("gopacket: %v", pkt)
					}
					q := gopacket.NewPacket(icmp.Payload[4:], layers.LayerTypeIPv6, gopacket.Default)
					ip, _ := q.Layer(layers.LayerTypeIPv6).(*layers.IPv6)
					tcp, _ := q.Layer(layers.LayerTypeTCP).(*layers.TCP)
					if ip == nil || tcp == nil || nat.Addr16(ip.SrcIP) != ip6C || nat.Addr16(ip.DstIP) != ip6V ||
						tcp.SrcPort != 5555 || tcp.DstPort != 443 || tcp.Seq != 0x11110111 || tcp.Ack != 0x22222222 {
						t.Errorf("quote %d: gopacket sees %v", quote, q)
					}
				}
			}
		}
		// A quote cut after the TCP checksum got the same incremental update.
		frame := icmp6ErrorFrame(1, 4, 0, inner, e0+18, false)
		var p nat.Packet
		var e nat.ICMPv6Error
		if p.Decode(frame) != nil || p.ParseICMPv6Error(&e) != nil {
			t.Fatal("decode")
		}
		p.RewriteICMPv6Error(&e, ip6C, 5555, ip6V, 443, 0x11111111-0x1000)
		if got := nat.TCP(frame[62+e0:]).Checksum(); got != fullCsum {
			t.Errorf("truncated quote: TCP checksum %#x, want %#x", got, fullCsum)
		}
	}
}

// TestICMPv6ErrorUDP rewrites a quoted UDP datagram.
func TestICMPv6ErrorUDP(t *testing.T) {
	inner := icmp6Inner([]extHdr{destOpts()}, true)
	for _, zero := range []bool{false, true} {
		in := slices.Clone(inner)
		if zero {
			in[48+6], in[48+7] = 0, 0
		}
		frame := icmp6ErrorFrame(1, 4, 0, in, len(in), false)
		var p nat.Packet
		var e nat.ICMPv6Error
		if p.Decode(frame) != nil || p.ParseICMPv6Error(&e) != nil {
			t.Fatal("decode")
		}
		if e.InnerProto != nat.ProtoUDP || e.HasSeq || e.InnerDstPort != 53 {
			t.Fatalf("%+v", e)
		}
		p.RewriteICMPv6Error(&e, ip6C, 5555, ip6V, 5353, 99)
		checkFull6(t, frame)
		q := frame[62:]
		if zero {
			if q[48+6] != 0 || q[48+7] != 0 {
				t.Error("zero UDP checksum changed")
			}
		} else if s := refL4Sum6(ip6C, ip6V, nat.ProtoUDP, q[48:]); s != 0xffff {
			t.Errorf("quoted UDP checksum wrong (sum %#x)", s)
		}
	}
}

// TestICMPv6ErrorPartial: in partial mode the quote rewrite leaves the
// ICMPv6 field alone; only the outer addresses move it. A quote of 48
// bytes stops before the quoted TCP checksum, so the rewrite does change
// the message's sum; with the checksum quoted (60) the quoted checksum's
// update cancels the other quoted changes and the sum is the same anyway.
func TestICMPv6ErrorPartial(t *testing.T) {
	for _, quote := range []int{48, 60} {
		for _, partial := range []bool{false, true} {
			frame := icmp6ErrorFrame(2, 0, 1400, icmp6Inner(nil, false), quote, partial)
			p := nat.Packet{PartialCsum: partial}
			var e nat.ICMPv6Error
			if p.Decode(frame) != nil || p.ParseICMPv6Error(&e) != nil {
				t.Fatal("decode")
			}
			before := nat.ICMPv6(frame[54:]).Checksum()
			p.RewriteICMPv6Error(&e, ip6C, 1, ip6V, 2, 3)
			if _, ok := p.LowerPacketTooBigMTU(12); !ok {
				t.Fatal("not a Packet Too Big")
			}
			after := nat.ICMPv6(frame[54:]).Checksum()
			if partial && after != before || !partial && quote == 48 && after == before {
				t.Fatalf("quote %d partial=%v: field %#x -> %#x", quote, partial, before, after)
			}
			p.SetTuple6(ip6Rtr, 0, ip6C, 0)
			if partial {
				if got, want := nat.ICMPv6(frame[54:]).Checksum(), refSum(pseudo6(ip6Rtr, ip6C, len(frame)-54, nat.ProtoICMPv6)); got != want {
					t.Fatalf("partial field %#x, want pseudo-header sum %#x", got, want)
				}
				nat.CompletePartial(frame, 54, 2)
			}
			checkFull6(t, frame)
		}
	}
}

// TestIPv4Proto58 checks that protocol 58 in an IPv4 header is not taken
// for ICMPv6: address rewrites leave its bytes alone (ICMPv4-like, no
// pseudo header), and the ICMPv6 functions refuse it.
func TestIPv4Proto58(t *testing.T) {
	frame := edit(goldenPing, func(b []byte) { b[23] = 58; nat.IPv4(b[14:]).SetChecksum(nat.IPv4(b[14:]).ComputeChecksum()) })
	var p nat.Packet
	if err := p.Decode(frame); err != nil || p.Proto != 58 || p.L4 == 0 {
		t.Fatalf("Decode = %v, %+v", err, p)
	}
	body := slices.Clone(frame[34:])
	p.SetSrc(nat.Addr4{10, 1, 2, 3})
	p.SetTuple(nat.Addr4{10, 9, 9, 9}, 1, nat.Addr4{10, 8, 8, 8}, 2)
	var e nat.ICMPv6Error
	var n nat.NDP
	if !slices.Equal(body, frame[34:]) || p.ICMPv6() != nil || p.EchoReply6() || p.ParseICMPv6Error(&e) == nil || p.ParseNDP(&n) == nil {
		t.Error("IPv4 protocol 58 treated as ICMPv6")
	}
	checkFull(t, frame)
}

func TestICMPv6ErrorRejects(t *testing.T) {
	inner := icmp6Inner(nil, false)
	innerExt := icmp6Inner([]extHdr{hbh(), destOpts()}, false)
	tests := map[string]struct {
		frame []byte
		err   error
	}{
		"echo":                 {goldenPing6, nat.ErrNotICMPError},
		"tcp":                  {goldenSYN6, nat.ErrNotICMPError},
		"ipv4_icmp_error":      {icmpErrorFrame(60), nat.ErrNotICMPError},
		"type_128":             {icmp6ErrorFrame(128, 0, 0, inner, 60, false), nat.ErrNotICMPError},
		"type_5":               {icmp6ErrorFrame(5, 0, 0, inner, 60, false), nat.ErrNotICMPError},
		"no_ip":                {icmp6ErrorFrame(1, 0, 0, inner, 39, false), nat.ErrShortICMP},
		"seven_tcp_bytes":      {icmp6ErrorFrame(1, 0, 0, inner, 47, false), nat.ErrShortICMP},
		"ext_cut":              {icmp6ErrorFrame(3, 0, 0, innerExt, 44, false), nat.ErrShortICMP},
		"ext_tcp_cut":          {icmp6ErrorFrame(3, 0, 0, innerExt, 56+7, false), nat.ErrShortICMP},
		"inner_v4":             {edit(icmp6ErrorFrame(1, 0, 0, inner, 60, false), func(b []byte) { b[62] = 0x45 }), nat.ErrNotICMPError},
		"inner_icmpv6":         {edit(icmp6ErrorFrame(1, 0, 0, inner, 60, false), func(b []byte) { b[62+6] = 58 }), nat.ErrNotICMPError},
		"inner_fragment":       {icmp6ErrorFrame(1, 0, 0, icmp6Inner([]extHdr{fragment(0, true)}, false), 68, false), nat.ErrNotICMPError},
		"inner_routing_left":   {icmp6ErrorFrame(1, 0, 0, icmp6Inner([]extHdr{routing(1)}, false), 68, false), nat.ErrNotICMPError},
		"inner_hbh_misplaced":  {icmp6ErrorFrame(1, 0, 0, icmp6Inner([]extHdr{destOpts(), hbh()}, false), 76, false), nat.ErrNotICMPError},
		"inner_atomic_frag_ok": {icmp6ErrorFrame(1, 0, 0, icmp6Inner([]extHdr{fragment(0, false)}, false), 68, false), nil},
	}
	for name, tt := range tests {
		var p nat.Packet
		frame := slices.Clone(tt.frame)
		if err := p.Decode(frame); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		var e nat.ICMPv6Error
		if err := p.ParseICMPv6Error(&e); err != tt.err {
			t.Errorf("%s: err = %v, want %v", name, err, tt.err)
		}
		var e4 nat.ICMPError
		if err := p.ParseICMPError(&e4); err != nat.ErrNotICMPError && p.IsIPv6() {
			t.Errorf("%s: ParseICMPError on IPv6 = %v", name, err)
		}
		if tt.err == nil {
			continue
		}
		before := slices.Clone(frame)
		p.RewriteICMPv6Error(&e, ip6C, 1, ip6V, 2, 3)
		if !slices.Equal(before, frame) {
			t.Errorf("%s: RewriteICMPv6Error changed a rejected packet", name)
		}
	}
	// An ICMPv6Error from another packet is not applied.
	a := icmp6ErrorFrame(1, 0, 0, inner, 60, false)
	b := icmp6ErrorFrame(1, 0, 0, innerExt, 76, false)
	var pa, pb nat.Packet
	var eb nat.ICMPv6Error
	if pa.Decode(a) != nil || pb.Decode(b) != nil || pb.ParseICMPv6Error(&eb) != nil {
		t.Fatal("decode")
	}
	before := slices.Clone(a)
	pa.RewriteICMPv6Error(&eb, ip6C, 1, ip6V, 2, 3)
	pa.RewriteICMPv6Error(&nat.ICMPv6Error{}, ip6C, 1, ip6V, 2, 3)
	if !slices.Equal(before, a) {
		t.Error("a foreign ICMPv6Error was applied")
	}
}

func TestLowerPacketTooBigMTU(t *testing.T) {
	for _, tt := range []struct{ mtu, by, want uint32 }{
		{1500, 12, 1488}, {1500, 0, 1500}, {1290, 12, 1280}, {1292, 12, 1280}, {1280, 12, 1280}, {1000, 12, 1000},
		{9000, 8000, 1280}, {0xffffffff, 12, 0xfffffff3}, {1500, 0xffffffff, 1280},
	} {
		frame := icmp6ErrorFrame(2, 0, tt.mtu, icmp6Inner(nil, false), 60, false)
		var p nat.Packet
		if err := p.Decode(frame); err != nil {
			t.Fatal(err)
		}
		var got uint32
		var ok bool
		if n := testing.AllocsPerRun(1, func() { got, ok = p.LowerPacketTooBigMTU(0) }); n != 0 {
			t.Errorf("allocs %v", n)
		}
		got, ok = p.LowerPacketTooBigMTU(tt.by)
		if !ok || got != tt.want || nat.ICMPv6(frame[54:]).MTU() != tt.want {
			t.Errorf("MTU %d lowered by %d = %d, %v (field %d), want %d", tt.mtu, tt.by, got, ok, nat.ICMPv6(frame[54:]).MTU(), tt.want)
		}
		checkFull6(t, frame)
	}
	for name, f := range map[string][]byte{
		"dest_unreachable": icmp6ErrorFrame(1, 0, 1500, icmp6Inner(nil, false), 60, false),
		"echo":             goldenPing6,
		"ipv4_frag_needed": icmpErrorFrame(60),
	} {
		frame := slices.Clone(f)
		var p nat.Packet
		if err := p.Decode(frame); err != nil {
			t.Fatal(err)
		}
		if _, ok := p.LowerPacketTooBigMTU(12); ok || !slices.Equal(frame, f) {
			t.Errorf("%s: accepted or changed", name)
		}
	}
}

func TestICMPv6Checksum(t *testing.T) {
	if got := nat.ICMPv6Checksum(ip6C, ip6V, goldenPing6[54:]); got != 0xbbca {
		t.Errorf("ICMPv6Checksum = %#04x, want 0xbbca", got)
	}
	if got := nat.ICMPv6Checksum(ip6C, ip6V, []byte{1, 2, 3}); got != ^refSum(append(pseudo6(ip6C, ip6V, 3, 58), 1, 2, 3)) {
		t.Errorf("short message: %#04x", got)
	}
	m := nat.ICMPv6(goldenPing6[54:])
	if m.Type() != 128 || m.Code() != 0 || m.Checksum() != 0xbbca || m.MTU() != 0x00010002 {
		t.Errorf("ICMPv6 view: %d %d %#x %#x", m.Type(), m.Code(), m.Checksum(), m.MTU())
	}
}

// TestPacketTooBigToClient: the MTU a client gets from a Packet Too Big
// about its flow: unchanged unless tslb inserts timestamps (TSActSynth),
// then 12 less, and under 1292 (where the client could not follow below
// 1280) unchanged with the flow fallen back to inserting nothing.
func TestPacketTooBigToClient(t *testing.T) {
	for _, tt := range []struct {
		name         string
		ts           nat.TSAction
		fallback     bool
		mtu, want    uint32
		wantFallback bool
	}{
		{"offset", nat.TSActOffset, false, 1400, 1400, false},
		{"pass", nat.TSActPass, false, 1280, 1280, false},
		{"synth", nat.TSActSynth, false, 1400, 1388, false},
		{"synth_1292", nat.TSActSynth, false, 1292, 1280, false},
		{"synth_1291_falls_back", nat.TSActSynth, false, 1291, 1291, true},
		{"synth_1280_falls_back", nat.TSActSynth, false, 1280, 1280, true},
		{"synth_after_fallback", nat.TSActSynth, true, 1400, 1400, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			frame := icmp6ErrorFrame(2, 0, tt.mtu, icmp6Inner(nil, false), 60, false)
			var p nat.Packet
			if err := p.Decode(frame); err != nil {
				t.Fatal(err)
			}
			x := nat.Translation{TS: tt.ts, Fallback: tt.fallback}
			got := x.PacketTooBigToClient(&p)
			if got != tt.want || nat.ICMPv6(frame[54:]).MTU() != tt.want || x.Fallback != tt.wantFallback {
				t.Errorf("MTU %d: client gets %d (field %d), Fallback %v; want %d, %v", tt.mtu, got, nat.ICMPv6(frame[54:]).MTU(), x.Fallback, tt.want, tt.wantFallback)
			}
			checkFull6(t, frame)
			if n := testing.AllocsPerRun(10, func() { x.PacketTooBigToClient(&p) }); n != 0 {
				t.Errorf("allocs %v", n)
			}
		})
	}
	frame := icmp6ErrorFrame(1, 0, 1500, icmp6Inner(nil, false), 60, false)
	orig := slices.Clone(frame)
	var p nat.Packet
	if err := p.Decode(frame); err != nil {
		t.Fatal(err)
	}
	x := nat.Translation{TS: nat.TSActSynth}
	if got := x.PacketTooBigToClient(&p); got != 0 || x.Fallback || !slices.Equal(frame, orig) {
		t.Errorf("destination unreachable: %d, Fallback %v, changed %v", got, x.Fallback, !slices.Equal(frame, orig))
	}
}
