package lb

import (
	"hash/fnv"
	"net/netip"
	"sync"

	"tslb/lb/snat"
	"tslb/nat"
)

// poolShard is one worker's share of the SNAT tuples: for every (SNAT
// address, backend address:port) pair, the pool of the ports p with
// p % workers == worker, and that pool's TIME_WAIT ledger. Pools are keyed
// by backend address, not by service, so two services sharing a backend
// never hand out the same tuple.
//
// mu serialises the owning worker (a pick per new flow, a release per
// finished one) with the readers that are not on the datapath: a metrics
// scrape, the rate tick, a reload adding pools, the state file. It is
// never contended by another worker.
type poolShard struct {
	_      [64]byte // the shards of the workers are allocated side by side: mu must not share a line
	mu     sync.Mutex
	byKey  map[poolKey]*snat.Pool
	list   []*snat.Pool
	ledger *ledgerDir // nil: pools in the heap (no state_file)
	_      [64]byte
}

type poolKey struct {
	snat    nat.Addr16
	backend netip.AddrPort
}

func newPoolShard() *poolShard { return &poolShard{byKey: make(map[poolKey]*snat.Pool)} }

// ensure adds the pools of this shard (worker of workers) for every
// (address, backend) pair that has none yet. A reload keeps every pool,
// even of backends no longer listed: their flows and TIME_WAIT records
// live on, and the backend may come back.
func (ps *poolShard) ensure(addrs []nat.Addr16, lo, hi uint16, backends []netip.AddrPort, worker, workers int, seed uint64) error {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	for _, a := range addrs {
		for _, be := range backends {
			k := poolKey{a, be}
			if ps.byKey[k] != nil || a.Is4() != be.Addr().Is4() {
				continue // a pair of one family only
			}
			var p *snat.Pool
			if ps.ledger != nil {
				first, size := snat.PortCount(lo, hi, worker, workers)
				mem, err := ps.ledger.poolMem(ledgerHeader{size: size, first: first, stride: workers, snat: a, backend: be})
				if err != nil {
					return err
				}
				p = snat.NewPoolIn(mem, lo, hi, worker, workers, poolSeed(seed, a, be, worker))
			} else {
				p = snat.NewPool(lo, hi, worker, workers, poolSeed(seed, a, be, worker))
			}
			p.SNAT, p.Backend = a, be
			// tslb's timestamp clock toward this backend: wall-clock
			// milliseconds plus a per-pair base, so it keeps rising across
			// restarts (backends' ts_recent outlive a restart), different
			// backends see unrelated values as Linux gives each address
			// pair, and every worker's pool of the pair runs the same clock.
			p.Clock = snat.NewClock(0, pairBase(a, be))
			ps.byKey[k] = p
			ps.list = append(ps.list, p)
		}
	}
	return nil
}

// pairBase is the timestamp clock base of an (SNAT address, backend) pair.
func pairBase(a nat.Addr16, be netip.AddrPort) uint32 {
	h := fnv.New32a()
	if a.Is4() {
		v4 := a.Unmap()
		h.Write(v4[:]) // as before the dual stack: clocks stay as they were
	} else {
		h.Write(a[:])
	}
	h.Write(be.Addr().AsSlice())
	return h.Sum32()
}

func poolSeed(seed uint64, a nat.Addr16, be netip.AddrPort, worker int) uint64 {
	return mix64(seed ^ uint64(pairBase(a, be))<<20 ^ uint64(be.Port())<<8 ^ uint64(worker))
}

// poolsFor appends to out the pools toward backend, starting from the
// SNAT address chosen by hash (flows spread over addresses) and going on
// with the next ones. The caller holds mu.
func (ps *poolShard) poolsFor(addrs []nat.Addr16, backend netip.AddrPort, hash uint64, out []*snat.Pool) []*snat.Pool {
	n := len(addrs)
	for i := 0; i < n; i++ {
		a := addrs[(int(hash%uint64(n))+i)%n]
		if p := ps.byKey[poolKey{a, backend}]; p != nil {
			out = append(out, p)
		}
	}
	return out
}

// release returns port to p (into the ledger with rec.Until > now).
func (ps *poolShard) release(p *snat.Pool, port uint16, now int64, rec snat.Record) {
	ps.mu.Lock()
	p.Release(port, now, rec)
	ps.mu.Unlock()
}

// tick updates every pool's TIME_WAIT entry rate.
func (ps *poolShard) tick(dt float64) {
	ps.mu.Lock()
	for _, p := range ps.list {
		p.Tick(dt)
	}
	ps.mu.Unlock()
}

// pool returns the pool of pair k, or nil.
func (ps *poolShard) pool(k poolKey) *snat.Pool {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	return ps.byKey[k]
}
