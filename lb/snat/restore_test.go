package snat

import "testing"

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
