package test

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"tslb/config"
	"tslb/test/harness"
	"tslb/test/lab"
)

// The cluster datapath end to end: three real tslb processes, one per
// instance namespace, behind BIRD 2 with L4 ECMP, announcing the VIP with
// their embedded GoBGP speakers; clients behind the router open new
// connections open-loop and hold long-lived streams whose sha256 they
// check; backends are the lab's HTTP servers (they close first, so
// every short connection leaves a TIME_WAIT in a backend).

// clusterRun is a cluster lab with its tslb instances.
type clusterRun struct {
	t    *testing.T
	c    *lab.Cluster
	dir  string
	tslb []*harness.TSLB // by instance index; nil while stopped
	gen  []int           // starts per instance (log directories)
	// last holds each instance's last scrape (kept after it stops or is
	// killed, so its counters still count).
	mu   sync.Mutex
	last []harness.Samples
}

func newClusterRun(t *testing.T, junk []netip.Prefix) *clusterRun {
	t.Helper()
	c := lab.NewClusterT(t, lab.ClusterConfig{Instances: 3, Clients: 2, Backends: 3, RouterAnnounces: junk})
	if _, err := c.StartBackends(lab.ServerConfig{Port: 8080, CloseFirst: true}); err != nil {
		t.Fatal(err)
	}
	r := &clusterRun{t: t, c: c, dir: t.TempDir(), tslb: make([]*harness.TSLB, 3), gen: make([]int, 3), last: make([]harness.Samples, 3)}
	t.Cleanup(func() {
		for i, ts := range r.tslb {
			if ts != nil {
				if t.Failed() {
					t.Logf("instance %d log (tail):\n%s", i+1, ts.Log())
				}
				ts.Kill()
			}
		}
	})
	return r
}

// start starts instance i (0-based) and returns once it serves metrics.
func (r *clusterRun) start(i int) *harness.TSLB {
	r.t.Helper()
	in := r.c.Instances[i]
	r.gen[i]++
	dir := filepath.Join(r.dir, fmt.Sprintf("t%d-%d", in.ID, r.gen[i]))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		r.t.Fatal(err)
	}
	o := harness.Options{Binary: tslbBinary, Dir: dir, NS: in.NS, Workers: 1, Control: true,
		ShutdownTimeout: 30 * time.Second, StateFile: filepath.Join(r.dir, fmt.Sprintf("t%d.state", in.ID))}
	o.Custom = harness.ClusterConfig(r.c, in, o)
	ts, err := harness.Start(context.Background(), r.c.Lab, o)
	if err != nil {
		r.t.Fatalf("instance %d: %v", in.ID, err)
	}
	r.tslb[i] = ts
	return ts
}

// scrape takes every running instance's metrics into r.last.
func (r *clusterRun) scrape() {
	for i, ts := range r.tslb {
		if ts == nil || ts.Exited() {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		s, err := ts.Metrics(ctx)
		cancel()
		if err == nil {
			r.mu.Lock()
			r.last[i] = s
			r.mu.Unlock()
		}
	}
}

func (r *clusterRun) metric(i int, name string, match ...string) float64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.last[i] == nil {
		return 0
	}
	return r.last[i].Sum(name, match...)
}

// hops returns the router's next hops for the VIP.
func (r *clusterRun) hops() []netip.Addr {
	h, err := r.c.RouterNextHops(netip.PrefixFrom(lab.ClusterVIP, 32))
	if err != nil {
		r.t.Fatal(err)
	}
	return h
}

func (r *clusterRun) waitHops(what string, ins ...int) time.Duration {
	r.t.Helper()
	var want []netip.Addr
	for _, i := range ins {
		want = append(want, r.c.Instances[i].Addr)
	}
	return eventually(r.t, fmt.Sprintf("%s: router next hops %v (have %v)", what, want, r.hops()), 20*time.Second,
		func() bool { return slices.Equal(r.hops(), want) })
}

// instanceOf maps an SNAT address (what the backend saw) to the instance
// index, or -1.
func (r *clusterRun) instanceOf(a netip.Addr) int {
	for i, in := range r.c.Instances {
		if in.SNAT == a {
			return i
		}
	}
	return -1
}

// shortConn is one open-loop connection.
type shortConn struct {
	start time.Time
	snat  netip.Addr
	err   error
}

// openLoop starts a new connection (GET /, its own TCP connection) every
// 1/rate s from the clients in turn until stop is closed or max have
// started; each is bounded by timeout. The result is complete once the
// returned wait function returns.
func (r *clusterRun) openLoop(rate, max int, timeout time.Duration, stop <-chan struct{}) func() []shortConn {
	var mu sync.Mutex
	var out []shortConn
	var wg sync.WaitGroup
	hcs := make([]*http.Client, len(r.c.Clients))
	for i, ns := range r.c.Clients {
		hcs[i] = &http.Client{Timeout: timeout, Transport: &http.Transport{DialContext: ns.DialContext, DisableKeepAlives: true}}
	}
	url := fmt.Sprintf("http://%s/", lab.ClusterVIP)
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(time.Second / time.Duration(rate))
		defer tick.Stop()
		for n := 0; n < max; n++ {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			wg.Add(1)
			go func(hc *http.Client) {
				defer wg.Done()
				sc := shortConn{start: time.Now()}
				resp, err := hc.Get(url)
				if err == nil {
					_, err = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if err == nil && resp.StatusCode != 200 {
						err = fmt.Errorf("status %s", resp.Status)
					}
					sc.snat = snatOf(resp)
				}
				sc.err = err
				mu.Lock()
				out = append(out, sc)
				mu.Unlock()
			}(hcs[n%len(hcs)])
		}
	}()
	return func() []shortConn {
		wg.Wait()
		sort.Slice(out, func(i, j int) bool { return out[i].start.Before(out[j].start) })
		return out
	}
}

func snatOf(resp *http.Response) netip.Addr {
	ap, err := netip.ParseAddrPort(resp.Header.Get("X-Client"))
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

// stream is one long-lived connection: GET /bytes of n bytes read at
// about rate bytes/s, its sha256 checked against lab.Stream.
type stream struct {
	snat  netip.Addr
	bytes int64
	err   error
}

// runStream fetches one stream; deadline bounds the whole transfer (a
// stream of the killed instance waits for it: its client never hears
// from the flow again).
func runStream(ns *lab.NS, seed uint64, n int64, chunk int, every time.Duration, deadline time.Duration) stream {
	return streamFrom(ns, lab.ClusterVIP.String(), seed, n, chunk, every, deadline)
}

// streamFrom is runStream from the service at host (an address, or
// address:port).
func streamFrom(ns *lab.NS, host string, seed uint64, n int64, chunk int, every time.Duration, deadline time.Duration) stream {
	var st stream
	hc := &http.Client{Timeout: deadline, Transport: &http.Transport{DialContext: ns.DialContext, DisableKeepAlives: true,
		ReadBufferSize: chunk}}
	resp, err := hc.Get(fmt.Sprintf("http://%s/bytes?n=%d&seed=%d", host, n, seed))
	if err != nil {
		st.err = err
		return st
	}
	defer resp.Body.Close()
	st.snat = snatOf(resp)
	got := sha256.New()
	buf := make([]byte, chunk)
	for {
		k, err := io.ReadFull(resp.Body, buf)
		got.Write(buf[:k])
		st.bytes += int64(k)
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			break
		}
		if err != nil {
			st.err = err
			return st
		}
		time.Sleep(every)
	}
	want := sha256.New()
	io.Copy(want, lab.Stream(seed, n))
	if st.bytes != n || string(got.Sum(nil)) != string(want.Sum(nil)) {
		st.err = fmt.Errorf("stream %d: %d of %d bytes, sha256 match %v", seed, st.bytes, n, string(got.Sum(nil)) == string(want.Sum(nil)))
	}
	return st
}

// streams starts k long-lived streams (staggered over about a second) and
// returns a function waiting for their results.
func (r *clusterRun) streams(k int, seed0 uint64, n int64) func() []stream {
	out := make([]stream, k)
	var wg sync.WaitGroup
	for i := range k {
		wg.Add(1)
		go func() {
			defer wg.Done()
			time.Sleep(time.Duration(i) * 10 * time.Millisecond)
			out[i] = runStream(r.c.Clients[i%len(r.c.Clients)], seed0+uint64(i), n, 8<<10, 50*time.Millisecond, 30*time.Second)
		}()
	}
	return func() []stream { wg.Wait(); return out }
}

// spread counts the successful connections by instance.
func (r *clusterRun) spread(cs []shortConn) (by [3]int, ok int) {
	for _, c := range cs {
		if c.err != nil {
			continue
		}
		if i := r.instanceOf(c.snat); i >= 0 {
			by[i]++
			ok++
		}
	}
	return by, ok
}

// TestClusterDatapath: three instances under open-loop new connections
// and 100 long-lived streams. New flows spread over all three; kill -9 of
// one: every stream a survivor owns completes intact, new connections
// fail only inside the detection window; it rejoins (its TIME_WAIT
// ledger restored from its files), announces and gets new flows; a
// graceful drain of another under the same load fails nothing; no old
// ACK anywhere; BGP bad input (a router announcing prefixes to the
// instances, a router that flaps) changes nothing but counters.
func TestClusterDatapath(t *testing.T) {
	junk := netip.MustParsePrefix("198.19.99.0/24")
	r := newClusterRun(t, []netip.Prefix{junk})
	t0 := time.Now()
	for i := range 3 {
		r.start(i)
	}
	r.waitHops("three instances up", 0, 1, 2)
	t.Logf("3 instances started; VIP in the router's FIB with 3 next hops %v after the first start", time.Since(t0).Round(time.Millisecond))
	stopScrape := make(chan struct{})
	scraped := make(chan struct{})
	go func() {
		defer close(scraped)
		for {
			r.scrape()
			select {
			case <-stopScrape:
				return
			case <-time.After(250 * time.Millisecond):
			}
		}
	}()
	defer func() {
		select {
		case <-stopScrape:
		default:
			close(stopScrape)
		}
		<-scraped
	}()

	// Phase 1: load, kill -9 of instance 3, rejoin.
	const rate = 40
	stop := make(chan struct{})
	short := r.openLoop(rate, rate*40, 3*time.Second, stop)
	long := r.streams(100, 1000, 2<<20) // ~13 s each at 160 KB/s
	time.Sleep(4 * time.Second)
	r.scrape()
	victim := 2
	oldACKsBefore := r.metric(victim, "tslb_collisions_total", "signature=old_ack")
	kill := time.Now()
	r.tslb[victim].Kill()
	r.tslb[victim] = nil
	// Detection: the router (the BGP session closes with the process) and
	// the survivors (heartbeats stop; dead after 2 s).
	routerGone := r.waitHops("router drops the killed instance", 0, 1)
	eventually(t, "survivors declare instance 3 dead", 5*time.Second, func() bool {
		r.scrape()
		return r.metric(0, "tslb_cluster_member_up", "member=3") == 0 && r.metric(1, "tslb_cluster_member_up", "member=3") == 0
	})
	membersGone := time.Since(kill)
	t.Logf("kill -9: router next hop gone after %v, survivors' view after %v", routerGone.Round(time.Millisecond), membersGone.Round(time.Millisecond))
	if membersGone > 3*time.Second {
		t.Errorf("survivors took %v to see the instance dead, want <= 3 s", membersGone)
	}
	time.Sleep(3 * time.Second)
	rejoin := time.Now()
	r.start(victim)
	rejoined := r.waitHops("killed instance rejoins", 0, 1, 2)
	t.Logf("restarted instance announced again %v after its start", rejoined.Round(time.Millisecond))
	time.Sleep(4 * time.Second)
	close(stop)
	shorts := short()
	streams := long()

	var before, after []shortConn
	var failedOutside []shortConn
	windowFrom, windowTo := kill.Add(-3*time.Second), kill.Add(3*time.Second)
	failedIn := 0
	for _, c := range shorts {
		switch {
		case c.start.Before(kill):
			before = append(before, c)
		case c.start.After(rejoin):
			after = append(after, c)
		}
		if c.err != nil {
			if c.start.After(windowFrom) && c.start.Before(windowTo) {
				failedIn++
			} else {
				failedOutside = append(failedOutside, c)
			}
		}
	}
	by, ok := r.spread(before)
	t.Logf("before the kill: %d new connections, by instance %v", ok, by)
	for i, n := range by {
		if ok == 0 || float64(n) < 0.2*float64(ok) {
			t.Errorf("instance %d got %d of %d new connections before the kill, want >= 20%%", i+1, n, ok)
		}
	}
	for _, c := range failedOutside {
		t.Errorf("connection started %v after the kill failed outside the detection window: %v", c.start.Sub(kill).Round(time.Millisecond), c.err)
	}
	t.Logf("new connections failed inside the window [kill-3s, kill+3s]: %d of %d started there", failedIn, countIn(shorts, windowFrom, windowTo))
	byAfter, okAfter := r.spread(after)
	t.Logf("after the rejoin: %d new connections, by instance %v", okAfter, byAfter)
	if byAfter[victim] == 0 {
		t.Errorf("the rejoined instance got no new connection (%v)", byAfter)
	}
	lost, owned := 0, 0
	for i, s := range streams {
		inst := r.instanceOf(s.snat)
		if inst == victim {
			owned++
			if s.err != nil {
				lost++
				if lost <= 3 {
					t.Logf("stream %d of the killed instance: %d bytes, then %v", i, s.bytes, s.err)
				}
			}
			continue
		}
		if s.err != nil {
			t.Errorf("stream %d (instance %d, a survivor) broke: %v", i, inst+1, s.err)
		}
	}
	r.scrape()
	t.Logf("long-lived streams: %d owned by the killed instance, %d of them lost (no state is shared); the restarted instance found %v flows live at the crash in its ledger (tslb_ledger_recovered_tuples{state=\"unknown\"}: every flow it lost, streams and short connections)",
		owned, lost, r.metric(victim, "tslb_ledger_recovered_tuples", "state=unknown"))
	for i := range 3 {
		t.Logf("instance %d: forwarded %v, received %v frames; second chances %v; not_held %v; flows lost with a dead peer %v", i+1,
			r.metric(i, "tslb_cluster_frames_forwarded_total"), r.metric(i, "tslb_cluster_frames_received_total"),
			r.metric(i, "tslb_cluster_decisions_total", "verdict=forward_previous"),
			r.metric(i, "tslb_cluster_decisions_total", "verdict=not_held"), r.metric(i, "tslb_cluster_flows_lost_total"))
	}

	// Phase 2: graceful drain of instance 2 under the same load.
	stop = make(chan struct{})
	short = r.openLoop(rate, rate*40, 3*time.Second, stop)
	long = r.streams(100, 2000, 2<<20)
	time.Sleep(3 * time.Second)
	drained := 1
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	out, err := exec.CommandContext(ctx, tslbBinary, "drain", "-socket", filepath.Join(r.tslb[drained].Config.Control.Socket)).CombinedOutput()
	cancel()
	if err != nil {
		t.Fatalf("tslb drain: %v: %s", err, out)
	}
	drainAt := time.Now()
	r.waitHops("drained instance withdrawn", 0, 2)
	t.Logf("tslb drain: route withdrawn after %v", time.Since(drainAt).Round(time.Millisecond))
	code, err := r.tslb[drained].Stop(60 * time.Second) // it exits by itself once its flows end
	if err != nil || code != 0 {
		t.Errorf("drained instance: exit %d, %v", code, err)
	}
	t.Logf("drained instance exited %v after tslb drain", time.Since(drainAt).Round(time.Millisecond))
	r.tslb[drained] = nil
	close(stop)
	shorts = short()
	streams = long()
	failed := 0
	for _, c := range shorts {
		if c.err != nil {
			failed++
			if failed <= 5 {
				t.Errorf("connection during the drain failed (%v after it): %v", c.start.Sub(drainAt).Round(time.Millisecond), c.err)
			}
		}
	}
	ownedDrained := 0
	for i, s := range streams {
		if r.instanceOf(s.snat) == drained {
			ownedDrained++
		}
		if s.err != nil {
			t.Errorf("stream %d (instance %d) broke during the drain: %v", i, r.instanceOf(s.snat)+1, s.err)
		}
	}
	t.Logf("drain: %d new connections, %d failed; %d streams, %d owned by the drained instance, all checked", len(shorts), failed, len(streams), ownedDrained)

	// Bad input: the router announces a prefix to the instances (received,
	// never imported), and flaps twice (killed, restarted); the VIP comes
	// back each time and the instances keep running.
	r.scrape()
	for _, i := range []int{0, 2} {
		if got := r.metric(i, "tslb_bgp_routes_received"); got != 1 {
			t.Errorf("instance %d: routes received from the router %v, want 1 (%s)", i+1, got, junk)
		}
	}
	for flap := range 2 {
		if err := r.c.StopRouter(true); err != nil {
			t.Fatal(err)
		}
		if err := r.c.StartRouter(); err != nil {
			t.Fatal(err)
		}
		d := r.waitHops(fmt.Sprintf("flap %d: routes back", flap+1), 0, 2)
		t.Logf("router flap %d: VIP back with 2 next hops %v after BIRD restarted", flap+1, d.Round(time.Millisecond))
	}
	res := lab.Requests(context.Background(), r.c.Clients, fmt.Sprintf("http://%s/", lab.ClusterVIP), 100, 8, 3*time.Second, 30*time.Second, false)
	if res.Errors > 0 {
		t.Errorf("after the flaps: %d of 100 requests failed: %v", res.Errors, res.FirstErrors)
	}
	r.scrape()
	for _, i := range []int{0, 2} {
		if got := r.metric(i, "tslb_bgp_session_establishments_total"); got < 3 {
			t.Errorf("instance %d: %v session establishments, want >= 3 after two flaps", i+1, got)
		}
		if r.tslb[i].Exited() {
			t.Errorf("instance %d exited during the flaps", i+1)
		}
	}
	// No TIME_WAIT collision in the whole run: the detector of every
	// instance (the killed one up to its kill, each one's later run) saw
	// no old ACK.
	oldACKs := oldACKsBefore
	for i := range 3 {
		oldACKs += r.metric(i, "tslb_collisions_total", "signature=old_ack")
	}
	if oldACKs != 0 {
		t.Errorf("%v old ACKs (TIME_WAIT collisions) in the run", oldACKs)
	}
	t.Logf("old ACKs in the run: %v; total time %v", oldACKs, time.Since(t0).Round(time.Second))
}

func countIn(cs []shortConn, from, to time.Time) int {
	n := 0
	for _, c := range cs {
		if c.start.After(from) && c.start.Before(to) {
			n++
		}
	}
	return n
}

// TestClusterConfigOverlap: an instance whose SNAT overlaps another
// member's is refused with the file, key and line: in its own file (tslb
// run exits 2 before touching anything), and across the files of a
// cluster when each file is consistent on its own (tslb check-config).
func TestClusterConfigOverlap(t *testing.T) {
	dir := t.TempDir()
	read := func(name string) string {
		b, err := os.ReadFile("../config/testdata/cluster/" + name)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	write := func(name, s string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	a, b := write("a.yaml", read("a.yaml")), write("b.yaml", read("b.yaml"))
	// In its own file: instance 3 takes instance 2's address.
	own := write("c-own.yaml", strings.ReplaceAll(read("c.yaml"), "198.18.1.103", "198.18.1.102"))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, tslbBinary, "run", "-c", own).CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 || !strings.Contains(string(out), "c-own.yaml:") || !strings.Contains(string(out), "snat") {
		t.Errorf("tslb run of an instance overlapping another's SNAT: %v, output:\n%s", err, out)
	}
	t.Logf("tslb run:\n%s", out)
	// Across files: c's own list moves member 2 to .104 and takes .102.
	c := read("c.yaml")
	c = strings.Replace(c, "snat_addresses: [198.18.1.102]", "snat_addresses: [198.18.1.104]", 1)
	c = strings.ReplaceAll(c, "198.18.1.103", "198.18.1.102")
	cross := write("c-cross.yaml", c)
	if out, err := exec.Command(tslbBinary, "check-config", cross).CombinedOutput(); err != nil {
		t.Fatalf("c-cross.yaml alone should be valid: %v\n%s", err, out)
	}
	out, err = exec.Command(tslbBinary, "check-config", a, b, cross).CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 || !strings.Contains(string(out), "snat.addresses") {
		t.Errorf("check-config across overlapping files: %v, output:\n%s", err, out)
	}
	t.Logf("check-config a b c-cross:\n%s", out)
}

// TestDemoCluster runs `tslb demo -cluster 3`: three instances share the
// load, one is stopped with SIGTERM mid-run, no request fails.
func TestDemoCluster(t *testing.T) {
	lab.Require(t)
	lab.RequireBird(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	start := time.Now()
	out, err := exec.CommandContext(ctx, tslbBinary, "demo", "-cluster", "3", "-requests", "600").CombinedOutput()
	text := strings.ReplaceAll(string(out), "\r", "\n")
	if err != nil || !strings.Contains(text, "600 requests, 0 failed") || !strings.Contains(text, "instance 3 stopped: exit code 0") {
		t.Fatalf("tslb demo -cluster 3: %v\n%s", err, text)
	}
	for _, l := range strings.Split(text, "\n") {
		if strings.HasPrefix(strings.TrimSpace(l), "tslb ") && strings.Contains(l, "%") {
			t.Log(strings.TrimSpace(l))
		}
	}
	t.Logf("demo took %v", time.Since(start).Round(time.Millisecond))
}

// procCPU returns the user+system CPU time of process pid.
func procCPU(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after the command (which may hold spaces) in parentheses.
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	var ut, st int64
	fmt.Sscan(f[11], &ut)
	fmt.Sscan(f[12], &st)
	return time.Duration(ut+st) * 10 * time.Millisecond // USER_HZ = 100
}

// BenchmarkClusterConnections: one op = one HTTP/1.1 request on a new TCP
// connection to the VIP through the router (connect, GET, server closes),
// 32 in flight from two client namespaces, with 1 and with 3 tslb
// instances (one worker each) behind the router's ECMP. It reports the
// aggregate rate, the CPU the tslb processes spent per connection, and
// the client frames forwarded between instances per connection; the
// difference in CPU per forwarded frame estimates the cost of the hop.
// Everything (clients, router, backends' servers, instances) shares this
// machine's cores: compare the two rows of one run.
func BenchmarkClusterConnections(b *testing.B) {
	for _, k := range []int{1, 3} {
		b.Run(fmt.Sprintf("instances=%d", k), func(b *testing.B) {
			c := lab.NewClusterT(b, lab.ClusterConfig{Instances: k, Clients: 2, Backends: 3})
			if _, err := c.StartBackends(lab.ServerConfig{Port: 8080, CloseFirst: true}); err != nil {
				b.Fatal(err)
			}
			var ts []*harness.TSLB
			for _, in := range c.Instances {
				dir := b.TempDir()
				o := harness.Options{Binary: tslbBinary, Dir: dir, NS: in.NS, Workers: 1, LogLevel: "warn"}
				o.Custom = harness.ClusterConfig(c, in, o)
				t, err := harness.Start(context.Background(), c.Lab, o)
				if err != nil {
					b.Fatal(err)
				}
				b.Cleanup(func() { t.Stop(10 * time.Second) })
				ts = append(ts, t)
			}
			deadline := time.Now().Add(20 * time.Second)
			for {
				h, err := c.RouterNextHops(netip.PrefixFrom(lab.ClusterVIP, 32))
				if err == nil && len(h) == k {
					break
				}
				if time.Now().After(deadline) {
					b.Fatalf("router next hops %v, want %d", h, k)
				}
				time.Sleep(100 * time.Millisecond)
			}
			sample := func() (cpu time.Duration, fwd float64) {
				for _, t := range ts {
					cpu += procCPU(t.Pid())
					if m, err := t.Metrics(context.Background()); err == nil {
						fwd += m.Sum("tslb_cluster_frames_forwarded_total")
					}
				}
				return
			}
			// Idle cost (heartbeats, BGP keepalives, timers) over 2 s, to
			// tell it from the per-connection cost.
			idle0, _ := sample()
			time.Sleep(2 * time.Second)
			cpu0, fwd0 := sample()
			url := fmt.Sprintf("http://%s/", lab.ClusterVIP)
			b.ResetTimer()
			start := time.Now()
			res := lab.Requests(context.Background(), c.Clients, url, b.N, 32, 5*time.Second, 5*time.Minute, false)
			el := time.Since(start)
			b.StopTimer()
			if res.Errors > 0 {
				b.Fatalf("%d errors: %v", res.Errors, res.FirstErrors)
			}
			cpu1, fwd1 := sample()
			b.ReportMetric(float64(b.N)/el.Seconds(), "conns/s")
			b.ReportMetric(float64((cpu1-cpu0).Microseconds())/float64(b.N), "tslb-cpu-µs/conn")
			b.ReportMetric((fwd1-fwd0)/float64(b.N), "forwarded/conn")
			b.ReportMetric(float64((cpu0-idle0).Milliseconds())/2, "idle-cpu-ms/s")
		})
	}
}

// TestClusterHealthWithdraw: an instance announces the VIP only while its
// service has a healthy backend. Every backend's server stops: both
// instances' health checks fail and they withdraw the VIP (the router has
// no route left); the servers come back: the VIP is announced again.
func TestClusterHealthWithdraw(t *testing.T) {
	c := lab.NewClusterT(t, lab.ClusterConfig{Instances: 2, Clients: 1, Backends: 2})
	bs, err := c.StartBackends(lab.ServerConfig{Port: 8080})
	if err != nil {
		t.Fatal(err)
	}
	var ts []*harness.TSLB
	for _, in := range c.Instances {
		src := netip.AddrFrom4([4]byte{198, 18, 1, byte(90 + in.ID)})
		if out, err := in.NS.Command(context.Background(), "ip", "addr", "add", src.String()+"/24", "dev", lab.ClusterBackendIf).CombinedOutput(); err != nil {
			t.Fatalf("health source on %s: %v: %s", in.NS.Name, err, out)
		}
		o := harness.Options{Binary: tslbBinary, Dir: t.TempDir(), NS: in.NS, Workers: 1,
			HealthCheck: &config.HealthCheck{Type: "tcp", Interval: 200 * time.Millisecond, Timeout: 150 * time.Millisecond, Rise: 2, Fall: 2}}
		o.Custom = harness.ClusterConfig(c, in, o)
		o.Custom.Health.Source = src
		tl, err := harness.Start(context.Background(), c.Lab, o)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if t.Failed() {
				t.Logf("instance %d log:\n%s", in.ID, tl.Log())
			}
			tl.Stop(10 * time.Second)
		})
		ts = append(ts, tl)
	}
	vip := netip.PrefixFrom(lab.ClusterVIP, 32)
	hops := func(want int) time.Duration {
		t.Helper()
		return eventually(t, fmt.Sprintf("router next hops for the VIP: %d", want), 15*time.Second, func() bool {
			h, err := c.RouterNextHops(vip)
			return err == nil && len(h) == want
		})
	}
	hops(2)
	for _, b := range bs {
		b.Close()
	}
	down := time.Now()
	hops(0)
	t.Logf("every backend down: VIP withdrawn by both instances %v after the servers stopped", time.Since(down).Round(time.Millisecond))
	for i, tl := range ts {
		body, err := tl.Status(context.Background())
		if err != nil || !strings.Contains(string(body), `"no_healthy_backend"`) {
			t.Errorf("instance %d status: %v %s", i+1, err, body)
		}
	}
	if _, err := c.StartBackends(lab.ServerConfig{Port: 8080}); err != nil {
		t.Fatal(err)
	}
	up := time.Now()
	hops(2)
	t.Logf("backends back: VIP announced again %v after the servers started", time.Since(up).Round(time.Millisecond))
}
