package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"tslb/test/harness"
	"tslb/test/lab"
)

// demoCluster is `tslb demo -cluster N`: a router running BIRD with ECMP,
// N tslb instances announcing the VIP with BGP, clients behind the router
// and backends behind the instances. Half of the requests run with every
// instance up; during the other half the last instance is stopped with
// SIGTERM (withdraw, drain, leave). It prints which instance and backend
// served each request and fails if any request failed.
func demoCluster(ctx context.Context, exe, dir string, n, clients, backends, requests, conc int, keep bool) int {
	fmt.Printf("building cluster lab: router (BIRD 2, ECMP), %d tslb instances, %d client(s), %d backend(s) ...\n", n, clients, backends)
	c, err := lab.NewCluster(lab.ClusterConfig{Instances: n, Clients: clients, Backends: backends})
	if err != nil {
		fmt.Fprintln(os.Stderr, "tslb demo:", err)
		return 1
	}
	defer func() {
		c.Close()
		fmt.Println("lab removed")
	}()
	if _, err := c.StartBackends(lab.ServerConfig{Port: 8080, CloseFirst: true}); err != nil {
		fmt.Fprintln(os.Stderr, "tslb demo: backends:", err)
		return 1
	}
	ts := make([]*harness.TSLB, n)
	defer func() {
		for _, t := range ts {
			if t != nil && !t.Exited() {
				t.Kill()
			}
		}
	}()
	for i, in := range c.Instances {
		d := filepath.Join(dir, fmt.Sprintf("t%d", in.ID))
		if err := os.MkdirAll(d, 0o755); err != nil {
			fmt.Fprintln(os.Stderr, "tslb demo:", err)
			return 1
		}
		o := harness.Options{Binary: exe, Dir: d, NS: in.NS, Workers: 1, ShutdownTimeout: 10 * time.Second, Control: true}
		o.Custom = harness.ClusterConfig(c, in, o)
		t, err := harness.Start(ctx, c.Lab, o)
		if err != nil {
			fmt.Fprintln(os.Stderr, "tslb demo:", err)
			return 1
		}
		ts[i] = t
		fmt.Printf("tslb %d in namespace %s: front %s (MAC %s), SNAT %s, log %s\n", in.ID, in.NS.Name, in.Addr, in.MAC, in.SNAT, t.LogPath)
	}
	vip := netip.PrefixFrom(lab.ClusterVIP, 32)
	hopsFor := func(k int) bool {
		deadline := time.Now().Add(20 * time.Second)
		for time.Now().Before(deadline) {
			h, err := c.RouterNextHops(vip)
			if err == nil && len(h) == k {
				fmt.Printf("router: %s via %v (ECMP, L4 hash)\n", vip, h)
				return true
			}
			time.Sleep(100 * time.Millisecond)
		}
		return false
	}
	if !hopsFor(n) {
		fmt.Fprintf(os.Stderr, "tslb demo: the router never got %d next hops for %s\n", n, vip)
		return 1
	}
	bySNAT := map[netip.Addr]int{}
	for i, in := range c.Instances {
		bySNAT[in.SNAT] = i
	}

	fmt.Printf("\n%d requests with all %d instances up:\n", requests/2, n)
	r1 := clusterLoad(ctx, c, requests/2, conc, bySNAT, n, nil)
	r1.print(c)

	fmt.Printf("\n%d requests; after 1 s instance %d is stopped with SIGTERM (routes withdrawn, flows drained, then it leaves):\n", requests-requests/2, n)
	last := ts[n-1]
	stopped := make(chan struct{})
	r2 := clusterLoad(ctx, c, requests-requests/2, conc, bySNAT, n, func() {
		time.Sleep(time.Second)
		code, err := last.Stop(30 * time.Second)
		fmt.Printf("\n  instance %d stopped: exit code %d %v\n", n, code, errOrEmpty(err))
		close(stopped)
	})
	<-stopped
	r2.print(c)
	hopsFor(n - 1)

	fmt.Println("\nfrom the instances' metrics:")
	for i, t := range ts[:n-1] {
		m, err := t.Metrics(ctx)
		if err != nil {
			continue
		}
		fmt.Printf("  tslb %d: BGP session up %.0f, routes announced %.0f, frames forwarded to peers %.0f, received from peers %.0f, second chances %.0f, not held %.0f\n",
			i+1, m.Sum("tslb_bgp_session_up"), m.Sum("tslb_bgp_routes_announced"), m.Sum("tslb_cluster_frames_forwarded_total"),
			m.Sum("tslb_cluster_frames_received_total"), m.Sum("tslb_cluster_decisions_total", "verdict=forward_previous"),
			m.Sum("tslb_cluster_decisions_total", "verdict=not_held"))
	}
	if keep {
		fmt.Printf("\nkept running. Try:\n  ip netns exec %s curl -s http://%s/\n  ip netns exec %s curl -s http://%s/status.json\n  birdc -s %s show route\nCtrl-C to stop and remove the lab.\n",
			c.Clients[0].Name, lab.ClusterVIP, c.Instances[0].NS.Name, harness.MetricsAddr, c.BirdSocket())
		<-ctx.Done()
	}
	failed := r1.errors.Load() + r2.errors.Load()
	fmt.Printf("\n%d requests, %d failed\n", r1.done.Load()+r2.done.Load(), failed)
	if failed > 0 {
		return 1
	}
	return 0
}

func errOrEmpty(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// clusterResult counts requests by instance (the SNAT address the
// backend saw) and by backend.
type clusterResult struct {
	n            int
	done, errors atomic.Int64
	mu           sync.Mutex
	byInstance   []int
	byBackend    map[string]int
	firstErr     []string
	elapsed      time.Duration
}

// clusterLoad sends n GETs (one connection each) with concurrency conc;
// during runs alongside, if set.
func clusterLoad(ctx context.Context, c *lab.Cluster, n, conc int, bySNAT map[netip.Addr]int, instances int, during func()) *clusterResult {
	res := &clusterResult{n: n, byInstance: make([]int, instances), byBackend: map[string]int{}}
	hcs := make([]*http.Client, len(c.Clients))
	for i, ns := range c.Clients {
		hcs[i] = ns.HTTPClient(false, 5*time.Second)
	}
	url := fmt.Sprintf("http://%s/", lab.ClusterVIP)
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	var next atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	if during != nil {
		go during()
	}
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1) - 1
				if i >= int64(n) || ctx.Err() != nil {
					return
				}
				be, snat, err := clusterGet(ctx, hcs[int(i)%len(hcs)], url)
				res.mu.Lock()
				if err != nil {
					res.errors.Add(1)
					if len(res.firstErr) < 5 {
						res.firstErr = append(res.firstErr, err.Error())
					}
				} else {
					res.byBackend[be]++
					if k, ok := bySNAT[snat]; ok {
						res.byInstance[k]++
					}
				}
				res.mu.Unlock()
				if d := res.done.Add(1); d%100 == 0 {
					fmt.Printf("\r  %6d/%d requests  %d errors", d, n, res.errors.Load())
				}
				// Paced over about 3 s, so that the stop happens in the
				// middle of the run.
				time.Sleep(max(5*time.Millisecond, 3*time.Second*time.Duration(conc)/time.Duration(n)))
			}
		}()
	}
	wg.Wait()
	res.elapsed = time.Since(start)
	fmt.Printf("\r  %6d/%d requests  %d errors  %.0f req/s\n", res.done.Load(), n, res.errors.Load(), float64(res.done.Load())/res.elapsed.Seconds())
	return res
}

func clusterGet(ctx context.Context, hc *http.Client, url string) (string, netip.Addr, error) {
	req, err := http.NewRequestWithContext(ctx, "GET", url, nil)
	if err != nil {
		return "", netip.Addr{}, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return "", netip.Addr{}, err
	}
	defer resp.Body.Close()
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		return "", netip.Addr{}, err
	}
	if resp.StatusCode != 200 {
		return "", netip.Addr{}, fmt.Errorf("status %s", resp.Status)
	}
	ap, _ := netip.ParseAddrPort(resp.Header.Get("X-Client"))
	return resp.Header.Get("X-Backend"), ap.Addr().Unmap(), nil
}

func (r *clusterResult) print(c *lab.Cluster) {
	ok := int(r.done.Load() - r.errors.Load())
	fmt.Printf("  %-10s %-14s %8s %7s\n", "instance", "SNAT", "requests", "share")
	for i, in := range c.Instances {
		share := 0.0
		if ok > 0 {
			share = 100 * float64(r.byInstance[i]) / float64(ok)
		}
		fmt.Printf("  tslb %-5d %-14s %8d %6.1f%%\n", in.ID, in.SNAT, r.byInstance[i], share)
	}
	var bes []string
	for b := range r.byBackend {
		bes = append(bes, b)
	}
	slices.Sort(bes)
	fmt.Print("  by backend:")
	for _, b := range bes {
		fmt.Printf(" %s:%d", b, r.byBackend[b])
	}
	fmt.Printf("\n  %d requests in %v, %d errors\n", r.done.Load(), r.elapsed.Round(time.Millisecond), r.errors.Load())
	for _, e := range r.firstErr {
		fmt.Println("  error:", e)
	}
}
