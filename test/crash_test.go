package test

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"tslb/config"
	"tslb/test/bench"
	"tslb/test/harness"
	"tslb/test/lab"
)

// openLoopAsync is openLoopRun in the background: results arrive on the
// returned channel when all n requests have ended.
func openLoopAsync(clients []*lab.NS, url string, n int, rate float64, timeout time.Duration) <-chan []connResult {
	ch := make(chan []connResult, 1)
	go func() { ch <- openLoopRun(clients, url, n, rate, timeout) }()
	return ch
}

// holdIdle opens k connections to the VIP that send nothing: the backend
// holds them ESTABLISHED and silent (its ReadHeaderTimeout is 10 s), so
// after a crash only tslb's probe finds them. Closed by the test's
// cleanup.
func holdIdle(t *testing.T, ns *lab.NS, vip netip.AddrPort, k int) {
	t.Helper()
	for i := 0; i < k; i++ {
		c, err := ns.DialContext(context.Background(), "tcp", vip.String())
		if err != nil {
			t.Fatalf("idle connection %d: %v", i, err)
		}
		t.Cleanup(func() { c.Close() })
	}
}

// holdDownloads opens k connections to the VIP that ask for a large body
// and never read it: the backend fills the window and holds them
// ESTABLISHED (zero-window probes), live flows of tslb's. Closed by the
// test's cleanup.
func holdDownloads(t *testing.T, ns *lab.NS, vip netip.AddrPort, k int) {
	t.Helper()
	for i := 0; i < k; i++ {
		c, err := ns.DialContext(context.Background(), "tcp", vip.String())
		if err != nil {
			t.Fatalf("live connection %d: %v", i, err)
		}
		t.Cleanup(func() { c.Close() })
		fmt.Fprintf(c, "GET /bytes?n=%d&seed=1 HTTP/1.1\r\nHost: x\r\n\r\n", 1<<30)
		if tc, ok := c.(*net.TCPConn); ok {
			tc.SetReadBuffer(4096)
		}
	}
}

// TestCrashUnderTimeWait kills tslb with SIGKILL in the middle of
// TIME_WAIT pressure (64 SNAT ports, one backend, server-closed
// connections at 20/s, the TIME_WAIT tests' setup: every tuple cycles
// through the backend's TIME_WAIT within 3.2 s) with four live downloads
// and two idle connections (tuples the backend holds ESTABLISHED, the
// idle ones silent), and starts it again at once with the same
// configuration (state_file set: the ledger lives in mmap'd files that
// survive the kill). For each timestamp mode (rewrite and strip with
// client timestamps; passthrough with clients without them, where only
// ISN translation makes a reuse safe), after the restart tslb must hand
// out no tuple the backend still holds: a capture on the backend's link
// shows 0 SYNs answered by an old ACK (the answer of TIME_WAIT or of an
// ESTABLISHED socket to a SYN) and 0 RSTs caused by one, tslb's
// collision counters (old_ack, rst_on_syn) stay 0 before and after; the
// restarted tslb must have read the TIME_WAIT tuples back, quarantined
// the live ones and freed them through the backend's answers (the idle
// ones only a probe can find); it reuses TIME_WAIT tuples early again;
// and no connection started a second after the restart fails. The
// control (strip, state file unset, detector repair on so clients still
// connect) must show old ACKs in the same capture and counters: the
// analysis sees a collision when there is one.
func TestCrashUnderTimeWait(t *testing.T) {
	cells := []struct {
		name     string
		ts       config.TSMode
		clientTS string
		state    bool
	}{
		{"rewrite", config.TSRewrite, "1", true},
		{"passthrough_client_ts_off", config.TSPassthrough, "0", true},
		{"strip", config.TSStrip, "1", true},
		{"control_strip_no_state_file", config.TSStrip, "1", false},
	}
	for _, c := range cells {
		t.Run(c.name, func(t *testing.T) { crashCell(t, c.ts, c.clientTS, c.state) })
	}
}

func crashCell(t *testing.T, ts config.TSMode, clientTS string, withState bool) {
	phase := 4 * time.Second
	if *longRun {
		phase = 20 * time.Second
	}
	const live, idle = 4, 2
	l := lab.NewT(t, lab.Config{Clients: 2, Backends: 1})
	for _, c := range l.Clients {
		if err := c.Sysctl("net.ipv4.tcp_timestamps", clientTS); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := l.StartBackends(lab.ServerConfig{Port: 8080, CloseFirst: true}); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	o := harness.Options{Binary: tslbBinary, Dir: dir, Timestamps: ts, PortMin: 20000, PortMax: 20000 + twPorts - 1, LogLevel: "warn"}
	if withState {
		o.StateFile = filepath.Join(dir, "state", "tslb-state.json")
	}
	var mu sync.Mutex
	var cur *harness.TSLB
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		if cur != nil && !cur.Exited() {
			cur.Kill()
		}
	})
	start := func() *harness.TSLB {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		tl, err := harness.Start(ctx, l, o)
		if err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		cur = tl
		mu.Unlock()
		return tl
	}
	tl := start()
	bc, err := l.Backends[0].Capture("eth0", 200000)
	if err != nil {
		t.Fatal(err)
	}
	url := fmt.Sprintf("http://%s/", l.VIP)
	// The load goes on for 3 s after the restart (phase with -tslb.long).
	after := 3 * time.Second
	if *longRun {
		after = phase
	}
	n := int(twRate * (phase + time.Second + after).Seconds())
	results := openLoopAsync(l.Clients, url, n, twRate, 5*time.Second)
	time.Sleep(phase - time.Second)
	holdDownloads(t, l.Clients[0], netip.AddrPortFrom(l.VIP, 80), live)
	holdIdle(t, l.Clients[1], netip.AddrPortFrom(l.VIP, 80), idle)
	time.Sleep(time.Second)
	m0 := metrics(t, tl)
	killed := time.Now()
	tl.Kill()
	tl2 := start()
	restarted := time.Now()
	res := <-results
	time.Sleep(time.Second) // the last flows end
	m := metrics(t, tl2)
	if tl2.Exited() {
		t.Fatalf("the restarted tslb exited; log:\n%s", tl2.Log())
	}
	frames := bc.Stop()
	s := bench.Analyze(frames, 8080, nil)
	var errsBefore, errsGap, errsAfter int
	var firstAfter, before []string
	for _, r := range res {
		if r.err == nil {
			continue
		}
		switch {
		case r.start.Before(killed):
			errsBefore++
			if len(before) < 3 {
				before = append(before, fmt.Sprintf("at kill%v: %v", r.start.Sub(killed).Round(time.Millisecond), r.err))
			}
		case r.start.Before(restarted.Add(time.Second)):
			errsGap++
		default:
			errsAfter++
			if len(firstAfter) < 3 {
				firstAfter = append(firstAfter, r.err.Error())
			}
		}
	}
	tw, unknown := m.Sum("tslb_ledger_recovered_tuples", "state=time_wait"), m.Sum("tslb_ledger_recovered_tuples", "state=unknown")
	sent, freed, reset := m.Sum("tslb_ledger_probes_total", "result=sent"), m.Sum("tslb_ledger_probes_total", "result=freed"), m.Sum("tslb_ledger_probes_total", "result=reset")
	reuse := m.Sum("tslb_snat_allocations_total", "kind=early_reuse_ts") + m.Sum("tslb_snat_allocations_total", "kind=early_reuse_isn")
	t.Logf("%s (clients tcp_timestamps=%s, state file %v): %d connections; restart took %v; errors before the kill %d %v, kill..restart+1s %d, after %d %v",
		ts, clientTS, withState, len(res), restarted.Sub(killed).Round(time.Millisecond), errsBefore, before, errsGap, errsAfter, firstAfter)
	oldACK := m0.Sum("tslb_collisions_total", "signature=old_ack") + m.Sum("tslb_collisions_total", "signature=old_ack")
	rstOnSYN := m0.Sum("tslb_collisions_total", "signature=rst_on_syn") + m.Sum("tslb_collisions_total", "signature=rst_on_syn")
	t.Logf("before the kill: %v tuples in TIME_WAIT, %v in use; after the restart: recovered time_wait %v unknown %v; probes sent %v, tuples freed %v (RST) reset %v (ACK); early reuses %v; detector (both runs) old_ack %v rst_on_syn %v syn_retransmit %v repairs %v",
		m0.Sum("tslb_snat_ports_time_wait"), m0.Sum("tslb_snat_ports_in_use"), tw, unknown, sent, freed, reset, reuse,
		oldACK, rstOnSYN, m0.Sum("tslb_collisions_total", "signature=syn_retransmit")+m.Sum("tslb_collisions_total", "signature=syn_retransmit"),
		m0.Sum("tslb_collision_repairs_total")+m.Sum("tslb_collision_repairs_total"))
	t.Logf("backend capture: %d frames (%d past the limit), %d SYNs (%d retransmits), %d old ACKs, %d followed by an RST to the backend; RSTs to/from the backend %d/%d",
		s.Frames, bc.Dropped(), s.SYNs, s.SYNRetransmits, s.OldACKs, s.OldACKThenRST, s.RSTsToBackend, s.RSTsFromBackend)
	if bc.Dropped() != 0 {
		t.Errorf("capture full: %d frames not seen", bc.Dropped())
	}
	if m0.Sum("tslb_snat_ports_time_wait") < twPorts/2 {
		t.Errorf("only %v tuples in TIME_WAIT at the kill: no pressure", m0.Sum("tslb_snat_ports_time_wait"))
	}
	if !withState {
		// The control: the ledger is gone, so tuples the backend holds
		// are handed out as fresh.
		if s.OldACKs == 0 || oldACK == 0 {
			t.Errorf("control without state file: %d old ACKs in the capture, %v counted: the analysis or the pressure is broken", s.OldACKs, oldACK)
		}
		return
	}
	if s.OldACKs != 0 || s.OldACKThenRST != 0 {
		t.Errorf("%d SYNs answered by an old ACK, %d RSTs to the backend after one: the restart reused tuples the backend held", s.OldACKs, s.OldACKThenRST)
	}
	if oldACK != 0 || rstOnSYN != 0 {
		t.Errorf("collision counters: old_ack %v, rst_on_syn %v, want 0", oldACK, rstOnSYN)
	}
	if errsAfter != 0 {
		t.Errorf("%d connections started a second after the restart failed: %v", errsAfter, firstAfter)
	}
	if tw < twPorts/2 {
		t.Errorf("recovered %v TIME_WAIT tuples, want most of %d", tw, twPorts)
	}
	if unknown < live+idle {
		t.Errorf("recovered %v live tuples as unknown, want >= %d (the downloads and idle connections)", unknown, live+idle)
	}
	// The downloads' backend retransmits answer for their tuples before
	// the first probe goes out; the idle connections' tuples are found
	// by probes only.
	if sent < idle || freed+reset < live+idle {
		t.Errorf("probes: sent %v, tuples freed %v reset %v of %v unknown (>= %d probes and %d freed wanted)", sent, freed, reset, unknown, idle, live+idle)
	}
	if reuse == 0 {
		t.Errorf("no early reuse after the restart: no pressure")
	}
}
