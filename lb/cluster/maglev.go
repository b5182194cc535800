package cluster

import (
	"encoding/binary"
	"fmt"
	"slices"
)

// DefaultTableSize is the number of slots of a View's Maglev table when
// Config.TableSize is 0. It is prime, as Maglev requires (Eisenbud et al.,
// "Maglev: A Fast and Reliable Software Network Load Balancer", NSDI 2016,
// §3.4): every skip in 1..M-1 is then coprime with M, so each member's
// permutation visits every slot. It is more than 100 times MaxMembers, as
// the paper advises, so every member's share stays within about 1% of
// 1/N.
const DefaultTableSize = 65537

// MaxMembers is the largest number of members a cluster may have.
const MaxMembers = 256

// View is one set of live members and its Maglev table. A View is
// immutable: it is built once by Members and shared by every reader.
type View struct {
	// Members are the member IDs of the view, ascending.
	Members []MemberID
	// Epoch numbers the views one Members has built, from 1; it is local
	// to the instance (two instances may number the same set differently).
	Epoch uint64

	hash  uint64
	table []uint8 // slot -> index into Members (MaxMembers <= 256)
	m     uint64
}

// newView builds the view of ids (any order; duplicates are a caller bug)
// with a table of m slots, m prime.
func newView(ids []MemberID, m uint64, epoch uint64) *View {
	v := &View{Members: slices.Clone(ids), Epoch: epoch, m: m}
	slices.Sort(v.Members)
	if len(v.Members) > MaxMembers {
		panic(fmt.Sprintf("cluster: %d members, more than %d", len(v.Members), MaxMembers))
	}
	v.hash = viewHash(v.Members)
	if len(v.Members) > 0 {
		v.table = maglevTable(v.Members, m)
	}
	return v
}

// Owner returns the member that owns the flow whose tuple hashes to hash
// (see TupleHash), or 0 if the view is empty. Every instance with the
// same member set and table size computes the same owner. It allocates
// nothing.
func (v *View) Owner(hash uint64) MemberID {
	if v == nil || len(v.table) == 0 {
		return 0
	}
	return v.Members[v.table[hash%v.m]]
}

// Has reports whether id is in the view.
func (v *View) Has(id MemberID) bool {
	if v == nil {
		return false
	}
	_, ok := slices.BinarySearch(v.Members, id)
	return ok
}

// Hash is a digest of the view's member set (not of its epoch): two
// instances whose views hold the same members have the same Hash. It is
// carried in heartbeats so that members can tell whether they agree.
func (v *View) Hash() uint64 {
	if v == nil {
		return viewHash(nil)
	}
	return v.hash
}

// Len is the number of members in the view.
func (v *View) Len() int {
	if v == nil {
		return 0
	}
	return len(v.Members)
}

// TableSize is the number of slots of the view's table.
func (v *View) TableSize() uint64 { return v.m }

// viewHash is FNV-1a 64 over the ascending IDs, big-endian, finished
// with splitmix64.
func viewHash(ids []MemberID) uint64 {
	h := uint64(14695981039346656037)
	for _, id := range ids {
		h ^= uint64(id >> 8)
		h *= 1099511628211
		h ^= uint64(id & 0xff)
		h *= 1099511628211
	}
	return mix64(h)
}

// maglevTable fills m slots following §3.4 of the paper, as lb/maglev.go
// does for backends (every member has weight 1): in every round each
// member, in ascending ID order, claims the next still-empty slot of its
// permutation (offset + j·skip) mod m. The permutation depends only on the
// member's ID, so every instance builds the same table from the same set,
// and removing one member changes little besides its own slots.
func maglevTable(ids []MemberID, m uint64) []uint8 {
	n := len(ids)
	table := make([]uint8, m)
	claimed := make([]bool, m) // every uint8 is an index, so no sentinel
	offset := make([]uint64, n)
	skip := make([]uint64, n)
	next := make([]uint64, n)
	for i, id := range ids {
		h1, h2 := memberHashes(id)
		offset[i] = h1 % m
		skip[i] = h2%(m-1) + 1
	}
	filled := uint64(0)
	for {
		for i := range ids {
			c := (offset[i] + next[i]*skip[i]) % m
			for claimed[c] {
				next[i]++
				c = (offset[i] + next[i]*skip[i]) % m
			}
			table[c] = uint8(i)
			claimed[c] = true
			next[i]++
			filled++
			if filled == m {
				return table
			}
		}
	}
}

// memberHashes returns the offset and skip hashes of a member ID: FNV-1a
// 64 of a one-byte tag and the big-endian ID, finished with splitmix64.
func memberHashes(id MemberID) (uint64, uint64) {
	var key [3]byte
	binary.BigEndian.PutUint16(key[1:], uint16(id))
	key[0] = 'o'
	h1 := mix64(fnv1a(key[:]))
	key[0] = 's'
	h2 := mix64(fnv1a(key[:]))
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

// isPrime reports whether n is prime (trial division; n is a table size).
func isPrime(n uint64) bool {
	if n < 2 {
		return false
	}
	for d := uint64(2); d*d <= n; d++ {
		if n%d == 0 {
			return false
		}
	}
	return true
}

// TupleHash is the flow key of Owner: a hash of the client's tuple (client
// address and port, VIP and port) that is the same on every instance. It
// is not seeded per process (the datapath's own flow-table hash is, and
// must not be used for ownership): the 12 bytes packed into two words,
// each through the splitmix64 finaliser. It allocates nothing.
func TupleHash(client [4]byte, cport uint16, vip [4]byte, vport uint16) uint64 {
	a := uint64(binary.BigEndian.Uint32(client[:]))<<32 | uint64(binary.BigEndian.Uint32(vip[:]))
	b := uint64(cport)<<16 | uint64(vport)
	return mix64(a ^ mix64(b^0x9E3779B97F4A7C15))
}
