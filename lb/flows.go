package lb

import (
	"encoding/binary"

	"tslb/lb/snat"
	"tslb/nat"
)

// flowKey is the tuple of a packet as it arrives: from a client
// (src=client, dst=VIP) or from a backend (src=backend, dst=SNAT). It is
// packed and pointer-free (Tailscale flowtrack: netip keys were twice as
// slow).
type flowKey struct {
	src, dst     nat.Addr16
	sport, dport uint16
}

func (k flowKey) hash(seed uint64) uint64 {
	// Each 64-bit word times its own odd constant, then one finaliser.
	h := seed ^ binary.LittleEndian.Uint64(k.src[0:])*0x9e3779b97f4a7c15 ^
		binary.LittleEndian.Uint64(k.src[8:])*0xc2b2ae3d27d4eb4f ^
		binary.LittleEndian.Uint64(k.dst[0:])*0x165667b19e3779f9 ^
		binary.LittleEndian.Uint64(k.dst[8:])*0xd6e8feb86659fd93 ^
		(uint64(k.sport)<<16|uint64(k.dport))*0xff51afd7ed558ccd
	return mix64(h)
}

// flow is one client connection through tslb. It belongs to one worker
// (the one its client tuple and SNAT port steer to) and only that worker
// touches it, so it has no lock.
type flow struct {
	svc  *service
	be   *backend
	pool *snat.Pool

	client, vip, snat, baddr   nat.Addr16
	cport, vport, sport, bport uint16

	clientNIC *nic
	clientHop nat.Addr16

	created, last int64 // unix ns; last: the last packet either way
	state         nat.ConnState

	isn   uint32 // seq of the SYN sent to the backend (backend space)
	synTS uint32 // TSval of that SYN in rewrite mode

	capt *flowCapture // collision capture in progress
	// released: the connection finished (TIME_WAIT or RST) and its
	// backend tuple went back to the pool at once; the flow stays under
	// its client key only, until its timeout, to absorb late segments.
	released bool
	dead     bool

	tr      nat.Tracker
	x       nat.Translation
	syn     []byte // the SYN as sent to the backend, until it answers (repair)
	repairs uint8
	// backendFIN: the backend sent a FIN; backendTW: it will hold the
	// tuple in TIME_WAIT (it closed first, or simultaneously).
	backendFIN, backendTW bool

	// Half-open list (halfopen.go): halfOpen says the flow is on it.
	halfOpen       bool
	hoPrev, hoNext *flow
	// noLedger: tslb reset the backend's half of the flow; its tuple
	// goes back free.
	noLedger bool

	// Passive health (passive.go): the client's SYN as it came (until the
	// backend answers), when it was last sent, and the backends tried.
	csyn   []byte
	sentAt int64

	// SYN proxy (synproxy.go): px joins the backend's sequence space to
	// the cookie's; pxs is set until the backend answers.
	px           *nat.Proxy
	pxs          *proxyState
	redispatches uint8
	tried        [9]*backend
}

func (f *flow) clientKey() flowKey  { return flowKey{f.client, f.vip, f.cport, f.vport} }
func (f *flow) backendKey() flowKey { return flowKey{f.baddr, f.snat, f.bport, f.sport} }

// finished reports whether the connection is over (TIME_WAIT or closed).
func (f *flow) finished() bool { return f.state == nat.StateTimeWait || f.state == nat.StateClosed }

// flowTable is one worker's flows, each under its two keys (client→VIP and
// backend→SNAT): an open-addressing hash table with linear probing and
// backward-shift deletion (no tombstones), keys stored inline next to a
// 32-bit tag of their hash, so a lookup is one hash and usually one cache
// line. It has no lock: only its worker uses it. It grows (doubling) past
// 3/4 load and never shrinks. The hash is seeded per table, so crafted
// tuples cannot build long probe chains.
type flowTable struct {
	_     [64]byte // per worker, allocated side by side: n must not share a line
	seed  uint64
	slots []flowSlot
	mask  uint64
	n     int
	_     [64]byte
}

type flowSlot struct {
	k   flowKey
	tag uint32 // hash>>32 | 1: 0 means empty
	f   *flow
}

const flowTableMinSize = 1024 // slots; a power of two

func newFlowTable(seed uint64) *flowTable {
	t := &flowTable{seed: seed | 1}
	t.alloc(flowTableMinSize)
	return t
}

func (t *flowTable) alloc(size int) {
	t.slots = make([]flowSlot, size)
	t.mask = uint64(size - 1)
}

func tagOf(h uint64) uint32 { return uint32(h>>32) | 1 }

// get returns the flow under k, or nil.
func (t *flowTable) get(k flowKey) *flow {
	h := k.hash(t.seed)
	tag := tagOf(h)
	for i := h & t.mask; ; i = (i + 1) & t.mask {
		s := &t.slots[i]
		if s.tag == 0 {
			return nil
		}
		if s.tag == tag && s.k == k {
			return s.f
		}
	}
}

// put stores f under k (replacing what k held).
func (t *flowTable) put(k flowKey, f *flow) {
	if (t.n+1)*4 > len(t.slots)*3 {
		t.grow()
	}
	h := k.hash(t.seed)
	tag := tagOf(h)
	for i := h & t.mask; ; i = (i + 1) & t.mask {
		s := &t.slots[i]
		if s.tag == 0 {
			*s = flowSlot{k, tag, f}
			t.n++
			return
		}
		if s.tag == tag && s.k == k {
			s.f = f
			return
		}
	}
}

func (t *flowTable) grow() {
	old := t.slots
	t.alloc(2 * len(old))
	t.n = 0
	for i := range old {
		if old[i].tag != 0 {
			t.put(old[i].k, old[i].f)
		}
	}
}

// insert adds f under both keys.
func (t *flowTable) insert(f *flow) {
	t.put(f.clientKey(), f)
	t.put(f.backendKey(), f)
}

// removeKey deletes k if it points at f, shifting the entries that follow
// in its probe run back so no tombstone is left (Knuth's Algorithm R).
func (t *flowTable) removeKey(k flowKey, f *flow) {
	h := k.hash(t.seed)
	tag := tagOf(h)
	i := h & t.mask
	for {
		s := &t.slots[i]
		if s.tag == 0 {
			return
		}
		if s.tag == tag && s.k == k {
			if s.f != f {
				return
			}
			break
		}
		i = (i + 1) & t.mask
	}
	for j := (i + 1) & t.mask; ; j = (j + 1) & t.mask {
		s := &t.slots[j]
		if s.tag == 0 {
			break
		}
		home := s.k.hash(t.seed) & t.mask
		// Move s back to the hole at i unless its home lies cyclically in
		// (i, j]: then it is still reachable where it is.
		if (j > i && (home <= i || home > j)) || (j < i && home <= i && home > j) {
			t.slots[i] = *s
			i = j
		}
	}
	t.slots[i] = flowSlot{}
	t.n--
}

// remove deletes both keys of f if they still point at f.
func (t *flowTable) remove(f *flow) {
	t.removeKey(f.clientKey(), f)
	t.removeKey(f.backendKey(), f)
}

// reapParts is how many parts the reaper visits the table in.
const reapParts = 64

// collect appends to out the flows of part i (of reapParts) for which
// expired returns true, each once (under its client key). An entry moved
// by a deletion meanwhile may be missed this round and seen the next.
func (t *flowTable) collect(part int, out []*flow, expired func(*flow) bool) []*flow {
	n := len(t.slots)
	lo, hi := part*n/reapParts, (part+1)*n/reapParts
	for i := lo; i < hi; i++ {
		s := &t.slots[i]
		if s.tag != 0 && s.k == s.f.clientKey() && expired(s.f) {
			out = append(out, s.f)
		}
	}
	return out
}
