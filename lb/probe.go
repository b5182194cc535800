package lb

import (
	"time"

	"tslb/lb/snat"
	"tslb/nat"
)

// Probing tuples of unknown state. After a crash, a tuple that was live
// may still be held by its backend, ESTABLISHED (the client's side is
// gone) or in TIME_WAIT; its ledger record says Unknown, so no SYN may use
// it until the backend's time_wait has passed. The owning worker asks the
// backend instead: it sends a bare ACK from the tuple with arbitrary
// numbers. A backend with no socket for it answers with an RST (RFC 9293
// §3.10.7.1: "If the connection does not exist (CLOSED), then a reset is
// sent"); a backend holding it answers with an ACK carrying its rcv_nxt
// (an ESTABLISHED socket's answer to an unacceptable segment, RFC 9293
// §3.10.7.4 and RFC 5961 §4; TIME_WAIT's in tcp_timewait_state_process),
// and tslb then resets the connection with seq = that ack, which every
// state accepts (with net.ipv4.tcp_rfc1337=0, the default, TIME_WAIT
// too). Either way the tuple is free at once. A backend that never
// answers leaves the tuple in quarantine until Until.

// probe is one tuple to probe.
type probe struct {
	pool *snat.Pool
	port uint16
	sent int   // probes sent so far
	next int64 // unix ns of the next one
}

// probeStart is how long after start the first probes go out.
const probeStart = 500 * time.Millisecond

// probeDelays are the waits before the 2nd and 3rd probes (a lost probe
// or answer); after the 3rd the tuple waits out its quarantine.
var probeDelays = [...]time.Duration{time.Second, 2 * time.Second}

// probeKey is the key of the backend's answer (backend -> SNAT:port).
func (pr *probe) key() flowKey {
	return flowKey{nat.AddrFrom(pr.pool.Backend.Addr()), pr.pool.SNAT, pr.pool.Backend.Port(), pr.port}
}

// runProbes sends the probes that are due.
func (w *worker) runProbes() {
	if w.probeIdx == nil {
		w.probeIdx = make(map[flowKey]*probe, len(w.probes))
		for i := range w.probes {
			pr := &w.probes[i]
			w.probeIdx[pr.key()] = pr
		}
	}
	for k, pr := range w.probeIdx {
		if w.now < pr.next {
			continue
		}
		if pr.sent > len(probeDelays) {
			delete(w.probeIdx, k) // no answer: quarantine until Until
			continue
		}
		be := pr.pool.Backend
		l, hop := w.sh.route(k.src)
		if l == nil {
			delete(w.probeIdx, k)
			continue
		}
		// Arbitrary numbers: no connection can be expecting them.
		seq, ack := uint32(mix64(w.sh.seed^uint64(pr.port))), uint32(mix64(uint64(w.now)))
		w.sendTCP(l, hop, pr.pool.SNAT, k.src, pr.port, be.Port(), seq, ack, nat.TCPFlagACK)
		w.c.probesSent.Add(1)
		if pr.sent < len(probeDelays) {
			pr.next = w.now + int64(probeDelays[pr.sent])
		} else {
			pr.next = w.now + int64(probeDelays[len(probeDelays)-1])
		}
		pr.sent++
	}
	if len(w.probeIdx) == 0 {
		w.probes = nil
	}
}

// probeAnswer handles a backend segment that matched no flow: if it
// answers a probe, the tuple is freed (an RST: the backend holds nothing;
// an ACK: tslb resets the backend's connection first). It reports whether
// the segment was a probe's answer.
func (w *worker) probeAnswer(k flowKey) bool {
	pr := w.probeIdx[k]
	if pr == nil {
		return false
	}
	p := &w.pkt
	if p.TCPFlags&nat.TCPFlagRST == 0 {
		if p.TCPFlags&nat.TCPFlagACK == 0 {
			return false
		}
		l, hop := w.sh.route(k.src)
		if l == nil {
			return false
		}
		w.sendTCP(l, hop, k.dst, k.src, k.dport, k.sport, p.Ack, 0, nat.TCPFlagRST)
		w.c.probesReset.Add(1)
	} else {
		w.c.probesFreed.Add(1)
	}
	w.pools.mu.Lock()
	pr.pool.Forget(pr.port)
	w.pools.mu.Unlock()
	delete(w.probeIdx, k)
	return true
}
