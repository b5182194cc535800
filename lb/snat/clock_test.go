package snat_test

import (
	"math"
	"testing"

	"tslb/lb/snat"
	"tslb/nat"
)

func TestClock(t *testing.T) {
	const ms = int64(1e6)
	start := int64(1_700_000_000) * 1e9
	tests := []struct {
		name string
		base uint32
		now  int64
		want uint32
	}{
		{"at start", 1000, start, 1000},
		{"before start clamps", 1000, start - 5*ms, 1000},
		{"far before start", 1000, math.MinInt64, 1000},
		{"sub-ms truncates", 1000, start + ms - 1, 1000},
		{"one tick", 1000, start + ms, 1001},
		{"one second", 7, start + 1000*ms, 1007},
		{"wraps at 2^32", math.MaxUint32 - 1, start + 3*ms, 1},
		{"49.7 days wraps fully", 5, start + (1<<32)*ms, 5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := snat.NewClock(start, tt.base).At(tt.now); got != tt.want {
				t.Errorf("At = %d, want %d", got, tt.want)
			}
		})
	}
}

func TestClockMonotonic(t *testing.T) {
	c := snat.NewClock(10e9, math.MaxUint32-500)
	prev := c.At(0)
	for now := int64(0); now < 20e9; now += 123457 {
		v := c.At(now)
		if nat.SeqBefore(v, prev) {
			t.Fatalf("At(%d) = %d went back from %d", now, v, prev)
		}
		if d := v - prev; d > 1 {
			t.Fatalf("At(%d) jumped by %d ticks for a 0.12 ms step", now, d)
		}
		prev = v
	}
	if n := testing.AllocsPerRun(100, func() { _ = c.At(15e9) }); n != 0 {
		t.Errorf("At allocates %v", n)
	}
}
