package test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"tslb/config"
	"tslb/test/harness"
	"tslb/test/lab"
)

// chaosEnv is one chaos cell's running lab.
type chaosEnv struct {
	l  *lab.Lab
	bs []*lab.Backend
	tl *harness.TSLB
}

// chaosEvent disturbs the lab at +2 s and returns when the disturbance
// is over (the link is up again, the backend answers again, ...); the
// cell then checks the recovery.
type chaosEvent struct {
	name string
	do   func(t *testing.T, e *chaosEnv)
	// check looks at tslb's counters after the run.
	check func(t *testing.T, e *chaosEnv, m harness.Samples)
}

// TestChaos: while 2 clients open 200 connections/s (open loop, one GET
// each, 3 s timeout) to 3 backends and 4 long downloads run (sha256
// checked), something goes wrong at +2 s:
//   - link_flap: tslb's backend interface goes down for 1 s and up again
//     (every packet socket on it gets ENETDOWN; before the fix tslb's
//     worker stopped on it and tslb exited);
//   - backend_mac_change: backend b1's interface gets a new MAC address
//     (a NIC swap, a VM moved); its kernel announces it with a gratuitous
//     ARP (arp_notify=1), which tslb must take for an address it knows;
//   - backend_blackhole: b2 drops every segment for 2 s, then answers
//     again (passive health takes it out, with down_for 2 s it comes
//     back);
//   - tslb_paused: tslb is stopped with SIGSTOP for 2 s and continued
//     (frames wait in its rings).
//
// In every case tslb must still be running afterwards with no restart,
// every download must complete intact, no connection started 1 s after
// the event ended may fail, every backend must take new connections
// again afterwards, and the event must show in tslb's counters.
func TestChaos(t *testing.T) {
	events := []chaosEvent{
		{name: "link_flap", do: func(t *testing.T, e *chaosEnv) {
			ipLink(t, e.l.LB, "set", e.l.LBBackendIf, "down")
			time.Sleep(time.Second)
			ipLink(t, e.l.LB, "set", e.l.LBBackendIf, "up")
		}, check: func(t *testing.T, e *chaosEnv, m harness.Samples) {
			if got := m.Sum("tslb_link_down_total", "link=backends"); got < 1 {
				t.Errorf("tslb_link_down_total{link=backends} = %v, want >= 1", got)
			}
			// SYNs lost with the link are not the backends' fault: passive
			// health must not take them out (it took all three, and 84
			// connects failed as no_backend, before it knew).
			if got := m.Sum("tslb_backend_passive_downs_total"); got != 0 {
				t.Errorf("passive downs after the link flap = %v, want 0", got)
			}
			if got := m.Sum("tslb_syn_refused_total", "reason=no_backend"); got != 0 {
				t.Errorf("SYNs refused for no backend after the link flap = %v, want 0", got)
			}
		}},
		{name: "backend_mac_change", do: func(t *testing.T, e *chaosEnv) {
			ns := e.bs[0].NS
			if err := ns.Sysctl("net.ipv4.conf.eth0.arp_notify", "1"); err != nil {
				t.Fatal(err)
			}
			ipLink(t, ns, "set", "eth0", "address", "02:00:5e:12:99:01")
		}, check: func(t *testing.T, e *chaosEnv, m harness.Samples) {
			if got := m.Sum("tslb_neighbour_changes_total", "link=backends"); got != 1 {
				t.Errorf("tslb_neighbour_changes_total{link=backends} = %v, want 1", got)
			}
		}},
		{name: "backend_blackhole", do: func(t *testing.T, e *chaosEnv) {
			blackholeBackend(t, e.bs[1])
			time.Sleep(2 * time.Second)
			if out, err := e.bs[1].NS.Command(context.Background(), "nft", "delete", "table", "inet", "blackhole").CombinedOutput(); err != nil {
				t.Fatalf("nft delete: %v %s", err, out)
			}
		}, check: func(t *testing.T, e *chaosEnv, m harness.Samples) {
			be := "backend=" + e.bs[1].Addr.String()
			if got := m.Sum("tslb_backend_passive_downs_total", be); got < 1 {
				t.Errorf("passive downs of the blackholed backend = %v, want >= 1", got)
			}
		}},
		{name: "tslb_paused", do: func(t *testing.T, e *chaosEnv) {
			if err := e.tl.Signal(syscall.SIGSTOP); err != nil {
				t.Fatal(err)
			}
			time.Sleep(2 * time.Second)
			if err := e.tl.Signal(syscall.SIGCONT); err != nil {
				t.Fatal(err)
			}
		}, check: func(t *testing.T, e *chaosEnv, m harness.Samples) {
			// Frames waited in the rings: the kernel counted them, and
			// none was lost at this rate (4,096 slots per queue).
			if got := m.Sum("tslb_link_kernel_drops_total"); got != 0 {
				t.Errorf("kernel drops after the pause = %v, want 0", got)
			}
		}},
	}
	for _, ev := range events {
		t.Run(ev.name, func(t *testing.T) { chaosCell(t, ev) })
	}
}

func ipLink(t *testing.T, ns *lab.NS, args ...string) {
	t.Helper()
	if out, err := ns.Command(context.Background(), "ip", append([]string{"link"}, args...)...).CombinedOutput(); err != nil {
		t.Fatalf("ip link %v in %s: %v %s", args, ns.Name, err, out)
	}
}

func chaosCell(t *testing.T, ev chaosEvent) {
	const rate, at, total = 200.0, 2 * time.Second, 8 * time.Second
	l, bs, tl := deploy(t, 2, 3, lab.ServerConfig{Port: 8080, CloseFirst: true}, harness.Options{LogLevel: "warn",
		Edit: func(c *config.Config) { c.Health.Passive.DownFor = 2 * time.Second }})
	e := &chaosEnv{l: l, bs: bs, tl: tl}

	// Four downloads of 4 MB at about 800 KB/s each: they span the event.
	const streams, size = 4, 4 << 20
	sres := make([]stream, streams)
	var wg sync.WaitGroup
	for i := range streams {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sres[i] = streamFrom(l.Clients[i%len(l.Clients)], l.VIP.String(), uint64(100+i), size, 8<<10, 10*time.Millisecond, 30*time.Second)
		}()
	}
	results := openLoopAsync(l.Clients, fmt.Sprintf("http://%s/", l.VIP), int(rate*total.Seconds()), rate, 3*time.Second)
	time.Sleep(at)
	began := time.Now()
	ev.do(t, e)
	ended := time.Now()
	res := <-results
	wg.Wait()

	if tl.Exited() {
		t.Fatalf("tslb exited after %s: %s", ev.name, tail(tl.Log(), 2000))
	}
	// tslb still forwards, to every backend.
	after := map[string]int{}
	var fails, lateFails int
	var firstLate []string
	recovered := ended.Add(time.Second)
	for _, r := range res {
		if r.err == nil {
			if r.start.After(recovered) {
				after[r.backend]++
			}
			continue
		}
		fails++
		switch {
		case r.start.After(recovered):
			lateFails++
			if len(firstLate) < 3 {
				firstLate = append(firstLate, fmt.Sprintf("+%v after the event: %v", r.start.Sub(ended).Round(time.Millisecond), r.err))
			}
		}
	}
	m := metrics(t, tl)
	t.Logf("%s took %v; %d connections at %.0f/s: %d failed (%d started more than 1 s after the event), new connections per backend after it %v; drops %v",
		ev.name, ended.Sub(began).Round(time.Millisecond), len(res), rate, fails, lateFails, after, dropSummary(m))
	if lateFails != 0 {
		t.Errorf("%d connections started more than 1 s after the event failed: %v", lateFails, firstLate)
	}
	for _, b := range bs {
		if after[b.ID] == 0 {
			t.Errorf("backend %s took no new connection after the event (%v)", b.ID, after)
		}
	}
	for i, s := range sres {
		if s.err != nil {
			t.Errorf("download %d: %v", i, s.err)
		}
	}
	ev.check(t, e, m)
}

// dropSummary lists tslb's non-zero drop reasons.
func dropSummary(m harness.Samples) string {
	var parts []string
	for k, v := range m {
		if strings.HasPrefix(k, "tslb_drops_total{") && v != 0 {
			parts = append(parts, fmt.Sprintf("%s=%v", strings.TrimSuffix(strings.TrimPrefix(k, "tslb_drops_total{reason=\""), "\"}"), v))
		}
	}
	return strings.Join(parts, " ")
}
