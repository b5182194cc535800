package lb

import (
	"sync"

	"tslb/config"
	"tslb/nat"
)

// This file holds tslb's answer to the TIME_WAIT problem (see README,
// "TIME_WAIT safety"): which backend tuple a new flow gets, and what the
// SYN must carry so that a backend still holding that tuple in TIME_WAIT
// accepts it. The kernel's rule (net/ipv4/tcp_minisocks.c,
// tcp_timewait_state_process): a SYN is accepted iff PAWS does not reject
// it (TSval >= ts_recent when both sides used timestamps) and its seq is
// after the old rcv_nxt or its TSval is newer than ts_recent.

// reuseCandidates bounds the TIME_WAIT tuples pickTuple examines per pool
// for one SYN.
const reuseCandidates = 4

// tuple is the outcome of pickTuple.
type tuple struct {
	pool  *snatPool
	port  uint16
	kind  int          // alloc* kind
	rec   nat.TWRecord // the ledger record of a reused tuple (to put back if the flow is not made)
	isn   uint32       // seq of the SYN toward the backend
	tsval uint32       // TSval of the SYN toward the backend (rewrite mode)
}

// pickTuple chooses the backend tuple of a new flow to be, in this order:
// a fresh tuple on any SNAT address; a tuple in TIME_WAIT whose reuse is
// proven safe; else the service's exhaustion policy (reuse: the oldest
// TIME_WAIT tuple anyway; wait; reject).
func (w *worker) pickTuple(svc *service, be *backend, h uint64, now int64) (tuple, verdict) {
	b, p := w.b, &w.pkt
	pools := w.s.snat.poolsFor(be.ap, h, w.pools[:0])
	for _, pl := range pools {
		if port, ok := pl.allocFresh(now); ok {
			return tuple{pool: pl, port: port, kind: allocFresh, isn: p.Seq, tsval: pl.clock.At(now)}, verdictOK
		}
	}
	// Every tuple is live or in TIME_WAIT: look at up to reuseCandidates
	// tuples per pool, oldest TIME_WAIT first, for one whose reuse is
	// provably safe. Unsafe candidates go back to the end of the ring, so
	// a held SYN retried later (wait policy) meets other tuples.
	var forced tuple
	haveForced := false
	var unsafe [reuseCandidates]tuple
	for _, pl := range pools {
		nu := 0
		var found *tuple
		for c := 0; c < reuseCandidates; c++ {
			port, kind, rec, ok := pl.alloc(now)
			if !ok {
				break // every tuple is held by a live flow
			}
			if kind == nat.AllocFresh { // freed since the first pass
				found = &tuple{pool: pl, port: port, kind: allocFresh, isn: p.Seq, tsval: pl.clock.At(now)}
				break
			}
			t := tuple{pool: pl, port: port, rec: rec, isn: p.Seq, tsval: pl.clock.At(now)}
			if svc.reuseSafely(&t, &w.opts) {
				found = &t
				break
			}
			unsafe[nu] = t
			nu++
		}
		for i := 0; i < nu; i++ {
			if !haveForced && found == nil {
				forced, haveForced = unsafe[i], true
				continue
			}
			pl.unalloc(unsafe[i].port, now, unsafe[i].rec)
		}
		if found != nil {
			if haveForced {
				forced.pool.unalloc(forced.port, now, forced.rec)
			}
			return *found, verdictOK
		}
	}
	// No tuple can be used safely (or none is free at all).
	switch {
	case svc.exhaustion == config.ExhaustReuse && haveForced:
		svc.exhausted[exhaustReused].Inc()
		forced.kind = allocForced
		return forced, verdictOK
	case haveForced:
		forced.pool.unalloc(forced.port, now, forced.rec)
	}
	if !w.retrying {
		b.m.drop(dropSNATExhausted)
	}
	if svc.exhaustion == config.ExhaustWait {
		return tuple{}, verdictWait
	}
	svc.refused[refusedSNAT].Inc()
	svc.exhausted[exhaustRejected].Inc()
	w.resetClient()
	return tuple{}, verdictRefused
}

// reuseSafely decides whether t, a tuple the backend may still hold in
// TIME_WAIT (record t.rec), can carry this SYN so that the backend must
// accept it, and sets t's ISN, TSval and kind accordingly.
func (s *service) reuseSafely(t *tuple, syn *nat.TCPOptions) bool {
	rec := t.rec
	// Strategy B: an ISN past everything sent on the old connection,
	// as the kernel's own tw_snd_nxt + 65535 + 2 (tcp_twsk_unique).
	isnOK := !s.noISN
	if isnOK {
		t.isn = rec.NextSeq + 65537
	}
	switch s.ts {
	case config.TSRewrite:
		// Strategy C: tslb's TSval, newer than any sent on the tuple.
		if nat.SeqAfter(rec.LastTS+1, t.tsval) {
			t.tsval = rec.LastTS + 1
		}
		if rec.HasTS {
			t.kind = allocEarlyReuseTS
			return true
		}
		// The old connection had no timestamps (backend without them):
		// the kernel looks at the sequence number only.
		t.kind = allocEarlyReuseISN
		return isnOK
	case config.TSPassthrough:
		if syn.HasTS && rec.HasTS {
			switch {
			case nat.SeqAfter(syn.TSVal, rec.LastTS): // newer TSval: accepted by TS
				t.kind = allocEarlyReuseTS
				return true
			case syn.TSVal == rec.LastTS: // PAWS passes, seq must be after
				t.kind = allocEarlyReuseISN
				return isnOK
			default: // PAWS rejects whatever the seq
				return false
			}
		}
	}
	// No timestamp reaches the backend on this SYN (strip, or a client
	// without them), or the old connection had none: PAWS is not
	// evaluated and the seq decides.
	t.kind = allocEarlyReuseISN
	return isnOK
}

// ledgerRecord is what the backend keeps of f's tuple after f ends. Until
// is 0 when the backend keeps nothing: the client closed first (the client
// holds the TIME_WAIT), an RST ended it, or the backend never answered.
func (b *Balancer) ledgerRecord(f *flow) nat.TWRecord {
	t, x := &f.tr, &f.x
	rec := nat.TWRecord{NextSeq: x.NextSeq, LastTS: x.LastTS, HasTS: x.SentTS && x.BackendUsedTS}
	switch {
	case t.ResetBy != nat.SideNone:
	case t.State < nat.StateSynRecv:
	case f.backendFIN && !f.backendTW:
		// The backend sent its FIN after acknowledging the client's: it
		// went CLOSE_WAIT -> LAST_ACK -> CLOSED and keeps nothing.
	default:
		// The backend closed first (or both at once: simultaneous close
		// leaves both ends in TIME_WAIT), or the flow timed out with the
		// backend's state unknown: assume it holds the tuple for its
		// whole TIME_WAIT from the last packet seen.
		rec.Until = f.last.Load() + f.svc.timeWaitNs
	}
	return rec
}

// noteBackendFIN records, at the backend's first FIN, whether it will end
// in TIME_WAIT: it does unless it had already acknowledged the client's
// FIN (ackClient is the FIN segment's ack, in the client's sequence
// space). Called with f.mu held, after the tracker saw the segment.
func (f *flow) noteBackendFIN(ackClient uint32, hasACK bool) {
	if f.backendFIN {
		return
	}
	f.backendFIN = true
	t := &f.tr
	clientFinAcked := t.FinSent[nat.SideClient] && hasACK && !nat.SeqBefore(ackClient, t.FinSeq[nat.SideClient]+1)
	f.backendTW = !clientFinAcked
}

// Exhaustion outcomes, as metric labels.
const (
	exhaustWaited      = iota // a SYN was held by the wait policy
	exhaustWaitServed         // a held SYN got a tuple
	exhaustWaitTimeout        // a held SYN timed out and the client was reset
	exhaustRejected           // reject policy: the client was reset
	exhaustReused             // reuse policy: a TIME_WAIT tuple was taken without guarantee
	numExhaust
)

var exhaustNames = [numExhaust]string{"waited", "wait_served", "wait_timeout", "rejected", "reused"}

// waitQueue holds SYNs of the wait policy until a tuple frees up. It is
// bounded; housekeeping retries them every 10 ms.
type waitQueue struct {
	mu    sync.Mutex
	items []waitItem
	keys  map[flowKey]bool
}

type waitItem struct {
	frame []byte
	link  *link
	since int64
	svc   *service
	key   flowKey
}

const waitQueueMax = 4096

// wait holds the SYN in w.buf[:n]. A retransmitted SYN of a held one is
// dropped (the first copy is retried already).
func (w *worker) wait(svc *service, k flowKey, n int) {
	if w.retrying {
		w.stillWaiting = true
		return
	}
	q := &w.b.waitq
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.keys[k] || len(q.items) >= waitQueueMax {
		return
	}
	q.keys[k] = true
	q.items = append(q.items, waitItem{frame: append([]byte(nil), w.buf[:n]...), link: w.in, since: w.b.now.Load(), svc: svc, key: k})
	svc.exhausted[exhaustWaited].Inc()
}

// retryWaiting re-runs every held SYN through the datapath on hk, a
// housekeeping worker: served ones leave the queue; ones past the
// service's exhaustion_wait are answered with an RST.
func (b *Balancer) retryWaiting(hk *worker, now int64) {
	q := &b.waitq
	q.mu.Lock()
	items := q.items
	q.items = nil
	q.mu.Unlock()
	if len(items) == 0 {
		return
	}
	var keep []waitItem
	for _, it := range items {
		n := copy(hk.buf, it.frame)
		hk.in = it.link
		hk.retrying, hk.stillWaiting = true, false
		hk.handle(n)
		hk.retrying = false
		switch {
		case !hk.stillWaiting:
			it.svc.exhausted[exhaustWaitServed].Inc()
		case now-it.since > it.svc.exhaustWaitNs:
			it.svc.exhausted[exhaustWaitTimeout].Inc()
			it.svc.refused[refusedSNAT].Inc()
			hk.resetClient()
		default:
			keep = append(keep, it)
			continue
		}
		q.mu.Lock()
		delete(q.keys, it.key)
		q.mu.Unlock()
	}
	q.mu.Lock()
	q.items = append(keep, q.items...)
	q.mu.Unlock()
}

// resetClient answers the client SYN decoded in w.pkt with an RST|ACK from
// the VIP, so the client fails at once instead of retransmitting.
func (w *worker) resetClient() {
	p := &w.pkt
	l, hop := w.b.route(p.Src)
	if l == nil {
		return
	}
	w.sendTCP(l, hop, p.Dst, p.Src, p.DstPort, p.SrcPort, 0, p.Seq+1, nat.TCPFlagRST|nat.TCPFlagACK)
}

// sendTCP builds a bare TCP segment in w.scratch and transmits it.
func (w *worker) sendTCP(l *link, hop, src, dst nat.Addr4, sport, dport uint16, seq, ack uint32, flags uint8) {
	clear(w.scratch[:nat.VirtioNetHdrLen])
	n := nat.BuildTCP(w.scratch[nat.VirtioNetHdrLen:], l.mac, nat.MAC{}, src, dst, sport, dport, seq, ack, flags, 0)
	w.transmitScratch(l, hop, nat.VirtioNetHdrLen+n)
}
