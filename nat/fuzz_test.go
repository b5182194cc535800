package nat_test

import (
	"encoding/binary"
	"slices"
	"testing"

	"tslb/nat"
)

// FuzzDecode runs Decode and every parser and rewrite on arbitrary frames:
// nothing may panic, and no call may grow the frame.
func FuzzDecode(f *testing.F) {
	f.Add(goldenSYN, false)
	f.Add(goldenARP, false)
	f.Add(goldenPing, false)
	f.Add(icmpErrorFrame(60), false)
	f.Add(icmpErrorFrame(28), true)
	f.Add(buildTCP(tcpSpec{src: ipC, dst: ipV, opts: tsOpts(1, 2), payload: []byte("x")}), true)
	f.Add(buildTCP(tcpSpec{src: ipC, dst: ipV, opts: []byte{1, 1, 5, 10, 0, 0, 0, 1, 0, 0, 0, 2}}), false)
	// VLAN tag, IHL 15 past the end, data offset 15 past the end.
	f.Add(edit(goldenSYN, func(b []byte) { b[12], b[13] = 0x81, 0 }), false)
	f.Add(edit(goldenSYN, func(b []byte) { b[14] = 0x4f }), false)
	f.Add(edit(goldenSYN, func(b []byte) { b[46] = 0xf0 }), false)
	f.Fuzz(func(t *testing.T, frame []byte, partial bool) {
		n := len(frame)
		p := nat.Packet{PartialCsum: partial}
		if err := p.Decode(frame); err != nil {
			_ = nat.Reason(err)
		}
		var o nat.TCPOptions
		_ = p.TCPOptions(&o)
		p.SetSrc(nat.Addr4{1, 2, 3, 4})
		p.SetDst(nat.Addr4{5, 6, 7, 8})
		p.SetSrcPort(1)
		p.SetDstPort(2)
		p.SetSeq(3)
		p.SetAck(4)
		p.DecTTL()
		p.SetTimestamps(5, 6)
		p.SetSACKBlock(0, nat.SACKBlock{Start: 7, End: 8})
		p.SetMSS(1400)
		p.StripTimestamps()
		var e nat.ICMPError
		if p.ParseICMPError(&e) == nil {
			p.RewriteICMPError(&e, nat.Addr4{9, 9, 9, 9}, 10, nat.Addr4{11, 11, 11, 11}, 12, e.InnerSeq+1)
		}
		p.EchoReply()
		if len(p.Frame) > n || len(frame) != n {
			t.Fatalf("frame grew from %d to %d", n, len(p.Frame))
		}
		nat.CompletePartial(frame, p.L4, 16)
	})
}

// FuzzParseTCPOptions checks that what parses also round-trips through
// WriteTCPOptions with the same known fields, when it fits.
func FuzzParseTCPOptions(f *testing.F) {
	f.Add([]byte{2, 4, 5, 0xb4, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 7})
	f.Add([]byte{1, 1, 8, 10, 1, 2, 3, 4, 5, 6, 7, 8})
	f.Add([]byte{1, 1, 5, 18, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 4})
	f.Add([]byte{30, 1})
	f.Add([]byte{0})
	f.Fuzz(func(t *testing.T, opts []byte) {
		var o nat.TCPOptions
		if err := nat.ParseTCPOptions(opts, &o); err != nil {
			return
		}
		var buf [nat.MaxOptionsLen]byte
		n := nat.WriteTCPOptions(buf[:], &o)
		if n < 0 {
			return // MSS+SACK-permitted+TS+WScale always fit, but be lenient
		}
		if n > nat.MaxOptionsLen || n%4 != 0 {
			t.Fatalf("WriteTCPOptions wrote %d bytes", n)
		}
		var o2 nat.TCPOptions
		if err := nat.ParseTCPOptions(buf[:n], &o2); err != nil {
			t.Fatalf("reparse of % x: %v", buf[:n], err)
		}
		if o.HasMSS != o2.HasMSS || o.MSS != o2.MSS || o.HasWScale != o2.HasWScale || o.WScale != o2.WScale ||
			o.SACKPermitted != o2.SACKPermitted || o.HasTS != o2.HasTS || o.TSVal != o2.TSVal || o.TSEcr != o2.TSEcr {
			t.Fatalf("round trip changed fields:\n%+v\n%+v", o, o2)
		}
		if o2.NumSACK > o.NumSACK || !slices.Equal(o2.SACK[:o2.NumSACK], o.SACK[:o2.NumSACK]) {
			t.Fatalf("SACK blocks: %v -> %v", o.SACK[:o.NumSACK], o2.SACK[:o2.NumSACK])
		}
		if o.NumSACK > 0 && o2.NumSACK == 0 && !o.HasTS && !o.HasMSS {
			t.Fatalf("SACK blocks dropped although they fit")
		}
	})
}

// FuzzChecksumIncremental applies random edits in full mode to a valid
// segment and compares the checksums with a full recompute.
func FuzzChecksumIncremental(f *testing.F) {
	f.Add([]byte("payload"), uint32(1), uint32(2), uint16(3), uint16(4), uint32(5), uint32(6), uint32(7), uint8(0xff))
	f.Add([]byte{}, uint32(0), uint32(0xffffffff), uint16(0), uint16(0xffff), uint32(0), uint32(0xffffffff), uint32(0), uint8(1))
	f.Fuzz(func(t *testing.T, payload []byte, src, dst uint32, sport, dport uint16, seq, ack, ts uint32, which uint8) {
		if len(payload) > 9000 {
			payload = payload[:9000]
		}
		frame := buildTCP(tcpSpec{src: ipC, dst: ipV, sport: 1, dport: 2, seq: 3, ack: 4,
			opts: []byte{1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2, 1, 2, 4, 5, 0xb4}, payload: payload})
		var p nat.Packet
		if err := p.Decode(frame); err != nil {
			t.Fatal(err)
		}
		var a, b nat.Addr4
		binary.BigEndian.PutUint32(a[:], src)
		binary.BigEndian.PutUint32(b[:], dst)
		edits := []func(){
			func() { p.SetSrc(a) }, func() { p.SetDst(b) }, func() { p.SetSrcPort(sport) },
			func() { p.SetDstPort(dport) }, func() { p.SetSeq(seq) }, func() { p.SetAck(ack) },
			func() { p.SetTimestamps(ts, ^ts) }, func() { p.SetMSS(uint16(ts)) },
		}
		for i, e := range edits {
			if which&(1<<i) != 0 {
				e()
			}
		}
		if which&1 == 0 {
			p.StripTimestamps()
		}
		checkFull(t, frame)
	})
}
