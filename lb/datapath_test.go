package lb

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"tslb/config"
	"tslb/lb/link"
	"tslb/nat"
)

// The tests below drive the real datapath (Balancer.Run with its workers,
// housekeeping, neighbour table and metrics) through two fake links, c0
// (clients) and b0 (backends). Input frames are built with gopacket;
// outputs are decoded with gopacket and their checksums verified twice, with
// a test-local RFC 1071 sum and with gopacket's VerifyChecksums.

var (
	vipAddr    = netip.MustParseAddr("198.18.0.100")
	snatAddr   = netip.MustParseAddr("198.18.1.100")
	clientAddr = netip.MustParseAddr("198.18.0.1")
	be1Addr    = netip.MustParseAddr("198.18.1.11")
	be2Addr    = netip.MustParseAddr("198.18.1.12")
	// Barrier senders (see harness.sync).
	syncC0Addr = netip.MustParseAddr("198.18.0.250")
	syncB0Addr = netip.MustParseAddr("198.18.1.250")

	vipAP = netip.AddrPortFrom(vipAddr, 80)
	be1AP = netip.AddrPortFrom(be1Addr, 8080)
	be2AP = netip.AddrPortFrom(be2Addr, 8080)

	c0MAC     = nat.MAC{0x02, 0, 0, 0, 0, 0xc0}
	b0MAC     = nat.MAC{0x02, 0, 0, 0, 0, 0xb0}
	clientMAC = nat.MAC{0x02, 0, 0, 0, 1, 1}
	be1MAC    = nat.MAC{0x02, 0, 0, 0, 2, 11}
	be2MAC    = nat.MAC{0x02, 0, 0, 0, 2, 12}
	bcastMAC  = nat.MAC{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
)

func backendMAC(t testing.TB, a netip.Addr) nat.MAC {
	t.Helper()
	switch a {
	case be1Addr:
		return be1MAC
	case be2Addr:
		return be2MAC
	}
	t.Fatalf("%s is not a test backend", a)
	return nat.MAC{}
}

// testConfig is the configuration of the tests (config/example.yaml's
// addressing and timeouts, two backends of weight 1, SNAT ports
// 20000-20003), changed by mods and validated by start.
func testConfig(mods ...func(*config.Config)) *config.Config {
	cfg := &config.Config{
		Links: []config.Link{
			{Name: "c0", Interface: "c0", Subnets: []netip.Prefix{netip.MustParsePrefix("198.18.0.0/24")}},
			{Name: "b0", Interface: "b0", Subnets: []netip.Prefix{netip.MustParsePrefix("198.18.1.0/24")}},
		},
		Services: []config.Service{{
			Name: "web", VIP: vipAddr, Port: 80, Protocol: "tcp", Scheduler: "wrr",
			Timestamps: config.TSPassthrough, TimeWait: 60 * time.Second,
			Backends: []config.Backend{{Address: be1AP, Weight: 1}, {Address: be2AP, Weight: 1}},
		}},
		SNAT: config.SNAT{Addresses: []netip.Addr{snatAddr}, PortMin: 20000, PortMax: 20003},
		Flows: config.Flows{Max: 1024, Timeouts: config.Timeouts{
			Syn: 30 * time.Second, Established: time.Hour, Fin: 2 * time.Minute,
			TimeWait: 60 * time.Second, Closed: 10 * time.Second,
		}},
		Log:      config.Log{Level: "info"},
		Datapath: config.Datapath{Workers: 1},
		// Passive health re-dispatches SYNs the backend does not answer
		// within 500 ms: the tests below answer when they like, and
		// TestPassiveHealth turns it on.
		Health: config.Health{Passive: config.PassiveHealth{Off: true}},
	}
	for _, m := range mods {
		m(cfg)
	}
	return cfg
}

// harness is a running Balancer on two fake links.
type harness struct {
	b      *Balancer
	c0, b0 *fakeLink
	seq    int // barrier counter
	// announced6 counts the unsolicited NAs start read per link.
	announced6 map[string]int
	stop       func() // stops Run (and checks it returned nil); idempotent
}

// start validates cfg, builds a Balancer on fake links and runs it until
// the test ends; cleanup checks that Run returns nil and closed the links.
func start(t testing.TB, cfg *config.Config) *harness {
	t.Helper()
	return startWith(t, cfg, Options{})
}

// startWith is start with opts (Open, Seed and Logger are the harness's).
func startWith(t testing.TB, cfg *config.Config, opts Options) *harness {
	t.Helper()
	cfg.ApplyDefaults()
	if errs := cfg.Validate(); len(errs) > 0 {
		t.Fatalf("test config does not validate: %v", errs)
	}
	h := &harness{}
	infos := map[string]link.Info{
		"c0": {Name: "c0", MAC: c0MAC, MTU: 1500, Index: 2},
		"b0": {Name: "b0", MAC: b0MAC, MTU: 1500, Index: 3},
	}
	open := func(name string, lc link.Config) ([]link.Queue, link.Info, error) {
		info, ok := infos[name]
		if !ok {
			return nil, link.Info{}, fmt.Errorf("fake: no link %q", name)
		}
		l, err := newFakeLink(name, lc.Queues, lc.Steering)
		if err != nil {
			return nil, link.Info{}, err
		}
		if name == "c0" {
			h.c0 = l
		} else {
			h.b0 = l
		}
		return l.queues(), info, nil
	}
	opts.Open, opts.Seed, opts.Logger = open, 1, slog.New(slog.DiscardHandler)
	b, err := New(cfg, opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	h.b = b
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx) }()
	var once sync.Once
	h.stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run returned %v, want nil", err)
				}
			case <-time.After(5 * time.Second):
				t.Errorf("Run did not return within 5s of cancel")
			}
			for _, l := range []*fakeLink{h.c0, h.b0} {
				if l == nil {
					continue // a one-link configuration
				}
				if !l.closed() {
					t.Errorf("link %s not closed after Run", l.name)
				}
				l.Close()
			}
		})
	}
	t.Cleanup(h.stop)
	// Run announces every owned address with a gratuitous ARP.
	if h.b0 == nil { // one link holds both
		seen := map[netip.Addr]bool{}
		for range 2 {
			o := decode(t, h.c0.next(t))
			if o.arp == nil {
				t.Fatalf("c0: frame is not ARP: % x", o.raw)
			}
			seen[netip.AddrFrom4([4]byte(o.arp.SourceProtAddress))] = true
		}
		if !seen[vipAddr] || !seen[snatAddr] {
			t.Fatalf("gratuitous ARPs on c0 for %v, want %v and %v", seen, vipAddr, snatAddr)
		}
		return h
	}
	h.expectGratuitous(t, h.c0, c0MAC, vipAddr)
	h.expectGratuitous(t, h.b0, b0MAC, snatAddr)
	return h
}

func (h *harness) other(l *fakeLink) *fakeLink {
	if l == h.c0 {
		return h.b0
	}
	return h.c0
}

// sync is a barrier: it sends an ARP request for an owned address on l and
// returns every frame the datapath wrote on l before the reply. Frames of
// one link are handled in order by one worker, and writes are synchronous,
// so everything l's worker wrote for earlier frames, on either link, has
// been written by then; the frames that worker wrote on the other link are
// returned as well (read without waiting).
func (h *harness) sync(t testing.TB, l *fakeLink) (same, other [][]byte) {
	t.Helper()
	from, target := syncC0Addr, vipAddr
	if l == h.b0 {
		from, target = syncB0Addr, snatAddr
	}
	// One ARP request per queue (worker): each worker answers after the
	// frames queued before it.
	want := map[nat.MAC]bool{}
	for i := range l.qs {
		if h.b.workers[i].dead.Load() {
			continue // a stopped worker answers nothing
		}
		h.seq++
		mac := nat.MAC{0x02, 0xee, 0, 0, byte(h.seq >> 8), byte(h.seq)}
		want[mac] = true
		l.injectTo(t, i, arpFrame(t, nat.ARPRequest, mac, bcastMAC, mac, from, nat.MAC{}, target))
	}
	for len(want) > 0 {
		f := l.next(t)
		replied := false
		for mac := range want {
			if isARPReplyTo(f, mac) {
				delete(want, mac)
				replied = true
				break
			}
		}
		if !replied {
			same = append(same, f)
		}
	}
	for {
		select {
		case f := <-h.other(l).out:
			other = append(other, f)
		default:
			return same, other
		}
	}
}

// quiet fails the test if anything was written after the frames injected
// on l so far.
func (h *harness) quiet(t testing.TB, l *fakeLink) {
	t.Helper()
	same, other := h.sync(t, l)
	for _, f := range same {
		t.Errorf("unexpected frame on %s: % x", l.name, f)
	}
	for _, f := range other {
		t.Errorf("unexpected frame on %s: % x", h.other(l).name, f)
	}
}

func isARPReplyTo(f []byte, mac nat.MAC) bool {
	const o = nat.VirtioNetHdrLen + nat.EthernetHeaderLen
	return len(f) >= o+nat.ARPLen &&
		binary.BigEndian.Uint16(f[nat.VirtioNetHdrLen+12:]) == nat.EtherTypeARP &&
		binary.BigEndian.Uint16(f[o+6:]) == nat.ARPReply &&
		bytes.Equal(f[o+18:o+24], mac[:])
}

func (h *harness) expectGratuitous(t testing.TB, l *fakeLink, mac nat.MAC, a netip.Addr) {
	t.Helper()
	f := l.next(t)
	for isUnsolicitedNA(f) { // a dual-stack configuration's IPv6 announcement
		if h.announced6 == nil {
			h.announced6 = map[string]int{}
		}
		h.announced6[l.name]++
		f = l.next(t)
	}
	o := decode(t, f)
	if o.arp == nil {
		t.Fatalf("%s: first frame is not ARP: % x", l.name, o.raw)
	}
	checkARP(t, o, arpWant{op: nat.ARPRequest, ethSrc: mac, ethDst: bcastMAC, sMAC: mac, sIP: a, tMAC: nat.MAC{}, tIP: a})
}

// isUnsolicitedNA reports an ICMPv6 Neighbor Advertisement without the
// solicited flag (what tslb sends for its IPv6 addresses at start).
func isUnsolicitedNA(f []byte) bool {
	pkt := gopacket.NewPacket(f[nat.VirtioNetHdrLen:], layers.LayerTypeEthernet, gopacket.Default)
	na, _ := pkt.Layer(layers.LayerTypeICMPv6NeighborAdvertisement).(*layers.ICMPv6NeighborAdvertisement)
	return na != nil && !na.Solicited()
}

// ask sends an ARP request from (mac, from) for target on l and returns
// the decoded reply; the sender is learnt as a neighbour.
func (h *harness) ask(t testing.TB, l *fakeLink, mac nat.MAC, from, target netip.Addr) *out {
	t.Helper()
	l.inject(t, arpFrame(t, nat.ARPRequest, mac, bcastMAC, mac, from, nat.MAC{}, target))
	return decode(t, l.next(t))
}

// prime makes tslb learn the client's and both backends' MACs.
func (h *harness) prime(t testing.TB) {
	t.Helper()
	h.ask(t, h.c0, clientMAC, clientAddr, vipAddr)
	h.ask(t, h.b0, be1MAC, be1Addr, snatAddr)
	h.ask(t, h.b0, be2MAC, be2Addr, snatAddr)
}

// --- frames ---------------------------------------------------------------

func hw(m nat.MAC) net.HardwareAddr { return net.HardwareAddr(m[:]) }

func ip4(a netip.Addr) net.IP { b := a.As4(); return net.IP(b[:]) }

func a4(a netip.Addr) nat.Addr4 { return nat.Addr4From(a) }

func serialize(t testing.TB, vh nat.VirtioNetHdr, ls ...gopacket.SerializableLayer) []byte {
	t.Helper()
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ls...); err != nil {
		t.Fatalf("serialize: %v", err)
	}
	f := make([]byte, nat.VirtioNetHdrLen+len(buf.Bytes()))
	vh.Encode(f)
	copy(f[nat.VirtioNetHdrLen:], buf.Bytes())
	return f
}

func arpFrame(t testing.TB, op uint16, ethSrc, ethDst, sMAC nat.MAC, sIP netip.Addr, tMAC nat.MAC, tIP netip.Addr) []byte {
	t.Helper()
	eth := &layers.Ethernet{SrcMAC: hw(ethSrc), DstMAC: hw(ethDst), EthernetType: layers.EthernetTypeARP}
	arp := &layers.ARP{AddrType: layers.LinkTypeEthernet, Protocol: layers.EthernetTypeIPv4,
		HwAddressSize: 6, ProtAddressSize: 4, Operation: op,
		SourceHwAddress: hw(sMAC), SourceProtAddress: ip4(sIP), DstHwAddress: hw(tMAC), DstProtAddress: ip4(tIP)}
	return serialize(t, nat.VirtioNetHdr{}, eth, arp)
}

// seg describes a TCP segment to inject.
type seg struct {
	vh             nat.VirtioNetHdr
	srcMAC, dstMAC nat.MAC
	src, dst       netip.AddrPort
	ttl            uint8 // 0 means 64
	flags          uint8
	seq, ack       uint32
	win            uint16 // 0 means 64240
	opts           []layers.TCPOption
	payload        []byte
}

func (s seg) layers() (*layers.Ethernet, *layers.IPv4, *layers.TCP) {
	ttl, win := s.ttl, s.win
	if ttl == 0 {
		ttl = 64
	}
	if win == 0 {
		win = 64240
	}
	eth := &layers.Ethernet{SrcMAC: hw(s.srcMAC), DstMAC: hw(s.dstMAC), EthernetType: layers.EthernetTypeIPv4}
	ip := &layers.IPv4{Version: 4, IHL: 5, TTL: ttl, Id: 0x4242, Flags: layers.IPv4DontFragment,
		Protocol: layers.IPProtocolTCP, SrcIP: ip4(s.src.Addr()), DstIP: ip4(s.dst.Addr())}
	tcp := &layers.TCP{SrcPort: layers.TCPPort(s.src.Port()), DstPort: layers.TCPPort(s.dst.Port()),
		Seq: s.seq, Ack: s.ack, Window: win, Options: s.opts,
		FIN: s.flags&nat.TCPFlagFIN != 0, SYN: s.flags&nat.TCPFlagSYN != 0, RST: s.flags&nat.TCPFlagRST != 0,
		PSH: s.flags&nat.TCPFlagPSH != 0, ACK: s.flags&nat.TCPFlagACK != 0}
	tcp.SetNetworkLayerForChecksum(ip)
	return eth, ip, tcp
}

func tcpFrame(t testing.TB, s seg) []byte {
	t.Helper()
	eth, ip, tcp := s.layers()
	return serialize(t, s.vh, eth, ip, tcp, gopacket.Payload(s.payload))
}

func be32(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }

// synOptions is a Linux-like SYN option list: MSS, SACK-permitted, TS,
// NOP, WScale (20 bytes).
func synOptions(tsval, tsecr uint32) []layers.TCPOption {
	return []layers.TCPOption{
		{OptionType: layers.TCPOptionKindMSS, OptionData: []byte{0x05, 0xb4}},
		{OptionType: layers.TCPOptionKindSACKPermitted},
		{OptionType: layers.TCPOptionKindTimestamps, OptionData: append(be32(tsval), be32(tsecr)...)},
		{OptionType: layers.TCPOptionKindNop},
		{OptionType: layers.TCPOptionKindWindowScale, OptionData: []byte{7}},
	}
}

// clientSeg is a segment from the client (cport) to the VIP.
func clientSeg(cport uint16, flags uint8, seq, ack uint32) seg {
	return seg{srcMAC: clientMAC, dstMAC: c0MAC, src: netip.AddrPortFrom(clientAddr, cport), dst: vipAP,
		flags: flags, seq: seq, ack: ack}
}

// backendSeg is a segment from backend be to the SNAT address (sport).
func backendSeg(t testing.TB, be netip.AddrPort, sport uint16, flags uint8, seq, ack uint32) seg {
	return seg{srcMAC: backendMAC(t, be.Addr()), dstMAC: b0MAC, src: be, dst: netip.AddrPortFrom(snatAddr, sport),
		flags: flags, seq: seq, ack: ack}
}

// --- decoding and checks --------------------------------------------------

// out is a frame written by the datapath, decoded with gopacket.
type out struct {
	vh   nat.VirtioNetHdr
	raw  []byte // the Ethernet frame
	pkt  gopacket.Packet
	eth  *layers.Ethernet
	arp  *layers.ARP
	ip   *layers.IPv4
	tcp  *layers.TCP
	icmp *layers.ICMPv4
}

func decode(t testing.TB, f []byte) *out {
	t.Helper()
	if len(f) < nat.VirtioNetHdrLen+nat.EthernetHeaderLen {
		t.Fatalf("written frame too short: % x", f)
	}
	o := &out{raw: slices.Clone(f[nat.VirtioNetHdrLen:])}
	if err := o.vh.Decode(f); err != nil {
		t.Fatal(err)
	}
	o.pkt = gopacket.NewPacket(o.raw, layers.LayerTypeEthernet, gopacket.Default)
	if el := o.pkt.ErrorLayer(); el != nil {
		t.Fatalf("gopacket cannot decode a written frame: %v\n% x", el.Error(), o.raw)
	}
	o.eth, _ = o.pkt.Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
	o.arp, _ = o.pkt.Layer(layers.LayerTypeARP).(*layers.ARP)
	o.ip, _ = o.pkt.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
	o.tcp, _ = o.pkt.Layer(layers.LayerTypeTCP).(*layers.TCP)
	o.icmp, _ = o.pkt.Layer(layers.LayerTypeICMPv4).(*layers.ICMPv4)
	if o.tcp != nil && o.ip != nil {
		// gopacket needs the pseudo header's layer to verify the checksum.
		if err := o.tcp.SetNetworkLayerForChecksum(o.ip); err != nil {
			t.Fatal(err)
		}
	}
	return o
}

// sum16 is an RFC 1071 one's-complement sum of b added to s, folded; kept
// here so that the checks do not depend on package nat.
func sum16(b []byte, s uint32) uint32 {
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	for s>>16 != 0 {
		s = s&0xffff + s>>16
	}
	return s
}

// ipDatagram returns the IPv4 header and the L4 bytes of an Ethernet frame,
// bounded by the IPv4 total length.
func ipDatagram(t testing.TB, raw []byte) (hdr, l4 []byte) {
	t.Helper()
	ip := raw[nat.EthernetHeaderLen:]
	ihl := int(ip[0]&0x0f) * 4
	tl := int(binary.BigEndian.Uint16(ip[2:]))
	if ihl < 20 || tl < ihl || tl > len(ip) {
		t.Fatalf("bad IPv4 header in written frame: % x", raw)
	}
	return ip[:ihl], ip[ihl:tl]
}

func pseudoSum(src, dst []byte, proto uint8, l4len int) uint32 {
	s := sum16(src, 0)
	s = sum16(dst, s)
	return sum16([]byte{0, proto, byte(l4len >> 8), byte(l4len)}, s)
}

// checkCsums verifies the IPv4 header checksum and the TCP or ICMP
// checksum of a written IPv4 frame, independently and with gopacket.
func checkCsums(t testing.TB, o *out) {
	t.Helper()
	hdr, l4 := ipDatagram(t, o.raw)
	if s := sum16(hdr, 0); s != 0xffff {
		t.Errorf("IPv4 header checksum %#04x is wrong (sum %#04x)", binary.BigEndian.Uint16(hdr[10:]), s)
	}
	switch hdr[9] {
	case nat.ProtoTCP:
		if s := sum16(l4, pseudoSum(hdr[12:16], hdr[16:20], nat.ProtoTCP, len(l4))); s != 0xffff {
			t.Errorf("TCP checksum %#04x is wrong (sum %#04x)", binary.BigEndian.Uint16(l4[16:]), s)
		}
	case nat.ProtoICMP:
		if s := sum16(l4, 0); s != 0xffff {
			t.Errorf("ICMP checksum %#04x is wrong (sum %#04x)", binary.BigEndian.Uint16(l4[2:]), s)
		}
	}
	if err, bad := o.pkt.VerifyChecksums(); err != nil || len(bad) > 0 {
		t.Errorf("gopacket VerifyChecksums: %v %+v", err, bad)
	}
}

type arpWant struct {
	op             uint16
	ethSrc, ethDst nat.MAC
	sMAC           nat.MAC
	sIP            netip.Addr
	tMAC           nat.MAC
	tIP            netip.Addr
}

func checkARP(t testing.TB, o *out, w arpWant) {
	t.Helper()
	if o.arp == nil {
		t.Fatalf("not an ARP frame: % x", o.raw)
	}
	a := o.arp
	got := arpWant{op: a.Operation, ethSrc: nat.MAC(o.eth.SrcMAC), ethDst: nat.MAC(o.eth.DstMAC),
		sMAC: nat.MAC(a.SourceHwAddress), sIP: netip.AddrFrom4([4]byte(a.SourceProtAddress)),
		tMAC: nat.MAC(a.DstHwAddress), tIP: netip.AddrFrom4([4]byte(a.DstProtAddress))}
	if got != w {
		t.Errorf("ARP:\n got %+v\nwant %+v", got, w)
	}
	if a.AddrType != layers.LinkTypeEthernet || a.Protocol != layers.EthernetTypeIPv4 || a.HwAddressSize != 6 || a.ProtAddressSize != 4 {
		t.Errorf("ARP is not Ethernet/IPv4: %+v", a)
	}
	if o.vh != (nat.VirtioNetHdr{}) {
		t.Errorf("ARP frame virtio header %+v, want zero", o.vh)
	}
	if len(o.raw) != nat.MinFrameLen {
		t.Errorf("ARP frame is %d bytes, want %d", len(o.raw), nat.MinFrameLen)
	}
}

// tcpWant is what a forwarded TCP frame must look like.
type tcpWant struct {
	ethSrc, ethDst nat.MAC
	src, dst       netip.AddrPort
	ttl            uint8
	flags          uint8
	seq, ack       uint32
}

func tcpFlags(tcp *layers.TCP) uint8 {
	var f uint8
	for _, x := range []struct {
		on  bool
		bit uint8
	}{{tcp.FIN, nat.TCPFlagFIN}, {tcp.SYN, nat.TCPFlagSYN}, {tcp.RST, nat.TCPFlagRST}, {tcp.PSH, nat.TCPFlagPSH},
		{tcp.ACK, nat.TCPFlagACK}, {tcp.URG, nat.TCPFlagURG}, {tcp.ECE, nat.TCPFlagECE}, {tcp.CWR, nat.TCPFlagCWR}} {
		if x.on {
			f |= x.bit
		}
	}
	return f
}

func tcpOf(t testing.TB, o *out) tcpWant {
	t.Helper()
	if o.ip == nil || o.tcp == nil {
		t.Fatalf("not a TCP/IPv4 frame: % x", o.raw)
	}
	return tcpWant{ethSrc: nat.MAC(o.eth.SrcMAC), ethDst: nat.MAC(o.eth.DstMAC),
		src:   netip.AddrPortFrom(netip.AddrFrom4([4]byte(o.ip.SrcIP.To4())), uint16(o.tcp.SrcPort)),
		dst:   netip.AddrPortFrom(netip.AddrFrom4([4]byte(o.ip.DstIP.To4())), uint16(o.tcp.DstPort)),
		ttl:   o.ip.TTL,
		flags: tcpFlags(o.tcp), seq: o.tcp.Seq, ack: o.tcp.Ack}
}

// checkTCP checks a forwarded segment against w and against the frame it
// was made from (in): everything tslb must not touch is unchanged, and
// both checksums are valid (full-checksum frames only).
func checkTCP(t testing.TB, o *out, in []byte, w tcpWant) {
	t.Helper()
	if got := tcpOf(t, o); got != w {
		t.Errorf("forwarded segment:\n got %+v\nwant %+v", got, w)
	}
	checkCsums(t, o)
	checkUntouched(t, o, in)
}

// checkUntouched compares the parts of the IPv4 header and TCP segment
// that forwarding must not change: everything but the addresses, TTL,
// ports and checksums.
func checkUntouched(t testing.TB, o *out, in []byte) {
	t.Helper()
	if len(o.raw) != len(in)-nat.VirtioNetHdrLen {
		t.Errorf("forwarded frame is %d bytes, sent %d", len(o.raw), len(in)-nat.VirtioNetHdrLen)
		return
	}
	ohdr, ol4 := ipDatagram(t, o.raw)
	ihdr, il4 := ipDatagram(t, in[nat.VirtioNetHdrLen:])
	mask := func(b []byte, ranges ...[2]int) []byte {
		b = slices.Clone(b)
		for _, r := range ranges {
			clear(b[r[0]:r[1]])
		}
		return b
	}
	if !bytes.Equal(mask(ohdr, [2]int{8, 9}, [2]int{10, 20}), mask(ihdr, [2]int{8, 9}, [2]int{10, 20})) {
		t.Errorf("IPv4 header changed beyond addresses, TTL and checksum:\n got % x\nsent % x", ohdr, ihdr)
	}
	if !bytes.Equal(mask(ol4, [2]int{0, 4}, [2]int{16, 18}), mask(il4, [2]int{0, 4}, [2]int{16, 18})) {
		t.Errorf("TCP segment changed beyond ports and checksum:\n got % x\nsent % x", ol4, il4)
	}
}

// --- metrics --------------------------------------------------------------

// metric returns the sum of the samples of the named metric whose labels
// include labels (name, value pairs). It fails if the metric is not
// registered.
func metric(t testing.TB, b *Balancer, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := b.Registry().Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		var sum float64
	next:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				found := false
				for _, lp := range m.GetLabel() {
					if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
						found = true
					}
				}
				if !found {
					continue next
				}
			}
			sum += m.GetCounter().GetValue() + m.GetGauge().GetValue() + m.GetUntyped().GetValue()
		}
		return sum
	}
	t.Fatalf("metric %s is not registered", name)
	return 0
}

func drops(t testing.TB, b *Balancer, reason string) float64 {
	t.Helper()
	return metric(t, b, "tslb_drops_total", "reason", reason)
}

// waitFor polls cond every 20 ms until it holds or d has passed.
func waitFor(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// --- flows ----------------------------------------------------------------

// conn is one connection through tslb as the tests see it.
type conn struct {
	cport   uint16
	backend netip.AddrPort
	sport   uint16
	cisn    uint32
	bisn    uint32
	syn     *out // the SYN as forwarded to the backend
	synAck  *out // the SYN-ACK as forwarded to the client
}

func (c *conn) snatAP() netip.AddrPort { return netip.AddrPortFrom(snatAddr, c.sport) }
func (c *conn) clientAP() netip.AddrPort {
	return netip.AddrPortFrom(clientAddr, c.cport)
}

// connect sends a client SYN (neighbours must be primed) and returns the
// mapping tslb chose, after checking the forwarded SYN.
func (h *harness) connect(t testing.TB, cport uint16, isn uint32) *conn {
	t.Helper()
	in := tcpFrame(t, clientSeg(cport, nat.TCPFlagSYN, isn, 0))
	h.c0.inject(t, in)
	o := decode(t, h.b0.next(t))
	got := tcpOf(t, o)
	c := &conn{cport: cport, backend: got.dst, sport: got.src.Port(), cisn: isn, syn: o}
	checkTCP(t, o, in, tcpWant{ethSrc: b0MAC, ethDst: backendMAC(t, c.backend.Addr()),
		src: c.snatAP(), dst: c.backend, ttl: 63, flags: nat.TCPFlagSYN, seq: isn})
	return c
}

// accept answers c's SYN from the backend and checks the SYN-ACK reaching
// the client (whose MAC must be known).
func (h *harness) accept(t testing.TB, c *conn, isn uint32) {
	t.Helper()
	c.bisn = isn
	in := tcpFrame(t, backendSeg(t, c.backend, c.sport, nat.TCPFlagSYN|nat.TCPFlagACK, isn, c.cisn+1))
	h.b0.inject(t, in)
	o := decode(t, h.c0.next(t))
	checkTCP(t, o, in, tcpWant{ethSrc: c0MAC, ethDst: clientMAC, src: vipAP, dst: c.clientAP(), ttl: 63,
		flags: nat.TCPFlagSYN | nat.TCPFlagACK, seq: isn, ack: c.cisn + 1})
	c.synAck = o
}

// establish runs the three-way handshake of a new connection.
func (h *harness) establish(t testing.TB, cport uint16) *conn {
	t.Helper()
	c := h.connect(t, cport, 1000*uint32(cport))
	h.accept(t, c, 7000*uint32(cport))
	h.clientData(t, c, 1, 1, nil)
	return c
}

// clientData sends an ACK (with payload) from the client at the given
// offsets from the ISNs and checks it reaches the backend on c's mapping.
func (h *harness) clientData(t testing.TB, c *conn, seqOff, ackOff uint32, payload []byte) {
	t.Helper()
	s := clientSeg(c.cport, nat.TCPFlagACK|nat.TCPFlagPSH, c.cisn+seqOff, c.bisn+ackOff)
	s.payload = payload
	in := tcpFrame(t, s)
	h.c0.inject(t, in)
	checkTCP(t, decode(t, h.b0.next(t)), in, tcpWant{ethSrc: b0MAC, ethDst: backendMAC(t, c.backend.Addr()),
		src: c.snatAP(), dst: c.backend, ttl: 63, flags: s.flags, seq: s.seq, ack: s.ack})
}

// backendData is clientData from the backend to the client.
func (h *harness) backendData(t testing.TB, c *conn, seqOff, ackOff uint32, payload []byte) {
	t.Helper()
	s := backendSeg(t, c.backend, c.sport, nat.TCPFlagACK|nat.TCPFlagPSH, c.bisn+seqOff, c.cisn+ackOff)
	s.payload = payload
	in := tcpFrame(t, s)
	h.b0.inject(t, in)
	checkTCP(t, decode(t, h.c0.next(t)), in, tcpWant{ethSrc: c0MAC, ethDst: clientMAC,
		src: vipAP, dst: c.clientAP(), ttl: 63, flags: s.flags, seq: s.seq, ack: s.ack})
}

// ipOptSYN is a client SYN whose IPv4 header carries opts (a multiple of 4
// bytes), checksums valid.
func ipOptSYN(t testing.TB, opts []byte) []byte {
	t.Helper()
	eth := &layers.Ethernet{SrcMAC: hw(clientMAC), DstMAC: hw(c0MAC), EthernetType: layers.EthernetTypeIPv4}
	ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolTCP, SrcIP: ip4(clientAddr), DstIP: ip4(vipAddr),
		Options: []layers.IPv4Option{{OptionType: 1}, {OptionType: 1}, {OptionType: 1}, {OptionType: 1}}}
	tcp := &layers.TCP{SrcPort: 43013, DstPort: 80, Seq: 1, SYN: true, Window: 64240}
	tcp.SetNetworkLayerForChecksum(ip)
	f := serialize(t, nat.VirtioNetHdr{}, eth, ip, tcp)
	// gopacket wrote four NOPs: put the options in their place and fix
	// the header checksum (the TCP checksum does not cover them).
	ipb := f[nat.VirtioNetHdrLen+nat.EthernetHeaderLen:]
	copy(ipb[20:24], opts)
	binary.BigEndian.PutUint16(ipb[10:], 0)
	binary.BigEndian.PutUint16(ipb[10:], ^uint16(sum16(ipb[:24], 0)))
	return f
}

// =========================================================================
// 1. ARP

func TestARP(t *testing.T) {
	t.Parallel()
	h := start(t, testConfig())
	reqMAC := nat.MAC{0x02, 0, 0, 0, 9, 9}
	for _, tc := range []struct {
		name      string
		link      *fakeLink
		from      netip.Addr
		target    netip.Addr
		replyFrom nat.MAC // zero: no reply, counted as arp_not_ours
	}{
		{"VIP on c0", h.c0, clientAddr, vipAddr, c0MAC},
		{"SNAT address on b0", h.b0, be1Addr, snatAddr, b0MAC},
		{"unowned address on c0", h.c0, clientAddr, netip.MustParseAddr("198.18.0.77"), nat.MAC{}},
		{"backend address on b0", h.b0, be1Addr, be2Addr, nat.MAC{}},
		{"SNAT address on the wrong link", h.c0, clientAddr, snatAddr, nat.MAC{}},
		{"VIP on the wrong link", h.b0, be1Addr, vipAddr, nat.MAC{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := drops(t, h.b, "arp_not_ours")
			replies := metric(t, h.b, "tslb_arp_sent_total", "link", tc.link.name, "op", "reply")
			tc.link.inject(t, arpFrame(t, nat.ARPRequest, reqMAC, bcastMAC, reqMAC, tc.from, nat.MAC{}, tc.target))
			if tc.replyFrom == (nat.MAC{}) {
				h.quiet(t, tc.link)
				if got := drops(t, h.b, "arp_not_ours") - before; got != 1 {
					t.Errorf("arp_not_ours drops += %v, want 1", got)
				}
				return
			}
			checkARP(t, decode(t, tc.link.next(t)), arpWant{op: nat.ARPReply, ethSrc: tc.replyFrom, ethDst: reqMAC,
				sMAC: tc.replyFrom, sIP: tc.target, tMAC: reqMAC, tIP: tc.from})
			h.quiet(t, tc.link)
			if got := drops(t, h.b, "arp_not_ours") - before; got != 0 {
				t.Errorf("arp_not_ours drops += %v, want 0", got)
			}
			// The reply and the barrier's.
			if got := metric(t, h.b, "tslb_arp_sent_total", "link", tc.link.name, "op", "reply") - replies; got != 2 {
				t.Errorf("tslb_arp_sent_total{op=reply} += %v, want 2", got)
			}
		})
	}
}

// =========================================================================
// 2. A whole connection: ARP resolution both ways, SYN with options,
// SYN-ACK, data both ways on the same mapping.

func TestConnection(t *testing.T) {
	t.Parallel()
	h := start(t, testConfig())
	const cport, cisn, bisn = 40000, 1_000_000, 9_000_000

	s := clientSeg(cport, nat.TCPFlagSYN, cisn, 0)
	s.opts = synOptions(12345, 0)
	syn := tcpFrame(t, s)
	h.c0.inject(t, syn)

	// The backend is unknown: tslb asks for it from the SNAT address.
	req := decode(t, h.b0.next(t))
	if req.arp == nil {
		t.Fatalf("expected an ARP request on b0, got % x", req.raw)
	}
	be := netip.AddrFrom4([4]byte(req.arp.DstProtAddress))
	if be != be1Addr && be != be2Addr {
		t.Fatalf("ARP request for %s, want a backend", be)
	}
	checkARP(t, req, arpWant{op: nat.ARPRequest, ethSrc: b0MAC, ethDst: bcastMAC, sMAC: b0MAC, sIP: snatAddr, tIP: be})
	if got := metric(t, h.b, "tslb_arp_sent_total", "link", "b0", "op", "request"); got != 1 {
		t.Errorf("tslb_arp_sent_total{b0,request} = %v, want 1", got)
	}
	beMAC := backendMAC(t, be)
	h.b0.inject(t, arpFrame(t, nat.ARPReply, beMAC, b0MAC, beMAC, be, b0MAC, snatAddr))

	// The queued SYN goes out once the reply is in.
	o := decode(t, h.b0.next(t))
	got := tcpOf(t, o)
	c := &conn{cport: cport, backend: netip.AddrPortFrom(be, 8080), sport: got.src.Port(), cisn: cisn}
	if c.sport < 20000 || c.sport > 20003 {
		t.Errorf("SNAT port %d outside 20000-20003", c.sport)
	}
	checkTCP(t, o, syn, tcpWant{ethSrc: b0MAC, ethDst: beMAC, src: c.snatAP(), dst: c.backend, ttl: 63,
		flags: nat.TCPFlagSYN, seq: cisn})
	if !bytes.Equal(o.tcp.Contents[20:], syn[nat.VirtioNetHdrLen+34+20:nat.VirtioNetHdrLen+34+40]) {
		t.Errorf("SYN options changed: % x", o.tcp.Contents[20:])
	}
	if n := len(o.tcp.Options); n != 5 {
		t.Errorf("gopacket sees %d options in the forwarded SYN, want 5", n)
	}

	// SYN-ACK: the client is unknown on c0, so tslb asks for it from the VIP.
	sa := backendSeg(t, c.backend, c.sport, nat.TCPFlagSYN|nat.TCPFlagACK, bisn, cisn+1)
	sa.opts = synOptions(777, 12345)
	synAck := tcpFrame(t, sa)
	h.b0.inject(t, synAck)
	req = decode(t, h.c0.next(t))
	checkARP(t, req, arpWant{op: nat.ARPRequest, ethSrc: c0MAC, ethDst: bcastMAC, sMAC: c0MAC, sIP: vipAddr, tIP: clientAddr})
	h.c0.inject(t, arpFrame(t, nat.ARPReply, clientMAC, c0MAC, clientMAC, clientAddr, c0MAC, vipAddr))
	checkTCP(t, decode(t, h.c0.next(t)), synAck, tcpWant{ethSrc: c0MAC, ethDst: clientMAC, src: vipAP,
		dst: c.clientAP(), ttl: 63, flags: nat.TCPFlagSYN | nat.TCPFlagACK, seq: bisn, ack: cisn + 1})
	c.bisn = bisn

	// Data both ways keeps the mapping.
	h.clientData(t, c, 1, 1, nil)
	h.clientData(t, c, 1, 1, []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
	h.backendData(t, c, 1, 28, []byte("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"))
	h.clientData(t, c, 28, 40, nil)
	// An odd-length payload exercises the trailing-byte checksum rule.
	h.backendData(t, c, 40, 28, []byte("abc"))
	h.quiet(t, h.c0)
	h.quiet(t, h.b0)

	if got := metric(t, h.b, "tslb_flow_table_entries"); got != 1 {
		t.Errorf("tslb_flow_table_entries = %v, want 1", got)
	}
	if got := metric(t, h.b, "tslb_flows_created_total", "service", "web"); got != 1 {
		t.Errorf("tslb_flows_created_total = %v, want 1", got)
	}
	if got := metric(t, h.b, "tslb_backend_flows_active", "backend", c.backend.String()); got != 1 {
		t.Errorf("tslb_backend_flows_active{%s} = %v, want 1", c.backend, got)
	}
	if got := metric(t, h.b, "tslb_snat_ports_in_use", "backend", c.backend.String()); got != 1 {
		t.Errorf("tslb_snat_ports_in_use = %v, want 1", got)
	}
	if got := metric(t, h.b, "tslb_drops_total"); got != 0 {
		t.Errorf("tslb_drops_total = %v, want 0", got)
	}
	if h.b.FlowCount() != 1 {
		t.Errorf("FlowCount = %d, want 1", h.b.FlowCount())
	}
}

// =========================================================================
// 3. Partial checksums (virtio NEEDS_CSUM) pass through as partial sums of
// the new addresses; DATA_VALID is cleared on transmit.

func TestChecksumOffload(t *testing.T) {
	t.Parallel()
	h := start(t, testConfig())
	h.prime(t)
	partial := nat.VirtioNetHdr{Flags: nat.VirtioNetHdrFNeedsCsum, CsumStart: 14 + 20, CsumOffset: 16}

	// makePartial turns a gopacket frame into what a kernel with checksum
	// offload hands over: the TCP field holds the folded pseudo-header sum.
	makePartial := func(f []byte) []byte {
		hdr, l4 := ipDatagram(t, f[nat.VirtioNetHdrLen:])
		ps := nat.PseudoHeaderSum(nat.Addr4(hdr[12:16]), nat.Addr4(hdr[16:20]), nat.ProtoTCP, uint16(len(l4)))
		binary.BigEndian.PutUint16(l4[16:], nat.Fold(ps))
		return f
	}
	// checkPartial checks a forwarded partial frame and then completes it.
	checkPartial := func(t *testing.T, o *out, src, dst netip.Addr) {
		t.Helper()
		if o.vh != partial {
			t.Errorf("virtio header %+v, want %+v", o.vh, partial)
		}
		hdr, l4 := ipDatagram(t, o.raw)
		if s := sum16(hdr, 0); s != 0xffff {
			t.Errorf("IPv4 header checksum wrong (sum %#04x)", s)
		}
		want := nat.Fold(nat.PseudoHeaderSum(a4(src), a4(dst), nat.ProtoTCP, uint16(len(l4))))
		if got := binary.BigEndian.Uint16(l4[16:]); got != want {
			t.Errorf("partial TCP checksum field %#04x, want pseudo-header sum %#04x of %s > %s", got, want, src, dst)
		}
		// Completing it in software gives a valid checksum.
		done := slices.Clone(o.raw)
		nat.CompletePartial(done, int(o.vh.CsumStart), int(o.vh.CsumOffset))
		checkCsums(t, decode(t, append(make([]byte, nat.VirtioNetHdrLen), done...)))
	}

	var c *conn
	t.Run("SYN client to backend", func(t *testing.T) {
		s := clientSeg(41000, nat.TCPFlagSYN, 5000, 0)
		s.vh = partial
		s.opts = synOptions(1, 0)
		h.c0.inject(t, makePartial(tcpFrame(t, s)))
		o := decode(t, h.b0.next(t))
		got := tcpOf(t, o)
		c = &conn{cport: 41000, backend: got.dst, sport: got.src.Port(), cisn: 5000}
		if got.src.Addr() != snatAddr || (got.dst != be1AP && got.dst != be2AP) {
			t.Fatalf("SYN forwarded as %s > %s", got.src, got.dst)
		}
		checkPartial(t, o, snatAddr, got.dst.Addr())
	})
	if c == nil {
		t.FailNow()
	}
	t.Run("SYN-ACK backend to client", func(t *testing.T) {
		s := backendSeg(t, c.backend, c.sport, nat.TCPFlagSYN|nat.TCPFlagACK, 8000, 5001)
		s.vh = partial
		s.opts = synOptions(2, 1)
		h.b0.inject(t, makePartial(tcpFrame(t, s)))
		o := decode(t, h.c0.next(t))
		if got := tcpOf(t, o); got.src != vipAP || got.dst != c.clientAP() {
			t.Errorf("SYN-ACK forwarded as %s > %s", got.src, got.dst)
		}
		checkPartial(t, o, vipAddr, clientAddr)
	})
	t.Run("data with odd payload", func(t *testing.T) {
		s := clientSeg(c.cport, nat.TCPFlagACK|nat.TCPFlagPSH, 5001, 8001)
		s.vh = partial
		s.payload = []byte("hello, partial world")[:19]
		h.c0.inject(t, makePartial(tcpFrame(t, s)))
		o := decode(t, h.b0.next(t))
		if got := tcpOf(t, o); got.src != c.snatAP() || got.dst != c.backend {
			t.Errorf("data forwarded as %s > %s", got.src, got.dst)
		}
		checkPartial(t, o, snatAddr, c.backend.Addr())
	})
	t.Run("DATA_VALID is cleared", func(t *testing.T) {
		s := clientSeg(c.cport, nat.TCPFlagACK, 5020, 8001)
		s.vh = nat.VirtioNetHdr{Flags: nat.VirtioNetHdrFDataValid}
		in := tcpFrame(t, s)
		h.c0.inject(t, in)
		o := decode(t, h.b0.next(t))
		if o.vh.Flags != 0 {
			t.Errorf("virtio flags %#x on transmit, want 0", o.vh.Flags)
		}
		checkTCP(t, o, in, tcpWant{ethSrc: b0MAC, ethDst: backendMAC(t, c.backend.Addr()), src: c.snatAP(),
			dst: c.backend, ttl: 63, flags: nat.TCPFlagACK, seq: 5020, ack: 8001})
	})
}

// =========================================================================
// 4. timestamps: strip replaces the TS option with NOPs both ways.

func TestTimestampStrip(t *testing.T) {
	t.Parallel()
	h := start(t, testConfig(func(c *config.Config) { c.Services[0].Timestamps = config.TSStrip }))
	h.prime(t)

	checkStripped := func(t *testing.T, o *out, in []byte) {
		t.Helper()
		checkCsums(t, o)
		if len(o.raw) != len(in)-nat.VirtioNetHdrLen {
			t.Errorf("length changed: %d, sent %d", len(o.raw), len(in)-nat.VirtioNetHdrLen)
		}
		if o.tcp.DataOffset != 10 {
			t.Errorf("data offset %d, want 10 (unchanged)", o.tcp.DataOffset)
		}
		var kinds []layers.TCPOptionKind
		for _, op := range o.tcp.Options {
			kinds = append(kinds, op.OptionType)
		}
		nop := layers.TCPOptionKind(layers.TCPOptionKindNop)
		want := []layers.TCPOptionKind{layers.TCPOptionKindMSS, layers.TCPOptionKindSACKPermitted,
			nop, nop, nop, nop, nop, nop, nop, nop, nop, nop, nop, layers.TCPOptionKindWindowScale}
		if !slices.Equal(kinds, want) {
			t.Errorf("options after strip %v, want %v", kinds, want)
		}
	}

	s := clientSeg(42000, nat.TCPFlagSYN, 100, 0)
	s.opts = synOptions(4242, 0)
	in := tcpFrame(t, s)
	h.c0.inject(t, in)
	o := decode(t, h.b0.next(t))
	checkStripped(t, o, in)
	got := tcpOf(t, o)
	c := &conn{cport: 42000, backend: got.dst, sport: got.src.Port(), cisn: 100}

	sa := backendSeg(t, c.backend, c.sport, nat.TCPFlagSYN|nat.TCPFlagACK, 900, 101)
	sa.opts = synOptions(99, 4242)
	in = tcpFrame(t, sa)
	h.b0.inject(t, in)
	o = decode(t, h.c0.next(t))
	checkStripped(t, o, in)
	if got := tcpOf(t, o); got.src != vipAP || got.dst != c.clientAP() {
		t.Errorf("SYN-ACK forwarded as %s > %s", got.src, got.dst)
	}
	if got := metric(t, h.b, "tslb_timestamps_stripped_total"); got != 2 {
		t.Errorf("tslb_timestamps_stripped_total = %v, want 2", got)
	}
}

// =========================================================================
// 5. Scheduling spread.

func TestSchedulerSpread(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		sched        string
		w1, w2       int
		want1, want2 int
		totalFlows   int
	}{
		{"wrr", 1, 2, 20, 40, 60},
		{"rr", 1, 2, 30, 30, 60},
		{"wrr", 3, 0, 60, 0, 60},
	} {
		t.Run(fmt.Sprintf("%s_%d_%d", tc.sched, tc.w1, tc.w2), func(t *testing.T) {
			h := start(t, testConfig(func(c *config.Config) {
				c.Services[0].Scheduler = tc.sched
				c.Services[0].Backends[0].Weight = tc.w1
				c.Services[0].Backends[1].Weight = tc.w2
				c.SNAT.PortMax = 20999
			}))
			h.prime(t)
			for i := range tc.totalFlows {
				h.c0.inject(t, tcpFrame(t, clientSeg(uint16(30000+i), nat.TCPFlagSYN, uint32(i), 0)))
			}
			count := map[netip.AddrPort]int{}
			tuples := map[[2]netip.AddrPort]bool{}
			for range tc.totalFlows {
				o := decode(t, h.b0.next(t))
				checkCsums(t, o)
				g := tcpOf(t, o)
				count[g.dst]++
				k := [2]netip.AddrPort{g.src, g.dst}
				if tuples[k] {
					t.Errorf("backend-side tuple %s > %s used twice", g.src, g.dst)
				}
				tuples[k] = true
			}
			h.quiet(t, h.c0)
			if count[be1AP] != tc.want1 || count[be2AP] != tc.want2 {
				t.Errorf("spread %v, want %s:%d %s:%d", count, be1AP, tc.want1, be2AP, tc.want2)
			}
			for _, x := range []struct {
				be   netip.AddrPort
				want int
			}{{be1AP, tc.want1}, {be2AP, tc.want2}} {
				if got := metric(t, h.b, "tslb_backend_flows_created_total", "backend", x.be.String()); got != float64(x.want) {
					t.Errorf("tslb_backend_flows_created_total{%s} = %v, want %d", x.be, got, x.want)
				}
			}
		})
	}
}

// =========================================================================
// 6. SYN refusals: SNAT exhaustion and a full flow table.

func TestSYNRefused(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name     string
		mod      func(*config.Config)
		accepted int
		reason   string
	}{
		{"snat_exhausted", func(c *config.Config) {
			c.Services[0].Backends = c.Services[0].Backends[:1]
			c.Services[0].Exhaustion = config.ExhaustReject
		}, 4, "snat_exhausted"},
		{"table_full", func(c *config.Config) {
			c.Flows.Max = 2
		}, 2, "table_full"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := start(t, testConfig(tc.mod))
			h.prime(t)
			var conns []*conn
			for i := range tc.accepted {
				c := h.connect(t, uint16(31000+i), uint32(i)*100000)
				if tc.reason == "table_full" {
					// Established: a full table of half-open flows would
					// evict the oldest instead (TestHalfOpenEviction).
					h.accept(t, c, 5555)
					h.clientData(t, c, 1, 1, nil)
				}
				conns = append(conns, c)
			}
			// One more SYN is refused: silently when the table is full; with
			// an RST when the reject policy meets no usable tuple.
			expectRefusal := func() {
				t.Helper()
				same, other := h.sync(t, h.c0)
				for _, f := range other {
					t.Errorf("unexpected frame on b0: % x", f)
				}
				if tc.reason == "table_full" {
					for _, f := range same {
						t.Errorf("unexpected frame on c0: % x", f)
					}
					return
				}
				if len(same) != 1 {
					t.Fatalf("%d frames on c0, want the RST of the reject policy", len(same))
				}
				o := decode(t, same[0])
				tcp, _ := o.pkt.Layer(layers.LayerTypeTCP).(*layers.TCP)
				if tcp == nil || !tcp.RST || !tcp.ACK || tcp.Ack != 2 || tcp.SrcPort != 80 || tcp.DstPort != 31999 {
					t.Errorf("reject answer is not RST|ACK ack 2 from :80 to :31999: %v", o.pkt)
				}
			}
			h.c0.inject(t, tcpFrame(t, clientSeg(31999, nat.TCPFlagSYN, 1, 0)))
			expectRefusal()
			if got := metric(t, h.b, "tslb_syn_refused_total", "service", "web", "reason", tc.reason); got != 1 {
				t.Errorf("tslb_syn_refused_total{%s} = %v, want 1", tc.reason, got)
			}
			if got := drops(t, h.b, tc.reason); got != 1 {
				t.Errorf("tslb_drops_total{%s} = %v, want 1", tc.reason, got)
			}
			if got := metric(t, h.b, "tslb_flow_table_entries"); got != float64(tc.accepted) {
				t.Errorf("tslb_flow_table_entries = %v, want %d", got, tc.accepted)
			}
			// Its retransmission too, and its ACK finds no flow.
			h.c0.inject(t, tcpFrame(t, clientSeg(31999, nat.TCPFlagSYN, 1, 0)))
			expectRefusal()
			h.c0.inject(t, tcpFrame(t, clientSeg(31999, nat.TCPFlagACK, 2, 1)))
			h.quiet(t, h.c0)
			if got := metric(t, h.b, "tslb_syn_refused_total", "service", "web", "reason", tc.reason); got != 2 {
				t.Errorf("tslb_syn_refused_total{%s} = %v, want 2", tc.reason, got)
			}
			if got := drops(t, h.b, "no_flow"); got != 1 {
				t.Errorf("no_flow drops = %v, want 1", got)
			}
			// Existing flows still forward both ways.
			tuples := map[netip.AddrPort]netip.AddrPort{}
			for _, c := range conns {
				tuples[c.snatAP()] = c.backend
				if tc.reason != "table_full" {
					h.accept(t, c, 5555)
				}
				h.clientData(t, c, 1, 1, []byte("x"))
				h.backendData(t, c, 1, 2, []byte("y"))
			}
			if len(tuples) != tc.accepted && tc.name == "snat_exhausted" {
				t.Errorf("SNAT tuples %v are not distinct", tuples)
			}
		})
	}
}

// =========================================================================
// 7. Malformed and unwanted input is dropped and counted, never forwarded.

func TestDrops(t *testing.T) {
	t.Parallel()
	h := start(t, testConfig())
	h.prime(t)
	c := h.establish(t, 43000)

	vh := make([]byte, nat.VirtioNetHdrLen)
	const ipOff = nat.VirtioNetHdrLen + nat.EthernetHeaderLen
	plain := func() []byte { return tcpFrame(t, clientSeg(43999, nat.TCPFlagSYN, 1, 0)) }
	// edit changes the IPv4 datagram of f and fixes its header checksum.
	edit := func(f []byte, fn func(ip []byte)) []byte {
		ip := f[ipOff:]
		fn(ip)
		ihl := min(int(ip[0]&0x0f)*4, len(ip))
		if ihl >= 20 {
			binary.BigEndian.PutUint16(ip[10:], 0)
			binary.BigEndian.PutUint16(ip[10:], ^uint16(sum16(ip[:ihl], 0)))
		}
		return f
	}
	ipFrame := func(proto layers.IPProtocol, dst netip.Addr, l4 ...gopacket.SerializableLayer) []byte {
		eth := &layers.Ethernet{SrcMAC: hw(clientMAC), DstMAC: hw(c0MAC), EthernetType: layers.EthernetTypeIPv4}
		ip := &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Protocol: proto, SrcIP: ip4(clientAddr), DstIP: ip4(dst)}
		for _, l := range l4 {
			if x, ok := l.(interface {
				SetNetworkLayerForChecksum(gopacket.NetworkLayer) error
			}); ok {
				x.SetNetworkLayerForChecksum(ip)
			}
		}
		return serialize(t, nat.VirtioNetHdr{}, append([]gopacket.SerializableLayer{eth, ip}, l4...)...)
	}
	icmpErrQuoting := func(quote []byte) []byte {
		return ipFrame(layers.IPProtocolICMPv4, vipAddr,
			&layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(3, 3)}, gopacket.Payload(quote))
	}
	udpQuote := func() []byte {
		ip := &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Protocol: layers.IPProtocolUDP, SrcIP: ip4(vipAddr), DstIP: ip4(clientAddr)}
		udp := &layers.UDP{SrcPort: 80, DstPort: 43000}
		udp.SetNetworkLayerForChecksum(ip)
		return serialize(t, nat.VirtioNetHdr{}, ip, udp, gopacket.Payload("q"))[nat.VirtioNetHdrLen:]
	}()
	bad := []byte("0123456789abcdef")

	for _, tc := range []struct {
		name   string
		onB0   bool
		frame  []byte
		reason string
	}{
		{"empty read", false, []byte{}, "short_frame"},
		{"partial virtio header", false, vh[:5], "short_frame"},
		{"virtio header only", false, slices.Clone(vh), "short_frame"},
		{"truncated Ethernet header", false, plain()[:nat.VirtioNetHdrLen+10], "short_frame"},
		{"truncated IPv4 header", false, plain()[:ipOff+12], "short_frame"},
		{"IPv4 EtherType, version 6", false, edit(plain(), func(ip []byte) { ip[0] = 0x65 }), "not_ipv4"},
		{"IHL 4", false, edit(plain(), func(ip []byte) { ip[0] = 0x44 }), "bad_ihl"},
		{"IHL past the frame", false, edit(plain(), func(ip []byte) { ip[0] = 0x4f }), "bad_ihl"},
		{"total length past the frame", false, edit(plain(), func(ip []byte) { binary.BigEndian.PutUint16(ip[2:], 1500) }), "bad_total_length"},
		{"total length below IHL", false, edit(plain(), func(ip []byte) { binary.BigEndian.PutUint16(ip[2:], 12) }), "bad_total_length"},
		{"TCP shorter than 20 bytes", false, edit(plain(), func(ip []byte) { binary.BigEndian.PutUint16(ip[2:], 20+12) }), "short_tcp"},
		{"TCP data offset past the segment", false, edit(plain(), func(ip []byte) { ip[20+12] = 0xf0 }), "bad_data_offset"},
		{"TCP data offset below 5", false, edit(plain(), func(ip []byte) { ip[20+12] = 0x40 }), "bad_data_offset"},
		{"fragment (MF)", false, edit(plain(), func(ip []byte) { binary.BigEndian.PutUint16(ip[6:], 0x2000) }), "fragment"},
		{"fragment (offset)", false, edit(plain(), func(ip []byte) { binary.BigEndian.PutUint16(ip[6:], 0x0010) }), "fragment"},
		{"VLAN-tagged", false, serialize(t, nat.VirtioNetHdr{},
			&layers.Ethernet{SrcMAC: hw(clientMAC), DstMAC: hw(c0MAC), EthernetType: layers.EthernetTypeDot1Q},
			&layers.Dot1Q{VLANIdentifier: 7, Type: layers.EthernetTypeIPv4},
			&layers.IPv4{Version: 4, IHL: 5, TTL: 64, Protocol: layers.IPProtocolTCP, SrcIP: ip4(clientAddr), DstIP: ip4(vipAddr)},
			gopacket.Payload(make([]byte, 20))), "vlan_tagged"},
		{"IPv6", false, serialize(t, nat.VirtioNetHdr{},
			&layers.Ethernet{SrcMAC: hw(clientMAC), DstMAC: hw(c0MAC), EthernetType: layers.EthernetTypeIPv6},
			&layers.IPv6{Version: 6, HopLimit: 64, NextHeader: layers.IPProtocolNoNextHeader,
				SrcIP: net.ParseIP("2001:db8::1"), DstIP: net.ParseIP("2001:db8::2")}), "not_ours"},
		{"short ARP", false, append(append(slices.Clone(vh), arpFrame(t, nat.ARPRequest, clientMAC, bcastMAC, clientMAC, clientAddr, nat.MAC{}, vipAddr)[nat.VirtioNetHdrLen:nat.VirtioNetHdrLen+14]...), make([]byte, 20)...), "short_arp"},
		{"ARP not Ethernet/IPv4", false, func() []byte {
			f := arpFrame(t, nat.ARPRequest, clientMAC, bcastMAC, clientMAC, clientAddr, nat.MAC{}, vipAddr)
			f[ipOff+1] = 6 // hardware type 6 (IEEE 802)
			return f
		}(), "short_arp"},
		{"short ICMP", false, edit(ipFrame(layers.IPProtocolICMPv4, vipAddr, gopacket.Payload("abcd")), func([]byte) {}), "short_icmp"},
		{"UDP to the VIP", false, ipFrame(layers.IPProtocolUDP, vipAddr, &layers.UDP{SrcPort: 5353, DstPort: 80}, gopacket.Payload("x")), "unsupported_proto"},
		{"GRE to the SNAT address", true, ipFrame(layers.IPProtocolGRE, snatAddr, gopacket.Payload(bad)), "unsupported_proto"},
		{"TCP to VIP:81", false, tcpFrame(t, seg{srcMAC: clientMAC, dstMAC: c0MAC, src: netip.AddrPortFrom(clientAddr, 43001),
			dst: netip.AddrPortFrom(vipAddr, 81), flags: nat.TCPFlagSYN}), "no_service"},
		{"ACK without a flow", false, tcpFrame(t, clientSeg(43002, nat.TCPFlagACK, 1, 1)), "no_flow"},
		{"RST without a flow", false, tcpFrame(t, clientSeg(43002, nat.TCPFlagRST, 1, 0)), "no_flow"},
		{"SYN-ACK from the client", false, tcpFrame(t, clientSeg(43002, nat.TCPFlagSYN|nat.TCPFlagACK, 1, 1)), "no_flow"},
		{"backend segment without a flow", true, tcpFrame(t, backendSeg(t, be1AP, c.sport^1, nat.TCPFlagACK, 1, 1)), "no_flow"},
		{"backend segment from the wrong port", true, tcpFrame(t, backendSeg(t, netip.AddrPortFrom(c.backend.Addr(), 8081), c.sport, nat.TCPFlagACK, 1, 1)), "no_flow"},
		{"SYN from an off-link client", false, tcpFrame(t, seg{srcMAC: clientMAC, dstMAC: c0MAC,
			src: netip.MustParseAddrPort("203.0.113.9:1234"), dst: vipAP, flags: nat.TCPFlagSYN}), "source_wrong_link"},
		{"SYN from a backend's subnet on the client link", false, tcpFrame(t, seg{srcMAC: clientMAC, dstMAC: c0MAC,
			src: netip.MustParseAddrPort("198.18.1.77:1234"), dst: vipAP, flags: nat.TCPFlagSYN}), "source_wrong_link"},
		{"SYN from a backend on the client link", false, tcpFrame(t, seg{srcMAC: clientMAC, dstMAC: c0MAC,
			src: be1AP, dst: vipAP, flags: nat.TCPFlagSYN}), "source_wrong_link"},
		{"SYN from the VIP", false, tcpFrame(t, seg{srcMAC: clientMAC, dstMAC: c0MAC,
			src: netip.AddrPortFrom(vipAddr, 1234), dst: vipAP, flags: nat.TCPFlagSYN}), "source_owned"},
		{"SYN from the SNAT address", false, tcpFrame(t, seg{srcMAC: clientMAC, dstMAC: c0MAC,
			src: netip.AddrPortFrom(snatAddr, 1234), dst: vipAP, flags: nat.TCPFlagSYN}), "source_owned"},
		{"SYN from loopback", false, tcpFrame(t, seg{srcMAC: clientMAC, dstMAC: c0MAC,
			src: netip.MustParseAddrPort("127.0.0.1:1234"), dst: vipAP, flags: nat.TCPFlagSYN}), "source_martian"},
		{"SYN from multicast", false, tcpFrame(t, seg{srcMAC: clientMAC, dstMAC: c0MAC,
			src: netip.MustParseAddrPort("224.0.0.9:1234"), dst: vipAP, flags: nat.TCPFlagSYN}), "source_martian"},
		{"SYN from 0.0.0.0", false, tcpFrame(t, seg{srcMAC: clientMAC, dstMAC: c0MAC,
			src: netip.MustParseAddrPort("0.0.0.0:1234"), dst: vipAP, flags: nat.TCPFlagSYN}), "source_martian"},
		{"SYN from port 0", false, tcpFrame(t, clientSeg(0, nat.TCPFlagSYN, 1, 0)), "port_zero"},
		{"SYN+FIN", false, tcpFrame(t, clientSeg(43010, nat.TCPFlagSYN|nat.TCPFlagFIN, 1, 0)), "bad_tcp_flags"},
		{"SYN+RST", false, tcpFrame(t, clientSeg(43010, nat.TCPFlagSYN|nat.TCPFlagRST, 1, 0)), "bad_tcp_flags"},
		{"SYN+FIN on a flow", false, tcpFrame(t, clientSeg(c.cport, nat.TCPFlagSYN|nat.TCPFlagFIN, c.cisn, 0)), "bad_tcp_flags"},
		{"SYN with a bad TCP checksum", false, func() []byte {
			f := tcpFrame(t, clientSeg(43011, nat.TCPFlagSYN, 1, 0))
			f[ipOff+20+16] ^= 0x55
			return f
		}(), "bad_tcp_checksum"},
		{"SYN with a bad IPv4 checksum", false, func() []byte {
			f := tcpFrame(t, clientSeg(43012, nat.TCPFlagSYN, 1, 0))
			f[ipOff+10] ^= 0x55
			return f
		}(), "bad_ip_checksum"},
		{"SYN with a zero-length IP option", false, ipOptSYN(t, []byte{0x44, 0, 0, 0}), "bad_ip_options"},
		{"SYN with a source route", false, ipOptSYN(t, []byte{0x83, 3, 4, 0}), "ip_source_route"},
		{"ARP reply claiming the VIP", false, arpFrame(t, nat.ARPReply, clientMAC, c0MAC, clientMAC, vipAddr, c0MAC, clientAddr), "arp_spoof"},
		{"ARP request from the SNAT address", true, arpFrame(t, nat.ARPRequest, be1MAC, bcastMAC, be1MAC, snatAddr, nat.MAC{}, snatAddr), "arp_spoof"},
		{"TCP to an address not ours", false, tcpFrame(t, seg{srcMAC: clientMAC, dstMAC: c0MAC, src: netip.AddrPortFrom(clientAddr, 43003),
			dst: netip.AddrPortFrom(netip.MustParseAddr("198.18.0.77"), 80), flags: nat.TCPFlagSYN}), "not_ours"},
		{"TCP to a backend", true, tcpFrame(t, seg{srcMAC: be1MAC, dstMAC: b0MAC, src: be1AP, dst: be2AP, flags: nat.TCPFlagSYN}), "not_ours"},
		{"ICMP timestamp request", false, ipFrame(layers.IPProtocolICMPv4, vipAddr,
			&layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(13, 0)}, gopacket.Payload(make([]byte, 12))), "icmp_unsupported"},
		{"ICMP echo reply", false, ipFrame(layers.IPProtocolICMPv4, vipAddr,
			&layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(0, 0)}), "icmp_unsupported"},
		{"echo request with a bad checksum", false, func() []byte {
			f := ipFrame(layers.IPProtocolICMPv4, vipAddr, &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(8, 0), Id: 1, Seq: 1}, gopacket.Payload(bad))
			f[ipOff+20+2] ^= 0xff
			return f
		}(), "bad_checksum"},
		{"ICMP error quoting UDP", false, icmpErrQuoting(udpQuote), "icmp_unsupported"},
		{"ICMP error quoting too little", false, icmpErrQuoting(c.synAck.raw[nat.EthernetHeaderLen : nat.EthernetHeaderLen+24]), "short_icmp"},
		{"ICMP error quoting no header", false, icmpErrQuoting(nil), "short_icmp"},
		{"SYN with TTL 1", false, func() []byte {
			s := clientSeg(43004, nat.TCPFlagSYN, 1, 0)
			s.ttl = 1
			return tcpFrame(t, s)
		}(), "ttl_expired"},
		{"data with TTL 1", false, func() []byte {
			s := clientSeg(c.cport, nat.TCPFlagACK, c.cisn+1, c.bisn+1)
			s.ttl = 1
			return tcpFrame(t, s)
		}(), "ttl_expired"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := h.c0
			if tc.onB0 {
				l = h.b0
			}
			before := drops(t, h.b, tc.reason)
			total := metric(t, h.b, "tslb_drops_total")
			rx := metric(t, h.b, "tslb_link_packets_total", "link", l.name, "direction", "rx")
			l.inject(t, tc.frame)
			h.quiet(t, l)
			if got := drops(t, h.b, tc.reason) - before; got != 1 {
				t.Errorf("tslb_drops_total{reason=%q} += %v, want 1", tc.reason, got)
			}
			if got := metric(t, h.b, "tslb_drops_total") - total; got != 1 {
				t.Errorf("tslb_drops_total += %v, want 1", got)
			}
			// The frame and the barrier.
			if got := metric(t, h.b, "tslb_link_packets_total", "link", l.name, "direction", "rx") - rx; got != 2 {
				t.Errorf("rx packets += %v, want 2", got)
			}
		})
	}
	// The flow survived all of it.
	h.clientData(t, c, 1, 1, []byte("still here"))
	// Every flow holds exactly one SNAT port: the refused SYNs leaked none,
	// and the SYN with TTL 1 was dropped before it could make a flow.
	if n, p := metric(t, h.b, "tslb_flow_table_entries"), metric(t, h.b, "tslb_snat_ports_in_use"); n != p || n != 1 {
		t.Errorf("flow table entries %v, SNAT ports in use %v; want 1 and 1", n, p)
	}
}

// FuzzDatapath feeds arbitrary frames (after a valid virtio header) to a
// running datapath on either link, with full or partial checksums. The
// datapath must not panic or stop reading (each input is followed by an
// ARP barrier that must be answered), and every frame it writes must hold
// at least a virtio header and an Ethernet header.
func FuzzDatapath(f *testing.F) {
	h := start(f, testConfig())
	h.prime(f)
	for _, s := range [][]byte{
		tcpFrame(f, clientSeg(44000, nat.TCPFlagSYN, 1, 0)),
		tcpFrame(f, clientSeg(44000, nat.TCPFlagACK, 2, 1)),
		tcpFrame(f, backendSeg(f, be1AP, 20000, nat.TCPFlagSYN|nat.TCPFlagACK, 1, 2)),
		tcpFrame(f, backendSeg(f, be2AP, 20001, nat.TCPFlagRST, 1, 2)),
		arpFrame(f, nat.ARPRequest, clientMAC, bcastMAC, clientMAC, clientAddr, nat.MAC{}, vipAddr),
		arpFrame(f, nat.ARPReply, be1MAC, b0MAC, be1MAC, be1Addr, b0MAC, snatAddr),
	} {
		f.Add(false, false, s[nat.VirtioNetHdrLen:])
		f.Add(true, true, s[nat.VirtioNetHdrLen:])
		f.Add(false, false, s[nat.VirtioNetHdrLen:len(s)/2])
	}
	f.Add(false, false, []byte{})
	f.Add(true, false, []byte{0xff})
	f.Fuzz(func(t *testing.T, onB0, partial bool, data []byte) {
		l := h.c0
		if onB0 {
			l = h.b0
		}
		vh := nat.VirtioNetHdr{}
		if partial {
			vh = nat.VirtioNetHdr{Flags: nat.VirtioNetHdrFNeedsCsum, CsumStart: 34, CsumOffset: 16}
		}
		frame := make([]byte, nat.VirtioNetHdrLen+len(data))
		vh.Encode(frame)
		copy(frame[nat.VirtioNetHdrLen:], data)
		l.inject(t, frame)
		same, other := h.sync(t, l)
		for _, w := range append(same, other...) {
			if len(w) < nat.VirtioNetHdrLen+nat.EthernetHeaderLen {
				t.Errorf("datapath wrote a %d-byte frame", len(w))
			}
		}
	})
}

// =========================================================================
// 8. ICMP: echo replies and error translation.

func TestICMP(t *testing.T) {
	t.Parallel()
	h := start(t, testConfig())
	h.prime(t)
	c := h.establish(t, 45000)

	icmpFrame := func(srcMAC, dstMAC nat.MAC, src, dst netip.Addr, typ, code uint8, id, seq uint16, payload []byte) []byte {
		eth := &layers.Ethernet{SrcMAC: hw(srcMAC), DstMAC: hw(dstMAC), EthernetType: layers.EthernetTypeIPv4}
		ip := &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Protocol: layers.IPProtocolICMPv4, SrcIP: ip4(src), DstIP: ip4(dst)}
		m := &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(typ, code), Id: id, Seq: seq}
		return serialize(t, nat.VirtioNetHdr{}, eth, ip, m, gopacket.Payload(payload))
	}
	addrOf := func(ip net.IP) netip.Addr { return netip.AddrFrom4([4]byte(ip.To4())) }

	t.Run("echo", func(t *testing.T) {
		for _, tc := range []struct {
			name           string
			l              *fakeLink
			peerMAC, myMAC nat.MAC
			peer, me       netip.Addr
		}{
			{"VIP", h.c0, clientMAC, c0MAC, clientAddr, vipAddr},
			{"SNAT address", h.b0, be1MAC, b0MAC, be1Addr, snatAddr},
		} {
			t.Run(tc.name, func(t *testing.T) {
				payload := []byte("ping payload 0123456789")
				before := metric(t, h.b, "tslb_icmp_echo_replies_total")
				tc.l.inject(t, icmpFrame(tc.peerMAC, tc.myMAC, tc.peer, tc.me, 8, 0, 0x77, 3, payload))
				o := decode(t, tc.l.next(t))
				if o.icmp == nil {
					t.Fatalf("not ICMP: % x", o.raw)
				}
				checkCsums(t, o)
				if o.icmp.TypeCode != layers.CreateICMPv4TypeCode(0, 0) || o.icmp.Id != 0x77 || o.icmp.Seq != 3 ||
					!bytes.Equal(o.icmp.Payload, payload) {
					t.Errorf("echo reply %v id %d seq %d payload %q", o.icmp.TypeCode, o.icmp.Id, o.icmp.Seq, o.icmp.Payload)
				}
				if addrOf(o.ip.SrcIP) != tc.me || addrOf(o.ip.DstIP) != tc.peer {
					t.Errorf("echo reply %s > %s, want %s > %s", o.ip.SrcIP, o.ip.DstIP, tc.me, tc.peer)
				}
				if nat.MAC(o.eth.SrcMAC) != tc.myMAC || nat.MAC(o.eth.DstMAC) != tc.peerMAC {
					t.Errorf("echo reply Ethernet %s > %s", o.eth.SrcMAC, o.eth.DstMAC)
				}
				h.quiet(t, tc.l)
				if got := metric(t, h.b, "tslb_icmp_echo_replies_total") - before; got != 1 {
					t.Errorf("tslb_icmp_echo_replies_total += %v, want 1", got)
				}
			})
		}
	})

	// checkQuote checks the datagram quoted by a translated ICMP error.
	checkQuote := func(t *testing.T, o *out, src, dst netip.AddrPort, seq uint32) {
		t.Helper()
		q := gopacket.NewPacket(o.icmp.Payload, layers.LayerTypeIPv4, gopacket.Default)
		qip, _ := q.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
		qtcp, _ := q.Layer(layers.LayerTypeTCP).(*layers.TCP)
		if qip == nil || qtcp == nil {
			t.Fatalf("quoted datagram does not decode: % x", o.icmp.Payload)
		}
		gs := netip.AddrPortFrom(addrOf(qip.SrcIP), uint16(qtcp.SrcPort))
		gd := netip.AddrPortFrom(addrOf(qip.DstIP), uint16(qtcp.DstPort))
		if gs != src || gd != dst || qtcp.Seq != seq {
			t.Errorf("quoted segment %s > %s seq %d, want %s > %s seq %d", gs, gd, qtcp.Seq, src, dst, seq)
		}
		// The whole segment is quoted, so both quoted checksums can be checked.
		qhdr := o.icmp.Payload[:qip.IHL*4]
		if s := sum16(qhdr, 0); s != 0xffff {
			t.Errorf("quoted IPv4 header checksum wrong (sum %#04x)", s)
		}
		ql4 := o.icmp.Payload[qip.IHL*4 : qip.Length]
		if s := sum16(ql4, pseudoSum(qhdr[12:16], qhdr[16:20], nat.ProtoTCP, len(ql4))); s != 0xffff {
			t.Errorf("quoted TCP checksum wrong (sum %#04x)", s)
		}
		if want := nat.TCPChecksum(a4(src.Addr()), a4(dst.Addr()), ql4); qtcp.Checksum != want {
			t.Errorf("quoted TCP checksum %#04x, nat.TCPChecksum says %#04x", qtcp.Checksum, want)
		}
	}

	t.Run("frag needed from the backend", func(t *testing.T) {
		// The backend side quotes the SYN tslb sent it, whole.
		_, quote := ipDatagram(t, c.syn.raw)
		hdr, _ := ipDatagram(t, c.syn.raw)
		quote = append(slices.Clone(hdr), quote...)
		h.b0.inject(t, icmpFrame(backendMAC(t, c.backend.Addr()), b0MAC, c.backend.Addr(), snatAddr, 3, 4, 0, 1400, quote))
		o := decode(t, h.c0.next(t))
		if o.icmp == nil {
			t.Fatalf("not ICMP: % x", o.raw)
		}
		checkCsums(t, o)
		if o.icmp.TypeCode != layers.CreateICMPv4TypeCode(3, 4) || o.icmp.Seq != 1400 {
			t.Errorf("translated %v mtu %d, want 3/4 mtu 1400", o.icmp.TypeCode, o.icmp.Seq)
		}
		if addrOf(o.ip.SrcIP) != vipAddr || addrOf(o.ip.DstIP) != clientAddr {
			t.Errorf("translated error %s > %s, want %s > %s", o.ip.SrcIP, o.ip.DstIP, vipAddr, clientAddr)
		}
		if nat.MAC(o.eth.SrcMAC) != c0MAC || nat.MAC(o.eth.DstMAC) != clientMAC {
			t.Errorf("translated error Ethernet %s > %s", o.eth.SrcMAC, o.eth.DstMAC)
		}
		checkQuote(t, o, c.clientAP(), vipAP, c.cisn)
		h.quiet(t, h.b0)
	})

	t.Run("port unreachable from the client", func(t *testing.T) {
		hdr, l4 := ipDatagram(t, c.synAck.raw)
		quote := append(slices.Clone(hdr), l4...)
		h.c0.inject(t, icmpFrame(clientMAC, c0MAC, clientAddr, vipAddr, 3, 3, 0, 0, quote))
		o := decode(t, h.b0.next(t))
		if o.icmp == nil {
			t.Fatalf("not ICMP: % x", o.raw)
		}
		checkCsums(t, o)
		if addrOf(o.ip.SrcIP) != snatAddr || addrOf(o.ip.DstIP) != c.backend.Addr() {
			t.Errorf("translated error %s > %s, want %s > %s", o.ip.SrcIP, o.ip.DstIP, snatAddr, c.backend.Addr())
		}
		checkQuote(t, o, c.backend, c.snatAP(), c.bisn)
		h.quiet(t, h.c0)
	})

	if got := metric(t, h.b, "tslb_icmp_errors_translated_total"); got != 2 {
		t.Errorf("tslb_icmp_errors_translated_total = %v, want 2", got)
	}

	t.Run("unknown flows", func(t *testing.T) {
		quoteOf := func(src, dst netip.AddrPort) []byte {
			ip := &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Protocol: layers.IPProtocolTCP, SrcIP: ip4(src.Addr()), DstIP: ip4(dst.Addr())}
			tcp := &layers.TCP{SrcPort: layers.TCPPort(src.Port()), DstPort: layers.TCPPort(dst.Port()), Seq: 1, SYN: true}
			tcp.SetNetworkLayerForChecksum(ip)
			return serialize(t, nat.VirtioNetHdr{}, ip, tcp)[nat.VirtioNetHdrLen:]
		}
		for _, tc := range []struct {
			name  string
			l     *fakeLink
			frame []byte
		}{
			{"from a backend, unknown tuple", h.b0, icmpFrame(be1MAC, b0MAC, be1Addr, snatAddr, 3, 4, 0, 1400,
				quoteOf(netip.AddrPortFrom(snatAddr, c.sport), netip.AddrPortFrom(c.backend.Addr(), 9999)))},
			{"from the client, unknown tuple", h.c0, icmpFrame(clientMAC, c0MAC, clientAddr, vipAddr, 3, 3, 0, 0,
				quoteOf(vipAP, netip.AddrPortFrom(clientAddr, c.cport+1)))},
			{"to the VIP quoting the backend side", h.c0, icmpFrame(clientMAC, c0MAC, clientAddr, vipAddr, 3, 3, 0, 0,
				quoteOf(c.snatAP(), c.backend))},
			{"to the SNAT address quoting the client side", h.b0, icmpFrame(be1MAC, b0MAC, be1Addr, snatAddr, 3, 3, 0, 0,
				quoteOf(vipAP, c.clientAP()))},
		} {
			t.Run(tc.name, func(t *testing.T) {
				before := drops(t, h.b, "icmp_no_flow")
				tc.l.inject(t, tc.frame)
				h.quiet(t, tc.l)
				if got := drops(t, h.b, "icmp_no_flow") - before; got != 1 {
					t.Errorf("icmp_no_flow drops += %v, want 1", got)
				}
			})
		}
	})
}

// =========================================================================
// 9. RSTs are checked against the window.

func TestRST(t *testing.T) {
	t.Parallel()
	h := start(t, testConfig(func(c *config.Config) { c.SNAT.PortMax = 20099 }))
	h.prime(t)
	for i, tc := range []struct {
		name      string
		handshake bool // SYN-ACK seen (the backend's ack point is known)
		fromB     bool
		flags     uint8
		seqOff    uint32 // from the sender's ISN
		ackOff    uint32 // from the receiver's ISN
		forwarded bool
	}{
		{"client RST in window", true, false, nat.TCPFlagRST, 1, 0, true},
		{"client RST at the window's right edge", true, false, nat.TCPFlagRST, 1 + nat.DefaultRSTWindow, 0, true},
		{"client RST past the window", true, false, nat.TCPFlagRST, 1 + nat.DefaultRSTWindow + 1, 0, false},
		{"client RST far ahead", true, false, nat.TCPFlagRST, 1_000_000, 0, false},
		{"client RST behind", true, false, nat.TCPFlagRST, ^uint32(99), 0, false},
		{"backend RST in window", true, true, nat.TCPFlagRST | nat.TCPFlagACK, 1, 1, true},
		{"backend RST far ahead", true, true, nat.TCPFlagRST, 5_000_000, 0, false},
		{"backend RST acking the SYN", false, true, nat.TCPFlagRST | nat.TCPFlagACK, 0, 1, true},
		{"backend RST without ACK in SYN_SENT", false, true, nat.TCPFlagRST, 0, 0, false},
		{"backend RST with a wrong ACK in SYN_SENT", false, true, nat.TCPFlagRST | nat.TCPFlagACK, 0, 2, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := h.connect(t, uint16(46000+i), 1000+uint32(i)*77)
			c.bisn = 90000
			if tc.handshake {
				h.accept(t, c, c.bisn)
				h.clientData(t, c, 1, 1, nil)
			}
			before := drops(t, h.b, "rst_out_of_window")
			var s seg
			var from, to *fakeLink
			var w tcpWant
			if tc.fromB {
				s = backendSeg(t, c.backend, c.sport, tc.flags, c.bisn+tc.seqOff, c.cisn+tc.ackOff)
				from, to = h.b0, h.c0
				w = tcpWant{ethSrc: c0MAC, ethDst: clientMAC, src: vipAP, dst: c.clientAP()}
			} else {
				s = clientSeg(c.cport, tc.flags, c.cisn+tc.seqOff, c.bisn+tc.ackOff)
				from, to = h.c0, h.b0
				w = tcpWant{ethSrc: b0MAC, ethDst: backendMAC(t, c.backend.Addr()), src: c.snatAP(), dst: c.backend}
			}
			w.ttl, w.flags, w.seq, w.ack = 63, s.flags, s.seq, s.ack
			in := tcpFrame(t, s)
			from.inject(t, in)
			if tc.forwarded {
				checkTCP(t, decode(t, to.next(t)), in, w)
			}
			h.quiet(t, from)
			want := 1.0
			if tc.forwarded {
				want = 0
			}
			if got := drops(t, h.b, "rst_out_of_window") - before; got != want {
				t.Errorf("rst_out_of_window drops += %v, want %v", got, want)
			}
			if !tc.forwarded {
				// The connection is intact.
				if !tc.handshake {
					h.accept(t, c, c.bisn)
				}
				h.clientData(t, c, 1, 1, []byte("after rst"))
			}
		})
	}
}

// =========================================================================
// 10. Flow expiry returns the SNAT port.

func TestFlowExpiry(t *testing.T) {
	t.Parallel()
	h := start(t, testConfig(func(c *config.Config) { c.Flows.Timeouts.Syn = time.Second }))
	h.prime(t)
	sent := time.Now()
	c := h.connect(t, 47000, 1)
	inUse := func() float64 { return metric(t, h.b, "tslb_snat_ports_in_use") }
	if got := metric(t, h.b, "tslb_flow_table_entries"); got != 1 {
		t.Fatalf("tslb_flow_table_entries = %v after the SYN, want 1", got)
	}
	if got := inUse(); got != 1 {
		t.Fatalf("tslb_snat_ports_in_use = %v after the SYN, want 1", got)
	}
	// The reaper visits every shard once a second: an idle SYN_SENT flow
	// with a 1 s timeout is gone between 1 s and about 2.25 s.
	if !waitFor(3*time.Second, func() bool {
		return metric(t, h.b, "tslb_flow_table_entries") == 0 && inUse() == 0
	}) {
		t.Fatalf("flow not expired after 3s: entries %v, SNAT ports in use %v",
			metric(t, h.b, "tslb_flow_table_entries"), inUse())
	}
	if d := time.Since(sent); d < time.Second {
		t.Errorf("flow expired after %v, before its 1s timeout", d)
	}
	// The backend is reset (it may hold a request socket for the SYN) and
	// the tuple leaves no ledger record.
	rst := tcpOf(t, decode(t, h.b0.next(t)))
	if rst.flags != nat.TCPFlagRST || rst.seq != 2 || rst.src != c.snatAP() || rst.dst != c.backend {
		t.Errorf("expiry of a half-open flow sent %+v, want an RST seq 2 to the backend", rst)
	}
	if got := metric(t, h.b, "tslb_snat_ports_time_wait"); got != 0 {
		t.Errorf("tuple of an expired half-open flow in TIME_WAIT (%v), want free", got)
	}
	if got := metric(t, h.b, "tslb_flows_expired_total", "state", "syn_sent"); got != 1 {
		t.Errorf("tslb_flows_expired_total{syn_sent} = %v, want 1", got)
	}
	if got := metric(t, h.b, "tslb_flows_active", "service", "web"); got != 0 {
		t.Errorf("tslb_flows_active = %v, want 0", got)
	}
	// The backend's late SYN-ACK finds no flow; a new SYN gets a new one.
	h.b0.inject(t, tcpFrame(t, backendSeg(t, c.backend, c.sport, nat.TCPFlagSYN|nat.TCPFlagACK, 5, 2)))
	h.quiet(t, h.b0)
	if got := drops(t, h.b, "no_flow"); got != 1 {
		t.Errorf("no_flow drops = %v, want 1", got)
	}
	h.connect(t, 47000, 2)
}

// =========================================================================
// Both workers at once (for the race detector): data both ways on several
// flows concurrently keeps every mapping.

func TestConcurrentFlows(t *testing.T) {
	t.Parallel()
	h := start(t, testConfig(func(c *config.Config) { c.SNAT.PortMax = 20099 }))
	h.prime(t)
	var conns []*conn
	for i := range 8 {
		conns = append(conns, h.establish(t, uint16(48000+i)))
	}
	const rounds = 50
	var wg sync.WaitGroup
	inject := func(l *fakeLink, mk func(c *conn, r int) []byte) {
		defer wg.Done()
		for r := range rounds {
			for _, c := range conns {
				if l.injectErr(mk(c, r)) != nil {
					return
				}
			}
		}
	}
	// Frames are built up front: t is not used from these goroutines.
	cf := map[[2]int][]byte{}
	bf := map[[2]int][]byte{}
	for r := range rounds {
		for i, c := range conns {
			s := clientSeg(c.cport, nat.TCPFlagACK, c.cisn+1+uint32(r), c.bisn+1+uint32(r))
			s.payload = []byte{byte(r)}
			cf[[2]int{r, i}] = tcpFrame(t, s)
			b := backendSeg(t, c.backend, c.sport, nat.TCPFlagACK, c.bisn+1+uint32(r), c.cisn+1+uint32(r))
			b.payload = []byte{byte(r), byte(i)}
			bf[[2]int{r, i}] = tcpFrame(t, b)
		}
	}
	idx := map[*conn]int{}
	for i, c := range conns {
		idx[c] = i
	}
	wg.Add(2)
	go inject(h.c0, func(c *conn, r int) []byte { return cf[[2]int{r, idx[c]}] })
	go inject(h.b0, func(c *conn, r int) []byte { return bf[[2]int{r, idx[c]}] })
	byCport := map[uint16]*conn{}
	byTuple := map[[2]netip.AddrPort]*conn{}
	for _, c := range conns {
		byCport[c.cport] = c
		byTuple[[2]netip.AddrPort{c.snatAP(), c.backend}] = c
	}
	for range rounds * len(conns) {
		g := tcpOf(t, decode(t, h.b0.next(t)))
		if byTuple[[2]netip.AddrPort{g.src, g.dst}] == nil {
			t.Fatalf("client segment forwarded as %s > %s", g.src, g.dst)
		}
		g = tcpOf(t, decode(t, h.c0.next(t)))
		c := byCport[g.dst.Port()]
		if c == nil || g.src != vipAP || g.dst != c.clientAP() {
			t.Fatalf("backend segment forwarded as %s > %s", g.src, g.dst)
		}
	}
	wg.Wait()
	h.quiet(t, h.c0)
	h.quiet(t, h.b0)
}

// =========================================================================
// A client reusing its port after a close (FINs or RST) gets a new flow;
// the old one is ended and its SNAT port returned.

func TestReopenAfterClose(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		closer func(t *testing.T, h *harness, c *conn)
		label  string
	}{
		{"FINs, client first", func(t *testing.T, h *harness, c *conn) {
			fin := clientSeg(c.cport, nat.TCPFlagFIN|nat.TCPFlagACK, c.cisn+1, c.bisn+1)
			h.c0.inject(t, tcpFrame(t, fin))
			checkCsums(t, decode(t, h.b0.next(t)))
			finAck := backendSeg(t, c.backend, c.sport, nat.TCPFlagFIN|nat.TCPFlagACK, c.bisn+1, c.cisn+2)
			h.b0.inject(t, tcpFrame(t, finAck))
			checkCsums(t, decode(t, h.c0.next(t)))
			h.clientData(t, c, 2, 2, nil)
		}, "client"},
		{"RST from the backend", func(t *testing.T, h *harness, c *conn) {
			h.b0.inject(t, tcpFrame(t, backendSeg(t, c.backend, c.sport, nat.TCPFlagRST, c.bisn+1, 0)))
			checkCsums(t, decode(t, h.c0.next(t)))
		}, "reset"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := start(t, testConfig())
			h.prime(t)
			c := h.establish(t, 49000)
			tc.closer(t, h, c)
			h.quiet(t, h.c0)
			h.quiet(t, h.b0)
			if got := metric(t, h.b, "tslb_flows_closed_total"); got != 0 {
				t.Errorf("tslb_flows_closed_total = %v before the flow ends, want 0", got)
			}
			// Same client port, new ISN: a new flow.
			c2 := h.connect(t, c.cport, c.cisn+100000)
			h.accept(t, c2, 424242)
			h.clientData(t, c2, 1, 1, []byte("again"))
			if got := metric(t, h.b, "tslb_flows_closed_total", "closed_first", tc.label); got != 1 {
				t.Errorf("tslb_flows_closed_total{%s} = %v, want 1", tc.label, got)
			}
			if got := metric(t, h.b, "tslb_flows_created_total", "service", "web"); got != 2 {
				t.Errorf("tslb_flows_created_total = %v, want 2", got)
			}
			if n, p := metric(t, h.b, "tslb_flow_table_entries"), metric(t, h.b, "tslb_snat_ports_in_use"); n != 1 || p != 1 {
				t.Errorf("flow table entries %v, SNAT ports in use %v; want 1 and 1", n, p)
			}
		})
	}
}

// TestARPMACChange: a backend that changes its MAC (failover, a new NIC)
// announces it by gratuitous ARP — a request for its own address, not for
// one of tslb's. tslb takes the new MAC for an address it already knows
// (RFC 826's merge rule) and never learns an unknown one that way.
func TestARPMACChange(t *testing.T) {
	t.Parallel()
	h := start(t, testConfig(func(c *config.Config) { c.Services[0].Backends = c.Services[0].Backends[:1] }))
	h.prime(t)
	c := h.establish(t, 47000)
	newMAC := nat.MAC{0x02, 0, 0, 0, 0x0b, 0x99}
	h.b0.inject(t, arpFrame(t, nat.ARPRequest, newMAC, bcastMAC, newMAC, be1Addr, nat.MAC{}, be1Addr))
	h.quiet(t, h.b0)
	s := clientSeg(c.cport, nat.TCPFlagACK|nat.TCPFlagPSH, c.cisn+1, c.bisn+1)
	s.payload = []byte("after the move")
	h.c0.inject(t, tcpFrame(t, s))
	if got := decode(t, h.b0.next(t)); nat.MAC(got.eth.DstMAC) != newMAC {
		t.Errorf("segment after the gratuitous ARP went to %v, want the backend's new MAC %v", got.eth.DstMAC, newMAC)
	}
	if got := metric(t, h.b, "tslb_neighbour_changes_total", "link", "b0"); got != 1 {
		t.Errorf("tslb_neighbour_changes_total{link=b0} = %v, want 1", got)
	}
	// A gratuitous ARP of an address tslb does not know teaches nothing.
	before := metric(t, h.b, "tslb_arp_table_entries", "link", "b0")
	stranger := netip.MustParseAddr("198.18.1.200")
	h.b0.inject(t, arpFrame(t, nat.ARPRequest, newMAC, bcastMAC, newMAC, stranger, nat.MAC{}, stranger))
	h.quiet(t, h.b0)
	if got := metric(t, h.b, "tslb_arp_table_entries", "link", "b0"); got != before {
		t.Errorf("b0 neighbours = %v after a stranger's gratuitous ARP, want %v", got, before)
	}
}
