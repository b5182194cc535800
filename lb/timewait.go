package lb

import (
	"tslb/lb/snat"
	"tslb/nat"
)

// How a flow's end feeds the TIME_WAIT ledger (see README, "TIME_WAIT
// safety", and package lb/snat for the choice of a new tuple): when a
// connection finishes, its backend tuple goes back to its pool at once,
// with a ledger record if the backend keeps the tuple in TIME_WAIT.

// ledgerRecord is what the backend keeps of f's tuple after f ends. Until
// is 0 when the backend keeps nothing: the client closed first (the client
// holds the TIME_WAIT), an RST ended it, or the backend never answered.
func ledgerRecord(f *flow) snat.Record {
	t, x := &f.tr, &f.x
	rec := snat.Record{NextSeq: x.NextSeq, LastTS: x.LastTS, HasTS: x.SentTS && x.BackendUsedTS}
	switch {
	case f.noLedger: // tslb reset the backend's half
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
		rec.Until = f.last + f.svc.timeWaitNs
	}
	return rec
}

// noteBackendFIN records, at the backend's first FIN, whether it will end
// in TIME_WAIT: it does unless it had already acknowledged the client's
// FIN (ackClient is the FIN segment's ack, in the client's sequence
// space). Called after the tracker saw the segment.
func (f *flow) noteBackendFIN(ackClient uint32, hasACK bool) {
	if f.backendFIN {
		return
	}
	f.backendFIN = true
	t := &f.tr
	clientFinAcked := t.FinSent[nat.SideClient] && hasACK && !nat.SeqBefore(ackClient, t.FinSeq[nat.SideClient]+1)
	f.backendTW = !clientFinAcked
}

// releaseTuple returns the backend tuple of a finished flow (TIME_WAIT or
// RST) to its pool at once, into the TIME_WAIT ledger if the backend keeps
// it, instead of holding it for the flow's timeout: the ledger, not the
// flow table, decides when the tuple may carry a new SYN. The flow leaves
// the backend side of the table; its client key stays until it times out.
func (w *worker) releaseTuple(f *flow) {
	if f.dead || f.released {
		return
	}
	f.released = true
	w.c.open.Add(-1)
	w.closeHalf(f)
	w.flows.removeKey(f.backendKey(), f)
	w.pools.release(f.pool, f.sport, w.now, ledgerRecord(f))
}

// removeFlow takes f out of the table and returns its SNAT tuple to the
// pool, into the TIME_WAIT ledger if the backend may still hold it.
func (w *worker) removeFlow(f *flow) {
	if f.dead {
		return
	}
	w.closeHalf(f)
	f.dead = true
	w.flows.remove(f)
	w.c.flows.Add(-1)
	w.sh.flowsCount.Add(-1)
	if !f.released {
		f.released = true
		w.c.open.Add(-1)
		w.pools.release(f.pool, f.sport, w.now, ledgerRecord(f))
	}
	f.svc.active.Dec()
	f.be.active.Dec()
	f.be.flows.Add(-1)
	m := w.sh.m
	m.translationEvents(&f.x)
	if f.capt != nil {
		w.writeCapture(f.capt)
	}
	switch {
	case f.tr.ClosedFirst == nat.SideClient:
		m.closedClient.Inc()
	case f.tr.ClosedFirst == nat.SideBackend:
		m.closedBackend.Inc()
	case f.tr.ResetBy != nat.SideNone:
		m.closedReset.Inc()
	}
}

// reap removes the expired flows of a quarter of the flow shards.
func (w *worker) reap() {
	var expired [64]*flow
	for range reapParts / 4 {
		i := w.reapShard
		w.reapShard = (w.reapShard + 1) % reapParts
		list := w.flows.collect(i, expired[:0], w.expired)
		for _, f := range list {
			w.sh.m.flowsExpired[f.state].Inc()
			// A half-open flow that timed out (the backend never
			// answered, or the client never completed): reset the
			// backend's half and free the tuple at once.
			w.resetBackendHalf(f)
			w.removeFlow(f)
		}
		clear(expired[:])
	}
}

func (w *worker) expired(f *flow) bool {
	return w.now-f.last > w.sh.timeouts[f.state].Load()
}
