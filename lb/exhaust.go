package lb

import "tslb/nat"

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

// waitItem is a SYN held by the wait policy (services[].exhaustion: wait)
// until a tuple toward its backend can be used safely. Each worker holds
// its own (the flow would be its own); at most waitQueueMax.
type waitItem struct {
	frame []byte
	nic   *nic
	since int64
	svc   *service
	key   flowKey
}

const waitQueueMax = 4096

// wait holds the SYN in frame. A retransmitted SYN of a held one is
// dropped (the first copy is retried already).
func (w *worker) wait(svc *service, k flowKey, frame []byte) {
	if w.retrying {
		w.stillWaiting = true
		return
	}
	if w.waitKeys[k] || len(w.waitq) >= waitQueueMax {
		return
	}
	w.waitKeys[k] = true
	w.waitq = append(w.waitq, waitItem{frame: append([]byte(nil), frame...), nic: w.in, since: w.now, svc: svc, key: k})
	svc.exhausted[exhaustWaited].Inc()
}

// retryWaiting re-runs every held SYN through the datapath: served ones
// leave the queue; ones past the service's exhaustion_wait are answered
// with an RST.
func (w *worker) retryWaiting() {
	items := w.waitq
	w.waitq = nil
	keep := items[:0:0]
	for _, it := range items {
		frame := append(w.retried[:0], it.frame...)
		w.in = it.nic
		w.retrying, w.stillWaiting = true, false
		w.handle(frame)
		w.retrying = false
		switch {
		case !w.stillWaiting:
			it.svc.exhausted[exhaustWaitServed].Inc()
		case w.now-it.since > it.svc.exhaustWaitNs:
			it.svc.exhausted[exhaustWaitTimeout].Inc()
			it.svc.refused[refusedSNAT].Inc()
			w.resetClient()
		default:
			keep = append(keep, it)
			w.flush()
			continue
		}
		delete(w.waitKeys, it.key)
		w.flush() // w.retried is reused for the next one
	}
	w.waitq = append(keep, w.waitq...)
}

// resetClient answers the client SYN decoded in w.pkt with an RST|ACK from
// the VIP, so the client fails at once instead of retransmitting.
func (w *worker) resetClient() {
	p := &w.pkt
	l, hop := w.sh.route(p.SrcAddr())
	if l == nil {
		return
	}
	w.sendTCP(l, hop, p.DstAddr(), p.SrcAddr(), p.DstPort, p.SrcPort, 0, p.Seq+1, nat.TCPFlagRST|nat.TCPFlagACK)
}

// sendTCP builds a bare TCP segment in an arena slot and transmits it; it
// returns the frame.
func (w *worker) sendTCP(l *nic, hop, src, dst nat.Addr16, sport, dport uint16, seq, ack uint32, flags uint8) []byte {
	buf := w.scratch()
	n := nat.BuildTCPAny(buf[nat.VirtioNetHdrLen:], l.mac, nat.MAC{}, src, dst, sport, dport, seq, ack, flags, 0)
	frame := buf[:nat.VirtioNetHdrLen+n]
	w.transmit(l, hop, frame)
	return frame
}
