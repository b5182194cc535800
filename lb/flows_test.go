package lb

import (
	"math/rand/v2"
	"testing"

	"tslb/nat"
)

// TestFlowTableModel checks the open-addressing table against a map over
// random inserts, lookups and deletes, with growth and wrap-around, and a
// tiny key space so probe runs collide and deletions shift entries.
func TestFlowTableModel(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, keys := range []int{8, 300, 5000} {
		ft := newFlowTable(r.Uint64())
		model := map[flowKey]*flow{}
		key := func() flowKey {
			i := r.IntN(keys)
			return flowKey{src: nat.Addr4{198, 18, byte(i >> 8), byte(i)}.Mapped(), dst: nat.Addr4{198, 18, 0, 100}.Mapped(), sport: uint16(i * 7), dport: 80}
		}
		for op := range 200_000 {
			k := key()
			switch r.IntN(3) {
			case 0:
				f := &flow{}
				ft.put(k, f)
				model[k] = f
			case 1:
				if f := model[k]; f != nil {
					ft.removeKey(k, &flow{}) // a different flow: no-op
					ft.removeKey(k, f)
					delete(model, k)
				}
			}
			if got := ft.get(k); got != model[k] {
				t.Fatalf("keys %d op %d: get = %p, want %p", keys, op, got, model[k])
			}
			if ft.n != len(model) {
				t.Fatalf("keys %d op %d: n = %d, want %d", keys, op, ft.n, len(model))
			}
		}
		for k, f := range model {
			if ft.get(k) != f {
				t.Fatalf("keys %d: final get(%v) wrong", keys, k)
			}
		}
		// Every stored entry is reachable and collect visits it once.
		seen := 0
		for part := range reapParts {
			for i := part * len(ft.slots) / reapParts; i < (part+1)*len(ft.slots)/reapParts; i++ {
				if ft.slots[i].tag != 0 {
					seen++
				}
			}
		}
		if seen != len(model) {
			t.Fatalf("keys %d: %d occupied slots, want %d", keys, seen, len(model))
		}
	}
}

func TestFlowTableAllocs(t *testing.T) {
	ft := newFlowTable(1)
	f := &flow{client: nat.Addr4{1, 2, 3, 4}.Mapped(), vip: nat.Addr4{5, 6, 7, 8}.Mapped(), cport: 1, vport: 80}
	ft.insert(f)
	k := f.clientKey()
	if n := testing.AllocsPerRun(1000, func() {
		if ft.get(k) != f {
			t.Fatal("lookup failed")
		}
	}); n != 0 {
		t.Errorf("get allocates %v", n)
	}
}

func BenchmarkFlowTableGet(b *testing.B) {
	ft := newFlowTable(1)
	var keys []flowKey
	for i := range 100_000 {
		f := &flow{client: nat.Addr4{10, byte(i >> 16), byte(i >> 8), byte(i)}.Mapped(), vip: nat.Addr4{5, 6, 7, 8}.Mapped(), cport: uint16(i), vport: 80,
			baddr: nat.Addr4{9, 9, 9, 9}.Mapped(), snat: nat.Addr4{8, 8, 8, 8}.Mapped(), bport: 8080, sport: uint16(i)}
		ft.insert(f)
		keys = append(keys, f.clientKey())
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if ft.get(keys[i]) == nil {
			b.Fatal("missing")
		}
		i++
		if i == len(keys) {
			i = 0
		}
	}
}
