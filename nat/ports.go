package nat

import "math/bits"

// PortPool hands out ports in [lo, hi] from a bitmap. Every Alloc first
// probes a few pseudo-random positions (splitmix64 from the seed); if they
// are all taken it continues from the last one with a cursor that rotates
// through the 64-bit words (bits.TrailingZeros64 per word), wrapping at the
// end, and takes the first free port it meets. So choices spread uniformly
// over the free ports, a just-freed port is not handed straight back, and
// nothing hot-spots. A search is O(1) expected until the pool is nearly
// full, and then at most one pass over (hi-lo+1)/64 words (≤ 1024); an
// exhausted pool answers at once. Not safe for concurrent use.
type PortPool struct {
	lo    uint16
	size  int
	inUse int
	words []uint64 // bit set = port in use (or past the end of the range)
	rng   uint64
}

// NewPortPool returns a pool of the ports in [lo, hi] (empty if hi < lo)
// whose search order is derived from seed.
func NewPortPool(lo, hi uint16, seed uint64) *PortPool {
	p := &PortPool{lo: lo, rng: seed}
	if hi < lo {
		return p
	}
	p.size = int(hi) - int(lo) + 1
	p.words = make([]uint64, (p.size+63)/64)
	if r := p.size % 64; r != 0 {
		p.words[len(p.words)-1] = ^uint64(0) << r // mark bits past hi used
	}
	return p
}

// next returns the next splitmix64 value.
func (p *PortPool) next() uint64 {
	p.rng += 0x9e3779b97f4a7c15
	z := p.rng
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// randomProbes is how many uniformly random positions Alloc tries before
// it falls back to a scan. Probing first avoids the bias of a plain "random
// start, then first free" search, which favours free ports that follow long
// runs of busy ones; with the pool a fraction f full only f^randomProbes of
// allocations reach the scan.
const randomProbes = 4

// Alloc takes a free port. It returns false if the pool is exhausted.
func (p *PortPool) Alloc() (uint16, bool) {
	if p.inUse >= p.size {
		return 0, false
	}
	var start uint64
	for range randomProbes {
		start, _ = bits.Mul64(p.next(), uint64(p.size)) // uniform in [0, size)
		if p.words[start/64]&(1<<(start%64)) == 0 {
			p.words[start/64] |= 1 << (start % 64)
			p.inUse++
			return p.lo + uint16(start), true
		}
	}
	w := int(start / 64)
	// First word: only bits at or after the starting point.
	if free := ^p.words[w] &^ (1<<(start%64) - 1); free != 0 {
		return p.take(w, free), true
	}
	for range len(p.words) {
		w++
		if w == len(p.words) {
			w = 0
		}
		if free := ^p.words[w]; free != 0 {
			return p.take(w, free), true
		}
	}
	return 0, false // unreachable while inUse < size
}

// take marks the lowest bit of free in word w used and returns its port.
func (p *PortPool) take(w int, free uint64) uint16 {
	b := bits.TrailingZeros64(free)
	p.words[w] |= 1 << b
	p.inUse++
	return p.lo + uint16(w*64+b)
}

// index returns the bitmap position of port, or -1 if out of range.
func (p *PortPool) index(port uint16) int {
	i := int(port) - int(p.lo)
	if i < 0 || i >= p.size {
		return -1
	}
	return i
}

// Reserve takes a specific port if it is in range and free, and reports
// whether it did.
func (p *PortPool) Reserve(port uint16) bool {
	i := p.index(port)
	if i < 0 || p.words[i/64]&(1<<(i%64)) != 0 {
		return false
	}
	p.words[i/64] |= 1 << (i % 64)
	p.inUse++
	return true
}

// Free returns port to the pool. Freeing a port that is free or out of
// range is a no-op and does not change InUse.
func (p *PortPool) Free(port uint16) {
	i := p.index(port)
	if i < 0 || p.words[i/64]&(1<<(i%64)) == 0 {
		return
	}
	p.words[i/64] &^= 1 << (i % 64)
	p.inUse--
}

// InUse returns the number of ports taken.
func (p *PortPool) InUse() int { return p.inUse }

// Size returns the number of ports in the range.
func (p *PortPool) Size() int { return p.size }
