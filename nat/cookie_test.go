package nat

import (
	"encoding/binary"
	"math/rand/v2"
	"testing"
)

// TestSipHash24 checks the first vectors of the SipHash paper's Appendix A
// (key 00 01 .. 0f, message 00 01 .. of length 0..15).
func TestSipHash24(t *testing.T) {
	want := []uint64{
		0x726fdb47dd0e0e31, 0x74f839c593dc67fd, 0x0d6c8009d9a94f5a, 0x85676696d7fb7e2d,
		0xcf2794e0277187b7, 0x18765564cd99a68d, 0xcbc9466e58fee3ce, 0xab0200f58b01d137,
		0x93f5f5799a932462, 0x9e0082df0ba9e4b0, 0x7a5dbbc594ddb9f3, 0xf4b32f46226bada7,
		0x751e8fbc860ee5fb, 0x14ea5627c0843d90, 0xf723ca908e7af2ee, 0xa129ca6149be45e5,
	}
	var key [16]byte
	msg := make([]byte, 16)
	for i := range key {
		key[i] = byte(i)
		msg[i] = byte(i)
	}
	k0, k1 := binary.LittleEndian.Uint64(key[:8]), binary.LittleEndian.Uint64(key[8:])
	for n, w := range want {
		if got := sipHash24(k0, k1, msg[:n]); got != w {
			t.Errorf("SipHash-2-4 of %d bytes = %#x, want %#x", n, got, w)
		}
	}
}

func TestCookie(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	k := &CookieKey{r.Uint64(), r.Uint64(), r.Uint64(), r.Uint64()}
	other := &CookieKey{r.Uint64(), r.Uint64(), r.Uint64(), r.Uint64()}
	src, dst := Addr4{198, 18, 0, 11}.Mapped(), Addr4{198, 18, 0, 100}.Mapped()
	for i := range 10000 {
		seq := r.Uint32()
		count := r.Uint32()
		mi := uint8(i % 4)
		c := k.Cookie(src, dst, 40000, 80, seq, count, mi)
		for age := uint32(0); age < MaxCookieAge; age++ {
			if got, ok := k.CheckCookie(c, src, dst, 40000, 80, seq, count+age); !ok || got != mi {
				t.Fatalf("cookie %d minutes old: %d %v, want %d true", age, got, ok, mi)
			}
		}
		if _, ok := k.CheckCookie(c, src, dst, 40000, 80, seq, count+MaxCookieAge); ok {
			t.Fatalf("cookie %d minutes old accepted", MaxCookieAge)
		}
		for _, bad := range []func() (uint8, bool){
			func() (uint8, bool) { return k.CheckCookie(c+1<<12, src, dst, 40000, 80, seq, count) },
			func() (uint8, bool) { return k.CheckCookie(c, src, dst, 40001, 80, seq, count) },
			func() (uint8, bool) {
				return k.CheckCookie(c, Addr4{198, 18, 0, 12}.Mapped(), dst, 40000, 80, seq, count)
			},
			func() (uint8, bool) { return k.CheckCookie(c, src, dst, 40000, 80, seq+1<<12, count) },
			func() (uint8, bool) { return other.CheckCookie(c, src, dst, 40000, 80, seq, count) },
		} {
			// A wrong input gives a valid cookie only by chance: 4 of 2^24
			// data values (and the age) pass. (The ISN and the cookie are
			// added, so a cookie or ISN off by less than 4 can decode as
			// another MSS, as with Linux's: that needs the cookie.)
			if _, ok := bad(); ok && i < 100 {
				t.Fatalf("#%d: a forged cookie validated", i)
			}
		}
	}
	// Random ACKs (a flood of forged ones) almost never validate.
	valid := 0
	for range 1_000_000 {
		if _, ok := k.CheckCookie(r.Uint32(), src, dst, uint16(r.Uint32()), 80, r.Uint32(), 7); ok {
			valid++
		}
	}
	if valid > 5 { // expectation: 1e6 · 2 · 4 / 2^32 ≈ 0.002
		t.Errorf("%d of 1e6 random cookies validated", valid)
	}
}

func TestCookieTS(t *testing.T) {
	for _, tt := range []struct {
		now       uint32
		hasWS     bool
		ws        uint8
		sack      bool
		wantWS    bool
		wantScale uint8
	}{
		{1000, true, 7, true, true, 7},
		{1000, false, 0, true, false, 0},
		{1000, true, 14, false, true, 14},
		{1000, true, 15, false, true, 14}, // clamped as RFC 7323 §2.3 says
		{0, true, 0, false, true, 0},      // wraps below 0: still decodes
		{0xffffffff, true, 3, true, true, 3},
	} {
		ts := CookieTSVal(tt.now, tt.hasWS, tt.ws, tt.sack)
		if SeqAfter(ts, tt.now) || tt.now-ts >= 64 {
			t.Errorf("CookieTSVal(%d) = %d: not within 64 below now", tt.now, ts)
		}
		ws, scale, sack := CookieTSOptions(ts)
		if ws != tt.wantWS || scale != tt.wantScale || sack != tt.sack {
			t.Errorf("now %d: decoded %v %d %v, want %v %d %v", tt.now, ws, scale, sack, tt.wantWS, tt.wantScale, tt.sack)
		}
	}
	if CookieMSSIndex(1460) != 3 || CookieMSSIndex(1459) != 2 || CookieMSSIndex(100) != 0 || CookieMSSIndex(9000) != 3 {
		t.Error("CookieMSSIndex")
	}
}

func BenchmarkCookie(b *testing.B) {
	k := &CookieKey{1, 2, 3, 4}
	src, dst := Addr4{198, 18, 0, 11}.Mapped(), Addr4{198, 18, 0, 100}.Mapped()
	b.ReportAllocs()
	var s uint32
	for b.Loop() {
		c := k.Cookie(src, dst, 40000, 80, s, 9, 3)
		_, ok := k.CheckCookie(c, src, dst, 40000, 80, s, 9)
		if !ok {
			b.Fatal("invalid")
		}
		s++
	}
}
