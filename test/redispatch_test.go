package test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"tslb/config"
	"tslb/test/harness"
	"tslb/test/lab"
)

// TestDeadBackendRedispatch: three backends behind a VIP, 500 new
// connections/s (1,000 with -tslb.long) from two clients, open loop,
// one short GET each; after a second one backend dies. Killed: its
// server closes (listener and connections, as when the process is
// killed: the kernel answers SYNs with an RST). Blackholed: nft drops
// everything to its port (SYNs unanswered). With health.passive on (the
// default: syn_timeout 500 ms, retries 2, fall 3), a SYN the dead
// backend refuses or leaves unanswered is re-dispatched to another one,
// so no connection started after the death may fail — only requests
// already in flight on it can; and passive health must take it out
// (one passive down). The control (killed, health.passive off, no active
// health check) must show the client-visible failures re-dispatch
// prevents.
func TestDeadBackendRedispatch(t *testing.T) {
	cells := []struct {
		name    string
		kill    func(*testing.T, *lab.Backend)
		passive bool
	}{
		{"killed", killBackend, true},
		{"blackholed", blackholeBackend, true},
		{"control_killed_passive_off", killBackend, false},
	}
	for _, c := range cells {
		t.Run(c.name, func(t *testing.T) { redispatchCell(t, c.kill, c.passive) })
	}
}

// killBackend closes b's server: its listener and every connection.
func killBackend(t *testing.T, b *lab.Backend) {
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
}

// blackholeBackend drops every segment to b's port in b's namespace.
func blackholeBackend(t *testing.T, b *lab.Backend) {
	rules := fmt.Sprintf("table inet blackhole {\n chain in {\n  type filter hook input priority 0; policy accept;\n  tcp dport %d drop\n }\n}\n", b.Addr.Port())
	cmd := b.NS.Command(context.Background(), "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(rules)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("nft in %s: %v %s", b.NS.Name, err, out)
	}
}

func redispatchCell(t *testing.T, kill func(*testing.T, *lab.Backend), passive bool) {
	rate := 500.0
	if *longRun {
		rate = 1000
	}
	const pre, post, timeout = time.Second, 3 * time.Second, 3 * time.Second
	l, bs, tl := deploy(t, 2, 3, lab.ServerConfig{Port: 8080, CloseFirst: true}, harness.Options{LogLevel: "warn",
		Edit: func(c *config.Config) { c.Health.Passive.Off = !passive }})
	dead := bs[1]
	url := fmt.Sprintf("http://%s/", l.VIP)
	n := int(rate * (pre + post).Seconds())
	results := openLoopAsync(l.Clients, url, n, rate, timeout)
	time.Sleep(pre)
	kill(t, dead)
	died := time.Now()
	res := <-results
	m := metrics(t, tl)

	var inFlight, after int
	var firstAfter []string
	var lat []time.Duration // connect times of requests started after the death
	for _, r := range res {
		if !r.start.Before(died) && r.err == nil {
			lat = append(lat, r.connect)
		}
		switch {
		case r.err == nil:
		case r.start.Before(died):
			inFlight++
		default:
			after++
			if len(firstAfter) < 3 {
				firstAfter = append(firstAfter, fmt.Sprintf("at +%v: %v", r.start.Sub(died).Round(time.Millisecond), r.err))
			}
		}
	}
	slow := 0 // connects that waited for a syn_timeout
	for _, d := range lat {
		if d > 400*time.Millisecond {
			slow++
		}
	}
	slices.Sort(lat)
	p := func(q float64) time.Duration {
		if len(lat) == 0 {
			return 0
		}
		return lat[int(q*float64(len(lat)-1))].Round(100 * time.Microsecond)
	}
	be := "backend=" + dead.Addr.String()
	downs := m.Sum("tslb_backend_passive_downs_total", be)
	t.Logf("%d connections at %.0f/s, backend %s dead at +%v: %d failures in all, %d in flight at the death, %d started after it %v",
		len(res), rate, dead.ID, pre, inFlight+after, inFlight, after, firstAfter)
	t.Logf("connects started after the death: p50 %v p99 %v max %v, %d over 400 ms; re-dispatched rst %v timeout %v; passive failures of %s %v, downs %v",
		p(0.5), p(0.99), p(1), slow, m.Sum("tslb_syn_redispatched_total", "reason=rst"), m.Sum("tslb_syn_redispatched_total", "reason=timeout"),
		dead.ID, m.Sum("tslb_backend_passive_failures_total", be), downs)
	if !passive {
		if after == 0 {
			t.Errorf("control (health.passive off): no failure after the backend died: the test cannot see what re-dispatch prevents")
		}
		return
	}
	if after != 0 {
		t.Errorf("%d connections started after the backend died failed (want 0: their SYNs are re-dispatched): %v", after, firstAfter)
	}
	if downs != 1 {
		t.Errorf("passive downs of the dead backend = %v, want 1", downs)
	}
	if m.Sum("tslb_syn_redispatched_total") == 0 {
		t.Errorf("no SYN re-dispatched")
	}
}
