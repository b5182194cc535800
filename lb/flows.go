package lb

import (
	"encoding/binary"
	"sync"
	"sync/atomic"

	"tslb/nat"
)

// flowKey is the tuple of a packet as it arrives: from a client
// (src=client, dst=VIP) or from a backend (src=backend, dst=SNAT). It is
// packed and pointer-free (Tailscale flowtrack: netip keys were twice as
// slow).
type flowKey struct {
	src, dst     nat.Addr4
	sport, dport uint16
}

func (k flowKey) hash(seed uint64) uint64 {
	h := seed ^ uint64(binary.LittleEndian.Uint32(k.src[:]))<<32 ^ uint64(binary.LittleEndian.Uint32(k.dst[:]))
	h ^= uint64(k.sport)<<16 | uint64(k.dport)
	// splitmix64 finaliser
	h ^= h >> 30
	h *= 0xbf58476d1ce4e5b9
	h ^= h >> 27
	h *= 0x94d049bb133111eb
	h ^= h >> 31
	return h
}

// flow is one client connection through tslb.
type flow struct {
	svc  *service
	be   *backend
	pool *snatPool

	client, vip, snat, baddr   nat.Addr4
	cport, vport, sport, bport uint16

	clientLink *link
	clientHop  nat.Addr4

	created int64
	last    atomic.Int64  // unix ns of the last packet either way
	state   atomic.Uint32 // mirror of tr.State, read by the reaper without mu

	isn   uint32 // seq of the SYN sent to the backend (backend space)
	synTS uint32 // TSval of that SYN in rewrite mode

	capt atomic.Pointer[flowCapture] // collision capture in progress
	// released: the connection finished (TIME_WAIT or RST) and its
	// backend tuple went back to the pool at once; the flow stays under
	// its client key only, until its timeout, to absorb late segments.
	released atomic.Bool

	mu      sync.Mutex // guards everything below
	tr      nat.Tracker
	x       nat.Translation
	syn     []byte // the SYN as sent to the backend, until it answers (repair)
	repairs uint8
	dead    bool
	// backendFIN: the backend sent a FIN; backendTW: it will hold the
	// tuple in TIME_WAIT (it closed first, or simultaneously).
	backendFIN, backendTW bool
}

func (f *flow) clientKey() flowKey  { return flowKey{f.client, f.vip, f.cport, f.vport} }
func (f *flow) backendKey() flowKey { return flowKey{f.baddr, f.snat, f.bport, f.sport} }

const numShards = 256 // power of two

type flowShard struct {
	mu sync.Mutex
	m  map[flowKey]*flow
	_  [40]byte // keep shards' locks on separate cache lines
}

// flowTable indexes every flow under its two keys. Lookups lock one of 256
// shards chosen by a seeded hash, so the two link workers rarely contend.
// Lock order: a goroutine holds at most one shard lock at a time, and never
// a flow's mu while taking a shard lock.
type flowTable struct {
	seed   uint64
	max    int64
	count  atomic.Int64
	shards [numShards]flowShard
}

func newFlowTable(max int, seed uint64) *flowTable {
	t := &flowTable{seed: seed, max: int64(max)}
	for i := range t.shards {
		t.shards[i].m = make(map[flowKey]*flow)
	}
	return t
}

func (t *flowTable) shard(k flowKey) *flowShard {
	return &t.shards[k.hash(t.seed)&(numShards-1)]
}

func (t *flowTable) get(k flowKey) *flow {
	s := t.shard(k)
	s.mu.Lock()
	f := s.m[k]
	s.mu.Unlock()
	return f
}

// reserve counts a new flow against the maximum; false means the table is
// full and the flow must be refused.
func (t *flowTable) reserve() bool {
	if t.count.Add(1) > t.max {
		t.count.Add(-1)
		return false
	}
	return true
}

func (t *flowTable) unreserve() { t.count.Add(-1) }

// insert adds f under both keys. It fails (returning the flow already
// there) if the client key is taken.
func (t *flowTable) insert(f *flow) (*flow, bool) {
	ck := f.clientKey()
	s := t.shard(ck)
	s.mu.Lock()
	if old := s.m[ck]; old != nil {
		s.mu.Unlock()
		return old, false
	}
	s.m[ck] = f
	s.mu.Unlock()

	bk := f.backendKey()
	s = t.shard(bk)
	s.mu.Lock()
	s.m[bk] = f
	s.mu.Unlock()
	return f, true
}

// removeKey deletes k if it points at f (the count is unchanged: f stays
// under its other key).
func (t *flowTable) removeKey(k flowKey, f *flow) {
	s := t.shard(k)
	s.mu.Lock()
	if s.m[k] == f {
		delete(s.m, k)
	}
	s.mu.Unlock()
}

// remove deletes both keys of f if they still point at f.
func (t *flowTable) remove(f *flow) {
	for _, k := range [2]flowKey{f.clientKey(), f.backendKey()} {
		s := t.shard(k)
		s.mu.Lock()
		if s.m[k] == f {
			delete(s.m, k)
		}
		s.mu.Unlock()
	}
	t.count.Add(-1)
}

// collect appends to out the flows of shard i for which expired returns
// true, visiting each flow once (under its client key).
func (t *flowTable) collect(i int, out []*flow, expired func(*flow) bool) []*flow {
	s := &t.shards[i]
	s.mu.Lock()
	for k, f := range s.m {
		if k == f.clientKey() && expired(f) {
			out = append(out, f)
		}
	}
	s.mu.Unlock()
	return out
}
