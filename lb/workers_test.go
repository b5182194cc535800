package lb

import (
	"encoding/json"
	"net/netip"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"tslb/config"
	"tslb/lb/link"
	"tslb/lb/snat"
	"tslb/nat"
)

// The tests below run several workers over the fake links: share-nothing
// ownership (a flow, its SNAT port and both directions of its traffic stay
// with one worker), hand-off of frames that reach the wrong worker, a
// worker whose queue disappears, and the state file across worker counts.

func workersConfig(n int, mods ...func(*config.Config)) *config.Config {
	return testConfig(append([]func(*config.Config){func(c *config.Config) {
		c.Datapath.Workers = n
		c.SNAT.PortMax = 20299
	}}, mods...)...)
}

func workerFlows(t testing.TB, h *harness, w int) float64 {
	t.Helper()
	return metric(t, h.b, "tslb_worker_flows", "worker", strconv.Itoa(w))
}

func handoffs(t testing.TB, h *harness) float64 {
	t.Helper()
	sum := 0.0
	for w := range h.b.Workers() {
		sum += metric(t, h.b, "tslb_worker_handoffs_total", "worker", strconv.Itoa(w))
	}
	return sum
}

func TestWorkersOwnTheirFlows(t *testing.T) {
	t.Parallel()
	const n = 3
	h := start(t, workersConfig(n))
	h.prime(t)
	owned := [n]int{}
	for i := range 30 {
		cport := uint16(40000 + 7*i)
		c := h.establish(t, cport)
		o := link.FlowOwner([4]byte(a4(clientAddr)), cport, 80, n)
		if po := snat.PortOwner(c.sport, n); po != o {
			t.Errorf("client port %d: flow owned by worker %d got SNAT port %d of worker %d", cport, o, c.sport, po)
		}
		owned[o]++
		h.backendData(t, c, 1, 1, []byte("hello"))
	}
	for w, k := range owned {
		if k == 0 {
			t.Errorf("worker %d owns no flow of 30: the client hash does not spread", w)
		}
		if got := workerFlows(t, h, w); got != float64(k) {
			t.Errorf("worker %d: %v flows in its table, want %d", w, got, k)
		}
	}
	if got := handoffs(t, h); got != 0 {
		t.Errorf("%v frames handed over between workers, want 0 when every frame reaches its owner", got)
	}
	if got := metric(t, h.b, "tslb_flow_table_entries"); got != 30 {
		t.Errorf("flow table entries %v, want 30", got)
	}
}

// A frame the fanout delivered to another worker is handed to the owner:
// forwarded exactly as if it had arrived there, and counted.
func TestWorkersHandOff(t *testing.T) {
	t.Parallel()
	const n = 2
	h := start(t, workersConfig(n))
	h.prime(t)
	c := h.establish(t, 41000)
	owner := link.FlowOwner([4]byte(a4(clientAddr)), c.cport, 80, n)
	wrong := 1 - owner
	s := clientSeg(c.cport, nat.TCPFlagACK|nat.TCPFlagPSH, c.cisn+1, c.bisn+1)
	s.payload = []byte("via the wrong worker")
	in := tcpFrame(t, s)
	h.c0.injectTo(t, wrong, in)
	checkTCP(t, decode(t, h.b0.next(t)), in, tcpWant{ethSrc: b0MAC, ethDst: backendMAC(t, c.backend.Addr()),
		src: c.snatAP(), dst: c.backend, ttl: 63, flags: s.flags, seq: s.seq, ack: s.ack})
	b := backendSeg(t, c.backend, c.sport, nat.TCPFlagACK, c.bisn+1, c.cisn+1+uint32(len(s.payload)))
	bin := tcpFrame(t, b)
	h.b0.injectTo(t, 1-snat.PortOwner(c.sport, n), bin)
	checkTCP(t, decode(t, h.c0.next(t)), bin, tcpWant{ethSrc: c0MAC, ethDst: clientMAC,
		src: vipAP, dst: c.clientAP(), ttl: 63, flags: b.flags, seq: b.seq, ack: b.ack})
	if got := handoffs(t, h); got != 2 {
		t.Errorf("handoffs = %v, want 2", got)
	}
	if got := workerFlows(t, h, wrong); got != 0 {
		t.Errorf("the wrong worker holds %v flows, want 0", got)
	}
}

// A worker whose queue is closed stops; the others keep forwarding their
// own flows, and a frame for the stopped worker's flows is dropped and
// counted, never rewritten by another worker.
func TestWorkerQueueGone(t *testing.T) {
	t.Parallel()
	const n = 2
	h := start(t, workersConfig(n))
	h.prime(t)
	var mine, theirs *conn
	for i := 0; mine == nil || theirs == nil; i++ {
		c := h.establish(t, uint16(42000+i))
		if link.FlowOwner([4]byte(a4(clientAddr)), c.cport, 80, n) == 0 {
			mine = c
		} else {
			theirs = c
		}
	}
	h.c0.qs[1].Close()
	if !waitFor(5*time.Second, func() bool { return h.b.workers[1].dead.Load() }) {
		t.Fatal("worker 1 did not stop after its queue closed")
	}
	h.clientData(t, mine, 1, 1, []byte("still here"))
	h.c0.injectTo(t, 0, tcpFrame(t, clientSeg(theirs.cport, nat.TCPFlagACK, theirs.cisn+1, theirs.bisn+1)))
	if !waitFor(5*time.Second, func() bool { return drops(t, h.b, "owner_gone") == 1 }) {
		t.Errorf("owner_gone drops = %v, want 1", drops(t, h.b, "owner_gone"))
	}
	h.quiet(t, h.b0)
}

// A ledger saved by 2 workers is restored by 3: every tuple lands in the
// pool of the worker owning its port under the new count, and a new flow
// avoids it.
func TestStateFileAcrossWorkerCounts(t *testing.T) {
	t.Parallel()
	state := filepath.Join(t.TempDir(), "ledger.json")
	mods := func(n int) func(*config.Config) {
		return func(c *config.Config) {
			c.Datapath.Workers = n
			c.SNAT.PortMax = 20005
			c.StateFile = state
		}
	}
	h := start(t, twConfig(mods(2)))
	h.prime(t)
	recs := map[uint16]snat.Record{}
	// Two flows per worker (three ports each): all on fresh tuples.
	var cports []uint16
	per := [2]int{}
	for cport := uint16(43000); len(cports) < 4; cport++ {
		if o := link.FlowOwner([4]byte(a4(clientAddr)), cport, 80, 2); per[o] < 2 {
			per[o]++
			cports = append(cports, cport)
		}
	}
	for _, cport := range cports {
		f := h.twOpen(t, cport, 1000, 5000, 0, 0)
		h.c2b(t, f, nat.TCPFlagACK|nat.TCPFlagPSH, nil, []byte("req"))
		h.closeBackendFirst(t, f)
		rec, ok := h.ledger(t, f.sport)
		if !ok {
			t.Fatalf("port %d not in the ledger after a backend-first close", f.sport)
		}
		recs[f.sport] = rec
	}
	h.stop()

	h3 := start(t, twConfig(mods(3)))
	for port, want := range recs {
		got, ok := h3.ledger(t, port)
		if !ok || got.NextSeq != want.NextSeq || got.Until != want.Until {
			t.Errorf("port %d after restore with 3 workers: %+v %v, want %+v", port, got, ok, want)
		}
	}
	// Six ports, four in TIME_WAIT: a worker that still has a free port
	// gives it to a new flow, never a restored one.
	h3.prime(t)
	for w := range 3 {
		free := 0
		for _, port := range []uint16{20000, 20001, 20002, 20003, 20004, 20005} {
			if _, held := recs[port]; !held && snat.PortOwner(port, 3) == w {
				free++
			}
		}
		if free == 0 {
			continue
		}
		cport := uint16(44000)
		for link.FlowOwner([4]byte(a4(clientAddr)), cport, 80, 3) != w {
			cport++
		}
		f, _ := h3.twSYN(t, cport, 1000, nil)
		if _, held := recs[f.sport]; held || f.delta != 0 || snat.PortOwner(f.sport, 3) != w {
			t.Errorf("worker %d: new flow got port %d (seq shift %d), want one of its free ports, fresh", w, f.sport, f.delta)
		}
	}
}

// Half-open flows are bounded: a SYN past flows.half_open_max evicts the
// oldest half-open flow (its backend reset, its tuple free at once), never
// an established one; services[].half_open_max bounds one service.
func TestHalfOpenEviction(t *testing.T) {
	t.Parallel()
	h := start(t, testConfig(func(c *config.Config) {
		c.Flows.HalfOpenMax = 2
		c.SNAT.PortMax = 20099
	}))
	h.prime(t)
	est := h.establish(t, 46000) // never evicted
	a := h.connect(t, 46001, 100)
	b := h.connect(t, 46002, 200)
	if got := metric(t, h.b, "tslb_half_open_flows"); got != 2 {
		t.Fatalf("half-open flows = %v, want 2", got)
	}
	// A third SYN: a is evicted (RST to its backend), then the SYN goes.
	in := tcpFrame(t, clientSeg(46003, nat.TCPFlagSYN, 300, 0))
	h.c0.inject(t, in)
	rst := tcpOf(t, decode(t, h.b0.next(t)))
	if rst.flags != nat.TCPFlagRST || rst.src != a.snatAP() || rst.dst != a.backend || rst.seq != 101 {
		t.Errorf("eviction sent %+v, want an RST seq 101 from %s to %s", rst, a.snatAP(), a.backend)
	}
	syn := tcpOf(t, decode(t, h.b0.next(t)))
	if syn.flags != nat.TCPFlagSYN || syn.seq != 300 {
		t.Errorf("then %+v, want the new SYN", syn)
	}
	if got := metric(t, h.b, "tslb_half_open_evicted_total"); got != 1 {
		t.Errorf("evicted = %v, want 1", got)
	}
	if got := metric(t, h.b, "tslb_flow_table_entries"); got != 3 {
		t.Errorf("flows = %v, want 3 (established, b, the new one)", got)
	}
	if got := metric(t, h.b, "tslb_snat_ports_time_wait"); got != 0 {
		t.Errorf("evicted tuple in TIME_WAIT (%v), want free", got)
	}
	// The evicted flow's late SYN-ACK finds no flow; b and the established
	// flow still work.
	h.b0.inject(t, tcpFrame(t, backendSeg(t, a.backend, a.sport, nat.TCPFlagSYN|nat.TCPFlagACK, 9, 101)))
	h.quiet(t, h.b0)
	h.accept(t, b, 777)
	h.clientData(t, b, 1, 1, nil) // b's handshake completes: no longer half-open
	h.clientData(t, est, 1, 1, []byte("alive"))
	if got := metric(t, h.b, "tslb_half_open_flows"); got != 1 {
		t.Errorf("half-open flows = %v, want 1 (the new one)", got)
	}
}

func TestHalfOpenPerService(t *testing.T) {
	t.Parallel()
	h := start(t, testConfig(func(c *config.Config) {
		c.Services[0].HalfOpenMax = 1
		c.SNAT.PortMax = 20099
	}))
	h.prime(t)
	a := h.connect(t, 46100, 100)
	h.c0.inject(t, tcpFrame(t, clientSeg(46101, nat.TCPFlagSYN, 200, 0)))
	rst := tcpOf(t, decode(t, h.b0.next(t)))
	if rst.flags != nat.TCPFlagRST || rst.src != a.snatAP() {
		t.Errorf("service bound: %+v, want the RST evicting the first SYN", rst)
	}
	if syn := tcpOf(t, decode(t, h.b0.next(t))); syn.seq != 200 {
		t.Errorf("then %+v, want the new SYN", syn)
	}
}

// The SNAT port partition (snat.PortOwner) is exactly what the backend
// link's fanout steering delivers (link.PortOwner): both directions of a
// flow meet at one worker.
func TestPortOwnerMatchesSteering(t *testing.T) {
	for n := 1; n <= 9; n++ {
		for port := 0; port <= 65535; port++ {
			if a, b := snat.PortOwner(uint16(port), n), link.PortOwner(uint16(port), n); a != b {
				t.Fatalf("port %d, %d workers: snat says %d, link %d", port, n, a, b)
			}
		}
	}
}

// The status document has every service, backend, SNAT pair and link, with
// figures that match the traffic.
func TestStatus(t *testing.T) {
	t.Parallel()
	h := start(t, testConfig(func(c *config.Config) { c.SNAT.PortMax = 20099 }))
	h.prime(t)
	c := h.establish(t, 49000)
	h.backendData(t, c, 1, 1, []byte("x"))
	st := h.b.Status()
	if st.Schema != StatusSchema || len(st.Services) != 1 || len(st.Services[0].Backends) != 2 || len(st.Links) != 2 {
		t.Fatalf("status %+v", st)
	}
	sv := st.Services[0]
	if sv.Name != "web" || sv.VIP != vipAddr.String() || sv.Port != 80 || sv.FlowsActive != 1 || sv.FlowsCreated != 1 {
		t.Errorf("service %+v", sv)
	}
	var flows int64
	for _, be := range sv.Backends {
		flows += be.FlowsActive
		if !be.Up || be.PassiveDown {
			t.Errorf("backend %+v not up", be)
		}
	}
	if flows != 1 || st.Flows.Entries != 1 {
		t.Errorf("backend flows %d, entries %d, want 1 and 1", flows, st.Flows.Entries)
	}
	inUse := 0
	for _, p := range st.SNAT {
		inUse += p.InUse
		if p.SecondsToExhaustion != nil {
			t.Errorf("pair %s-%s: seconds to exhaustion %v with nothing entering TIME_WAIT", p.SNAT, p.Backend, *p.SecondsToExhaustion)
		}
	}
	if inUse != 1 {
		t.Errorf("SNAT in use %d, want 1", inUse)
	}
	for _, l := range st.Links {
		if l.RxPackets == 0 || l.TxPackets == 0 {
			t.Errorf("link %+v: no traffic counted", l)
		}
	}
	b, err := json.Marshal(st)
	if err != nil || !strings.Contains(string(b), `"schema":"tslb-status/1"`) {
		t.Errorf("JSON: %v %s", err, b)
	}
}

// TestWorkersOneArm: one link carries clients' frames to the VIP and the
// backends' replies to the SNAT address (a one-arm deployment). Its
// fanout program steers the replies by SNAT port and the clients' frames
// by flow hash (link.SteerSplit), so both directions of every flow reach
// the flow's owner without a hand-over.
func TestWorkersOneArm(t *testing.T) {
	t.Parallel()
	const n = 3
	h := start(t, workersConfig(n, func(c *config.Config) {
		c.Links = []config.Link{{Name: "c0", Interface: "c0", Subnets: []netip.Prefix{
			netip.MustParsePrefix("198.18.0.0/24"), netip.MustParsePrefix("198.18.1.0/24")}}}
		c.Services[0].Backends = c.Services[0].Backends[:1]
	}))
	h.ask(t, h.c0, clientMAC, clientAddr, vipAddr)
	h.ask(t, h.c0, be1MAC, be1Addr, snatAddr)
	for i := range 12 {
		cport := uint16(42000 + i)
		syn := clientSeg(cport, nat.TCPFlagSYN, 100, 0)
		h.c0.inject(t, tcpFrame(t, syn))
		g := tcpOf(t, decode(t, h.c0.next(t)))
		if g.flags != nat.TCPFlagSYN || g.dst != be1AP {
			t.Fatalf("client %d: got %+v, want its SYN toward %v", cport, g, be1AP)
		}
		sa := backendSeg(t, be1AP, g.src.Port(), nat.TCPFlagSYN|nat.TCPFlagACK, 5000, 101)
		sa.dstMAC = c0MAC
		h.c0.inject(t, tcpFrame(t, sa))
		if r := tcpOf(t, decode(t, h.c0.next(t))); r.flags != nat.TCPFlagSYN|nat.TCPFlagACK || r.dst.Port() != cport {
			t.Fatalf("client %d: got %+v, want the SYN-ACK", cport, r)
		}
	}
	if got := handoffs(t, h); got != 0 {
		t.Errorf("%v frames handed over between workers on a one-arm link, want 0", got)
	}
}

// TestHalfOpenExpiresDespiteBackendRetransmits: a half-open flow expires
// flows.timeouts.syn after the client's last segment, however often the
// backend retransmits its SYN-ACK toward a client that never answers (a
// spoofed source): those must not keep the flow, and its tuple, alive.
func TestHalfOpenExpiresDespiteBackendRetransmits(t *testing.T) {
	t.Parallel()
	h := start(t, testConfig(func(c *config.Config) { c.Flows.Timeouts.Syn = 300 * time.Millisecond }))
	h.prime(t)
	c := h.connect(t, 46100, 100)
	sa := tcpFrame(t, backendSeg(t, c.backend, c.sport, nat.TCPFlagSYN|nat.TCPFlagACK, 9, 101))
	for end := time.Now().Add(2500 * time.Millisecond); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		h.b0.inject(t, sa)
	}
	if got := metric(t, h.b, "tslb_half_open_flows"); got != 0 {
		t.Errorf("half-open flows = %v after 2.5 s of SYN-ACK retransmits with a 300 ms syn timeout, want 0", got)
	}
	if got := metric(t, h.b, "tslb_snat_ports_in_use"); got != 0 {
		t.Errorf("SNAT tuples in use = %v, want 0 (the expired flow's tuple back)", got)
	}
}

// TestHalfOpenEvictionResetsClient: a half-open flow evicted after the
// backend's SYN-ACK reached the client (the client believes it is
// connected) is reset on both sides, so the client fails at once instead
// of waiting for its own timeout.
func TestHalfOpenEvictionResetsClient(t *testing.T) {
	t.Parallel()
	h := start(t, testConfig(func(c *config.Config) {
		c.Flows.HalfOpenMax = 1
		c.SNAT.PortMax = 20099
	}))
	h.prime(t)
	a := h.connect(t, 46200, 100)
	h.accept(t, a, 5000) // SYN-ACK forwarded: the client is ESTABLISHED, tslb waits for its ACK
	h.c0.inject(t, tcpFrame(t, clientSeg(46201, nat.TCPFlagSYN, 300, 0)))
	rst := tcpOf(t, decode(t, h.b0.next(t)))
	if rst.flags != nat.TCPFlagRST || rst.dst != a.backend {
		t.Errorf("eviction sent %+v to the backend side, want an RST to %s", rst, a.backend)
	}
	crst := tcpOf(t, decode(t, h.c0.next(t)))
	if crst.flags != nat.TCPFlagRST || crst.src != vipAP || crst.dst != a.clientAP() || crst.seq != 5001 {
		t.Errorf("eviction sent %+v to the client side, want an RST seq 5001 from %s to %s", crst, vipAP, a.clientAP())
	}
	if syn := tcpOf(t, decode(t, h.b0.next(t))); syn.flags != nat.TCPFlagSYN || syn.seq != 300 {
		t.Errorf("then %+v, want the new SYN", syn)
	}
}
