package snat_test

import (
	"math/rand/v2"
	"testing"

	"tslb/lb/snat"
)

const twSec = int64(1e9)

func TestTWPoolFreshNeverTimeWait(t *testing.T) {
	p := snat.NewPool(1000, 1099, 0, 1, 1)
	now := int64(0)
	tw := map[uint16]bool{}
	// Fill the pool, then put every other port in TIME_WAIT.
	var live []uint16
	for range 100 {
		port, reused, _, ok := p.Alloc(now)
		if !ok || reused {
			t.Fatalf("Alloc on a pool with free ports: %v %v", reused, ok)
		}
		live = append(live, port)
	}
	for i, port := range live {
		if i%2 == 0 {
			p.Release(port, now, snat.Record{Until: now + 60*twSec, NextSeq: uint32(port)})
			tw[port] = true
		} else {
			p.Release(port, now, snat.Record{}) // client closed first: free at once
		}
	}
	if in, w, free := p.Counts(now); in != 0 || w != 50 || free != 50 {
		t.Fatalf("Counts = %d %d %d", in, w, free)
	}
	// 50 fresh allocations must never hit a TIME_WAIT port.
	for range 50 {
		port, reused, _, ok := p.Alloc(now + 30*twSec)
		if !ok || reused || tw[port] {
			t.Fatalf("Alloc = %d %v %v (in TIME_WAIT: %v)", port, reused, ok, tw[port])
		}
	}
	if _, ok := p.AllocFresh(now + 30*twSec); ok {
		t.Fatalf("AllocFresh succeeded with only TIME_WAIT ports left")
	}
	// Now only TIME_WAIT tuples remain: Alloc reuses the oldest with its record.
	port, reused, rec, ok := p.Alloc(now + 30*twSec)
	if !ok || !reused || port != live[0] || rec.NextSeq != uint32(live[0]) || rec.Until != now+60*twSec {
		t.Fatalf("Alloc = %d %v %+v %v, want %d time_wait", port, reused, rec, ok, live[0])
	}
	if _, ok := p.Record(port); ok {
		t.Errorf("reused port still has a record")
	}
	if in, w, _ := p.Counts(now + 30*twSec); in != 51 || w != 49 {
		t.Errorf("Counts = %d %d", in, w)
	}
}

func TestTWPoolExpiryExactlyAtUntil(t *testing.T) {
	p := snat.NewPool(5, 5, 0, 1, 2)
	port, _, _, _ := p.Alloc(0)
	rec := snat.Record{Until: 1000, NextSeq: 0xffff_fffe, LastTS: 0xffff_ffff, HasTS: true}
	p.Release(port, 10, rec)
	if got, ok := p.Record(port); !ok || got != rec {
		t.Fatalf("Record = %+v %v, want %+v (wrapped values untouched)", got, ok, rec)
	}
	if _, ok := p.AllocFresh(999); ok {
		t.Fatalf("port free 1 ns before Until")
	}
	if in, w, free := p.Counts(999); in != 0 || w != 1 || free != 0 {
		t.Fatalf("Counts(999) = %d %d %d", in, w, free)
	}
	if in, w, free := p.Counts(1000); in != 0 || w != 0 || free != 1 {
		t.Fatalf("Counts(1000) = %d %d %d", in, w, free)
	}
	if got, reused, _, ok := p.Alloc(1000); !ok || reused || got != port {
		t.Fatalf("Alloc(1000) = %d %v %v", got, reused, ok)
	}
	// Release with Until <= now: free at once, no record, nothing entered.
	p.Release(port, 2000, snat.Record{Until: 2000})
	if _, ok := p.Record(port); ok || p.Entered() != 1 {
		t.Fatalf("Until == now entered TIME_WAIT (entered %d)", p.Entered())
	}
}

func TestTWPoolExhaustion(t *testing.T) {
	p := snat.NewPool(100, 163, 0, 1, 3)
	seen := map[uint16]bool{}
	for range 64 {
		port, reused, _, ok := p.Alloc(0)
		if !ok || reused || seen[port] || port < 100 || port > 163 {
			t.Fatalf("Alloc = %d %v %v", port, reused, ok)
		}
		seen[port] = true
	}
	if _, _, _, ok := p.Alloc(0); ok {
		t.Fatalf("Alloc succeeded on a pool of live flows")
	}
	if _, ok := p.AllocFresh(0); ok {
		t.Fatalf("AllocFresh succeeded on a pool of live flows")
	}
	empty := snat.NewPool(10, 9, 0, 1, 0)
	if _, _, _, ok := empty.Alloc(0); ok || empty.Size() != 0 {
		t.Fatalf("empty pool allocated")
	}
	empty.Release(10, 0, snat.Record{Until: 5})
	if full := snat.NewPool(0, 65535, 0, 1, 4); full.Size() != 65536 {
		t.Fatalf("Size = %d", full.Size())
	}
}

func TestTWPoolReleaseReusedPortAgain(t *testing.T) {
	p := snat.NewPool(7000, 7001, 0, 1, 5)
	a, _, _, _ := p.Alloc(0)
	b, _, _, _ := p.Alloc(0)
	p.Release(a, 0, snat.Record{Until: 100, NextSeq: 1})
	p.Release(b, 0, snat.Record{Until: 200, NextSeq: 2})
	// Reuse a early, then release it again: it enters TIME_WAIT anew,
	// behind b.
	port, reused, rec, ok := p.Alloc(50)
	if !ok || !reused || port != a || rec.NextSeq != 1 {
		t.Fatalf("Alloc = %d %v %+v", port, reused, rec)
	}
	p.Release(a, 60, snat.Record{Until: 300, NextSeq: 3})
	// Releasing again (double release) or releasing a TIME_WAIT port is a no-op.
	p.Release(a, 60, snat.Record{Until: 900, NextSeq: 9})
	p.Release(b, 60, snat.Record{Until: 900, NextSeq: 9})
	if r, _ := p.Record(a); r.NextSeq != 3 || r.Until != 300 {
		t.Fatalf("record of a = %+v", r)
	}
	if r, _ := p.Record(b); r.NextSeq != 2 {
		t.Fatalf("record of b = %+v", r)
	}
	if p.Entered() != 3 {
		t.Errorf("Entered = %d, want 3", p.Entered())
	}
	// Soonest first: b (200) before a (300).
	if port, reused, rec, _ := p.Alloc(100); port != b || !reused || rec.Until != 200 {
		t.Fatalf("Alloc = %d %v %+v, want b", port, reused, rec)
	}
	if port, reused, _, _ := p.Alloc(300); port != a || reused {
		t.Fatalf("Alloc(300) = %d %v, want a fresh (its TIME_WAIT ended)", port, reused)
	}
}

func TestTWPoolSpread(t *testing.T) {
	const n, rounds = 256, 200
	p := snat.NewPool(20000, 20000+n-1, 0, 1, 6)
	count := make(map[uint16]int)
	var prev uint16
	repeats := 0
	for i := range n * rounds {
		port, reused, _, ok := p.Alloc(int64(i))
		if !ok || reused {
			t.Fatal("Alloc failed")
		}
		if port == prev {
			repeats++
		}
		prev = port
		count[port]++
		p.Release(port, int64(i), snat.Record{})
	}
	if len(count) != n {
		t.Fatalf("only %d of %d ports used", len(count), n)
	}
	for port, c := range count {
		// Binomial(51200, 1/256): mean 200, sd ~14; 5 sd either side.
		if c < 130 || c > 270 {
			t.Errorf("port %d chosen %d times, want ~%d", port, c, rounds)
		}
	}
	if repeats > n*rounds/100 {
		t.Errorf("a just-released port came straight back %d times", repeats)
	}
	// Two seeds give different sequences.
	a, b := snat.NewPool(1, 60000, 0, 1, 1), snat.NewPool(1, 60000, 0, 1, 2)
	same := 0
	for range 100 {
		x, _ := a.AllocFresh(0)
		y, _ := b.AllocFresh(0)
		if x == y {
			same++
		}
	}
	if same > 5 {
		t.Errorf("seeds 1 and 2 agree on %d of 100 ports", same)
	}
}

func TestKindString(t *testing.T) {
	for k, want := range map[snat.Kind]string{snat.Fresh: "fresh", snat.EarlyReuseISN: "early_reuse_isn", snat.EarlyReuseTS: "early_reuse_ts", snat.Forced: "forced", snat.NumKinds: "unknown"} {
		if k.String() != want {
			t.Errorf("Kind(%d) = %q, want %q", k, k, want)
		}
	}
}

// twModel is a simple map-based reference of TWPool's documented
// behaviour, FIFO head expiry included.
type twModel struct {
	lo, hi uint16
	live   map[uint16]bool
	tw     map[uint16]snat.Record
	fifo   []uint16
}

func (m *twModel) expire(now int64) {
	for len(m.fifo) > 0 && m.tw[m.fifo[0]].Until <= now {
		delete(m.tw, m.fifo[0])
		m.fifo = m.fifo[1:]
	}
}

func (m *twModel) free() int { return int(m.hi-m.lo) + 1 - len(m.live) - len(m.tw) }

// TestTWPoolMatchesModel runs 100k random operations against the pool and
// the reference model and compares every answer.
func TestTWPoolMatchesModel(t *testing.T) {
	r := rand.New(rand.NewPCG(21, 22))
	const lo, hi = 30000, 30199
	p := snat.NewPool(lo, hi, 0, 1, 9)
	m := &twModel{lo: lo, hi: hi, live: map[uint16]bool{}, tw: map[uint16]snat.Record{}}
	var liveList []uint16
	now := int64(0)
	var entered uint64
	kinds := [2]int{}
	for op := range 100_000 {
		now += int64(r.IntN(3)) * twSec / 10
		switch k := r.IntN(10); {
		case k < 4: // Alloc
			m.expire(now)
			port, reused, rec, ok := p.Alloc(now)
			switch {
			case m.free() > 0:
				if !ok || reused || m.live[port] || m.tw[port] != (snat.Record{}) || port < lo || port > hi {
					t.Fatalf("op %d: Alloc = %d %v %v with free ports", op, port, reused, ok)
				}
				if _, inTW := m.tw[port]; inTW {
					t.Fatalf("op %d: fresh port %d is in TIME_WAIT", op, port)
				}
			case len(m.fifo) > 0:
				if !ok || !reused || port != m.fifo[0] || rec != m.tw[port] {
					t.Fatalf("op %d: Alloc = %d %v %+v, want %d %+v", op, port, reused, rec, m.fifo[0], m.tw[m.fifo[0]])
				}
				delete(m.tw, port)
				m.fifo = m.fifo[1:]
			default:
				if ok {
					t.Fatalf("op %d: Alloc succeeded on a pool of live flows", op)
				}
				continue
			}
			if reused {
				kinds[1]++
			} else {
				kinds[0]++
			}
			m.live[port] = true
			liveList = append(liveList, port)
		case k < 5: // AllocFresh
			m.expire(now)
			port, ok := p.AllocFresh(now)
			if ok != (m.free() > 0) {
				t.Fatalf("op %d: AllocFresh ok=%v with %d free", op, ok, m.free())
			}
			if ok {
				if _, inTW := m.tw[port]; inTW || m.live[port] {
					t.Fatalf("op %d: AllocFresh gave busy port %d", op, port)
				}
				m.live[port] = true
				liveList = append(liveList, port)
			}
		case k < 9: // Release a live port (or, rarely, a non-live one)
			if len(liveList) == 0 || r.IntN(20) == 0 {
				port := uint16(lo + r.IntN(hi-lo+1))
				if !m.live[port] {
					p.Release(port, now, snat.Record{Until: now + twSec})
				}
				continue
			}
			j := r.IntN(len(liveList))
			port := liveList[j]
			liveList[j] = liveList[len(liveList)-1]
			liveList = liveList[:len(liveList)-1]
			rec := snat.Record{NextSeq: r.Uint32(), LastTS: r.Uint32(), HasTS: r.IntN(2) == 0}
			if r.IntN(3) > 0 {
				// Mostly rising Until; sometimes earlier than the tail.
				rec.Until = now + int64(r.IntN(60))*twSec/10 + 1
				if r.IntN(10) == 0 {
					rec.Until = now + 1
				}
			}
			p.Release(port, now, rec)
			delete(m.live, port)
			if rec.Until > now {
				m.tw[port] = rec
				m.fifo = append(m.fifo, port)
				entered++
			}
		default: // Counts and Record
			m.expire(now)
			in, w, free := p.Counts(now)
			if in != len(m.live) || w != len(m.tw) || free != m.free() {
				t.Fatalf("op %d: Counts = %d %d %d, model %d %d %d", op, in, w, free, len(m.live), len(m.tw), m.free())
			}
			port := uint16(lo + r.IntN(hi-lo+1))
			got, ok := p.Record(port)
			want, wok := m.tw[port]
			if ok != wok || got != want {
				t.Fatalf("op %d: Record(%d) = %+v %v, model %+v %v", op, port, got, ok, want, wok)
			}
		}
	}
	if p.Entered() != entered {
		t.Errorf("Entered = %d, model %d", p.Entered(), entered)
	}
	if kinds[0] == 0 || kinds[1] == 0 {
		t.Errorf("the random walk never exercised both kinds: %v", kinds)
	}
}

func TestTWPoolNoAllocs(t *testing.T) {
	p := snat.NewPool(1, 65535, 0, 1, 7)
	now := int64(0)
	n := testing.AllocsPerRun(10000, func() {
		now += 1000
		port, _, _, ok := p.Alloc(now)
		if !ok {
			t.Fatal("exhausted")
		}
		p.Release(port, now, snat.Record{Until: now + 60*twSec})
		p.Counts(now)
		p.Record(port)
	})
	if n != 0 {
		t.Errorf("%v allocs per op", n)
	}
}

// BenchmarkTWPoolAlloc: 16 pools (16 backends) of 64k ports, about 90% of
// each in TIME_WAIT in steady state; one Alloc+Release per op, round-robin
// over the pools, with a fake clock.
func BenchmarkTWPoolAlloc(b *testing.B) {
	const pools = 16
	const size = 64512 // 1024..65535
	// Each op moves one tuple into TIME_WAIT and the clock by 1 ns, so a
	// pool gets one entry every 16 ns: a time_wait of 0.9*size*16 ns holds
	// 90% of its ports.
	const tw = int64(size * pools * 9 / 10)
	ps := make([]*snat.Pool, pools)
	for i := range ps {
		ps[i] = snat.NewPool(1024, 65535, 0, 1, uint64(i))
	}
	now := int64(0)
	step := func(i int) {
		now++
		p := ps[i%pools]
		port, _, _, ok := p.Alloc(now)
		if !ok {
			b.Fatal("exhausted")
		}
		p.Release(port, now, snat.Record{Until: now + tw, NextSeq: uint32(i), HasTS: true})
	}
	for i := range 2 * size * pools { // reach the steady state
		step(i)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		step(i)
	}
	b.StopTimer()
	_, w, _ := ps[0].Counts(now)
	b.ReportMetric(float64(w)/size*100, "%tw")
}
