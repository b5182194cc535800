package lb

import (
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"tslb/lb/link"
	"tslb/lb/snat"
	"tslb/nat"
)

// Worker loop constants.
const (
	rxBatch      = 64                     // frames taken from one queue per Recv
	arenaSlots   = 64                     // frames a worker builds itself per batch (ARP, RST, ...)
	arenaSlotLen = 256                    // bytes per built frame
	reapEvery    = 250 * time.Millisecond // a quarter of the flow shards per round
	waitRetry    = 10 * time.Millisecond  // held SYNs (exhaustion: wait) are retried this often
	idleWait     = 250 * time.Millisecond
)

// frameBufSize holds a virtio_net_hdr and the largest GSO superframe the
// kernel hands an AF_PACKET socket (64 KiB IPv4 packet + Ethernet), with
// room to grow.
const frameBufSize = nat.VirtioNetHdrLen + nat.EthernetHeaderLen + 65535 + 64

// worker is one datapath worker: it owns its queue on every link, its
// flow table, its share of the SNAT pools and its counters, and forwards
// every frame its queues receive. Only its own goroutine (run) touches
// its fields, except c (counters, atomics), mail (locked) and stop.
type worker struct {
	id    int
	sh    *shared
	qs    []link.Queue // by nic index
	poll  *link.Poller
	flows *flowTable
	pools *poolShard
	c     *workerCounters
	// cl is the cluster's shared part (nil without a cluster section),
	// clc this worker's cluster counters (clusterpath.go).
	cl  *clusterPath
	clc *clusterCounters

	peers    []*worker // every worker, self included, by id (mailboxes)
	mail     mailbox
	stop     atomic.Bool
	dead     atomic.Bool // run returned: frames for its flows are dropped
	announce atomic.Bool // send gratuitous ARPs for every owned address

	waitq    []waitItem
	waitKeys map[flowKey]bool
	// probes are the tuples of unknown state this worker owns after a
	// crash (probe.go); probeIdx indexes the pending ones by the key of
	// the backend's answer.
	probes   []probe
	probeIdx map[flowKey]*probe

	halfOpen    halfOpenList // this worker's half-open flows, oldest first
	halfOpenMax int          // its share of flows.half_open_max

	// Per batch.
	now      int64
	s        *snapshot
	in       *nic
	rx       [rxBatch][]byte
	dirty    []bool   // queues with frames sent since the last flush
	dirtyBuf [8]bool  // backs dirty (see newWorker)
	anyTx    bool     // some queue is dirty
	hold     [][]byte // heap frames referenced by sends until the flush
	arena    [arenaSlots][arenaSlotLen]byte
	arenaN   int
	bigBuf   []byte // a frame too large for the arena, re-sent after a repair or retried
	retried  []byte // copy of a held SYN being retried

	pkt      nat.Packet
	vh       nat.VirtioNetHdr
	icmpErr  nat.ICMPError
	icmp6Err nat.ICMPv6Error
	opts     nat.TCPOptions
	pl       []*snat.Pool  // scratch for the pools toward a backend
	plBuf    [8]*snat.Pool // backs pl (see newWorker)
	req      snat.Request

	// synth is set while a SYN rebuilt from a valid cookie is run through
	// fromClient; synthFlow is the flow it made.
	synth     *proxyState
	synthFlow *flow

	// retrying is set while a SYN held by the wait policy is re-run;
	// stillWaiting reports that it must keep waiting.
	retrying, stillWaiting bool

	nextReap, nextWait, nextPassive, nextBeat int64
	reapShard                                 int
}

func newWorker(id int, sh *shared, pools *poolShard) (*worker, error) {
	w := &worker{id: id, sh: sh, pools: pools, flows: newFlowTable(mix64(sh.seed + uint64(id))), c: newWorkerCounters(len(sh.nics)),
		waitKeys: make(map[flowKey]bool),
		bigBuf:   make([]byte, 0, frameBufSize), retried: make([]byte, 0, frameBufSize)}
	// dirty and pl are written per packet and per new flow: they live in
	// the worker's own memory. As separate small allocations they shared
	// cache lines with the other workers' (Go's allocator packs them side
	// by side), and that false sharing cost 30 ns per packet with two
	// workers (BenchmarkWorkerPath -cpu 2: 87 ns/pkt, 61 without).
	if n := len(sh.nics); n <= len(w.dirtyBuf) {
		w.dirty = w.dirtyBuf[:n]
	} else {
		w.dirty = make([]bool, n, max(n, 128))
	}
	w.pl = w.plBuf[:0]
	for _, l := range sh.nics {
		w.qs = append(w.qs, l.queues[id])
	}
	w.halfOpenMax = max(1, (sh.halfOpenMax+sh.workers-1)/sh.workers)
	p, err := link.NewPoller(w.qs)
	if err != nil {
		return nil, err
	}
	w.poll = p
	return w, nil
}

// stopWorker makes run return after its current batch.
func (w *worker) stopWorker() {
	w.stop.Store(true)
	w.poll.Wake()
}

// run is the worker's loop: take what every queue has (at most rxBatch
// frames each), handle it, flush what was sent, hand the frames back;
// then the mailbox and the timers; sleep in poll(2) when there was
// nothing to do. It returns nil when stopped, or the error of a queue.
func (w *worker) run() error {
	for !w.stop.Load() {
		busy, err := w.once()
		if err != nil {
			if errors.Is(err, link.ErrClosed) || w.stop.Load() {
				if !w.stop.Load() {
					// A queue went away under the worker (its socket was
					// closed): the other workers go on; frames they would
					// hand to this one are dropped and counted.
					w.dead.Store(true)
					w.sh.log.Error("datapath worker stopped: a queue was closed", "worker", w.id, "err", err)
				}
				return nil
			}
			w.dead.Store(true)
			return err
		}
		if !busy {
			if _, err := w.poll.Wait(w.sleepFor()); err != nil && !w.stop.Load() {
				w.dead.Store(true)
				return err
			}
		}
	}
	return nil
}

// once is one round of the loop: every queue's ready frames, the mailbox,
// the timers. It reports whether there was anything to do.
func (w *worker) once() (busy bool, err error) {
	w.now = w.sh.clock()
	w.s = w.sh.snap.Load()
	if w.announce.Swap(false) {
		w.sendAnnouncements()
	}
	for i, q := range w.qs {
		n, err := q.Recv(w.rx[:])
		if err != nil {
			if !link.IsDown(err) {
				return busy, err
			}
			w.linkDown(w.sh.nics[i], err)
			continue
		}
		if n == 0 {
			continue
		}
		busy = true
		w.in = w.sh.nics[i]
		if w.in.down.Load() && w.in.down.CompareAndSwap(true, false) {
			w.in.upAt.Store(w.now)
			w.sh.log.Info("link up again: frames arrive; announcing tslb's addresses", "link", w.in.name)
			w.peers[0].announce.Store(true)
		}
		for j := 0; j < n; j++ {
			w.handle(w.rx[j])
			w.rx[j] = nil
		}
		w.flush()
		q.Release()
	}
	if w.mail.pending.Load() {
		w.drainMail()
		busy = true
	}
	w.timers()
	return busy, nil
}

// sleepFor is how long the worker may sleep: until its next timer.
func (w *worker) sleepFor() time.Duration {
	d := idleWait
	if len(w.waitq) > 0 {
		d = waitRetry
	}
	if w.probes != nil {
		d = min(d, 100*time.Millisecond)
	}
	if w.halfOpen.head != nil {
		d = min(d, passiveEvery)
	}
	return w.clusterSleep(d)
}

// timers retries held SYNs every waitRetry and reaps a quarter of the flow
// shards every reapEvery.
func (w *worker) timers() {
	now := w.now
	if len(w.waitq) > 0 && now >= w.nextWait {
		w.nextWait = now + int64(waitRetry)
		w.retryWaiting()
	}
	if now >= w.nextReap {
		w.nextReap = now + int64(reapEvery)
		w.reap()
	}
	if w.probes != nil {
		w.runProbes()
	}
	if w.halfOpen.head != nil && now >= w.nextPassive {
		w.nextPassive = now + int64(passiveEvery)
		w.passiveTimeouts()
	}
	if w.cl != nil && w.id == 0 {
		w.clusterTimers()
	}
	w.flush() // what the timers sent (RSTs of expired half-open flows, probes)
}

// sendQueue queues frame on link l (this worker's queue). frame must stay
// valid until the flush: it is in a received frame, the arena, or held.
func (w *worker) sendQueue(l *nic, frame []byte) bool {
	if err := w.qs[l.idx].Send(frame); err != nil {
		w.c.drop(dropTxError)
		return false
	}
	w.dirty[l.idx] = true
	w.anyTx = true
	return true
}

// keep holds a heap frame until the next flush (Send may reference it).
func (w *worker) keep(frame []byte) { w.hold = append(w.hold, frame) }

// flush transmits what was sent since the last flush on every queue and
// frees the arena.
func (w *worker) flush() {
	if w.anyTx {
		for i, d := range w.dirty {
			if d {
				w.qs[i].Flush()
				w.dirty[i] = false
			}
		}
		w.anyTx = false
	}
	clear(w.hold)
	w.hold = w.hold[:0]
	w.arenaN = 0
}

// scratch returns a zeroed arena slot for a frame the worker builds (at
// most arenaSlotLen bytes), flushing first if the arena is used up.
func (w *worker) scratch() []byte {
	if w.arenaN == arenaSlots {
		w.flush()
	}
	b := w.arena[w.arenaN][:]
	w.arenaN++
	clear(b[:nat.VirtioNetHdrLen])
	return b
}

// mailbox takes frames other workers received for flows this worker owns
// (a frame steered to the wrong worker: a fanout change, an ICMP error
// quoting the flow). It is the only cross-worker path and is not taken
// per packet when steering is right.
type mailbox struct {
	mu      sync.Mutex
	items   []mail
	pending atomic.Bool
}

type mail struct {
	nic   int
	frame []byte
}

// handOff gives a copy of frame, received on link l, to worker owner. A
// frame for a worker that stopped is dropped and counted (owner_gone).
func (w *worker) handOff(owner *worker, l *nic, frame []byte) {
	if owner.dead.Load() {
		w.c.drop(dropOwnerGone)
		return
	}
	c := make([]byte, len(frame), len(frame)+64)
	copy(c, frame)
	owner.mail.mu.Lock()
	owner.mail.items = append(owner.mail.items, mail{l.idx, c})
	owner.mail.pending.Store(true)
	owner.mail.mu.Unlock()
	owner.poll.Wake()
	w.c.handoffs.Add(1)
}

func (w *worker) drainMail() {
	w.mail.mu.Lock()
	items := w.mail.items
	w.mail.items = nil
	w.mail.pending.Store(false)
	w.mail.mu.Unlock()
	for _, m := range items {
		w.in = w.sh.nics[m.nic]
		w.keep(m.frame)
		w.handle(m.frame)
		if len(w.hold) > arenaSlots {
			w.flush()
		}
	}
	w.flush()
}

// linkDown handles a queue's report that its interface went down
// (packet_notifier sets ENETDOWN on every socket bound to it). The socket
// stays bound and the kernel re-registers it when the interface comes up,
// so the worker goes on: sends fail and are counted meanwhile, and the
// first frame received afterwards triggers the announcements again.
func (w *worker) linkDown(l *nic, err error) {
	l.down.Store(true)
	if w.id != 0 {
		return
	}
	l.downs.Add(1)
	w.sh.log.Warn("link down: frames to it are dropped and counted as tx_error until it is up", "link", l.name, "err", err)
}

// sendAnnouncements sends a gratuitous ARP for every owned address on each
// link so that switches and neighbours learn tslb's MAC at once.
func (w *worker) sendAnnouncements() {
	for _, l := range w.sh.nics {
		for a := range w.s.linkOwned[l.idx] {
			buf := w.scratch()
			var n int
			if a.Is4() {
				n = nat.BuildARP(buf[nat.VirtioNetHdrLen:], nat.ARPRequest, l.mac, broadcast, l.mac, a.Unmap(), nat.MAC{}, a.Unmap())
			} else {
				// An unsolicited Neighbor Advertisement to all nodes, with
				// the Override flag (RFC 4861 §7.2.6).
				n = nat.BuildNA(buf[nat.VirtioNetHdrLen:], l.mac, nat.MAC{}, a, nat.IPv6AllNodes(), a, nat.NAFlagOverride)
			}
			if n > 0 && w.sendQueue(l, buf[:nat.VirtioNetHdrLen+n]) {
				l.arpGratuitous.Inc()
			}
		}
	}
	w.flush()
}
