package nat_test

import (
	"slices"
	"testing"

	"tslb/nat"
)

func TestVirtioNetHdr(t *testing.T) {
	// NEEDS_CSUM, TSO v4, hdr_len 66, gso_size 1448, csum_start 34,
	// csum_offset 16, little-endian.
	golden := []byte{0x01, 0x01, 0x42, 0x00, 0xa8, 0x05, 0x22, 0x00, 0x10, 0x00}
	want := nat.VirtioNetHdr{Flags: nat.VirtioNetHdrFNeedsCsum, GSOType: nat.GSOTCPv4,
		HdrLen: 66, GSOSize: 1448, CsumStart: 34, CsumOffset: 16}
	var h nat.VirtioNetHdr
	if err := h.Decode(golden); err != nil || h != want {
		t.Fatalf("Decode = %+v, %v", h, err)
	}
	b := make([]byte, nat.VirtioNetHdrLen)
	h.Encode(b)
	if !slices.Equal(b, golden) {
		t.Errorf("Encode = % x", b)
	}
	if err := h.Decode(golden[:9]); err != nat.ErrShortFrame {
		t.Errorf("short Decode = %v", err)
	}
	short := make([]byte, 9)
	h.Encode(short)
	if !slices.Equal(short, make([]byte, 9)) {
		t.Error("Encode wrote into a short buffer")
	}
	if n := testing.AllocsPerRun(100, func() { _ = h.Decode(golden); h.Encode(b) }); n != 0 {
		t.Errorf("allocs = %v", n)
	}
}

// TestVirtioPartialRoundTrip follows what lb does with a NEEDS_CSUM frame:
// decode with PartialCsum, SNAT it, then complete the checksum at
// CsumStart/CsumOffset and check it against a full recompute.
func TestVirtioPartialRoundTrip(t *testing.T) {
	frame := buildTCP(tcpSpec{src: ipC, dst: ipV, sport: 40000, dport: 443, opts: tsOpts(1, 2), payload: []byte("GET / HTTP/1.1\r\n\r\n")})
	makePartial(frame)
	h := nat.VirtioNetHdr{Flags: nat.VirtioNetHdrFNeedsCsum, CsumStart: 34, CsumOffset: 16}
	p := nat.Packet{PartialCsum: h.Flags&nat.VirtioNetHdrFNeedsCsum != 0}
	if err := p.Decode(frame); err != nil {
		t.Fatal(err)
	}
	p.SetSrc(nat.Addr4{10, 0, 0, 1})
	p.SetDst(nat.Addr4{10, 0, 0, 2})
	p.SetSrcPort(33333)
	p.SetDstPort(8443)
	p.SetTimestamps(77, 88)
	nat.CompletePartial(frame, int(h.CsumStart), int(h.CsumOffset))
	checkFull(t, frame)
}
