package nat_test

import (
	"errors"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"tslb/nat"
)

// goldenSYN6 is [2001:db8::10]:40000 -> [2001:db8:1::1]:80, SYN, MSS 1440.
// Its TCP checksum was computed independently (Python, RFC 8200 §8.1).
var goldenSYN6 = []byte{
	// Ethernet
	0x02, 0, 0, 0, 0, 0x0b, // dst
	0x02, 0, 0, 0, 0, 0x0a, // src
	0x86, 0xdd, // IPv6
	// IPv6
	0x60, 0x00, 0x00, 0x00, // version 6, traffic class 0, flow label 0
	0x00, 0x18, // payload length 24
	0x06, 0x40, // next header TCP, hop limit 64
	0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x00, 0x10, // src 2001:db8::10
	0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0x00, 0x01, // dst 2001:db8:1::1
	// TCP
	0x9c, 0x40, // sport 40000
	0x00, 0x50, // dport 80
	0x01, 0x02, 0x03, 0x04, // seq
	0x00, 0x00, 0x00, 0x00, // ack
	0x60, 0x02, // data offset 6 (24 bytes), SYN
	0xfd, 0x20, // window 64800
	0x9e, 0xff, // checksum
	0x00, 0x00, // urgent
	0x02, 0x04, 0x05, 0xa0, // MSS 1440
}

// goldenExt6 is goldenSYN6 behind a Hop-by-Hop and a Destination Options
// header (8 bytes each, one PadN option), which do not change the TCP
// checksum: the pseudo header names TCP, not the first extension header.
var goldenExt6 = []byte{
	0x02, 0, 0, 0, 0, 0x0b, 0x02, 0, 0, 0, 0, 0x0a, 0x86, 0xdd,
	0x60, 0x00, 0x00, 0x00,
	0x00, 0x28, // payload length 40 = 8 + 8 + 24
	0x00, 0x40, // next header Hop-by-Hop, hop limit 64
	0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x00, 0x10,
	0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0x00, 0x01,
	// Hop-by-Hop: next header Destination Options, length 0 (8 bytes), PadN 4
	60, 0, 1, 4, 0, 0, 0, 0,
	// Destination Options: next header TCP, length 0, PadN 4
	6, 0, 1, 4, 0, 0, 0, 0,
	// TCP as in goldenSYN6
	0x9c, 0x40, 0x00, 0x50, 0x01, 0x02, 0x03, 0x04, 0, 0, 0, 0,
	0x60, 0x02, 0xfd, 0x20, 0x9e, 0xff, 0x00, 0x00, 0x02, 0x04, 0x05, 0xa0,
}

// goldenPing6 is an ICMPv6 echo request 2001:db8::10 -> 2001:db8:1::1, id
// 1 seq 2, payload "hi" (checksum computed independently).
var goldenPing6 = []byte{
	0x02, 0, 0, 0, 0, 0x0b, 0x02, 0, 0, 0, 0, 0x0a, 0x86, 0xdd,
	0x60, 0x00, 0x00, 0x00,
	0x00, 0x0a, // payload length 10
	0x3a, 0x40, // next header ICMPv6, hop limit 64
	0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x00, 0x10,
	0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0x00, 0x01,
	0x80, 0x00, // echo request, code 0
	0xbb, 0xca, // checksum
	0x00, 0x01, 0x00, 0x02, // id 1, seq 2
	'h', 'i',
}

// with returns a copy of goldenSYN6's packet rebuilt with the extension
// headers e in front of its TCP segment (checksum still right).
func with(e ...extHdr) []byte {
	return buildIP6(ip6Spec{srcMAC: macA, dstMAC: macB, src: ip6C, dst: ip6V, ext: e, proto: nat.ProtoTCP, l4: goldenSYN6[54:]})
}

// wantSYN6 is the Packet goldenSYN6 decodes to, with the TCP header at l4.
func wantSYN6(l4 int) nat.Packet {
	return nat.Packet{
		EtherType: nat.EtherTypeIPv6, L3: 14, L4: l4, L4Len: 24, Proto: nat.ProtoTCP,
		Src6: ip6C, Dst6: ip6V, SrcPort: 40000, DstPort: 80, TCPFlags: nat.TCPFlagSYN,
		Seq: 0x01020304, TCPHdrLen: 24,
	}
}

func TestDecode6(t *testing.T) {
	nineDO := make([]extHdr, 9)
	for i := range nineDO {
		nineDO[i] = destOpts()
	}
	tests := []struct {
		name  string
		frame []byte
		err   error
		want  nat.Packet // checked only if err is nil; Frame filled in
	}{
		{name: "tcp_syn_mss", frame: goldenSYN6, want: wantSYN6(54)},
		{name: "hbh_destopts", frame: goldenExt6, want: wantSYN6(70)},
		{name: "ethernet_padding_ignored", frame: append(slices.Clone(goldenSYN6), 0, 0, 0, 0), want: wantSYN6(54)},
		{name: "routing_segments_left_0", frame: with(routing(0)), want: wantSYN6(62)},
		{name: "atomic_fragment", frame: with(fragment(0, false)), want: wantSYN6(62)},
		{name: "eight_ext_headers", frame: with(nineDO[:8]...), want: wantSYN6(54 + 64)},
		{name: "long_destopts", frame: with(extHdr{60, append([]byte{0, 2, 1, 20}, make([]byte, 20)...)}), want: wantSYN6(78)},
		{
			name: "icmpv6_echo", frame: goldenPing6,
			want: nat.Packet{EtherType: nat.EtherTypeIPv6, L3: 14, L4: 54, L4Len: 10, Proto: nat.ProtoICMPv6, Src6: ip6C, Dst6: ip6V},
		},
		{
			name: "udp", frame: buildIP6(ip6Spec{src: ip6C, dst: ip6V, proto: nat.ProtoUDP, l4: []byte{0, 53, 0, 53, 0, 9, 0, 0, 'x'}}),
			want: nat.Packet{EtherType: nat.EtherTypeIPv6, L3: 14, L4: 54, L4Len: 9, Proto: nat.ProtoUDP, Src6: ip6C, Dst6: ip6V},
		},
		{
			name: "tcp_payload", frame: buildTCP6(tcp6Spec{src: ip6C, dst: ip6V, sport: 1, dport: 2, flags: nat.TCPFlagACK, payload: []byte("abc")}),
			want: nat.Packet{EtherType: nat.EtherTypeIPv6, L3: 14, L4: 54, L4Len: 23, Proto: nat.ProtoTCP, Src6: ip6C, Dst6: ip6V,
				SrcPort: 1, DstPort: 2, TCPFlags: nat.TCPFlagACK, TCPHdrLen: 20, Payload: 3},
		},
		// Hostile rows.
		{name: "truncated_ipv6", frame: goldenSYN6[:14+39], err: nat.ErrShortFrame},
		{name: "version_4", frame: edit(goldenSYN6, func(b []byte) { b[14] = 0x45 }), err: nat.ErrNotIPv6},
		{name: "payload_length_past_frame", frame: edit(goldenSYN6, func(b []byte) { b[19] = 25 }), err: nat.ErrBadPayloadLength},
		{name: "payload_length_ffff", frame: edit(goldenSYN6, func(b []byte) { b[18], b[19] = 0xff, 0xff }), err: nat.ErrBadPayloadLength},
		{name: "truncated_tcp", frame: goldenSYN6[:len(goldenSYN6)-1], err: nat.ErrBadPayloadLength},
		{name: "payload_length_short_for_tcp", frame: edit(goldenSYN6, func(b []byte) { b[19] = 19 }), err: nat.ErrShortTCP},
		{name: "payload_length_0_tcp", frame: edit(goldenSYN6, func(b []byte) { b[19] = 0 }), err: nat.ErrShortTCP},
		{
			// RFC 2675: payload length 0, Hop-by-Hop with a Jumbo Payload option (0xc2, length 4).
			name: "jumbogram", err: nat.ErrJumbogram,
			frame: edit(with(extHdr{0, []byte{0, 0, 0xc2, 4, 0, 1, 0, 0}}), func(b []byte) { b[18], b[19] = 0, 0 }),
		},
		{name: "hbh_truncated_by_payload_length", frame: edit(goldenExt6, func(b []byte) { b[18], b[19] = 0, 4 }), err: nat.ErrShortExtHeader},
		{name: "hbh_length_past_payload", frame: edit(goldenExt6, func(b []byte) { b[55] = 5 }), err: nat.ErrShortExtHeader},
		{name: "routing_length_past_payload", frame: edit(with(routing(0)), func(b []byte) { b[55] = 9 }), err: nat.ErrShortExtHeader},
		{name: "ext_header_only", frame: buildIP6(ip6Spec{src: ip6C, dst: ip6V, ext: []extHdr{destOpts()}, proto: 60}), err: nat.ErrShortExtHeader},
		{name: "hbh_second", frame: with(destOpts(), hbh()), err: nat.ErrBadExtHeader},
		{name: "hbh_twice", frame: with(hbh(), hbh()), err: nat.ErrBadExtHeader},
		{name: "nine_ext_headers", frame: with(nineDO...), err: nat.ErrExtHeaderLimit},
		{name: "fragment_more", frame: with(fragment(0, true)), err: nat.ErrFragment6},
		{name: "fragment_offset", frame: with(fragment(1, false)), err: nat.ErrFragment6},
		{name: "fragment_after_hbh", frame: with(hbh(), fragment(185, true)), err: nat.ErrFragment6},
		{name: "routing_segments_left", frame: with(routing(1)), err: nat.ErrRoutingHeader},
		{name: "esp", frame: buildIP6(ip6Spec{src: ip6C, dst: ip6V, proto: 50, l4: make([]byte, 16)}), err: nat.ErrUnsupportedNextHeader},
		{name: "no_next_header_ignored_bytes", frame: buildIP6(ip6Spec{src: ip6C, dst: ip6V, ext: []extHdr{destOpts()}, proto: 59, l4: goldenSYN6[54:]}),
			want: nat.Packet{EtherType: nat.EtherTypeIPv6, L3: 14, L4: 62, L4Len: 24, Proto: nat.ProtoNoNextHeader, Src6: ip6C, Dst6: ip6V}},
		{name: "no_next_header_empty", frame: buildIP6(ip6Spec{src: ip6C, dst: ip6V, proto: 59}),
			want: nat.Packet{EtherType: nat.EtherTypeIPv6, L3: 14, L4: 54, Proto: nat.ProtoNoNextHeader, Src6: ip6C, Dst6: ip6V}},
		{name: "sctp", frame: buildIP6(ip6Spec{src: ip6C, dst: ip6V, proto: 132, l4: make([]byte, 16)}), err: nat.ErrUnsupportedNextHeader},
		{name: "icmpv4_in_ipv6", frame: buildIP6(ip6Spec{src: ip6C, dst: ip6V, proto: nat.ProtoICMP, l4: make([]byte, 8)}), err: nat.ErrUnsupportedNextHeader},
		{name: "short_icmpv6", frame: edit(goldenPing6[:14+40+7], func(b []byte) { b[19] = 7 }), err: nat.ErrShortICMP},
		{name: "data_offset_4", frame: edit(goldenSYN6, func(b []byte) { b[66] = 0x40 }), err: nat.ErrBadDataOffset},
		{name: "data_offset_past_end", frame: edit(goldenSYN6, func(b []byte) { b[66] = 0x70 }), err: nat.ErrBadDataOffset},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var p nat.Packet
			err := p.Decode(tt.frame)
			if !errors.Is(err, tt.err) {
				t.Fatalf("Decode error = %v, want %v", err, tt.err)
			}
			if n := testing.AllocsPerRun(100, func() { _ = p.Decode(tt.frame) }); n != 0 {
				t.Errorf("Decode allocs = %v, want 0", n)
			}
			if err != nil {
				if nat.Reason(err) == "other" {
					t.Errorf("error %v has no reason label", err)
				}
				return
			}
			tt.want.Frame = tt.frame
			if !samePacket(p, tt.want) {
				t.Errorf("Decode =\n%+v\nwant\n%+v", p, tt.want)
			}
			if !p.IsIPv6() || p.IPv4() != nil || p.IPv6() == nil || p.TTL() != 64 {
				t.Errorf("family accessors: IsIPv6 %v IPv4 %v TTL %d", p.IsIPv6(), p.IPv4() != nil, p.TTL())
			}
			if p.Proto == nat.ProtoNoNextHeader {
				// Nothing to act on: rewrites touch the addresses only.
				f := slices.Clone(tt.frame)
				var q nat.Packet
				_ = q.Decode(f)
				q.SetTuple6(ip6LL, 1, ip6Rtr, 2)
				q.SetSeq(5)
				if q.TCP() != nil || q.ICMPv6() != nil || !slices.Equal(f[q.L4:], tt.frame[q.L4:]) {
					t.Error("No Next Header: the ignored bytes changed")
				}
			}
		})
	}
}

// TestDecode6ErrorFields checks what an extension-header error leaves in
// the Packet: the IPv6 fields, the protocol where the walk stopped, L4 0,
// and rewrites of ports or sequence numbers that are no-ops.
func TestDecode6ErrorFields(t *testing.T) {
	for name, tt := range map[string]struct {
		frame []byte
		err   error
		proto uint8
	}{
		"fragment":       {with(hbh(), fragment(8, true)), nat.ErrFragment6, nat.ProtoTCP},
		"routing":        {with(routing(2)), nat.ErrRoutingHeader, 43},
		"limit":          {with(destOpts(), destOpts(), destOpts(), destOpts(), destOpts(), destOpts(), destOpts(), destOpts(), destOpts()), nat.ErrExtHeaderLimit, 60},
		"esp":            {buildIP6(ip6Spec{src: ip6C, dst: ip6V, proto: 50, l4: make([]byte, 16)}), nat.ErrUnsupportedNextHeader, 50},
		"misplaced_hbh":  {with(destOpts(), hbh()), nat.ErrBadExtHeader, 0},
		"short_destopts": {edit(goldenExt6, func(b []byte) { b[63] = 4 }), nat.ErrShortExtHeader, 60},
	} {
		frame := slices.Clone(tt.frame)
		var p nat.Packet
		if err := p.Decode(frame); err != tt.err {
			t.Fatalf("%s: Decode = %v, want %v", name, err, tt.err)
		}
		if p.L3 != 14 || p.Src6 != ip6C || p.Dst6 != ip6V || p.L4 != 0 || p.Proto != tt.proto || !p.IsIPv6() {
			t.Errorf("%s: L3 %d Src6 %v Dst6 %v L4 %d Proto %d", name, p.L3, p.Src6, p.Dst6, p.L4, p.Proto)
		}
		before := slices.Clone(frame)
		p.SetSrcPort(1)
		p.SetSeq(1)
		p.SetTimestamps(1, 2)
		if !slices.Equal(before, frame) {
			t.Errorf("%s: port/seq/option rewrite changed the packet", name)
		}
	}
}

func TestIPv6View(t *testing.T) {
	f := slices.Clone(goldenSYN6)
	ip := nat.IPv6(f[14:54])
	if ip.Version() != 6 || ip.TrafficClass() != 0 || ip.FlowLabel() != 0 || ip.PayloadLength() != 24 ||
		ip.NextHeader() != nat.ProtoTCP || ip.HopLimit() != 64 || ip.Src() != ip6C || ip.Dst() != ip6V {
		t.Fatal("IPv6 getters disagree with the golden bytes")
	}
	ip.SetTrafficClass(0xb8) // DSCP EF
	ip.SetFlowLabel(0x12345)
	if ip.TrafficClass() != 0xb8 || ip.FlowLabel() != 0x12345 || ip.Version() != 6 ||
		!slices.Equal(f[14:18], []byte{0x6b, 0x81, 0x23, 0x45}) {
		t.Errorf("traffic class/flow label setters: % x", f[14:18])
	}
	ip.SetFlowLabel(0xfff00001) // only 20 bits
	if ip.FlowLabel() != 1 || ip.TrafficClass() != 0xb8 {
		t.Errorf("SetFlowLabel spilled: % x", f[14:18])
	}
	ip.SetPayloadLength(7)
	ip.SetNextHeader(60)
	ip.SetHopLimit(1)
	ip.SetSrc(ip6V)
	ip.SetDst(ip6C)
	if ip.PayloadLength() != 7 || ip.NextHeader() != 60 || ip.HopLimit() != 1 || ip.Src() != ip6V || ip.Dst() != ip6C {
		t.Error("IPv6 setters")
	}
}

func TestAddr16(t *testing.T) {
	if got := ip6C.String(); got != "2001:db8::10" {
		t.Errorf("String = %q", got)
	}
	if nat.Addr16From(ip6C.Netip()) != ip6C {
		t.Error("netip round trip")
	}
	if nat.Addr16From(netip.MustParseAddr("192.0.2.1")) != (nat.Addr16{}) || nat.Addr16From(netip.Addr{}) != (nat.Addr16{}) {
		t.Error("Addr16From accepted IPv4 or the zero Addr")
	}
	if got := nat.Addr16From(netip.MustParseAddr("fe80::1%eth0")); got != addr16("fe80::1") {
		t.Errorf("zone not dropped: %v", got)
	}
	if got := nat.Addr16From(netip.MustParseAddr("::ffff:192.0.2.1")); got.String() != "::ffff:192.0.2.1" {
		t.Errorf("mapped = %v", got)
	}
	for _, tt := range []struct {
		a                   string
		mcast, unspec, snma bool
	}{
		{"::", false, true, false}, {"2001:db8::1", false, false, false}, {"ff02::1", true, false, false},
		{"ff02::1:ff00:1", true, false, true}, {"ff02::1:ffff:ffff", true, false, true},
		{"ff02::2:ff00:1", true, false, false}, {"ff05::1:ff00:1", true, false, false}, {"ff02:0:0:0:1:1:ff00:1", true, false, false},
	} {
		a := addr16(tt.a)
		if a.IsMulticast() != tt.mcast || a.IsUnspecified() != tt.unspec || a.IsSolicitedNodeMulticast() != tt.snma {
			t.Errorf("%s: multicast %v unspecified %v solicited-node %v", tt.a, a.IsMulticast(), a.IsUnspecified(), a.IsSolicitedNodeMulticast())
		}
	}
}

// TestDecode6MatchesGopacket builds random IPv6 packets with random
// extension-header chains with gopacket's serializer and requires Decode
// to find the same upper layer gopacket's decoder finds.
func TestDecode6MatchesGopacket(t *testing.T) {
	r := rand.New(rand.NewPCG(61, 62))
	seen := map[string]int{}
	for i := range 500 {
		src, dst := randAddr16(r, ip6C), randAddr16(r, ip6V)
		ip := &layers.IPv6{Version: 6, HopLimit: uint8(1 + r.IntN(255)), TrafficClass: uint8(r.Uint32()),
			FlowLabel: r.Uint32() & 0xfffff, SrcIP: src[:], DstIP: dst[:]}
		ls := []gopacket.SerializableLayer{ip}
		var hop *layers.IPv6HopByHop
		nh := &ip.NextHeader
		if r.IntN(2) == 0 {
			hop = &layers.IPv6HopByHop{}
			opt := &layers.IPv6HopByHopOption{OptionType: 1, OptionData: make([]byte, 4+8*r.IntN(3))} // PadN, 8n bytes in all
			hop.Options = []*layers.IPv6HopByHopOption{opt}
			ip.HopByHop = hop
			*nh = layers.IPProtocolIPv6HopByHop
			nh = &hop.NextHeader
		}
		var dstOpts *layers.IPv6Destination
		if r.IntN(2) == 0 {
			dstOpts = &layers.IPv6Destination{Options: []*layers.IPv6DestinationOption{{OptionType: 1, OptionData: make([]byte, 4+8*r.IntN(4))}}}
			*nh = layers.IPProtocolIPv6Destination
			nh = &dstOpts.NextHeader
			ls = append(ls, dstOpts)
		}
		var l4 gopacket.SerializableLayer
		payload := make([]byte, r.IntN(200))
		switch r.IntN(3) {
		case 0:
			*nh = layers.IPProtocolTCP
			tcp := &layers.TCP{SrcPort: layers.TCPPort(r.Uint32()), DstPort: layers.TCPPort(r.Uint32()), Seq: r.Uint32(), Ack: r.Uint32(), ACK: true, Window: 1}
			if err := tcp.SetNetworkLayerForChecksum(ip); err != nil {
				t.Fatal(err)
			}
			l4 = tcp
		case 1:
			*nh = layers.IPProtocolUDP
			udp := &layers.UDP{SrcPort: layers.UDPPort(r.Uint32()), DstPort: layers.UDPPort(r.Uint32())}
			if err := udp.SetNetworkLayerForChecksum(ip); err != nil {
				t.Fatal(err)
			}
			l4 = udp
		default:
			*nh = layers.IPProtocolICMPv6
			icmp := &layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(layers.ICMPv6TypeEchoRequest, 0)}
			if err := icmp.SetNetworkLayerForChecksum(ip); err != nil {
				t.Fatal(err)
			}
			l4 = icmp
			payload = append([]byte{0, 1, 0, 2}, payload...)
		}
		ls = append(ls, l4, gopacket.Payload(payload))
		frame := serialize6(t, ls...)
		var p nat.Packet
		if err := p.Decode(frame); err != nil {
			t.Fatalf("packet %d: Decode: %v\n% x", i, err, frame)
		}
		pkt := gopacket.NewPacket(frame, layers.LayerTypeEthernet, gopacket.Default)
		var want gopacket.Layer
		for _, lt := range []gopacket.LayerType{layers.LayerTypeTCP, layers.LayerTypeUDP, layers.LayerTypeICMPv6} {
			if want = pkt.Layer(lt); want != nil {
				break
			}
		}
		if want == nil {
			t.Fatalf("packet %d: gopacket found no upper layer: %v", i, pkt)
		}
		l4off := len(frame) - len(want.LayerContents()) - len(want.LayerPayload())
		if p.L4 != l4off || p.Src6 != src || p.Dst6 != dst || p.TTL() != ip.HopLimit {
			t.Fatalf("packet %d: L4 %d (gopacket %d), %v %v", i, p.L4, l4off, p.Src6, p.Dst6)
		}
		if tcp, ok := want.(*layers.TCP); ok {
			if p.SrcPort != uint16(tcp.SrcPort) || p.DstPort != uint16(tcp.DstPort) || p.Seq != tcp.Seq || p.Ack != tcp.Ack ||
				p.TCPHdrLen != int(tcp.DataOffset)*4 || p.Payload != len(payload) {
				t.Fatalf("packet %d: TCP fields %+v vs %+v", i, p, tcp)
			}
		}
		checkFull6(t, frame) // gopacket's checksum is ours (and the slow reference's)
		seen[want.LayerType().String()]++
		if hop != nil && dstOpts != nil {
			seen["both ext"]++
		}
	}
	if len(seen) != 4 || seen["both ext"] < 50 {
		t.Errorf("coverage: %v", seen)
	}
}

// serialize6 returns an Ethernet/IPv6 frame of the layers with gopacket's
// checksums and lengths.
func serialize6(t testing.TB, ls ...gopacket.SerializableLayer) []byte {
	t.Helper()
	eth := &layers.Ethernet{SrcMAC: macA[:], DstMAC: macB[:], EthernetType: layers.EthernetTypeIPv6}
	buf := gopacket.NewSerializeBuffer()
	opts := gopacket.SerializeOptions{ComputeChecksums: true, FixLengths: true}
	if err := gopacket.SerializeLayers(buf, opts, append([]gopacket.SerializableLayer{eth}, ls...)...); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}
