package nat_test

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"tslb/nat"
)

var (
	trClient  = nat.Addr4{203, 0, 113, 7}
	trVIP     = nat.Addr4{198, 51, 100, 10}
	trSNAT    = nat.Addr4{10, 0, 0, 1}
	trBackend = nat.Addr4{10, 0, 1, 2}
)

// trSeg describes a segment for trGopacket (opts) or trRaw (raw).
type trSeg struct {
	src, dst     nat.Addr4
	sport, dport uint16
	seq, ack     uint32
	flags        uint8
	opts         []layers.TCPOption // gopacket options (short lists only)
	payload      []byte
}

// trGopacket builds an Ethernet/IPv4/TCP frame with gopacket, with
// `spare` bytes of extra capacity for growth.
func trGopacket(t testing.TB, s trSeg, spare int) []byte {
	t.Helper()
	ip := &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Id: 77, Flags: layers.IPv4DontFragment,
		Protocol: layers.IPProtocolTCP, SrcIP: s.src.Netip().AsSlice(), DstIP: s.dst.Netip().AsSlice()}
	tcp := &layers.TCP{SrcPort: layers.TCPPort(s.sport), DstPort: layers.TCPPort(s.dport),
		Seq: s.seq, Ack: s.ack, Window: 64240, Options: s.opts,
		FIN: s.flags&nat.TCPFlagFIN != 0, SYN: s.flags&nat.TCPFlagSYN != 0, RST: s.flags&nat.TCPFlagRST != 0,
		PSH: s.flags&nat.TCPFlagPSH != 0, ACK: s.flags&nat.TCPFlagACK != 0}
	if err := tcp.SetNetworkLayerForChecksum(ip); err != nil {
		t.Fatal(err)
	}
	eth := &layers.Ethernet{SrcMAC: macA[:], DstMAC: macB[:], EthernetType: layers.EthernetTypeIPv4}
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{ComputeChecksums: true, FixLengths: true},
		eth, ip, tcp, gopacket.Payload(s.payload)); err != nil {
		t.Fatal(err)
	}
	return withSpare(buf.Bytes(), spare)
}

// trRaw builds the frame by hand with raw option bytes (a multiple of 4),
// for option lists gopacket cannot serialise.
func trRaw(s trSeg, raw []byte, spare int) []byte {
	f := buildTCP(tcpSpec{srcMAC: macA, dstMAC: macB, src: s.src, dst: s.dst, sport: s.sport, dport: s.dport,
		seq: s.seq, ack: s.ack, flags: s.flags, win: 502, opts: raw, payload: s.payload})
	return withSpare(f, spare)
}

func withSpare(f []byte, spare int) []byte {
	out := make([]byte, len(f), len(f)+spare)
	copy(out, f)
	return out
}

// trSum is an independent RFC 1071 sum (byte pairs, end-around carry).
func trSum(b []byte, s uint32) uint32 {
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	return s
}

// trDecoded is what an independent decode of a translated frame gives.
type trDecoded struct {
	tcp            *layers.TCP
	tsval, tsecr   uint32
	hasTS          bool
	mss            uint16
	hasMSS         bool
	sack           []nat.SACKBlock
	sackPerm, hasW bool
}

// trCheck decodes frame with gopacket, recomputes both checksums in full
// and fails t on any inconsistency (lengths, data offset, checksums).
func trCheck(t testing.TB, frame []byte) trDecoded {
	t.Helper()
	pkt := gopacket.NewPacket(frame, layers.LayerTypeEthernet, gopacket.Default)
	if el := pkt.ErrorLayer(); el != nil {
		t.Fatalf("gopacket: %v", el.Error())
	}
	ip, _ := pkt.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
	tcp, _ := pkt.Layer(layers.LayerTypeTCP).(*layers.TCP)
	if ip == nil || tcp == nil {
		t.Fatalf("gopacket found no IPv4/TCP")
	}
	if int(ip.Length) > len(frame)-14 {
		t.Fatalf("IPv4 total length %d, frame carries %d", ip.Length, len(frame)-14)
	}
	if s := trSum(frame[14:14+int(ip.IHL)*4], 0); s != 0xffff {
		t.Fatalf("IPv4 header checksum wrong (sum %#x)", s)
	}
	seg := frame[14+int(ip.IHL)*4 : 14+int(ip.Length)]
	ph := trSum(frame[26:34], 0) + nat.ProtoTCP + uint32(len(seg))
	if s := trSum(seg, ph); s != 0xffff {
		t.Fatalf("TCP checksum wrong (sum %#x)", s)
	}
	return trOptions(t, tcp)
}

// trOptions collects the options of tcp as gopacket decoded them, failing
// t on a repeated TS option or options past the data offset.
func trOptions(t testing.TB, tcp *layers.TCP) trDecoded {
	t.Helper()
	d := trDecoded{tcp: tcp}
	ol := 0
	for _, o := range tcp.Options {
		switch o.OptionType {
		case layers.TCPOptionKindEndList, layers.TCPOptionKindNop:
			ol++
			continue
		case layers.TCPOptionKindTimestamps:
			if d.hasTS {
				t.Fatalf("two TS options")
			}
			d.hasTS = true
			d.tsval = binary.BigEndian.Uint32(o.OptionData)
			d.tsecr = binary.BigEndian.Uint32(o.OptionData[4:])
		case layers.TCPOptionKindMSS:
			d.hasMSS, d.mss = true, binary.BigEndian.Uint16(o.OptionData)
		case layers.TCPOptionKindSACK:
			for i := 0; i+8 <= len(o.OptionData); i += 8 {
				d.sack = append(d.sack, nat.SACKBlock{Start: binary.BigEndian.Uint32(o.OptionData[i:]), End: binary.BigEndian.Uint32(o.OptionData[i+4:])})
			}
		case layers.TCPOptionKindSACKPermitted:
			d.sackPerm = true
		case layers.TCPOptionKindWindowScale:
			d.hasW = true
		}
		ol += int(o.OptionLength)
	}
	if ol > int(tcp.DataOffset)*4-20 {
		t.Fatalf("options %d bytes, data offset %d", ol, tcp.DataOffset)
	}
	return d
}

// trDecode decodes frame into p, failing t on error.
func trDecode(t testing.TB, p *nat.Packet, frame []byte, partial bool) {
	t.Helper()
	p.PartialCsum = partial
	if err := p.Decode(frame); err != nil {
		t.Fatalf("Decode: %v", err)
	}
}

// trPartial turns frame's TCP checksum into the CHECKSUM_PARTIAL form.
func trPartial(frame []byte) { makePartial(frame) }

// trComplete finishes a partial checksum like the kernel or NIC would.
func trComplete(frame []byte) {
	nat.CompletePartial(frame[:14+int(nat.IPv4(frame[14:]).TotalLen())], 34, 16)
}

func tsOpt(val, ecr uint32) layers.TCPOption {
	d := make([]byte, 8)
	binary.BigEndian.PutUint32(d, val)
	binary.BigEndian.PutUint32(d[4:], ecr)
	return layers.TCPOption{OptionType: layers.TCPOptionKindTimestamps, OptionLength: 10, OptionData: d}
}

func mssOpt(m uint16) layers.TCPOption {
	return layers.TCPOption{OptionType: layers.TCPOptionKindMSS, OptionLength: 4, OptionData: binary.BigEndian.AppendUint16(nil, m)}
}

var (
	sackPermOpt = layers.TCPOption{OptionType: layers.TCPOptionKindSACKPermitted, OptionLength: 2}
	wsOpt       = layers.TCPOption{OptionType: layers.TCPOptionKindWindowScale, OptionLength: 3, OptionData: []byte{7}}
	nopOpt      = layers.TCPOption{OptionType: layers.TCPOptionKindNop, OptionLength: 1}
)

func sackOpt(bs ...nat.SACKBlock) layers.TCPOption {
	var d []byte
	for _, b := range bs {
		d = binary.BigEndian.AppendUint32(d, b.Start)
		d = binary.BigEndian.AppendUint32(d, b.End)
	}
	return layers.TCPOption{OptionType: layers.TCPOptionKindSACK, OptionLength: uint8(2 + len(d)), OptionData: d}
}

// csumMode runs f in full and partial checksum mode.
func csumModes(t *testing.T, f func(t *testing.T, partial bool)) {
	t.Run("full", func(t *testing.T) { f(t, false) })
	t.Run("partial", func(t *testing.T) { f(t, true) })
}

// finish completes a partial checksum so trCheck can verify it, on a copy.
func finish(frame []byte, partial bool) []byte {
	out := append([]byte(nil), frame...)
	if partial {
		trComplete(out)
	}
	return out
}

func TestTranslateTSOffsetHandshake(t *testing.T) {
	csumModes(t, func(t *testing.T, partial bool) {
		const (
			cISN  = 0xfffffff0 // client ISN near the wrap
			bISN  = 0x00000010 // tslb's ISN toward the backend
			cTS   = 0xffffff00
			tsval = 0x00000100 // tslb's TSval: the offset wraps
			beISN = 0x7000_0000
			beTS  = 0xdead_beef
		)
		syn := trGopacket(t, trSeg{src: trSNAT, dst: trBackend, sport: 40000, dport: 80, seq: cISN, flags: nat.TCPFlagSYN,
			opts: []layers.TCPOption{mssOpt(1460), sackPermOpt, tsOpt(cTS, 0), nopOpt, wsOpt}}, 0)
		if partial {
			trPartial(syn)
		}
		var p nat.Packet
		trDecode(t, &p, syn, partial)
		var x nat.Translation
		grow, err := x.SetupSYN(&p, nat.TSRewrite, bISN, tsval)
		if err != nil || grow != 0 {
			t.Fatalf("SetupSYN = %d, %v", grow, err)
		}
		if cI, bI, cT, tv := uint32(cISN), uint32(bISN), uint32(cTS), uint32(tsval); x.TS != nat.TSActOffset || x.SeqDelta != bI-cI || x.TSOff != tv-cT {
			t.Fatalf("translation %+v", x)
		}
		d := trCheck(t, finish(p.Frame, partial))
		if d.tcp.Seq != bISN || !d.hasTS || d.tsval != tsval || d.tsecr != 0 || d.mss != 1460 || !d.sackPerm || !d.hasW {
			t.Fatalf("SYN toward backend: seq %#x ts %v %#x/%#x mss %d", d.tcp.Seq, d.hasTS, d.tsval, d.tsecr, d.mss)
		}
		if x.NextSeq != bISN+1 || !x.SentTS || x.LastTS != tsval {
			t.Errorf("state NextSeq %#x LastTS %#x", x.NextSeq, x.LastTS)
		}

		// The backend's SYN-ACK: ack and TSecr back to exactly the client's values.
		synack := trGopacket(t, trSeg{src: trBackend, dst: trSNAT, sport: 80, dport: 40000, seq: beISN, ack: bISN + 1,
			flags: nat.TCPFlagSYN | nat.TCPFlagACK, opts: []layers.TCPOption{mssOpt(1400), sackPermOpt, tsOpt(beTS, tsval), nopOpt, wsOpt}}, 0)
		if partial {
			trPartial(synack)
		}
		trDecode(t, &p, synack, partial)
		if err := x.BackendToClient(&p); err != nil {
			t.Fatal(err)
		}
		d = trCheck(t, finish(p.Frame, partial))
		if d.tcp.Ack != cISN+1 || d.tsecr != cTS || d.tsval != beTS || d.tcp.Seq != beISN || d.mss != 1400 {
			t.Fatalf("SYN-ACK toward client: ack %#x tsecr %#x tsval %#x mss %d", d.tcp.Ack, d.tsecr, d.tsval, d.mss)
		}

		// Established data (Linux NOP NOP TS layout: the fast path).
		data := trGopacket(t, trSeg{src: trSNAT, dst: trBackend, sport: 40000, dport: 80, seq: cISN + 1, ack: beISN + 1,
			flags: nat.TCPFlagACK | nat.TCPFlagPSH, opts: []layers.TCPOption{nopOpt, nopOpt, tsOpt(cTS+40, beTS)}, payload: bytes.Repeat([]byte("x"), 100)}, 0)
		if partial {
			trPartial(data)
		}
		trDecode(t, &p, data, partial)
		before := binary.BigEndian.Uint16(p.Frame[50:])
		if grow, err := x.ClientToBackend(&p, 0); err != nil || grow != 0 {
			t.Fatalf("ClientToBackend = %d, %v", grow, err)
		}
		if partial && binary.BigEndian.Uint16(p.Frame[50:]) != before {
			t.Errorf("partial mode: seq/TS change touched the checksum field")
		}
		d = trCheck(t, finish(p.Frame, partial))
		if d.tcp.Seq != bISN+1 || d.tsval != tsval+40 || d.tsecr != beTS || d.tcp.Ack != beISN+1 {
			t.Fatalf("data toward backend: seq %#x tsval %#x tsecr %#x", d.tcp.Seq, d.tsval, d.tsecr)
		}
		if x.NextSeq != bISN+101 || x.LastTS != tsval+40 {
			t.Errorf("state NextSeq %#x LastTS %#x", x.NextSeq, x.LastTS)
		}
	})
}

func TestTranslateTSSynth(t *testing.T) {
	csumModes(t, func(t *testing.T, partial bool) {
		var (
			cISN  uint32 = 1000
			bISN  uint32 = 0xffff_fff0
			tsval uint32 = 0xffff_fffe
			beTS  uint32 = 12345
		)
		syn := trGopacket(t, trSeg{src: trSNAT, dst: trBackend, sport: 1, dport: 2, seq: cISN, flags: nat.TCPFlagSYN,
			opts: []layers.TCPOption{mssOpt(1460), sackPermOpt, nopOpt, wsOpt}}, 64)
		if partial {
			trPartial(syn)
		}
		oldLen := len(syn)
		var p nat.Packet
		trDecode(t, &p, syn, partial)
		var x nat.Translation
		grow, err := x.SetupSYN(&p, nat.TSRewrite, bISN, tsval)
		if err != nil || grow != 12 {
			t.Fatalf("SetupSYN = %d, %v", grow, err)
		}
		if x.TS != nat.TSActSynth || len(p.Frame) != oldLen+12 || p.TCPHdrLen != 20+12+12 || p.L4Len != 20+24 {
			t.Fatalf("TS %v len %d hdr %d", x.TS, len(p.Frame), p.TCPHdrLen)
		}
		d := trCheck(t, finish(p.Frame, partial))
		if d.tcp.DataOffset != 11 || !d.hasTS || d.tsval != tsval || d.tsecr != 0 || d.mss != 1460 || !d.sackPerm || !d.hasW || d.tcp.Seq != bISN {
			t.Fatalf("SYN toward backend: doff %d ts %v %d/%d seq %#x", d.tcp.DataOffset, d.hasTS, d.tsval, d.tsecr, d.tcp.Seq)
		}
		var q nat.Packet
		trDecode(t, &q, p.Frame, partial) // re-decodes with nat too

		// Backend SYN-ACK: MSS clamped, TS recorded and NOPed out.
		synack := trGopacket(t, trSeg{src: trBackend, dst: trSNAT, sport: 2, dport: 1, seq: 77, ack: bISN + 1,
			flags: nat.TCPFlagSYN | nat.TCPFlagACK, opts: []layers.TCPOption{mssOpt(1460), sackPermOpt, tsOpt(beTS, tsval), nopOpt, wsOpt}}, 0)
		if partial {
			trPartial(synack)
		}
		trDecode(t, &p, synack, partial)
		n := len(p.Frame)
		if err := x.BackendToClient(&p); err != nil {
			t.Fatal(err)
		}
		d = trCheck(t, finish(p.Frame, partial))
		if len(p.Frame) != n || d.hasTS || d.mss != 1448 || d.tcp.Ack != cISN+1 || !d.sackPerm || !d.hasW {
			t.Fatalf("SYN-ACK toward client: ts %v mss %d ack %d", d.hasTS, d.mss, d.tcp.Ack)
		}
		if !x.HaveBackendTS || x.BackendTS != beTS || x.Fallback {
			t.Fatalf("BackendTS %d %v fallback %v", x.BackendTS, x.HaveBackendTS, x.Fallback)
		}

		// A 1,400-byte data segment grows by 12, payload intact.
		payload := make([]byte, 1400)
		for i := range payload {
			payload[i] = byte(i * 7)
		}
		data := trGopacket(t, trSeg{src: trSNAT, dst: trBackend, sport: 1, dport: 2, seq: cISN + 1, ack: 78,
			flags: nat.TCPFlagACK, payload: payload}, 12)
		if partial {
			trPartial(data)
		}
		trDecode(t, &p, data, partial)
		x.TSBase = 5
		grow, err = x.ClientToBackend(&p, 0xffff_fff0) // clock+base is before LastTS: held at LastTS
		if err != nil || grow != 12 {
			t.Fatalf("ClientToBackend = %d, %v", grow, err)
		}
		d = trCheck(t, finish(p.Frame, partial))
		if !bytes.Equal(d.tcp.Payload, payload) || d.tsval != tsval || d.tsecr != beTS || d.tcp.Seq != bISN+1 {
			t.Fatalf("data toward backend: ts %d/%d seq %#x payload ok %v", d.tsval, d.tsecr, d.tcp.Seq, bytes.Equal(d.tcp.Payload, payload))
		}
		data = trGopacket(t, trSeg{src: trSNAT, dst: trBackend, sport: 1, dport: 2, seq: cISN + 1401, ack: 78,
			flags: nat.TCPFlagACK}, 12)
		if partial {
			trPartial(data)
		}
		trDecode(t, &p, data, partial)
		if _, err := x.ClientToBackend(&p, 30); err != nil {
			t.Fatal(err)
		}
		if d = trCheck(t, finish(p.Frame, partial)); d.tsval != 35 {
			t.Fatalf("TSval = %d, want clock 30 + base 5 (after the wrap)", d.tsval)
		}
		if x.NextSeq != bISN+1401 || x.LastTS != 35 {
			t.Errorf("NextSeq %#x LastTS %d", x.NextSeq, x.LastTS)
		}

		// 4 SACK blocks: at most 3 fit beside TS, the last one is dropped.
		blocks := []nat.SACKBlock{{10, 20}, {30, 40}, {50, 60}, {70, 80}}
		raw := []byte{1, 1, 5, 34}
		for _, b := range blocks {
			raw = binary.BigEndian.AppendUint32(raw, b.Start)
			raw = binary.BigEndian.AppendUint32(raw, b.End)
		}
		sack := trRaw(trSeg{src: trSNAT, dst: trBackend, sport: 1, dport: 2, seq: cISN + 1401, ack: 78,
			flags: nat.TCPFlagACK, payload: []byte("hello")}, raw, 12)
		if partial {
			trPartial(sack)
		}
		trDecode(t, &p, sack, partial)
		trimmed := x.SACKTrimmed
		grow, err = x.ClientToBackend(&p, 40)
		if err != nil || grow != 4 {
			t.Fatalf("ClientToBackend = %d, %v", grow, err)
		}
		d = trCheck(t, finish(p.Frame, partial))
		if len(d.sack) != 3 || d.sack[0] != blocks[0] || d.sack[1] != blocks[1] || d.sack[2] != blocks[2] || !d.hasTS || string(d.tcp.Payload) != "hello" || d.tcp.DataOffset != 15 {
			t.Fatalf("SACK after insertion: %v ts %v payload %q", d.sack, d.hasTS, d.tcp.Payload)
		}
		if x.SACKTrimmed != trimmed+1 {
			t.Errorf("SACKTrimmed = %d, want %d", x.SACKTrimmed, trimmed+1)
		}
	})
}

func TestTranslateTSSynthFallback(t *testing.T) {
	syn := trGopacket(t, trSeg{src: trSNAT, dst: trBackend, seq: 1, flags: nat.TCPFlagSYN, opts: []layers.TCPOption{mssOpt(1460)}}, 12)
	var p nat.Packet
	trDecode(t, &p, syn, false)
	var x nat.Translation
	if g, err := x.SetupSYN(&p, nat.TSRewrite, 1, 99); err != nil || g != 12 || x.TS != nat.TSActSynth {
		t.Fatalf("SetupSYN = %d, %v, %v", g, err, x.TS)
	}
	synack := trGopacket(t, trSeg{src: trBackend, dst: trSNAT, seq: 5, ack: 2, flags: nat.TCPFlagSYN | nat.TCPFlagACK, opts: []layers.TCPOption{mssOpt(1460)}}, 0)
	trDecode(t, &p, synack, false)
	if err := x.BackendToClient(&p); err != nil {
		t.Fatal(err)
	}
	if d := trCheck(t, p.Frame); !x.Fallback || d.mss != 1460 {
		t.Fatalf("Fallback %v mss %d (no clamp without TS)", x.Fallback, d.mss)
	}
	ack := trGopacket(t, trSeg{src: trSNAT, dst: trBackend, seq: 2, ack: 6, flags: nat.TCPFlagACK, payload: []byte("abc")}, 12)
	trDecode(t, &p, ack, false)
	if g, err := x.ClientToBackend(&p, 500); err != nil || g != 0 {
		t.Fatalf("after Fallback ClientToBackend = %d, %v", g, err)
	}
	if d := trCheck(t, p.Frame); d.hasTS {
		t.Fatalf("TS inserted after Fallback")
	}
	// A stray TS from the backend still never reaches the client.
	stray := trGopacket(t, trSeg{src: trBackend, dst: trSNAT, seq: 6, ack: 5, flags: nat.TCPFlagACK, opts: []layers.TCPOption{nopOpt, nopOpt, tsOpt(7, 8)}}, 0)
	trDecode(t, &p, stray, false)
	if err := x.BackendToClient(&p); err != nil {
		t.Fatal(err)
	}
	if d := trCheck(t, p.Frame); d.hasTS || x.UnexpectedTS != 1 {
		t.Fatalf("stray backend TS leaked (%v) or not counted (%d)", d.hasTS, x.UnexpectedTS)
	}
}

func TestTranslateMSSClamp(t *testing.T) {
	for _, tt := range []struct{ in, want uint16 }{
		{1460, 1448}, {8960, 8948}, {548, 536}, {547, 536}, {540, 536}, {537, 536}, {536, 536}, {100, 100}, {0, 0},
	} {
		x := nat.Translation{TS: nat.TSActSynth}
		f := trGopacket(t, trSeg{src: trBackend, dst: trSNAT, seq: 1, ack: 2, flags: nat.TCPFlagSYN | nat.TCPFlagACK,
			opts: []layers.TCPOption{mssOpt(tt.in), nopOpt, nopOpt, tsOpt(1, 2)}}, 0)
		var p nat.Packet
		trDecode(t, &p, f, false)
		if err := x.BackendToClient(&p); err != nil {
			t.Fatal(err)
		}
		if d := trCheck(t, p.Frame); d.mss != tt.want || d.hasTS {
			t.Errorf("MSS %d: got %d (ts %v), want %d", tt.in, d.mss, d.hasTS, tt.want)
		}
	}
}

func TestTranslateSACKBothWays(t *testing.T) {
	csumModes(t, func(t *testing.T, partial bool) {
		x := nat.Translation{SeqDelta: 0x8000_0010, TS: nat.TSActPass}
		// Backend -> client: blocks describe the client's stream: shifted back.
		in := []nat.SACKBlock{{0x8000_0000, 0x8000_0100}, {0xffff_fff0, 0x0000_0040}}
		f := trGopacket(t, trSeg{src: trBackend, dst: trSNAT, seq: 9, ack: 0x8000_0000, flags: nat.TCPFlagACK,
			opts: []layers.TCPOption{nopOpt, nopOpt, sackOpt(in...)}}, 0)
		if partial {
			trPartial(f)
		}
		var p nat.Packet
		trDecode(t, &p, f, partial)
		if err := x.BackendToClient(&p); err != nil {
			t.Fatal(err)
		}
		d := trCheck(t, finish(p.Frame, partial))
		if d.tcp.Ack != 0x8000_0000-x.SeqDelta || len(d.sack) != 2 {
			t.Fatalf("ack %#x sack %v", d.tcp.Ack, d.sack)
		}
		for i, b := range d.sack {
			if b.Start != in[i].Start-x.SeqDelta || b.End != in[i].End-x.SeqDelta {
				t.Errorf("block %d = %v, want %v - delta", i, b, in[i])
			}
		}
		// Client -> backend: blocks describe the backend's stream: untouched.
		f = trGopacket(t, trSeg{src: trSNAT, dst: trBackend, seq: 100, ack: 9, flags: nat.TCPFlagACK,
			opts: []layers.TCPOption{nopOpt, nopOpt, sackOpt(in...)}}, 0)
		if partial {
			trPartial(f)
		}
		trDecode(t, &p, f, partial)
		if _, err := x.ClientToBackend(&p, 0); err != nil {
			t.Fatal(err)
		}
		d = trCheck(t, finish(p.Frame, partial))
		if d.tcp.Seq != 100+x.SeqDelta || d.tcp.Ack != 9 || len(d.sack) != 2 || d.sack[0] != in[0] || d.sack[1] != in[1] {
			t.Fatalf("client->backend seq %#x ack %d sack %v", d.tcp.Seq, d.tcp.Ack, d.sack)
		}
	})
}

func TestTranslateStrip(t *testing.T) {
	var x nat.Translation
	syn := trGopacket(t, trSeg{src: trSNAT, dst: trBackend, seq: 5, flags: nat.TCPFlagSYN,
		opts: []layers.TCPOption{mssOpt(1460), sackPermOpt, tsOpt(1, 0), nopOpt, wsOpt}}, 0)
	var p nat.Packet
	trDecode(t, &p, syn, false)
	if g, err := x.SetupSYN(&p, nat.TSStrip, 5, 0); err != nil || g != 0 {
		t.Fatal(g, err)
	}
	if d := trCheck(t, p.Frame); d.hasTS || d.mss != 1460 || !d.hasW || !d.sackPerm || x.SentTS {
		t.Fatalf("strip SYN: ts %v", d.hasTS)
	}
	for _, dir := range []string{"c2b", "b2c"} {
		f := trGopacket(t, trSeg{src: trSNAT, dst: trBackend, seq: 6, ack: 1, flags: nat.TCPFlagACK,
			opts: []layers.TCPOption{nopOpt, nopOpt, tsOpt(3, 4)}}, 0)
		trDecode(t, &p, f, false)
		var err error
		if dir == "c2b" {
			_, err = x.ClientToBackend(&p, 0)
		} else {
			err = x.BackendToClient(&p)
		}
		if d := trCheck(t, p.Frame); err != nil || d.hasTS {
			t.Fatalf("%s: TS not stripped (%v)", dir, err)
		}
	}
}

// TestTranslateExactInverse checks, over random deltas, offsets and
// values, that what the backend echoes of a translated client segment
// (ack, TSecr, SACK) translates back to exactly the client's numbers.
func TestTranslateExactInverse(t *testing.T) {
	r := rand.New(rand.NewPCG(11, 12))
	var p nat.Packet
	for i := range 3000 {
		partial := i%2 == 1
		x := nat.Translation{SeqDelta: r.Uint32(), TS: nat.TSActOffset, TSOff: r.Uint32()}
		if i%7 == 0 {
			x.SeqDelta = -uint32(r.IntN(3)) // around the wrap
		}
		seq, tsv, plen := r.Uint32(), r.Uint32(), r.IntN(1400)
		var opts []layers.TCPOption
		if i%3 == 0 {
			opts = []layers.TCPOption{tsOpt(tsv, r.Uint32()), nopOpt, nopOpt} // odd layout: slow path
		} else {
			opts = []layers.TCPOption{nopOpt, nopOpt, tsOpt(tsv, r.Uint32())}
		}
		f := trGopacket(t, trSeg{src: trSNAT, dst: trBackend, seq: seq, ack: r.Uint32(), flags: nat.TCPFlagACK, opts: opts, payload: make([]byte, plen)}, 0)
		if partial {
			trPartial(f)
		}
		trDecode(t, &p, f, partial)
		if _, err := x.ClientToBackend(&p, 0); err != nil {
			t.Fatal(err)
		}
		d := trCheck(t, finish(p.Frame, partial))
		if d.tcp.Seq != seq+x.SeqDelta || d.tsval != tsv+x.TSOff {
			t.Fatalf("#%d forward: seq %#x tsval %#x", i, d.tcp.Seq, d.tsval)
		}
		// The backend echoes: ack = end of the segment, TSecr = TSval, one SACK block.
		end := d.tcp.Seq + uint32(plen)
		bf := trGopacket(t, trSeg{src: trBackend, dst: trSNAT, seq: r.Uint32(), ack: end, flags: nat.TCPFlagACK,
			opts: []layers.TCPOption{nopOpt, nopOpt, tsOpt(r.Uint32(), d.tsval), nopOpt, nopOpt, sackOpt(nat.SACKBlock{Start: d.tcp.Seq, End: end})}}, 0)
		if partial {
			trPartial(bf)
		}
		trDecode(t, &p, bf, partial)
		if err := x.BackendToClient(&p); err != nil {
			t.Fatal(err)
		}
		b := trCheck(t, finish(p.Frame, partial))
		if b.tcp.Ack != seq+uint32(plen) || b.tsecr != tsv || len(b.sack) != 1 || b.sack[0] != (nat.SACKBlock{Start: seq, End: seq + uint32(plen)}) {
			t.Fatalf("#%d inverse: ack %#x (want %#x) tsecr %#x (want %#x) sack %v", i, b.tcp.Ack, seq+uint32(plen), b.tsecr, tsv, b.sack)
		}
		if q := r.Uint32(); x.QuotedSeqToClient(x.QuotedSeqToBackend(q)) != q || x.QuotedSeqToBackend(seq) != d.tcp.Seq {
			t.Fatalf("#%d quoted seq translation is not the inverse", i)
		}
	}
}

func TestTranslateBadInput(t *testing.T) {
	dupTS := []byte{1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2, 1, 1, 8, 10, 0, 0, 0, 3, 0, 0, 0, 4}
	badLen := []byte{1, 1, 8, 9, 0, 0, 0, 1, 0, 0, 0, 2}
	shortOpt := []byte{1, 1, 1, 2}
	modes := []nat.TSAction{nat.TSActOffset, nat.TSActStrip, nat.TSActSynth}
	for _, raw := range [][]byte{dupTS, badLen, shortOpt} {
		for _, m := range modes {
			x := nat.Translation{TS: m, SeqDelta: 5, TSOff: 9}
			for _, dir := range []string{"c2b", "b2c", "syn"} {
				flags := uint8(nat.TCPFlagACK)
				if dir == "syn" {
					flags = nat.TCPFlagSYN
				}
				f := trRaw(trSeg{src: trSNAT, dst: trBackend, seq: 1, ack: 2, flags: flags}, raw, 12)
				orig := append([]byte(nil), f...)
				var p nat.Packet
				trDecode(t, &p, f, false)
				var err error
				switch dir {
				case "c2b":
					_, err = x.ClientToBackend(&p, 1)
				case "b2c":
					err = x.BackendToClient(&p)
				default:
					_, err = x.SetupSYN(&p, map[nat.TSAction]nat.TSMode{nat.TSActOffset: nat.TSRewrite, nat.TSActStrip: nat.TSStrip, nat.TSActSynth: nat.TSRewrite}[m], 1, 1)
				}
				if err != nat.ErrBadOptions || !bytes.Equal(p.Frame, orig) {
					t.Errorf("%v %s %x: err %v, frame changed %v", m, dir, raw, err, !bytes.Equal(p.Frame, orig))
				}
			}
			if x.BadOptions != 3 && m != nat.TSActSynth {
				t.Errorf("%v: BadOptions = %d", m, x.BadOptions)
			}
		}
	}
	// No room: TSActSynth without spare capacity leaves the frame alone.
	x := nat.Translation{TS: nat.TSActSynth}
	f := trGopacket(t, trSeg{src: trSNAT, dst: trBackend, seq: 1, ack: 2, flags: nat.TCPFlagACK, payload: []byte("abc")}, 0)
	orig := append([]byte(nil), f...)
	var p nat.Packet
	trDecode(t, &p, f, false)
	if g, err := x.ClientToBackend(&p, 1); err != nat.ErrNoRoom || g != 0 || !bytes.Equal(p.Frame, orig) || x.NoRoom != 1 {
		t.Errorf("no room: %d, %v, NoRoom %d", g, err, x.NoRoom)
	}
	// Not TCP.
	var empty nat.Packet
	if _, err := x.ClientToBackend(&empty, 0); err != nat.ErrNotTCP {
		t.Errorf("empty packet: %v", err)
	}
	if err := x.BackendToClient(&empty); err != nat.ErrNotTCP {
		t.Errorf("empty packet: %v", err)
	}
	ack := trGopacket(t, trSeg{src: trSNAT, dst: trBackend, seq: 1, ack: 2, flags: nat.TCPFlagACK}, 0)
	trDecode(t, &p, ack, false)
	if _, err := x.SetupSYN(&p, nat.TSRewrite, 1, 1); err != nat.ErrNotTCP {
		t.Errorf("SetupSYN on a non-SYN: %v", err)
	}
}

func TestTranslateSynthNeverLeaksBackendTS(t *testing.T) {
	// Backend TS in odd places: each must be recorded and removed.
	layouts := [][]byte{
		{1, 1, 8, 10, 0, 0, 0, 9, 0, 0, 0, 8},
		{8, 10, 0, 0, 0, 9, 0, 0, 0, 8, 1, 1},
		{1, 8, 10, 0, 0, 0, 9, 0, 0, 0, 8, 1, 1, 1, 5, 10, 0, 0, 0, 1, 0, 0, 0, 2},
		{2, 4, 5, 180, 4, 2, 8, 10, 0, 0, 0, 9, 0, 0, 0, 8, 1, 3, 3, 7},
	}
	for i, raw := range layouts {
		for _, synack := range []bool{false, true} {
			x := nat.Translation{TS: nat.TSActSynth, SeqDelta: 3}
			flags := uint8(nat.TCPFlagACK)
			if synack {
				flags |= nat.TCPFlagSYN
			}
			f := trRaw(trSeg{src: trBackend, dst: trSNAT, seq: 1, ack: 2, flags: flags}, raw, 0)
			var p nat.Packet
			trDecode(t, &p, f, false)
			if err := x.BackendToClient(&p); err != nil {
				t.Fatal(err)
			}
			d := trCheck(t, p.Frame)
			if d.hasTS || x.BackendTS != 9 || bytes.Contains(p.Frame[34:], []byte{0, 0, 0, 9}) {
				t.Errorf("layout %d synack %v: TS left %v BackendTS %d", i, synack, d.hasTS, x.BackendTS)
			}
			if d.tcp.Ack != 0xffff_ffff { // 2 - 3
				t.Errorf("layout %d: ack %d", i, d.tcp.Ack)
			}
		}
	}
}

func TestTranslateNextSeq(t *testing.T) {
	var x nat.Translation
	syn := trGopacket(t, trSeg{src: trSNAT, dst: trBackend, seq: 0xffff_fff0, flags: nat.TCPFlagSYN, opts: []layers.TCPOption{nopOpt, nopOpt, tsOpt(0xffff_fff0, 0)}}, 0)
	var p nat.Packet
	trDecode(t, &p, syn, false)
	if _, err := x.SetupSYN(&p, nat.TSPassthrough, 0xffff_fffa, 0); err != nil {
		t.Fatal(err)
	}
	if !x.SentTS || x.LastTS != 0xffff_fff0 || x.NextSeq != 0xffff_fffb {
		t.Fatalf("pass SYN: LastTS %#x NextSeq %#x", x.LastTS, x.NextSeq)
	}
	steps := []struct {
		seq   uint32 // client space
		flags uint8
		n     int
		ts    uint32
		want  uint32 // NextSeq, backend space
		wantT uint32
	}{
		{0xffff_fff1, nat.TCPFlagACK, 10, 0xffff_fff5, 0x0000_0005, 0xffff_fff5}, // wraps
		{0xffff_fff1, nat.TCPFlagACK, 4, 0xffff_fff4, 0x0000_0005, 0xffff_fff5},  // retransmission: no change
		{0xffff_fffb, nat.TCPFlagACK | nat.TCPFlagFIN, 0, 3, 0x0000_0006, 3},     // FIN counts 1, TS wraps
		{0x0000_1000, nat.TCPFlagRST, 0, 4, 0x0000_0006, 4},                      // RST ignored
		{0x4000_1000, nat.TCPFlagACK, 1, 5, 0x0000_0006, 5},                      // jump past MaxSeqAdvance
		{0x3fff_ffd0, nat.TCPFlagACK, 1, 0xffff_0000, 0x3fff_ffdb, 5},            // within: advances; old TS ignored
	}
	for i, s := range steps {
		f := trGopacket(t, trSeg{src: trSNAT, dst: trBackend, seq: s.seq, ack: 1, flags: s.flags, payload: make([]byte, s.n),
			opts: []layers.TCPOption{nopOpt, nopOpt, tsOpt(s.ts, 0)}}, 0)
		trDecode(t, &p, f, false)
		if _, err := x.ClientToBackend(&p, 0); err != nil {
			t.Fatal(err)
		}
		if x.NextSeq != s.want || x.LastTS != s.wantT {
			t.Errorf("step %d: NextSeq %#x LastTS %#x, want %#x %#x", i, x.NextSeq, x.LastTS, s.want, s.wantT)
		}
	}
	if x.SeqJumps != 1 {
		t.Errorf("SeqJumps = %d", x.SeqJumps)
	}
}

func TestTranslateNoAllocs(t *testing.T) {
	tsData := trGopacket(t, trSeg{src: trSNAT, dst: trBackend, seq: 1, ack: 2, flags: nat.TCPFlagACK,
		opts: []layers.TCPOption{nopOpt, nopOpt, tsOpt(3, 4)}, payload: make([]byte, 1000)}, 0)
	plain := trGopacket(t, trSeg{src: trSNAT, dst: trBackend, seq: 1, ack: 2, flags: nat.TCPFlagACK, payload: make([]byte, 1000)}, 12)
	sack := trGopacket(t, trSeg{src: trBackend, dst: trSNAT, seq: 1, ack: 2, flags: nat.TCPFlagACK,
		opts: []layers.TCPOption{nopOpt, nopOpt, sackOpt(nat.SACKBlock{Start: 5, End: 9})}}, 0)
	syn := trGopacket(t, trSeg{src: trSNAT, dst: trBackend, seq: 1, flags: nat.TCPFlagSYN, opts: []layers.TCPOption{mssOpt(1460), sackPermOpt, nopOpt, wsOpt}}, 12)
	buf := make([]byte, 0, 2000)
	var p nat.Packet
	for _, tt := range []struct {
		name  string
		frame []byte
		f     func(x *nat.Translation) error
	}{
		{"offset fast", tsData, func(x *nat.Translation) error { x.TS = nat.TSActOffset; _, err := x.ClientToBackend(&p, 0); return err }},
		{"offset b2c", tsData, func(x *nat.Translation) error { x.TS = nat.TSActOffset; return x.BackendToClient(&p) }},
		{"strip", tsData, func(x *nat.Translation) error { x.TS = nat.TSActStrip; _, err := x.ClientToBackend(&p, 0); return err }},
		{"synth grow", plain, func(x *nat.Translation) error { x.TS = nat.TSActSynth; _, err := x.ClientToBackend(&p, 0); return err }},
		{"synth b2c", tsData, func(x *nat.Translation) error { x.TS = nat.TSActSynth; return x.BackendToClient(&p) }},
		{"sack b2c", sack, func(x *nat.Translation) error { return x.BackendToClient(&p) }},
		{"setup synth", syn, func(x *nat.Translation) error { _, err := x.SetupSYN(&p, nat.TSRewrite, 9, 9); return err }},
	} {
		x := nat.Translation{SeqDelta: 7, TSOff: 3}
		n := testing.AllocsPerRun(200, func() {
			buf = append(buf[:0], tt.frame...)
			if err := p.Decode(buf); err != nil {
				t.Fatal(err)
			}
			if err := tt.f(&x); err != nil {
				t.Fatal(err)
			}
		})
		if n != 0 {
			t.Errorf("%s: %v allocs", tt.name, n)
		}
	}
}

func TestTSActionString(t *testing.T) {
	for a, want := range map[nat.TSAction]string{nat.TSActPass: "pass", nat.TSActStrip: "strip", nat.TSActOffset: "offset", nat.TSActSynth: "synth", 9: "unknown"} {
		if a.String() != want {
			t.Errorf("%d.String() = %q", a, a.String())
		}
	}
}

// FuzzTranslate feeds arbitrary frames through every translation entry
// point: no panic, growth within 0..12, and a frame that decoded before
// still decodes after (with the lengths the Packet claims).
func FuzzTranslate(f *testing.F) {
	f.Add(trRaw(trSeg{src: trSNAT, dst: trBackend, seq: 1, flags: nat.TCPFlagSYN}, []byte{2, 4, 5, 180, 1, 1, 4, 2}, 0), uint8(2), uint32(5), uint32(6), uint64(0))
	f.Add(trRaw(trSeg{src: trSNAT, dst: trBackend, seq: 1, ack: 3, flags: nat.TCPFlagACK, payload: []byte("hi")}, []byte{1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2}, 0), uint8(2), uint32(5), uint32(6), uint64(1))
	f.Add(trRaw(trSeg{src: trSNAT, dst: trBackend, seq: 1, ack: 3, flags: nat.TCPFlagACK}, []byte{1, 1, 5, 34, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 4, 0, 0, 0, 5, 0, 0, 0, 6, 0, 0, 0, 7, 0, 0, 0, 8}, 0), uint8(3), uint32(5), uint32(6), uint64(2))
	f.Add(trRaw(trSeg{src: trBackend, dst: trSNAT, seq: 1, ack: 3, flags: nat.TCPFlagSYN | nat.TCPFlagACK}, []byte{2, 4, 5, 180, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0}, 0), uint8(3), uint32(5), uint32(6), uint64(3))
	// IPv6 twins, with extension headers.
	f.Add(to6(trRaw(trSeg{src: trSNAT, dst: trBackend, seq: 1, flags: nat.TCPFlagSYN}, []byte{2, 4, 5, 160, 1, 1, 4, 2}, 0), []extHdr{hbh()}, false), uint8(2), uint32(5), uint32(6), uint64(0))
	f.Add(to6(trRaw(trSeg{src: trSNAT, dst: trBackend, seq: 1, ack: 3, flags: nat.TCPFlagACK, payload: []byte("hi")}, []byte{1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2}, 0), nil, false), uint8(2), uint32(5), uint32(6), uint64(0x11))
	f.Add(to6(trRaw(trSeg{src: trSNAT, dst: trBackend, seq: 1, ack: 3, flags: nat.TCPFlagACK, payload: []byte("x")}, nil, 0), []extHdr{destOpts()}, true), uint8(3), uint32(5), uint32(6), uint64(0x11c))
	f.Add(to6(trRaw(trSeg{src: trBackend, dst: trSNAT, seq: 1, ack: 3, flags: nat.TCPFlagSYN | nat.TCPFlagACK}, []byte{2, 4, 5, 160, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0}, 0), nil, false), uint8(3), uint32(5), uint32(6), uint64(0x23))
	f.Fuzz(func(t *testing.T, frame []byte, mode uint8, a, b uint32, sel uint64) {
		buf := make([]byte, len(frame), len(frame)+int(sel%20))
		copy(buf, frame)
		var p nat.Packet
		p.PartialCsum = sel&0x100 != 0
		decoded := p.Decode(buf) == nil
		x := nat.Translation{SeqDelta: a, TSOff: b, TS: nat.TSAction(mode % 5), TSBase: a ^ b, Fallback: sel&0x200 != 0}
		oldLen := len(p.Frame)
		grow := 0
		var err error
		switch (sel >> 4) % 3 {
		case 0:
			grow, err = x.SetupSYN(&p, [...]nat.TSMode{nat.TSPassthrough, nat.TSStrip, nat.TSRewrite, "", "bogus"}[mode%5], a, b)
		case 1:
			grow, err = x.ClientToBackend(&p, b)
		case 2:
			err = x.BackendToClient(&p)
		}
		if grow < 0 || grow > 12 {
			t.Fatalf("grow %d", grow)
		}
		if err != nil && grow != 0 {
			t.Fatalf("error %v with growth %d", err, grow)
		}
		if grow > 0 && len(p.Frame) > oldLen+grow {
			t.Fatalf("frame grew by %d, reported %d", len(p.Frame)-oldLen, grow)
		}
		if decoded {
			var q nat.Packet
			if err := q.Decode(p.Frame); err != nil {
				t.Fatalf("translated frame does not decode: %v", err)
			}
			if q.L4Len != p.L4Len || q.TCPHdrLen != p.TCPHdrLen || q.Seq != p.Seq || q.Ack != p.Ack {
				t.Fatalf("Packet out of date: %+v vs %+v", p, q)
			}
		}
	})
}

// benchSegment is a 1,460-byte-payload client segment with NOP NOP TS.
func benchSegment(b *testing.B) []byte {
	return trGopacket(b, trSeg{src: trClient, dst: trVIP, sport: 40000, dport: 443, seq: 1, ack: 2, flags: nat.TCPFlagACK,
		opts: []layers.TCPOption{nopOpt, nopOpt, tsOpt(3, 4)}, payload: make([]byte, 1460)}, 0)
}

func BenchmarkPassthroughRewrite(b *testing.B) {
	frame := benchSegment(b)
	var p nat.Packet
	b.ReportAllocs()
	b.SetBytes(int64(len(frame)))
	for range b.N {
		if err := p.Decode(frame); err != nil {
			b.Fatal(err)
		}
		p.SetSrc(trSNAT)
		p.SetDst(trBackend)
		p.SetSrcPort(50000)
		p.SetDstPort(8443)
	}
}

func BenchmarkTSOffsetRewrite(b *testing.B) {
	frame := benchSegment(b)
	var p nat.Packet
	x := nat.Translation{SeqDelta: 0x1234_5678, TS: nat.TSActOffset, TSOff: 0x9abc_def0}
	b.ReportAllocs()
	b.SetBytes(int64(len(frame)))
	for range b.N {
		if err := p.Decode(frame); err != nil {
			b.Fatal(err)
		}
		p.SetSrc(trSNAT)
		p.SetDst(trBackend)
		p.SetSrcPort(50000)
		p.SetDstPort(8443)
		if _, err := x.ClientToBackend(&p, 0); err != nil {
			b.Fatal(err)
		}
	}
}

// benchSegment6 is benchSegment's IPv6 twin.
func benchSegment6(b *testing.B) []byte { return to6(benchSegment(b), nil, false) }

func BenchmarkPassthroughRewrite6(b *testing.B) {
	frame := benchSegment6(b)
	snat, backend := map6(trSNAT), map6(trBackend)
	var p nat.Packet
	b.ReportAllocs()
	b.SetBytes(int64(len(frame)))
	for range b.N {
		if err := p.Decode(frame); err != nil {
			b.Fatal(err)
		}
		p.SetSrc6(snat)
		p.SetDst6(backend)
		p.SetSrcPort(50000)
		p.SetDstPort(8443)
	}
}

func BenchmarkTSOffsetRewrite6(b *testing.B) {
	frame := benchSegment6(b)
	snat, backend := map6(trSNAT), map6(trBackend)
	var p nat.Packet
	x := nat.Translation{SeqDelta: 0x1234_5678, TS: nat.TSActOffset, TSOff: 0x9abc_def0}
	b.ReportAllocs()
	b.SetBytes(int64(len(frame)))
	for range b.N {
		if err := p.Decode(frame); err != nil {
			b.Fatal(err)
		}
		p.SetSrc6(snat)
		p.SetDst6(backend)
		p.SetSrcPort(50000)
		p.SetDstPort(8443)
		if _, err := x.ClientToBackend(&p, 0); err != nil {
			b.Fatal(err)
		}
	}
}

func TestTranslateRST(t *testing.T) {
	x := nat.Translation{SeqDelta: 0x10, TS: nat.TSActOffset, TSOff: 1, NextSeq: 0x50, HaveSeq: true}
	for _, flags := range []uint8{nat.TCPFlagRST, nat.TCPFlagRST | nat.TCPFlagACK} {
		f := trGopacket(t, trSeg{src: trSNAT, dst: trBackend, seq: 0xffff_fff8, ack: 9, flags: flags}, 0)
		var p nat.Packet
		trDecode(t, &p, f, false)
		if _, err := x.ClientToBackend(&p, 0); err != nil {
			t.Fatal(err)
		}
		if d := trCheck(t, p.Frame); d.tcp.Seq != 0x8 || d.tcp.Ack != 9 {
			t.Errorf("RST seq %#x ack %d, want 0x8 9", d.tcp.Seq, d.tcp.Ack)
		}
		if x.NextSeq != 0x50 || x.MissingTS == 0 {
			t.Errorf("RST moved NextSeq to %#x / MissingTS %d", x.NextSeq, x.MissingTS)
		}
	}
	// Backend RST+ACK: ack translated back.
	f := trGopacket(t, trSeg{src: trBackend, dst: trSNAT, seq: 9, ack: 0x8, flags: nat.TCPFlagRST | nat.TCPFlagACK}, 0)
	var p nat.Packet
	trDecode(t, &p, f, false)
	if err := x.BackendToClient(&p); err != nil {
		t.Fatal(err)
	}
	if d := trCheck(t, p.Frame); d.tcp.Ack != 0xffff_fff8 {
		t.Errorf("backend RST ack %#x", d.tcp.Ack)
	}
}

// TestTranslateGSOSuperframe grows a partial-checksum TSO superframe
// (payload larger than one segment) and checks that completing its
// checksum gives the right full checksum, as the kernel's segmentation
// would start from.
func TestTranslateGSOSuperframe(t *testing.T) {
	payload := make([]byte, 3*1448)
	for i := range payload {
		payload[i] = byte(i)
	}
	f := trGopacket(t, trSeg{src: trSNAT, dst: trBackend, seq: 1, ack: 2, flags: nat.TCPFlagACK, payload: payload}, 12)
	trPartial(f)
	var p nat.Packet
	trDecode(t, &p, f, true)
	x := nat.Translation{TS: nat.TSActSynth, SeqDelta: 100, BackendTS: 5, HaveBackendTS: true}
	g, err := x.ClientToBackend(&p, 42)
	if err != nil || g != 12 {
		t.Fatalf("ClientToBackend = %d, %v", g, err)
	}
	d := trCheck(t, finish(p.Frame, true))
	if !bytes.Equal(d.tcp.Payload, payload) || d.tsval != 42 || d.tsecr != 5 || d.tcp.Seq != 101 {
		t.Fatalf("superframe: ts %d/%d seq %d", d.tsval, d.tsecr, d.tcp.Seq)
	}
}
