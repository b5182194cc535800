package lb

import (
	"net/netip"
	"sync"

	"tslb/nat"
)

// snatPool is the set of source ports of one (SNAT address, backend
// address:port) pair: every backend-side 4-tuple tslb can use toward that
// backend. Pools are keyed by backend address, not by service, so two
// services sharing a backend never hand out the same tuple.
type snatPool struct {
	snat    nat.Addr4
	backend netip.AddrPort

	mu sync.Mutex
	pp *nat.PortPool
}

func (p *snatPool) alloc() (uint16, bool) {
	p.mu.Lock()
	port, ok := p.pp.Alloc()
	p.mu.Unlock()
	return port, ok
}

func (p *snatPool) free(port uint16) {
	p.mu.Lock()
	p.pp.Free(port)
	p.mu.Unlock()
}

func (p *snatPool) usage() (inUse, size int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.pp.InUse(), p.pp.Size()
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

func newSNATTable(addrs []nat.Addr4, lo, hi uint16, backends []netip.AddrPort, seed uint64) *snatTable {
	t := &snatTable{addrs: addrs, byKey: make(map[poolKey]*snatPool)}
	for _, a := range addrs {
		for _, be := range backends {
			k := poolKey{a, be}
			if t.byKey[k] != nil {
				continue
			}
			seed = seed*6364136223846793005 + 1442695040888963407
			p := &snatPool{snat: a, backend: be, pp: nat.NewPortPool(lo, hi, seed)}
			t.byKey[k] = p
			t.list = append(t.list, p)
		}
	}
	return t
}

// alloc takes a free port toward backend, trying the SNAT addresses in an
// order that starts at hash so flows spread over addresses.
func (t *snatTable) alloc(backend netip.AddrPort, hash uint64) (*snatPool, uint16, bool) {
	n := len(t.addrs)
	for i := 0; i < n; i++ {
		a := t.addrs[(int(hash%uint64(n))+i)%n]
		p := t.byKey[poolKey{a, backend}]
		if p == nil {
			continue
		}
		if port, ok := p.alloc(); ok {
			return p, port, true
		}
	}
	return nil, 0, false
}

func (t *snatTable) pools() []*snatPool { return t.list }
