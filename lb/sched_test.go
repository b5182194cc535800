package lb

import (
	"fmt"
	"math"
	"math/rand/v2"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"tslb/config"
	"tslb/nat"
)

// schedBackends returns backends 198.18.1.11:8080, .12, ... with the given
// weights, as config would build them.
func schedBackends(weights ...int) []*backend {
	var bs []*backend
	for i, w := range weights {
		ap := netip.AddrPortFrom(netip.AddrFrom4([4]byte{198, 18, 1, byte(11 + i)}), 8080)
		st := &backendState{}
		st.up.Store(true)
		bs = append(bs, &backend{ap: ap, addr: nat.AddrFrom(ap.Addr()), port: ap.Port(), weight: w, backendState: st})
	}
	return bs
}

func equalWeights(n int) []int {
	w := make([]int, n)
	for i := range w {
		w[i] = 1
	}
	return w
}

func mustMaglev(t testing.TB, bs []*backend, m uint64) *maglev {
	t.Helper()
	g, err := newMaglev(bs, m)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// slotsOf counts the table's slots per backend address.
func slotsOf(g *maglev) map[netip.AddrPort]int {
	n := map[netip.AddrPort]int{}
	for _, i := range g.table {
		n[g.backends[i].ap]++
	}
	return n
}

// owners is the table as backend addresses, to compare tables built from
// different *backend values.
func owners(g *maglev) []netip.AddrPort {
	o := make([]netip.AddrPort, len(g.table))
	for s, i := range g.table {
		o[s] = g.backends[i].ap
	}
	return o
}

func TestMaglevShares(t *testing.T) {
	for _, tc := range []struct {
		name    string
		m       uint64
		weights []int
	}{
		{"1 backend", MaglevTableSize, []int{1}},
		{"2 equal", MaglevTableSize, equalWeights(2)},
		{"3 equal", MaglevTableSize, equalWeights(3)},
		{"10 equal", MaglevTableSize, equalWeights(10)},
		{"100 equal", MaglevTableSize, equalWeights(100)},
		{"weights 1:2:3", MaglevTableSize, []int{1, 2, 3}},
		{"weights 1:2:3 small table", 16381, []int{1, 2, 3}},
		{"weights 5:1", MaglevTableSize, []int{5, 1}},
		{"weights 1:1:8", MaglevTableSize, []int{1, 1, 8}},
		{"one drained", MaglevTableSize, []int{1, 0, 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bs := schedBackends(tc.weights...)
			g := mustMaglev(t, bs, tc.m)
			if uint64(len(g.table)) != tc.m {
				t.Fatalf("table has %d slots, want %d", len(g.table), tc.m)
			}
			total := 0
			for _, w := range tc.weights {
				total += w
			}
			slots := slotsOf(g)
			for i, b := range bs {
				want := float64(tc.m) * float64(tc.weights[i]) / float64(total)
				got := float64(slots[b.ap])
				if math.Abs(got-want) > 0.01*want {
					t.Errorf("%s (weight %d) has %v slots, want %.0f ±1%%", b.ap, tc.weights[i], got, want)
				}
			}
		})
	}
}

// maglevReference is the population loop of the paper's Pseudocode 1
// (§3.4) over explicit permutation tables, with weights as extra turns.
func maglevReference(bs []*backend, m uint64) []uint16 {
	perm := make([][]uint64, len(bs))
	for i, b := range bs {
		h1, h2 := maglevHashes(b)
		offset, skip := h1%m, h2%(m-1)+1
		perm[i] = make([]uint64, m)
		for j := range m {
			perm[i][j] = (offset + j*skip) % m
		}
	}
	entry := make([]int, m)
	for i := range entry {
		entry[i] = -1
	}
	next := make([]int, len(bs))
	n := uint64(0)
	for {
		for i, b := range bs {
			for range b.weight {
				c := perm[i][next[i]]
				for entry[c] >= 0 {
					next[i]++
					c = perm[i][next[i]]
				}
				entry[c] = i
				next[i]++
				n++
				if n == m {
					out := make([]uint16, m)
					for s, e := range entry {
						out[s] = uint16(e)
					}
					return out
				}
			}
		}
	}
}

func TestMaglevMatchesReference(t *testing.T) {
	for _, tc := range []struct {
		m       uint64
		weights []int
	}{
		{7, []int{1, 1, 1}},
		{251, equalWeights(5)},
		{251, []int{3, 1, 2}},
		{16381, equalWeights(7)},
	} {
		t.Run(fmt.Sprint(tc.m, tc.weights), func(t *testing.T) {
			g := mustMaglev(t, schedBackends(tc.weights...), tc.m)
			if want := maglevReference(g.backends, tc.m); !slices.Equal(g.table, want) {
				t.Errorf("table differs from the reference")
			}
		})
	}
}

func TestMaglevDeterministicInAnyOrder(t *testing.T) {
	bs := schedBackends(1, 2, 1, 3, 1, 1, 2)
	want := owners(mustMaglev(t, bs, MaglevTableSize))
	r := rand.New(rand.NewPCG(1, 2))
	for i := range 5 {
		// Fresh *backend values, shuffled: only addresses and weights count.
		shuffled := schedBackends(1, 2, 1, 3, 1, 1, 2)
		r.Shuffle(len(shuffled), func(a, b int) { shuffled[a], shuffled[b] = shuffled[b], shuffled[a] })
		if got := owners(mustMaglev(t, shuffled, MaglevTableSize)); !slices.Equal(got, want) {
			t.Errorf("shuffle %d: table differs", i)
		}
	}
}

// TestMaglevDisruption removes one of N backends and looks up 100k random
// keys before and after: only about 1/N of them (those of the removed
// backend) may move, plus at most 2% of the others; adding the backend back
// restores every key.
func TestMaglevDisruption(t *testing.T) {
	const keys = 100_000
	r := rand.New(rand.NewPCG(3, 4))
	hs := make([]uint64, keys)
	for i := range hs {
		hs[i] = r.Uint64()
	}
	for _, n := range []int{3, 5, 10} {
		for _, removed := range []int{0, n / 2, n - 1} {
			t.Run(fmt.Sprintf("N=%d remove %d", n, removed), func(t *testing.T) {
				full := schedBackends(equalWeights(n)...)
				before := mustMaglev(t, full, MaglevTableSize)
				gone := full[removed]
				rest := slices.Delete(slices.Clone(full), removed, removed+1)
				after := mustMaglev(t, rest, MaglevTableSize)
				moved, movedOthers, others := 0, 0, 0
				for _, h := range hs {
					b, a := before.Pick(h), after.Pick(h)
					if a == gone {
						t.Fatalf("key %#x still maps to the removed backend", h)
					}
					if a != b {
						moved++
					}
					if b != gone {
						others++
						if a != b {
							movedOthers++
						}
					}
				}
				fracAll := float64(moved) / keys
				fracOthers := float64(movedOthers) / float64(others)
				t.Logf("moved %.2f%% of all keys (1/N = %.2f%%), %.2f%% of keys not on the removed backend",
					100*fracAll, 100/float64(n), 100*fracOthers)
				if fracAll > 1/float64(n)+0.02 {
					t.Errorf("moved %.2f%% of all keys, want at most 1/N + 2%% = %.2f%%", 100*fracAll, 100/float64(n)+2)
				}
				if fracOthers > 0.02 {
					t.Errorf("moved %.2f%% of the keys not on the removed backend, want at most 2%%", 100*fracOthers)
				}
				// Add it back (at the end: order does not matter).
				again := mustMaglev(t, append(slices.Clone(rest), gone), MaglevTableSize)
				for _, h := range hs {
					if again.Pick(h) != before.Pick(h) {
						t.Fatalf("key %#x: %s after adding back, %s before", h, again.Pick(h).ap, before.Pick(h).ap)
					}
				}
			})
		}
	}
}

func TestMaglevDrained(t *testing.T) {
	bs := schedBackends(1, 1, 1)
	without := owners(mustMaglev(t, []*backend{bs[0], bs[2]}, MaglevTableSize))
	bs[1].weight = 0
	g := mustMaglev(t, bs, MaglevTableSize)
	if !slices.Equal(owners(g), without) {
		t.Errorf("a backend of weight 0 changes the table; want the table without it")
	}
	if n := slotsOf(g)[bs[1].ap]; n != 0 {
		t.Errorf("drained backend has %d slots", n)
	}
	none := mustMaglev(t, schedBackends(0, 0), MaglevTableSize)
	if b := none.Pick(42); b != nil {
		t.Errorf("Pick with every backend drained = %s, want nil", b.ap)
	}
	if _, err := newMaglev(schedBackends(equalWeights(8)...), 7); err == nil {
		t.Errorf("8 backends in a 7-slot table: no error")
	}
}

func TestMaglevPickAllocs(t *testing.T) {
	g := mustMaglev(t, schedBackends(1, 2, 3), MaglevTableSize)
	h := uint64(0)
	if n := testing.AllocsPerRun(1000, func() {
		h += 0x9e3779b97f4a7c15
		_ = g.Pick(h)
	}); n != 0 {
		t.Errorf("Pick allocates %v times per call", n)
	}
}

func BenchmarkMaglevPick(b *testing.B) {
	g := mustMaglev(b, schedBackends(equalWeights(10)...), MaglevTableSize)
	b.ReportAllocs()
	h := uint64(1)
	var sink *backend
	for range b.N {
		h = mix64(h)
		sink = g.Pick(h)
	}
	_ = sink
}

func BenchmarkMaglevBuild(b *testing.B) {
	for _, n := range []int{3, 100} {
		b.Run(fmt.Sprint(n, " backends"), func(b *testing.B) {
			bs := schedBackends(equalWeights(n)...)
			b.ReportAllocs()
			for range b.N {
				mustMaglev(b, bs, MaglevTableSize)
			}
		})
	}
}

func TestLeastConnPick(t *testing.T) {
	for _, tc := range []struct {
		name    string
		weights []int
		flows   []int64
		picks   []int // expected picks per backend over len(picks)*k calls, counts frozen
	}{
		{"idle backend wins", []int{1, 1, 1}, []int64{5, 0, 3}, []int{0, 6, 0}},
		{"weighted: 4/2 < 3/1", []int{2, 1}, []int64{4, 3}, []int{6, 0}},
		{"weighted: 5/2 > 2/1", []int{2, 1}, []int64{5, 2}, []int{0, 6}},
		{"weighted tie 4/2 = 2/1 alternates", []int{2, 1}, []int64{4, 2}, []int{3, 3}},
		{"equal ties share evenly", []int{1, 1, 1, 1}, []int64{1, 1, 1, 5}, []int{2, 2, 2, 0}},
		{"all idle share evenly", []int{1, 1, 1}, []int64{0, 0, 0}, []int{2, 2, 2}},
		{"drained backend never picked", []int{0, 1}, []int64{0, 9}, []int{0, 6}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bs := schedBackends(tc.weights...)
			for i, f := range tc.flows {
				bs[i].flows.Store(f)
			}
			l := newLeastConn(bs)
			got := make([]int, len(bs))
			calls := 0
			for _, n := range tc.picks {
				calls += n
			}
			for range calls {
				b := l.Pick(0)
				got[slices.Index(bs, b)]++
			}
			if !slices.Equal(got, tc.picks) {
				t.Errorf("picks per backend = %v, want %v", got, tc.picks)
			}
		})
	}
	if b := newLeastConn(schedBackends(0, 0)).Pick(0); b != nil {
		t.Errorf("Pick with every backend drained = %s, want nil", b.ap)
	}
}

// TestLeastConnConverges counts each pick as a new live flow: the flows
// then follow the weights to within one flow.
func TestLeastConnConverges(t *testing.T) {
	weights := []int{1, 2, 3}
	bs := schedBackends(weights...)
	l := newLeastConn(bs)
	for range 600 {
		l.Pick(0).flows.Add(1)
	}
	for i, b := range bs {
		if got, want := b.flows.Load(), int64(100*weights[i]); got < want-1 || got > want+1 {
			t.Errorf("%s weight %d: %d flows, want %d±1", b.ap, weights[i], got, want)
		}
	}
}

// TestLeastConnConcurrent picks from several goroutines (run with -race)
// and checks every pick is an eligible backend and the load stays even.
func TestLeastConnConcurrent(t *testing.T) {
	bs := schedBackends(1, 1, 0, 1)
	l := newLeastConn(bs)
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 1000 {
				b := l.Pick(0)
				if b == nil || b.weight == 0 {
					t.Errorf("picked %v", b)
					return
				}
				b.flows.Add(1)
			}
		})
	}
	wg.Wait()
	for _, b := range bs {
		if b.weight == 0 {
			continue
		}
		// 4000 picks over 3 backends; concurrent picks may see stale
		// counts, so allow a few percent.
		if f := b.flows.Load(); f < 1250 || f > 1420 {
			t.Errorf("%s: %d flows of 4000, want about 1333", b.ap, f)
		}
	}
}

func TestNewScheduler(t *testing.T) {
	for _, tc := range []struct {
		name string
		ok   bool
	}{{"", true}, {"wrr", true}, {"rr", true}, {"least_conn", true}, {"maglev", true}, {"random", false}} {
		s, err := newScheduler(tc.name, schedBackends(1, 1))
		if (err == nil) != tc.ok {
			t.Errorf("newScheduler(%q) err = %v, want ok=%v", tc.name, err, tc.ok)
			continue
		}
		if tc.ok && s.Pick(7) == nil {
			t.Errorf("newScheduler(%q).Pick = nil", tc.name)
		}
	}
}

// TestLeastConnDatapath checks through the fake links that the datapath
// keeps backend.flows: a flow counts from its SYN until it is removed,
// and each SYN goes to a least loaded backend.
func TestLeastConnDatapath(t *testing.T) {
	t.Parallel()
	h := start(t, testConfig(func(c *config.Config) {
		c.Services[0].Scheduler = "least_conn"
		c.Flows.Timeouts.Syn = time.Second
	}))
	h.prime(t)
	svc := h.b.sh.snap.Load().svcList[0]
	count := map[netip.AddrPort]int64{}
	for i := range 6 {
		before := map[netip.AddrPort]int64{}
		for _, b := range svc.backends {
			before[b.ap] = b.flows.Load()
		}
		c := h.connect(t, uint16(48000+i), 1)
		for ap, n := range before {
			if n < before[c.backend] {
				t.Errorf("SYN %d went to %s with %d flows while %s had %d", i, c.backend, before[c.backend], ap, n)
			}
		}
		count[c.backend]++
		// connect returned after the SYN was forwarded, so the flow counts.
		for _, b := range svc.backends {
			if got := b.flows.Load(); got != count[b.ap] {
				t.Fatalf("after %d SYNs %s counts %d flows, want %d", i+1, b.ap, got, count[b.ap])
			}
		}
	}
	if count[be1AP] != 3 || count[be2AP] != 3 {
		t.Errorf("6 SYNs went %d/%d, want 3/3", count[be1AP], count[be2AP])
	}
	// The SYN_SENT flows expire after 1 s (reaped within about 2.25 s).
	if !waitFor(4*time.Second, func() bool {
		return svc.backends[0].flows.Load() == 0 && svc.backends[1].flows.Load() == 0
	}) {
		t.Errorf("flows after expiry = %d, %d; want 0, 0", svc.backends[0].flows.Load(), svc.backends[1].flows.Load())
	}
}

// TestLeastConnSkipsDown: a backend that health checks took down is never
// picked, though with no new flows it is soon the least loaded.
func TestLeastConnSkipsDown(t *testing.T) {
	bs := schedBackends(1, 1, 1)
	bs[0].flows.Store(5)
	bs[1].flows.Store(5)
	bs[2].up.Store(false) // 0 flows: least loaded, but down
	s, err := newScheduler("least_conn", bs)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		if b := s.Pick(uint64(i)); b == bs[2] {
			t.Fatalf("pick %d chose the down backend", i)
		}
	}
	for _, b := range bs {
		b.up.Store(false)
	}
	if b := s.Pick(0); b != nil {
		t.Errorf("every backend down: picked %v, want nil", b.ap)
	}
}
