package nat_test

import (
	"testing"

	"tslb/nat"
)

func TestPortPoolUniqueAndExhaustion(t *testing.T) {
	for _, r := range [][2]uint16{{1024, 1024}, {1024, 1087}, {1024, 1088}, {40000, 40999}, {0, 65535}, {65500, 65535}} {
		p := nat.NewPortPool(r[0], r[1], 42)
		size := int(r[1]) - int(r[0]) + 1
		if p.Size() != size {
			t.Fatalf("%v: Size = %d, want %d", r, p.Size(), size)
		}
		seen := make(map[uint16]bool, size)
		for i := range size {
			port, ok := p.Alloc()
			if !ok {
				t.Fatalf("%v: Alloc %d failed with %d in use", r, i, p.InUse())
			}
			if port < r[0] || port > r[1] {
				t.Fatalf("%v: port %d out of range", r, port)
			}
			if seen[port] {
				t.Fatalf("%v: port %d returned twice", r, port)
			}
			seen[port] = true
		}
		if _, ok := p.Alloc(); ok {
			t.Fatalf("%v: Alloc succeeded on a full pool", r)
		}
		if p.InUse() != size {
			t.Fatalf("%v: InUse = %d", r, p.InUse())
		}
		// Free one and get exactly it back.
		mid := r[0] + uint16(size/2)
		p.Free(mid)
		if port, ok := p.Alloc(); !ok || port != mid {
			t.Fatalf("%v: after Free(%d) Alloc = %d, %v", r, mid, port, ok)
		}
	}
}

func TestPortPoolReserveFree(t *testing.T) {
	p := nat.NewPortPool(100, 199, 1)
	if !p.Reserve(150) || p.Reserve(150) || p.InUse() != 1 {
		t.Fatal("Reserve of a free port, then of a taken one")
	}
	if p.Reserve(99) || p.Reserve(200) {
		t.Error("Reserve out of range succeeded")
	}
	p.Free(99)  // out of range: no-op
	p.Free(151) // free: no-op
	if p.InUse() != 1 {
		t.Errorf("InUse = %d after no-op frees", p.InUse())
	}
	for range 99 {
		port, ok := p.Alloc()
		if !ok || port == 150 {
			t.Fatalf("Alloc = %d, %v", port, ok)
		}
	}
	if _, ok := p.Alloc(); ok {
		t.Error("Alloc succeeded with everything taken")
	}
	p.Free(150)
	p.Free(150)
	if p.InUse() != 99 {
		t.Errorf("double Free: InUse = %d", p.InUse())
	}
	empty := nat.NewPortPool(10, 9, 1)
	if _, ok := empty.Alloc(); ok || empty.Size() != 0 || empty.Reserve(10) {
		t.Error("empty pool")
	}
}

// TestPortPoolSpread allocates and frees repeatedly at several fill levels
// and bounds a chi-squared statistic of the chosen ports, so choices neither
// hot-spot nor follow the cursor.
func TestPortPoolSpread(t *testing.T) {
	const n, rounds = 256, 256 * 200
	for _, fill := range []int{0, n / 2} {
		p := nat.NewPortPool(1000, 1000+n-1, 7)
		for range fill { // keep half the pool busy with random ports
			p.Alloc()
		}
		counts := make([]int, n)
		for range rounds {
			port, ok := p.Alloc()
			if !ok {
				t.Fatal("Alloc failed")
			}
			counts[port-1000]++
			p.Free(port)
		}
		free := 0
		var chi float64
		exp := float64(rounds) / float64(n-fill)
		for _, c := range counts {
			if c > 0 {
				free++
			}
		}
		for _, c := range counts {
			if c == 0 {
				continue
			}
			d := float64(c) - exp
			chi += d * d / exp
		}
		t.Logf("fill %d: chi-squared %.0f over %d free ports", fill, chi, free)
		if free != n-fill {
			t.Errorf("fill %d: %d ports used, want %d", fill, free, n-fill)
		}
		// Empty: dof 255, mean 255, sd ~22.6, so 400 is > 6 sd. Half full:
		// dof 127; the few allocations that fall back to the scan add a
		// bias (about 450 observed), while a plain "random start, first
		// free" search gives ~78000.
		if limit := []float64{400, 1000}[min(fill, 1)]; chi > limit {
			t.Errorf("fill %d: chi-squared %.0f > %.0f", fill, chi, limit)
		}
	}
}

func TestPortPoolSeedsDiffer(t *testing.T) {
	a, b := nat.NewPortPool(1024, 65535, 1), nat.NewPortPool(1024, 65535, 2)
	same := 0
	for range 100 {
		x, _ := a.Alloc()
		y, _ := b.Alloc()
		if x == y {
			same++
		}
	}
	if same > 5 {
		t.Errorf("%d of 100 ports equal across seeds", same)
	}
}

func TestPortPoolNoAllocs(t *testing.T) {
	p := nat.NewPortPool(1024, 65535, 3)
	n := testing.AllocsPerRun(1000, func() {
		port, _ := p.Alloc()
		p.Free(port)
		p.Reserve(2000)
		p.Free(2000)
	})
	if n != 0 {
		t.Errorf("allocs = %v", n)
	}
}
