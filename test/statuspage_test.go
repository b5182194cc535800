package test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/html"

	"tslb/config"
	"tslb/lb"
	"tslb/test/bench"
	"tslb/test/harness"
	"tslb/test/lab"
)

// statusURL is the status page as seen from tslb's namespace.
const statusURL = "http://" + harness.MetricsAddr + "/"

// chromiumDOM loads url in headless Chromium inside ns and returns the DOM
// it built, with Chromium's console log (where a Content-Security-Policy
// violation would show). shot, if not "", is where a 1280×1600
// screenshot goes.
func chromiumDOM(t *testing.T, bin string, ns *lab.NS, url, shot string) (dom, console string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	args := []string{"--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions",
		"--user-data-dir=" + t.TempDir(), "--enable-logging=stderr", "--v=0", "--window-size=1280,1600"}
	if shot != "" {
		args = append(args, "--screenshot="+shot)
	} else {
		args = append(args, "--dump-dom")
	}
	cmd := ns.Command(ctx, bin, append(args, url)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("chromium %s: %v\n%s", url, err, errb.String())
	}
	return out.String(), errb.String()
}

// backendRows returns data-health by data-backend of the tr.backend rows
// of dom.
func backendRows(t *testing.T, dom string) map[string]string {
	t.Helper()
	doc, err := html.Parse(strings.NewReader(dom))
	if err != nil {
		t.Fatal(err)
	}
	rows := map[string]string{}
	var walk func(*html.Node)
	walk = func(n *html.Node) {
		if n.Type == html.ElementNode && n.Data == "tr" {
			a := map[string]string{}
			for _, at := range n.Attr {
				a[at.Key] = at.Val
			}
			if a["class"] == "backend" {
				rows[a["data-backend"]] = a["data-health"]
			}
		}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			walk(c)
		}
	}
	walk(doc)
	return rows
}

// artifactDir is where a test's files worth keeping go: $TSLB_TEST_OUT/<test>
// if set, else t.ArtifactDir() (under -outputdir with -artifacts, a
// temporary directory otherwise).
func artifactDir(t *testing.T) string {
	if d := os.Getenv("TSLB_TEST_OUT"); d != "" {
		d = filepath.Join(d, t.Name())
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		return d
	}
	return t.ArtifactDir()
}

// TestStatusPageBrowser loads the status page in headless Chromium during
// a light load: both backends' rows are there and up; after one backend's
// server is killed and the health check noticed, the reloaded page marks
// it down. The browser applies the page's stylesheet under its CSP (no
// violation in its console) and a screenshot is kept.
func TestStatusPageBrowser(t *testing.T) {
	chromium := requireTool(t, "chromium", "chromium")
	start := time.Now()
	hc := &config.HealthCheck{Type: "http", Interval: 300 * time.Millisecond, Timeout: 200 * time.Millisecond, Rise: 2, Fall: 2, Path: "/", ExpectStatus: 200}
	l, bs, tl := deploy(t, 1, 2, lab.ServerConfig{Port: 8080, CloseFirst: true}, harness.Options{HealthCheck: hc, PcapDir: t.TempDir(), Control: true})
	ctx, stop := context.WithTimeout(context.Background(), 40*time.Second)
	defer stop()
	var wg sync.WaitGroup
	var sent atomic.Int64
	wg.Add(1)
	go func() { // ~20 requests/s until the test ends (at most 40 s)
		defer wg.Done()
		for ctx.Err() == nil {
			r := lab.Requests(ctx, l.Clients, fmt.Sprintf("http://%s/", l.VIP), 4, 2, time.Second, time.Second, false)
			sent.Add(int64(r.OK + r.Errors))
			select {
			case <-ctx.Done():
			case <-time.After(200 * time.Millisecond):
			}
		}
	}()
	defer func() { stop(); wg.Wait() }()
	time.Sleep(4500 * time.Millisecond) // two history samples

	addr := func(i int) string { return netip.AddrPortFrom(l.Backends[i].Addr, 8080).String() }
	dom, console := chromiumDOM(t, chromium, l.LB, statusURL, "")
	rows := backendRows(t, dom)
	if len(rows) != 2 || rows[addr(0)] != "up" || rows[addr(1)] != "up" {
		t.Errorf("before the kill: backend rows %v, want %s and %s up", rows, addr(0), addr(1))
	}
	if !strings.Contains(dom, `class="spark"`) || strings.Contains(dom, `id="no-samples"`) {
		t.Errorf("no charts on the page after 4.5 s")
	}
	if strings.Contains(console, "Content Security Policy") || strings.Contains(console, "Refused to") {
		t.Errorf("chromium reports a CSP violation:\n%s", console)
	}

	// HTML from the configuration: a service name with a script in it is
	// refused by the reload, and the page shows the error with the name
	// escaped.
	cfgText, err := os.ReadFile(tl.ConfigPath)
	if err != nil {
		t.Fatal(err)
	}
	bad := bytes.Replace(cfgText, []byte("name: web"), []byte(`name: "web<script>alert(1)</script>"`), 1)
	if bytes.Equal(bad, cfgText) {
		t.Fatalf("no \"name: web\" in the configuration:\n%s", cfgText)
	}
	if err := tl.WriteRaw(bad); err != nil {
		t.Fatal(err)
	}
	if err := tl.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	for i := 0; ; i++ {
		body, err := tl.Status(ctx)
		var st lb.Status
		if err == nil && json.Unmarshal(body, &st) == nil && !st.Config.LastReload.IsZero() && !st.Config.LastReloadOK {
			if !strings.Contains(st.Config.LastReloadError, "<script>") {
				t.Errorf("reload error %q does not quote the name", st.Config.LastReloadError)
			}
			break
		}
		if i == 50 {
			t.Fatalf("the bad reload does not show on status.json")
		}
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond) // past the cache
	dom, _ = chromiumDOM(t, chromium, l.LB, statusURL, "")
	if strings.Contains(dom, "<script") || !strings.Contains(dom, "web&lt;script&gt;alert(1)&lt;/script&gt;") {
		t.Errorf("the refused service name is not shown escaped")
	}
	if !strings.Contains(dom, `data-reload-ok="false"`) {
		t.Errorf("the page does not show the failed reload")
	}
	if err := tl.WriteRaw(cfgText); err != nil {
		t.Fatal(err)
	}

	killed := time.Now()
	bs[1].Close()
	deadline := killed.Add(time.Duration(hc.Fall)*hc.Interval + 3*time.Second)
	for {
		body, err := tl.Status(ctx)
		var st lb.Status
		if err == nil && json.Unmarshal(body, &st) == nil && len(st.Services) == 1 && len(st.Services[0].Backends) == 2 && !st.Services[0].Backends[1].Up {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("status.json does not show %s down %v after the kill", addr(1), time.Since(killed))
		}
		time.Sleep(100 * time.Millisecond)
	}
	detected := time.Since(killed)
	time.Sleep(300 * time.Millisecond) // past the 250 ms cache
	dom, _ = chromiumDOM(t, chromium, l.LB, statusURL, "")
	rows = backendRows(t, dom)
	if rows[addr(0)] != "up" || rows[addr(1)] != "down" {
		t.Errorf("after the kill: backend rows %v, want %s up and %s down", rows, addr(0), addr(1))
	}
	// `tslb status` on the control socket says the same.
	out, err := exec.Command(tslbBinary, "status", "-socket", tl.Config.Control.Socket).CombinedOutput()
	if err != nil {
		t.Errorf("tslb status: %v\n%s", err, out)
	}
	for _, want := range []string{addr(0) + "  up", addr(1) + "  down", "DROP REASON", "KERNEL DROPS"} {
		if !bytes.Contains(out, []byte(want)) {
			t.Errorf("tslb status lacks %q:\n%s", want, out)
		}
	}
	shot := filepath.Join(artifactDir(t), "status.png")
	chromiumDOM(t, chromium, l.LB, statusURL, shot)
	png, err := os.ReadFile(shot)
	if err != nil || len(png) < 1000 || !bytes.HasPrefix(png, []byte("\x89PNG")) {
		t.Errorf("screenshot %s: %d bytes, %v", shot, len(png), err)
	}
	t.Logf("down on status.json %v after the kill; %d requests of light load; screenshot %s (%d bytes); test took %v",
		detected.Round(time.Millisecond), sent.Load(), shot, len(png), time.Since(start).Round(time.Millisecond))
}

// storm sends n GETs spread over paths of the metrics listener from ns at
// rate per second (a fixed schedule, several senders, keep-alive), each
// bounded by 2 s; it returns how many were answered 200, the first other
// outcomes, and the p99 of the answers' latency.
func storm(ctx context.Context, ns *lab.NS, paths []string, n int, rate float64) (ok int, bad []string, p99 time.Duration, took time.Duration) {
	hc := ns.HTTPClient(true, 2*time.Second)
	const senders = 16
	var mu sync.Mutex
	var lat []time.Duration
	var wg sync.WaitGroup
	begin := time.Now()
	for s := range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := s; i < n; i += senders {
				at := begin.Add(time.Duration(float64(i) / rate * float64(time.Second)))
				if d := time.Until(at); d > 0 {
					time.Sleep(d)
				}
				if ctx.Err() != nil {
					return
				}
				t0 := time.Now()
				resp, err := hc.Get("http://" + harness.MetricsAddr + paths[i%len(paths)])
				var code int
				if err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					code = resp.StatusCode
				}
				mu.Lock()
				if code == 200 {
					ok++
					lat = append(lat, time.Since(t0))
				} else if len(bad) < 5 {
					bad = append(bad, fmt.Sprintf("%s: %d %v", paths[i%len(paths)], code, err))
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	took = time.Since(begin)
	if len(lat) > 0 {
		slices.Sort(lat)
		p99 = lat[min(len(lat)-1, len(lat)*99/100)]
	}
	return ok, bad, p99, took
}

// TestStatusPageScrapeStorm measures a request/response load through tslb
// for a fixed window, without and then with ~1,000 scrapes/s of /,
// /status.json and /metrics on the metrics listener. It asserts what must
// hold (every scrape answered 200, the datapath forwarded in both phases
// with no error) and reports the figures: transactions/s and p99 of both
// phases, their ratio, tslb's CPU seconds in each.
func TestStatusPageScrapeStorm(t *testing.T) {
	const (
		window = 6 * time.Second
		conns  = 16
		rate   = 1000.0
	)
	l := lab.NewT(t, lab.Config{Clients: 2, Backends: 2})
	if _, err := l.StartBackends(lab.ServerConfig{Port: 8080, CloseFirst: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := l.StartRRServers(lab.RRConfig{Port: 8081, Size: 64}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	tl, err := harness.Start(ctx, l, harness.Options{Binary: tslbBinary, Dir: t.TempDir(), LogLevel: "warn",
		ExtraPorts: []lab.PortMap{{VIPPort: 81, BackendPort: 8081}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if code, err := tl.Stop(10 * time.Second); code != 0 || err != nil {
			t.Errorf("tslb stop: %d %v; log:\n%s", code, err, tl.Log())
		}
	})
	var targets []bench.Target
	for _, c := range l.Clients {
		d := bench.NewDialer(c)
		defer d.Close()
		targets = append(targets, bench.Target{Dialer: d, Dst: netip.AddrPortFrom(l.VIP, 81)})
	}
	loops := runtime.NumCPU()
	phase := func(name string, during func()) (bench.RRResult, time.Duration) {
		cpu0 := procCPU(tl.Pid())
		done := make(chan struct{})
		if during != nil {
			go func() { during(); close(done) }()
		} else {
			close(done)
		}
		r := bench.RR(ctx, targets, conns, 64, window, 2*time.Second, loops)
		<-done
		cpu := procCPU(tl.Pid()) - cpu0
		if r.Errors != 0 || r.Transactions == 0 {
			t.Errorf("%s: %d transactions, %d errors %v", name, r.Transactions, r.Errors, r.FirstErrors)
		}
		return r, cpu
	}
	quiet, quietCPU := phase("without storm", nil)
	n := int(rate * window.Seconds() * 0.9) // ends inside the window
	type stormResult struct {
		ok        int
		bad       []string
		p99, took time.Duration
	}
	stormPhase := func(name string, paths []string) (bench.RRResult, time.Duration, stormResult) {
		var sr stormResult
		r, cpu := phase(name, func() { sr.ok, sr.bad, sr.p99, sr.took = storm(ctx, l.LB, paths, n, rate) })
		if sr.ok != n {
			t.Errorf("%s: %d of %d scrapes answered 200; first others: %v", name, sr.ok, n, sr.bad)
		}
		return r, cpu, sr
	}
	// The storm asked for (all three paths), then one on the status page
	// alone (its 250 ms cache), to tell their costs apart.
	loud, loudCPU, sr := stormPhase("with storm", []string{"/", "/status.json", "/metrics"})
	page, pageCPU, pr := stormPhase("with status-page storm", []string{"/", "/status.json"})
	tps := func(r bench.RRResult) float64 { return float64(r.Transactions) / r.Elapsed.Seconds() }
	p99 := func(r bench.RRResult) time.Duration { return time.Duration(r.Latency.Quantile(99)) }
	t.Logf("without storm: %.0f tx/s, p99 %v, tslb CPU %.2f s in %v", tps(quiet), p99(quiet), quietCPU.Seconds(), window)
	for _, ph := range []struct {
		name string
		r    bench.RRResult
		cpu  time.Duration
		s    stormResult
	}{{"/, /status.json, /metrics", loud, loudCPU, sr}, {"/, /status.json only", page, pageCPU, pr}} {
		t.Logf("with storm on %s (%d scrapes in %v = %.0f/s, scrape p99 %v): %.0f tx/s, p99 %v, tslb CPU %.2f s in %v; ratio to without: tx/s %.3f, p99 %.2f",
			ph.name, n, ph.s.took.Round(time.Millisecond), float64(n)/ph.s.took.Seconds(), ph.s.p99, tps(ph.r), p99(ph.r), ph.cpu.Seconds(), window,
			tps(ph.r)/tps(quiet), float64(p99(ph.r))/float64(p99(quiet)))
	}
}
