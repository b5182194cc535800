package snat

import (
	"fmt"
	"maps"
	"testing"
)

func TestTWPoolRestoreAndRecords(t *testing.T) {
	const now = int64(1_000_000_000)
	p := NewPool(1000, 1009, 0, 1, 1)
	recs := map[uint16]Record{
		1003: {Until: now + 10, NextSeq: 0xfffffff0, LastTS: 7, HasTS: true},
		1007: {Until: now + 20, NextSeq: 5, LastTS: 0xffffffff},
	}
	if p.Restore(1003, now, recs[1003]) != true || p.Restore(1007, now, recs[1007]) != true {
		t.Fatal("Restore of free ports failed")
	}
	if p.Restore(1003, now, recs[1003]) {
		t.Error("Restore of a port already in TIME_WAIT succeeded")
	}
	if p.Restore(999, now, recs[1003]) || p.Restore(1001, now, Record{Until: now}) {
		t.Error("Restore out of range or of an ended record succeeded")
	}
	if p.Entered() != 0 {
		t.Errorf("Entered = %d after restores, want 0", p.Entered())
	}
	if u, tw, f := p.Counts(now); u != 0 || tw != 2 || f != 8 {
		t.Errorf("Counts = %d %d %d, want 0 2 8", u, tw, f)
	}
	var got []uint16
	p.TimeWaitRecords(now, func(port uint16, rec Record) {
		got = append(got, port)
		if rec != recs[port] {
			t.Errorf("port %d: record %+v, want %+v", port, rec, recs[port])
		}
	})
	if len(got) != 2 || got[0] != 1003 || got[1] != 1007 {
		t.Errorf("TimeWaitRecords visited %v, want [1003 1007] oldest first", got)
	}
	// Fresh allocations never hand out a restored tuple.
	for i := 0; i < 8; i++ {
		port, ok := p.AllocFresh(now)
		if !ok || port == 1003 || port == 1007 {
			t.Fatalf("AllocFresh = %d, %v", port, ok)
		}
	}
	if _, ok := p.AllocFresh(now); ok {
		t.Error("AllocFresh found a port while the rest are in TIME_WAIT")
	}
	// After the first record ends, only the second is listed.
	got = got[:0]
	p.TimeWaitRecords(now+15, func(port uint16, rec Record) { got = append(got, port) })
	if len(got) != 1 || got[0] != 1007 {
		t.Errorf("after expiry TimeWaitRecords visited %v, want [1007]", got)
	}
}

func TestTWPoolUnallocRotates(t *testing.T) {
	const now = int64(1_000_000_000)
	p := NewPool(2000, 2002, 0, 1, 1)
	var ports []uint16
	for range 3 {
		port, ok := p.AllocFresh(now)
		if !ok {
			t.Fatal("AllocFresh failed")
		}
		ports = append(ports, port)
	}
	for i, port := range ports {
		p.Release(port, now, Record{Until: now + 100, LastTS: uint32(i)})
	}
	entered := p.Entered()
	// Each rejected candidate goes to the back: three Allocs see three
	// different tuples, in release order, then the first again.
	for i := range 4 {
		port, reused, rec, ok := p.Alloc(now)
		if !ok || !reused || port != ports[i%3] || rec.LastTS != uint32(i%3) {
			t.Fatalf("Alloc %d = %d %v %+v %v, want port %d from TIME_WAIT", i, port, reused, rec, ok, ports[i%3])
		}
		p.Unalloc(port, now, rec)
	}
	if p.Entered() != entered {
		t.Errorf("Entered moved from %d to %d on Unalloc", entered, p.Entered())
	}
	if u, tw, f := p.Counts(now); u != 0 || tw != 3 || f != 0 {
		t.Errorf("Counts = %d %d %d, want 0 3 0", u, tw, f)
	}
}

// Forget frees a port in TIME_WAIT at once and leaves a stale ring entry
// that must never free the port again when it is back in TIME_WAIT with a
// later Until, however often that happens (popped at expiry, or dropped
// when the ring fills up and is compacted).
func TestForgetStaleEntries(t *testing.T) {
	for _, check := range []bool{true, false} { // false: entries pile up, the ring compacts
		p := NewPool(1000, 1003, 0, 1, 1)
		a, _, _, _ := p.Alloc(0)
		for range 3 {
			p.Alloc(0) // the other three stay live
		}
		p.Release(a, 0, Record{Until: 1000})
		for round := int64(2); round <= 20; round++ {
			if !p.Forget(a) || p.Forget(a) {
				t.Fatalf("round %d: Forget(%d) did not free exactly once", round, a)
			}
			if got, ok := p.AllocFresh(0); !ok || got != a {
				t.Fatalf("round %d: AllocFresh = %d %v, want the forgotten %d", round, got, ok, a)
			}
			p.Release(a, 0, Record{Until: 1000 * round, NextSeq: uint32(round)})
			if !check {
				continue
			}
			// Stale entries of earlier rounds end before now: popping them
			// must not free a.
			if _, tw, _ := p.Counts(1000*round - 1); tw != 1 {
				t.Fatalf("round %d: %d in TIME_WAIT just before its Until, want 1", round, tw)
			}
		}
		if rec, ok := p.Record(a); !ok || rec.NextSeq != 20 {
			t.Fatalf("check=%v: record %+v %v, want the last round's", check, rec, ok)
		}
		if _, tw, _ := p.Counts(19999); tw != 1 {
			t.Fatalf("check=%v: freed before its Until", check)
		}
		if _, tw, free := p.Counts(20000); tw != 0 || free != 1 {
			t.Fatalf("check=%v: at its Until: %d in TIME_WAIT, %d free", check, tw, free)
		}
	}
}

// A pool in caller memory reads back through ScanMem, as after a crash:
// live ports as live, TIME_WAIT ports with their records (Unknown kept).
func TestPoolInMemory(t *testing.T) {
	first, size := PortCount(20000, 20099, 1, 3)
	mem := make([]byte, MemSize(size)+8)[8:] // any 8-byte aligned slice
	p := NewPoolIn(mem, 20000, 20099, 1, 3, 7)
	if p.Size() != size || p.First() != first || p.Stride() != 3 {
		t.Fatalf("pool %d ports from %d stride %d, want %d from %d stride 3", p.Size(), p.First(), p.Stride(), size, first)
	}
	live, _ := p.AllocFresh(0)
	tw, _ := p.AllocFresh(0)
	unk, _ := p.AllocFresh(0)
	p.Release(tw, 0, Record{Until: 99, NextSeq: 5, LastTS: 6, HasTS: true})
	p.Release(unk, 0, Record{Until: 98, Unknown: true})
	got := map[uint16]string{}
	ScanMem(mem, size, func(i int, st PortState, rec Record) {
		port := first + uint16(i*3)
		switch st {
		case PortLive:
			got[port] = "live"
		case PortTimeWait:
			got[port] = fmt.Sprintf("tw %+v", rec)
		}
	})
	want := map[uint16]string{
		live: "live",
		tw:   fmt.Sprintf("tw %+v", Record{Until: 99, NextSeq: 5, LastTS: 6, HasTS: true}),
		unk:  fmt.Sprintf("tw %+v", Record{Until: 98, Unknown: true}),
	}
	if !maps.Equal(got, want) {
		t.Errorf("ScanMem = %v, want %v", got, want)
	}
	// An Unknown tuple is never a safe reuse.
	req := Request{Mode: "rewrite", ISNTranslation: true, Exhaustion: "reject"}
	q := NewPool(30000, 30000, 0, 1, 1)
	port, _, _, _ := q.Alloc(0)
	q.Release(port, 0, Record{Until: 1e12, HasTS: true, Unknown: true})
	if _, v := Pick([]*Pool{q}, &req, 1); v != Reject {
		t.Errorf("Pick over an Unknown tuple = %v, want Reject", v)
	}
}
