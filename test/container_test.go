package test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"tslb/test/harness"
	"tslb/test/lab"
)

// hostState is what a test must leave as it found it in the host's
// network namespace: interface names and net.ipv4.ip_forward. (podman's
// default network would add a bridge, firewall rules and ip_forward=1;
// these tests always pass --network.)
func hostState(t *testing.T) string {
	t.Helper()
	ifs, err := net.Interfaces()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, i := range ifs {
		names = append(names, i.Name)
	}
	slices.Sort(names)
	fwd, err := os.ReadFile("/proc/sys/net/ipv4/ip_forward")
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("interfaces %v, ip_forward %s", names, bytes.TrimSpace(fwd))
}

// podmanRlimitEPERM matches the OCI runtime's refusal to set the
// container's rlimits (crun: "setrlimit `RLIMIT_NOFILE`: Operation not
// permitted"; runc: "error setting rlimit type 7: operation not
// permitted").
func podmanRlimitEPERM(out string) bool {
	o := strings.ToLower(out)
	return strings.Contains(o, "rlimit") && strings.Contains(o, "operation not permitted")
}

// rlimitEvidence says why a rootful OCI runtime may not set podman's
// default rlimits here: raising a hard limit needs CAP_SYS_RESOURCE, and
// podman lowers its own RLIMIT_NPROC to kernel.pid_max when that is
// smaller, so its children cannot raise it back. It returns the --ulimit
// flags that stay within what the runtime may set.
func rlimitEvidence(t *testing.T) (flags []string, why string) {
	t.Helper()
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	var capBnd uint64
	for _, line := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, "CapBnd:\t"); ok {
			capBnd, _ = strconv.ParseUint(v, 16, 64)
		}
	}
	const capSysResource = 24
	limits, err := os.ReadFile("/proc/self/limits")
	if err != nil {
		t.Fatal(err)
	}
	hard := map[string]uint64{}
	for _, line := range strings.Split(string(limits), "\n") {
		for _, name := range []string{"Max open files", "Max processes"} {
			if rest, ok := strings.CutPrefix(line, name); ok {
				f := strings.Fields(rest)
				if len(f) >= 2 {
					hard[name], _ = strconv.ParseUint(f[1], 10, 64) // "unlimited" parses as 0
				}
			}
		}
	}
	pidMaxB, _ := os.ReadFile("/proc/sys/kernel/pid_max")
	pidMax, _ := strconv.ParseUint(strings.TrimSpace(string(pidMaxB)), 10, 64)
	nofile, nproc := hard["Max open files"], hard["Max processes"]
	if nofile == 0 {
		nofile = 1 << 20
	}
	if nproc == 0 || (pidMax > 0 && pidMax < nproc) {
		nproc = pidMax
	}
	why = fmt.Sprintf("CAP_SYS_RESOURCE in this process's bounding set: %v (CapBnd %#x); hard RLIMIT_NOFILE %d, RLIMIT_NPROC %d, kernel.pid_max %d; "+
		"podman asks for 1048576 of each, which only CAP_SYS_RESOURCE may set above the hard limit, and lowers its own RLIMIT_NPROC to pid_max",
		capBnd&(1<<capSysResource) != 0, capBnd, hard["Max open files"], hard["Max processes"], pidMax)
	return []string{"--ulimit", fmt.Sprintf("nofile=%d:%d", nofile, nofile), "--ulimit", fmt.Sprintf("nproc=%d:%d", nproc, nproc)}, why
}

// TestContainerImage builds the image with deploy/container/build.sh
// (static binary on FROM scratch, podman build, nothing pulled), runs it
// with podman in the lab's balancer namespace with NET_RAW and NET_ADMIN
// and the configuration mounted read-only, balances requests from the
// lab's clients through it, and stops it with `podman stop` during
// transfers: they finish, new connections are refused, tslb exits 0. Its
// logs are JSON (-log-format json after the image's entrypoint).
//
// If podman cannot start a container with its default rlimits (a sandbox
// without CAP_SYS_RESOURCE, as on this project's machines), the test says
// so with the evidence and runs with --ulimit values inside the hard
// limits; if that fails too, the test fails. The OCI runtime is runc.
func TestContainerImage(t *testing.T) {
	podman := requireTool(t, "podman", "podman")
	requireTool(t, "runc", "runc")
	lab.Require(t)
	before := hostState(t)
	t.Cleanup(func() {
		if after := hostState(t); after != before {
			t.Errorf("the host's network namespace changed: before %s, after %s", before, after)
		}
	})
	var rb [3]byte
	rand.Read(rb[:])
	tag := "localhost/tslb:test-" + hex.EncodeToString(rb[:])
	pm := func(timeout time.Duration, args ...string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		out, err := exec.CommandContext(ctx, podman, args...).CombinedOutput()
		return strings.TrimSpace(string(out)), err
	}

	start := time.Now()
	out, err := exec.Command("sh", containerBuild, "-t", tag, "-v", "container-test").CombinedOutput()
	if err != nil {
		t.Fatalf("deploy/container/build.sh: %v\n%s", err, out)
	}
	t.Cleanup(func() { pm(time.Minute, "rmi", "-f", tag) })
	t.Logf("built %s in %v", tag, time.Since(start).Round(time.Millisecond))
	js, err := pm(time.Minute, "image", "inspect", tag)
	if err != nil {
		t.Fatalf("podman image inspect: %v %s", err, js)
	}
	var img []struct {
		Os, Architecture string
		Config           struct {
			Entrypoint []string
			StopSignal string
		}
		RootFS struct{ Layers []string }
	}
	if err := json.Unmarshal([]byte(js), &img); err != nil || len(img) != 1 {
		t.Fatalf("image inspect: %v %s", err, js)
	}
	if ep := strings.Join(img[0].Config.Entrypoint, " "); ep != "/tslb run -c /etc/tslb/tslb.yaml" || img[0].Config.StopSignal != "SIGTERM" || img[0].Os != "linux" {
		t.Errorf("image: entrypoint %q, stop signal %q, os %q", ep, img[0].Config.StopSignal, img[0].Os)
	}

	// A first run with podman's defaults. On a scratch image it also
	// shows the binary is static: there is no dynamic loader.
	var ulimits []string
	probe := func(extra ...string) (string, error) {
		args := append([]string{"run", "--rm", "--network", "none", "--runtime", "runc"}, extra...)
		return pm(time.Minute, append(args, "--entrypoint", "/tslb", tag, "version")...)
	}
	out2, err := probe()
	switch {
	case err == nil && out2 == "tslb container-test":
		t.Logf("podman run with default rlimits works here")
	case err != nil && podmanRlimitEPERM(out2):
		flags, why := rlimitEvidence(t)
		t.Logf("podman run with its default rlimits cannot work here: %q. Why: %s. Running with %v instead.", out2, why, flags)
		out3, err := probe(flags...)
		if err != nil || out3 != "tslb container-test" {
			t.Fatalf("podman run with %v fails too (%v): %s; so no container can run here: %s", flags, err, out3, why)
		}
		ulimits = flags
	default:
		t.Fatalf("podman run %s version: %v: %q", tag, err, out2)
	}
	// crun, podman's preferred runtime when installed, refuses this
	// machine's cgroup layout (v1 controllers and a cgroup2 mount with a
	// controller: "cgroups in hybrid mode not supported"), so the test
	// names runc. Where crun is installed, say what it does.
	if _, err := exec.LookPath("crun"); err == nil {
		out, err := pm(time.Minute, append(append([]string{"run", "--rm", "--network", "none", "--runtime", "crun"}, ulimits...), "--entrypoint", "/tslb", tag, "version")...)
		t.Logf("for comparison, crun with the same limits: %v %q", err, out)
	}

	l := lab.NewT(t, lab.Config{Clients: 2, Backends: 2})
	bs, err := l.StartBackends(lab.ServerConfig{Port: 8080})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cfg := harness.Config(l, harness.Options{Dir: dir, ShutdownTimeout: 20 * time.Second})
	cfg.ApplyDefaults()
	data, err := cfg.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(dir, "tslb.yaml")
	if err := os.WriteFile(cfgPath, data, 0o644); err != nil {
		t.Fatal(err)
	}
	name := "tslb-test-" + l.Prefix
	args := []string{"run", "-d", "--name", name,
		"--network", "ns:/run/netns/" + l.LB.Name,
		"--runtime", "runc",
		"--cap-add", "NET_RAW,NET_ADMIN"}
	args = append(args, ulimits...)
	args = append(args, "-v", cfgPath+":/etc/tslb/tslb.yaml:ro", tag, "-log-format", "json")
	if out, err := pm(time.Minute, args...); err != nil {
		t.Fatalf("podman %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	t.Cleanup(func() { pm(time.Minute, "rm", "-f", "-t", "0", name) })
	logs := func() string { s, _ := pm(30*time.Second, "logs", name); return s }

	hc := l.LB.HTTPClient(false, 2*time.Second)
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := hc.Get("http://" + harness.MetricsAddr + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if running, _ := pm(30*time.Second, "inspect", "-f", "{{.State.Running}}", name); running != "true" || time.Now().After(deadline) {
			t.Fatalf("tslb in the container is not serving (running %s, %v); logs:\n%s", running, err, logs())
		}
		time.Sleep(100 * time.Millisecond)
	}

	const n = 200
	res := lab.Requests(context.Background(), l.Clients, fmt.Sprintf("http://%s/", l.VIP), n, 8, 3*time.Second, 30*time.Second, false)
	if res.Errors != 0 || res.OK != n {
		t.Fatalf("requests through the container: %d ok, %d errors %v; logs:\n%s", res.OK, res.Errors, res.FirstErrors, logs())
	}
	for _, b := range bs {
		if res.ByBackend[b.ID] == 0 {
			t.Errorf("backend %s got no request: %v", b.ID, res.ByBackend)
		}
		for src := range b.RemoteIPs() {
			if src != l.SNAT {
				t.Errorf("backend %s saw %s, want only the SNAT address %s", b.ID, src, l.SNAT)
			}
		}
	}
	resp, err := hc.Get("http://" + harness.MetricsAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	var body bytes.Buffer
	body.ReadFrom(resp.Body)
	resp.Body.Close()
	m, err := harness.ParseMetrics(body.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	if got := m.Sum("tslb_flows_created_total", "service=web"); got != n {
		t.Errorf("tslb_flows_created_total = %v, want %d", got, n)
	}

	// Graceful stop: podman stop sends SIGTERM; transfers in flight finish.
	const size = 6 << 20
	var results []<-chan error
	for range 2 {
		r, _ := slowDownload(t, l.Clients[0], fmt.Sprintf("http://%s/bytes?n=%d&seed=9", l.VIP, size), size, 2<<20) // ~3 s
		results = append(results, r)
	}
	time.Sleep(500 * time.Millisecond)
	stopped := make(chan error, 1)
	stopStart := time.Now()
	go func() {
		out, err := pm(time.Minute, "stop", "-t", "40", name)
		if err != nil {
			err = fmt.Errorf("%v: %s", err, out)
		}
		stopped <- err
	}()
	time.Sleep(300 * time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 700*time.Millisecond)
	if c, err := l.Clients[1].DialContext(ctx, "tcp", fmt.Sprintf("%s:80", l.VIP)); err == nil {
		c.Close()
		t.Errorf("a new connection was accepted while tslb was stopping")
	}
	cancel()
	for i, r := range results {
		if err := <-r; err != nil {
			t.Errorf("transfer %d across podman stop: %v", i, err)
		}
	}
	if err := <-stopped; err != nil {
		t.Fatalf("podman stop: %v", err)
	}
	took := time.Since(stopStart)
	code, err := pm(30*time.Second, "inspect", "-f", "{{.State.ExitCode}}", name)
	if err != nil || code != "0" {
		t.Errorf("tslb's exit code in the container: %q (%v), want 0; logs:\n%s", code, err, logs())
	}
	if took > 15*time.Second {
		t.Errorf("podman stop took %v: tslb did not stop when its flows ended (shutdown.timeout 20 s)", took)
	}
	// Every log line is a JSON object; the last says tslb stopped.
	var last map[string]any
	sc := bufio.NewScanner(strings.NewReader(logs()))
	lines := 0
	for sc.Scan() {
		lines++
		last = nil
		if err := json.Unmarshal(sc.Bytes(), &last); err != nil {
			t.Errorf("log line is not JSON: %q", sc.Text())
		}
	}
	if lines == 0 || last["msg"] != "tslb stopped" {
		t.Errorf("%d log lines, last %v; want the JSON line \"tslb stopped\"", lines, last)
	}
	t.Logf("podman stop drained 2 transfers in %v, exit code %s, %d JSON log lines, ulimits %v", took.Round(time.Millisecond), code, lines, ulimits)
}

// TestDockerfileMatchesContainerfile: the top-level Dockerfile (the
// multi-stage build for machines with a registry) stays a file whose
// runtime stage is the same image as deploy/container/Containerfile: a
// static binary (CGO_ENABLED=0) on FROM scratch with the same entrypoint.
func TestDockerfileMatchesContainerfile(t *testing.T) {
	read := func(p string) string {
		fi, err := os.Lstat(p)
		if err != nil || !fi.Mode().IsRegular() {
			t.Fatalf("%s: want a regular file (%v)", p, err)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	docker := read(filepath.Join("..", "Dockerfile"))
	podmanFile := read(filepath.Join("..", "deploy", "container", "Containerfile"))
	last := func(s, prefix string) string {
		v := ""
		for _, line := range strings.Split(s, "\n") {
			if strings.HasPrefix(line, prefix) {
				v = line
			}
		}
		return v
	}
	for _, f := range []struct{ name, text string }{{"Dockerfile", docker}, {"Containerfile", podmanFile}} {
		if last(f.text, "FROM ") != "FROM scratch" {
			t.Errorf("%s: the runtime stage is %q, want FROM scratch", f.name, last(f.text, "FROM "))
		}
	}
	if !strings.Contains(docker, "CGO_ENABLED=0") {
		t.Errorf("Dockerfile does not build a static binary (CGO_ENABLED=0)")
	}
	if a, b := last(docker, "ENTRYPOINT"), last(podmanFile, "ENTRYPOINT"); a == "" || a != b {
		t.Errorf("entrypoints differ: Dockerfile %q, Containerfile %q", a, b)
	}
}
