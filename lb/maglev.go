package lb

import (
	"encoding/binary"
	"fmt"
	"slices"
)

// MaglevTableSize is the number of slots in a maglev scheduler's lookup
// table. It is prime, as Maglev requires (Eisenbud et al., "Maglev: A Fast
// and Reliable Software Network Load Balancer", NSDI 2016, §3.4): every
// skip in 1..M-1 is then coprime with M, so each backend's permutation
// visits every slot. 65537 is the default of cilium's pkg/maglev for large
// tables; it keeps each backend's share within 1% of its weight for up to a
// few hundred backends (the paper advises M > 100·N) and costs 128 KiB per
// service (uint16 slots). Since slots are uint16, a service has at most
// 65535 backends.
const MaglevTableSize = 65537

// maglev is Maglev consistent hashing over a service's backends: a lookup
// table of M slots built once at construction, and Pick(hash) returns the
// backend of slot hash % M. The table is read-only after construction, so
// Pick takes no lock and does not allocate.
//
// Each backend's preference list is a permutation of the slots derived
// from two hashes of its address:port, not from its position, and the
// backends are sorted by address:port before filling, so every instance
// with the same backend set builds the same table, and adding or removing
// one backend changes few slots besides its own.
type maglev struct {
	backends []*backend // sorted by address:port, weight > 0
	table    []uint16   // slot -> index into backends
	m        uint64
}

// newMaglev builds the table of size m (a prime; MaglevTableSize unless a
// test asks otherwise) over the backends with weight > 0.
func newMaglev(backends []*backend, m uint64) (*maglev, error) {
	g := &maglev{m: m}
	for _, b := range backends {
		if b.weight > 0 {
			g.backends = append(g.backends, b)
		}
	}
	if len(g.backends) > int(m) || len(g.backends) > 0xffff {
		return nil, fmt.Errorf("lb: maglev: %d backends do not fit a table of %d slots", len(g.backends), m)
	}
	slices.SortStableFunc(g.backends, func(a, b *backend) int { return a.ap.Compare(b.ap) })
	if len(g.backends) == 0 {
		return g, nil
	}
	g.table = maglevTable(g.backends, m)
	return g, nil
}

// maglevTable fills m slots following §3.4 of the paper, with weights as in
// cilium's pkg/maglev: in every round each backend takes weight turns, and
// a turn claims the next still-empty slot of its permutation
// (offset + j·skip) mod m. Backends are taken in the order given.
func maglevTable(backends []*backend, m uint64) []uint16 {
	const empty = 0xffff
	table := make([]uint16, m)
	for i := range table {
		table[i] = empty
	}
	offset := make([]uint64, len(backends))
	skip := make([]uint64, len(backends))
	next := make([]uint64, len(backends)) // j of each permutation
	for i, b := range backends {
		h1, h2 := maglevHashes(b)
		offset[i] = h1 % m
		skip[i] = h2%(m-1) + 1
	}
	filled := uint64(0)
	for {
		for i, b := range backends {
			for range b.weight {
				c := (offset[i] + next[i]*skip[i]) % m
				for table[c] != empty {
					next[i]++
					c = (offset[i] + next[i]*skip[i]) % m
				}
				table[c] = uint16(i)
				next[i]++
				filled++
				if filled == m {
					return table
				}
			}
		}
	}
}

// maglevHashes returns the two hashes of a backend's address:port that
// give its permutation's offset and skip. They are FNV-1a 64 of the
// 4-byte address and big-endian port, with two different prefixes,
// finished with splitmix64 so that neighbouring addresses spread.
func maglevHashes(b *backend) (uint64, uint64) {
	// IPv4: the 4-byte address (the table is the same as before tslb was
	// dual-stack, and on every instance); IPv6: the 16 bytes.
	var key [19]byte
	n := 1
	if b.addr.Is4() {
		v4 := b.addr.Unmap()
		n += copy(key[n:], v4[:])
	} else {
		n += copy(key[n:], b.addr[:])
	}
	binary.BigEndian.PutUint16(key[n:], b.port)
	n += 2
	key[0] = 'o'
	h1 := mix64(fnv1a(key[:n]))
	key[0] = 's'
	h2 := mix64(fnv1a(key[:n]))
	return h1, h2
}

func fnv1a(b []byte) uint64 {
	h := uint64(14695981039346656037)
	for _, c := range b {
		h ^= uint64(c)
		h *= 1099511628211
	}
	return h
}

// mix64 is the splitmix64 finaliser.
func mix64(h uint64) uint64 {
	h ^= h >> 30
	h *= 0xbf58476d1ce4e5b9
	h ^= h >> 27
	h *= 0x94d049bb133111eb
	h ^= h >> 31
	return h
}

// Pick implements Scheduler: the backend of slot hash % M, nil if every
// backend is drained.
func (g *maglev) Pick(hash uint64) *backend {
	if len(g.table) == 0 {
		return nil
	}
	return g.backends[g.table[hash%g.m]]
}
