package nat_test

import (
	"encoding/binary"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"tslb/nat"
)

// refSum is a slow byte-by-byte RFC 1071 reference.
func refSum(b []byte) uint16 {
	var s uint64
	for i := 0; i < len(b); i += 2 {
		w := uint64(b[i]) << 8
		if i+1 < len(b) {
			w |= uint64(b[i+1])
		}
		s += w
	}
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	return uint16(s)
}

func TestChecksumRFC1071Example(t *testing.T) {
	// RFC 1071 §3: the bytes 00 01 f2 03 f4 f5 f6 f7 sum to ddf2.
	b := []byte{0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7}
	if got := nat.Fold(nat.Checksum(b, 0)); got != 0xddf2 {
		t.Errorf("sum = %#04x, want 0xddf2", got)
	}
}

func TestChecksumMatchesReference(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for n := range 300 {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		// Also all-0xff buffers, which stress the carries.
		for _, buf := range [][]byte{b, slices.Repeat([]byte{0xff}, n)} {
			init := r.Uint32()
			got := nat.Fold(nat.Checksum(buf, init))
			want := refSum(append(binary.BigEndian.AppendUint32(nil, init), buf...))
			if got != want && !(got == 0xffff && want == 0) && !(got == 0 && want == 0xffff) {
				t.Fatalf("len %d: Checksum = %#04x, want %#04x", n, got, want)
			}
			if s := nat.Checksum(buf, init); s > 0xffff {
				t.Fatalf("Checksum returned unfolded %#x", s)
			}
		}
	}
}

func TestFold(t *testing.T) {
	for _, tt := range []struct {
		in   uint32
		want uint16
	}{
		{0, 0}, {0xffff, 0xffff}, {0x10000, 1}, {0x1fffe, 0xffff}, {0xffffffff, 0xffff}, {0x12345678, 0x68ac},
	} {
		if got := nat.Fold(tt.in); got != tt.want {
			t.Errorf("Fold(%#x) = %#x, want %#x", tt.in, got, tt.want)
		}
	}
}

// TestChecksumsMatchGopacket builds segments with gopacket's
// ComputeChecksums and compares both checksums with ours.
func TestChecksumsMatchGopacket(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for i := range 200 {
		ip := &layers.IPv4{
			Version: 4, IHL: 5, TTL: 64, Protocol: layers.IPProtocolTCP, Flags: layers.IPv4DontFragment,
			SrcIP: binary.BigEndian.AppendUint32(nil, r.Uint32()),
			DstIP: binary.BigEndian.AppendUint32(nil, r.Uint32()),
		}
		tcp := &layers.TCP{
			SrcPort: layers.TCPPort(r.Uint32()), DstPort: layers.TCPPort(r.Uint32()),
			Seq: r.Uint32(), Ack: r.Uint32(), ACK: true, PSH: i%2 == 0, Window: uint16(r.Uint32()),
			Options: []layers.TCPOption{
				{OptionType: layers.TCPOptionKindNop}, {OptionType: layers.TCPOptionKindNop},
				{OptionType: layers.TCPOptionKindTimestamps, OptionLength: 10, OptionData: binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(nil, r.Uint32()), r.Uint32())},
			},
		}
		if err := tcp.SetNetworkLayerForChecksum(ip); err != nil {
			t.Fatal(err)
		}
		payload := make([]byte, r.IntN(1400)+i%2)
		for j := range payload {
			payload[j] = byte(r.Uint32())
		}
		frame := serialize(t, ip, tcp, gopacket.Payload(payload))
		checkFull(t, frame)
	}
}

// serialize returns an Ethernet frame of the layers with gopacket's
// checksums and lengths.
func serialize(t *testing.T, ls ...gopacket.SerializableLayer) []byte {
	t.Helper()
	eth := &layers.Ethernet{SrcMAC: macA[:], DstMAC: macB[:], EthernetType: layers.EthernetTypeIPv4}
	buf := gopacket.NewSerializeBuffer()
	opts := gopacket.SerializeOptions{ComputeChecksums: true, FixLengths: true}
	if err := gopacket.SerializeLayers(buf, opts, append([]gopacket.SerializableLayer{eth}, ls...)...); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// randomEdit applies one random rewrite to p and returns its name.
func randomEdit(r *rand.Rand, p *nat.Packet) string {
	switch r.IntN(10) {
	case 0:
		p.SetSrc(nat.Addr4(binary.BigEndian.AppendUint32(nil, r.Uint32())))
		return "SetSrc"
	case 1:
		p.SetDst(nat.Addr4(binary.BigEndian.AppendUint32(nil, r.Uint32())))
		return "SetDst"
	case 2:
		p.SetSrcPort(uint16(r.Uint32()))
		return "SetSrcPort"
	case 3:
		p.SetDstPort(uint16(r.Uint32()))
		return "SetDstPort"
	case 4:
		p.SetSeq(r.Uint32())
		return "SetSeq"
	case 5:
		p.SetAck(r.Uint32())
		return "SetAck"
	case 6:
		p.DecTTL()
		return "DecTTL"
	case 7:
		p.SetTimestamps(r.Uint32(), r.Uint32())
		return "SetTimestamps"
	case 8:
		p.SetSACKBlock(r.IntN(3), nat.SACKBlock{Start: r.Uint32(), End: r.Uint32()})
		return "SetSACKBlock"
	default:
		if r.IntN(4) == 0 {
			p.StripTimestamps()
			return "StripTimestamps"
		}
		p.SetMSS(uint16(r.Uint32()))
		return "SetMSS"
	}
}

func TestRewriteFullMatchesRecompute(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	for i := range 1000 {
		frame := randTCP(r)
		var p nat.Packet
		if err := p.Decode(frame); err != nil {
			t.Fatal(err)
		}
		orig := slices.Clone(frame)
		for range 1 + r.IntN(4) {
			name := randomEdit(r, &p)
			ip := nat.IPv4(frame[14:])
			tcp := nat.TCP(frame[p.L4:])
			if got, want := ip.Checksum(), ip.ComputeChecksum(); got != want {
				t.Fatalf("edit %d %s: IPv4 checksum %#04x, want %#04x", i, name, got, want)
			}
			if got, want := tcp.Checksum(), nat.TCPChecksum(ip.Src(), ip.Dst(), tcp); got != want {
				t.Fatalf("edit %d %s: TCP checksum %#04x, want %#04x\norig % x", i, name, got, want, orig)
			}
			// The Packet fields track the frame.
			if p.Src != ip.Src() || p.Dst != ip.Dst() || p.SrcPort != tcp.SrcPort() || p.DstPort != tcp.DstPort() ||
				p.Seq != tcp.Seq() || p.Ack != tcp.Ack() {
				t.Fatalf("edit %d %s: Packet fields out of sync", i, name)
			}
		}
	}
}

// makePartial replaces the TCP checksum of frame by the folded,
// non-complemented pseudo-header sum, as Linux does for CHECKSUM_PARTIAL.
func makePartial(frame []byte) {
	ip := nat.IPv4(frame[14:])
	tcp := nat.TCP(frame[14+ip.HeaderLen() : 14+int(ip.TotalLen())])
	tcp.SetChecksum(nat.Fold(nat.PseudoHeaderSum(ip.Src(), ip.Dst(), nat.ProtoTCP, uint16(len(tcp)))))
}

func TestRewritePartialMatchesRecompute(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	for i := range 1000 {
		frame := randTCP(r)
		makePartial(frame)
		p := nat.Packet{PartialCsum: true}
		if err := p.Decode(frame); err != nil {
			t.Fatal(err)
		}
		var names []string
		for range 1 + r.IntN(4) {
			names = append(names, randomEdit(r, &p))
			ip := nat.IPv4(frame[14:])
			if got, want := ip.Checksum(), ip.ComputeChecksum(); got != want {
				t.Fatalf("edit %d %v: IPv4 checksum %#04x, want %#04x", i, names, got, want)
			}
			// The field must still be exactly the pseudo-header sum.
			tcp := nat.TCP(frame[p.L4 : p.L4+p.L4Len])
			if got, want := tcp.Checksum(), nat.Fold(nat.PseudoHeaderSum(ip.Src(), ip.Dst(), nat.ProtoTCP, uint16(len(tcp)))); got != want {
				t.Fatalf("edit %d %v: partial field %#04x, want %#04x", i, names, got, want)
			}
			// Completing it in software gives the full checksum.
			done := slices.Clone(frame)
			nat.CompletePartial(done, p.L4, 16)
			if got, want := nat.TCP(done[p.L4:]).Checksum(), nat.TCPChecksum(ip.Src(), ip.Dst(), tcp); got != want {
				t.Fatalf("edit %d %v: completed %#04x, full %#04x", i, names, got, want)
			}
		}
	}
}

func TestPartialPortEditLeavesField(t *testing.T) {
	frame := buildTCP(tcpSpec{src: ipC, dst: ipV, sport: 1, dport: 2, opts: tsOpts(1, 2)})
	makePartial(frame)
	p := nat.Packet{PartialCsum: true}
	if err := p.Decode(frame); err != nil {
		t.Fatal(err)
	}
	before := nat.TCP(frame[34:]).Checksum()
	p.SetSrcPort(9)
	p.SetDstPort(9)
	p.SetSeq(9)
	p.SetAck(9)
	p.SetTimestamps(9, 9)
	p.StripTimestamps()
	if got := nat.TCP(frame[34:]).Checksum(); got != before {
		t.Errorf("partial checksum changed from %#x to %#x by non-pseudo-header edits", before, got)
	}
	p.SetSrc(ipV)
	if got := nat.TCP(frame[34:]).Checksum(); got == before {
		t.Error("partial checksum unchanged by an address edit")
	}
}

func TestDecTTL(t *testing.T) {
	for _, tt := range []struct {
		ttl  uint8
		ok   bool
		want uint8
	}{{64, true, 63}, {2, true, 1}, {1, false, 1}, {0, false, 0}, {255, true, 254}} {
		frame := buildTCP(tcpSpec{src: ipC, dst: ipV})
		frame[22] = tt.ttl
		nat.IPv4(frame[14:]).SetChecksum(nat.IPv4(frame[14:]).ComputeChecksum())
		var p nat.Packet
		if err := p.Decode(frame); err != nil {
			t.Fatal(err)
		}
		if got := p.DecTTL(); got != tt.ok || frame[22] != tt.want {
			t.Errorf("TTL %d: DecTTL = %v, TTL now %d; want %v, %d", tt.ttl, got, frame[22], tt.ok, tt.want)
		}
		checkFull(t, frame)
	}
}

func TestTCPChecksumKnown(t *testing.T) {
	// goldenSYN carries the checksum 0x1060 computed independently.
	if got := nat.TCPChecksum(ipC, ipV, goldenSYN[34:]); got != 0x1060 {
		t.Errorf("TCPChecksum = %#04x, want 0x1060", got)
	}
	if got := nat.PseudoHeaderSum(ipC, ipV, 6, 24); got != 0xc000+0x020a+0xc633+0x6401+6+24 {
		t.Errorf("PseudoHeaderSum = %#x", got)
	}
}

func TestCompletePartialBounds(t *testing.T) {
	b := []byte{1, 2, 3, 4}
	for _, a := range [][2]int{{-1, 0}, {0, -1}, {3, 0}, {0, 3}, {5, 0}, {2, 1}} {
		c := slices.Clone(b)
		nat.CompletePartial(c, a[0], a[1])
		if !slices.Equal(b, c) {
			t.Errorf("CompletePartial(%v) wrote out of range", a)
		}
	}
	c := slices.Clone(b)
	nat.CompletePartial(c, 2, 0)
	if c[2] != ^byte(3) || c[3] != ^byte(4) {
		t.Errorf("CompletePartial(2,0) = % x", c)
	}
}

func TestRewriteNoAllocs(t *testing.T) {
	frame := buildTCP(tcpSpec{src: ipC, dst: ipV, sport: 1, dport: 2, opts: tsOpts(1, 2), payload: make([]byte, 100)})
	var p nat.Packet
	if err := p.Decode(frame); err != nil {
		t.Fatal(err)
	}
	for _, partial := range []bool{false, true} {
		p.PartialCsum = partial
		n := testing.AllocsPerRun(100, func() {
			p.SetSrc(ipV)
			p.SetDst(ipC)
			p.SetSrcPort(3)
			p.SetDstPort(4)
			p.SetSeq(5)
			p.SetAck(6)
			p.DecTTL()
			p.SetTimestamps(7, 8)
			p.SetMSS(1400)
			p.SetSACKBlock(0, nat.SACKBlock{})
			p.StripTimestamps()
		})
		if n != 0 {
			t.Errorf("partial=%v: rewrite allocs = %v, want 0", partial, n)
		}
	}
}

func TestUDPChecksumFollowsAddresses(t *testing.T) {
	ip := &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Protocol: layers.IPProtocolUDP, SrcIP: ipC[:], DstIP: ipV[:]}
	udp := &layers.UDP{SrcPort: 53, DstPort: 5353}
	if err := udp.SetNetworkLayerForChecksum(ip); err != nil {
		t.Fatal(err)
	}
	frame := serialize(t, ip, udp, gopacket.Payload("hello"))
	var p nat.Packet
	if err := p.Decode(frame); err != nil {
		t.Fatal(err)
	}
	p.SetSrc(nat.Addr4{10, 1, 2, 3})
	p.SetDst(nat.Addr4{10, 9, 8, 7})
	u := frame[p.L4 : p.L4+p.L4Len]
	want := ^nat.Fold(nat.Checksum(u[:6], nat.Checksum(u[8:], nat.PseudoHeaderSum(p.Src, p.Dst, nat.ProtoUDP, uint16(len(u))))))
	if got := binary.BigEndian.Uint16(u[6:]); got != want {
		t.Errorf("UDP checksum %#04x, want %#04x", got, want)
	}
	// A zero UDP checksum means none and must stay zero.
	u[6], u[7] = 0, 0
	p.SetSrc(ipC)
	if u[6] != 0 || u[7] != 0 {
		t.Error("zero UDP checksum was changed")
	}
}
