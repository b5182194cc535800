package lb

import (
	"encoding/binary"

	"tslb/nat"
)

// addrMap maps addresses (lb's one address type) to values: an
// open-addressing table with linear probing and a cheap hash of the two
// 64-bit halves. Go's maps hash a 16-byte key with the generic hash (no
// fast path), which was a tenth of the per-packet cost; the tables here
// are small and read per packet (owned addresses, neighbours). It is not
// safe for concurrent writes; readers of a published table (behind an
// atomic pointer, never written after) need no lock. No deletion: rebuild.
type addrMap[V any] struct {
	slots []addrSlot[V]
	mask  uint64
	n     int
}

type addrSlot[V any] struct {
	k    nat.Addr16
	used bool
	v    V
}

func newAddrMap[V any](hint int) *addrMap[V] {
	size := 8
	for size < 2*hint {
		size *= 2
	}
	return &addrMap[V]{slots: make([]addrSlot[V], size), mask: uint64(size - 1)}
}

func addrHash(a nat.Addr16) uint64 {
	lo, hi := binary.LittleEndian.Uint64(a[0:]), binary.LittleEndian.Uint64(a[8:])
	return mix64(lo*0x9e3779b97f4a7c15 ^ hi)
}

// get returns the value of k.
func (m *addrMap[V]) get(k nat.Addr16) (V, bool) {
	for i := addrHash(k) & m.mask; ; i = (i + 1) & m.mask {
		s := &m.slots[i]
		if !s.used {
			var zero V
			return zero, false
		}
		if s.k == k {
			return s.v, true
		}
	}
}

// set stores v under k.
func (m *addrMap[V]) set(k nat.Addr16, v V) {
	if 2*(m.n+1) > len(m.slots) {
		bigger := newAddrMap[V](m.n + 1)
		m.each(func(k nat.Addr16, v V) { bigger.set(k, v) })
		*m = *bigger
	}
	for i := addrHash(k) & m.mask; ; i = (i + 1) & m.mask {
		s := &m.slots[i]
		if !s.used {
			*s = addrSlot[V]{k, true, v}
			m.n++
			return
		}
		if s.k == k {
			s.v = v
			return
		}
	}
}

// each calls fn for every entry.
func (m *addrMap[V]) each(fn func(nat.Addr16, V)) {
	for i := range m.slots {
		if m.slots[i].used {
			fn(m.slots[i].k, m.slots[i].v)
		}
	}
}

func (m *addrMap[V]) len() int { return m.n }
