package test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"tslb/config"
	"tslb/test/harness"
	"tslb/test/lab"
)

// unitFile is the [Service] section of deploy/systemd/tslb.service: every
// key with its values in order (a key may repeat).
type unitFile map[string][]string

func loadUnit(t *testing.T) unitFile {
	t.Helper()
	f, err := os.Open(systemdUnit)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	u := unitFile{}
	section := ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || line[0] == '#' || line[0] == ';':
		case line[0] == '[':
			section = strings.Trim(line, "[]")
		case section == "Service":
			k, v, ok := strings.Cut(line, "=")
			if !ok {
				t.Fatalf("%s: %q is not KEY=VALUE", systemdUnit, line)
			}
			u[k] = append(u[k], v)
		}
	}
	return u
}

// one returns the only value of key.
func (u unitFile) one(t *testing.T, key string) string {
	t.Helper()
	if len(u[key]) != 1 {
		t.Fatalf("%s: want one %s=, have %q", systemdUnit, key, u[key])
	}
	return u[key][0]
}

// TestSystemdUnitVerify runs `systemd-analyze verify` on the unit, in a
// root directory holding systemd's own units and the tslb binary at the
// path ExecStart names (verify checks that it exists and is executable).
// Any message fails the test; a unit with a misspelt key is checked too,
// to show verify reports it. `systemd-analyze security` must rate the
// unit's exposure 3.0 or lower.
func TestSystemdUnitVerify(t *testing.T) {
	sa := requireTool(t, "systemd-analyze", "systemd")
	u := loadUnit(t)
	bin := strings.Fields(u.one(t, "ExecStart"))[0]
	root := t.TempDir()
	unitDir := filepath.Join(root, "etc", "systemd", "system")
	for _, d := range []string{unitDir, filepath.Join(root, filepath.Dir(bin)), filepath.Join(root, "usr", "lib", "systemd")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// systemd's units (sysinit.target and the others tslb.service
	// depends on), as the host has them.
	if out, err := exec.Command("cp", "-r", "/usr/lib/systemd/system", filepath.Join(root, "usr", "lib", "systemd")).CombinedOutput(); err != nil {
		t.Fatalf("copy systemd units: %v %s", err, out)
	}
	if out, err := exec.Command("cp", tslbBinary, filepath.Join(root, bin)).CombinedOutput(); err != nil {
		t.Fatalf("copy tslb: %v %s", err, out)
	}
	unit, err := os.ReadFile(systemdUnit)
	if err != nil {
		t.Fatal(err)
	}
	verify := func(name string, data []byte) string {
		if err := os.WriteFile(filepath.Join(unitDir, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(sa, "verify", "--root="+root, "/etc/systemd/system/"+name).CombinedOutput()
		if err != nil {
			return fmt.Sprintf("%v: %s", err, out)
		}
		return strings.TrimSpace(string(out))
	}
	if msg := verify("tslb.service", unit); msg != "" {
		t.Errorf("systemd-analyze verify tslb.service:\n%s", msg)
	}
	bad := strings.Replace(string(unit), "ProtectClock=yes", "ProtectClok=yes", 1)
	if msg := verify("tslb-typo.service", []byte(bad)); !strings.Contains(msg, "ProtectClok") {
		t.Errorf("verify does not report a misspelt key: %q", msg)
	}
	os.Remove(filepath.Join(unitDir, "tslb-typo.service"))

	out, err := exec.Command(sa, "security", "--offline=yes", "--root="+root, "/etc/systemd/system/tslb.service").CombinedOutput()
	m := regexp.MustCompile(`Overall exposure level for tslb.service: ([0-9.]+)`).FindSubmatch(out)
	if err != nil || m == nil {
		t.Fatalf("systemd-analyze security: %v\n%s", err, out)
	}
	exposure, _ := strconv.ParseFloat(string(m[1]), 64)
	t.Logf("systemd-analyze security: exposure %.1f", exposure)
	if exposure > 3.0 {
		t.Errorf("exposure %.1f, want 3.0 or less:\n%s", exposure, out)
	}
}

// TestSystemdUnitMatchesTSLB checks the unit against tslb itself: every
// Exec line runs the same binary with a subcommand and flags tslb's usage
// lists; the capabilities are exactly the two tslb needs, ambient and
// bounding alike; the reload socket lies in RuntimeDirectory; stopping
// allows more than the default shutdown.timeout; and a configuration with
// the keys the unit's header asks for passes check-config.
func TestSystemdUnitMatchesTSLB(t *testing.T) {
	u := loadUnit(t)
	usage, _ := exec.Command(tslbBinary, "help").CombinedOutput()
	bin := ""
	var reloadSocket string
	for _, key := range []string{"ExecStartPre", "ExecStart", "ExecReload"} {
		for _, line := range u[key] {
			f := strings.Fields(strings.TrimLeft(line, "-@:+!"))
			if len(f) < 2 {
				t.Errorf("%s=%s: want BINARY COMMAND ...", key, line)
				continue
			}
			if bin == "" {
				bin = f[0]
			}
			if f[0] != bin || !filepath.IsAbs(f[0]) || filepath.Base(f[0]) != "tslb" {
				t.Errorf("%s runs %s; want the same absolute tslb path everywhere (%s)", key, f[0], bin)
			}
			if !regexp.MustCompile(`(?m)^  ` + regexp.QuoteMeta(f[1]) + `\b`).Match(usage) {
				t.Errorf("%s: tslb has no command %q; usage:\n%s", key, f[1], usage)
				continue
			}
			// `tslb CMD -h` prints the command's flags (exit 2).
			help, _ := exec.Command(tslbBinary, f[1], "-h").CombinedOutput()
			for i, a := range f[2:] {
				if !strings.HasPrefix(a, "-") {
					continue
				}
				if !strings.Contains(string(help), "\n  "+a+" ") && !strings.Contains(string(help), "\n  "+a+"\n") {
					t.Errorf("%s: tslb %s has no flag %s; its usage:\n%s", key, f[1], a, help)
				}
				if key == "ExecReload" && a == "-socket" && i+3 < len(f) {
					reloadSocket = f[i+3]
				}
			}
		}
	}
	if bin != "/usr/local/bin/tslb" {
		t.Errorf("binary %q, want /usr/local/bin/tslb (the README's install path)", bin)
	}
	for _, key := range []string{"AmbientCapabilities", "CapabilityBoundingSet"} {
		caps := strings.Fields(u.one(t, key))
		if len(caps) != 2 || caps[0] != "CAP_NET_RAW" || caps[1] != "CAP_NET_ADMIN" {
			t.Errorf("%s=%v, want CAP_NET_RAW CAP_NET_ADMIN", key, caps)
		}
	}
	if u.one(t, "DynamicUser") != "yes" && len(u["User"]) == 0 {
		t.Errorf("the unit runs tslb as root: want DynamicUser=yes or User=")
	}
	if u.one(t, "KillSignal") != "SIGTERM" {
		t.Errorf("KillSignal=%s, want SIGTERM (tslb's graceful stop)", u.one(t, "KillSignal"))
	}
	stop, err := time.ParseDuration(u.one(t, "TimeoutStopSec"))
	if err != nil || stop <= config.DefaultShutdownTimeout {
		t.Errorf("TimeoutStopSec=%s (%v): want more than shutdown.timeout's default %v", u.one(t, "TimeoutStopSec"), err, config.DefaultShutdownTimeout)
	}
	runDir := "/run/" + u.one(t, "RuntimeDirectory")
	stateDir := "/var/lib/" + u.one(t, "StateDirectory")
	if filepath.Dir(reloadSocket) != runDir {
		t.Errorf("ExecReload's socket %q is not in RuntimeDirectory %s", reloadSocket, runDir)
	}
	for _, af := range []string{"AF_PACKET", "AF_NETLINK", "AF_INET", "AF_UNIX"} {
		if !strings.Contains(" "+u.one(t, "RestrictAddressFamilies")+" ", " "+af+" ") {
			t.Errorf("RestrictAddressFamilies lacks %s, which tslb needs", af)
		}
	}
	for _, k := range []string{"PrivateNetwork", "PrivateUsers"} {
		if len(u[k]) > 0 {
			t.Errorf("%s= would take tslb away from the host's interfaces (or void its capabilities there)", k)
		}
	}

	// The configuration the unit's header asks for is valid and uses
	// those directories.
	head, err := os.ReadFile(systemdUnit)
	if err != nil {
		t.Fatal(err)
	}
	wantKeys := map[string]string{
		"control.socket": `(?m)^#\s+socket: (\S+)`,
		"state_file":     `(?m)^#\s+state_file: (\S+)`,
		"shutdown":       `(?m)^#\s+timeout: (\S+)`,
	}
	got := map[string]string{}
	for k, re := range wantKeys {
		m := regexp.MustCompile(re).FindSubmatch(head)
		if m == nil {
			t.Fatalf("the unit's header does not say which %s to use", k)
		}
		got[k] = string(m[1])
	}
	if got["control.socket"] != reloadSocket {
		t.Errorf("header's control.socket %s differs from ExecReload's %s", got["control.socket"], reloadSocket)
	}
	if filepath.Dir(got["state_file"]) != stateDir {
		t.Errorf("header's state_file %s is not in StateDirectory %s", got["state_file"], stateDir)
	}
	if d, err := time.ParseDuration(got["shutdown"]); err != nil || d >= stop {
		t.Errorf("header's shutdown.timeout %s (%v) is not below TimeoutStopSec %v", got["shutdown"], err, stop)
	}
	example, err := os.ReadFile(filepath.Join("..", "config", "example.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	cfg := strings.NewReplacer(
		"socket: /run/tslb.sock", "socket: "+got["control.socket"],
		`state_file: ""`, "state_file: "+got["state_file"],
		"timeout: 30s ", "timeout: "+got["shutdown"]+" ",
	).Replace(string(example))
	path := filepath.Join(t.TempDir(), "tslb.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	c, err := config.Load(path)
	if err != nil {
		t.Fatalf("the unit's configuration keys do not validate: %v", err)
	}
	if c.Control.Socket != got["control.socket"] || c.StateFile != got["state_file"] {
		t.Errorf("config with the unit's keys: socket %q state %q", c.Control.Socket, c.StateFile)
	}
	if out, err := exec.Command(tslbBinary, "check-config", path).CombinedOutput(); err != nil {
		t.Errorf("tslb check-config (the unit's ExecStartPre) on it: %v %s", err, out)
	}
}

// TestRunsAsUnitUser runs tslb the way the unit does, as far as that is
// possible without systemd as PID 1 (this machine has none): as a user
// that is not root (a DynamicUser-range uid) with exactly the unit's
// ambient and bounding capabilities and no_new_privs (setpriv), its
// control socket and state file in directories that user owns, as
// RuntimeDirectory= and StateDirectory= make them. tslb must balance
// requests, reload through the socket as that user (ExecReload), and on
// SIGTERM exit 0 having written its state file.
func TestRunsAsUnitUser(t *testing.T) {
	setpriv := requireTool(t, "setpriv", "util-linux")
	u := loadUnit(t)
	var caps []string
	for _, c := range strings.Fields(u.one(t, "AmbientCapabilities")) {
		caps = append(caps, "+"+strings.ToLower(strings.TrimPrefix(c, "CAP_")))
	}
	const uid = "61184" // the first uid systemd hands to dynamic users
	wrapper := []string{setpriv, "--reuid=" + uid, "--regid=" + uid, "--clear-groups",
		"--inh-caps=-all," + strings.Join(caps, ","),
		"--ambient-caps=" + strings.Join(caps, ","),
		"--bounding-set=-all," + strings.Join(caps, ","),
		"--no-new-privs"}

	dir := t.TempDir()
	// The test's temporary directories are 0700 root; the unit's user
	// must reach its configuration and directories.
	for d := dir; d != os.TempDir() && d != "/"; d = filepath.Dir(d) {
		os.Chmod(d, 0o755)
	}
	runDir := filepath.Join(dir, "run", u.one(t, "RuntimeDirectory"))
	stateDir := filepath.Join(dir, "lib", u.one(t, "StateDirectory"))
	n, _ := strconv.Atoi(uid)
	for _, d := range []string{filepath.Dir(runDir), filepath.Dir(stateDir)} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range []string{runDir, stateDir} {
		if err := os.MkdirAll(d, 0o750); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(d, n, n); err != nil {
			t.Fatal(err)
		}
	}
	socket := filepath.Join(runDir, "tslb.sock")
	state := filepath.Join(stateDir, "ledger.json")
	l, _, tl := opsDeploy(t, 1, 2, lab.ServerConfig{Port: 8080, CloseFirst: true}, harness.Options{
		Dir: dir, Wrapper: wrapper, ControlSocket: socket, StateFile: state, ShutdownTimeout: 5 * time.Second,
	})
	t.Cleanup(func() { exec.Command("pkill", "-KILL", "-u", uid, "-x", "tslb").Run() })

	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", tl.Pid()))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"Uid:\t" + uid + "\t", "CapAmb:\t0000000000003000", "CapBnd:\t0000000000003000", "NoNewPrivs:\t1"} {
		if !strings.Contains(string(status), want) {
			t.Errorf("tslb's /proc status lacks %q:\n%s", want, status)
		}
	}
	res := lab.Requests(context.Background(), l.Clients, fmt.Sprintf("http://%s/", l.VIP), 100, 4, 3*time.Second, 30*time.Second, false)
	if res.Errors != 0 || len(res.ByBackend) != 2 {
		t.Fatalf("requests through tslb as uid %s: %d errors %v, by backend %v; log:\n%s", uid, res.Errors, res.FirstErrors, res.ByBackend, tl.Log())
	}
	fi, err := os.Stat(socket)
	if err != nil {
		t.Fatalf("control socket: %v", err)
	}
	if st, ok := fi.Sys().(interface{ Uid() uint32 }); ok && fmt.Sprint(st.Uid()) != uid {
		t.Errorf("control socket owner %v, want %s", st.Uid(), uid)
	}
	reload := append(append([]string{}, wrapper[1:]...), tslbBinary, "reload", "-socket", socket)
	if out, err := exec.Command(setpriv, reload...).CombinedOutput(); err != nil || !strings.Contains(string(out), "ok") {
		t.Errorf("tslb reload as uid %s: %v %s", uid, err, out)
	}
	if v := metrics(t, tl).Sum("tslb_config_version"); v != 1 {
		t.Errorf("config version %v after the reload, want 1", v)
	}
	code, err := tl.Stop(15 * time.Second)
	if err != nil || code != 0 {
		t.Fatalf("SIGTERM: exit %d, %v; log:\n%s", code, err, tl.Log())
	}
	data, err := os.ReadFile(state)
	if err != nil {
		t.Fatalf("state file: %v; log:\n%s", err, tl.Log())
	}
	var sf map[string]json.RawMessage
	if err := json.Unmarshal(data, &sf); err != nil || sf["time_wait_tuples"] == nil {
		t.Errorf("state file %s: %v\n%s", state, err, data)
	}
}
