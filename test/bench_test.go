package test

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"testing"
	"time"

	"tslb/config"
	"tslb/test/harness"
	"tslb/test/lab"
)

// peer is one balancer under benchmark: a lab with tslb, or a lab whose lb
// namespace is the Linux kernel doing nftables DNAT+SNAT (the reference).
type peer struct {
	name string
	lab  *lab.Lab
}

// peers builds both labs with the same shape: 2 clients, 3 backends whose
// servers close first. The benchmarks report absolute figures; compare the
// two sub-benchmarks of one run (ratios), never across machines.
func peers(b *testing.B) []peer {
	b.Helper()
	lt := lab.NewT(b, lab.Config{Clients: 2, Backends: 3})
	if _, err := lt.StartBackends(lab.ServerConfig{Port: 8080, CloseFirst: true}); err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tl, err := harness.Start(ctx, lt, harness.Options{Binary: tslbBinary, Dir: b.TempDir(), LogLevel: "warn"})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { tl.Stop(10 * time.Second) })

	lk := lab.NewT(b, lab.Config{Clients: 2, Backends: 3, Mode: lab.ModeKernelNAT,
		NAT: lab.NATConfig{VIPPort: 80, BackendPort: 8080, PortMin: 20000, PortMax: 60999}})
	if _, err := lk.StartBackends(lab.ServerConfig{Port: 8080, CloseFirst: true}); err != nil {
		b.Fatal(err)
	}
	return []peer{{"tslb", lt}, {"nftables", lk}}
}

// BenchmarkConnections: one op = one HTTP/1.1 request on a new TCP
// connection through the VIP (connect, GET, server closes), 32 in flight
// from two client namespaces.
func BenchmarkConnections(b *testing.B) {
	for _, p := range peers(b) {
		b.Run(p.name, func(b *testing.B) {
			url := fmt.Sprintf("http://%s/", p.lab.VIP)
			start := time.Now()
			res := lab.Requests(context.Background(), p.lab.Clients, url, b.N, 32, 5*time.Second, 5*time.Minute, false)
			el := time.Since(start)
			if res.Errors > 0 {
				b.Fatalf("%s: %d errors: %v", p.name, res.Errors, res.FirstErrors)
			}
			b.ReportMetric(float64(b.N)/el.Seconds(), "conns/s")
		})
	}
}

// BenchmarkBulk: one op = a 64 MiB download through the VIP on one
// connection (SetBytes makes go test print MB/s).
func BenchmarkBulk(b *testing.B) {
	const n = 64 << 20
	for _, p := range peers(b) {
		b.Run(p.name, func(b *testing.B) {
			hc := p.lab.Clients[0].HTTPClient(false, 2*time.Minute)
			b.SetBytes(n)
			for range b.N {
				resp, err := hc.Get(fmt.Sprintf("http://%s/bytes?n=%d&seed=1", p.lab.VIP, n))
				if err != nil {
					b.Fatal(err)
				}
				got, err := io.Copy(sha256.New(), resp.Body)
				resp.Body.Close()
				if err != nil || got != n {
					b.Fatalf("%d bytes, %v", got, err)
				}
			}
		})
	}
}

// BenchmarkTimeWaitMaxRate finds the highest rate of server-closed
// connections through 64 SNAT ports to one backend (Linux defaults: 60 s
// TIME_WAIT, timestamps on) that completes with 0 errors and 0 connects
// slower than 500 ms, for each timestamp mode; rates double from 50/s, 3 s
// each. Run it alone: go test -run '^$' -bench TimeWaitMaxRate -benchtime 1x ./test/
func BenchmarkTimeWaitMaxRate(b *testing.B) {
	modes := []struct {
		name string
		o    harness.Options
	}{
		{"rewrite", harness.Options{Timestamps: config.TSRewrite}},
		{"strip", harness.Options{Timestamps: config.TSStrip}},
		{"strip-broken", harness.Options{Timestamps: config.TSStrip, NoISN: true, Exhaustion: config.ExhaustReuse, NoRepair: true}},
	}
	for _, md := range modes {
		b.Run(md.name, func(b *testing.B) {
			l, tl := twDeploy(b, md.o, "1")
			best := 0.0
			for rate := 50.0; rate <= 3200; rate *= 2 {
				s := openLoop(b, l.Clients, fmt.Sprintf("http://%s/", l.VIP), int(rate*3), rate, 5*time.Second)
				b.Logf("%s at %.0f conn/s: %v", md.name, rate, s)
				if s.errors > 0 || s.slow > 0 {
					break
				}
				best = rate
			}
			m, _ := tl.Metrics(context.Background())
			b.Logf("%s: old ACKs seen by the detector %.0f", md.name, m.Sum("tslb_collisions_total", "signature=old_ack"))
			b.ReportMetric(best, "max-conns/s")
		})
	}
}
