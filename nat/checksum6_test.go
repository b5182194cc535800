package nat_test

import (
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"tslb/nat"
)

func TestPseudoHeaderSum6Known(t *testing.T) {
	// The pseudo header of goldenSYN6, summed independently (Python): 0x5ba2.
	if got := nat.Fold(nat.PseudoHeaderSum6(ip6C, ip6V, nat.ProtoTCP, 24)); got != 0x5ba2 {
		t.Errorf("PseudoHeaderSum6 = %#04x, want 0x5ba2", got)
	}
	if got := nat.TCPChecksum6(ip6C, ip6V, goldenSYN6[54:]); got != 0x9eff {
		t.Errorf("TCPChecksum6 = %#04x, want 0x9eff", got)
	}
	r := rand.New(rand.NewPCG(63, 64))
	for range 1000 {
		src, dst := randAddr16(r, ip6C), randAddr16(r, ip6V)
		l := r.Uint32()
		if r.IntN(2) == 0 {
			l &= 0xffff
		}
		nh := uint8(r.Uint32())
		s := nat.PseudoHeaderSum6(src, dst, nh, l)
		if s >= 1<<18 {
			t.Fatalf("sum %#x not below 2^18", s)
		}
		// The upper-layer length is 32 bits (RFC 8200 §8.1).
		if got, want := nat.Fold(s), refSum(pseudo6(src, dst, int(l), nh)); got != want && !(got == 0xffff && want == 0) && !(got == 0 && want == 0xffff) {
			t.Fatalf("PseudoHeaderSum6(%v, %v, %d, %#x) folds to %#04x, want %#04x", src, dst, nh, l, got, want)
		}
	}
}

// TestChecksums6MatchGopacket builds IPv6 TCP segments with gopacket's
// ComputeChecksums and compares TCPChecksum6 and the slow reference.
func TestChecksums6MatchGopacket(t *testing.T) {
	r := rand.New(rand.NewPCG(65, 66))
	for i := range 200 {
		src, dst := randAddr16(r, ip6C), randAddr16(r, ip6V)
		ip := &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: layers.IPProtocolTCP, SrcIP: src[:], DstIP: dst[:]}
		tcp := &layers.TCP{
			SrcPort: layers.TCPPort(r.Uint32()), DstPort: layers.TCPPort(r.Uint32()),
			Seq: r.Uint32(), Ack: r.Uint32(), ACK: true, PSH: i%2 == 0, Window: uint16(r.Uint32()),
			Options: []layers.TCPOption{nopOpt, nopOpt, tsOpt(r.Uint32(), r.Uint32())},
		}
		if err := tcp.SetNetworkLayerForChecksum(ip); err != nil {
			t.Fatal(err)
		}
		payload := make([]byte, r.IntN(1400)+i%2)
		for j := range payload {
			payload[j] = byte(r.Uint32())
		}
		frame := serialize6(t, ip, tcp, gopacket.Payload(payload))
		seg := nat.TCP(frame[54:])
		if got, want := nat.TCPChecksum6(src, dst, seg), seg.Checksum(); got != want {
			t.Fatalf("TCPChecksum6 = %#04x, gopacket %#04x", got, want)
		}
		checkFull6(t, frame)
	}
}

// randomEdit6 applies one random rewrite to the IPv6 packet p and returns
// its name.
func randomEdit6(r *rand.Rand, p *nat.Packet) string {
	switch r.IntN(12) {
	case 0:
		p.SetSrc6(randAddr16(r, p.Src6))
		return "SetSrc6"
	case 1:
		p.SetDst6(randAddr16(r, p.Dst6))
		return "SetDst6"
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
	case 9, 10:
		p.SetTuple6(randAddr16(r, p.Src6), uint16(r.Uint32()), randAddr16(r, p.Dst6), uint16(r.Uint32()))
		return "SetTuple6"
	default:
		if r.IntN(4) == 0 {
			p.StripTimestamps()
			return "StripTimestamps"
		}
		p.SetMSS(uint16(r.Uint32()))
		return "SetMSS"
	}
}

// checkFields6 fails t unless p's decoded fields match the frame.
func checkFields6(t *testing.T, p *nat.Packet, what string) {
	t.Helper()
	ip := nat.IPv6(p.Frame[14:])
	tcp := nat.TCP(p.Frame[p.L4:])
	if p.Src6 != ip.Src() || p.Dst6 != ip.Dst() || p.SrcPort != tcp.SrcPort() || p.DstPort != tcp.DstPort() ||
		p.Seq != tcp.Seq() || p.Ack != tcp.Ack() || p.TTL() != ip.HopLimit() {
		t.Fatalf("%s: Packet fields out of sync", what)
	}
}

func TestRewrite6FullMatchesRecompute(t *testing.T) {
	r := rand.New(rand.NewPCG(67, 68))
	for range 1000 {
		frame := randTCP6(r, false)
		var p nat.Packet
		if err := p.Decode(frame); err != nil {
			t.Fatal(err)
		}
		var names []string
		for range 1 + r.IntN(5) {
			names = append(names, randomEdit6(r, &p))
			checkFull6(t, frame)
			checkFields6(t, &p, names[len(names)-1])
		}
	}
}

func TestRewrite6PartialMatchesRecompute(t *testing.T) {
	r := rand.New(rand.NewPCG(69, 70))
	for range 1000 {
		frame := randTCP6(r, true)
		p := nat.Packet{PartialCsum: true}
		if err := p.Decode(frame); err != nil {
			t.Fatal(err)
		}
		checkPartial6(t, frame)
		var names []string
		for range 1 + r.IntN(5) {
			names = append(names, randomEdit6(r, &p))
			checkPartial6(t, frame)
			checkFields6(t, &p, names[len(names)-1])
		}
	}
}

func TestPartial6PortEditLeavesField(t *testing.T) {
	frame := buildTCP6(tcp6Spec{src: ip6C, dst: ip6V, sport: 1, dport: 2, opts: tsOpts(1, 2), ext: []extHdr{hbh()}, partial: true})
	p := nat.Packet{PartialCsum: true}
	if err := p.Decode(frame); err != nil {
		t.Fatal(err)
	}
	field := func() uint16 { return nat.TCP(frame[p.L4:]).Checksum() }
	before := field()
	p.SetSrcPort(9)
	p.SetDstPort(9)
	p.SetSeq(9)
	p.SetAck(9)
	p.SetTimestamps(9, 9)
	p.StripTimestamps()
	p.DecTTL()
	if got := field(); got != before {
		t.Errorf("partial checksum changed from %#x to %#x by non-pseudo-header edits", before, got)
	}
	p.SetSrc6(ip6LL)
	if got := field(); got == before {
		t.Error("partial checksum unchanged by an address edit")
	}
	checkPartial6(t, frame)
}

func TestDecTTL6(t *testing.T) {
	for _, tt := range []struct {
		hl   uint8
		ok   bool
		want uint8
	}{{64, true, 63}, {2, true, 1}, {1, false, 1}, {0, false, 0}, {255, true, 254}} {
		frame := buildTCP6(tcp6Spec{src: ip6C, dst: ip6V, hopLimit: tt.hl, ext: []extHdr{destOpts()}})
		frame[21] = tt.hl // buildTCP6 turns 0 into 64
		var p nat.Packet
		if err := p.Decode(frame); err != nil {
			t.Fatal(err)
		}
		if p.TTL() != tt.hl {
			t.Errorf("TTL() = %d, want %d", p.TTL(), tt.hl)
		}
		if got := p.DecTTL(); got != tt.ok || frame[21] != tt.want || p.TTL() != tt.want {
			t.Errorf("hop limit %d: DecTTL = %v, now %d; want %v, %d", tt.hl, got, frame[21], tt.ok, tt.want)
		}
		checkFull6(t, frame)
	}
	// Neither family's DecTTL touches ARP or an undecoded packet.
	for name, frame := range map[string][]byte{"arp": slices.Clone(goldenARP), "short": make([]byte, 20)} {
		var p nat.Packet
		_ = p.Decode(frame)
		orig := slices.Clone(frame)
		if p.DecTTL() || p.TTL() != 0 || !slices.Equal(orig, frame) {
			t.Errorf("%s: DecTTL/TTL acted", name)
		}
	}
}

// TestSettersStayInFamily checks that the IPv4 address setters leave an
// IPv6 packet alone and the IPv6 ones an IPv4 packet.
func TestSettersStayInFamily(t *testing.T) {
	f6 := slices.Clone(goldenSYN6)
	f4 := slices.Clone(goldenSYN)
	var p6, p4 nat.Packet
	if p6.Decode(f6) != nil || p4.Decode(f4) != nil {
		t.Fatal("Decode")
	}
	p6.SetSrc(ipV)
	p6.SetDst(ipC)
	p6.SetTuple(ipV, 1, ipC, 2)
	p4.SetSrc6(ip6V)
	p4.SetDst6(ip6C)
	p4.SetTuple6(ip6V, 1, ip6C, 2)
	if !slices.Equal(f6, goldenSYN6) || !slices.Equal(f4, goldenSYN) || p6.Src != (nat.Addr4{}) || p4.Src6 != (nat.Addr16{}) {
		t.Error("a setter of the other family changed the packet")
	}
}

func TestRewrite6NoAllocs(t *testing.T) {
	frame := buildTCP6(tcp6Spec{src: ip6C, dst: ip6V, sport: 1, dport: 2, opts: tsOpts(1, 2), payload: make([]byte, 100)})
	var p nat.Packet
	if err := p.Decode(frame); err != nil {
		t.Fatal(err)
	}
	for _, partial := range []bool{false, true} {
		p.PartialCsum = partial
		n := testing.AllocsPerRun(100, func() {
			p.SetSrc6(ip6V)
			p.SetDst6(ip6C)
			p.SetTuple6(ip6C, 5, ip6V, 6)
			p.SetSrcPort(3)
			p.SetDstPort(4)
			p.SetSeq(5)
			p.SetAck(6)
			p.DecTTL()
			_ = p.TTL()
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
