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

func TestParseTCPOptions(t *testing.T) {
	none := nat.TCPOptions{TSOff: -1, SACKOff: -1}
	tests := []struct {
		name string
		opts []byte
		err  error
		want nat.TCPOptions
	}{
		{name: "empty", opts: nil, want: none},
		{
			name: "linux_syn",
			opts: []byte{
				2, 4, 0x05, 0xb4, // MSS 1460
				4, 2, // SACK permitted
				8, 10, 0, 0, 0, 1, 0, 0, 0, 0, // TS val 1 ecr 0
				1,       // NOP
				3, 3, 7, // WS 7
			},
			want: nat.TCPOptions{MSS: 1460, HasMSS: true, WScale: 7, HasWScale: true, SACKPermitted: true,
				HasTS: true, TSVal: 1, TSOff: 6, SACKOff: -1},
		},
		{
			name: "established_ts",
			opts: []byte{1, 1, 8, 10, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88},
			want: nat.TCPOptions{HasTS: true, TSVal: 0x11223344, TSEcr: 0x55667788, TSOff: 2, SACKOff: -1},
		},
		{
			name: "sack_two_blocks",
			opts: []byte{1, 1, 5, 18, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 4},
			want: nat.TCPOptions{TSOff: -1, SACKOff: 2, NumSACK: 2,
				SACK: [4]nat.SACKBlock{{1, 2}, {3, 4}}},
		},
		{
			name: "eol_stops",
			opts: []byte{2, 4, 0, 100, 0, 0xff, 0xff, 0xff},
			want: nat.TCPOptions{MSS: 100, HasMSS: true, TSOff: -1, SACKOff: -1},
		},
		{
			name: "unknown_kept",
			opts: []byte{30, 4, 1, 2, 254, 2, 1, 1}, // MPTCP-ish, experimental
			want: nat.TCPOptions{TSOff: -1, SACKOff: -1, Unknown: 2},
		},
		// Hostile rows.
		{name: "length_byte_missing", opts: []byte{1, 1, 1, 2}, err: nat.ErrBadOptions},
		{name: "length_0", opts: []byte{30, 0, 1, 1}, err: nat.ErrBadOptions},
		{name: "length_1", opts: []byte{30, 1, 1, 1}, err: nat.ErrBadOptions},
		{name: "runs_past_end", opts: []byte{1, 1, 8, 10, 0, 0, 0, 0}, err: nat.ErrBadOptions},
		{name: "mss_len_3", opts: []byte{2, 3, 1, 1}, err: nat.ErrBadOptions},
		{name: "ws_len_4", opts: []byte{3, 4, 1, 1}, err: nat.ErrBadOptions},
		{name: "sackperm_len_3", opts: []byte{4, 3, 1, 1}, err: nat.ErrBadOptions},
		{name: "ts_len_8", opts: []byte{8, 8, 0, 0, 0, 0, 0, 0}, err: nat.ErrBadOptions},
		{name: "sack_len_9", opts: []byte{5, 9, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1}, err: nat.ErrBadOptions},
		{name: "duplicate_ts", opts: []byte{8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 8, 10, 0, 0, 0, 2, 0, 0, 0, 0}, err: nat.ErrBadOptions},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var o nat.TCPOptions
			err := nat.ParseTCPOptions(tt.opts, &o)
			if err != tt.err {
				t.Fatalf("err = %v, want %v", err, tt.err)
			}
			if err == nil && o != tt.want {
				t.Errorf("got  %+v\nwant %+v", o, tt.want)
			}
			if n := testing.AllocsPerRun(100, func() { _ = nat.ParseTCPOptions(tt.opts, &o) }); n != 0 {
				t.Errorf("allocs = %v", n)
			}
		})
	}
}

func TestPacketTCPOptionsPastHeader(t *testing.T) {
	// The TS option's length byte claims 10 bytes but the header (data
	// offset 7) ends 2 bytes earlier: Decode accepts the frame, the option
	// walk rejects it and the setters refuse to touch it.
	frame := buildTCP(tcpSpec{src: ipC, dst: ipV, opts: []byte{1, 1, 1, 1, 1, 1, 8, 10}, payload: []byte{1, 2, 3, 4, 5, 6, 7, 8}})
	var p nat.Packet
	if err := p.Decode(frame); err != nil {
		t.Fatal(err)
	}
	var o nat.TCPOptions
	if err := p.TCPOptions(&o); err != nat.ErrBadOptions {
		t.Errorf("TCPOptions = %v, want ErrBadOptions", err)
	}
	before := slices.Clone(frame)
	if p.SetTimestamps(1, 2) || p.StripTimestamps() || !slices.Equal(before, frame) {
		t.Error("a TS option running past the header was rewritten")
	}
}

func TestWriteTCPOptions(t *testing.T) {
	tests := []struct {
		name string
		o    nat.TCPOptions
		dst  int
		want []byte // nil: -1
	}{
		{
			name: "linux_syn",
			o:    nat.TCPOptions{MSS: 1460, HasMSS: true, SACKPermitted: true, HasTS: true, TSVal: 1, TSEcr: 2, HasWScale: true, WScale: 7},
			dst:  40,
			want: []byte{2, 4, 5, 0xb4, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2, 1, 3, 3, 7},
		},
		{
			name: "ts_only",
			o:    nat.TCPOptions{HasTS: true, TSVal: 1, TSEcr: 2},
			dst:  40,
			want: []byte{1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2},
		},
		{
			name: "sackperm_no_ts",
			o:    nat.TCPOptions{MSS: 536, HasMSS: true, SACKPermitted: true},
			dst:  40,
			want: []byte{2, 4, 2, 0x18, 1, 1, 4, 2},
		},
		{
			name: "ts_and_4_sack_blocks_keeps_3",
			o: nat.TCPOptions{HasTS: true, TSVal: 1, NumSACK: 4,
				SACK: [4]nat.SACKBlock{{1, 2}, {3, 4}, {5, 6}, {7, 8}}},
			dst: 60,
			want: []byte{1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 1, 5, 26,
				0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 4, 0, 0, 0, 5, 0, 0, 0, 6},
		},
		{
			name: "4_sack_blocks",
			o:    nat.TCPOptions{NumSACK: 4, SACK: [4]nat.SACKBlock{{1, 2}, {3, 4}, {5, 6}, {7, 8}}},
			dst:  40,
			want: []byte{1, 1, 5, 34, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 4,
				0, 0, 0, 5, 0, 0, 0, 6, 0, 0, 0, 7, 0, 0, 0, 8},
		},
		{
			name: "sack_dropped_by_short_dst",
			o:    nat.TCPOptions{HasTS: true, NumSACK: 1, SACK: [4]nat.SACKBlock{{1, 2}}},
			dst:  12,
			want: []byte{1, 1, 8, 10, 0, 0, 0, 0, 0, 0, 0, 0},
		},
		{
			name: "dst_too_short",
			o:    nat.TCPOptions{HasTS: true, HasMSS: true},
			dst:  12,
		},
		{name: "nothing", dst: 0, want: []byte{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dst := make([]byte, tt.dst)
			n := nat.WriteTCPOptions(dst, &tt.o)
			if tt.want == nil {
				if n != -1 {
					t.Fatalf("n = %d, want -1", n)
				}
				return
			}
			if n < 0 || !slices.Equal(dst[:n], tt.want) {
				t.Fatalf("n = %d, got % x\nwant % x", n, dst[:max(n, 0)], tt.want)
			}
			var o nat.TCPOptions
			if err := nat.ParseTCPOptions(dst[:n], &o); err != nil {
				t.Fatalf("reparse: %v", err)
			}
			if o.HasTS != tt.o.HasTS || o.TSVal != tt.o.TSVal || o.MSS != tt.o.MSS || o.WScale != tt.o.WScale {
				t.Errorf("reparse = %+v", o)
			}
			if n := testing.AllocsPerRun(100, func() { nat.WriteTCPOptions(dst, &tt.o) }); n != 0 {
				t.Errorf("allocs = %v", n)
			}
		})
	}
}

func TestOptionSetters(t *testing.T) {
	// TS at an odd options offset (1) and a two-block SACK.
	opts := []byte{1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2, 1, 1, 1, 5, 18,
		0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 4, 2, 4, 5, 0xb4}
	frame := buildTCP(tcpSpec{src: ipC, dst: ipV, opts: opts, payload: []byte("xyz")})
	var p nat.Packet
	if err := p.Decode(frame); err != nil {
		t.Fatal(err)
	}
	if !p.SetTimestamps(0xdeadbeef, 0x01020304) {
		t.Fatal("SetTimestamps = false")
	}
	if !p.SetSACKBlock(1, nat.SACKBlock{Start: 0xfffffff0, End: 0x10}) {
		t.Fatal("SetSACKBlock = false")
	}
	if p.SetSACKBlock(2, nat.SACKBlock{}) || p.SetSACKBlock(-1, nat.SACKBlock{}) {
		t.Error("SetSACKBlock accepted a missing block")
	}
	if !p.SetMSS(1400) {
		t.Fatal("SetMSS = false")
	}
	checkFull(t, frame)
	var o nat.TCPOptions
	if err := p.TCPOptions(&o); err != nil {
		t.Fatal(err)
	}
	if o.TSVal != 0xdeadbeef || o.TSEcr != 0x01020304 || o.SACK[1] != (nat.SACKBlock{Start: 0xfffffff0, End: 0x10}) ||
		o.SACK[0] != (nat.SACKBlock{Start: 1, End: 2}) || o.MSS != 1400 || o.TSOff != 1 || o.SACKOff != 14 {
		t.Errorf("after setters: %+v", o)
	}
	if !p.StripTimestamps() {
		t.Fatal("StripTimestamps = false")
	}
	checkFull(t, frame)
	if got := frame[34+20+1 : 34+20+11]; !slices.Equal(got, slices.Repeat([]byte{1}, 10)) {
		t.Errorf("stripped bytes = % x", got)
	}
	if p.StripTimestamps() || p.SetTimestamps(1, 1) {
		t.Error("TS still found after StripTimestamps")
	}
	if p.TCPHdrLen != 20+len(opts) || nat.TCP(frame[34:]).DataOffset() != 20+len(opts) {
		t.Error("header length changed")
	}
	// No options at all.
	var q nat.Packet
	plain := buildTCP(tcpSpec{src: ipC, dst: ipV})
	if err := q.Decode(plain); err != nil {
		t.Fatal(err)
	}
	if q.SetMSS(1) || q.SetTimestamps(1, 1) || q.StripTimestamps() || q.SetSACKBlock(0, nat.SACKBlock{}) {
		t.Error("setter succeeded without the option")
	}
}

// gopacketOptions serialises opts with gopacket and returns our parse of
// the resulting segment. Only short lists: gopacket pads and lays out long
// option lists incorrectly when serialising, so the cross-check sticks to
// lists well inside 40 bytes.
func TestParseMatchesGopacket(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 10))
	for range 200 {
		mss, ws, tsv, tse := uint16(r.Uint32()), uint8(r.IntN(15)), r.Uint32(), r.Uint32()
		var gopts []layers.TCPOption
		want := nat.TCPOptions{TSOff: -1, SACKOff: -1}
		off := 0
		if r.IntN(2) == 0 {
			gopts = append(gopts, layers.TCPOption{OptionType: layers.TCPOptionKindMSS, OptionLength: 4, OptionData: binary.BigEndian.AppendUint16(nil, mss)})
			want.MSS, want.HasMSS = mss, true
			off += 4
		}
		if r.IntN(2) == 0 {
			gopts = append(gopts, layers.TCPOption{OptionType: layers.TCPOptionKindNop},
				layers.TCPOption{OptionType: layers.TCPOptionKindWindowScale, OptionLength: 3, OptionData: []byte{ws}})
			want.WScale, want.HasWScale = ws, true
			off += 4
		}
		if r.IntN(2) == 0 {
			gopts = append(gopts, layers.TCPOption{OptionType: layers.TCPOptionKindNop}, layers.TCPOption{OptionType: layers.TCPOptionKindNop},
				layers.TCPOption{OptionType: layers.TCPOptionKindTimestamps, OptionLength: 10,
					OptionData: binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(nil, tsv), tse)})
			want.HasTS, want.TSVal, want.TSEcr, want.TSOff = true, tsv, tse, off+2
		}
		ip := &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Protocol: layers.IPProtocolTCP, SrcIP: ipC[:], DstIP: ipV[:]}
		tcp := &layers.TCP{SrcPort: 1, DstPort: 2, SYN: true, Options: gopts}
		if err := tcp.SetNetworkLayerForChecksum(ip); err != nil {
			t.Fatal(err)
		}
		frame := serialize(t, ip, tcp, gopacket.Payload("data"))
		checkFull(t, frame)
		var p nat.Packet
		if err := p.Decode(frame); err != nil {
			t.Fatal(err)
		}
		var o nat.TCPOptions
		if err := p.TCPOptions(&o); err != nil {
			t.Fatal(err)
		}
		if o != want {
			t.Fatalf("parse of gopacket options % x:\n got %+v\nwant %+v", frame[54:p.L4+p.TCPHdrLen], o, want)
		}
		// And gopacket decodes what WriteTCPOptions writes.
		var buf [40]byte
		n := nat.WriteTCPOptions(buf[:], &o)
		if n < 0 {
			t.Fatal("WriteTCPOptions = -1")
		}
		frame2 := buildTCP(tcpSpec{src: ipC, dst: ipV, opts: buf[:n], flags: nat.TCPFlagSYN})
		pkt := gopacket.NewPacket(frame2, layers.LayerTypeEthernet, gopacket.Default)
		gt, _ := pkt.Layer(layers.LayerTypeTCP).(*layers.TCP)
		if gt == nil {
			t.Fatalf("gopacket could not decode % x", frame2)
		}
		for _, g := range gt.Options {
			switch g.OptionType {
			case layers.TCPOptionKindMSS:
				if binary.BigEndian.Uint16(g.OptionData) != mss {
					t.Errorf("gopacket MSS %x", g.OptionData)
				}
			case layers.TCPOptionKindTimestamps:
				if binary.BigEndian.Uint32(g.OptionData) != tsv || binary.BigEndian.Uint32(g.OptionData[4:]) != tse {
					t.Errorf("gopacket TS %x", g.OptionData)
				}
			case layers.TCPOptionKindWindowScale:
				if g.OptionData[0] != ws {
					t.Errorf("gopacket WS %x", g.OptionData)
				}
			}
		}
	}
}
