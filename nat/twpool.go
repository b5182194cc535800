package nat

import "math/bits"

// TWRecord is what tslb remembers about a backend tuple in TIME_WAIT: the
// facts the backend's tcp_timewait_state_process() will test a new SYN on
// that tuple against (see the TIME_WAIT notes, §1).
type TWRecord struct {
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
}

// AllocKind says how TWPool.Alloc found a port.
type AllocKind uint8

// Allocation kinds.
const (
	AllocFresh    AllocKind = iota // AllocFresh: the tuple was free; the backend holds nothing for it.
	AllocTimeWait                  // AllocTimeWait: the tuple may still be in TIME_WAIT on the backend.
)

// String returns "fresh" or "time_wait" (metric labels).
func (k AllocKind) String() string {
	if k == AllocTimeWait {
		return "time_wait"
	}
	return "fresh"
}

// TWPool is the SNAT port pool of one (SNAT address, backend address:port)
// pair together with the ledger of that pair's tuples in TIME_WAIT. Every
// port is in one of three states: free, live (held by a flow) or in
// TIME_WAIT (its last flow ended with the backend closing first, and the
// backend may still hold the tuple).
//
// Memory is fixed at construction and bounded by the port range: three
// bitmaps, one 16-byte record per port and a FIFO ring of 16-byte (until,
// port) entries, about 2 MB for 64k ports. Nothing allocates afterwards.
// The ring repeats Until so that expiry reads it sequentially instead of
// missing the cache on a random record per operation.
//
// Free ports are found like PortPool does: a few random probes, then a
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
// Not safe for concurrent use: lb holds a mutex per pool.
type TWPool struct {
	lo      uint16
	size    int
	busy    []uint64  // bit set = live or in TIME_WAIT (or past the range)
	tw      []uint64  // bit set = in TIME_WAIT
	recs    []twRec   // per port, valid while its tw bit is set
	hasTS   []uint64  // per port bit: TWRecord.HasTS
	ring    []twEntry // TIME_WAIT tuples in insertion order (FIFO)
	head    int       // ring index of the oldest entry
	n       int       // entries in the ring
	inUse   int
	tWait   int
	entered uint64
	rng     uint64
}

// twRec is the ledger record of one port (TWRecord without HasTS).
type twRec struct {
	until           int64
	nextSeq, lastTS uint32
}

// twEntry is one TIME_WAIT ring entry.
type twEntry struct {
	until int64
	idx   uint32
}

// NewTWPool returns a pool of the ports in [lo, hi] (empty if hi < lo),
// all free, whose search order is derived from seed.
func NewTWPool(lo, hi uint16, seed uint64) *TWPool {
	p := &TWPool{lo: lo, rng: seed}
	if hi < lo {
		return p
	}
	p.size = int(hi) - int(lo) + 1
	words := (p.size + 63) / 64
	p.busy = make([]uint64, words)
	p.tw = make([]uint64, words)
	p.hasTS = make([]uint64, words)
	if r := p.size % 64; r != 0 {
		p.busy[words-1] = ^uint64(0) << r // bits past hi are never free
	}
	p.recs = make([]twRec, p.size)
	p.ring = make([]twEntry, p.size)
	return p
}

// next returns the next splitmix64 value.
func (p *TWPool) next() uint64 {
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
func (p *TWPool) expire(now int64) {
	for p.n > 0 {
		e := p.ring[p.head]
		i := int(e.idx)
		if twBit(p.tw, i) && e.until > now {
			return
		}
		p.pop()
		if twBit(p.tw, i) {
			twClear(p.tw, i)
			twClear(p.busy, i)
			p.tWait--
		}
	}
}

// pop removes the ring head.
func (p *TWPool) pop() {
	p.head++
	if p.head == len(p.ring) {
		p.head = 0
	}
	p.n--
}

// allocFree takes a free port; the caller has checked that one exists.
func (p *TWPool) allocFree() uint16 {
	var start uint64
	for range randomProbes {
		start, _ = bits.Mul64(p.next(), uint64(p.size))
		if !twBit(p.busy, int(start)) {
			twSet(p.busy, int(start))
			p.inUse++
			return p.lo + uint16(start)
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
	return p.lo + uint16(i)
}

// Alloc returns a free port (AllocFresh), spreading choices over the free
// ports (random probes, then a rotating cursor over the bitmap, like
// PortPool). When none is free it returns the tuple whose TIME_WAIT ends
// soonest (the ring head; AllocTimeWait) together with its record, so the
// caller can make the new SYN acceptable (ISN after rec.NextSeq, TSval
// newer than rec.LastTS) or apply its policy; the port is then live and
// its record gone. ok is false when every port is held by a live flow.
// It first moves tuples whose TIME_WAIT ended (Until <= now) back to free.
func (p *TWPool) Alloc(now int64) (port uint16, kind AllocKind, rec TWRecord, ok bool) {
	p.expire(now)
	if p.inUse+p.tWait < p.size {
		return p.allocFree(), AllocFresh, TWRecord{}, true
	}
	for p.n > 0 {
		i := int(p.ring[p.head].idx)
		p.pop()
		if !twBit(p.tw, i) {
			continue // stale entry
		}
		rec = p.record(i)
		twClear(p.tw, i)
		p.tWait--
		p.inUse++ // busy stays set: the port goes from TIME_WAIT to live
		return p.lo + uint16(i), AllocTimeWait, rec, true
	}
	return 0, AllocFresh, TWRecord{}, false
}

// AllocFresh is Alloc limited to free ports, for callers that must not
// reuse a tuple the backend may hold in TIME_WAIT (Strategy A). ok is
// false when no port is free.
func (p *TWPool) AllocFresh(now int64) (port uint16, ok bool) {
	p.expire(now)
	if p.inUse+p.tWait >= p.size {
		return 0, false
	}
	return p.allocFree(), true
}

// index returns the position of port, or -1 if it is out of range.
func (p *TWPool) index(port uint16) int {
	i := int(port) - int(p.lo)
	if i < 0 || i >= p.size {
		return -1
	}
	return i
}

// record returns the ledger record of position i.
func (p *TWPool) record(i int) TWRecord {
	r := &p.recs[i]
	return TWRecord{Until: r.until, NextSeq: r.nextSeq, LastTS: r.lastTS, HasTS: twBit(p.hasTS, i)}
}

// Release returns a port from a finished flow. If rec.Until > now the
// tuple enters TIME_WAIT with rec (the backend closed first); otherwise it
// is free at once. NextSeq and LastTS are stored as they are (no
// arithmetic, so wrapped values are kept). Releasing a port that is not
// live (free, in TIME_WAIT, or out of range) is a no-op.
func (p *TWPool) Release(port uint16, now int64, rec TWRecord) {
	i := p.index(port)
	if i < 0 || !twBit(p.busy, i) || twBit(p.tw, i) {
		return
	}
	p.inUse--
	if rec.Until <= now {
		twClear(p.busy, i)
		return
	}
	p.recs[i] = twRec{until: rec.Until, nextSeq: rec.NextSeq, lastTS: rec.LastTS}
	if rec.HasTS {
		twSet(p.hasTS, i)
	} else {
		twClear(p.hasTS, i)
	}
	twSet(p.tw, i)
	p.tWait++
	p.entered++
	// The ring has room: it holds at most one valid entry per port and
	// stale ones are only created by pops, which remove them.
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
func (p *TWPool) Record(port uint16) (TWRecord, bool) {
	i := p.index(port)
	if i < 0 || !twBit(p.tw, i) {
		return TWRecord{}, false
	}
	return p.record(i), true
}

// Counts returns the number of ports held by live flows, in TIME_WAIT, and
// free, after expiring what ended by now.
func (p *TWPool) Counts(now int64) (inUse, timeWait, free int) {
	p.expire(now)
	return p.inUse, p.tWait, p.size - p.inUse - p.tWait
}

// Size returns the number of ports in the range.
func (p *TWPool) Size() int { return p.size }

// Entered returns how many tuples have entered TIME_WAIT since the pool
// was made (for a rate).
func (p *TWPool) Entered() uint64 { return p.entered }

// Restore puts a free port into TIME_WAIT with rec, for a ledger loaded
// from tslb's state file after a restart. It returns false, changing
// nothing, if the port is out of range or not free, or rec.Until <= now.
// Give records in increasing Until order to keep the ring ordered.
// Restored tuples do not count in Entered (they are not new).
func (p *TWPool) Restore(port uint16, now int64, rec TWRecord) bool {
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
func (p *TWPool) TimeWaitRecords(now int64, fn func(port uint16, rec TWRecord)) {
	p.expire(now)
	for k := 0; k < p.n; k++ {
		t := p.head + k
		if t >= len(p.ring) {
			t -= len(p.ring)
		}
		e := p.ring[t]
		i := int(e.idx)
		if twBit(p.tw, i) && p.recs[i].until == e.until {
			fn(p.lo+uint16(i), p.record(i))
		}
	}
}

// Unalloc puts back a tuple that Alloc returned as AllocTimeWait but the
// caller did not use (its reuse could not be proven safe): it re-enters
// TIME_WAIT with the same record, at the end of the ring, so the next Alloc
// offers another tuple first. It does not count in Entered.
func (p *TWPool) Unalloc(port uint16, now int64, rec TWRecord) {
	before := p.entered
	p.Release(port, now, rec)
	p.entered = before
}
