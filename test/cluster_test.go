package test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"tslb/lb/cluster/bgp"
	"tslb/test/lab"
)

var (
	speakerOnce sync.Once
	speakerBin  string
	speakerErr  error
)

// buildSpeaker builds test/bgpspeaker once per test binary.
func buildSpeaker(t *testing.T) string {
	t.Helper()
	speakerOnce.Do(func() {
		dir := filepath.Dir(tslbBinary)
		speakerBin = filepath.Join(dir, "bgpspeaker")
		root, _ := filepath.Abs("..")
		cmd := exec.Command("go", "build", "-o", speakerBin, "./test/bgpspeaker")
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			speakerErr = fmt.Errorf("go build ./test/bgpspeaker: %v: %s", err, out)
		}
	})
	if speakerErr != nil {
		t.Fatal(speakerErr)
	}
	return speakerBin
}

// speaker is a bgpspeaker process in one instance namespace.
type speaker struct {
	t     *testing.T
	in    *lab.Instance
	cmd   *exec.Cmd
	stdin io.WriteCloser
	out   *bufio.Scanner
	logs  *strings.Builder
	done  chan struct{}
}

func startSpeaker(t *testing.T, c *lab.Cluster, in *lab.Instance, edit func(*bgp.Config)) *speaker {
	t.Helper()
	cfg := bgp.Config{ASN: 65010, RouterID: in.Addr, LocalAddress: in.Addr,
		Peers: []bgp.Peer{{Address: lab.ClusterRouter, ASN: 65000, HoldTime: 9 * time.Second, ConnectRetry: time.Second}}}
	if edit != nil {
		edit(&cfg)
	}
	js, _ := json.Marshal(cfg)
	cmd := in.NS.Command(context.Background(), buildSpeaker(t), "-config", string(js))
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	s := &speaker{t: t, in: in, cmd: cmd, logs: &strings.Builder{}, done: make(chan struct{})}
	var err error
	if s.stdin, err = cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = &lockedWriter{b: s.logs}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s.out = bufio.NewScanner(stdout)
	s.out.Buffer(make([]byte, 1<<16), 1<<20)
	go func() {
		cmd.Wait()
		close(s.done)
	}()
	t.Cleanup(func() {
		s.stdin.Close()
		select {
		case <-s.done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-s.done
		}
		if t.Failed() {
			t.Logf("speaker %d log (tail):\n%s", in.ID, tail(s.logs.String(), 3000))
		}
	})
	return s
}

type lockedWriter struct {
	mu sync.Mutex
	b  *strings.Builder
}

func (w *lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// do sends one command and returns the reply line.
func (s *speaker) do(cmd string) string {
	s.t.Helper()
	if _, err := fmt.Fprintln(s.stdin, cmd); err != nil {
		s.t.Fatalf("speaker %d: %s: %v", s.in.ID, cmd, err)
	}
	if !s.out.Scan() {
		s.t.Fatalf("speaker %d: %s: no reply (exited?): %v", s.in.ID, cmd, s.out.Err())
	}
	return s.out.Text()
}

func (s *speaker) ok(cmd string) {
	s.t.Helper()
	if r := s.do(cmd); r != "ok" {
		s.t.Fatalf("speaker %d: %s: %s", s.in.ID, cmd, r)
	}
}

func (s *speaker) peer() bgp.PeerState {
	s.t.Helper()
	var ps []bgp.PeerState
	r := s.do("peers")
	if err := json.Unmarshal([]byte(r), &ps); err != nil || len(ps) != 1 {
		s.t.Fatalf("speaker %d: peers: %q %v", s.in.ID, r, err)
	}
	return ps[0]
}

func (s *speaker) announce(p netip.Prefix) { s.ok(fmt.Sprintf("announce %s %s", p, s.in.Addr)) }
func (s *speaker) withdraw(p netip.Prefix) { s.ok("withdraw " + p.String()) }

func eventually(t *testing.T, what string, d time.Duration, f func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !f() {
		if time.Since(start) > d {
			t.Fatalf("timed out after %v: %s", d, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return time.Since(start)
}

func addrs(ins ...*lab.Instance) []netip.Addr {
	var out []netip.Addr
	for _, in := range ins {
		out = append(out, in.Addr)
	}
	return out
}

// TestClusterBGP: three GoBGP speakers (lb/cluster/bgp, each in its
// instance's namespace) against BIRD 2 in the router namespace. A /32
// announced by all three becomes a kernel route with three ECMP next hops
// in the router; a withdrawal leaves two; a graceful stop one (and the
// router sees the session close at once, not after the hold time); a
// route the router sends the instances is received and not imported; a
// BIRD that is killed and restarted gets the routes again once the
// sessions are back; stopping every speaker leaves no route; a speaker
// with the wrong AS number never establishes and reports the router's
// NOTIFICATION.
func TestClusterBGP(t *testing.T) {
	junk := netip.MustParsePrefix("198.19.255.0/24")
	c := lab.NewClusterT(t, lab.ClusterConfig{Instances: 3, Clients: 1, Backends: 1, RouterAnnounces: []netip.Prefix{junk}})
	vip := netip.PrefixFrom(lab.ClusterVIP, 32)
	hops := func() []netip.Addr {
		h, err := c.RouterNextHops(vip)
		if err != nil {
			t.Fatal(err)
		}
		return h
	}
	fib := func(what string, want []netip.Addr) time.Duration {
		t.Helper()
		return eventually(t, fmt.Sprintf("%s: router next hops %v", what, want), 15*time.Second, func() bool { return slices.Equal(hops(), want) })
	}
	t1, t2, t3 := c.Instances[0], c.Instances[1], c.Instances[2]

	// A wrong local AS: BIRD refuses the OPEN with a NOTIFICATION, which
	// the speaker reports; the session never comes up.
	wrong := startSpeaker(t, c, t1, func(cfg *bgp.Config) { cfg.ASN = 65011 })
	eventually(t, "the wrong-AS speaker sees a NOTIFICATION", 15*time.Second, func() bool {
		p := wrong.peer()
		return p.Notifications > 0 && p.LastError != ""
	})
	if p := wrong.peer(); p.Established {
		t.Fatalf("wrong AS established: %+v", p)
	} else {
		t.Logf("wrong AS: %+v", p)
	}
	wrong.ok("stop")

	sp := []*speaker{startSpeaker(t, c, t1, nil), startSpeaker(t, c, t2, nil), startSpeaker(t, c, t3, nil)}
	up := eventually(t, "three sessions established", 20*time.Second, func() bool {
		for _, s := range sp {
			if !s.peer().Established {
				return false
			}
		}
		return true
	})
	t.Logf("sessions up %v after the speakers started", up)
	for _, s := range sp {
		s.announce(vip)
	}
	d := fib("all three announce", addrs(t1, t2, t3))
	t.Logf("3 ECMP next hops %v after the announcements", d)
	if out, err := c.Birdc("show", "route", vip.String()); err != nil || strings.Count(out, "via 198.18.4.1") != 3 {
		t.Errorf("birdc show route: %v\n%s", err, out)
	}
	// The router's own route reaches every speaker, which imports nothing:
	// counted, not in the speaker's RIB, not in the instance's kernel.
	for _, s := range sp {
		var p bgp.PeerState
		eventually(t, "the router's route received", 10*time.Second, func() bool { p = s.peer(); return p.Received == 1 })
		if p.Imported != 0 || p.Advertised != 1 {
			t.Errorf("speaker %d: %+v", s.in.ID, p)
		}
		out, _ := s.in.NS.Command(context.Background(), "ip", "route", "show", junk.String()).CombinedOutput()
		if strings.TrimSpace(string(out)) != "" {
			t.Errorf("instance %d kernel has %s: %s", s.in.ID, junk, out)
		}
	}

	sp[2].withdraw(vip)
	d = fib("t3 withdraws", addrs(t1, t2))
	t.Logf("withdraw: 2 next hops after %v", d)

	// A graceful stop: withdraw, then a Cease; BIRD sees the session go
	// down at once (the hold time is 9 s).
	start := time.Now()
	sp[1].ok("stop")
	fib("t2 stops", addrs(t1))
	eventually(t, "BIRD sees t2's session closed", 2*time.Second, func() bool {
		out, _ := c.Birdc("show", "protocols", "t2")
		return !strings.Contains(out, "Established")
	})
	t.Logf("stop: 1 next hop and t2's session closed %v after Stop", time.Since(start))
	<-sp[1].done
	if code := sp[1].cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("speaker 2 exit code %d", code)
	}

	// Router flap: BIRD killed (no NOTIFICATION) and started again. The
	// speakers reconnect and re-announce.
	sp[2].announce(vip)
	fib("t3 announces again", addrs(t1, t3))
	before := sp[0].peer().Establishments
	if err := c.StopRouter(true); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the speakers see the sessions drop", 15*time.Second, func() bool {
		return !sp[0].peer().Established && !sp[2].peer().Established
	})
	start = time.Now()
	if err := c.StartRouter(); err != nil {
		t.Fatal(err)
	}
	d = fib("after BIRD restarted", addrs(t1, t3))
	t.Logf("router restart: routes back %v after BIRD started", d)
	if p := sp[0].peer(); p.Establishments != before+1 || !p.Established {
		t.Errorf("speaker 1 after the flap: %+v (establishments before %d)", p, before)
	}

	sp[0].ok("stop")
	sp[2].ok("stop")
	fib("every speaker stopped", nil)
}

// TestClusterBFD: with BFD on both sides, a speaker that freezes (SIGSTOP:
// its TCP session stays open, only BFD notices) loses its route at the
// router within about a second, long before the 30 s hold time.
func TestClusterBFD(t *testing.T) {
	c := lab.NewClusterT(t, lab.ClusterConfig{Instances: 1, Clients: 1, Backends: 1, BFD: true, HoldTime: 30 * time.Second})
	in := c.Instances[0]
	s := startSpeaker(t, c, in, func(cfg *bgp.Config) {
		cfg.Peers[0].HoldTime = 30 * time.Second
		cfg.Peers[0].BFD = &bgp.BFD{MinTx: 300 * time.Millisecond, MinRx: 300 * time.Millisecond, Multiplier: 3}
	})
	eventually(t, "session and BFD up", 20*time.Second, func() bool {
		p := s.peer()
		return p.Established && p.BFD == "up"
	})
	out, err := c.Birdc("show", "bfd", "sessions")
	if err != nil || !strings.Contains(out, in.Addr.String()) || !strings.Contains(out, "Up") {
		t.Fatalf("BIRD's BFD sessions: %v\n%s", err, out)
	}
	vip := netip.PrefixFrom(lab.ClusterVIP, 32)
	s.announce(vip)
	eventually(t, "route installed", 10*time.Second, func() bool {
		h, _ := c.RouterNextHops(vip)
		return len(h) == 1
	})
	if err := s.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	defer s.cmd.Process.Signal(syscall.SIGCONT)
	d := eventually(t, "route gone after the speaker froze", 5*time.Second, func() bool {
		h, _ := c.RouterNextHops(vip)
		return len(h) == 0
	})
	t.Logf("frozen speaker: route withdrawn by the router after %v (hold time 30 s)", d)
	if d > 3*time.Second {
		t.Errorf("BFD took %v", d)
	}
	s.cmd.Process.Signal(syscall.SIGCONT)
}
