package snat

// Clock is tslb's own timestamp clock toward backends: 1 tick per
// millisecond from a base, monotonic. now is unix ns passed in.
//
// RFC 7323 §5.4 allows any clock between 1 ms and 1 s per tick; 1 ms is
// what Linux uses. The value is a serial number (RFC 1982): it wraps at
// 2^32 (every 49.7 days) and is compared with SeqAfter/SeqBefore. For a
// now before start, At returns base, so the clock never runs backwards
// as long as the caller's now does not. The zero value starts at unix
// time 0 with base 0.
type Clock struct {
	start int64  // unix ns of tick 0
	base  uint32 // the value at start
}

// NewClock returns a clock whose value is base at unix time start (ns).
// Choose base so that the clock never goes backwards across restarts or
// failover, e.g. from a persisted value or the wall clock in ms.
func NewClock(start int64, base uint32) Clock {
	return Clock{start: start, base: base}
}

// At returns the clock value at now (unix ns): base plus the whole
// milliseconds since start, modulo 2^32.
func (c Clock) At(now int64) uint32 {
	if now <= c.start {
		return c.base
	}
	return c.base + uint32(uint64(now-c.start)/1e6)
}
