package statuspage

import (
	"sync"
	"time"

	"tslb/lb"
)

// Sample is one point of the History: the rates over the interval that
// ends at Time, from the counters of two consecutive statuses.
type Sample struct {
	Time time.Time
	// FlowsActive is the number of flows open at Time (all services).
	FlowsActive float64
	// NewFlows, Drops and Packets are per second over the interval: flows
	// created, frames dropped (every reason plus the kernel's ring drops)
	// and frames received on all links.
	NewFlows float64
	Drops    float64
	Packets  float64
	// Backends is new flows/s per backend, by BackendKey.
	Backends map[string]float64
}

// BackendKey names a backend of a service in Sample.Backends.
func BackendKey(service, address string) string { return service + "|" + address }

// History is a bounded ring of Samples, oldest first. Its zero value is
// not usable; NewHistory makes one. It is safe for concurrent use.
type History struct {
	mu   sync.Mutex
	buf  []Sample
	next int // where the next sample goes
	full bool
	prev *lb.Status
}

// NewHistory returns a History that keeps the last n samples (n >= 1).
func NewHistory(n int) *History { return &History{buf: make([]Sample, max(n, 1))} }

// Add takes st as the newest status. From the second status on, it
// records the Sample of the interval since the previous one; a status
// not newer than the previous one is ignored. A counter that went down
// (a service removed by a reload) counts as no change.
func (h *History) Add(st *lb.Status) {
	if st == nil {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	prev := h.prev
	if prev != nil && !st.Time.After(prev.Time) {
		return
	}
	h.prev = st
	if prev == nil {
		return
	}
	h.buf[h.next] = sampleBetween(prev, st)
	h.next++
	if h.next == len(h.buf) {
		h.next, h.full = 0, true
	}
}

// Samples returns the samples, oldest first (a copy).
func (h *History) Samples() []Sample {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.full {
		return append([]Sample(nil), h.buf[:h.next]...)
	}
	out := make([]Sample, 0, len(h.buf))
	out = append(out, h.buf[h.next:]...)
	return append(out, h.buf[:h.next]...)
}

// Len is the number of samples kept.
func (h *History) Len() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.full {
		return len(h.buf)
	}
	return h.next
}

// sampleBetween is the Sample of the interval from a to b (b after a).
func sampleBetween(a, b *lb.Status) Sample {
	dt := b.Time.Sub(a.Time).Seconds()
	rate := func(x, y float64) float64 {
		if y <= x {
			return 0
		}
		return (y - x) / dt
	}
	s := Sample{Time: b.Time, Backends: map[string]float64{}}
	created := map[string]float64{}
	for _, sv := range a.Services {
		for _, be := range sv.Backends {
			created[BackendKey(sv.Name, be.Address)] = be.FlowsCreated
		}
	}
	var newFlows float64
	for _, sv := range b.Services {
		s.FlowsActive += sv.FlowsActive
		for _, be := range sv.Backends {
			k := BackendKey(sv.Name, be.Address)
			before, ok := created[k]
			if !ok { // new since a (a reload): no interval to rate
				before = be.FlowsCreated
			}
			r := rate(before, be.FlowsCreated)
			s.Backends[k] = r
			newFlows += r
		}
	}
	s.NewFlows = newFlows
	s.Drops = rate(float64(drops(a)), float64(drops(b)))
	s.Packets = rate(float64(rxPackets(a)), float64(rxPackets(b)))
	return s
}

// drops is every dropped frame of st: by reason, and in the kernel's rings.
func drops(st *lb.Status) uint64 {
	var n uint64
	for _, v := range st.Drops {
		n += v
	}
	for _, l := range st.Links {
		n += l.KernelDrops
	}
	return n
}

func rxPackets(st *lb.Status) uint64 {
	var n uint64
	for _, l := range st.Links {
		n += l.RxPackets
	}
	return n
}
