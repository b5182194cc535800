package nat_test

import (
	"testing"

	"tslb/nat"
)

// benchFrame is a 1,460-byte-payload ACK carrying NOP NOP TS.
func benchFrame() []byte {
	return buildTCP(tcpSpec{src: ipC, dst: ipV, sport: 40000, dport: 443, seq: 1, ack: 2,
		flags: nat.TCPFlagACK, win: 501, opts: tsOpts(100, 200), payload: make([]byte, 1460)})
}

func BenchmarkDecode(b *testing.B) {
	frame := benchFrame()
	var p nat.Packet
	b.ReportAllocs()
	b.SetBytes(int64(len(frame)))
	for b.Loop() {
		if err := p.Decode(frame); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRewriteSNAT is the per-packet work of the client->backend
// direction: decode, rewrite both addresses and ports with SetTuple, and
// translate the timestamps, in full checksum mode. The budget is 30 ns/op
// and 0 allocs/op.
func BenchmarkRewriteSNAT(b *testing.B) {
	frame := benchFrame()
	var p nat.Packet
	snat, backend := nat.Addr4{10, 0, 0, 1}, nat.Addr4{10, 0, 0, 2}
	b.ReportAllocs()
	var i uint32
	for b.Loop() {
		if err := p.Decode(frame); err != nil {
			b.Fatal(err)
		}
		p.SetTuple(snat, 33333, backend, 8443)
		i++
		p.SetTimestamps(i, i+1)
	}
}

// BenchmarkRewriteSNATSetters is BenchmarkRewriteSNAT with the four
// single-field setters (four TCP checksum updates) instead of SetTuple,
// kept for comparison.
func BenchmarkRewriteSNATSetters(b *testing.B) {
	frame := benchFrame()
	var p nat.Packet
	snat, backend := nat.Addr4{10, 0, 0, 1}, nat.Addr4{10, 0, 0, 2}
	b.ReportAllocs()
	var i uint32
	for b.Loop() {
		if err := p.Decode(frame); err != nil {
			b.Fatal(err)
		}
		p.SetSrc(snat)
		p.SetDst(backend)
		p.SetSrcPort(33333)
		p.SetDstPort(8443)
		i++
		p.SetTimestamps(i, i+1)
	}
}

// benchFrame6 is benchFrame over IPv6: [2001:db8::10]:40000 ->
// [2001:db8:1::1]:443, 1,460 bytes of payload, NOP NOP TS.
func benchFrame6() []byte {
	return buildTCP6(tcp6Spec{src: ip6C, dst: ip6V, sport: 40000, dport: 443, seq: 1, ack: 2,
		flags: nat.TCPFlagACK, win: 501, opts: tsOpts(100, 200), payload: make([]byte, 1460)})
}

func BenchmarkDecode6(b *testing.B) {
	frame := benchFrame6()
	var p nat.Packet
	b.ReportAllocs()
	b.SetBytes(int64(len(frame)))
	for b.Loop() {
		if err := p.Decode(frame); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDecode6Ext is BenchmarkDecode6 behind a Hop-by-Hop and a
// Destination Options header: the cost of the extension-header walk.
func BenchmarkDecode6Ext(b *testing.B) {
	frame := buildTCP6(tcp6Spec{src: ip6C, dst: ip6V, sport: 40000, dport: 443, seq: 1, ack: 2, ext: []extHdr{hbh(), destOpts()},
		flags: nat.TCPFlagACK, win: 501, opts: tsOpts(100, 200), payload: make([]byte, 1460)})
	var p nat.Packet
	b.ReportAllocs()
	for b.Loop() {
		if err := p.Decode(frame); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRewriteSNAT6 is BenchmarkRewriteSNAT over IPv6: decode,
// SetTuple6 (sixteen address words and two port words, one TCP checksum
// update, no IP checksum), the timestamps. The goal is 1.2x the IPv4
// figure at most, 0 allocs/op.
func BenchmarkRewriteSNAT6(b *testing.B) {
	frame := benchFrame6()
	var p nat.Packet
	snat, backend := addr16("2001:db8:2::1"), addr16("2001:db8:3::2")
	b.ReportAllocs()
	var i uint32
	for b.Loop() {
		if err := p.Decode(frame); err != nil {
			b.Fatal(err)
		}
		p.SetTuple6(snat, 33333, backend, 8443)
		i++
		p.SetTimestamps(i, i+1)
	}
}

// BenchmarkRewriteSNATSetters6 is BenchmarkRewriteSNATSetters over IPv6.
func BenchmarkRewriteSNATSetters6(b *testing.B) {
	frame := benchFrame6()
	var p nat.Packet
	snat, backend := addr16("2001:db8:2::1"), addr16("2001:db8:3::2")
	b.ReportAllocs()
	var i uint32
	for b.Loop() {
		if err := p.Decode(frame); err != nil {
			b.Fatal(err)
		}
		p.SetSrc6(snat)
		p.SetDst6(backend)
		p.SetSrcPort(33333)
		p.SetDstPort(8443)
		i++
		p.SetTimestamps(i, i+1)
	}
}

// BenchmarkRewriteSNATTSOffset is the client->backend work of a flow in
// rewrite mode with ISN translation: decode, SetTuple, and
// Translation.ClientToBackend (seq + SeqDelta, TSval + TSOff, one checksum
// update for both).
func BenchmarkRewriteSNATTSOffset(b *testing.B) {
	frame := benchFrame()
	var p nat.Packet
	snat, backend := nat.Addr4{10, 0, 0, 1}, nat.Addr4{10, 0, 0, 2}
	x := nat.Translation{SeqDelta: 0x1234_5678, TS: nat.TSActOffset, TSOff: 0x9abc_def0}
	b.ReportAllocs()
	for b.Loop() {
		if err := p.Decode(frame); err != nil {
			b.Fatal(err)
		}
		p.SetTuple(snat, 33333, backend, 8443)
		if _, err := x.ClientToBackend(&p, 0); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRewriteSNATTSOffset6 is BenchmarkRewriteSNATTSOffset over IPv6
// with SetTuple6.
func BenchmarkRewriteSNATTSOffset6(b *testing.B) {
	frame := benchFrame6()
	var p nat.Packet
	snat, backend := addr16("2001:db8:2::1"), addr16("2001:db8:3::2")
	x := nat.Translation{SeqDelta: 0x1234_5678, TS: nat.TSActOffset, TSOff: 0x9abc_def0}
	b.ReportAllocs()
	for b.Loop() {
		if err := p.Decode(frame); err != nil {
			b.Fatal(err)
		}
		p.SetTuple6(snat, 33333, backend, 8443)
		if _, err := x.ClientToBackend(&p, 0); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkStripTimestamps(b *testing.B) {
	frame := benchFrame()
	orig := append([]byte(nil), frame[:80]...)
	var p nat.Packet
	if err := p.Decode(frame); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		copy(frame, orig) // restore the TS option (headers only)
		if !p.StripTimestamps() {
			b.Fatal("no TS")
		}
	}
}

func BenchmarkTCPOptions(b *testing.B) {
	frame := buildTCP(tcpSpec{src: ipC, dst: ipV, opts: []byte{2, 4, 5, 0xb4, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 7}})
	var p nat.Packet
	if err := p.Decode(frame); err != nil {
		b.Fatal(err)
	}
	var o nat.TCPOptions
	b.ReportAllocs()
	for b.Loop() {
		if err := p.TCPOptions(&o); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkChecksum1500(b *testing.B) {
	buf := make([]byte, 1500)
	b.ReportAllocs()
	b.SetBytes(int64(len(buf)))
	for b.Loop() {
		_ = nat.Checksum(buf, 0)
	}
}

func BenchmarkTrackerUpdate(b *testing.B) {
	var tr nat.Tracker
	tr.Update(nat.SideClient, nat.TCPFlagSYN, 1, 0, 0, 0, false)
	tr.Update(nat.SideBackend, nat.TCPFlagSYN|nat.TCPFlagACK, 100, 2, 0, 0, false)
	b.ReportAllocs()
	var seq uint32 = 2
	for b.Loop() {
		tr.Update(nat.SideClient, nat.TCPFlagACK, seq, 101, 1460, seq, true)
		seq += 1460
	}
}
