package test

import (
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"tslb/config"
	"tslb/test/harness"
	"tslb/test/lab"
)

// crafted describes one hand-made TCP segment (Ethernet, optionally an
// 802.1Q tag, IPv4, TCP with an MSS option), built with gopacket.
type crafted struct {
	srcMAC, dstMAC net.HardwareAddr
	src, dst       netip.Addr
	sport, dport   uint16
	seq, ack       uint32
	flags          string // letters of S, A, F, R
	vlan           uint16 // 802.1Q tag with this VLAN id (0: none)
	ipOpts         []byte // raw IPv4 options, a multiple of 4 bytes
	badIPCsum      bool
	badTCPCsum     bool
}

// frame serializes c with correct lengths and checksums, then breaks
// what c asks to break.
func (c crafted) frame() []byte {
	eth := &layers.Ethernet{SrcMAC: c.srcMAC, DstMAC: c.dstMAC, EthernetType: layers.EthernetTypeIPv4}
	ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolTCP, Flags: layers.IPv4DontFragment, Id: 0x1234,
		SrcIP: net.IP(c.src.AsSlice()), DstIP: net.IP(c.dst.AsSlice())}
	tcp := &layers.TCP{SrcPort: layers.TCPPort(c.sport), DstPort: layers.TCPPort(c.dport), Seq: c.seq, Ack: c.ack, Window: 64240,
		SYN: strings.Contains(c.flags, "S"), ACK: strings.Contains(c.flags, "A"), FIN: strings.Contains(c.flags, "F"), RST: strings.Contains(c.flags, "R"),
		Options: []layers.TCPOption{{OptionType: layers.TCPOptionKindMSS, OptionLength: 4, OptionData: []byte{0x05, 0xb4}}}}
	tcp.SetNetworkLayerForChecksum(ip)
	ls := []gopacket.SerializableLayer{eth}
	if c.vlan != 0 {
		eth.EthernetType = layers.EthernetTypeDot1Q
		ls = append(ls, &layers.Dot1Q{VLANIdentifier: c.vlan, Type: layers.EthernetTypeIPv4})
	}
	ls = append(ls, ip, tcp)
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{ComputeChecksums: true, FixLengths: true}, ls...); err != nil {
		panic(err)
	}
	b := buf.Bytes()
	off := 14
	if c.vlan != 0 {
		off += 4
	}
	if len(c.ipOpts) > 0 {
		// Inserted by hand: gopacket would fix (or refuse) malformed
		// option lengths. The TCP checksum does not cover them.
		b = append(b[:off+20:off+20], append(append([]byte(nil), c.ipOpts...), b[off+20:]...)...)
		b[off] = 0x40 | byte((20+len(c.ipOpts))/4)
		binary.BigEndian.PutUint16(b[off+2:], binary.BigEndian.Uint16(b[off+2:])+uint16(len(c.ipOpts)))
		binary.BigEndian.PutUint16(b[off+10:], 0)
		binary.BigEndian.PutUint16(b[off+10:], lab.Checksum(b[off:off+20+len(c.ipOpts)], 0))
	}
	iph := b[off : off+int(b[off]&0x0f)*4]
	if c.badIPCsum {
		iph[10] ^= 0x5a
	}
	if c.badTCPCsum {
		b[off+len(iph)+16] ^= 0x5a
	}
	return b
}

// arpFrame is an ARP packet (op 1 request, 2 reply) in an Ethernet frame.
func arpFrame(dstMAC, srcMAC net.HardwareAddr, op uint16, senderMAC net.HardwareAddr, senderIP netip.Addr, targetMAC net.HardwareAddr, targetIP netip.Addr) []byte {
	eth := &layers.Ethernet{SrcMAC: srcMAC, DstMAC: dstMAC, EthernetType: layers.EthernetTypeARP}
	a := &layers.ARP{AddrType: layers.LinkTypeEthernet, Protocol: layers.EthernetTypeIPv4, HwAddressSize: 6, ProtAddressSize: 4,
		Operation: op, SourceHwAddress: senderMAC, SourceProtAddress: senderIP.AsSlice(), DstHwAddress: targetMAC, DstProtAddress: targetIP.AsSlice()}
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true}, eth, a); err != nil {
		panic(err)
	}
	return buf.Bytes()
}

// dropDeltas returns the tslb_drops_total reasons that moved between two
// scrapes.
func dropDeltas(before, after harness.Samples) map[string]float64 {
	out := map[string]float64{}
	for k, v := range after {
		if strings.HasPrefix(k, "tslb_drops_total{") {
			if d := v - before[k]; d != 0 {
				r := strings.TrimSuffix(strings.TrimPrefix(k, `tslb_drops_total{reason="`), `"}`)
				out[r] = d
			}
		}
	}
	return out
}

func fmtDeltas(m map[string]float64) string {
	var ks []string
	for k, v := range m {
		ks = append(ks, fmt.Sprintf("%s=%v", k, v))
	}
	sort.Strings(ks)
	return "{" + strings.Join(ks, " ") + "}"
}

// macOf returns the hardware address of ifname in ns.
func macOf(t testing.TB, ns *lab.NS, ifname string) net.HardwareAddr {
	t.Helper()
	l, err := ns.Link(ifname)
	if err != nil {
		t.Fatal(err)
	}
	return l.Attrs().HardwareAddr
}

// TestEdgeCraftedFrames sends every kind of SYN (and ACK and ARP) that
// lb/edge.go and the datapath refuse, hand-built with gopacket, as raw
// frames from a client namespace: each must reach tslb and be dropped
// under its own reason (the reason's counter moves by exactly the number
// sent, no other reason moves, no flow is made) and none may reach a
// backend (a capture of everything toward the backends' port). A good
// crafted SYN at the end must reach a backend: the control that the
// path and the capture work.
func TestEdgeCraftedFrames(t *testing.T) {
	// web (80): SYN proxy off, so a SYN let through would go straight to
	// a backend; web-81: SYN proxy on, for the forged cookie.
	l, _, tl := deploy(t, 2, 2, lab.ServerConfig{Port: 8080}, harness.Options{
		ExtraPorts: []lab.PortMap{{VIPPort: 81, BackendPort: 8080}},
		Edit: func(c *config.Config) {
			c.Services[0].SYNProxy = config.SYNProxyOff
			c.Services[1].SYNProxy = config.SYNProxyOn
		}})
	if nf, err := l.BridgeNetfilter(); err != nil {
		t.Fatal(err)
	} else if len(nf) > 0 && nf["net.bridge.bridge-nf-call-iptables"] != "0" {
		t.Fatalf("br_netfilter would filter the lab's bridges: %v", nf)
	}
	c1 := l.Clients[0]
	tx, err := c1.RawSender("eth0")
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Close()
	lbMAC := macOf(t, l.LB, l.LBClientIf)
	myMAC := tx.MAC()
	ctx := context.Background()

	// A cookie must have been sent recently for tslb to check ACKs
	// against cookies at all: one real connection through web-81.
	if res := lab.Requests(ctx, l.Clients[:1], fmt.Sprintf("http://%s:81/", l.VIP), 2, 1, 3*time.Second, 10*time.Second, false); res.Errors != 0 {
		t.Fatalf("request through the SYN proxy: %v", res.FirstErrors)
	}

	time.Sleep(500 * time.Millisecond) // that connection's close handshake ends
	var caps []*lab.Capture
	for _, b := range l.Backends {
		c, err := b.CaptureFiltered("eth0", 10000, lab.TCPFlagsFilter(0, 0, 8080))
		if err != nil {
			t.Fatal(err)
		}
		caps = append(caps, c)
	}
	spoof := netip.MustParseAddr("198.18.0.201") // on the client link, no host owns it
	syn := func(src netip.Addr, sport, dport uint16) crafted {
		return crafted{srcMAC: myMAC, dstMAC: lbMAC, src: src, dst: l.VIP, sport: sport, dport: dport, seq: 0x10203040, flags: "S"}
	}
	with := func(c crafted, f func(*crafted)) crafted { f(&c); return c }
	const k = 3 // frames per case
	type tc struct {
		name, reason string
		frame        func(i int) []byte
	}
	cases := []tc{
		{"bad IPv4 checksum", "bad_ip_checksum", func(i int) []byte {
			return with(syn(spoof, uint16(41000+i), 80), func(c *crafted) { c.badIPCsum = true }).frame()
		}},
		{"bad TCP checksum", "bad_tcp_checksum", func(i int) []byte {
			return with(syn(spoof, uint16(41010+i), 80), func(c *crafted) { c.badTCPCsum = true }).frame()
		}},
		{"SYN+FIN", "bad_tcp_flags", func(i int) []byte {
			return with(syn(spoof, uint16(41020+i), 80), func(c *crafted) { c.flags = "SF" }).frame()
		}},
		{"SYN+RST", "bad_tcp_flags", func(i int) []byte {
			return with(syn(spoof, uint16(41030+i), 80), func(c *crafted) { c.flags = "SR" }).frame()
		}},
		{"source port 0", "port_zero", func(i int) []byte { return syn(spoof, 0, 80).frame() }},
		{"802.1Q-tagged SYN", "vlan_tagged", func(i int) []byte {
			return with(syn(spoof, uint16(41040+i), 80), func(c *crafted) { c.vlan = 100 }).frame()
		}},
		{"zero-length IP option", "bad_ip_options", func(i int) []byte {
			return with(syn(spoof, uint16(41050+i), 80), func(c *crafted) { c.ipOpts = []byte{0x44, 0, 0, 0} }).frame()
		}},
		{"loose source route", "ip_source_route", func(i int) []byte {
			return with(syn(spoof, uint16(41060+i), 80), func(c *crafted) { c.ipOpts = []byte{0x83, 7, 4, 198, 18, 0, 11, 0} }).frame()
		}},
		{"strict source route", "ip_source_route", func(i int) []byte {
			return with(syn(spoof, uint16(41070+i), 80), func(c *crafted) { c.ipOpts = []byte{0x89, 7, 4, 198, 18, 0, 11, 0} }).frame()
		}},
		{"source = VIP", "source_owned", func(i int) []byte { return syn(l.VIP, uint16(41080+i), 80).frame() }},
		{"source = SNAT address", "source_owned", func(i int) []byte { return syn(l.SNAT, uint16(41090+i), 80).frame() }},
		{"source = a backend, on the client link", "source_wrong_link", func(i int) []byte {
			return syn(l.Backends[0].Addr, uint16(41100+i), 80).frame()
		}},
		{"source in the backend subnet, on the client link", "source_wrong_link", func(i int) []byte {
			return syn(netip.MustParseAddr("198.18.1.77"), uint16(41110+i), 80).frame()
		}},
		{"source 0.0.0.7", "source_martian", func(i int) []byte { return syn(netip.MustParseAddr("0.0.0.7"), uint16(41120+i), 80).frame() }},
		{"source 127.0.0.1", "source_martian", func(i int) []byte { return syn(netip.MustParseAddr("127.0.0.1"), uint16(41130+i), 80).frame() }},
		{"source 224.0.0.5", "source_martian", func(i int) []byte { return syn(netip.MustParseAddr("224.0.0.5"), uint16(41140+i), 80).frame() }},
		{"source 240.0.0.1", "source_martian", func(i int) []byte { return syn(netip.MustParseAddr("240.0.0.1"), uint16(41150+i), 80).frame() }},
		{"source 255.255.255.255", "source_martian", func(i int) []byte {
			return syn(netip.MustParseAddr("255.255.255.255"), uint16(41160+i), 80).frame()
		}},
		{"ACK with a forged cookie (SYN proxy on)", "syncookie_invalid", func(i int) []byte {
			return with(syn(spoof, uint16(41170+i), 81), func(c *crafted) { c.flags, c.seq, c.ack = "A", 0x01020304, 0x0badc0de+uint32(i) }).frame()
		}},
		// Destination port 0 has no service: dropped before the edge
		// checks as no_service (port_zero's "to port 0" cannot happen).
		{"destination port 0", "no_service", func(i int) []byte { return syn(spoof, uint16(41180+i), 0).frame() }},
	}
	fakeMAC := net.HardwareAddr{0x02, 0xde, 0xad, 0xbe, 0xef, 0x01}
	cases = append(cases,
		tc{"forged ARP reply claiming the VIP", "arp_spoof", func(i int) []byte {
			return arpFrame(lbMAC, myMAC, 2, fakeMAC, l.VIP, lbMAC, c1.Addr)
		}},
		tc{"forged ARP reply claiming the SNAT address", "arp_spoof", func(i int) []byte {
			return arpFrame(lbMAC, myMAC, 2, fakeMAC, l.SNAT, lbMAC, c1.Addr)
		}},
	)
	prev := metrics(t, tl)
	for _, c := range cases {
		frames := make([][]byte, k)
		for i := range frames {
			frames[i] = c.frame(i)
		}
		if n, err := tx.SendBatch(frames); err != nil || n != k {
			t.Fatalf("%s: sent %d of %d: %v", c.name, n, k, err)
		}
		time.Sleep(150 * time.Millisecond)
		m := metrics(t, tl)
		d := dropDeltas(prev, m)
		got := d[c.reason]
		delete(d, c.reason)
		// Frames for addresses that are not tslb's (lab chatter, never
		// the crafted ones: they are all for the VIP) are not evidence.
		delete(d, "not_ours")
		delete(d, "arp_not_ours")
		created := m.Sum("tslb_flows_created_total") - prev.Sum("tslb_flows_created_total")
		t.Logf("%-50s -> %s +%v, other drops %s, flows created +%v", c.name, c.reason, got, fmtDeltas(d), created)
		if got != k {
			t.Errorf("%s: tslb_drops_total{reason=%q} moved by %v, want exactly %d (other drops %s)", c.name, c.reason, got, k, fmtDeltas(d))
		}
		if len(d) != 0 {
			t.Errorf("%s: other drop reasons moved: %s", c.name, fmtDeltas(d))
		}
		if created != 0 {
			t.Errorf("%s: %v flows created", c.name, created)
		}
		prev = m
	}
	if got := prev.Sum("tslb_synproxy_cookies_total", "result=invalid"); got != k {
		t.Errorf("tslb_synproxy_cookies_total{result=invalid} = %v, want %d", got, k)
	}
	time.Sleep(100 * time.Millisecond)
	leaked := 0
	for i, c := range caps {
		fs := c.Stop()
		for _, f := range fs {
			ip, tcp, _ := lab.DecodeTCP(f)
			t.Errorf("backend %d received %v:%d -> %v:%d flags S%v A%v F%v R%v", i+1, ip.SrcIP, tcp.SrcPort, ip.DstIP, tcp.DstPort, tcp.SYN, tcp.ACK, tcp.FIN, tcp.RST)
		}
		leaked += len(fs)
	}
	if leaked != 0 {
		t.Errorf("%d crafted segments reached a backend", leaked)
	}

	// The forged ARP replies were not learned: a client's next frame for
	// the VIP still goes to tslb's MAC and is answered.
	cc, err := c1.Capture("eth0", 2000)
	if err != nil {
		t.Fatal(err)
	}
	if res := lab.Requests(ctx, l.Clients[:1], fmt.Sprintf("http://%s/", l.VIP), 3, 1, 3*time.Second, 10*time.Second, false); res.Errors != 0 {
		t.Errorf("requests after the forged ARP replies: %v", res.FirstErrors)
	}
	toVIP, toTSLB := 0, 0
	for _, f := range cc.Stop() {
		if !f.Outgoing {
			continue
		}
		if ip, _, ok := lab.DecodeTCP(f); ok && netip.AddrFrom4([4]byte(ip.DstIP.To4())) == l.VIP {
			toVIP++
			if net.HardwareAddr(f.Data[0:6]).String() == lbMAC.String() {
				toTSLB++
			}
		}
	}
	if toVIP == 0 || toTSLB != toVIP {
		t.Errorf("client frames to the VIP: %d, of which %d to tslb's MAC %v", toVIP, toTSLB, lbMAC)
	}

	// The control: the same crafted SYN, well formed, is forwarded.
	bc, err := l.Backends[0].CaptureFiltered("eth0", 100, lab.TCPFlagsFilter(0x12, 0x02, 8080))
	if err != nil {
		t.Fatal(err)
	}
	bc2, err := l.Backends[1].CaptureFiltered("eth0", 100, lab.TCPFlagsFilter(0x12, 0x02, 8080))
	if err != nil {
		t.Fatal(err)
	}
	before := metrics(t, tl)
	if err := tx.Send(syn(spoof, 41999, 80).frame()); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	m := metrics(t, tl)
	got := len(bc.Stop()) + len(bc2.Stop())
	created := m.Sum("tslb_flows_created_total", "service=web") - before.Sum("tslb_flows_created_total", "service=web")
	t.Logf("control: a well-formed crafted SYN made %v flow(s), %d SYN(s) at the backends, drops %s", created, got, fmtDeltas(dropDeltas(before, m)))
	if created != 1 || got != 1 {
		t.Errorf("control SYN: %v flows created, %d SYNs at the backends; want 1 and 1", created, got)
	}
}
