package lab

import (
	"context"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

// TestSYNGenFrames: every flood frame decodes with gopacket as a SYN to
// the destination from an address of the prefix (never excluded, never
// the network or broadcast address), and its checksums equal what
// gopacket computes.
func TestSYNGenFrames(t *testing.T) {
	dstMAC := net.HardwareAddr{0x02, 0, 0, 0, 0, 1}
	cfg := FloodConfig{Sources: netip.MustParsePrefix("198.18.0.128/29"), Exclude: []netip.Addr{netip.MustParseAddr("198.18.0.130")},
		Dst: netip.MustParseAddrPort("198.18.0.100:80"), DstMAC: dstMAC, Seed: 1}
	g := newSYNGen(cfg, net.HardwareAddr{0x02, 0, 0, 0, 0, 2})
	seen := map[netip.Addr]int{}
	f := make([]byte, SynFrameLen)
	for i := 0; i < 2000; i++ {
		seq := g.fill(f)
		p := gopacket.NewPacket(f, layers.LayerTypeEthernet, gopacket.Default)
		ip, _ := p.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
		tcp, _ := p.Layer(layers.LayerTypeTCP).(*layers.TCP)
		if ip == nil || tcp == nil {
			t.Fatalf("frame %d does not decode: %v", i, p)
		}
		src, _ := netip.AddrFromSlice(ip.SrcIP.To4())
		seen[src]++
		if !cfg.Sources.Contains(src) || src == cfg.Exclude[0] || src == netip.MustParseAddr("198.18.0.128") || src == netip.MustParseAddr("198.18.0.135") {
			t.Fatalf("frame %d: source %v", i, src)
		}
		if !tcp.SYN || tcp.ACK || tcp.RST || tcp.FIN || tcp.Seq != seq || tcp.DstPort != 80 || tcp.SrcPort < 1024 {
			t.Fatalf("frame %d: %v", i, tcp)
		}
		wantIP, wantTCP := ip.Checksum, tcp.Checksum
		buf := gopacket.NewSerializeBuffer()
		tcp.SetNetworkLayerForChecksum(ip)
		if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{ComputeChecksums: true},
			p.Layer(layers.LayerTypeEthernet).(*layers.Ethernet), ip, tcp); err != nil {
			t.Fatal(err)
		}
		if ip.Checksum != wantIP || tcp.Checksum != wantTCP {
			t.Fatalf("frame %d: checksums ip %#04x tcp %#04x, gopacket computes %#04x %#04x", i, wantIP, wantTCP, ip.Checksum, tcp.Checksum)
		}
	}
	if len(seen) != 5 {
		t.Errorf("sources used: %v, want the 5 usable addresses", seen)
	}
}

// TestSYNFloodRate: the flood leaves a client namespace at its rate, every
// frame reaches the far side of the bridge (a SYN-only capture on the lb
// namespace's client link), and its bounds hold.
func TestSYNFloodRate(t *testing.T) {
	l := NewT(t, Config{Clients: 1, Backends: 1})
	lbIf, err := l.LB.Link(l.LBClientIf)
	if err != nil {
		t.Fatal(err)
	}
	c, err := l.LB.CaptureFiltered(l.LBClientIf, 100000, TCPFlagsFilter(0x12, 0x02, 80))
	if err != nil {
		t.Fatal(err)
	}
	const rate, d = 20000, 2 * time.Second
	res, err := SYNFlood(context.Background(), l.Clients[0], FloodConfig{Rate: rate, Duration: d,
		Sources: netip.MustParsePrefix("198.18.0.128/25"), Dst: netip.AddrPortFrom(l.VIP, 80), DstMAC: lbIf.Attrs().HardwareAddr, Record: true})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	frames := c.Stop()
	t.Logf("sent %d SYNs in %v (%.0f/s, %d sendmmsg calls), %d captured on the far side, %d unique ISNs",
		res.Sent, res.Elapsed, res.Rate(), res.Calls, len(frames), len(res.Seqs))
	if res.Sent < rate*9/10*2 || res.Sent > rate*2+1 {
		t.Errorf("sent %d, want about %d", res.Sent, rate*2)
	}
	if r := res.Rate(); r < rate*0.95 || r > rate*1.05 {
		t.Errorf("rate %.0f/s, want %d ±5%%", r, rate)
	}
	if len(frames) != res.Sent || c.Dropped() != 0 {
		t.Errorf("captured %d (+%d past the limit) of %d sent", len(frames), c.Dropped(), res.Sent)
	}
	// Count and duration bound it whatever the rate.
	res, err = SYNFlood(context.Background(), l.Clients[0], FloodConfig{Count: 1000, Duration: time.Second,
		Sources: netip.MustParsePrefix("198.18.0.128/25"), Dst: netip.AddrPortFrom(l.VIP, 80), DstMAC: lbIf.Attrs().HardwareAddr})
	if err != nil || res.Sent != 1000 {
		t.Errorf("count-bounded flood: sent %d, err %v; want 1000", res.Sent, err)
	}
	t.Logf("unpaced: %d SYNs in %v (%.0f/s)", res.Sent, res.Elapsed, res.Rate())
	if _, err := SYNFlood(context.Background(), l.Clients[0], FloodConfig{Rate: 10, Duration: time.Second,
		Sources: netip.MustParsePrefix("10.0.0.0/24"), Dst: netip.AddrPortFrom(l.VIP, 80), DstMAC: lbIf.Attrs().HardwareAddr}); err == nil {
		t.Errorf("a flood from outside 198.18.0.0/15 was accepted")
	}
}

// TestBridgeNetfilterOff: if the host has br_netfilter loaded, the switch
// namespace's bridges do not call iptables (which would drop malformed
// IPv4 before the balancer sees it).
func TestBridgeNetfilterOff(t *testing.T) {
	l := NewT(t, Config{Clients: 1, Backends: 1})
	got, err := l.BridgeNetfilter()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("br_netfilter sysctls in the switch namespace: %v (empty: module not loaded)", got)
	for k, v := range got {
		if v != "0" {
			t.Errorf("%s = %s in %s, want 0", k, v, l.Switch.Name)
		}
	}
}
