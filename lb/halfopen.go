package lb

import "tslb/nat"

// Half-open flows: a client SYN was forwarded and the handshake is not
// complete. They are what a SYN flood makes, so they are bounded (flows.
// half_open_max over all services, each worker holding its share, and
// services[].half_open_max) and come last: a new SYN past a bound evicts
// the oldest half-open flow (of the service, for its bound), never an
// established one. An evicted or expired half-open flow gives its tuple
// back at once: the backend is reset if it may hold a request socket for
// it, so the tuple leaves nothing behind.

// halfOpenList is a worker's half-open flows, oldest first (intrusive).
type halfOpenList struct {
	head, tail *flow
	n          int
}

func (l *halfOpenList) push(f *flow) {
	f.hoPrev, f.hoNext = l.tail, nil
	if l.tail != nil {
		l.tail.hoNext = f
	} else {
		l.head = f
	}
	l.tail = f
	l.n++
}

func (l *halfOpenList) unlink(f *flow) {
	if f.hoPrev != nil {
		f.hoPrev.hoNext = f.hoNext
	} else {
		l.head = f.hoNext
	}
	if f.hoNext != nil {
		f.hoNext.hoPrev = f.hoPrev
	} else {
		l.tail = f.hoPrev
	}
	f.hoPrev, f.hoNext = nil, nil
	l.n--
}

// halfOpenScan bounds how far an eviction for a service's own bound looks
// for one of that service's flows.
const halfOpenScan = 256

// openHalf records a new half-open flow.
func (w *worker) openHalf(f *flow) {
	f.halfOpen = true
	w.halfOpen.push(f)
	f.svc.halfOpen.Add(1)
	w.c.halfOpen.Add(1)
}

// closeHalf takes f off the half-open list (established, finished or
// removed).
func (w *worker) closeHalf(f *flow) {
	if !f.halfOpen {
		return
	}
	f.halfOpen = false
	w.halfOpen.unlink(f)
	f.svc.halfOpen.Add(-1)
	w.c.halfOpen.Add(-1)
}

// makeRoom evicts half-open flows until a new SYN of svc fits both bounds.
// It reports false if it cannot (nothing of the service to evict).
func (w *worker) makeRoom(svc *service) bool {
	for w.halfOpen.n >= w.halfOpenMax && w.halfOpen.head != nil {
		w.evict(w.halfOpen.head)
	}
	if svc.halfOpenMax > 0 {
		for svc.halfOpen.Load() >= svc.halfOpenMax {
			f := w.halfOpen.head
			for i := 0; f != nil && f.svc != svc && i < halfOpenScan; i++ {
				f = f.hoNext
			}
			if f == nil || f.svc != svc {
				return false // the service's half-open flows are other workers'
			}
			w.evict(f)
		}
	}
	return true
}

// evict ends a half-open flow to make room.
func (w *worker) evict(f *flow) {
	w.c.halfOpenEvicted.Add(1)
	w.resetBackendHalf(f)
	w.removeFlow(f)
}

// resetBackendHalf sends the backend an RST for a half-open flow whose SYN
// it may have answered (its request socket then goes at once, RFC 9293
// §3.10.7.3), and makes the flow leave nothing in the ledger.
func (w *worker) resetBackendHalf(f *flow) {
	if !f.halfOpen {
		return
	}
	f.noLedger = true
	if f.tr.State >= nat.StateSynSent {
		w.sendTCP(f.be.nic, f.be.hop, f.snat, f.baddr, f.sport, f.bport, f.isn+1, 0, nat.TCPFlagRST)
	}
	if f.tr.State == nat.StateSynRecv && f.clientNIC != nil {
		// The backend's SYN-ACK reached the client, which believes it is
		// connected: reset it too (at the sequence number it expects from
		// us, in its own space), or it would wait for its own timeout.
		w.sendTCP(f.clientNIC, f.clientHop, f.vip, f.client, f.vport, f.cport, f.tr.NextSeq[nat.SideBackend], 0, nat.TCPFlagRST)
	}
}
