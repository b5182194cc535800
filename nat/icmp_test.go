package nat_test

import (
	"encoding/binary"
	"slices"
	"testing"

	"tslb/nat"
)

func TestEchoReply(t *testing.T) {
	frame := slices.Clone(goldenPing)
	var p nat.Packet
	if err := p.Decode(frame); err != nil {
		t.Fatal(err)
	}
	if !p.EchoReply() {
		t.Fatal("EchoReply = false")
	}
	want := []byte{
		0x02, 0, 0, 0, 0, 0x0a, 0x02, 0, 0, 0, 0, 0x0b, 0x08, 0x00, // MACs swapped
		0x45, 0x00, 0x00, 0x1e, 0x00, 0x01, 0x00, 0x00,
		0x40, 0x01, // TTL 64, ICMP
		0x00, 0x00, // checksum: filled in below from the reference
		198, 51, 100, 1, 192, 0, 2, 10, // addresses swapped
		0x00, 0x00, // echo reply
		0x97, 0x93, // ICMP checksum: 0x8f93 + 0x0800
		0x00, 0x01, 0x00, 0x02, 'h', 'i',
	}
	binary.BigEndian.PutUint16(want[24:], nat.IPv4(want[14:]).ComputeChecksum())
	if !slices.Equal(frame, want) {
		t.Errorf("reply\n% x\nwant\n% x", frame, want)
	}
	if p.Src != ipV || p.Dst != ipC {
		t.Error("Packet addresses not swapped")
	}
	if nat.Fold(nat.Checksum(frame[34:], 0)) != 0xffff {
		t.Error("reply ICMP checksum does not verify")
	}
	// A reply is not a request.
	if p.EchoReply() {
		t.Error("EchoReply accepted an echo reply")
	}
}

func TestEchoReplyRejects(t *testing.T) {
	for name, f := range map[string][]byte{
		"bad_checksum": edit(goldenPing, func(b []byte) { b[37] ^= 1 }),
		"code_1":       edit(goldenPing, func(b []byte) { b[35] = 1; b[37] -= 1 }),
		"tcp":          goldenSYN,
		"arp":          goldenARP,
	} {
		var p nat.Packet
		if err := p.Decode(slices.Clone(f)); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		before := slices.Clone(p.Frame)
		if p.EchoReply() {
			t.Errorf("%s: EchoReply = true", name)
		}
		if !slices.Equal(before, p.Frame) {
			t.Errorf("%s: frame changed", name)
		}
	}
}

// icmpErrorFrame builds a frag-needed (3/4) from 203.0.113.1 to the SNAT
// address 10.0.0.1 quoting the first quote bytes of a TCP segment
// 10.0.0.1:40000 -> 10.0.0.2:80 with the given seq.
func icmpErrorFrame(quote int) []byte {
	inner := buildTCP(tcpSpec{src: nat.Addr4{10, 0, 0, 1}, dst: nat.Addr4{10, 0, 0, 2}, sport: 40000, dport: 80,
		seq: 0x11111111, ack: 0x22222222, flags: nat.TCPFlagACK, opts: tsOpts(5, 6), payload: []byte("payload!")})[14:]
	q := inner[:quote]
	f := make([]byte, 14+20+8+len(q))
	copy(f[0:6], macB[:])
	copy(f[6:12], macA[:])
	binary.BigEndian.PutUint16(f[12:], nat.EtherTypeIPv4)
	ip := f[14:34]
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], uint16(20+8+len(q)))
	ip[8], ip[9] = 64, nat.ProtoICMP
	copy(ip[12:], []byte{203, 0, 113, 1})
	copy(ip[16:], []byte{10, 0, 0, 1})
	nat.IPv4(ip).SetChecksum(nat.IPv4(ip).ComputeChecksum())
	m := f[34:]
	m[0], m[1] = 3, 4
	binary.BigEndian.PutUint16(m[6:], 1400) // next-hop MTU
	copy(m[8:], q)
	nat.ICMP(m).SetChecksum(^nat.Fold(nat.Checksum(m, 0)))
	return f
}

func TestICMPError(t *testing.T) {
	var fullCsum uint16                           // the quoted TCP checksum after rewrite, whole-segment case
	for _, quote := range []int{60, 28, 36, 40} { // 8 bytes of TCP, no checksum; checksum; full header; whole segment
		frame := icmpErrorFrame(quote)
		var p nat.Packet
		if err := p.Decode(frame); err != nil {
			t.Fatal(err)
		}
		var e nat.ICMPError
		if err := p.ParseICMPError(&e); err != nil {
			t.Fatalf("quote %d: %v", quote, err)
		}
		if e.Type != 3 || e.Code != 4 || e.InnerSrc != (nat.Addr4{10, 0, 0, 1}) || e.InnerDst != (nat.Addr4{10, 0, 0, 2}) ||
			e.InnerProto != nat.ProtoTCP || e.InnerSrcPort != 40000 || e.InnerDstPort != 80 || e.InnerSeq != 0x11111111 || !e.HasSeq {
			t.Fatalf("quote %d: %+v", quote, e)
		}
		// Translate back to the client's view: 192.0.2.10:5555 -> VIP:443, seq - 0x1000.
		n := testing.AllocsPerRun(1, func() {
			p.RewriteICMPError(&e, ipC, 5555, ipV, 443, 0x11111111-0x1000)
		})
		if n != 0 {
			t.Errorf("RewriteICMPError allocs = %v", n)
		}
		var e2 nat.ICMPError
		if err := p.ParseICMPError(&e2); err != nil {
			t.Fatal(err)
		}
		if e2 != e || e2.InnerSrc != ipC || e2.InnerDst != ipV || e2.InnerSrcPort != 5555 || e2.InnerDstPort != 443 || e2.InnerSeq != 0x11110111 {
			t.Errorf("quote %d: after rewrite %+v (e %+v)", quote, e2, e)
		}
		in := frame[42:]
		if got, want := nat.IPv4(in).Checksum(), nat.IPv4(in).ComputeChecksum(); got != want {
			t.Errorf("quote %d: quoted IPv4 checksum %#x, want %#x", quote, got, want)
		}
		if quote == 60 { // whole segment quoted: its checksum must verify
			seg := nat.TCP(in[20:])
			if got, want := seg.Checksum(), nat.TCPChecksum(ipC, ipV, seg); got != want {
				t.Errorf("quoted TCP checksum %#x, want %#x", got, want)
			}
			fullCsum = seg.Checksum()
		}
		if quote == 40 { // truncated after the checksum: same incremental result
			if got := nat.TCP(in[20:]).Checksum(); got != fullCsum {
				t.Errorf("truncated quote: TCP checksum %#x, want %#x", got, fullCsum)
			}
		}
		if nat.Fold(nat.Checksum(frame[34:], 0)) != 0xffff {
			t.Errorf("quote %d: ICMP checksum does not verify", quote)
		}
		checkFull(t, frame)
	}
}

func TestICMPErrorRejects(t *testing.T) {
	tests := map[string]struct {
		frame []byte
		err   error
	}{
		"echo":                 {goldenPing, nat.ErrNotICMPError},
		"tcp":                  {goldenSYN, nat.ErrNotICMPError},
		"short_quote":          {icmpErrorFrame(27), nat.ErrShortICMP},
		"no_ip":                {icmpErrorFrame(19), nat.ErrShortICMP},
		"inner_v6":             {edit(icmpErrorFrame(28), func(b []byte) { b[42] = 0x65 }), nat.ErrNotICMPError},
		"inner_ihl_3":          {edit(icmpErrorFrame(28), func(b []byte) { b[42] = 0x43 }), nat.ErrNotICMPError},
		"inner_ihl_past_quote": {edit(icmpErrorFrame(28), func(b []byte) { b[42] = 0x46 }), nat.ErrShortICMP},
		"inner_icmp":           {edit(icmpErrorFrame(28), func(b []byte) { b[42+9] = 1 }), nat.ErrNotICMPError},
		"type_5":               {edit(icmpErrorFrame(28), func(b []byte) { b[34] = 5 }), nat.ErrNotICMPError},
	}
	for name, tt := range tests {
		var p nat.Packet
		frame := slices.Clone(tt.frame)
		if err := p.Decode(frame); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		var e nat.ICMPError
		if err := p.ParseICMPError(&e); err != tt.err {
			t.Errorf("%s: err = %v, want %v", name, err, tt.err)
		}
		before := slices.Clone(frame)
		p.RewriteICMPError(&e, ipC, 1, ipV, 2, 3)
		if !slices.Equal(before, frame) {
			t.Errorf("%s: RewriteICMPError changed a rejected packet", name)
		}
	}
}
