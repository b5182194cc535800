package nat_test

import (
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/gopacket/gopacket/layers"

	"tslb/nat"
)

// TestProxy drives Proxy both ways over random segments with and without
// timestamps and SACK blocks, in both checksum modes, and checks every
// field against the arithmetic, every checksum in full, and the window
// rescaling.
func TestProxy(t *testing.T) {
	csumModes(t, func(t *testing.T, partial bool) {
		r := rand.New(rand.NewPCG(11, 12))
		for i := range 2000 {
			px := nat.Proxy{SeqDelta: r.Uint32(), TSOff: r.Uint32(), TS: r.IntN(4) != 0, WShift: int8(r.IntN(15) - 7)}
			seq, ack, tsv, tse := r.Uint32(), r.Uint32(), r.Uint32(), r.Uint32()
			var opts []layers.TCPOption
			hasTS := r.IntN(3) != 0
			if hasTS {
				if r.IntN(2) == 0 {
					opts = append(opts, nopOpt, nopOpt, tsOpt(tsv, tse)) // the Linux layout
				} else {
					opts = append(opts, tsOpt(tsv, tse), nopOpt, nopOpt)
				}
			}
			var sack []nat.SACKBlock
			if r.IntN(3) == 0 {
				sack = []nat.SACKBlock{{Start: r.Uint32(), End: r.Uint32()}, {Start: r.Uint32(), End: r.Uint32()}}
				opts = append(opts, nopOpt, nopOpt, sackOpt(sack...))
			}
			flags := uint8(nat.TCPFlagACK)
			if r.IntN(8) == 0 {
				flags = nat.TCPFlagSYN // no ack field to translate
			}
			toBackend := r.IntN(2) == 0
			s := trSeg{src: trBackend, dst: trSNAT, sport: 8080, dport: 20000, seq: seq, ack: ack, flags: flags, opts: opts, payload: []byte("data")}
			if toBackend {
				s.src, s.dst, s.sport, s.dport = trSNAT, trBackend, 20000, 8080
			}
			f := trGopacket(t, s, 0)
			if partial {
				trPartial(f)
			}
			var p nat.Packet
			trDecode(t, &p, f, partial)
			win := p.TCP().Window()
			var err error
			if toBackend {
				err = px.ToBackend(&p)
			} else {
				err = px.ToClient(&p)
			}
			if err != nil {
				t.Fatalf("#%d: %v", i, err)
			}
			d := trCheck(t, finish(p.Frame, partial))
			wantSeq, wantAck, wantTSV, wantTSE, wantWin := seq, ack, tsv, tse, uint32(win)
			wantSACK := slices.Clone(sack)
			if toBackend {
				if flags&nat.TCPFlagACK != 0 {
					wantAck = ack - px.SeqDelta
				}
				if px.TS {
					wantTSE = tse - px.TSOff
				}
				for j := range wantSACK {
					wantSACK[j].Start -= px.SeqDelta
					wantSACK[j].End -= px.SeqDelta
				}
			} else {
				wantSeq = seq + px.SeqDelta
				if px.TS {
					wantTSV = tsv + px.TSOff
				}
				if px.WShift > 0 {
					wantWin = min(wantWin<<px.WShift, 0xffff)
				} else {
					wantWin >>= -px.WShift
				}
			}
			if d.tcp.Seq != wantSeq || d.tcp.Ack != wantAck || uint32(d.tcp.Window) != wantWin {
				t.Fatalf("#%d toBackend=%v: seq %#x ack %#x win %d, want %#x %#x %d", i, toBackend, d.tcp.Seq, d.tcp.Ack, d.tcp.Window, wantSeq, wantAck, wantWin)
			}
			if hasTS && (d.tsval != wantTSV || d.tsecr != wantTSE) {
				t.Fatalf("#%d toBackend=%v: TS %#x/%#x, want %#x/%#x", i, toBackend, d.tsval, d.tsecr, wantTSV, wantTSE)
			}
			if !slices.Equal(d.sack, wantSACK) {
				t.Fatalf("#%d: SACK %v, want %v", i, d.sack, wantSACK)
			}
			if p.Seq != wantSeq {
				t.Fatalf("#%d: Packet.Seq %#x not updated to %#x", i, p.Seq, wantSeq)
			}
		}
	})
	var p nat.Packet
	f := trGopacket(t, trSeg{src: trSNAT, dst: trBackend, sport: 1, dport: 2, seq: 1, ack: 2, flags: nat.TCPFlagACK,
		opts: []layers.TCPOption{nopOpt, nopOpt, tsOpt(1, 2)}}, 0)
	px := nat.Proxy{SeqDelta: 5, TSOff: 7, TS: true, WShift: 2}
	if n := testing.AllocsPerRun(100, func() {
		trDecode(t, &p, f, false)
		px.ToBackend(&p)
		px.ToClient(&p)
	}); n != 0 {
		t.Errorf("Proxy allocates %v", n)
	}
}

// BuildTCPOptions makes a valid SYN (checked by gopacket) with the options
// asked for.
func TestBuildTCPOptions(t *testing.T) {
	buf := make([]byte, 128)
	o := nat.TCPOptions{HasMSS: true, MSS: 1440, SACKPermitted: true, HasTS: true, TSVal: 7, TSEcr: 9, HasWScale: true, WScale: 7}
	n := nat.BuildTCPOptions(buf, macA, macB, trSNAT, trBackend, 20000, 8080, 1000, 2000, nat.TCPFlagSYN|nat.TCPFlagACK, 65535, &o)
	if n != 14+20+40 {
		t.Fatalf("length %d, want 74", n)
	}
	d := trCheck(t, buf[:n])
	if !d.hasMSS || d.mss != 1440 || !d.sackPerm || !d.hasTS || d.tsval != 7 || d.tsecr != 9 || !d.hasW || !d.tcp.SYN || !d.tcp.ACK || d.tcp.Seq != 1000 || d.tcp.Ack != 2000 {
		t.Errorf("built %+v", d)
	}
	if nat.BuildTCPOptions(buf[:60], macA, macB, trSNAT, trBackend, 1, 2, 3, 4, nat.TCPFlagSYN, 5, &o) != 0 {
		t.Error("a short buffer did not give 0")
	}
}
