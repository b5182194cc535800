package snat_test

import (
	"testing"

	"tslb/config"
	"tslb/lb/snat"
	"tslb/nat"
)

// fullPool returns a pool of ports [lo, lo+n) whose every tuple is in
// TIME_WAIT until 1e12 with rec(i) for the i-th port, in that order.
func fullPool(lo uint16, n int, rec func(i int) snat.Record) *snat.Pool {
	p := snat.NewPool(lo, lo+uint16(n)-1, 0, 1, 1)
	ports := make([]uint16, 0, n)
	for range n {
		port, _, _, _ := p.Alloc(0)
		ports = append(ports, port)
	}
	for i := range n {
		r := rec(i)
		r.Until = 1e12
		// Release in port order so the ring order is known.
		p.Release(lo+uint16(i), 0, r)
	}
	_ = ports
	return p
}

func TestPick(t *testing.T) {
	const now = int64(5e9)
	tsRec := func(int) snat.Record { return snat.Record{NextSeq: 1000, LastTS: 5000, HasTS: true} }
	noTSRec := func(int) snat.Record { return snat.Record{NextSeq: 1000} }
	for _, tt := range []struct {
		name      string
		rec       func(int) snat.Record
		req       snat.Request
		verdict   snat.Verdict
		kind      snat.Kind
		isn       uint32
		tsval     uint32 // 0: not checked
		freePorts int    // ports left free (not in TIME_WAIT) in the pool
	}{
		{"fresh first", tsRec, snat.Request{Seq: 7, Mode: nat.TSStrip, Exhaustion: config.ExhaustWait}, snat.OK, snat.Fresh, 7, 0, 1},
		{"rewrite: TSval above the ledger", tsRec, snat.Request{Seq: 7, Mode: nat.TSRewrite, ISNTranslation: true, Exhaustion: config.ExhaustWait}, snat.OK, snat.EarlyReuseTS, 1000 + 65537, 5001, 0},
		{"rewrite without ISN translation still safe by TS", tsRec, snat.Request{Seq: 7, Mode: nat.TSRewrite, Exhaustion: config.ExhaustWait}, snat.OK, snat.EarlyReuseTS, 7, 5001, 0},
		{"rewrite, old connection without TS: ISN decides", noTSRec, snat.Request{Seq: 7, Mode: nat.TSRewrite, ISNTranslation: true, Exhaustion: config.ExhaustWait}, snat.OK, snat.EarlyReuseISN, 1000 + 65537, 0, 0},
		{"rewrite, no TS, no ISN: wait", noTSRec, snat.Request{Seq: 7, Mode: nat.TSRewrite, Exhaustion: config.ExhaustWait}, snat.Wait, 0, 0, 0, 0},
		{"strip with ISN translation", tsRec, snat.Request{Seq: 7, Mode: nat.TSStrip, ISNTranslation: true, Exhaustion: config.ExhaustWait}, snat.OK, snat.EarlyReuseISN, 1000 + 65537, 0, 0},
		{"strip without ISN: reject", tsRec, snat.Request{Seq: 7, Mode: nat.TSStrip, Exhaustion: config.ExhaustReject}, snat.Reject, 0, 0, 0, 0},
		{"strip without ISN: reuse forced", tsRec, snat.Request{Seq: 7, Mode: nat.TSStrip, Exhaustion: config.ExhaustReuse}, snat.OK, snat.Forced, 7, 0, 0},
		{"passthrough newer TSval", tsRec, snat.Request{Seq: 7, HasTS: true, TSVal: 5001, Mode: nat.TSPassthrough, Exhaustion: config.ExhaustWait}, snat.OK, snat.EarlyReuseTS, 7, 0, 0},
		{"passthrough equal TSval: ISN decides", tsRec, snat.Request{Seq: 7, HasTS: true, TSVal: 5000, Mode: nat.TSPassthrough, ISNTranslation: true, Exhaustion: config.ExhaustWait}, snat.OK, snat.EarlyReuseISN, 1000 + 65537, 0, 0},
		{"passthrough older TSval: PAWS vetoes even a good seq", tsRec, snat.Request{Seq: 7, HasTS: true, TSVal: 4999, Mode: nat.TSPassthrough, ISNTranslation: true, Exhaustion: config.ExhaustWait}, snat.Wait, 0, 0, 0, 0},
		{"passthrough client without TS: ISN decides", tsRec, snat.Request{Seq: 7, Mode: nat.TSPassthrough, ISNTranslation: true, Exhaustion: config.ExhaustWait}, snat.OK, snat.EarlyReuseISN, 1000 + 65537, 0, 0},
		{"passthrough TSval wrapped is older", tsRec, snat.Request{Seq: 7, HasTS: true, TSVal: 5000 + 1<<31 + 1, Mode: nat.TSPassthrough, ISNTranslation: true, Exhaustion: config.ExhaustReject}, snat.Reject, 0, 0, 0, 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := fullPool(30000, 8, tt.rec)
			p.Clock = snat.NewClock(0, 100) // at now: 100 + 5000 ms = 5100 > 5000
			if tt.tsval == 5001 {
				p.Clock = snat.NewClock(0, 0) // at now: 5000, not above the ledger
			}
			for range tt.freePorts {
				// Let one tuple end its TIME_WAIT: release it from the ledger.
				port, _, _, _ := p.Alloc(now)
				p.Release(port, now, snat.Record{})
			}
			before, _, _ := p.Counts(now)
			got, v := snat.Pick([]*snat.Pool{p}, &tt.req, now)
			if v != tt.verdict {
				t.Fatalf("verdict %v, want %v", v, tt.verdict)
			}
			inUse, tw, _ := p.Counts(now)
			if v != snat.OK {
				if inUse != before || tw != 8-tt.freePorts {
					t.Errorf("after %v: %d in use, %d in TIME_WAIT: Pick must leave the pool as it was", v, inUse, tw)
				}
				return
			}
			if got.Kind != tt.kind || got.ISN != tt.isn || got.Pool != p {
				t.Errorf("got %v isn %d, want %v isn %d", got.Kind, got.ISN, tt.kind, tt.isn)
			}
			if tt.tsval != 0 && got.TSVal != tt.tsval {
				t.Errorf("tsval %d, want %d", got.TSVal, tt.tsval)
			}
			if inUse != before+1 {
				t.Errorf("in use %d, want %d", inUse, before+1)
			}
		})
	}
}

// An unsafe TIME_WAIT head must not hide a safe tuple behind it, and the
// unsafe candidates go to the back of the ring.
func TestPickLooksPastUnsafeHead(t *testing.T) {
	p := fullPool(30000, 8, func(i int) snat.Record {
		if i < 2 {
			return snat.Record{NextSeq: 1, LastTS: 9000, HasTS: true} // newer than the SYN's TSval
		}
		return snat.Record{NextSeq: 1, LastTS: 100, HasTS: true}
	})
	req := snat.Request{HasTS: true, TSVal: 500, Mode: nat.TSPassthrough, Exhaustion: config.ExhaustWait}
	got, v := snat.Pick([]*snat.Pool{p}, &req, 1)
	if v != snat.OK || got.Port != 30002 || got.Kind != snat.EarlyReuseTS {
		t.Fatalf("Pick = %d %v %v, want port 30002 early_reuse_ts", got.Port, got.Kind, v)
	}
	// The two rejected heads went to the back: the next candidates are
	// 30003.. then 30000.
	for _, want := range []uint16{30003, 30004, 30005, 30006, 30007, 30000} {
		port, _, _, _ := p.Alloc(1)
		if port != want {
			t.Fatalf("next Alloc %d, want %d", port, want)
		}
	}
}

// A tuple is taken from the second SNAT address when the first has none
// safe, before any policy applies.
func TestPickTriesEveryPool(t *testing.T) {
	bad := fullPool(30000, 4, func(int) snat.Record { return snat.Record{LastTS: 9000, HasTS: true} })
	good := fullPool(30000, 4, func(int) snat.Record { return snat.Record{LastTS: 10, HasTS: true} })
	req := snat.Request{HasTS: true, TSVal: 500, Mode: nat.TSPassthrough, Exhaustion: config.ExhaustReject}
	got, v := snat.Pick([]*snat.Pool{bad, good}, &req, 1)
	if v != snat.OK || got.Pool != good {
		t.Fatalf("Pick = %v from %p, want OK from the second pool", v, got.Pool)
	}
	if u, _, _ := bad.Counts(1); u != 0 {
		t.Errorf("first pool has %d tuples in use after an unsafe look", u)
	}
}

func TestNewPoolPartitions(t *testing.T) {
	for _, tt := range []struct {
		lo, hi  uint16
		workers int
	}{{20000, 20003, 1}, {20000, 20003, 2}, {20000, 20004, 3}, {20001, 20001, 2}, {1024, 65535, 7}, {60000, 60010, 16}} {
		seen := map[uint16]int{}
		for w := range tt.workers {
			p := snat.NewPool(tt.lo, tt.hi, w, tt.workers, uint64(w))
			for range p.Size() {
				port, ok := p.AllocFresh(0)
				if !ok {
					t.Fatalf("%v worker %d: pool of %d exhausted early", tt, w, p.Size())
				}
				if snat.PortOwner(port, tt.workers) != w {
					t.Errorf("%v: worker %d got port %d owned by %d", tt, w, port, snat.PortOwner(port, tt.workers))
				}
				if o, dup := seen[port]; dup {
					t.Errorf("%v: port %d in workers %d and %d", tt, port, o, w)
				}
				seen[port] = w
			}
			if _, ok := p.AllocFresh(0); ok {
				t.Errorf("%v worker %d: more ports than Size", tt, w)
			}
			// A port of another worker is not this pool's: Release and
			// Restore ignore it.
			for port := tt.lo; port <= tt.hi && port >= tt.lo; port++ {
				if snat.PortOwner(port, tt.workers) != w && p.Restore(port, 0, snat.Record{Until: 10}) {
					t.Errorf("%v worker %d: Restore took port %d of worker %d", tt, w, port, snat.PortOwner(port, tt.workers))
				}
				if port == 65535 {
					break
				}
			}
		}
		if len(seen) != int(tt.hi)-int(tt.lo)+1 {
			t.Errorf("%v: %d ports covered, want %d", tt, len(seen), int(tt.hi)-int(tt.lo)+1)
		}
	}
}

func TestPickAllocs(t *testing.T) {
	p := fullPool(30000, 64, func(int) snat.Record { return snat.Record{NextSeq: 1, LastTS: 1, HasTS: true} })
	req := snat.Request{Mode: nat.TSRewrite, ISNTranslation: true, Exhaustion: config.ExhaustWait}
	pools := []*snat.Pool{p}
	now := int64(1)
	if n := testing.AllocsPerRun(100, func() {
		got, v := snat.Pick(pools, &req, now)
		if v != snat.OK {
			t.Fatal(v)
		}
		got.Pool.Release(got.Port, now, snat.Record{Until: 1e12, NextSeq: 2, LastTS: 3, HasTS: true})
	}); n != 0 {
		t.Errorf("Pick allocates %v per call", n)
	}
}

func BenchmarkPick(b *testing.B) {
	p := fullPool(1024, 64512, func(i int) snat.Record { return snat.Record{NextSeq: uint32(i), LastTS: 1, HasTS: true} })
	req := snat.Request{Mode: nat.TSRewrite, ISNTranslation: true, Exhaustion: config.ExhaustWait}
	pools := []*snat.Pool{p}
	now := int64(1)
	b.ReportAllocs()
	for b.Loop() {
		got, _ := snat.Pick(pools, &req, now)
		got.Pool.Release(got.Port, now, snat.Record{Until: 1e12, NextSeq: 2, LastTS: 3, HasTS: true})
	}
}
