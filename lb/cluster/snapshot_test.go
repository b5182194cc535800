package cluster

import (
	"math/rand/v2"
	"slices"
	"testing"
)

// instance is one member in a simulated cluster: its snapshot and the
// flows (tuple hashes) its flow table holds.
type instance struct {
	snap  *Snapshot
	flows map[uint64]bool
}

// sim is a cluster whose instances forward frames to each other with
// Decide, as the datapath would.
type sim struct {
	t    *testing.T
	inst map[MemberID]*instance
	// counters of the last deliveries
	verdicts [NumVerdicts]int
}

// deliver sends one client frame from the router to instance at and
// follows the verdicts. It returns the instance that handled it (0 if it
// was dropped) and the number of forwards.
func (s *sim) deliver(at MemberID, hash uint64, syn bool) (MemberID, int) {
	s.t.Helper()
	from := MemberID(0)
	for hops := 0; ; hops++ {
		if hops > 2 {
			s.t.Fatalf("hash %#x: forwarded more than twice", hash)
		}
		in := s.inst[at]
		v, to := in.snap.Decide(hash, syn, in.flows[hash], from)
		s.verdicts[v]++
		switch v {
		case Local:
			if syn {
				in.flows[hash] = true
			}
			if !in.flows[hash] {
				s.t.Fatalf("hash %#x: Local at %d which does not hold it", hash, at)
			}
			return at, hops
		case ForwardOwner, ForwardPrevious:
			if to == at || to == from || s.inst[to] == nil {
				s.t.Fatalf("hash %#x: %v from %d to %d (came from %d)", hash, v, at, to, from)
			}
			from, at = at, to
		default:
			return 0, hops
		}
	}
}

// snapshotOf builds instance self's snapshot by hand: views cur and prev,
// live members, and the members that agree with cur.
func snapshotOf(self MemberID, cur, prev, live, agree []MemberID, m uint64) *Snapshot {
	s := &Snapshot{Self: self, Current: newView(cur, m, 1), Previous: newView(prev, m, 2)}
	s.live = slices.Sorted(slices.Values(live))
	s.agree = slices.Sorted(slices.Values(agree))
	for _, id := range ids(16) {
		s.macs = append(s.macs, memberMAC{id, MAC{2, 0, 0, 0, 0, byte(id)}})
	}
	return s
}

func newSim(t *testing.T, members []MemberID) *sim {
	s := &sim{t: t, inst: map[MemberID]*instance{}}
	for _, id := range members {
		s.inst[id] = &instance{snap: snapshotOf(id, members, members, members, members, 4099), flows: map[uint64]bool{}}
	}
	return s
}

// setViews gives every instance in ids the views cur and prev, with every
// instance in live live and agreeing.
func (s *sim) setViews(cur, prev, live []MemberID) {
	for _, id := range live {
		s.inst[id].snap = snapshotOf(id, cur, prev, live, live, 4099)
	}
}

// TestDecideFlowsSurviveDrain: with 3 members, 3000 flows opened through
// random instances; member 3 drains. Every flow, 3's included, still
// reaches the instance that holds it from any entry point, and new flows
// avoid 3.
func TestDecideFlowsSurviveDrain(t *testing.T) {
	all := []MemberID{1, 2, 3}
	s := newSim(t, all)
	r := rand.New(rand.NewPCG(3, 4))
	owner := map[uint64]MemberID{}
	for range 3000 {
		h := r.Uint64()
		at, _ := s.deliver(MemberID(1+r.IntN(3)), h, true)
		if at == 0 {
			t.Fatal("SYN dropped")
		}
		owner[h] = at
	}
	for h, o := range owner {
		if got, hops := s.deliver(MemberID(1+r.IntN(3)), h, false); got != o || hops > 1 {
			t.Fatalf("before the change: flow of %d reached %d in %d hops", o, got, hops)
		}
	}
	s.setViews([]MemberID{1, 2}, all, all) // 3 drains
	second := 0
	for h, o := range owner {
		for at := MemberID(1); at <= 3; at++ {
			got, hops := s.deliver(at, h, false)
			if got != o {
				t.Fatalf("after the drain: flow of %d (hash %#x) entering at %d reached %d", o, h, at, got)
			}
			if hops == 2 {
				second++
			}
		}
	}
	if second == 0 {
		t.Errorf("no flow needed the second chance: the test proves nothing")
	}
	for range 1000 {
		if at, _ := s.deliver(MemberID(1+r.IntN(3)), r.Uint64(), true); at == 3 || at == 0 {
			t.Fatalf("a new flow went to %d", at)
		}
	}
}

// TestDecideDeath: member 3 dies. Flows of 1 and 2 still reach them; 3's
// are dropped as not_held, never sent to 3.
func TestDecideDeath(t *testing.T) {
	all := []MemberID{1, 2, 3}
	s := newSim(t, all)
	r := rand.New(rand.NewPCG(5, 6))
	owner := map[uint64]MemberID{}
	for range 3000 {
		h := r.Uint64()
		at, _ := s.deliver(MemberID(1+r.IntN(3)), h, true)
		owner[h] = at
	}
	delete(s.inst, 3)
	s.setViews([]MemberID{1, 2}, all, []MemberID{1, 2})
	lost := 0
	for h, o := range owner {
		got, _ := s.deliver(MemberID(1+r.IntN(2)), h, false)
		switch {
		case o == 3 && got != 0:
			t.Fatalf("a dead member's flow reached %d", got)
		case o == 3:
			lost++
		case got != o:
			t.Fatalf("flow of %d reached %d after 3 died", o, got)
		}
	}
	if lost == 0 || s.verdicts[DropNotHeld] != lost {
		t.Errorf("lost %d flows, not_held %d", lost, s.verdicts[DropNotHeld])
	}
}

// TestDecideJoin: a fourth member joins; flows whose slots it took reach
// their old owner through the second chance, new flows reach it.
func TestDecideJoin(t *testing.T) {
	three := []MemberID{1, 2, 3}
	four := []MemberID{1, 2, 3, 4}
	s := newSim(t, three)
	s.inst[4] = &instance{flows: map[uint64]bool{}}
	s.setViews(three, three, four) // 4 is live but not in the views yet (agreement aside)
	r := rand.New(rand.NewPCG(7, 8))
	owner := map[uint64]MemberID{}
	for range 3000 {
		h := r.Uint64()
		at, _ := s.deliver(MemberID(1+r.IntN(3)), h, true)
		owner[h] = at
	}
	s.setViews(four, three, four)
	for h, o := range owner {
		if got, _ := s.deliver(MemberID(1+r.IntN(4)), h, false); got != o {
			t.Fatalf("flow of %d reached %d after a join", o, got)
		}
	}
	n4 := 0
	for range 2000 {
		if at, _ := s.deliver(MemberID(1+r.IntN(4)), r.Uint64(), true); at == 4 {
			n4++
		}
	}
	if n4 < 400 || n4 > 600 {
		t.Errorf("the new member got %d of 2000 new flows", n4)
	}
}

// TestDecideInconsistentViewsBounded: whatever views the instances hold,
// as long as agreement reflects them, a frame crosses the segment at most
// twice and never goes back to its sender (sim.deliver fails otherwise).
func TestDecideInconsistentViewsBounded(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 10))
	all := []MemberID{1, 2, 3, 4}
	subset := func() []MemberID {
		var out []MemberID
		for _, id := range all {
			if r.IntN(3) > 0 {
				out = append(out, id)
			}
		}
		return out
	}
	for round := range 200 {
		s := newSim(t, all)
		cur := map[MemberID][]MemberID{}
		for _, id := range all {
			cur[id] = subset()
		}
		for _, id := range all {
			var agree []MemberID
			for _, o := range all {
				if slices.Equal(cur[o], cur[id]) {
					agree = append(agree, o)
				}
			}
			s.inst[id].snap = snapshotOf(id, cur[id], subset(), all, agree, 1009)
		}
		for range 50 {
			h := r.Uint64()
			if r.IntN(2) == 0 {
				s.inst[MemberID(1+r.IntN(4))].flows[h] = true
			}
			s.deliver(MemberID(1+r.IntN(4)), h, r.IntN(4) == 0)
		}
		_ = round
	}
}

func TestDecideNoOwner(t *testing.T) {
	s := snapshotOf(1, nil, []MemberID{1, 2}, []MemberID{1, 2}, []MemberID{1}, 1009)
	if v, _ := s.Decide(5, true, false, 0); v != DropNoOwner {
		t.Errorf("empty current view: %v", v)
	}
	if v, _ := s.Decide(5, false, true, 0); v != Local {
		t.Errorf("held flow with an empty view: %v", v)
	}
	if Verdict(200).String() == "" || DropDisagree.String() != "views_disagree" {
		t.Errorf("Verdict strings")
	}
}

func TestDecideDisagree(t *testing.T) {
	// 1 and 2 hold views {1,2}; 2 agrees with 1 only if 1 says so.
	cur := []MemberID{1, 2}
	prev := []MemberID{1, 2, 3}
	var h uint64
	v12 := newView(cur, 1009, 1)
	v123 := newView(prev, 1009, 1)
	for h = 0; v12.Owner(h) != 1 || v123.Owner(h) != 3; h++ {
	}
	agreeing := snapshotOf(1, cur, prev, []MemberID{1, 2, 3}, []MemberID{1, 2}, 1009)
	if v, to := agreeing.Decide(h, false, false, 2); v != ForwardPrevious || to != 3 {
		t.Errorf("forwarded by an agreeing member: %v %d", v, to)
	}
	disagreeing := snapshotOf(1, cur, prev, []MemberID{1, 2, 3}, []MemberID{1}, 1009)
	if v, _ := disagreeing.Decide(h, false, false, 2); v != DropDisagree {
		t.Errorf("forwarded by a disagreeing member: %v", v)
	}
	agreeAll := snapshotOf(1, cur, prev, []MemberID{1, 2, 3}, []MemberID{1, 2, 3}, 1009)
	if v, _ := agreeAll.Decide(h, false, false, 3); v != DropNotHeld {
		t.Errorf("the previous owner sent it to us: %v, want not_held (never back)", v)
	}
	if v, _ := agreeing.Decide(h, true, false, 2); v != Local {
		t.Errorf("forwarded SYN: %v", v)
	}
}

func TestSnapshotLookups(t *testing.T) {
	s := snapshotOf(1, []MemberID{1, 2}, []MemberID{1, 2}, []MemberID{1, 2}, []MemberID{1, 2}, 1009)
	if mac, ok := s.MAC(2); !ok || mac != (MAC{2, 0, 0, 0, 0, 2}) {
		t.Errorf("MAC(2) = %v %v", mac, ok)
	}
	if _, ok := s.MAC(99); ok {
		t.Errorf("MAC(99) found")
	}
	if s.MemberByMAC(MAC{2, 0, 0, 0, 0, 2}) != 2 || s.MemberByMAC(MAC{9}) != 0 {
		t.Errorf("MemberByMAC")
	}
	if !slices.Equal(s.LiveMembers(), []MemberID{1, 2}) {
		t.Errorf("LiveMembers %v", s.LiveMembers())
	}
}

func TestDecideAllocs(t *testing.T) {
	s := snapshotOf(1, []MemberID{1, 2}, []MemberID{1, 2, 3}, []MemberID{1, 2, 3}, []MemberID{1, 2}, 4099)
	h := uint64(0)
	if n := testing.AllocsPerRun(1000, func() {
		h++
		s.Decide(h, h&1 == 0, false, MemberID(h%3))
		s.MemberByMAC(MAC{2, 0, 0, 0, 0, 2})
	}); n != 0 {
		t.Errorf("Decide: %v allocs", n)
	}
}

func BenchmarkDecide(b *testing.B) {
	s := snapshotOf(1, []MemberID{1, 2}, []MemberID{1, 2, 3}, []MemberID{1, 2, 3}, []MemberID{1, 2}, DefaultTableSize)
	b.ReportAllocs()
	for i := range b.N {
		s.Decide(TupleHash([4]byte{198, 18, 2, 11}, uint16(i), [4]byte{198, 18, 0, 100}, 80), false, false, 0)
	}
}
