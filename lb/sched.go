package lb

import (
	"fmt"
	"sync"
)

// Scheduler picks the backend of a new flow. Implementations are safe for
// concurrent use; Pick is called once per new flow, never per packet. hash
// is a seeded hash of the client's tuple, for schedulers that hash
// (Maglev comes with the operations issue).
type Scheduler interface {
	Pick(hash uint64) *backend
}

// newScheduler builds the named scheduler over backends. Backends with
// weight 0 are drained: they get no new flows.
func newScheduler(name string, backends []*backend) (Scheduler, error) {
	switch name {
	case "", "wrr":
		return newWRR(backends, false), nil
	case "rr":
		return newWRR(backends, true), nil
	default:
		return nil, fmt.Errorf("lb: unknown scheduler %q", name)
	}
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
