package lb

import (
	"encoding/binary"
	"net"
	"net/netip"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"tslb/config"
	"tslb/nat"
)

// IPv6 through the fake links: the same datapath as IPv4 (one address
// type), with neighbour discovery instead of ARP and ICMPv6 errors.

var (
	client6  = netip.MustParseAddr("2001:db8:c::11")
	vip6     = netip.MustParseAddr("2001:db8:c::100")
	snat6    = netip.MustParseAddr("2001:db8:b::100")
	be6      = netip.MustParseAddr("2001:db8:b::11")
	vip6AP   = netip.AddrPortFrom(vip6, 80)
	be6AP    = netip.AddrPortFrom(be6, 8080)
	be6MAC   = nat.MAC{0x02, 0, 0, 0, 0x66, 0x11}
	client6M = nat.MAC{0x02, 0, 0, 0, 0x66, 0xc1}
)

// config6 is testConfig with an IPv6 service beside the IPv4 one: IPv6
// subnets on both links, an IPv6 SNAT address, one IPv6 backend.
func config6(mods ...func(*config.Config)) *config.Config {
	return testConfig(append([]func(*config.Config){func(c *config.Config) {
		c.Links[0].Subnets = append(c.Links[0].Subnets, netip.MustParsePrefix("2001:db8:c::/64"))
		c.Links[1].Subnets = append(c.Links[1].Subnets, netip.MustParsePrefix("2001:db8:b::/64"))
		c.SNAT.Addresses = append(c.SNAT.Addresses, snat6)
		c.SNAT.PortMax = 20099
		s := c.Services[0]
		s.Name, s.VIP = "web6", vip6
		s.Backends = []config.Backend{{Address: be6AP, Weight: 1}}
		c.Services = append(c.Services, s)
	}}, mods...)...)
}

// seg6 is a TCP segment over IPv6.
type seg6 struct {
	vh             nat.VirtioNetHdr
	srcMAC, dstMAC nat.MAC
	src, dst       netip.AddrPort
	hop            uint8 // 0 means 64
	flags          uint8
	seq, ack       uint32
	opts           []layers.TCPOption
	payload        []byte
}

func (s seg6) frame(t testing.TB) []byte {
	t.Helper()
	hop := s.hop
	if hop == 0 {
		hop = 64
	}
	eth := &layers.Ethernet{SrcMAC: hw(s.srcMAC), DstMAC: hw(s.dstMAC), EthernetType: layers.EthernetTypeIPv6}
	ip := &layers.IPv6{Version: 6, HopLimit: hop, NextHeader: layers.IPProtocolTCP,
		SrcIP: net.IP(s.src.Addr().AsSlice()), DstIP: net.IP(s.dst.Addr().AsSlice())}
	tcp := &layers.TCP{SrcPort: layers.TCPPort(s.src.Port()), DstPort: layers.TCPPort(s.dst.Port()),
		Seq: s.seq, Ack: s.ack, Window: 64240, Options: s.opts,
		FIN: s.flags&nat.TCPFlagFIN != 0, SYN: s.flags&nat.TCPFlagSYN != 0, RST: s.flags&nat.TCPFlagRST != 0,
		PSH: s.flags&nat.TCPFlagPSH != 0, ACK: s.flags&nat.TCPFlagACK != 0}
	tcp.SetNetworkLayerForChecksum(ip)
	return serialize(t, s.vh, eth, ip, tcp, gopacket.Payload(s.payload))
}

func client6Seg(cport uint16, flags uint8, seq, ack uint32) seg6 {
	return seg6{srcMAC: client6M, dstMAC: c0MAC, src: netip.AddrPortFrom(client6, cport), dst: vip6AP, flags: flags, seq: seq, ack: ack}
}

func backend6Seg(sport uint16, flags uint8, seq, ack uint32) seg6 {
	return seg6{srcMAC: be6MAC, dstMAC: b0MAC, src: be6AP, dst: netip.AddrPortFrom(snat6, sport), flags: flags, seq: seq, ack: ack}
}

// out6 is a written IPv6 frame, decoded and checked: gopacket must decode
// it whole and its checksums (TCP or ICMPv6, over the IPv6 pseudo-header)
// must verify.
type out6 struct {
	eth  *layers.Ethernet
	ip   *layers.IPv6
	tcp  *layers.TCP
	icmp *layers.ICMPv6
	pkt  gopacket.Packet
}

func decode6(t testing.TB, f []byte) *out6 {
	t.Helper()
	pkt := gopacket.NewPacket(f[nat.VirtioNetHdrLen:], layers.LayerTypeEthernet, gopacket.Default)
	if el := pkt.ErrorLayer(); el != nil {
		t.Fatalf("gopacket cannot decode a written frame: %v\n% x", el.Error(), f)
	}
	o := &out6{pkt: pkt}
	o.eth, _ = pkt.Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
	o.ip, _ = pkt.Layer(layers.LayerTypeIPv6).(*layers.IPv6)
	o.tcp, _ = pkt.Layer(layers.LayerTypeTCP).(*layers.TCP)
	o.icmp, _ = pkt.Layer(layers.LayerTypeICMPv6).(*layers.ICMPv6)
	if o.ip == nil {
		t.Fatalf("not an IPv6 frame: % x", f)
	}
	if o.tcp != nil {
		o.tcp.SetNetworkLayerForChecksum(o.ip)
	}
	if o.icmp != nil {
		o.icmp.SetNetworkLayerForChecksum(o.ip)
	}
	if err, bad := pkt.VerifyChecksums(); err != nil || len(bad) > 0 {
		t.Errorf("checksums: %v %+v", err, bad)
	}
	return o
}

func (o *out6) tuple() (src, dst netip.AddrPort) {
	s, _ := netip.AddrFromSlice(o.ip.SrcIP)
	d, _ := netip.AddrFromSlice(o.ip.DstIP)
	return netip.AddrPortFrom(s, uint16(o.tcp.SrcPort)), netip.AddrPortFrom(d, uint16(o.tcp.DstPort))
}

// ns builds a Neighbor Solicitation from (mac, src) for target, to its
// solicited-node multicast address, with the source link-layer option.
func ns(t testing.TB, mac nat.MAC, src, target netip.Addr) []byte {
	t.Helper()
	tb := target.As16()
	dst := netip.AddrFrom16([16]byte{0xff, 0x02, 11: 1, 12: 0xff, 13: tb[13], 14: tb[14], 15: tb[15]})
	eth := &layers.Ethernet{SrcMAC: hw(mac), DstMAC: net.HardwareAddr{0x33, 0x33, 0xff, tb[13], tb[14], tb[15]}, EthernetType: layers.EthernetTypeIPv6}
	ip := &layers.IPv6{Version: 6, HopLimit: 255, NextHeader: layers.IPProtocolICMPv6,
		SrcIP: net.IP(src.AsSlice()), DstIP: net.IP(dst.AsSlice())}
	icmp := &layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(layers.ICMPv6TypeNeighborSolicitation, 0)}
	icmp.SetNetworkLayerForChecksum(ip)
	sol := &layers.ICMPv6NeighborSolicitation{TargetAddress: net.IP(target.AsSlice()),
		Options: layers.ICMPv6Options{{Type: layers.ICMPv6OptSourceAddress, Data: hw(mac)}}}
	return serialize(t, nat.VirtioNetHdr{}, eth, ip, icmp, sol)
}

// solicit6 sends a Neighbor Solicitation for target on l and checks the
// advertisement: solicited, from tslb's MAC, for the target.
func solicit6(t testing.TB, l *fakeLink, lmac, mac nat.MAC, src, target netip.Addr) {
	t.Helper()
	l.inject(t, ns(t, mac, src, target))
	o := decode6(t, l.next(t))
	na, _ := o.pkt.Layer(layers.LayerTypeICMPv6NeighborAdvertisement).(*layers.ICMPv6NeighborAdvertisement)
	if na == nil || !na.Solicited() || !net.IP(target.AsSlice()).Equal(na.TargetAddress) ||
		nat.MAC(o.eth.SrcMAC) != lmac || nat.MAC(o.eth.DstMAC) != mac {
		t.Fatalf("answer to an NS for %v on %s: %v", target, l.name, o.pkt)
	}
}

// start6 starts the dual-stack harness and teaches it the IPv6 client's
// and backend's MACs (through their solicitations for tslb's addresses),
// after the IPv4 neighbours.
func start6(t *testing.T, mods ...func(*config.Config)) *harness {
	t.Helper()
	h := start(t, config6(mods...))
	// The IPv6 addresses are announced too: an unsolicited advertisement
	// on each link (start reads it, in whatever order it came).
	if h.announced6 == nil {
		h.announced6 = map[string]int{}
	}
	for _, l := range []*fakeLink{h.c0, h.b0} {
		if h.announced6[l.name] == 0 && isUnsolicitedNA(l.next(t)) {
			h.announced6[l.name]++ // it came after the gratuitous ARP
		}
		if h.announced6[l.name] != 1 {
			t.Fatalf("%s: %d unsolicited NAs at start, want 1", l.name, h.announced6[l.name])
		}
	}
	h.prime(t)
	solicit6(t, h.c0, c0MAC, client6M, client6, vip6)
	solicit6(t, h.b0, b0MAC, be6MAC, be6, snat6)
	return h
}

func tsOf6(tcp *layers.TCP) (val, ecr uint32, ok bool) {
	for _, o := range tcp.Options {
		if o.OptionType == layers.TCPOptionKindTimestamps && len(o.OptionData) == 8 {
			return binary.BigEndian.Uint32(o.OptionData), binary.BigEndian.Uint32(o.OptionData[4:]), true
		}
	}
	return 0, 0, false
}

func mss6(tcp *layers.TCP) uint16 {
	for _, o := range tcp.Options {
		if o.OptionType == layers.TCPOptionKindMSS && len(o.OptionData) == 2 {
			return binary.BigEndian.Uint16(o.OptionData)
		}
	}
	return 0
}

// TestIPv6Flow: a connection through the IPv6 VIP in rewrite mode, with a
// client using timestamps and one without: SNAT to the IPv6 address,
// hop limit decremented, TSval rewritten toward the backend and TSecr
// exactly back, a synthesised option for the client without timestamps
// with the SYN-ACK's MSS clamped by 12, checksums valid throughout.
func TestIPv6Flow(t *testing.T) {
	t.Parallel()
	for _, clientTS := range []bool{true, false} {
		t.Run(map[bool]string{true: "client_ts", false: "no_client_ts"}[clientTS], func(t *testing.T) {
			t.Parallel()
			h := start6(t, func(c *config.Config) { c.Services[1].Timestamps = config.TSRewrite })
			const cport, cisn, bisn, cTS, bTS = 50000, 1000, 900_000, 7777, 123
			syn := client6Seg(cport, nat.TCPFlagSYN, cisn, 0)
			syn.opts = []layers.TCPOption{{OptionType: layers.TCPOptionKindMSS, OptionData: []byte{0x05, 0xa0}}} // 1440
			if clientTS {
				syn.opts = synOptions(cTS, 0)
			}
			h.c0.inject(t, syn.frame(t))
			bs := decode6(t, h.b0.next(t))
			src, dst := bs.tuple()
			if src.Addr() != snat6 || dst != be6AP || bs.ip.HopLimit != 63 || !bs.tcp.SYN || bs.tcp.Seq != cisn {
				t.Fatalf("backend SYN %v -> %v hop %d seq %d: %v", src, dst, bs.ip.HopLimit, bs.tcp.Seq, bs.pkt)
			}
			if nat.MAC(bs.eth.DstMAC) != be6MAC || nat.MAC(bs.eth.SrcMAC) != b0MAC {
				t.Errorf("backend SYN MACs %v -> %v", bs.eth.SrcMAC, bs.eth.DstMAC)
			}
			sTS, _, ok := tsOf6(bs.tcp)
			if !ok {
				t.Fatal("backend SYN has no timestamp (rewrite mode gives every SYN one)")
			}
			sport := src.Port()

			sa := backend6Seg(sport, nat.TCPFlagSYN|nat.TCPFlagACK, bisn, cisn+1)
			sa.opts = []layers.TCPOption{{OptionType: layers.TCPOptionKindMSS, OptionData: []byte{0x05, 0xa0}}, // 1440
				{OptionType: layers.TCPOptionKindTimestamps, OptionData: append(be32(bTS), be32(sTS)...)}}
			h.b0.inject(t, sa.frame(t))
			cs := decode6(t, h.c0.next(t))
			csrc, cdst := cs.tuple()
			if csrc != vip6AP || cdst != netip.AddrPortFrom(client6, cport) || !cs.tcp.SYN || !cs.tcp.ACK || cs.tcp.Ack != cisn+1 {
				t.Fatalf("client SYN-ACK %v -> %v: %v", csrc, cdst, cs.pkt)
			}
			v, e, ok := tsOf6(cs.tcp)
			switch {
			case clientTS && (!ok || v != bTS || e != cTS):
				t.Errorf("client SYN-ACK TS %d/%d %v, want %d/%d (TSecr exactly the client's)", v, e, ok, bTS, cTS)
			case !clientTS && ok:
				t.Errorf("client without timestamps got a TS option %d/%d", v, e)
			}
			if m, want := mss6(cs.tcp), map[bool]uint16{true: 1440, false: 1428}[clientTS]; m != want {
				t.Errorf("client SYN-ACK MSS %d, want %d", m, want)
			}

			d := client6Seg(cport, nat.TCPFlagACK|nat.TCPFlagPSH, cisn+1, bisn+1)
			d.payload = []byte("GET / HTTP/1.1\r\n\r\n")
			if clientTS {
				d.opts = []layers.TCPOption{{OptionType: layers.TCPOptionKindNop}, {OptionType: layers.TCPOptionKindNop},
					{OptionType: layers.TCPOptionKindTimestamps, OptionData: append(be32(cTS+5), be32(bTS)...)}}
			}
			h.c0.inject(t, d.frame(t))
			bd := decode6(t, h.b0.next(t))
			if string(bd.tcp.Payload) != string(d.payload) || bd.tcp.Seq != cisn+1 || bd.tcp.Ack != bisn+1 {
				t.Errorf("client data at the backend: seq %d ack %d %q", bd.tcp.Seq, bd.tcp.Ack, bd.tcp.Payload)
			}
			if v, e, ok := tsOf6(bd.tcp); !ok || e != bTS || v-sTS > 1000 {
				t.Errorf("client data TS at the backend %d/%d %v: want TSecr %d and a TSval just after the SYN's %d", v, e, ok, bTS, sTS)
			}
		})
	}
}

// TestIPv6PacketTooBig: a Packet Too Big from the backend's side about a
// flow reaches the client translated (addresses and ports of the quoted
// segment the client's, its sequence number in the client's space), with
// the MTU lowered by the 12 bytes tslb inserts for a client without
// timestamps in rewrite mode; under 1292, where the client cannot go
// below 1280, the MTU passes unchanged and tslb stops inserting the
// option (else every 1280-byte packet would grow to 1292: a black hole
// the lab's TestPMTU6 showed).
func TestIPv6PacketTooBig(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name      string
		mtu, want uint32
		fallback  bool
	}{{"lowered", 1400, 1388, false}, {"falls_back", 1290, 1290, true}} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			testIPv6PacketTooBig(t, tt.mtu, tt.want, tt.fallback)
		})
	}
}

func testIPv6PacketTooBig(t *testing.T, ptbMTU, wantMTU uint32, fallback bool) {
	h := start6(t, func(c *config.Config) { c.Services[1].Timestamps = config.TSRewrite })
	const cport, cisn, bisn = 50001, 5000, 77_000
	syn := client6Seg(cport, nat.TCPFlagSYN, cisn, 0)
	syn.opts = []layers.TCPOption{{OptionType: layers.TCPOptionKindMSS, OptionData: []byte{0x05, 0xa0}}}
	h.c0.inject(t, syn.frame(t))
	bs := decode6(t, h.b0.next(t))
	src, _ := bs.tuple()
	sa := backend6Seg(src.Port(), nat.TCPFlagSYN|nat.TCPFlagACK, bisn, cisn+1)
	sTS, _, _ := tsOf6(bs.tcp)
	sa.opts = []layers.TCPOption{{OptionType: layers.TCPOptionKindTimestamps, OptionData: append(be32(1), be32(sTS)...)}}
	h.b0.inject(t, sa.frame(t))
	decode6(t, h.c0.next(t))

	// What tslb sent toward the backend, quoted by a router on the way.
	quoted := bs.pkt.Data()[nat.EthernetHeaderLen:]
	router := netip.MustParseAddr("2001:db8:b::1")
	eth := &layers.Ethernet{SrcMAC: hw(be6MAC), DstMAC: hw(b0MAC), EthernetType: layers.EthernetTypeIPv6}
	ip := &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: layers.IPProtocolICMPv6,
		SrcIP: net.IP(router.AsSlice()), DstIP: net.IP(snat6.AsSlice())}
	icmp := &layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(layers.ICMPv6TypePacketTooBig, 0)}
	icmp.SetNetworkLayerForChecksum(ip)
	body := append(binary.BigEndian.AppendUint32(nil, ptbMTU), quoted...)
	h.b0.inject(t, serialize(t, nat.VirtioNetHdr{}, eth, ip, icmp, gopacket.Payload(body)))

	o := decode6(t, h.c0.next(t))
	if o.icmp == nil || o.icmp.TypeCode.Type() != layers.ICMPv6TypePacketTooBig {
		t.Fatalf("client got %v, want a Packet Too Big", o.pkt)
	}
	d, _ := netip.AddrFromSlice(o.ip.DstIP)
	if d != client6 {
		t.Errorf("Packet Too Big to %v, want the client %v", d, client6)
	}
	pl := o.icmp.Payload
	if mtu := binary.BigEndian.Uint32(pl); mtu != wantMTU {
		t.Errorf("MTU %d, want %d", mtu, wantMTU)
	}
	inner := gopacket.NewPacket(pl[4:], layers.LayerTypeIPv6, gopacket.Default)
	iip, _ := inner.Layer(layers.LayerTypeIPv6).(*layers.IPv6)
	itcp, _ := inner.Layer(layers.LayerTypeTCP).(*layers.TCP)
	if iip == nil || itcp == nil {
		t.Fatalf("quoted packet: %v", inner)
	}
	is, _ := netip.AddrFromSlice(iip.SrcIP)
	id, _ := netip.AddrFromSlice(iip.DstIP)
	if is != client6 || id != vip6 || uint16(itcp.SrcPort) != cport || itcp.DstPort != 80 || itcp.Seq != cisn {
		t.Errorf("quoted segment %v:%d -> %v:%d seq %d, want the client's own %v:%d -> %v seq %d",
			is, itcp.SrcPort, id, itcp.DstPort, itcp.Seq, client6, cport, vip6AP, cisn)
	}
	if got := metric(t, h.b, "tslb_icmp_errors_translated_total"); got != 1 {
		t.Errorf("tslb_icmp_errors_translated_total = %v, want 1", got)
	}
	// The client's next segment: with a timestamp inserted, or after the
	// fallback as the client sent it.
	seg := client6Seg(cport, nat.TCPFlagACK|nat.TCPFlagPSH, cisn+1, bisn+1)
	seg.payload = make([]byte, 1200)
	h.c0.inject(t, seg.frame(t))
	bd := decode6(t, h.b0.next(t))
	if _, _, ok := tsOf6(bd.tcp); ok == fallback || len(bd.tcp.Payload) != 1200 || bd.tcp.Seq != cisn+1 {
		t.Errorf("client data at the backend: TS option %v (want %v), %d bytes, seq %d", ok, !fallback, len(bd.tcp.Payload), bd.tcp.Seq)
	}
}

// TestIPv6SYNProxy: the SYN proxy over IPv6: a cookie SYN-ACK, and the
// ACK returning it opens the backend connection with the client's ISN.
func TestIPv6SYNProxy(t *testing.T) {
	t.Parallel()
	h := start6(t, func(c *config.Config) { c.Services[1].SYNProxy = config.SYNProxyOn })
	const cport, cisn = 50002, 42
	syn := client6Seg(cport, nat.TCPFlagSYN, cisn, 0)
	syn.opts = synOptions(900, 0)
	h.c0.inject(t, syn.frame(t))
	sa := decode6(t, h.c0.next(t))
	if !sa.tcp.SYN || !sa.tcp.ACK || sa.tcp.Ack != cisn+1 {
		t.Fatalf("cookie SYN-ACK: %v", sa.pkt)
	}
	if m := mss6(sa.tcp); m != 1440 {
		t.Errorf("cookie SYN-ACK MSS %d, want 1440 (1500 − 60, down to Linux's cookie table)", m)
	}
	h.quiet(t, h.b0)
	cookieTS, _, _ := tsOf6(sa.tcp)
	ack := client6Seg(cport, nat.TCPFlagACK, cisn+1, sa.tcp.Seq+1)
	ack.opts = []layers.TCPOption{{OptionType: layers.TCPOptionKindNop}, {OptionType: layers.TCPOptionKindNop},
		{OptionType: layers.TCPOptionKindTimestamps, OptionData: append(be32(901), be32(cookieTS)...)}}
	h.c0.inject(t, ack.frame(t))
	bs := decode6(t, h.b0.next(t))
	src, dst := bs.tuple()
	if !bs.tcp.SYN || bs.tcp.ACK || bs.tcp.Seq != cisn || src.Addr() != snat6 || dst != be6AP {
		t.Errorf("backend SYN %v -> %v seq %d: %v", src, dst, bs.tcp.Seq, bs.pkt)
	}
	if got := metric(t, h.b, "tslb_synproxy_cookies_total", "service", "web6", "result", "valid"); got != 1 {
		t.Errorf("valid cookies %v, want 1", got)
	}
}

func TestEUI64LinkLocal(t *testing.T) {
	// The kernel's address for 02:00:5e:12:04:11: fe80::ff:fe12:411 ... with
	// the universal/local bit flipped: 02 -> 00.
	got := eui64LinkLocal(nat.MAC{0x02, 0x00, 0x5e, 0x12, 0x04, 0x11}).Addr()
	if want := netip.MustParseAddr("fe80::5eff:fe12:411"); got != want {
		t.Errorf("eui64LinkLocal = %v, want %v", got, want)
	}
}
