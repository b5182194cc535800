// Package test holds tslb's end-to-end tests: the real tslb binary in a lab
// of network namespaces (package lab) with real kernel TCP stacks on both
// sides. They need root; under CI=true they fail instead of skipping when
// the lab cannot be built.
package test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gopacket/gopacket/layers"

	"tslb/config"
	"tslb/test/harness"
	"tslb/test/lab"
)

var tslbBinary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "tslb-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	root, _ := filepath.Abs("..")
	tslbBinary, err = harness.BuildBinary(root, dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// families are the address families of the tests that run for both: an
// IPv4 lab, and a dual-stack lab whose primary family (VIP, SNAT,
// backends, the service tslb is given) is IPv6.
var families = []struct {
	name string
	ipv6 bool
}{{"ipv4", false}, {"ipv6", true}}

// forFamilies runs fn as the subtests ipv4 and ipv6, each with a lab of
// its own.
func forFamilies(t *testing.T, fn func(t *testing.T, ipv6 bool)) {
	for _, f := range families {
		t.Run(f.name, func(t *testing.T) { fn(t, f.ipv6) })
	}
}

// vipURL is http://VIP:port/path, the VIP in brackets if IPv6.
func vipURL(l *lab.Lab, port uint16, path string) string {
	return "http://" + netip.AddrPortFrom(l.VIP, port).String() + path
}

// deploy builds a lab with the given shape (dual-stack with IPv6 primary
// if o.IPv6), starts its backends and tslb, and registers cleanup that
// also checks tslb exits 0 on SIGTERM.
func deploy(t *testing.T, clients, backends int, sc lab.ServerConfig, o harness.Options) (*lab.Lab, []*lab.Backend, *harness.TSLB) {
	t.Helper()
	l := lab.NewT(t, lab.Config{Clients: clients, Backends: backends, IPv6: o.IPv6})
	bs, err := l.StartBackends(sc)
	if err != nil {
		t.Fatalf("start backends: %v", err)
	}
	o.Binary = tslbBinary
	o.Dir = t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tl, err := harness.Start(ctx, l, o)
	if err != nil {
		t.Fatalf("start tslb: %v", err)
	}
	t.Cleanup(func() {
		if tl.Exited() {
			t.Errorf("tslb exited early; log:\n%s", tl.Log())
			return
		}
		code, err := tl.Stop(10 * time.Second)
		if err != nil || code != 0 {
			t.Errorf("tslb stop on SIGTERM: exit code %d, err %v; log:\n%s", code, err, tl.Log())
		}
	})
	return l, bs, tl
}

func metrics(t testing.TB, tl *harness.TSLB) harness.Samples {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	m, err := tl.Metrics(ctx)
	if err != nil {
		t.Fatalf("scrape metrics: %v", err)
	}
	return m
}

// TestHTTPThroughVIP: 1,000 requests from two client namespaces through the
// VIP to three backends with weights 1:2:3; 0 errors, the backends see only
// the SNAT address, and the spread is within ±5% of the weights. For IPv4
// and IPv6.
func TestHTTPThroughVIP(t *testing.T) { forFamilies(t, testHTTPThroughVIP) }

func testHTTPThroughVIP(t *testing.T, ipv6 bool) {
	weights := []int{1, 2, 3}
	l, bs, tl := deploy(t, 2, 3, lab.ServerConfig{Port: 8080, CloseFirst: true}, harness.Options{Weights: weights, IPv6: ipv6})
	ctx := context.Background()
	res := lab.Requests(ctx, l.Clients, vipURL(l, 80, "/"), 1000, 16, 5*time.Second, 90*time.Second, false)
	if res.Errors != 0 || res.OK != 1000 {
		t.Fatalf("ok %d errors %d, first errors %v; tslb log:\n%s", res.OK, res.Errors, res.FirstErrors, tl.Log())
	}
	for i, b := range bs {
		want := 1000 * float64(weights[i]) / 6
		got := float64(res.ByBackend[b.ID])
		if math.Abs(got-want) > 0.05*want {
			t.Errorf("backend %s (weight %d): %v requests, want %.0f ±5%%", b.ID, weights[i], got, want)
		}
		for src, n := range b.RemoteIPs() {
			if src != l.SNAT {
				t.Errorf("backend %s saw %d connections from %s, want only the SNAT address %s", b.ID, n, src, l.SNAT)
			}
		}
		if b.Requests() != int64(got) {
			t.Errorf("backend %s served %d requests, clients counted %v", b.ID, b.Requests(), got)
		}
	}
	m := metrics(t, tl)
	if got := m.Sum("tslb_flows_created_total", "service=web"); got != 1000 {
		t.Errorf("tslb_flows_created_total = %v, want 1000", got)
	}
	for i, b := range bs {
		want := float64(res.ByBackend[b.ID])
		if got := m.Sum("tslb_backend_flows_created_total", "backend="+b.Addr.String()); got != want {
			t.Errorf("backend %d flows created metric %v, want %v", i, got, want)
		}
	}
	// The server closed every connection first: the tracker must say so.
	if got := m.Sum("tslb_drops_total", "reason=rst_out_of_window"); got != 0 {
		t.Errorf("unexpected RST drops: %v", got)
	}
}

// TestBulkTransferBothWays moves 50 MB each way through tslb with the
// kernels' offloads on (GSO superframes, partial checksums) and checks the
// sha256 of what arrived, for IPv4 and IPv6. tslb must have received
// superframes (more bytes per frame than the MTU allows) and dropped none
// as oversize.
func TestBulkTransferBothWays(t *testing.T) { forFamilies(t, testBulkTransferBothWays) }

func testBulkTransferBothWays(t *testing.T, ipv6 bool) {
	l, _, tl := deploy(t, 1, 1, lab.ServerConfig{Port: 8080}, harness.Options{IPv6: ipv6})
	const n = 50 << 20
	hc := l.Clients[0].HTTPClient(false, 60*time.Second)

	want := sha256.New()
	io.Copy(want, lab.Stream(7, n))
	wantHex := hex.EncodeToString(want.Sum(nil))

	start := time.Now()
	resp, err := hc.Get(vipURL(l, 80, fmt.Sprintf("/bytes?n=%d&seed=7", n)))
	if err != nil {
		t.Fatalf("download: %v; log:\n%s", err, tl.Log())
	}
	h := sha256.New()
	got, err := io.Copy(h, resp.Body)
	resp.Body.Close()
	if err != nil || got != n {
		t.Fatalf("download: %d bytes, err %v", got, err)
	}
	if gotHex := hex.EncodeToString(h.Sum(nil)); gotHex != wantHex {
		t.Fatalf("download sha256 %s, want %s", gotHex, wantHex)
	}
	t.Logf("download 50 MB in %v (%.0f Mbit/s)", time.Since(start).Round(time.Millisecond), n*8/time.Since(start).Seconds()/1e6)

	start = time.Now()
	resp, err = hc.Post(vipURL(l, 80, "/upload"), "application/octet-stream", lab.Stream(7, n))
	if err != nil {
		t.Fatalf("upload: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if want := fmt.Sprintf("%s %d\n", wantHex, n); string(body) != want {
		t.Fatalf("upload: backend answered %q, want %q", body, want)
	}
	t.Logf("upload 50 MB in %v (%.0f Mbit/s)", time.Since(start).Round(time.Millisecond), n*8/time.Since(start).Seconds()/1e6)
	m := metrics(t, tl)
	for k, v := range m {
		if strings.HasPrefix(k, "tslb_drops_total{") && v > 0 {
			t.Logf("%s = %v", k, v)
		}
	}
	for _, link := range []string{"clients", "backends"} {
		b, p := m.Sum("tslb_link_bytes_total", "link="+link, "direction=rx"), m.Sum("tslb_link_packets_total", "link="+link, "direction=rx")
		copied := m.Sum("tslb_link_copied_frames_total", "link="+link)
		t.Logf("link %s: received %.0f frames, %.0f bytes (%.0f per frame), %.0f through the copy path", link, p, b, b/p, copied)
		// A 1500-byte MTU allows 1514 bytes per frame: more on average
		// means GSO superframes went through tslb whole.
		if p == 0 || b/p <= 1514 || copied == 0 {
			t.Errorf("link %s: %.0f bytes in %.0f frames, %.0f superframes copied: no GSO superframes reached tslb", link, b, p, copied)
		}
	}
}

// synOptions captures on the backend's eth0 and the client's eth0 while
// one request runs, and returns the SYNs seen on each side.
func synsOnBothSides(t *testing.T, l *lab.Lab) (client, backend []*layers.TCP) {
	t.Helper()
	cc, err := l.Clients[0].Capture("eth0", 2000)
	if err != nil {
		t.Fatal(err)
	}
	bc, err := l.Backends[0].Capture("eth0", 2000)
	if err != nil {
		t.Fatal(err)
	}
	res := lab.Requests(context.Background(), l.Clients[:1], vipURL(l, 80, "/"), 5, 1, 5*time.Second, 30*time.Second, false)
	time.Sleep(100 * time.Millisecond)
	cf, bf := cc.Stop(), bc.Stop()
	if res.Errors != 0 {
		t.Fatalf("requests failed: %v", res.FirstErrors)
	}
	pick := func(fs []lab.Frame, toPort uint16) []*layers.TCP {
		var out []*layers.TCP
		for _, f := range fs {
			_, tcp, ok := lab.DecodeTCP(f)
			if ok && tcp.SYN && !tcp.ACK && uint16(tcp.DstPort) == toPort {
				out = append(out, tcp)
			}
		}
		return out
	}
	return pick(cf, 80), pick(bf, 8080)
}

func tsOption(tcp *layers.TCP) (tsval uint32, ok bool) {
	for _, o := range tcp.Options {
		if o.OptionType == layers.TCPOptionKindTimestamps && len(o.OptionData) == 8 {
			return uint32(o.OptionData[0])<<24 | uint32(o.OptionData[1])<<16 | uint32(o.OptionData[2])<<8 | uint32(o.OptionData[3]), true
		}
	}
	return 0, false
}

// TestTimestampStrip: with timestamps: strip no SYN reaching the backend
// carries the TS option (the client's did), and the requests complete;
// IPv4 and IPv6.
func TestTimestampStrip(t *testing.T) { forFamilies(t, testTimestampStrip) }

func testTimestampStrip(t *testing.T, ipv6 bool) {
	l, _, tl := deploy(t, 1, 1, lab.ServerConfig{Port: 8080, CloseFirst: true}, harness.Options{Timestamps: config.TSStrip, IPv6: ipv6})
	client, backend := synsOnBothSides(t, l)
	if len(client) < 5 || len(backend) < 5 {
		t.Fatalf("captured %d client SYNs and %d backend SYNs, want >= 5 each", len(client), len(backend))
	}
	for _, s := range client {
		if _, ok := tsOption(s); !ok {
			t.Fatalf("client SYN without timestamps: the lab's clients should send them")
		}
	}
	for _, s := range backend {
		if _, ok := tsOption(s); ok {
			t.Errorf("SYN to the backend (seq %d) still carries a timestamp option", s.Seq)
		}
	}
	if m := metrics(t, tl); m.Sum("tslb_timestamps_stripped_total") < 5 {
		t.Errorf("tslb_timestamps_stripped_total = %v, want >= 5", m.Sum("tslb_timestamps_stripped_total"))
	}
}

// TestTimestampPassthrough: the client's TSval reaches the backend
// unchanged (SYNs matched by their untranslated sequence number); IPv4
// and IPv6.
func TestTimestampPassthrough(t *testing.T) { forFamilies(t, testTimestampPassthrough) }

func testTimestampPassthrough(t *testing.T, ipv6 bool) {
	l, _, _ := deploy(t, 1, 1, lab.ServerConfig{Port: 8080, CloseFirst: true}, harness.Options{Timestamps: config.TSPassthrough, IPv6: ipv6})
	client, backend := synsOnBothSides(t, l)
	bySeq := make(map[uint32]uint32)
	for _, s := range client {
		v, ok := tsOption(s)
		if !ok {
			t.Fatalf("client SYN without timestamps")
		}
		bySeq[s.Seq] = v
	}
	matched := 0
	for _, s := range backend {
		v, ok := tsOption(s)
		if !ok {
			t.Errorf("backend SYN seq %d lost its timestamp option", s.Seq)
			continue
		}
		if want, ok := bySeq[s.Seq]; ok {
			matched++
			if v != want {
				t.Errorf("SYN seq %d: backend saw TSval %d, client sent %d", s.Seq, v, want)
			}
		}
	}
	if matched < 5 {
		t.Errorf("matched %d SYNs between the client and backend captures, want >= 5", matched)
	}
}

// TestFlowTableFull: with flows.max = 3, three established flows fill the
// table; new SYNs are refused and counted, and the established transfer
// still completes intact.
func TestFlowTableFull(t *testing.T) {
	l, _, tl := deploy(t, 1, 1, lab.ServerConfig{Port: 8080}, harness.Options{FlowsMax: 3})
	ctx := context.Background()
	// Two idle connections and one long download hold the three slots.
	var idle []io.Closer
	for i := 0; i < 2; i++ {
		c, err := l.Clients[0].DialContext(ctx, "tcp", netip.AddrPortFrom(l.VIP, 80).String())
		if err != nil {
			t.Fatalf("dial %d: %v", i, err)
		}
		idle = append(idle, c)
	}
	defer func() {
		for _, c := range idle {
			c.Close()
		}
	}()
	const n = 20 << 20
	hc := l.Clients[0].HTTPClient(false, 60*time.Second)
	resp, err := hc.Get(fmt.Sprintf("http://%s/bytes?n=%d&seed=3", l.VIP, n))
	if err != nil {
		t.Fatalf("download: %v", err)
	}
	defer resp.Body.Close()
	h := sha256.New()
	// Read a first part, then try new connections while the flow is live.
	if _, err := io.CopyN(h, resp.Body, 1<<20); err != nil {
		t.Fatalf("download start: %v", err)
	}
	for i := 0; i < 3; i++ {
		dctx, cancel := context.WithTimeout(ctx, 700*time.Millisecond)
		c, err := l.Clients[0].DialContext(dctx, "tcp", netip.AddrPortFrom(l.VIP, 80).String())
		cancel()
		if err == nil {
			c.Close()
			t.Fatalf("connection %d through a full flow table succeeded", i)
		}
	}
	if _, err := io.Copy(h, resp.Body); err != nil {
		t.Fatalf("download after refusals: %v", err)
	}
	want := sha256.New()
	io.Copy(want, lab.Stream(3, n))
	if string(h.Sum(nil)) != string(want.Sum(nil)) {
		t.Fatalf("download corrupted while the table was full")
	}
	m := metrics(t, tl)
	if got := m.Sum("tslb_syn_refused_total", "reason=table_full"); got < 3 {
		t.Errorf("tslb_syn_refused_total{reason=table_full} = %v, want >= 3", got)
	}
	if got := m.Sum("tslb_flow_table_entries"); got != 3 {
		t.Errorf("tslb_flow_table_entries = %v, want 3", got)
	}
}

// TestDropsAndICMP: ping to the VIP is answered (ICMPv6 echo on IPv6);
// TCP to a port with no service, and UDP to the VIP, are dropped and
// counted by reason. IPv4 and IPv6.
func TestDropsAndICMP(t *testing.T) { forFamilies(t, testDropsAndICMP) }

func testDropsAndICMP(t *testing.T, ipv6 bool) {
	l, _, tl := deploy(t, 1, 1, lab.ServerConfig{Port: 8080}, harness.Options{IPv6: ipv6})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := l.Clients[0].Command(ctx, "ping", "-c", "3", "-i", "0.2", "-W", "1", l.VIP.String()).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "3 received") {
		t.Errorf("ping VIP: %v\n%s", err, out)
	}
	dctx, dcancel := context.WithTimeout(ctx, 500*time.Millisecond)
	if c, err := l.Clients[0].DialContext(dctx, "tcp", netip.AddrPortFrom(l.VIP, 81).String()); err == nil {
		c.Close()
		t.Errorf("connect to VIP:81 (no service) succeeded")
	}
	dcancel()
	if c, err := l.Clients[0].DialContext(ctx, "udp", netip.AddrPortFrom(l.VIP, 53).String()); err == nil {
		c.Write([]byte("hello"))
		c.Close()
	}
	time.Sleep(200 * time.Millisecond)
	m := metrics(t, tl)
	if got := m.Sum("tslb_icmp_echo_replies_total"); got < 3 {
		t.Errorf("tslb_icmp_echo_replies_total = %v, want >= 3", got)
	}
	if got := m.Sum("tslb_drops_total", "reason=no_service"); got < 1 {
		t.Errorf("drops{no_service} = %v, want >= 1", got)
	}
	if got := m.Sum("tslb_drops_total", "reason=unsupported_proto"); got < 1 {
		t.Errorf("drops{unsupported_proto} = %v, want >= 1", got)
	}
	_ = http.StatusOK
}

// TestDemo runs `tslb demo` and `tslb demo -6`: 300 requests through the
// VIP of its family, none failed, the backends see only the SNAT address,
// and tslb exits 0 on SIGTERM.
func TestDemo(t *testing.T) {
	forFamilies(t, func(t *testing.T, ipv6 bool) {
		lab.Require(t)
		args := []string{"demo", "-requests", "300"}
		vip, snat := "198.18.0.100:80", " 198.18.1.100("
		if ipv6 {
			args = append(args, "-6")
			vip, snat = "[fd00:5e18::100]:80", " fd00:5e18:0:1::100("
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		out, err := exec.CommandContext(ctx, tslbBinary, args...).CombinedOutput()
		text := strings.ReplaceAll(string(out), "\r", "\n")
		if err != nil || !strings.Contains(text, "300 requests in") || !strings.Contains(text, ", 0 errors") ||
			!strings.Contains(text, "VIP "+vip) || !strings.Contains(text, snat) || !strings.Contains(text, "exit code 0") {
			t.Fatalf("tslb %s: %v\n%s", strings.Join(args, " "), err, text)
		}
	})
}

// TestKernelDropInLab: with datapath.kernel_drop (the default) the kernel
// of tslb's namespace discards the frames to the VIP and SNAT address at
// ingress, after tslb took them: 500 requests through tslb leave its
// Ip InAddrErrors (what ip_error counts for a packet to an address the
// kernel neither owns nor forwards to) unchanged. The control, with
// kernel_drop: false, must see them counted, or the test proves nothing.
func TestKernelDropInLab(t *testing.T) {
	for _, off := range []bool{false, true} {
		t.Run(map[bool]string{false: "kernel_drop", true: "control_kernel_drop_off"}[off], func(t *testing.T) {
			l, _, tl := deploy(t, 1, 2, lab.ServerConfig{Port: 8080, CloseFirst: true}, harness.Options{LogLevel: "warn",
				Edit: func(c *config.Config) { c.Datapath.KernelDropOff = off }})
			want := 2.0 // the VIP and the SNAT address
			if off {
				want = 0
			}
			if got := metrics(t, tl).Sum("tslb_kernel_drop_addresses"); got != want {
				t.Fatalf("tslb_kernel_drop_addresses = %v, want %v; log:\n%s", got, want, tl.Log())
			}
			before := inAddrErrors(t, l.LB)
			res := lab.Requests(context.Background(), l.Clients, vipURL(l, 80, "/"), 500, 8, 5*time.Second, 60*time.Second, false)
			if res.Errors != 0 {
				t.Fatalf("%d errors: %v", res.Errors, res.FirstErrors)
			}
			d := inAddrErrors(t, l.LB) - before
			t.Logf("kernel_drop off=%v: 500 requests, lb namespace Ip InAddrErrors +%d", off, d)
			switch {
			case !off && d > 10:
				t.Errorf("InAddrErrors +%d with the kernel drop installed, want about 0", d)
			case off && d < 2000:
				t.Errorf("control: InAddrErrors +%d for 500 requests, want every frame tslb took (>= 2000)", d)
			}
		})
	}
}

// inAddrErrors is Ip: InAddrErrors of ns.
func inAddrErrors(t *testing.T, ns *lab.NS) int64 {
	t.Helper()
	var v int64 = -1
	err := ns.Do(func() error {
		b, err := os.ReadFile("/proc/thread-self/net/snmp") // /proc/net is the thread group leader's namespace
		if err != nil {
			return err
		}
		var names []string
		for _, line := range strings.Split(string(b), "\n") {
			fs := strings.Fields(line)
			if len(fs) == 0 || fs[0] != "Ip:" {
				continue
			}
			if names == nil {
				names = fs
				continue
			}
			for i, n := range names {
				if n == "InAddrErrors" && i < len(fs) {
					v, err = strconv.ParseInt(fs[i], 10, 64)
					return err
				}
			}
		}
		return fmt.Errorf("no Ip: InAddrErrors in /proc/net/snmp")
	})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// TestLabUp: `tslb lab up` (both families) builds a lab that stays, and
// writes a configuration for it that check-config accepts and whose
// service balances real requests through `tslb run`; `tslb lab down`
// removes every namespace.
func TestLabUp(t *testing.T) {
	forFamilies(t, func(t *testing.T, ipv6 bool) {
		lab.Require(t)
		prefix := fmt.Sprintf("tslbup%d", os.Getpid()%10000)
		cfgPath := filepath.Join(t.TempDir(), "lab.yaml")
		args := []string{"lab", "up", "-prefix", prefix, "-clients", "1", "-backends", "1", "-config", cfgPath}
		if ipv6 {
			args = append(args, "-6")
		}
		down := func() { exec.Command(tslbBinary, "lab", "down", "-prefix", prefix).Run() }
		t.Cleanup(down)
		if out, err := exec.Command(tslbBinary, args...).CombinedOutput(); err != nil {
			t.Fatalf("tslb %v: %v\n%s", args, err, out)
		}
		if out, err := exec.Command(tslbBinary, "check-config", cfgPath).CombinedOutput(); err != nil {
			t.Fatalf("check-config of the written configuration: %v\n%s", err, out)
		}
		l, err := lab.Attach(prefix)
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		cfg, err := config.Load(cfgPath)
		if err != nil {
			t.Fatal(err)
		}
		vip := netip.AddrPortFrom(cfg.Services[0].VIP, cfg.Services[0].Port)
		be := cfg.Services[0].Backends[0].Address
		if vip.Addr().Is6() != ipv6 {
			t.Fatalf("service VIP %s, want IPv6 %v", vip, ipv6)
		}
		ln, err := l.Backends[0].Listen("tcp", be.String())
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		go http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "up\n") }))
		run := l.LB.Command(context.Background(), tslbBinary, "run", "-c", cfgPath)
		if err := run.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() { run.Process.Signal(syscall.SIGTERM); run.Wait() }()
		hc := l.Clients[0].HTTPClient(false, 2*time.Second)
		var last error
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
			resp, err := hc.Get("http://" + vip.String() + "/")
			if err == nil {
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if string(b) == "up\n" {
					last = nil
					break
				}
				err = fmt.Errorf("answer %q", b)
			}
			last = err
		}
		if last != nil {
			t.Fatalf("no answer through %s: %v", vip, last)
		}
		down()
		if left, _ := lab.Namespaces(prefix); len(left) != 0 {
			t.Errorf("namespaces left after lab down: %v", left)
		}
	})
}
