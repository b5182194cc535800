package lb

import (
	"hash/fnv"
	"math"
	"net/netip"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"tslb/nat"
)

// Allocation kinds, as metric labels.
const (
	allocFresh         = iota // a tuple the backend holds no state for
	allocEarlyReuseISN        // a tuple in TIME_WAIT, made acceptable by ISN translation
	allocEarlyReuseTS         // a tuple in TIME_WAIT, made acceptable by a newer TSval (rewrite mode)
	allocForced               // a tuple in TIME_WAIT reused with no guarantee (exhaustion: reuse)
	numAllocKinds
)

var allocKindNames = [numAllocKinds]string{"fresh", "early_reuse_isn", "early_reuse_ts", "forced"}

// snatPool is the set of backend-side tuples of one (SNAT address, backend
// address:port) pair, with its TIME_WAIT ledger (nat.TWPool). Pools are
// keyed by backend address, not by service, so two services sharing a
// backend never hand out the same tuple.
type snatPool struct {
	snat    nat.Addr4
	backend netip.AddrPort
	// clock is tslb's timestamp clock toward this backend: wall-clock
	// milliseconds plus a per-pair base, so it keeps rising across tslb
	// restarts (backends' ts_recent outlive a restart) and different
	// backends see unrelated values, as Linux gives each address pair.
	clock nat.TSClock

	mu sync.Mutex
	tw *nat.TWPool
	// rate of tuples entering TIME_WAIT (per second, smoothed), updated by
	// housekeeping under mu.
	lastEntered uint64
	rate        float64

	allocs [numAllocKinds]prometheus.Counter
}

func (p *snatPool) alloc(now int64) (port uint16, kind nat.AllocKind, rec nat.TWRecord, ok bool) {
	p.mu.Lock()
	port, kind, rec, ok = p.tw.Alloc(now)
	p.mu.Unlock()
	return
}

func (p *snatPool) allocFresh(now int64) (uint16, bool) {
	p.mu.Lock()
	port, ok := p.tw.AllocFresh(now)
	p.mu.Unlock()
	return port, ok
}

// release returns a port; with rec.Until > now the tuple enters the
// TIME_WAIT ledger.
func (p *snatPool) release(port uint16, now int64, rec nat.TWRecord) {
	p.mu.Lock()
	p.tw.Release(port, now, rec)
	p.mu.Unlock()
}

// unalloc puts back an unused TIME_WAIT candidate (see nat.TWPool.Unalloc).
func (p *snatPool) unalloc(port uint16, now int64, rec nat.TWRecord) {
	p.mu.Lock()
	p.tw.Unalloc(port, now, rec)
	p.mu.Unlock()
}

type poolUsage struct {
	inUse, timeWait, free int
	rate                  float64 // tuples entering TIME_WAIT per second
}

func (p *snatPool) usage(now int64) poolUsage {
	p.mu.Lock()
	defer p.mu.Unlock()
	u, t, f := p.tw.Counts(now)
	return poolUsage{u, t, f, p.rate}
}

// tick updates the TIME_WAIT entry rate (EWMA over ~10 s, called every
// second).
func (p *snatPool) tick(dt float64) {
	p.mu.Lock()
	e := p.tw.Entered()
	inst := float64(e-p.lastEntered) / dt
	p.lastEntered = e
	const alpha = 0.1
	p.rate += alpha * (inst - p.rate)
	p.mu.Unlock()
}

// secondsToExhaustion is free tuples divided by the rate at which tuples
// enter TIME_WAIT: how long until new flows to this backend must wait,
// reject or reuse early, if the rate holds. +Inf when nothing enters.
func (u poolUsage) secondsToExhaustion() float64 {
	if u.rate < 1e-9 {
		return math.Inf(1)
	}
	return float64(u.free) / u.rate
}

type poolKey struct {
	snat    nat.Addr4
	backend netip.AddrPort
}

// snatTable holds every pool. The maps are built once and only read.
type snatTable struct {
	addrs []nat.Addr4
	byKey map[poolKey]*snatPool
	list  []*snatPool
}

func newSNATTable(addrs []nat.Addr4, lo, hi uint16, backends []netip.AddrPort, seed uint64, m *metrics, prev *snatTable) *snatTable {
	t := &snatTable{addrs: addrs, byKey: make(map[poolKey]*snatPool)}
	if prev != nil {
		// A reload keeps every pool, even of backends no longer listed:
		// their flows and TIME_WAIT records live on, and the backend may
		// come back.
		for _, p := range prev.list {
			t.byKey[poolKey{p.snat, p.backend}] = p
			t.list = append(t.list, p)
		}
	}
	for _, a := range addrs {
		for _, be := range backends {
			k := poolKey{a, be}
			if t.byKey[k] != nil {
				continue
			}
			seed = seed*6364136223846793005 + 1442695040888963407
			h := fnv.New32a()
			h.Write(a[:])
			h.Write(be.Addr().AsSlice())
			p := &snatPool{snat: a, backend: be, tw: nat.NewTWPool(lo, hi, seed),
				clock: nat.NewTSClock(0, h.Sum32())}
			for i := range p.allocs {
				p.allocs[i] = m.allocations.WithLabelValues(a.String(), be.String(), allocKindNames[i])
			}
			t.byKey[k] = p
			t.list = append(t.list, p)
		}
	}
	return t
}

// pool returns the pool toward backend from the SNAT address chosen by
// hash (flows spread over addresses), or from the next address that has
// a fresh tuple. It never allocates: the caller does, under its policy.
func (t *snatTable) poolsFor(backend netip.AddrPort, hash uint64, out []*snatPool) []*snatPool {
	n := len(t.addrs)
	for i := 0; i < n; i++ {
		a := t.addrs[(int(hash%uint64(n))+i)%n]
		if p := t.byKey[poolKey{a, backend}]; p != nil {
			out = append(out, p)
		}
	}
	return out
}

func (t *snatTable) pools() []*snatPool { return t.list }
