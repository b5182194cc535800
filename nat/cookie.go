package nat

import (
	"encoding/binary"
	"math/bits"
)

// SYN cookies (RFC 4987 §3.6), as Linux makes them
// (net/ipv4/syncookies.c): the ISN of a SYN-ACK answered without keeping
// any state encodes what the answer needs — a hash of the client's tuple
// under a secret, a minute counter, and the client's MSS (an index into
// CookieMSS) — so that the client's ACK, acknowledging ISN+1, proves it
// received the SYN-ACK and brings the MSS back:
//
//	cookie = H(k0; tuple) + client ISN + (count << 24)
//	         + ((H(k1; tuple, count) + mssIndex) mod 2^24)
//
// A cookie is valid for MaxCookieAge minutes (count, count-1). Window
// scale and SACK-permitted do not fit in the ISN: when the client sent a
// timestamp, they travel in the low 6 bits of the SYN-ACK's TSval, which
// the client echoes in its TSecr (cookie_init_timestamp and
// cookie_timestamp_decode in Linux); without timestamps they are lost, as
// with Linux's cookies.

// CookieMSS are the MSS values a cookie can carry (Linux's msstab): the
// cookie gives the largest not above the client's.
var CookieMSS = [4]uint16{536, 1300, 1440, 1460}

// MaxCookieAge is how many minute counts a cookie stays valid (Linux's
// MAX_SYNCOOKIE_AGE).
const MaxCookieAge = 2

const (
	cookieBits = 24
	cookieMask = 1<<cookieBits - 1
)

// CookieKey is the secret of a cookie jar: two 128-bit SipHash keys.
type CookieKey [4]uint64

// Cookie returns the SYN-ACK ISN for a client SYN from src:sport to
// dst:dport with sequence number seq, carrying mssIndex (0..3), at minute
// count count.
// The addresses are in lb's one address type (IPv4 mapped, see Addr16.Is4).
func (k *CookieKey) Cookie(src, dst Addr16, sport, dport uint16, seq, count uint32, mssIndex uint8) uint32 {
	t := cookieTuple(src, dst, sport, dport)
	return k.hash(0, t, 0) + seq + count<<cookieBits + (k.hash(1, t, count)+uint32(mssIndex))&cookieMask
}

// CheckCookie reverses Cookie for the ACK of a cookie SYN-ACK: cookie is
// the ACK's ack-1 and seq its seq-1 (the client's ISN), count the minute
// now. It returns the MSS index and whether the cookie is valid (made by
// this key for this tuple and ISN at most MaxCookieAge-1 minutes ago).
func (k *CookieKey) CheckCookie(cookie uint32, src, dst Addr16, sport, dport uint16, seq, count uint32) (mssIndex uint8, ok bool) {
	t := cookieTuple(src, dst, sport, dport)
	cookie -= k.hash(0, t, 0) + seq
	diff := (count - cookie>>cookieBits) & (^uint32(0) >> cookieBits)
	if diff >= MaxCookieAge {
		return 0, false
	}
	data := (cookie - k.hash(1, t, count-diff)) & cookieMask
	if data >= uint32(len(CookieMSS)) {
		return 0, false
	}
	return uint8(data), true
}

// CookieMSSIndex is the index of the largest CookieMSS not above mss (0
// when mss is below them all).
func CookieMSSIndex(mss uint16) uint8 {
	i := uint8(0)
	for j, m := range CookieMSS {
		if m <= mss {
			i = uint8(j)
		}
	}
	return i
}

func cookieTuple(src, dst Addr16, sport, dport uint16) [36]byte {
	var t [36]byte
	copy(t[0:16], src[:])
	copy(t[16:32], dst[:])
	binary.BigEndian.PutUint16(t[32:], sport)
	binary.BigEndian.PutUint16(t[34:], dport)
	return t
}

// hash is SipHash-2-4 under key half i of k, over the tuple and count,
// truncated to 32 bits.
func (k *CookieKey) hash(i int, t [36]byte, count uint32) uint32 {
	var m [40]byte
	copy(m[:], t[:])
	binary.LittleEndian.PutUint32(m[36:], count)
	return uint32(sipHash24(k[2*i], k[2*i+1], m[:]))
}

// Cookie timestamp options: the low TSBits of a cookie SYN-ACK's TSval
// (Linux: TSBITS, TS_OPT_WSCALE_MASK, TS_OPT_SACK).
const (
	cookieTSBits    = 6
	cookieTSWScale  = 0xf // no window scaling
	cookieTSSACK    = 1 << 4
	cookieTSMaskAll = 1<<cookieTSBits - 1
)

// CookieTSVal returns the TSval of a cookie SYN-ACK at clock value now:
// now with its low 6 bits replaced by the client's window scale (0..14,
// or hasWScale false) and SACK-permitted, and never above now (Linux
// rounds down so later TSvals do not go back).
func CookieTSVal(now uint32, hasWScale bool, wscale uint8, sack bool) uint32 {
	opts := uint32(cookieTSWScale)
	if hasWScale {
		opts = uint32(min(wscale, 14))
	}
	if sack {
		opts |= cookieTSSACK
	}
	ts := now&^cookieTSMaskAll | opts
	if SeqAfter(ts, now) {
		ts -= 1 << cookieTSBits
	}
	return ts
}

// CookieTSOptions decodes the options CookieTSVal put in a TSval (the
// client's TSecr): window scale and SACK-permitted.
func CookieTSOptions(tsecr uint32) (hasWScale bool, wscale uint8, sack bool) {
	ws := tsecr & cookieTSWScale
	if ws != cookieTSWScale && ws <= 14 {
		hasWScale, wscale = true, uint8(ws)
	}
	return hasWScale, wscale, tsecr&cookieTSSACK != 0
}

// sipHash24 is SipHash-2-4 (Aumasson and Bernstein, 2012) of m under the
// key (k0, k1).
func sipHash24(k0, k1 uint64, m []byte) uint64 {
	v0 := k0 ^ 0x736f6d6570736575
	v1 := k1 ^ 0x646f72616e646f6d
	v2 := k0 ^ 0x6c7967656e657261
	v3 := k1 ^ 0x7465646279746573
	round := func() {
		v0 += v1
		v1 = bits.RotateLeft64(v1, 13)
		v1 ^= v0
		v0 = bits.RotateLeft64(v0, 32)
		v2 += v3
		v3 = bits.RotateLeft64(v3, 16)
		v3 ^= v2
		v0 += v3
		v3 = bits.RotateLeft64(v3, 21)
		v3 ^= v0
		v2 += v1
		v1 = bits.RotateLeft64(v1, 17)
		v1 ^= v2
		v2 = bits.RotateLeft64(v2, 32)
	}
	n := len(m)
	for len(m) >= 8 {
		w := binary.LittleEndian.Uint64(m)
		v3 ^= w
		round()
		round()
		v0 ^= w
		m = m[8:]
	}
	last := uint64(n) << 56
	for i, c := range m {
		last |= uint64(c) << (8 * i)
	}
	v3 ^= last
	round()
	round()
	v0 ^= last
	v2 ^= 0xff
	round()
	round()
	round()
	round()
	return v0 ^ v1 ^ v2 ^ v3
}
