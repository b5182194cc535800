package lb

import (
	"time"

	"tslb/lb/snat"
	"tslb/nat"
)

// Passive health and SYN re-dispatch (health.passive). Until a backend has
// answered the SYN, the client has seen nothing from it: if the backend
// refuses (an RST) or stays silent past syn_timeout, tslb takes another
// backend, a fresh tuple toward it, and sends the client's SYN there — the
// client's connect just takes a little longer. Each such failure counts
// against the backend; fall in a row take it out of new flows for
// down_for. No L4 peer does this (they forward the RST).

// passiveScan bounds the half-open flows one timer round looks at.
const passiveScan = 64

// passiveEvery is how often a worker looks for SYNs past syn_timeout.
const passiveEvery = 20 * time.Millisecond

// redispatch moves the half-open flow f (its backend refused or did not
// answer the SYN) to another backend and re-sends the client's SYN. It
// reports whether it did; if not, the caller goes on as without it.
func (w *worker) redispatch(f *flow, timeout bool) bool {
	ph := &w.s.cfg.Health.Passive
	if ph.Off {
		return false
	}
	w.passiveFailure(f)
	if f.csyn == nil || int(f.redispatches) >= ph.Retries || f.tr.State != nat.StateSynSent {
		return false
	}
	svc := f.svc
	f.tried[f.redispatches] = f.be
	be := svc.pickExcept(f.clientKey().hash(schedulerHashKey)+uint64(f.redispatches+1), w.id, w.now, f.tried[:f.redispatches+1])
	if be == nil {
		return false
	}
	// The SYN as the client sent it, decoded again.
	frame := append(w.retried[:0], f.csyn...)
	p := &w.pkt
	if w.vh.Decode(frame) != nil || p.Decode(frame[nat.VirtioNetHdrLen:]) != nil || p.TCPOptions(&w.opts) != nil {
		return false
	}
	p.PartialCsum = w.vh.Flags&nat.VirtioNetHdrFNeedsCsum != 0
	w.req = snat.Request{Seq: p.Seq, HasTS: w.opts.HasTS, TSVal: w.opts.TSVal, Mode: svc.ts,
		ISNTranslation: svc.isn, Exhaustion: svc.exhaustion}
	ps := w.pools
	ps.mu.Lock()
	w.pl = ps.poolsFor(w.s.snatAddrs, be.ap, f.clientKey().hash(w.sh.seed), w.pl[:0])
	t, v := snat.Pick(w.pl, &w.req, w.now)
	if v == snat.OK {
		t.Pool.Allocs[t.Kind]++
	}
	ps.mu.Unlock()
	clear(w.pl)
	if v != snat.OK {
		return false
	}
	// Leave the old backend: reset it if it was silent (its request
	// socket, if the SYN got there), free the tuple (it holds nothing).
	if timeout {
		w.sendTCP(f.be.nic, f.be.hop, f.snat, f.baddr, f.sport, f.bport, f.isn+1, 0, nat.TCPFlagRST)
	}
	w.flows.removeKey(f.backendKey(), f)
	w.pools.release(f.pool, f.sport, w.now, snat.Record{})
	f.be.active.Dec()
	f.be.flows.Add(-1)
	svc.redispatched[boolIndex(timeout)].Inc()

	f.be, f.pool, f.sport, f.snat, f.baddr, f.bport = be, t.Pool, t.Port, t.Pool.SNAT, be.addr, be.port
	f.isn, f.synTS = t.ISN, t.TSVal
	f.redispatches++
	f.sentAt = w.now
	be.created.Inc()
	be.active.Inc()
	be.flows.Add(1)
	w.flows.put(f.backendKey(), f)
	if f.halfOpen {
		w.halfOpen.unlink(f)
		w.halfOpen.push(f)
	}

	f.tr = nat.Tracker{}
	f.tr.Update(nat.SideClient, p.TCPFlags, p.Seq, p.Ack, p.Payload, 0, false)
	stats := f.x
	f.x = nat.Translation{BadOptions: stats.BadOptions, NoRoom: stats.NoRoom, UnexpectedTS: stats.UnexpectedTS,
		MissingTS: stats.MissingTS, SACKTrimmed: stats.SACKTrimmed, DroppedOpts: stats.DroppedOpts, SeqJumps: stats.SeqJumps}
	tsNow := f.pool.Clock.At(w.now)
	f.x.TSBase = f.synTS - tsNow
	grow, err := f.x.SetupSYN(p, svc.ts, f.isn, f.synTS)
	if err != nil {
		return false
	}
	if grow > 0 {
		w.grow(frame, grow)
	}
	if !p.DecTTL() {
		return false
	}
	p.SetTupleAny(f.snat, f.sport, f.baddr, f.bport)
	frame = outFrame(frame, p)
	f.syn = append(f.syn[:0], frame...)
	w.transmit(f.be.nic, f.be.hop, frame)
	w.flush() // w.retried is reused
	return true
}

// passiveFailure counts a refused or unanswered SYN against f's backend,
// unless tslb's own link toward it was down when the SYN was sent: that
// is not the backend's fault (a link flap would otherwise take every
// backend out at once).
func (w *worker) passiveFailure(f *flow) {
	ph := &w.s.cfg.Health.Passive
	be := f.be
	if l := be.nic; l != nil && (l.down.Load() || f.sentAt <= l.upAt.Load()) {
		return
	}
	be.passiveFailures.Inc()
	if n := be.passiveFails.Add(1); int(n) >= ph.Fall {
		if be.downUntil.Load() < w.now {
			be.passiveDowns.Inc()
			w.sh.log.Warn("backend down (passive): SYNs refused or unanswered", "backend", be.ap.String(), "failures", n, "for", ph.DownFor)
		}
		be.downUntil.Store(w.now + int64(ph.DownFor))
		be.passiveFails.Store(0)
	}
}

// passiveSuccess notes that f's backend answered its SYN.
func (w *worker) passiveSuccess(f *flow) {
	if f.be.passiveFails.Load() != 0 {
		f.be.passiveFails.Store(0)
	}
	f.csyn = nil
}

// passiveTimeouts re-dispatches the SYNs whose backend has been silent
// for syn_timeout (the half-open list is in the order SYNs were sent).
func (w *worker) passiveTimeouts() {
	ph := &w.s.cfg.Health.Passive
	if ph.Off {
		return
	}
	limit := int64(ph.SYNTimeout)
	f := w.halfOpen.head
	for i := 0; f != nil && i < passiveScan; i++ {
		next := f.hoNext
		if w.now-f.sentAt <= limit {
			return
		}
		if f.tr.State == nat.StateSynSent && f.csyn != nil {
			if !w.redispatch(f, true) {
				f.csyn = nil // out of retries or backends: the client's own retransmits decide
			}
		}
		f = next
	}
}

func boolIndex(b bool) int {
	if b {
		return 1
	}
	return 0
}
