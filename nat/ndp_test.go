package nat_test

import (
	"errors"
	"slices"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"tslb/nat"
)

// goldenNS is a Neighbor Solicitation from fe80::2 (02:00:00:00:00:0a) for
// 2001:db8:1::1 (checksum computed independently, Python).
var goldenNS = []byte{
	0x33, 0x33, 0xff, 0x00, 0x00, 0x01, // dst: MulticastMAC(ff02::1:ff00:1)
	0x02, 0, 0, 0, 0, 0x0a, // src
	0x86, 0xdd,
	0x60, 0x00, 0x00, 0x00,
	0x00, 0x20, // payload length 32
	0x3a, 0xff, // ICMPv6, hop limit 255
	0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x02, // src fe80::2
	0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0xff, 0x00, 0x00, 0x01, // dst ff02::1:ff00:1
	0x87, 0x00, // Neighbor Solicitation, code 0
	0x4b, 0x56, // checksum
	0, 0, 0, 0, // reserved
	0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0x00, 0x01, // target 2001:db8:1::1
	0x01, 0x01, 0x02, 0, 0, 0, 0, 0x0a, // Source Link-Layer Address, length 1
}

// goldenNA answers goldenNS from 02:00:00:00:00:0b: solicited, override.
var goldenNA = []byte{
	0x02, 0, 0, 0, 0, 0x0a, // dst: the solicitation's link-layer address
	0x02, 0, 0, 0, 0, 0x0b,
	0x86, 0xdd,
	0x60, 0x00, 0x00, 0x00,
	0x00, 0x20,
	0x3a, 0xff,
	0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0x00, 0x01, // src 2001:db8:1::1
	0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x02, // dst fe80::2
	0x88, 0x00, // Neighbor Advertisement, code 0
	0xb9, 0x9f, // checksum
	0x60, 0, 0, 0, // S and O flags
	0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0x00, 0x01, // target
	0x02, 0x01, 0x02, 0, 0, 0, 0, 0x0b, // Target Link-Layer Address, length 1
}

// ndFrame wraps the ICMPv6 message msg (its checksum computed here, then
// xored with bad) in Ethernet and IPv6 with hop limit hl.
func ndFrame(src, dst nat.Addr16, hl uint8, msg []byte, bad uint16) []byte {
	f := buildIP6(ip6Spec{srcMAC: macA, dstMAC: nat.MulticastMAC(dst), src: src, dst: dst, hopLimit: hl, proto: nat.ProtoICMPv6, l4: slices.Clone(msg)})
	setL4Csum6(f[54:], src, dst, nat.ProtoICMPv6, 2, false)
	f[56] ^= byte(bad >> 8)
	f[57] ^= byte(bad)
	return f
}

// nsMsg and naMsg return NS/NA messages for target with the options opts.
func nsMsg(target nat.Addr16, opts ...byte) []byte {
	return slices.Concat([]byte{135, 0, 0, 0, 0, 0, 0, 0}, target[:], opts)
}

func naMsg(flags uint8, target nat.Addr16, opts ...byte) []byte {
	return slices.Concat([]byte{136, 0, 0, 0, flags, 0, 0, 0}, target[:], opts)
}

func TestSolicitedNodeMulticast(t *testing.T) {
	// RFC 4291 §2.7.1: 4037::01:800:200E:8C6C -> FF02::1:FF0E:8C6C.
	if got := nat.SolicitedNodeMulticast(addr16("4037::01:800:200e:8c6c")); got != addr16("ff02::1:ff0e:8c6c") || !got.IsSolicitedNodeMulticast() {
		t.Errorf("SolicitedNodeMulticast = %v", got)
	}
	// RFC 2464 §7: 33:33 and the last four bytes.
	if got := nat.MulticastMAC(addr16("ff02::1:ff0e:8c6c")); got != (nat.MAC{0x33, 0x33, 0xff, 0x0e, 0x8c, 0x6c}) {
		t.Errorf("MulticastMAC = %v", got)
	}
	if got := nat.MulticastMAC(nat.IPv6AllNodes()); got.String() != "33:33:00:00:00:01" || nat.IPv6AllNodes().String() != "ff02::1" {
		t.Errorf("all-nodes: %v %v", nat.IPv6AllNodes(), got)
	}
}

func TestBuildNDGolden(t *testing.T) {
	buf := make([]byte, 128)
	n := nat.BuildNS(buf, macA, ip6LL, ip6V)
	if n != nat.NDPFrameLen || !slices.Equal(buf[:n], goldenNS) {
		t.Errorf("BuildNS = %d\n% x\nwant\n% x", n, buf[:n], goldenNS)
	}
	n = nat.BuildNA(buf, macB, macA, ip6V, ip6LL, ip6V, nat.NAFlagSolicited|nat.NAFlagOverride)
	if n != nat.NDPFrameLen || !slices.Equal(buf[:n], goldenNA) {
		t.Errorf("BuildNA = %d\n% x\nwant\n% x", n, buf[:n], goldenNA)
	}
	for name, f := range map[string][]byte{"ns": goldenNS, "na": goldenNA} {
		var p nat.Packet
		var nd nat.NDP
		if err := p.Decode(f); err != nil {
			t.Fatal(err)
		}
		if err := p.ParseNDP(&nd); err != nil {
			t.Fatalf("%s: ParseNDP: %v", name, err)
		}
		want := nat.NDP{Type: nat.ICMPv6TypeNeighborSolicitation, Target: ip6V, LinkAddr: macA, HasLinkAddr: true}
		if name == "na" {
			want = nat.NDP{Type: nat.ICMPv6TypeNeighborAdvertisement, Target: ip6V, Flags: nat.NAFlagSolicited | nat.NAFlagOverride,
				LinkAddr: macB, HasLinkAddr: true}
		}
		if nd != want {
			t.Errorf("%s: %+v, want %+v", name, nd, want)
		}
	}
}

// TestBuildNDGopacket decodes what BuildNS and BuildNA write with gopacket
// and checks every field and the checksum.
func TestBuildNDGopacket(t *testing.T) {
	buf := make([]byte, 128)
	for _, tt := range []struct {
		name  string
		build func() int
		ns    bool
		src   nat.Addr16
		dst   nat.Addr16
		eth   nat.MAC
		flags uint8
		opt   bool
	}{
		{"ns", func() int { return nat.BuildNS(buf, macA, ip6LL, ip6V) }, true, ip6LL, addr16("ff02::1:ff00:1"), nat.MAC{0x33, 0x33, 0xff, 0, 0, 1}, 0, true},
		{"ns_dad", func() int { return nat.BuildNS(buf, macA, nat.Addr16{}, ip6C) }, true, nat.Addr16{}, addr16("ff02::1:ff00:10"), nat.MAC{0x33, 0x33, 0xff, 0, 0, 0x10}, 0, false},
		{"na_solicited", func() int {
			return nat.BuildNA(buf, macA, macB, ip6V, ip6C, ip6V, nat.NAFlagSolicited|nat.NAFlagOverride)
		}, false, ip6V, ip6C, macB, nat.NAFlagSolicited | nat.NAFlagOverride, true},
		{"na_unsolicited", func() int {
			return nat.BuildNA(buf, macA, macB, ip6V, nat.IPv6AllNodes(), ip6V, nat.NAFlagOverride|0x1f)
		}, false, ip6V, nat.IPv6AllNodes(), nat.MAC{0x33, 0x33, 0, 0, 0, 1}, nat.NAFlagOverride, true},
		{"na_router", func() int { return nat.BuildNA(buf, macA, macB, ip6V, ip6C, ip6V, nat.NAFlagRouter) }, false, ip6V, ip6C, macB, nat.NAFlagRouter, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			clear(buf)
			n := tt.build()
			want := nat.NDPFrameLen
			if !tt.opt {
				want -= 8
			}
			if n != want {
				t.Fatalf("length %d, want %d", n, want)
			}
			frame := buf[:n]
			checkFull6(t, frame)
			pkt := gopacket.NewPacket(frame, layers.LayerTypeEthernet, gopacket.Default)
			eth, _ := pkt.Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
			ip, _ := pkt.Layer(layers.LayerTypeIPv6).(*layers.IPv6)
			icmp, _ := pkt.Layer(layers.LayerTypeICMPv6).(*layers.ICMPv6)
			if eth == nil || ip == nil || icmp == nil || nat.MAC(eth.DstMAC) != tt.eth || nat.MAC(eth.SrcMAC) != macA ||
				ip.HopLimit != 255 || nat.Addr16(ip.SrcIP) != tt.src || nat.Addr16(ip.DstIP) != tt.dst || icmp.TypeCode.Code() != 0 {
				t.Fatalf("gopacket: %v", pkt)
			}
			var target []byte
			var opts layers.ICMPv6Options
			if tt.ns {
				ns, _ := pkt.Layer(layers.LayerTypeICMPv6NeighborSolicitation).(*layers.ICMPv6NeighborSolicitation)
				if ns == nil {
					t.Fatalf("no NS layer: %v", pkt)
				}
				target, opts = ns.TargetAddress, ns.Options
			} else {
				na, _ := pkt.Layer(layers.LayerTypeICMPv6NeighborAdvertisement).(*layers.ICMPv6NeighborAdvertisement)
				if na == nil {
					t.Fatalf("no NA layer: %v", pkt)
				}
				if na.Flags != tt.flags || na.Solicited() != (tt.flags&nat.NAFlagSolicited != 0) || na.Override() != (tt.flags&nat.NAFlagOverride != 0) {
					t.Errorf("NA flags %#x, want %#x", na.Flags, tt.flags)
				}
				target, opts = na.TargetAddress, na.Options
			}
			wantTarget := ip6V
			if tt.name == "ns_dad" {
				wantTarget = ip6C
			}
			if nat.Addr16(target) != wantTarget {
				t.Errorf("target %v", target)
			}
			wantOpt := layers.ICMPv6OptSourceAddress
			if !tt.ns {
				wantOpt = layers.ICMPv6OptTargetAddress
			}
			if tt.opt != (len(opts) == 1) || tt.opt && (opts[0].Type != wantOpt || !slices.Equal(opts[0].Data, macA[:])) {
				t.Errorf("options %v", opts)
			}
			var p nat.Packet
			var nd nat.NDP
			if err := p.Decode(frame); err != nil || p.ParseNDP(&nd) != nil || nd.Target != wantTarget || nd.Flags != tt.flags ||
				nd.HasLinkAddr != tt.opt {
				t.Errorf("ParseNDP of our own frame: %+v", nd)
			}
		})
	}
}

// TestParseNDPGopacket parses NS and NA messages serialised by gopacket.
func TestParseNDPGopacket(t *testing.T) {
	for _, ns := range []bool{true, false} {
		dst := ip6C
		ip := &layers.IPv6{Version: 6, HopLimit: 255, NextHeader: layers.IPProtocolICMPv6, SrcIP: ip6LL[:], DstIP: dst[:]}
		var tc layers.ICMPv6TypeCode
		var body gopacket.SerializableLayer
		if ns {
			tc = layers.CreateICMPv6TypeCode(layers.ICMPv6TypeNeighborSolicitation, 0)
			body = &layers.ICMPv6NeighborSolicitation{TargetAddress: ip6V[:], Options: layers.ICMPv6Options{
				{Type: 14, Data: []byte{1, 2, 3, 4, 5, 6}}, // a Nonce (RFC 3971): skipped
				{Type: layers.ICMPv6OptSourceAddress, Data: macB[:]},
			}}
		} else {
			tc = layers.CreateICMPv6TypeCode(layers.ICMPv6TypeNeighborAdvertisement, 0)
			body = &layers.ICMPv6NeighborAdvertisement{Flags: 0xe0, TargetAddress: ip6V[:], Options: layers.ICMPv6Options{
				{Type: layers.ICMPv6OptTargetAddress, Data: macB[:]},
			}}
		}
		icmp := &layers.ICMPv6{TypeCode: tc}
		if err := icmp.SetNetworkLayerForChecksum(ip); err != nil {
			t.Fatal(err)
		}
		frame := serialize6(t, ip, icmp, body)
		var p nat.Packet
		var nd nat.NDP
		if err := p.Decode(frame); err != nil {
			t.Fatal(err)
		}
		if err := p.ParseNDP(&nd); err != nil {
			t.Fatalf("ns=%v: %v", ns, err)
		}
		if nd.Target != ip6V || !nd.HasLinkAddr || nd.LinkAddr != macB || (!ns && nd.Flags != 0xe0) || (ns && nd.Flags != 0) {
			t.Errorf("ns=%v: %+v", ns, nd)
		}
	}
}

func TestParseNDPValidation(t *testing.T) {
	snm := nat.SolicitedNodeMulticast(ip6V)
	var unspec nat.Addr16
	lla := func(typ uint8, m nat.MAC) []byte { return append([]byte{typ, 1}, m[:]...) }
	tests := []struct {
		name  string
		frame []byte
		err   error
		want  nat.NDP
	}{
		{"ns", ndFrame(ip6LL, snm, 255, nsMsg(ip6V, lla(1, macA)...), 0), nil,
			nat.NDP{Type: 135, Target: ip6V, LinkAddr: macA, HasLinkAddr: true}},
		{"ns_unicast_no_lla", ndFrame(ip6LL, ip6V, 255, nsMsg(ip6V), 0), nil, nat.NDP{Type: 135, Target: ip6V}},
		{"ns_dad", ndFrame(unspec, snm, 255, nsMsg(ip6V), 0), nil, nat.NDP{Type: 135, Target: ip6V}},
		{"ns_unknown_option_skipped", ndFrame(ip6LL, snm, 255, nsMsg(ip6V, slices.Concat([]byte{14, 1, 1, 2, 3, 4, 5, 6}, lla(1, macA))...), 0), nil,
			nat.NDP{Type: 135, Target: ip6V, LinkAddr: macA, HasLinkAddr: true}},
		{"ns_long_lla_ignored", ndFrame(ip6LL, snm, 255, nsMsg(ip6V, slices.Concat([]byte{1, 2}, make([]byte, 14))...), 0), nil,
			nat.NDP{Type: 135, Target: ip6V}},
		{"ns_first_lla_taken", ndFrame(ip6LL, snm, 255, nsMsg(ip6V, slices.Concat(lla(1, macA), lla(1, macB))...), 0), nil,
			nat.NDP{Type: 135, Target: ip6V, LinkAddr: macA, HasLinkAddr: true}},
		{"ns_tlla_not_slla", ndFrame(ip6LL, snm, 255, nsMsg(ip6V, lla(2, macA)...), 0), nil, nat.NDP{Type: 135, Target: ip6V}},
		{"na", ndFrame(ip6V, ip6LL, 255, naMsg(0x60, ip6V, lla(2, macB)...), 0), nil,
			nat.NDP{Type: 136, Target: ip6V, Flags: 0x60, LinkAddr: macB, HasLinkAddr: true}},
		{"na_reserved_bits_dropped", ndFrame(ip6V, ip6LL, 255, naMsg(0xff, ip6V), 0), nil, nat.NDP{Type: 136, Target: ip6V, Flags: 0xe0}},
		{"na_unsolicited_all_nodes", ndFrame(ip6V, nat.IPv6AllNodes(), 255, naMsg(0x20, ip6V, lla(2, macB)...), 0), nil,
			nat.NDP{Type: 136, Target: ip6V, Flags: 0x20, LinkAddr: macB, HasLinkAddr: true}},
		// RFC 4861 §7.1.1 and §7.1.2 failures.
		{"hop_limit_254", ndFrame(ip6LL, snm, 254, nsMsg(ip6V), 0), nat.ErrBadNDP, nat.NDP{}},
		{"hop_limit_64_na", ndFrame(ip6V, ip6LL, 64, naMsg(0x60, ip6V), 0), nat.ErrBadNDP, nat.NDP{}},
		{"bad_checksum", ndFrame(ip6LL, snm, 255, nsMsg(ip6V), 0x0100), nat.ErrBadNDP, nat.NDP{}},
		{"code_1", ndFrame(ip6LL, snm, 255, edit(nsMsg(ip6V), func(b []byte) { b[1] = 1 }), 0), nat.ErrBadNDP, nat.NDP{}},
		{"length_23", ndFrame(ip6LL, snm, 255, nsMsg(ip6V)[:23], 0), nat.ErrBadNDP, nat.NDP{}},
		{"multicast_target", ndFrame(ip6LL, snm, 255, nsMsg(snm), 0), nat.ErrBadNDP, nat.NDP{}},
		{"multicast_target_na", ndFrame(ip6V, ip6LL, 255, naMsg(0x20, nat.IPv6AllNodes()), 0), nat.ErrBadNDP, nat.NDP{}},
		{"option_length_0", ndFrame(ip6LL, snm, 255, nsMsg(ip6V, 1, 0, 0, 0, 0, 0, 0, 0), 0), nat.ErrBadNDP, nat.NDP{}},
		{"option_past_end", ndFrame(ip6LL, snm, 255, nsMsg(ip6V, 1, 2, 0, 0, 0, 0, 0, 0), 0), nat.ErrBadNDP, nat.NDP{}},
		{"option_one_byte", ndFrame(ip6LL, snm, 255, nsMsg(ip6V, 1), 0), nat.ErrBadNDP, nat.NDP{}},
		{"dad_not_solicited_node", ndFrame(unspec, ip6V, 255, nsMsg(ip6V), 0), nat.ErrBadNDP, nat.NDP{}},
		{"dad_all_nodes", ndFrame(unspec, nat.IPv6AllNodes(), 255, nsMsg(ip6V), 0), nat.ErrBadNDP, nat.NDP{}},
		{"dad_with_slla", ndFrame(unspec, snm, 255, nsMsg(ip6V, lla(1, macA)...), 0), nat.ErrBadNDP, nat.NDP{}},
		{"dad_with_long_slla", ndFrame(unspec, snm, 255, nsMsg(ip6V, slices.Concat([]byte{1, 2}, make([]byte, 14))...), 0), nat.ErrBadNDP, nat.NDP{}},
		{"na_multicast_solicited", ndFrame(ip6V, nat.IPv6AllNodes(), 255, naMsg(0x60, ip6V), 0), nat.ErrBadNDP, nat.NDP{}},
		// RFC 4291 §2.7: no packet has a multicast source.
		{"ns_multicast_src", ndFrame(nat.IPv6AllNodes(), snm, 255, nsMsg(ip6V), 0), nat.ErrBadNDP, nat.NDP{}},
		{"na_multicast_src", ndFrame(snm, ip6LL, 255, naMsg(0x20, ip6V), 0), nat.ErrBadNDP, nat.NDP{}},
		// Not neighbor discovery.
		{"echo", goldenPing6, nat.ErrNotNDP, nat.NDP{}},
		{"router_solicitation", ndFrame(ip6LL, nat.IPv6AllNodes(), 255, []byte{133, 0, 0, 0, 0, 0, 0, 0}, 0), nat.ErrNotNDP, nat.NDP{}},
		{"tcp", goldenSYN6, nat.ErrNotNDP, nat.NDP{}},
		{"arp", goldenARP, nat.ErrNotNDP, nat.NDP{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var p nat.Packet
			if err := p.Decode(tt.frame); err != nil {
				t.Fatal(err)
			}
			var nd nat.NDP
			err := p.ParseNDP(&nd)
			if !errors.Is(err, tt.err) || nd != tt.want {
				t.Errorf("ParseNDP = %v %+v, want %v %+v", err, nd, tt.err, tt.want)
			}
			if n := testing.AllocsPerRun(100, func() { _ = p.ParseNDP(&nd) }); n != 0 {
				t.Errorf("ParseNDP allocs = %v", n)
			}
		})
	}
}

func TestNDPReply(t *testing.T) {
	snm := nat.SolicitedNodeMulticast(ip6V)
	buf := make([]byte, nat.NDPFrameLen)
	for _, tt := range []struct {
		name   string
		frame  []byte
		dst    nat.Addr16
		ethDst nat.MAC
		flags  uint8
	}{
		{"slla", ndFrame(ip6LL, snm, 255, nsMsg(ip6V, 1, 1, 2, 0, 0, 0, 0, 0x42), 0), ip6LL, nat.MAC{2, 0, 0, 0, 0, 0x42}, nat.NAFlagSolicited | nat.NAFlagOverride},
		{"unicast_probe", ndFrame(ip6LL, ip6V, 255, nsMsg(ip6V), 0), ip6LL, macA, nat.NAFlagSolicited | nat.NAFlagOverride},
		{"dad", ndFrame(nat.Addr16{}, snm, 255, nsMsg(ip6V), 0), nat.IPv6AllNodes(), nat.MAC{0x33, 0x33, 0, 0, 0, 1}, nat.NAFlagOverride},
	} {
		var p nat.Packet
		var ns nat.NDP
		if p.Decode(tt.frame) != nil || p.ParseNDP(&ns) != nil {
			t.Fatalf("%s: not a valid NS", tt.name)
		}
		dst, ethDst, flags := p.NDPReply(&ns)
		if dst != tt.dst || ethDst != tt.ethDst || flags != tt.flags {
			t.Errorf("%s: NDPReply = %v %v %#x, want %v %v %#x", tt.name, dst, ethDst, flags, tt.dst, tt.ethDst, tt.flags)
		}
		n := nat.BuildNA(buf, macB, ethDst, ns.Target, dst, ns.Target, flags)
		var q nat.Packet
		var na nat.NDP
		if n == 0 || q.Decode(buf[:n]) != nil || q.ParseNDP(&na) != nil || na.Target != ip6V || na.Flags != flags ||
			q.Ethernet().Dst() != tt.ethDst || na.LinkAddr != macB {
			t.Errorf("%s: the reply does not parse: %d %+v", tt.name, n, na)
		}
	}
}

func TestBuildNDRefuses(t *testing.T) {
	buf := make([]byte, 128)
	for name, n := range map[string]int{
		"ns_short":               nat.BuildNS(buf[:nat.NDPFrameLen-1], macA, ip6LL, ip6V),
		"ns_multicast_target":    nat.BuildNS(buf, macA, ip6LL, nat.IPv6AllNodes()),
		"ns_multicast_src":       nat.BuildNS(buf, macA, nat.IPv6AllNodes(), ip6V),
		"na_short":               nat.BuildNA(buf[:nat.NDPFrameLen-1], macA, macB, ip6V, ip6LL, ip6V, 0),
		"na_multicast_solicited": nat.BuildNA(buf, macA, macB, ip6V, nat.IPv6AllNodes(), ip6V, nat.NAFlagSolicited),
		"na_multicast_target":    nat.BuildNA(buf, macA, macB, ip6V, ip6LL, nat.IPv6AllNodes(), 0),
		"na_multicast_src":       nat.BuildNA(buf, macA, macB, nat.IPv6AllNodes(), ip6LL, ip6V, 0),
		"na_unspecified_src":     nat.BuildNA(buf, macA, macB, nat.Addr16{}, ip6LL, ip6V, 0),
	} {
		if n != 0 {
			t.Errorf("%s: wrote %d bytes", name, n)
		}
	}
	if slices.ContainsFunc(buf, func(b byte) bool { return b != 0 }) {
		t.Error("a refused build wrote into the buffer")
	}
}

func TestNDPNoAllocs(t *testing.T) {
	buf := make([]byte, 128)
	var p nat.Packet
	var nd nat.NDP
	n := testing.AllocsPerRun(100, func() {
		nat.BuildNS(buf, macA, ip6LL, ip6V)
		if p.Decode(buf[:nat.NDPFrameLen]) != nil || p.ParseNDP(&nd) != nil {
			t.Fatal("NS")
		}
		dst, eth, flags := p.NDPReply(&nd)
		nat.BuildNA(buf, macB, eth, nd.Target, dst, nd.Target, flags)
		_ = nat.SolicitedNodeMulticast(nd.Target)
	})
	if n != 0 {
		t.Errorf("allocs = %v", n)
	}
}
