package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"tslb/config"
	"tslb/test/harness"
	"tslb/test/lab"
)

func cmdDemo(args []string) int {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	requests := fs.Int("requests", 600, "HTTP requests to send through the VIP (1..100000)")
	clients := fs.Int("clients", 2, "client namespaces")
	backends := fs.Int("backends", 3, "backend namespaces")
	conc := fs.Int("concurrency", 8, "requests in flight")
	ts := fs.String("timestamps", "rewrite", "timestamp mode of the service: strip, passthrough or rewrite")
	keep := fs.Bool("keep", false, "keep the lab and tslb running after the requests, until Ctrl-C")
	instances := fs.Int("cluster", 0, "run N tslb instances behind a BGP/ECMP router instead of one (2..8); one is stopped mid-run")
	ipv6 := fs.Bool("6", false, "IPv6: a dual-stack lab (fd00:5e18::/48) and an IPv6 service (VIP, backends, SNAT)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *instances != 0 && (*instances < 2 || *instances > 8) {
		fmt.Fprintln(os.Stderr, "tslb demo: -cluster N: N in 2..8")
		return 2
	}
	if *requests < 1 || *requests > 100000 || *clients < 1 || *backends < 1 || *conc < 1 {
		fmt.Fprintln(os.Stderr, "tslb demo: requests 1..100000, clients, backends and concurrency >= 1")
		return 2
	}
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "tslb demo: needs root (network namespaces, AF_PACKET)")
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	exe, err := os.Executable()
	if err != nil {
		fmt.Fprintln(os.Stderr, "tslb demo:", err)
		return 1
	}
	dir, err := os.MkdirTemp("", "tslb-demo-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "tslb demo:", err)
		return 1
	}
	if *instances > 0 && *ipv6 {
		fmt.Fprintln(os.Stderr, "tslb demo: -cluster is IPv4 only (the BGP speaker carries IPv4 unicast)")
		return 2
	}
	if *instances > 0 {
		return demoCluster(ctx, exe, dir, *instances, *clients, *backends, *requests, *conc, *keep)
	}
	fam := "IPv4"
	if *ipv6 {
		fam = "dual-stack, IPv6 service"
	}
	fmt.Printf("building lab (%s): %d client(s), tslb, %d backend(s) in network namespaces ...\n", fam, *clients, *backends)
	l, err := lab.New(lab.Config{Clients: *clients, Backends: *backends, IPv6: *ipv6})
	if err != nil {
		fmt.Fprintln(os.Stderr, "tslb demo: lab:", err)
		return 1
	}
	defer func() {
		l.Close()
		fmt.Println("lab removed")
	}()
	bs, err := l.StartBackends(lab.ServerConfig{Port: 8080, CloseFirst: true})
	if err != nil {
		fmt.Fprintln(os.Stderr, "tslb demo: backends:", err)
		return 1
	}
	weights := make([]int, len(bs))
	for i := range weights {
		weights[i] = i + 1
	}
	t, err := harness.Start(ctx, l, harness.Options{Binary: exe, Dir: dir, Weights: weights,
		Timestamps: config.TSMode(*ts), IPv6: *ipv6})
	if err != nil {
		fmt.Fprintln(os.Stderr, "tslb demo:", err)
		return 1
	}
	defer t.Kill()
	fmt.Printf("tslb running in namespace %s (config %s, log %s)\n", l.LB.Name, t.ConfigPath, t.LogPath)
	fmt.Printf("service web: VIP %s -> %d backends, weights %v, SNAT %s, timestamps %s\n\n",
		netip.AddrPortFrom(l.VIP, 80), len(bs), weights, l.SNAT, *ts)

	res := runDemoLoad(ctx, l, *requests, *conc)
	printDemoTable(res, bs, weights)

	if m, err := t.Metrics(ctx); err == nil {
		fmt.Println("\nfrom tslb's metrics:")
		fmt.Printf("  flows created %.0f, active %.0f, SYNs refused %.0f, drops %.0f\n",
			m.Sum("tslb_flows_created_total"), m.Sum("tslb_flows_active"), m.Sum("tslb_syn_refused_total"), m.Sum("tslb_drops_total"))
		fmt.Printf("  packets rx %.0f tx %.0f, SNAT ports in use %.0f, neighbour (ARP/NDP) entries %.0f\n",
			m.Sum("tslb_link_packets_total", "direction=rx"), m.Sum("tslb_link_packets_total", "direction=tx"),
			m.Sum("tslb_snat_ports_in_use"), m.Sum("tslb_arp_table_entries"))
		for k, v := range m {
			if strings.HasPrefix(k, "tslb_drops_total{") && v > 0 {
				fmt.Printf("  %s %.0f\n", k, v)
			}
		}
	}
	fmt.Printf("  metrics URL: http://%s/metrics inside namespace %s (status page: http://%s/, /status.json)\n", harness.MetricsAddr, l.LB.Name, harness.MetricsAddr)
	if *keep {
		fmt.Printf("\nkept running. Try:\n  ip netns exec %s curl -s http://%s/\n  ip netns exec %s curl -s http://%s/metrics | grep ^tslb_\nCtrl-C to stop and remove the lab.\n",
			l.Clients[0].Name, netip.AddrPortFrom(l.VIP, 80), l.LB.Name, harness.MetricsAddr)
		<-ctx.Done()
	}
	code, err := t.Stop(10 * time.Second)
	fmt.Printf("\ntslb stopped with SIGTERM: exit code %d\n", code)
	if err != nil || code != 0 || res.errors.Load() > 0 {
		if err != nil {
			fmt.Fprintln(os.Stderr, "tslb demo:", err)
		}
		return 1
	}
	return 0
}

type demoResult struct {
	done, errors atomic.Int64
	mu           sync.Mutex
	byBackend    map[string]int
	firstErr     []string
	elapsed      time.Duration
}

// runDemoLoad sends n GETs to the VIP from the client namespaces, printing
// a progress line twice a second.
func runDemoLoad(ctx context.Context, l *lab.Lab, n, conc int) *demoResult {
	res := &demoResult{byBackend: make(map[string]int)}
	clients := make([]*http.Client, len(l.Clients))
	for i, c := range l.Clients {
		clients[i] = c.HTTPClient(false, 5*time.Second)
	}
	url := "http://" + netip.AddrPortFrom(l.VIP, 80).String() + "/"
	var next atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	for w := 0; w < conc; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1) - 1
				if i >= int64(n) || ctx.Err() != nil {
					return
				}
				id, err := demoGet(ctx, clients[int(i)%len(clients)], url)
				res.mu.Lock()
				if err != nil {
					res.errors.Add(1)
					if len(res.firstErr) < 5 {
						res.firstErr = append(res.firstErr, err.Error())
					}
				} else {
					res.byBackend[id]++
				}
				res.mu.Unlock()
				res.done.Add(1)
			}
		}()
	}
	stopProgress := make(chan struct{})
	progressDone := make(chan struct{})
	go func() {
		defer close(progressDone)
		tick := time.NewTicker(500 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stopProgress:
				return
			case <-tick.C:
				res.mu.Lock()
				fmt.Printf("\r  %6d/%d requests  %d errors  %6.0f req/s  %s   ", res.done.Load(), n, res.errors.Load(),
					float64(res.done.Load())/time.Since(start).Seconds(), spread(res.byBackend))
				res.mu.Unlock()
			}
		}
	}()
	wg.Wait()
	close(stopProgress)
	<-progressDone
	res.elapsed = time.Since(start)
	fmt.Printf("\r  %6d/%d requests  %d errors  %6.0f req/s  %s   \n", res.done.Load(), n, res.errors.Load(),
		float64(res.done.Load())/res.elapsed.Seconds(), spread(res.byBackend))
	return res
}

func spread(m map[string]int) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var sb strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&sb, "%s:%d ", k, m[k])
	}
	return sb.String()
}

func demoGet(ctx context.Context, c *http.Client, url string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, "GET", url, nil)
	if err != nil {
		return "", err
	}
	resp, err := c.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		return "", err
	}
	if resp.StatusCode != 200 {
		return "", fmt.Errorf("status %s", resp.Status)
	}
	return resp.Header.Get("X-Backend"), nil
}

func printDemoTable(res *demoResult, bs []*lab.Backend, weights []int) {
	total := 0
	for _, w := range weights {
		total += w
	}
	ok := int(res.done.Load() - res.errors.Load())
	fmt.Printf("\n  %-8s %-26s %6s %8s %8s %s\n", "backend", "address", "weight", "requests", "share", "expected  sources seen by the backend")
	for i, b := range bs {
		got := res.byBackend[b.ID]
		share := 0.0
		if ok > 0 {
			share = 100 * float64(got) / float64(ok)
		}
		var srcs []string
		for a, n := range b.RemoteIPs() {
			srcs = append(srcs, fmt.Sprintf("%s(%d)", a, n))
		}
		sort.Strings(srcs)
		fmt.Printf("  %-8s %-26s %6d %8d %7.1f%% %7.1f%%  %s\n", b.ID, b.Addr, weights[i], got, share,
			100*float64(weights[i])/float64(total), strings.Join(srcs, " "))
	}
	fmt.Printf("\n  %d requests in %v, %d errors\n", res.done.Load(), res.elapsed.Round(time.Millisecond), res.errors.Load())
	for _, e := range res.firstErr {
		fmt.Println("  error:", e)
	}
}
