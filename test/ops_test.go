package test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"tslb/config"
	"tslb/test/harness"
	"tslb/test/lab"
)

// opsDeploy is deploy() with the operations options (health checks,
// control socket, shutdown timeout, state file) and without the automatic
// stop check, which some tests do themselves.
func opsDeploy(t *testing.T, clients, backends int, sc lab.ServerConfig, o harness.Options) (*lab.Lab, []*lab.Backend, *harness.TSLB) {
	t.Helper()
	l := lab.NewT(t, lab.Config{Clients: clients, Backends: backends, IPv6: o.IPv6})
	bs, err := l.StartBackends(sc)
	if err != nil {
		t.Fatal(err)
	}
	o.Binary = tslbBinary
	if o.Dir == "" {
		o.Dir = t.TempDir()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tl, err := harness.Start(ctx, l, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if !tl.Exited() {
			tl.Kill()
		}
	})
	return l, bs, tl
}

// TestHealthCheckFailover kills one backend's server during a steady load:
// new flows stop going to it within interval × fall + 1 s, no client error
// after that, and it gets flows again after rise × interval once its
// server is back. For IPv4 and IPv6 (probes from health.source6).
func TestHealthCheckFailover(t *testing.T) { forFamilies(t, testHealthCheckFailover) }

func testHealthCheckFailover(t *testing.T, ipv6 bool) {
	hc := &config.HealthCheck{Type: "http", Interval: 300 * time.Millisecond, Timeout: 200 * time.Millisecond, Rise: 2, Fall: 2, Path: "/", ExpectStatus: 200}
	l, bs, tl := opsDeploy(t, 2, 3, lab.ServerConfig{Port: 8080, CloseFirst: true}, harness.Options{HealthCheck: hc, LogLevel: "info", IPv6: ipv6})
	url := vipURL(l, 80, "/")
	var res []connResult
	done := make(chan struct{})
	go func() { res = openLoopRun(l.Clients, url, 200, 40, 3*time.Second); close(done) }() // 5 s
	time.Sleep(1 * time.Second)
	killed := time.Now()
	bs[1].Close()
	time.Sleep(2 * time.Second)
	restarted := time.Now()
	if _, err := l.StartBackend(1, lab.ServerConfig{Port: 8080, CloseFirst: true}); err != nil {
		t.Fatal(err)
	}
	<-done
	detect := killed.Add(time.Duration(hc.Fall)*hc.Interval + time.Second)
	back := restarted.Add(time.Duration(hc.Rise)*hc.Interval + 500*time.Millisecond)
	var errsBefore, errsAfter, toDeadAfter, toBackAfter int
	for _, r := range res {
		switch {
		case r.err != nil && r.start.After(detect):
			errsAfter++
			t.Logf("error after detection: %v", r.err)
		case r.err != nil:
			errsBefore++
		case r.backend == "b2" && r.start.After(detect) && r.start.Before(restarted):
			toDeadAfter++
		case r.backend == "b2" && r.start.After(back):
			toBackAfter++
		}
	}
	m := metrics(t, tl)
	t.Logf("errors in the detection window %d, after it %d; b2 requests while dead after detection %d, after it came back %d; transitions down %.0f up %.0f",
		errsBefore, errsAfter, toDeadAfter, toBackAfter,
		m.Sum("tslb_backend_health_transitions_total", "to=down"), m.Sum("tslb_backend_health_transitions_total", "to=up"))
	if errsAfter != 0 || toDeadAfter != 0 {
		t.Errorf("after interval×fall+1s: %d errors and %d requests to the dead backend, want 0 and 0", errsAfter, toDeadAfter)
	}
	if toBackAfter == 0 {
		t.Errorf("the backend got no flows after it came back (rise×interval)")
	}
	if m.Sum("tslb_backend_health_transitions_total", "to=down") != 1 || m.Sum("tslb_backend_health_transitions_total", "to=up") != 1 {
		t.Errorf("health transitions: down %v up %v, want 1 and 1", m.Sum("tslb_backend_health_transitions_total", "to=down"), m.Sum("tslb_backend_health_transitions_total", "to=up"))
	}
	if got := m.Sum("tslb_backend_up"); got != 3 {
		t.Errorf("tslb_backend_up sums to %v at the end, want 3", got)
	}
}

// slowDownload starts a download of n bytes read at about rate bytes/s
// and returns a channel with its result (sha match, error) and the
// backend that served it.
func slowDownload(t *testing.T, c *lab.NS, url string, n int64, rate int) (<-chan error, string) {
	t.Helper()
	hc := c.HTTPClient(false, 2*time.Minute)
	resp, err := hc.Get(url)
	if err != nil {
		t.Fatalf("slow download: %v", err)
	}
	be := resp.Header.Get("X-Backend")
	out := make(chan error, 1)
	go func() {
		defer resp.Body.Close()
		h := sha256.New()
		buf := make([]byte, rate/20)
		var got int64
		for {
			k, err := resp.Body.Read(buf)
			h.Write(buf[:k])
			got += int64(k)
			if err == io.EOF {
				break
			}
			if err != nil {
				out <- fmt.Errorf("after %d bytes: %w", got, err)
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
		want := sha256.New()
		io.Copy(want, lab.Stream(9, n))
		if got != n || !bytes.Equal(h.Sum(nil), want.Sum(nil)) {
			out <- fmt.Errorf("got %d bytes, sha256 match %v", got, bytes.Equal(h.Sum(nil), want.Sum(nil)))
			return
		}
		out <- nil
	}()
	return out, be
}

func reloadSIGHUP(t *testing.T, tl *harness.TSLB, wantVersion float64) {
	t.Helper()
	if err := tl.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if metrics(t, tl).Sum("tslb_config_version") == wantVersion {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("config version did not reach %v after SIGHUP; log:\n%s", wantVersion, tl.Log())
}

// TestDrainByReload drains the backend of a long transfer by reload: the
// transfer finishes intact, no new flow goes to that backend, the
// remaining-flows metric shows the drain.
func TestDrainByReload(t *testing.T) {
	l, _, tl := opsDeploy(t, 1, 2, lab.ServerConfig{Port: 8080, CloseFirst: true}, harness.Options{})
	const n = 8 << 20
	result, be := slowDownload(t, l.Clients[0], fmt.Sprintf("http://%s/bytes?n=%d&seed=9", l.VIP, n), n, 2<<20) // ~4 s
	drained := map[string]int{"b1": 0, "b2": 1}[be]
	cfg := tl.Config
	cfg.Services[0].Backends[drained].Drain = true
	if err := tl.WriteConfig(cfg); err != nil {
		t.Fatal(err)
	}
	reloadSIGHUP(t, tl, 1)
	if got := metrics(t, tl).Sum("tslb_backend_flows_active", "backend="+cfg.Services[0].Backends[drained].Address.String()); got != 1 {
		t.Errorf("flows active on the drained backend = %v, want 1 (the transfer)", got)
	}
	res := lab.Requests(context.Background(), l.Clients, fmt.Sprintf("http://%s/", l.VIP), 50, 5, 3*time.Second, 30*time.Second, false)
	if res.Errors != 0 || res.ByBackend[be] != 0 {
		t.Errorf("after draining %s: %d errors, %d requests to it (want 0, 0)", be, res.Errors, res.ByBackend[be])
	}
	if err := <-result; err != nil {
		t.Errorf("transfer on the drained backend: %v", err)
	}
	if code, err := tl.Stop(10 * time.Second); code != 0 || err != nil {
		t.Errorf("stop: %d %v", code, err)
	}
}

// TestReloadBackendList changes the backend list by reload during 1,000
// requests at a steady rate and a long transfer: 0 errors, the transfer
// completes, new requests follow the new list.
func TestReloadBackendList(t *testing.T) {
	l, _, tl := opsDeploy(t, 2, 3, lab.ServerConfig{Port: 8080, CloseFirst: true}, harness.Options{})
	cfg := tl.Config
	cfg.Services[0].Backends = cfg.Services[0].Backends[:2] // b1, b2
	if err := tl.WriteConfig(cfg); err != nil {
		t.Fatal(err)
	}
	reloadSIGHUP(t, tl, 1)
	const n = 8 << 20
	result, _ := slowDownload(t, l.Clients[0], fmt.Sprintf("http://%s/bytes?n=%d&seed=9", l.VIP, n), n, 2<<20)
	var res []connResult
	done := make(chan struct{})
	go func() {
		res = openLoopRun(l.Clients, fmt.Sprintf("http://%s/", l.VIP), 1000, 200, 3*time.Second)
		close(done)
	}() // 5 s
	time.Sleep(2 * time.Second)
	// Replace b1 with b3.
	cfg2, err := config.Load(tl.ConfigPath)
	if err != nil {
		t.Fatal(err)
	}
	b3 := cfg2.Services[0].Backends[1]
	b3.Address = netip.AddrPortFrom(l.Backends[2].Addr, 8080)
	cfg2.Services[0].Backends = []config.Backend{cfg2.Services[0].Backends[1], b3}
	if err := tl.WriteConfig(cfg2); err != nil {
		t.Fatal(err)
	}
	reloaded := time.Now()
	reloadSIGHUP(t, tl, 2)
	<-done
	errs, toB1After, toB3 := 0, 0, 0
	for _, r := range res {
		if r.err != nil {
			errs++
			continue
		}
		if r.backend == "b1" && r.start.After(reloaded.Add(500*time.Millisecond)) {
			toB1After++
		}
		if r.backend == "b3" {
			toB3++
		}
	}
	t.Logf("1000 requests: %d errors, %d to b3, %d to removed b1 after the reload", errs, toB3, toB1After)
	if errs != 0 || toB1After != 0 || toB3 == 0 {
		t.Errorf("reload under load: %d errors, %d requests to the removed backend, %d to the added one", errs, toB1After, toB3)
	}
	if err := <-result; err != nil {
		t.Errorf("long transfer across two reloads: %v", err)
	}
	if code, err := tl.Stop(10 * time.Second); code != 0 || err != nil {
		t.Errorf("stop: %d %v", code, err)
	}
}

// TestInvalidReload: an invalid file keeps the running configuration, and
// the error names the key and line (log and control socket).
func TestInvalidReload(t *testing.T) {
	l, _, tl := opsDeploy(t, 1, 1, lab.ServerConfig{Port: 8080}, harness.Options{Control: true})
	good, err := os.ReadFile(tl.ConfigPath)
	if err != nil {
		t.Fatal(err)
	}
	bad := strings.Replace(string(good), "scheduler: wrr", "scheduler: wrr\n    sheduler: rr", 1)
	if bad == string(good) {
		t.Fatalf("could not make the config invalid:\n%s", good)
	}
	line := 0
	for i, s := range strings.Split(bad, "\n") {
		if strings.Contains(s, "sheduler") {
			line = i + 1
		}
	}
	if err := tl.WriteRaw([]byte(bad)); err != nil {
		t.Fatal(err)
	}
	tl.Signal(syscall.SIGHUP)
	want := fmt.Sprintf("%s:%d: services[0].sheduler", tl.ConfigPath, line)
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(tl.Log(), want) && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if !strings.Contains(tl.Log(), want) {
		t.Errorf("log lacks %q:\n%s", want, tl.Log())
	}
	out, err := exec.Command(tslbBinary, "reload", "-socket", filepath.Join(filepath.Dir(tl.ConfigPath), "tslb.sock")).CombinedOutput()
	if err == nil || !strings.Contains(string(out), want) {
		t.Errorf("tslb reload on an invalid file: err %v, output %q; want failure naming %q", err, out, want)
	}
	m := metrics(t, tl)
	if m.Sum("tslb_config_version") != 0 || m.Sum("tslb_config_last_reload_successful") != 0 || m.Sum("tslb_config_reloads_total", "result=failure") < 2 {
		t.Errorf("metrics after invalid reloads: version %v, last ok %v, failures %v", m.Sum("tslb_config_version"),
			m.Sum("tslb_config_last_reload_successful"), m.Sum("tslb_config_reloads_total", "result=failure"))
	}
	res := lab.Requests(context.Background(), l.Clients, fmt.Sprintf("http://%s/", l.VIP), 20, 4, 3*time.Second, 20*time.Second, false)
	if res.Errors != 0 {
		t.Errorf("service broken after an invalid reload: %v", res.FirstErrors)
	}
	// A valid reload through the control socket works.
	if err := tl.WriteRaw(good); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(tslbBinary, "reload", "-socket", filepath.Join(filepath.Dir(tl.ConfigPath), "tslb.sock")).CombinedOutput(); err != nil {
		t.Errorf("tslb reload: %v %s", err, out)
	}
	if v := metrics(t, tl).Sum("tslb_config_version"); v != 1 {
		t.Errorf("config version %v after a good reload, want 1", v)
	}
	if code, err := tl.Stop(10 * time.Second); code != 0 || err != nil {
		t.Errorf("stop: %d %v", code, err)
	}
}

// TestSIGTERMDuringLoad: transfers in flight when SIGTERM arrives complete
// (within shutdown.timeout), new connections are refused meanwhile, and
// tslb exits 0.
func TestSIGTERMDuringLoad(t *testing.T) {
	l, _, tl := opsDeploy(t, 1, 2, lab.ServerConfig{Port: 8080}, harness.Options{ShutdownTimeout: 20 * time.Second})
	const n = 6 << 20
	var results []<-chan error
	for range 3 {
		r, _ := slowDownload(t, l.Clients[0], fmt.Sprintf("http://%s/bytes?n=%d&seed=9", l.VIP, n), n, 2<<20) // ~3 s
		results = append(results, r)
	}
	time.Sleep(500 * time.Millisecond)
	stopped := make(chan int, 1)
	go func() {
		code, err := tl.Stop(30 * time.Second)
		if err != nil {
			t.Errorf("stop: %v", err)
		}
		stopped <- code
	}()
	time.Sleep(300 * time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 700*time.Millisecond)
	if c, err := l.Clients[0].DialContext(ctx, "tcp", fmt.Sprintf("%s:80", l.VIP)); err == nil {
		c.Close()
		t.Errorf("a new connection was accepted while tslb was stopping")
	}
	cancel()
	for i, r := range results {
		if err := <-r; err != nil {
			t.Errorf("transfer %d across SIGTERM: %v", i, err)
		}
	}
	if code := <-stopped; code != 0 {
		t.Errorf("exit code %d, want 0; log:\n%s", code, tl.Log())
	}
}

// TestStateFileAcrossRestart: the TIME_WAIT ledger is saved on stop and
// restored on start, so a restarted tslb does not hand out tuples the
// backend still holds.
func TestStateFileAcrossRestart(t *testing.T) {
	dir := t.TempDir()
	state := filepath.Join(dir, "state", "tslb-state.json")
	// Eight ports: each of the two workers owns four.
	o := harness.Options{Dir: dir, StateFile: state, PortMin: 20000, PortMax: 20007}
	l, _, tl := opsDeploy(t, 1, 1, lab.ServerConfig{Port: 8080, CloseFirst: true}, o)
	res := lab.Requests(context.Background(), l.Clients, fmt.Sprintf("http://%s/", l.VIP), 4, 1, 3*time.Second, 20*time.Second, false)
	if res.Errors != 0 {
		t.Fatalf("requests: %v", res.FirstErrors)
	}
	time.Sleep(2500 * time.Millisecond) // flows leave the table (time_wait 2 s)
	// Most of the 4 connections end with the server's FIN first; a few
	// may race with the client's.
	before := metrics(t, tl).Sum("tslb_snat_ports_time_wait")
	if before < 1 {
		t.Fatalf("%v tuples in TIME_WAIT before the restart, want >= 1", before)
	}
	if code, err := tl.Stop(10 * time.Second); code != 0 || err != nil {
		t.Fatalf("stop: %d %v", code, err)
	}
	data, err := os.ReadFile(state)
	if err != nil {
		t.Fatalf("state file: %v", err)
	}
	var sf struct {
		Tuples []json.RawMessage `json:"time_wait_tuples"`
	}
	if err := json.Unmarshal(data, &sf); err != nil || float64(len(sf.Tuples)) != before {
		t.Fatalf("state file holds %d tuples (%v):\n%s", len(sf.Tuples), err, data)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	o.Binary = tslbBinary
	tl2, err := harness.Start(ctx, l, o)
	if err != nil {
		t.Fatal(err)
	}
	defer tl2.Kill()
	if got := metrics(t, tl2).Sum("tslb_snat_ports_time_wait"); got != float64(len(sf.Tuples)) {
		t.Errorf("after restart %v tuples in TIME_WAIT, want the %d saved; log:\n%s", got, len(sf.Tuples), tl2.Log())
	}
}
