package lb

import (
	"fmt"
	"sync"
	"sync/atomic"
)

// Scheduler picks the backend of a new flow. Implementations are safe for
// concurrent use; Pick is called once per new flow, never per packet. hash
// is a seeded hash of the client's tuple (source address and port, VIP,
// service port; the protocol is always TCP), for schedulers that hash.
// Pick returns nil when every backend is drained.
type Scheduler interface {
	Pick(hash uint64) *backend
}

// newScheduler builds the named scheduler over backends (config's
// services[].scheduler). Backends with weight 0 are drained: they get no
// new flows.
//
//   - "wrr" (and ""): smooth weighted round-robin.
//   - "rr": round-robin, weights other than 0 count as 1.
//   - "least_conn": fewest live flows per unit of weight.
//   - "maglev": Maglev consistent hashing of the client's tuple, with a
//     MaglevTableSize-slot table built here.
func newScheduler(name string, backends []*backend) (Scheduler, error) {
	switch name {
	case "", "wrr":
		return newWRR(backends, false), nil
	case "rr":
		return newWRR(backends, true), nil
	case "least_conn":
		return newLeastConn(backends), nil
	case "maglev":
		return newMaglev(backends, MaglevTableSize)
	default:
		return nil, fmt.Errorf("lb: unknown scheduler %q", name)
	}
}

// newSchedulers returns the named scheduler for each of workers workers:
// round-robin state is per worker (each worker runs its own smooth WRR
// over the same weights, so the shares hold per worker and in total,
// without a lock shared by workers); least_conn and maglev keep no
// per-pick state worth splitting and are shared.
func newSchedulers(name string, backends []*backend, workers int) ([]Scheduler, error) {
	out := make([]Scheduler, workers)
	for i := range out {
		if i > 0 && (name == "least_conn" || name == "maglev") {
			out[i] = out[0]
			continue
		}
		s, err := newScheduler(name, backends)
		if err != nil {
			return nil, err
		}
		out[i] = s
	}
	return out, nil
}

// leastConn picks the backend with the fewest live flows (backend.flows)
// relative to its weight: it minimises flows/weight, compared as
// flows_a·weight_b < flows_b·weight_a so no division is needed. Ties go
// round-robin: a cursor advances on every pick and chooses among the tied
// backends, so equally loaded backends share new flows evenly, including a
// burst of SYNs that arrives before the counts move (a flow is counted
// once it is in the table). Pick takes no lock and does not allocate: the
// counts are read atomically, so under concurrency a pick may see a count
// a few flows old.
type leastConn struct {
	backends []*backend // weight > 0
	cursor   atomic.Uint64
}

func newLeastConn(backends []*backend) *leastConn {
	l := &leastConn{}
	for _, b := range backends {
		if b.weight > 0 {
			l.backends = append(l.backends, b)
		}
	}
	return l
}

// Pick implements Scheduler. Backends that are down (health checks) are
// not candidates: a down backend gets no new flows, so it would soon be
// the least loaded and win every pick.
func (l *leastConn) Pick(uint64) *backend {
	// Pass 1: the least load among the backends that are up, and how many
	// share it.
	var best *backend
	var minFlows, minWeight int64
	ties := uint64(0)
	for _, b := range l.backends {
		if !b.up.Load() {
			continue
		}
		f, w := b.flows.Load(), int64(b.weight)
		if best == nil {
			best, minFlows, minWeight, ties = b, f, w, 1
			continue
		}
		switch x, y := f*minWeight, minFlows*w; {
		case x < y:
			best, minFlows, minWeight, ties = b, f, w, 1
		case x == y:
			ties++
		}
	}
	if ties <= 1 {
		return best
	}
	// Pass 2: the cursor's turn among the tied. If the counts moved in
	// between and the turn is not found, the first least loaded stands.
	k := (l.cursor.Add(1) - 1) % ties
	for _, b := range l.backends {
		if b.up.Load() && b.flows.Load()*minWeight == minFlows*int64(b.weight) {
			if k == 0 {
				return b
			}
			k--
		}
	}
	return best
}

// wrr is the smooth weighted round-robin of nginx
// (ngx_http_upstream_get_peer): each pick adds every weight to its
// current value, picks the largest and subtracts the total from it. Over
// any window of sum(weights) picks each backend gets exactly its weight,
// spread evenly rather than in bursts. With equal weights it is plain
// round-robin.
type wrr struct {
	mu       sync.Mutex
	backends []*backend
	weights  []int
	current  []int
	total    int
}

func newWRR(backends []*backend, equal bool) *wrr {
	w := &wrr{}
	for _, b := range backends {
		wt := b.weight
		if equal && wt > 0 {
			wt = 1
		}
		if wt <= 0 {
			continue
		}
		w.backends = append(w.backends, b)
		w.weights = append(w.weights, wt)
		w.total += wt
	}
	w.current = make([]int, len(w.backends))
	return w
}

// Pick implements Scheduler.
func (w *wrr) Pick(uint64) *backend {
	if len(w.backends) == 0 {
		return nil
	}
	w.mu.Lock()
	best := 0
	for i := range w.current {
		w.current[i] += w.weights[i]
		if w.current[i] > w.current[best] {
			best = i
		}
	}
	w.current[best] -= w.total
	w.mu.Unlock()
	return w.backends[best]
}
