package snat

import (
	"math"
	"math/bits"
	"net/netip"
	"unsafe"

	"tslb/nat"
)

// Record is what tslb remembers about a backend tuple in TIME_WAIT: the
// facts the backend's tcp_timewait_state_process() will test a new SYN on
// that tuple against (see the TIME_WAIT notes, §1).
type Record struct {
	// Until is the unix ns when the backend's TIME_WAIT ends (closed time
	// + time_wait).
	Until int64
	// NextSeq is the backend's rcv_nxt for the old connection: the highest
	// seq sent toward it (backend space). A new SYN is accepted if its
	// seq is after it (e.g. NextSeq + 65537, as Linux does).
	NextSeq uint32
	// LastTS is the highest TSval sent toward it; a new SYN's TSval must
	// be newer (and never older, PAWS) when HasTS.
	LastTS uint32
	// HasTS says whether the old connection used timestamps (a TSval was
	// sent).
	HasTS bool
	// Unknown says that nothing is known of the backend's state for the
	// tuple: it was held by a flow when tslb stopped without ending it (a
	// crash, or a shutdown timeout), so the backend may hold it in
	// ESTABLISHED or TIME_WAIT with any sequence numbers. No reuse of it
	// is ever proven safe; it is free at Until, or when the caller has
	// proven the backend holds nothing (Forget).
	Unknown bool
}

// Pool is the SNAT port pool of one (SNAT address, backend address:port)
// pair, or of one datapath worker's share of it, together with the ledger
// of that pair's tuples in TIME_WAIT. Every port is in one of three
// states: free, live (held by a flow) or in TIME_WAIT (its last flow ended
// with the backend closing first, and the backend may still hold the
// tuple).
//
// A pool holds the ports lo, lo+stride, lo+2·stride, ... up to hi: a
// worker's share of the range when the datapath runs several workers
// (NewPool; worker w of n owns the ports p with p % n == w, so that a
// fanout program can steer return traffic by destination port), or the
// whole range with stride 1.
//
// Memory is fixed at construction and bounded by the port range: three
// bitmaps, one 16-byte record per port and a FIFO ring of 16-byte (until,
// port) entries, about 2 MB for 64k ports. Nothing allocates afterwards.
// The ring repeats Until so that expiry reads it sequentially instead of
// missing the cache on a random record per operation.
//
// Free ports are found with a few random probes (randomProbes), then a
// rotating scan of 64-bit words with bits.TrailingZeros64. TIME_WAIT
// tuples sit in the ring in the order they entered it; expiry pops the
// head while its Until <= now. Every operation is O(1) amortised. Until
// values normally rise with insertion order (one time_wait per backend);
// when they do not, a later entry that ends earlier waits behind the head:
// the check is conservative (a tuple may stay quarantined longer than
// needed, never shorter), and Alloc's "soonest to end" is the ring head.
// Ring entries are validated against the TIME_WAIT bitmap when popped, so
// a stale entry can never free or hand out a wrong port.
//
// Not safe for concurrent use: its owner (one datapath worker) serialises
// it with whoever else reads it (metrics, the state file).
type Pool struct {
	// SNAT and Backend name the pair; Clock is tslb's timestamp clock
	// toward that backend (see Clock). They are set by the caller and
	// never changed by the pool.
	SNAT    nat.Addr16
	Backend netip.AddrPort
	Clock   Clock
	// Allocs counts the tuples handed to new flows, by Kind (the caller
	// counts, once the flow exists).
	Allocs [NumKinds]uint64

	lo      uint16
	stride  int
	size    int
	busy    []uint64  // bit set = live or in TIME_WAIT (or past the range)
	tw      []uint64  // bit set = in TIME_WAIT
	recs    []twRec   // per port, valid while its tw bit is set
	hasTS   []uint64  // per port bit: Record.HasTS
	unknown []uint64  // per port bit: Record.Unknown
	ring    []twEntry // TIME_WAIT tuples in insertion order (FIFO)
	head    int       // ring index of the oldest entry
	n       int       // entries in the ring
	inUse   int
	tWait   int
	entered uint64
	rng     uint64

	// rate of tuples entering TIME_WAIT per second (EWMA), kept by Tick.
	lastEntered uint64
	rate        float64
}

// twRec is the ledger record of one port (Record without HasTS).
type twRec struct {
	until           int64
	nextSeq, lastTS uint32
}

// twEntry is one TIME_WAIT ring entry.
type twEntry struct {
	until int64
	idx   uint32
}

// randomProbes is how many uniformly random positions allocFree tries
// before it falls back to a scan. Probing first avoids the bias of a plain
// "random start, then first free" search, which favours free ports that
// follow long runs of busy ones; with the pool a fraction f full only
// f^randomProbes of allocations reach the scan.
const randomProbes = 4

// NewPool returns worker's share of the ports [lo, hi] when workers
// workers split them: the ports p with p % workers == worker (PortOwner),
// all free, with a search order derived from seed. It is empty if the
// share has no port (hi < lo, or fewer ports than workers).
func NewPool(lo, hi uint16, worker, workers int, seed uint64) *Pool {
	first, size, stride := partition(lo, hi, worker, workers)
	return newPool(first, size, stride, seed, nil)
}

// PortOwner returns the worker, of workers, whose pools hold port: port %
// workers. It matches the backend links' fanout steering (link.PortOwner).
func PortOwner(port uint16, workers int) int {
	if workers <= 1 {
		return 0
	}
	return int(port) % workers
}

// MemSize is the number of bytes of per-port state a pool of size ports
// keeps in the memory given to NewPoolIn: four bitmaps (busy, TIME_WAIT,
// HasTS, Unknown) and a 16-byte ledger record per port.
func MemSize(size int) int { return 4*8*((size+63)/64) + 16*size }

// NewPoolIn is NewPool with the pool's per-port state — which ports are
// busy, which are in TIME_WAIT, and their ledger records — in mem instead
// of the Go heap. mem must hold MemSize of the pool's Size bytes (PortCount
// gives it before the pool exists), be 8-byte aligned and zeroed. A caller
// that maps mem from a file (MAP_SHARED) keeps the ledger across a crash
// of the process: every Alloc and Release is a store into that memory,
// which the kernel keeps; ScanMem reads it back. Only the FIFO order of
// TIME_WAIT tuples is not kept (it is rebuilt from the records).
func NewPoolIn(mem []byte, lo, hi uint16, worker, workers int, seed uint64) *Pool {
	first, size, stride := partition(lo, hi, worker, workers)
	if len(mem) < MemSize(size) {
		panic("snat: NewPoolIn: memory too small")
	}
	return newPool(first, size, stride, seed, mem)
}

// PortCount returns how many ports worker's share of [lo, hi] holds, and
// its first port.
func PortCount(lo, hi uint16, worker, workers int) (first uint16, size int) {
	f, n, _ := partition(lo, hi, worker, workers)
	return f, n
}

func partition(lo, hi uint16, worker, workers int) (first uint16, size, stride int) {
	if workers < 1 {
		workers = 1
	}
	f := int(lo) + ((worker-int(lo)%workers)%workers+workers)%workers
	if f > int(hi) || hi < lo {
		return lo, 0, workers
	}
	return uint16(f), (int(hi)-f)/workers + 1, workers
}

// carve returns the bitmaps and records of a pool of size ports laid out
// in mem (MemSize(size) bytes).
func carve(mem []byte, size int) (busy, tw, hasTS, unknown []uint64, recs []twRec) {
	words := (size + 63) / 64
	u64 := unsafe.Slice((*uint64)(unsafe.Pointer(unsafe.SliceData(mem))), 4*words)
	busy, tw, hasTS, unknown = u64[:words:words], u64[words:2*words:2*words], u64[2*words:3*words:3*words], u64[3*words:]
	if size > 0 {
		recs = unsafe.Slice((*twRec)(unsafe.Pointer(&mem[4*8*words])), size)
	}
	return
}

// newPool returns a pool of size ports lo, lo+stride, ..., all free, its
// per-port state in mem (nil: the heap).
func newPool(lo uint16, size, stride int, seed uint64, mem []byte) *Pool {
	p := &Pool{lo: lo, stride: stride, size: size, rng: seed}
	if size == 0 {
		return p
	}
	if mem == nil {
		mem = make([]byte, MemSize(size))
	}
	p.busy, p.tw, p.hasTS, p.unknown, p.recs = carve(mem, size)
	if r := p.size % 64; r != 0 {
		p.busy[len(p.busy)-1] |= ^uint64(0) << r // bits past the last port are never free
	}
	p.ring = make([]twEntry, p.size)
	return p
}

// PortState is the state of one port in a pool's memory (ScanMem).
type PortState uint8

// Port states.
const (
	PortFree     PortState = iota
	PortLive               // held by a flow
	PortTimeWait           // in the ledger, with its Record
)

// ScanMem calls fn for every port of a pool's memory mem (as laid out by
// NewPoolIn for size ports) that is not free, in position order: i is the
// position (port = first + i·stride of the pool that wrote it), rec the
// ledger record of a PortTimeWait. A torn write (the process died inside
// an Alloc or Release) can only show a port as live: the safe reading.
func ScanMem(mem []byte, size int, fn func(i int, st PortState, rec Record)) {
	if size <= 0 || len(mem) < MemSize(size) {
		return
	}
	busy, tw, hasTS, unknown, recs := carve(mem, size)
	for i := 0; i < size; i++ {
		switch {
		case twBit(tw, i):
			r := recs[i]
			fn(i, PortTimeWait, Record{Until: r.until, NextSeq: r.nextSeq, LastTS: r.lastTS, HasTS: twBit(hasTS, i), Unknown: twBit(unknown, i)})
		case twBit(busy, i):
			fn(i, PortLive, Record{})
		}
	}
}

// newPoolRange returns a pool of every port in [lo, hi] (empty if
// hi < lo).
func newPoolRange(lo, hi uint16, seed uint64) *Pool {
	if hi < lo {
		return newPool(lo, 0, 1, seed, nil)
	}
	return newPool(lo, int(hi)-int(lo)+1, 1, seed, nil)
}

// port returns the port at position i.
func (p *Pool) port(i int) uint16 { return p.lo + uint16(i*p.stride) }

// next returns the next splitmix64 value.
func (p *Pool) next() uint64 {
	p.rng += 0x9e3779b97f4a7c15
	z := p.rng
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// twBit, twSet and twClear read and write bit i of a bitmap.
func twBit(m []uint64, i int) bool { return m[i>>6]&(1<<(i&63)) != 0 }
func twSet(m []uint64, i int)      { m[i>>6] |= 1 << (i & 63) }
func twClear(m []uint64, i int)    { m[i>>6] &^= 1 << (i & 63) }

// expire frees the TIME_WAIT tuples at the ring head whose Until <= now.
func (p *Pool) expire(now int64) {
	for p.n > 0 {
		e := p.ring[p.head]
		i := int(e.idx)
		ok := p.valid(e)
		if ok && e.until > now {
			return
		}
		p.pop()
		if ok {
			twClear(p.tw, i)
			twClear(p.busy, i)
			p.tWait--
		}
	}
}

// valid reports whether ring entry e is its port's current TIME_WAIT (a
// port forgotten, or reused and back in TIME_WAIT with another Until,
// leaves a stale entry behind).
func (p *Pool) valid(e twEntry) bool {
	i := int(e.idx)
	return twBit(p.tw, i) && p.recs[i].until == e.until
}

// compact drops the stale entries of a full ring, keeping the order (it
// allocates a new ring: it only happens after Forget).
func (p *Pool) compact() {
	nr := make([]twEntry, len(p.ring))
	k := 0
	for j := 0; j < p.n; j++ {
		t := p.head + j
		if t >= len(p.ring) {
			t -= len(p.ring)
		}
		if e := p.ring[t]; p.valid(e) {
			nr[k] = e
			k++
		}
	}
	p.ring, p.head, p.n = nr, 0, k
}

// pop removes the ring head.
func (p *Pool) pop() {
	p.head++
	if p.head == len(p.ring) {
		p.head = 0
	}
	p.n--
}

// allocFree takes a free port; the caller has checked that one exists.
func (p *Pool) allocFree() uint16 {
	var start uint64
	for range randomProbes {
		start, _ = bits.Mul64(p.next(), uint64(p.size))
		if !twBit(p.busy, int(start)) {
			twSet(p.busy, int(start))
			p.inUse++
			return p.port(int(start))
		}
	}
	w := int(start / 64)
	free := ^p.busy[w] &^ (1<<(start%64) - 1)
	for free == 0 {
		w++
		if w == len(p.busy) {
			w = 0
		}
		free = ^p.busy[w]
	}
	i := w*64 + bits.TrailingZeros64(free)
	twSet(p.busy, i)
	p.inUse++
	return p.port(i)
}

// Alloc returns a free port, spreading choices over the free ports
// (random probes, then a rotating cursor over the bitmap). When none is
// free it returns the tuple whose TIME_WAIT ends soonest (the ring head,
// reused true) together with its record, so the caller can make the new
// SYN acceptable (ISN after rec.NextSeq, TSval newer than rec.LastTS) or
// apply its policy; the port is then live and its record gone. ok is
// false when every port is held by a live flow. It first moves tuples
// whose TIME_WAIT ended (Until <= now) back to free.
func (p *Pool) Alloc(now int64) (port uint16, reused bool, rec Record, ok bool) {
	p.expire(now)
	if p.inUse+p.tWait < p.size {
		return p.allocFree(), false, Record{}, true
	}
	for p.n > 0 {
		e := p.ring[p.head]
		i := int(e.idx)
		p.pop()
		if !p.valid(e) {
			continue // stale entry
		}
		rec = p.record(i)
		twClear(p.tw, i)
		p.tWait--
		p.inUse++ // busy stays set: the port goes from TIME_WAIT to live
		return p.port(i), true, rec, true
	}
	return 0, false, Record{}, false
}

// AllocFresh is Alloc limited to free ports, for callers that must not
// reuse a tuple the backend may hold in TIME_WAIT (Strategy A). ok is
// false when no port is free.
func (p *Pool) AllocFresh(now int64) (port uint16, ok bool) {
	p.expire(now)
	if p.inUse+p.tWait >= p.size {
		return 0, false
	}
	return p.allocFree(), true
}

// index returns the position of port, or -1 if it is out of range.
func (p *Pool) index(port uint16) int {
	d := int(port) - int(p.lo)
	if d < 0 || d%p.stride != 0 || d/p.stride >= p.size {
		return -1
	}
	return d / p.stride
}

// record returns the ledger record of position i.
func (p *Pool) record(i int) Record {
	r := &p.recs[i]
	return Record{Until: r.until, NextSeq: r.nextSeq, LastTS: r.lastTS, HasTS: twBit(p.hasTS, i), Unknown: twBit(p.unknown, i)}
}

// Release returns a port from a finished flow. If rec.Until > now the
// tuple enters TIME_WAIT with rec (the backend closed first); otherwise it
// is free at once. NextSeq and LastTS are stored as they are (no
// arithmetic, so wrapped values are kept). Releasing a port that is not
// live (free, in TIME_WAIT, or out of range) is a no-op.
func (p *Pool) Release(port uint16, now int64, rec Record) {
	i := p.index(port)
	if i < 0 || !twBit(p.busy, i) || twBit(p.tw, i) {
		return
	}
	p.inUse--
	if rec.Until <= now {
		twClear(p.busy, i)
		return
	}
	// The record first, the TIME_WAIT bit last: memory read back after a
	// crash between the two shows the port live, never a half record.
	p.recs[i] = twRec{until: rec.Until, nextSeq: rec.NextSeq, lastTS: rec.LastTS}
	if rec.HasTS {
		twSet(p.hasTS, i)
	} else {
		twClear(p.hasTS, i)
	}
	if rec.Unknown {
		twSet(p.unknown, i)
	} else {
		twClear(p.unknown, i)
	}
	twSet(p.tw, i)
	p.tWait++
	p.entered++
	// The ring holds at most one valid entry per port; stale ones (Forget)
	// are dropped when it fills up.
	if p.n == len(p.ring) {
		p.compact()
	}
	t := p.head + p.n
	if t >= len(p.ring) {
		t -= len(p.ring)
	}
	p.ring[t] = twEntry{until: rec.Until, idx: uint32(i)}
	p.n++
}

// Record returns the ledger record of a port in TIME_WAIT. It does not
// expire anything: a record whose Until has passed is still returned until
// the next Alloc, AllocFresh or Counts moves the port back to free.
func (p *Pool) Record(port uint16) (Record, bool) {
	i := p.index(port)
	if i < 0 || !twBit(p.tw, i) {
		return Record{}, false
	}
	return p.record(i), true
}

// Counts returns the number of ports held by live flows, in TIME_WAIT, and
// free, after expiring what ended by now.
func (p *Pool) Counts(now int64) (inUse, timeWait, free int) {
	p.expire(now)
	return p.inUse, p.tWait, p.size - p.inUse - p.tWait
}

// Size returns the number of ports in the range.
func (p *Pool) Size() int { return p.size }

// Entered returns how many tuples have entered TIME_WAIT since the pool
// was made (for a rate).
func (p *Pool) Entered() uint64 { return p.entered }

// Restore puts a free port into TIME_WAIT with rec, for a ledger loaded
// from tslb's state file after a restart. It returns false, changing
// nothing, if the port is out of range or not free, or rec.Until <= now.
// Give records in increasing Until order to keep the ring ordered.
// Restored tuples do not count in Entered (they are not new).
func (p *Pool) Restore(port uint16, now int64, rec Record) bool {
	i := p.index(port)
	if i < 0 || twBit(p.busy, i) || rec.Until <= now {
		return false
	}
	twSet(p.busy, i)
	p.inUse++
	p.Release(port, now, rec)
	p.entered--
	return true
}

// TimeWaitRecords calls fn for every tuple in TIME_WAIT, oldest first,
// after expiring what ended by now (to save the ledger).
func (p *Pool) TimeWaitRecords(now int64, fn func(port uint16, rec Record)) {
	p.expire(now)
	for k := 0; k < p.n; k++ {
		t := p.head + k
		if t >= len(p.ring) {
			t -= len(p.ring)
		}
		e := p.ring[t]
		i := int(e.idx)
		if twBit(p.tw, i) && p.recs[i].until == e.until {
			fn(p.port(i), p.record(i))
		}
	}
}

// Unalloc puts back a tuple that Alloc returned as reused but the
// caller did not use (its reuse could not be proven safe): it re-enters
// TIME_WAIT with the same record, at the end of the ring, so the next Alloc
// offers another tuple first. It does not count in Entered.
func (p *Pool) Unalloc(port uint16, now int64, rec Record) {
	before := p.entered
	p.Release(port, now, rec)
	p.entered = before
}

// Usage is a pool's occupancy and TIME_WAIT entry rate.
type Usage struct {
	InUse, TimeWait, Free int
	// Rate is the rate at which tuples enter TIME_WAIT, per second,
	// smoothed over about 10 s (Tick).
	Rate float64
}

// Usage returns the pool's counts after expiring what ended by now, and
// its rate.
func (p *Pool) Usage(now int64) Usage {
	u, t, f := p.Counts(now)
	return Usage{u, t, f, p.rate}
}

// Tick updates the TIME_WAIT entry rate; call it about every second with
// the seconds since the last call (an EWMA with weight 0.1).
func (p *Pool) Tick(dt float64) {
	if dt <= 0 {
		return
	}
	inst := float64(p.entered-p.lastEntered) / dt
	p.lastEntered = p.entered
	const alpha = 0.1
	p.rate += alpha * (inst - p.rate)
}

// SecondsToExhaustion is free tuples divided by the rate at which tuples
// enter TIME_WAIT: how long until new flows to this backend need early
// reuse or the exhaustion policy, if the rate holds. +Inf when nothing
// enters.
func (u Usage) SecondsToExhaustion() float64 {
	if u.Rate < 1e-9 {
		return math.Inf(1)
	}
	return float64(u.Free) / u.Rate
}

// Forget frees a port in TIME_WAIT at once: the caller has proven that the
// backend holds nothing for the tuple (it answered a probe with an RST, or
// tslb reset it). It reports whether the port was in TIME_WAIT.
func (p *Pool) Forget(port uint16) bool {
	i := p.index(port)
	if i < 0 || !twBit(p.tw, i) {
		return false
	}
	twClear(p.tw, i)
	twClear(p.busy, i)
	p.tWait--
	return true // its ring entry is stale now and skipped when popped
}

// First, Stride and Size describe the pool's ports: First, First+Stride,
// ..., Size of them.
func (p *Pool) First() uint16 { return p.lo }

// Stride is the distance between the pool's ports (the worker count).
func (p *Pool) Stride() int { return p.stride }
