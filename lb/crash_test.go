package lb

import (
	"path/filepath"
	"testing"
	"time"

	"tslb/config"
	"tslb/nat"
)

// crash stops h's workers as a killed process would: at once, no drain;
// the ledger files stay as they are (and mapped: the test's cleanup ends
// the rest of h later, when the next balancer has read them).
func (h *harness) crash(t testing.TB) {
	t.Helper()
	b := h.b
	for _, w := range b.workers {
		w.stopWorker()
	}
	if !waitFor(5*time.Second, func() bool {
		for _, w := range b.workers {
			if !w.stop.Load() {
				return false
			}
		}
		return true
	}) {
		t.Fatal("workers did not stop")
	}
	time.Sleep(50 * time.Millisecond) // let them leave their loop
}

// After a crash the ledger comes back from the pool files: TIME_WAIT
// records as they were, tuples that were live as Unknown (never reused)
// until probes prove the backend holds nothing — an RST frees the tuple,
// an ACK makes tslb reset the backend's connection first.
func TestCrashRecovery(t *testing.T) {
	t.Parallel()
	state := filepath.Join(t.TempDir(), "ledger.json")
	cfg := func() *config.Config {
		return twConfig(func(c *config.Config) {
			c.Datapath.Workers = 2
			c.SNAT.PortMax = 20005
			c.StateFile = state
		})
	}
	h := start(t, cfg())
	h.prime(t)
	closed := h.twOpen(t, 45000, 1000, 5000, 0, 0)
	h.c2b(t, closed, nat.TCPFlagACK|nat.TCPFlagPSH, nil, []byte("req"))
	h.closeBackendFirst(t, closed)
	recClosed, ok := h.ledger(t, closed.sport)
	if !ok {
		t.Fatal("closed flow not in the ledger")
	}
	liveRST := h.twOpen(t, 45001, 1000, 5000, 0, 0)
	liveACK := h.twOpen(t, 45002, 1000, 5000, 0, 0)
	h.crash(t)

	h2 := start(t, cfg())
	if tw, unk := metric(t, h2.b, "tslb_ledger_recovered_tuples", "state", "time_wait"), metric(t, h2.b, "tslb_ledger_recovered_tuples", "state", "unknown"); tw != 1 || unk != 2 {
		t.Fatalf("recovered %v TIME_WAIT and %v unknown tuples, want 1 and 2", tw, unk)
	}
	if rec, ok := h2.ledger(t, closed.sport); !ok || rec != recClosed {
		t.Errorf("closed flow's record after the crash: %+v %v, want %+v", rec, ok, recClosed)
	}
	for _, f := range []*twFlow{liveRST, liveACK} {
		if rec, ok := h2.ledger(t, f.sport); !ok || !rec.Unknown {
			t.Errorf("live flow's tuple %d after the crash: %+v %v, want Unknown", f.sport, rec, ok)
		}
	}
	h2.prime(t)
	// The probes: a bare ACK from each unknown tuple.
	probes := map[uint16]*out{}
	for len(probes) < 2 {
		o := decode(t, h2.b0.next(t))
		g := tcpOf(t, o)
		if g.flags != nat.TCPFlagACK || g.src.Addr() != snatAddr || g.dst != be1AP {
			t.Fatalf("unexpected frame %+v", g)
		}
		probes[g.src.Port()] = o
	}
	if probes[liveRST.sport] == nil || probes[liveACK.sport] == nil {
		t.Fatalf("probed ports %v, want %d and %d", probes, liveRST.sport, liveACK.sport)
	}
	// The backend holds nothing for the first: RST.
	h2.b0.inject(t, tcpFrame(t, backendSeg(t, be1AP, liveRST.sport, nat.TCPFlagRST, probes[liveRST.sport].tcp.Ack, 0)))
	// It still holds the second (ESTABLISHED): the ACK of an unacceptable
	// segment, carrying its rcv_nxt; tslb resets it with exactly that seq.
	const rcvNxt = 0x5eed
	h2.b0.inject(t, tcpFrame(t, backendSeg(t, be1AP, liveACK.sport, nat.TCPFlagACK, 7777, rcvNxt)))
	rst := tcpOf(t, decode(t, h2.b0.next(t)))
	if rst.flags != nat.TCPFlagRST || rst.seq != rcvNxt || rst.src.Port() != liveACK.sport || rst.dst != be1AP {
		t.Errorf("answer to the backend's ACK: %+v, want RST seq %#x", rst, rcvNxt)
	}
	h2.quiet(t, h2.b0)
	for _, f := range []*twFlow{liveRST, liveACK} {
		if rec, ok := h2.ledger(t, f.sport); ok {
			t.Errorf("tuple %d still quarantined after its probe was answered: %+v", f.sport, rec)
		}
	}
	for res, want := range map[string]float64{"sent": 2, "freed": 1, "reset": 1} {
		if got := metric(t, h2.b, "tslb_ledger_probes_total", "result", res); got != want {
			t.Errorf("probes %s = %v, want %v", res, got, want)
		}
	}
}
