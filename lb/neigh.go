package lb

import (
	"sync"
	"sync/atomic"

	"tslb/nat"
)

// Neighbour table timings. An entry is used while fresh; after
// neighStale it is still used but refreshed with an ARP request (like the
// kernel's STALE -> PROBE); after neighExpire without an answer it is
// removed.
const (
	neighStale      = 60 * 1e9  // ns
	neighExpire     = 300 * 1e9 // ns
	neighProbeEvery = 1e9 / 5   // at most one ARP request per address per 200 ms
	pendingMax      = 8         // frames queued per unresolved address
	pendingAddrsMax = 1024      // unresolved addresses at once
	pendingTTL      = 3 * 1e9   // queued frames older than this are dropped
)

type neighEntry struct {
	mac     nat.MAC
	updated atomic.Int64 // last confirmation, unix ns
	probed  atomic.Int64 // last ARP request sent for it, unix ns
}

type pendingQueue struct {
	since  int64 // first frame queued
	probed int64 // last ARP request
	frames [][]byte
}

// neighTable maps on-link IPv4 addresses of one link to MAC addresses.
// Lookups are lock-free (copy-on-write map behind an atomic pointer);
// learning takes a mutex and copies the map only when an address or MAC is
// new. Frames for addresses still being resolved wait in a small queue.
type neighTable struct {
	m       atomic.Pointer[addrMap[*neighEntry]]
	mu      sync.Mutex
	pending map[nat.Addr16]*pendingQueue
	// changes counts entries whose MAC changed (a host replaced, a NIC
	// swapped, a VM moved: learnt from its gratuitous ARP or a reply).
	changes atomic.Uint64
}

func newNeighTable() *neighTable {
	t := &neighTable{pending: make(map[nat.Addr16]*pendingQueue)}
	t.m.Store(newAddrMap[*neighEntry](0))
	return t
}

// lookup returns the MAC of ip. probe is true when an ARP request should be
// sent now (unknown or stale entry, rate-limited per address).
func (t *neighTable) lookup(ip nat.Addr16, now int64) (mac nat.MAC, ok, probe bool) {
	e, _ := t.m.Load().get(ip)
	if e == nil {
		return mac, false, false
	}
	age := now - e.updated.Load()
	if age > neighExpire {
		return mac, false, false
	}
	if age > neighStale {
		last := e.probed.Load()
		if now-last > neighProbeEvery && e.probed.CompareAndSwap(last, now) {
			probe = true
		}
	}
	return e.mac, true, probe
}

// known reports whether ip has an entry (expired or not).
func (t *neighTable) known(ip nat.Addr16) bool {
	e, _ := t.m.Load().get(ip)
	return e != nil
}

// learn records ip at mac and returns the frames that were waiting for it.
func (t *neighTable) learn(ip nat.Addr16, mac nat.MAC, now int64) [][]byte {
	cur := t.m.Load()
	if e, _ := cur.get(ip); e != nil && e.mac == mac {
		e.updated.Store(now)
		t.mu.Lock()
		q := t.takePending(ip)
		t.mu.Unlock()
		return q
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	cur = t.m.Load()
	if old, _ := cur.get(ip); old != nil && old.mac != mac {
		t.changes.Add(1)
	}
	next := newAddrMap[*neighEntry](cur.len() + 1)
	cur.each(func(k nat.Addr16, v *neighEntry) { next.set(k, v) })
	e := &neighEntry{mac: mac}
	e.updated.Store(now)
	next.set(ip, e)
	t.m.Store(next)
	return t.takePending(ip)
}

func (t *neighTable) takePending(ip nat.Addr16) [][]byte {
	q := t.pending[ip]
	if q == nil {
		return nil
	}
	delete(t.pending, ip)
	return q.frames
}

// enqueue keeps a copy of frame until ip is resolved. It reports whether
// the frame was queued and whether an ARP request should be sent.
func (t *neighTable) enqueue(ip nat.Addr16, frame []byte, now int64) (queued, probe bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	q := t.pending[ip]
	if q == nil {
		if len(t.pending) >= pendingAddrsMax {
			return false, false
		}
		q = &pendingQueue{since: now, probed: now}
		t.pending[ip] = q
		probe = true
	} else if now-q.probed > neighProbeEvery*2 {
		// Still unresolved: ask again, at most every 400 ms.
		q.probed = now
		probe = true
	}
	if len(q.frames) >= pendingMax {
		return false, probe
	}
	q.frames = append(q.frames, append([]byte(nil), frame...))
	return true, probe
}

// expire drops entries and queues that are too old and returns how many
// queued frames were dropped.
func (t *neighTable) expire(now int64) (dropped int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for ip, q := range t.pending {
		if now-q.since > pendingTTL {
			dropped += len(q.frames)
			delete(t.pending, ip)
		}
	}
	cur := t.m.Load()
	stale := 0
	cur.each(func(_ nat.Addr16, e *neighEntry) {
		if now-e.updated.Load() > neighExpire {
			stale++
		}
	})
	if stale == 0 {
		return dropped
	}
	next := newAddrMap[*neighEntry](cur.len() - stale)
	cur.each(func(k nat.Addr16, e *neighEntry) {
		if now-e.updated.Load() <= neighExpire {
			next.set(k, e)
		}
	})
	t.m.Store(next)
	return dropped
}

func (t *neighTable) size() int { return t.m.Load().len() }
