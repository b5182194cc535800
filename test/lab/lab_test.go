package lab

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
)

// failSteps maps a lab prefix to the build step after which New must fail.
var failSteps sync.Map

func init() {
	testHookStep = func(prefix, step string) error {
		if s, ok := failSteps.Load(prefix); ok && s.(string) == step {
			return errInjected
		}
		return nil
	}
}

var errInjected = errors.New("injected failure")

// netnsList returns the names printed by `ip netns list` that start with
// prefix + "-".
func netnsList(t *testing.T, prefix string) []string {
	t.Helper()
	out, err := exec.Command("ip", "netns", "list").CombinedOutput()
	if err != nil {
		t.Fatalf("ip netns list: %v: %s", err, out)
	}
	var names []string
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) > 0 && strings.HasPrefix(f[0], prefix+"-") {
			names = append(names, f[0])
		}
	}
	return names
}

// uniquePrefix returns a fresh prefix for one test.
func uniquePrefix(t *testing.T, tag string) string {
	t.Helper()
	cfg, err := Config{}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	return cfg.Prefix + tag
}

func TestConfigWithDefaults(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		ok   bool
	}{
		{"zero", Config{}, true},
		{"explicit", Config{Prefix: "abc_1", Clients: 2, Backends: 89}, true},
		{"prefix_dash", Config{Prefix: "a-b"}, false},
		{"prefix_slash", Config{Prefix: "../x"}, false},
		{"prefix_too_long", Config{Prefix: strings.Repeat("a", maxPrefix+1)}, false},
		{"prefix_max", Config{Prefix: strings.Repeat("a", maxPrefix)}, true},
		{"too_many_clients", Config{Clients: 90}, false},
		{"negative_backends", Config{Backends: -1}, false},
		{"bad_mode", Config{Mode: Mode(7)}, false},
		{"empty_port_range", Config{Mode: ModeKernelNAT, NAT: NATConfig{PortMin: 3000, PortMax: 2000}}, false},
		{"subsecond_timewait", Config{Mode: ModeKernelNAT, NAT: NATConfig{CTTimeWait: time.Millisecond}}, false},
		{"extra_port", Config{Mode: ModeKernelNAT, NAT: NATConfig{ExtraPorts: []PortMap{{81, 8081}}}}, true},
		{"extra_port_zero", Config{Mode: ModeKernelNAT, NAT: NATConfig{ExtraPorts: []PortMap{{81, 0}}}}, false},
		{"extra_port_is_vip_port", Config{Mode: ModeKernelNAT, NAT: NATConfig{ExtraPorts: []PortMap{{80, 8081}}}}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.cfg.withDefaults()
			if (err == nil) != tt.ok {
				t.Fatalf("withDefaults(%+v) err = %v, want ok=%v", tt.cfg, err, tt.ok)
			}
			if !tt.ok {
				return
			}
			if got.Clients < 1 || got.Backends < 1 || checkPrefix(got.Prefix) != nil {
				t.Errorf("defaults not applied: %+v", got)
			}
			if got.NAT.VIPPort != 80 || got.NAT.BackendPort != 8080 || got.NAT.PortMin != 20000 || got.NAT.PortMax != 60999 {
				t.Errorf("NAT defaults = %+v", got.NAT)
			}
		})
	}
	a, _ := Config{}.withDefaults()
	b, _ := Config{}.withDefaults()
	if !strings.HasPrefix(a.Prefix, "tslbt") || len(a.Prefix) != len("tslbt")+4 {
		t.Errorf("default prefix %q, want tslbt + 4 hex", a.Prefix)
	}
	if a.Prefix == b.Prefix {
		// 1 in 65536: flaky only in theory, and then a rerun passes.
		t.Errorf("two default prefixes are equal: %q", a.Prefix)
	}
}

func TestDestroyRefusesBadPrefix(t *testing.T) {
	for _, p := range []string{"", "a-b", "a/b", "*"} {
		if err := Destroy(p); err == nil {
			t.Errorf("Destroy(%q) = nil, want error", p)
		}
	}
}

func TestNATRuleset(t *testing.T) {
	backends := []netip.Addr{netip.MustParseAddr("198.18.1.11"), netip.MustParseAddr("198.18.1.12")}
	tests := []struct {
		name    string
		cfg     NATConfig
		want    []string
		notWant []string
	}{
		{
			name: "plain",
			cfg:  NATConfig{VIPPort: 80, BackendPort: 8080, PortMin: 20000, PortMax: 60999},
			want: []string{
				"table ip tslbpeer {",
				"ip daddr 198.18.0.100 tcp dport 80 dnat to numgen inc mod 2 map { 0 : 198.18.1.11, 1 : 198.18.1.12 } : 8080",
				`oifname "tslb-b0" ct status dnat meta l4proto tcp snat to 198.18.1.100:20000-60999`,
			},
			notWant: []string{"timestamp"},
		},
		{
			name: "extra_ports",
			cfg:  NATConfig{VIPPort: 80, BackendPort: 8080, PortMin: 20000, PortMax: 60999, ExtraPorts: []PortMap{{81, 8081}, {7, 9007}}},
			want: []string{
				"tcp dport 80 dnat to numgen inc mod 2 map { 0 : 198.18.1.11, 1 : 198.18.1.12 } : 8080\n",
				"tcp dport 81 dnat to numgen inc mod 2 map { 0 : 198.18.1.11, 1 : 198.18.1.12 } : 8081\n",
				"tcp dport 7 dnat to numgen inc mod 2 map { 0 : 198.18.1.11, 1 : 198.18.1.12 } : 9007\n  }\n",
			},
		},
		{
			name: "strip_ts",
			cfg:  NATConfig{VIPPort: 443, BackendPort: 9000, PortMin: 1024, PortMax: 2047, StripTS: true},
			want: []string{
				"tcp dport 443 dnat to",
				"} : 9000",
				"snat to 198.18.1.100:1024-2047",
				"tcp flags & (syn|ack) == syn tcp option timestamp exists reset tcp option timestamp",
			},
		},
	}
	tests = append(tests, struct {
		name    string
		cfg     NATConfig
		want    []string
		notWant []string
	}{
		name: "ipv6",
		cfg:  NATConfig{VIPPort: 80, BackendPort: 8080, PortMin: 20000, PortMax: 60999, StripTS: true},
		want: []string{
			"table ip6 tslbpeer {",
			"ip6 daddr fd00:5e18::100 tcp dport 80 dnat to numgen inc mod 2 map { 0 : fd00:5e18:0:1::11, 1 : fd00:5e18:0:1::12 } : 8080",
			`oifname "tslb-b0" ct status dnat meta l4proto tcp snat to [fd00:5e18:0:1::100]:20000-60999`,
			"reset tcp option timestamp",
		},
		notWant: []string{"ip daddr", "198.18."},
	})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			vip, snat, bs := vipAddr, snatAddr, backends
			if tt.name == "ipv6" {
				vip, snat = labV6.VIP, labV6.SNAT
				bs = []netip.Addr{hostAddr6(labV6.BackendNet, 1), hostAddr6(labV6.BackendNet, 2)}
			}
			got := natRuleset(tt.cfg, vip, snat, bs)
			for _, w := range tt.want {
				if !strings.Contains(got, w) {
					t.Errorf("ruleset lacks %q:\n%s", w, got)
				}
			}
			for _, w := range tt.notWant {
				if strings.Contains(got, w) {
					t.Errorf("ruleset contains %q:\n%s", w, got)
				}
			}
		})
	}
}

func TestStream(t *testing.T) {
	sum := func(seed uint64, n int64) ([32]byte, int64) {
		h := sha256.New()
		got, err := io.Copy(h, Stream(seed, n))
		if err != nil {
			t.Fatal(err)
		}
		var s [32]byte
		copy(s[:], h.Sum(nil))
		return s, got
	}
	for _, n := range []int64{0, 1, 7, 8, 9, 4096, 1<<20 + 3} {
		a, na := sum(42, n)
		b, nb := sum(42, n)
		if na != n || nb != n {
			t.Errorf("Stream(42, %d) read %d and %d bytes", n, na, nb)
		}
		if a != b {
			t.Errorf("Stream(42, %d) not deterministic", n)
		}
	}
	if n, _ := io.Copy(io.Discard, Stream(1, -5)); n != 0 {
		t.Errorf("Stream(1, -5) read %d bytes, want 0", n)
	}
	// A prefix of a longer stream is the shorter stream.
	long, _ := io.ReadAll(Stream(7, 1000))
	short, _ := io.ReadAll(Stream(7, 100))
	if !bytes.Equal(long[:100], short) {
		t.Error("Stream(7, 100) is not a prefix of Stream(7, 1000)")
	}
	other, _ := io.ReadAll(Stream(8, 1000))
	if bytes.Equal(long, other) {
		t.Error("seeds 7 and 8 give the same stream")
	}
	if bytes.Count(long, []byte{0}) > 50 {
		t.Error("stream looks degenerate (too many zero bytes)")
	}
}

// TestBackendHandler exercises the endpoints without namespaces.
func TestBackendHandler(t *testing.T) {
	b := &Backend{ID: "b2", remotes: make(map[netip.Addr]int64)}
	body := bytes.Repeat([]byte("tslb"), 10000)
	want := sha256.Sum256(body)
	streamSum := sha256.New()
	io.Copy(streamSum, Stream(9, 12345))

	tests := []struct {
		name, method, target string
		body                 []byte
		status               int
		wantBody             string
	}{
		{"root", "GET", "/", nil, 200, "b2\n"},
		{"root_post", "POST", "/", nil, 405, ""},
		{"bytes", "GET", "/bytes?n=12345&seed=9", nil, 200, ""},
		{"bytes_bad_n", "GET", "/bytes?n=-1", nil, 400, ""},
		{"bytes_huge_n", "GET", "/bytes?n=999999999999999", nil, 400, ""},
		{"bytes_bad_seed", "GET", "/bytes?n=1&seed=x", nil, 400, ""},
		{"upload", "POST", "/upload", body, 200, fmt.Sprintf("%x %d\n", want, len(body))},
		{"upload_empty", "POST", "/upload", nil, 200, fmt.Sprintf("%x 0\n", sha256.Sum256(nil))},
		{"upload_get", "GET", "/upload", nil, 405, ""},
		{"sleep", "GET", "/sleep?ms=1", nil, 200, "b2\n"},
		{"sleep_bad", "GET", "/sleep?ms=abc", nil, 400, ""},
		{"sleep_negative", "GET", "/sleep?ms=-3", nil, 400, ""},
		{"missing", "GET", "/nope", nil, 404, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := httptest.NewRequest(tt.method, tt.target, bytes.NewReader(tt.body))
			req.RemoteAddr = "198.18.1.100:20001"
			rec := httptest.NewRecorder()
			b.ServeHTTP(rec, req)
			if rec.Code != tt.status {
				t.Fatalf("status %d, want %d (%s)", rec.Code, tt.status, rec.Body)
			}
			if got := rec.Header().Get("X-Backend"); got != "b2" {
				t.Errorf("X-Backend = %q", got)
			}
			if tt.wantBody != "" && rec.Body.String() != tt.wantBody {
				t.Errorf("body %q, want %q", rec.Body, tt.wantBody)
			}
			if tt.name == "bytes" {
				if rec.Body.Len() != 12345 || sha256.Sum256(rec.Body.Bytes()) != [32]byte(streamSum.Sum(nil)) {
					t.Errorf("/bytes body: %d bytes, not Stream(9, 12345)", rec.Body.Len())
				}
			}
		})
	}
	if got := b.Requests(); got != int64(len(tests)) {
		t.Errorf("Requests() = %d, want %d", got, len(tests))
	}
	if got := b.RemoteIPs(); len(got) != 1 || got[snatAddr] != int64(len(tests)) {
		t.Errorf("RemoteIPs() = %v", got)
	}
}

func TestRequestsNoClients(t *testing.T) {
	r := Requests(context.Background(), nil, "http://198.18.0.100/", 3, 2, time.Second, time.Second, false)
	if r.OK != 0 || r.Errors != 3 || len(r.FirstErrors) != 1 {
		t.Errorf("Requests without clients = %+v", r)
	}
}

func TestUserspaceTopology(t *testing.T) {
	t.Parallel()
	l := NewT(t, Config{Clients: 2, Backends: 2})

	got := netnsList(t, l.Prefix)
	want := []string{"sw", "lb", "c1", "c2", "b1", "b2"}
	if len(got) != len(want) {
		t.Errorf("ip netns list: %v, want %d namespaces", got, len(want))
	}
	for _, w := range want {
		if !contains(got, l.Prefix+"-"+w) {
			t.Errorf("namespace %s-%s missing from %v", l.Prefix, w, got)
		}
	}
	if l.VIP != netip.MustParseAddr("198.18.0.100") || l.SNAT != netip.MustParseAddr("198.18.1.100") {
		t.Errorf("VIP %v SNAT %v", l.VIP, l.SNAT)
	}

	hosts := []struct {
		ns   *NS
		want string
	}{
		{l.Clients[0], "198.18.0.11/24"},
		{l.Clients[1], "198.18.0.12/24"},
		{l.Backends[0], "198.18.1.11/24"},
		{l.Backends[1], "198.18.1.12/24"},
	}
	for _, h := range hosts {
		as, err := h.ns.Addrs("eth0")
		if err != nil {
			t.Fatal(err)
		}
		if len(as) != 1 || as[0].String() != h.want || h.ns.Addr != as[0].Addr() || h.ns.If != "eth0" {
			t.Errorf("%s: eth0 addresses %v (Addr %v), want %s", h.ns.Name, as, h.ns.Addr, h.want)
		}
	}
	for _, ifname := range []string{l.LBClientIf, l.LBBackendIf, "lo"} {
		link, err := l.LB.Link(ifname)
		if err != nil {
			t.Fatal(err)
		}
		if link.Attrs().Flags&net.FlagUp == 0 {
			t.Errorf("lb %s is down", ifname)
		}
		as, err := l.LB.Addrs(ifname)
		if err != nil {
			t.Fatal(err)
		}
		if ifname != "lo" && len(as) != 0 {
			t.Errorf("lb %s has IPv4 addresses %v, want none", ifname, as)
		}
	}
	if l.LB.Addr.IsValid() || l.Switch.Addr.IsValid() {
		t.Errorf("lb/sw Addr should be invalid: %v %v", l.LB.Addr, l.Switch.Addr)
	}
	for _, ns := range []*NS{l.LB, l.Switch, l.Clients[0], l.Backends[1]} {
		for key, want := range map[string]string{
			"net.ipv4.ip_forward":                "0",
			"net.ipv6.conf.all.disable_ipv6":     "1",
			"net.ipv6.conf.default.disable_ipv6": "1",
		} {
			if v, err := ns.ReadSysctl(key); err != nil || v != want {
				t.Errorf("%s: %s = %q (%v), want %s", ns.Name, key, v, err, want)
			}
		}
	}
	if err := l.LB.Sysctl("kernel.hostname", "x"); err == nil {
		t.Error("Sysctl accepted a non-net key")
	}

	// L2 works across the bridges: c1 reaches c2, b2 reaches b1, and the
	// two subnets are not routed to each other.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	checkL2(ctx, t, l, "tcp4", "198.18.0.12", "198.18.0.11", "198.18.1.11", "")
	if out, err := l.LB.Command(ctx, "ip", "-4", "-o", "addr").Output(); err != nil || strings.Contains(string(out), "198.18.") {
		t.Errorf("lb ns addresses via ip netns exec: %v %q", err, out)
	}

	if err := l.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if left := netnsList(t, l.Prefix); len(left) != 0 {
		t.Errorf("after Close: %v", left)
	}
	if err := l.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := l.Clients[0].Do(func() error { return nil }); err == nil {
		t.Error("Do after Close succeeded")
	}
}

func contains(s []string, x string) bool {
	for _, v := range s {
		if v == x {
			return true
		}
	}
	return false
}

// TestNewFailureTearsDown injects a failure after each build step and
// checks that nothing is left behind.
func TestNewFailureTearsDown(t *testing.T) {
	t.Parallel()
	Require(t)
	for _, step := range []string{"namespaces", "sysctls", "bridges", "clients", "lb", "backends", "kernelnat"} {
		t.Run(step, func(t *testing.T) {
			prefix := uniquePrefix(t, "f")
			failSteps.Store(prefix, step)
			defer failSteps.Delete(prefix)
			l, err := New(Config{Prefix: prefix, Clients: 2, Backends: 2, Mode: ModeKernelNAT})
			if !errors.Is(err, errInjected) {
				if l != nil {
					l.Close()
				}
				t.Fatalf("New = %v, want the injected failure", err)
			}
			if l != nil {
				t.Error("New returned a lab with an error")
			}
			if left := netnsList(t, prefix); len(left) != 0 {
				t.Errorf("left behind: %v", left)
				Destroy(prefix)
			}
		})
	}
	// A name collision in the middle of the build (c1 already exists)
	// must neither remove the foreign namespace nor leave ours.
	t.Run("collision", func(t *testing.T) {
		prefix := uniquePrefix(t, "x")
		if out, err := exec.Command("ip", "netns", "add", prefix+"-c1").CombinedOutput(); err != nil {
			t.Fatalf("ip netns add: %v: %s", err, out)
		}
		defer Destroy(prefix)
		if _, err := New(Config{Prefix: prefix}); err == nil {
			t.Fatal("New succeeded despite an existing namespace")
		}
		if left := netnsList(t, prefix); len(left) != 1 || left[0] != prefix+"-c1" {
			t.Errorf("after failed New: %v, want only the foreign %s-c1", left, prefix)
		}
		if err := Destroy(prefix); err != nil {
			t.Fatal(err)
		}
		if left := netnsList(t, prefix); len(left) != 0 {
			t.Errorf("after Destroy: %v", left)
		}
	})
}

// synFrames returns the client SYNs (no ACK) towards port in frames.
func synFrames(frames []Frame, port uint16) []*layers.TCP {
	var out []*layers.TCP
	for _, f := range frames {
		_, tcp, ok := DecodeTCP(f)
		if ok && tcp.SYN && !tcp.ACK && uint16(tcp.DstPort) == port {
			out = append(out, tcp)
		}
	}
	return out
}

func hasTS(tcp *layers.TCP) bool {
	for _, o := range tcp.Options {
		if o.OptionType == layers.TCPOptionKindTimestamps {
			return true
		}
	}
	return false
}

func TestKernelNAT(t *testing.T) {
	t.Parallel()
	hostTW, hostErr := os.ReadFile("/proc/sys/net/netfilter/nf_conntrack_tcp_timeout_time_wait")
	l := NewT(t, Config{Clients: 2, Backends: 3, Mode: ModeKernelNAT, NAT: NATConfig{CTTimeWait: 7 * time.Second}})
	bs, err := l.StartBackends(ServerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if len(bs) != 3 || bs[0].ID != "b1" || bs[2].Addr != netip.MustParseAddrPort("198.18.1.13:8080") {
		t.Fatalf("backends: %+v", bs)
	}

	// Settings of the peer balancer.
	if v, err := l.LB.ReadSysctl("net.ipv4.ip_forward"); v != "1" {
		t.Errorf("lb ip_forward = %q (%v)", v, err)
	}
	if v, err := l.LB.ReadSysctl("net.netfilter.nf_conntrack_tcp_timeout_time_wait"); v != "7" {
		t.Errorf("lb conntrack time_wait = %q (%v)", v, err)
	}
	if hostErr == nil {
		now, _ := os.ReadFile("/proc/sys/net/netfilter/nf_conntrack_tcp_timeout_time_wait")
		if !bytes.Equal(now, hostTW) {
			t.Errorf("host conntrack time_wait changed from %q to %q", hostTW, now)
		}
	}
	if as, _ := l.LB.Addrs(l.LBClientIf); len(as) != 1 || as[0].Addr() != l.VIP {
		t.Errorf("lb %s addresses %v", l.LBClientIf, as)
	}

	capB1, err := l.Backends[0].Capture("eth0", 20000)
	if err != nil {
		t.Fatal(err)
	}
	capC1, err := l.Clients[0].Capture("eth0", 20000)
	if err != nil {
		t.Fatal(err)
	}

	ctx := context.Background()
	r := Requests(ctx, l.Clients, "http://198.18.0.100/", 300, 16, 5*time.Second, 30*time.Second, false)
	if r.OK != 300 || r.Errors != 0 {
		t.Fatalf("Requests: OK=%d Errors=%d %v", r.OK, r.Errors, r.FirstErrors)
	}
	if len(r.ByBackend) != 3 {
		t.Errorf("ByBackend = %v, want all three backends", r.ByBackend)
	}
	for id, n := range r.ByBackend {
		// numgen inc spreads evenly; allow slack for nothing but the mod.
		if n < 90 || n > 110 {
			t.Errorf("backend %s got %d of 300", id, n)
		}
	}
	if len(r.Latencies) != 300 || len(r.ConnectLatencies) != 300 {
		t.Errorf("latencies %d, connect latencies %d, want 300 each", len(r.Latencies), len(r.ConnectLatencies))
	}
	var total int64
	for _, b := range bs {
		total += b.Requests()
		ips := b.RemoteIPs()
		if len(ips) != 1 || ips[l.SNAT] != b.Requests() {
			t.Errorf("%s saw sources %v, want only %v", b.ID, ips, l.SNAT)
		}
		if int64(r.ByBackend[b.ID]) != b.Requests() {
			t.Errorf("%s: client counted %d, server %d", b.ID, r.ByBackend[b.ID], b.Requests())
		}
	}
	if total != 300 {
		t.Errorf("backends served %d requests, want 300", total)
	}

	// Upload and download through the VIP, with keep-alive.
	hc := l.Clients[1].HTTPClient(true, 10*time.Second)
	payload, _ := io.ReadAll(Stream(3, 3<<20))
	resp, err := hc.Post("http://198.18.0.100/upload", "application/octet-stream", bytes.NewReader(payload))
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	sum := sha256.Sum256(payload)
	if want := hex.EncodeToString(sum[:]) + fmt.Sprintf(" %d\n", len(payload)); string(got) != want {
		t.Errorf("upload answered %q, want %q", got, want)
	}
	resp, err = hc.Get("http://198.18.0.100/bytes?n=1000003&seed=11")
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	n, err := io.Copy(h, resp.Body)
	resp.Body.Close()
	wh := sha256.New()
	io.Copy(wh, Stream(11, 1000003))
	if err != nil || n != 1000003 || !bytes.Equal(h.Sum(nil), wh.Sum(nil)) {
		t.Errorf("download: %d bytes, err %v, sha match %v", n, err, bytes.Equal(h.Sum(nil), wh.Sum(nil)))
	}

	// Without StripTS the SYNs keep their timestamps on both sides.
	framesB1 := capB1.Stop()
	framesC1 := capC1.Stop()
	synB := synFrames(framesB1, 8080)
	synC := synFrames(framesC1, 80)
	if len(synB) == 0 || len(synC) == 0 {
		t.Fatalf("captured %d backend SYNs, %d client SYNs (frames %d/%d, dropped %d/%d)",
			len(synB), len(synC), len(framesB1), len(framesC1), capB1.Dropped(), capC1.Dropped())
	}
	for _, s := range append(synB, synC...) {
		if !hasTS(s) {
			t.Fatalf("SYN %d->%d without TS option but StripTS is off", s.SrcPort, s.DstPort)
		}
	}
	var in, out int
	for _, f := range framesB1 {
		if ip, tcp, ok := DecodeTCP(f); ok && tcp.DstPort == 8080 {
			if f.Outgoing || ip.SrcIP.String() != "198.18.1.100" {
				t.Errorf("frame to :8080 on b1 outgoing=%v src=%v", f.Outgoing, ip.SrcIP)
			}
			in++
		} else if ok && tcp.SrcPort == 8080 {
			if !f.Outgoing {
				t.Error("frame from :8080 on b1 marked incoming")
			}
			out++
		}
	}
	if in == 0 || out == 0 {
		t.Errorf("b1 capture: %d incoming, %d outgoing TCP frames", in, out)
	}

	// The pcap is readable and holds every frame.
	path := filepath.Join(t.TempDir(), "b1.pcap")
	if err := WritePcap(path, framesB1); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	pr, err := pcapgo.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	if pr.LinkType() != layers.LinkTypeEthernet {
		t.Errorf("pcap link type %v", pr.LinkType())
	}
	var count int
	for {
		data, ci, err := pr.ReadPacketData()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if count < len(framesB1) && (!bytes.Equal(data, framesB1[count].Data) || ci.Length != framesB1[count].Len) {
			t.Errorf("pcap frame %d differs", count)
		}
		count++
	}
	if count != len(framesB1) {
		t.Errorf("pcap has %d frames, want %d", count, len(framesB1))
	}
}

func TestKernelNATStripTS(t *testing.T) {
	t.Parallel()
	l := NewT(t, Config{Backends: 3, Mode: ModeKernelNAT, NAT: NATConfig{StripTS: true, VIPPort: 8000, BackendPort: 9000}})
	if _, err := l.StartBackends(ServerConfig{Port: 9000, CloseFirst: true}); err != nil {
		t.Fatal(err)
	}
	var caps []*Capture
	for _, b := range l.Backends {
		c, err := b.Capture("eth0", 5000)
		if err != nil {
			t.Fatal(err)
		}
		caps = append(caps, c)
	}
	capC, err := l.Clients[0].Capture("eth0", 5000)
	if err != nil {
		t.Fatal(err)
	}
	r := Requests(context.Background(), l.Clients, "http://198.18.0.100:8000/", 30, 3, 5*time.Second, 20*time.Second, false)
	if r.OK != 30 || len(r.ByBackend) != 3 {
		t.Fatalf("Requests: %+v", r)
	}
	clientSYNs := synFrames(capC.Stop(), 8000)
	if len(clientSYNs) < 30 {
		t.Fatalf("client sent %d SYNs, want >= 30", len(clientSYNs))
	}
	for _, s := range clientSYNs {
		if !hasTS(s) {
			t.Fatal("client SYN lacks the TS option; the test proves nothing")
		}
	}
	var n int
	for i, c := range caps {
		for _, s := range synFrames(c.Stop(), 9000) {
			n++
			if hasTS(s) {
				t.Errorf("b%d received a SYN with the TS option despite StripTS: %v", i+1, s.Options)
			}
		}
	}
	if n < 30 {
		t.Errorf("backends received %d SYNs, want >= 30", n)
	}
}

// TestCaptureBounded checks maxFrames and that Lab.Close stops a running
// capture.
func TestCaptureBounded(t *testing.T) {
	t.Parallel()
	l := NewT(t, Config{Clients: 2, Backends: 1})
	if _, err := l.Clients[0].Capture("eth0", 0); err == nil {
		t.Error("Capture with maxFrames 0 succeeded")
	}
	if _, err := l.Clients[0].Capture("nope0", 10); err == nil {
		t.Error("Capture on a missing interface succeeded")
	}
	c, err := l.Clients[0].Capture("eth0", 5)
	if err != nil {
		t.Fatal(err)
	}
	running, err := l.Clients[1].Capture("eth0", 5)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := l.Clients[0].Command(ctx, "ping", "-c", "10", "-i", "0.01", "-W", "1", "198.18.0.12").CombinedOutput()
	if err != nil {
		t.Skipf("ping unavailable or failed: %v: %s", err, out)
	}
	frames := c.Stop()
	if len(frames) != 5 || c.Dropped() == 0 {
		t.Errorf("got %d frames, %d dropped; want 5 and some dropped", len(frames), c.Dropped())
	}
	for _, f := range frames {
		if len(f.Data) > CaptureSnapLen || len(f.Data) == 0 || f.Len < len(f.Data) {
			t.Errorf("frame data %d bytes, Len %d", len(f.Data), f.Len)
		}
	}
	if again := c.Stop(); len(again) != len(frames) {
		t.Errorf("second Stop returned %d frames", len(again))
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { running.Stop(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("capture still running after Lab.Close")
	}
}

// TestHTTPClientKeepAlive checks that keepAlive=false opens a connection
// per request and keepAlive=true reuses one, against a server in another
// client namespace.
func TestHTTPClientKeepAlive(t *testing.T) {
	t.Parallel()
	l := NewT(t, Config{Clients: 2, Backends: 1})
	ln, err := l.Clients[1].Listen("tcp4", "198.18.0.12:8080")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	conns := map[string]bool{}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		conns[r.RemoteAddr] = true
		mu.Unlock()
		w.Header().Set("X-Backend", "c2")
	})}
	go srv.Serve(ln)
	defer srv.Close()
	for _, keep := range []bool{false, true} {
		mu.Lock()
		clear(conns)
		mu.Unlock()
		r := Requests(context.Background(), l.Clients[:1], "http://198.18.0.12:8080/", 20, 1, 2*time.Second, 10*time.Second, keep)
		if r.OK != 20 || r.ByBackend["c2"] != 20 {
			t.Fatalf("keepAlive=%v: %+v", keep, r)
		}
		mu.Lock()
		n := len(conns)
		mu.Unlock()
		if keep && n != 1 || !keep && n != 20 {
			t.Errorf("keepAlive=%v: %d connections for 20 requests", keep, n)
		}
	}
	// The run is bounded by maxDuration even if the server hangs.
	hang := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done()
	})}
	ln2, err := l.Clients[1].Listen("tcp4", "198.18.0.12:8081")
	if err != nil {
		t.Fatal(err)
	}
	go hang.Serve(ln2)
	defer hang.Close()
	start := time.Now()
	r := Requests(context.Background(), l.Clients[:1], "http://198.18.0.12:8081/", 50, 2, 10*time.Second, 300*time.Millisecond, true)
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("Requests took %v with maxDuration 300ms", d)
	}
	if r.OK != 0 || r.Errors != 50 || len(r.FirstErrors) == 0 || len(r.FirstErrors) > 5 {
		t.Errorf("hanging server: OK=%d Errors=%d FirstErrors=%d", r.OK, r.Errors, len(r.FirstErrors))
	}
}

// TestSetOffloads toggles offloads and reads them back with ethtool -k.
func TestSetOffloads(t *testing.T) {
	t.Parallel()
	l := NewT(t, Config{Clients: 1, Backends: 1})
	if _, err := exec.LookPath("ethtool"); err != nil {
		t.Skip("ethtool not installed")
	}
	c := l.Clients[0]
	state := func() string {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		out, err := c.Command(ctx, "ethtool", "-k", "eth0").Output()
		if err != nil {
			t.Fatalf("ethtool -k: %v", err)
		}
		for _, line := range strings.Split(string(out), "\n") {
			if strings.HasPrefix(line, "tcp-segmentation-offload:") {
				return strings.TrimSpace(strings.TrimPrefix(line, "tcp-segmentation-offload:"))
			}
		}
		t.Fatalf("no tcp-segmentation-offload line in %s", out)
		return ""
	}
	if s := state(); s != "on" {
		t.Errorf("default TSO %q, want on (kernel default kept)", s)
	}
	if err := c.SetOffloads("eth0", false); err != nil {
		t.Fatal(err)
	}
	if s := state(); s != "off" {
		t.Errorf("TSO after SetOffloads(false) = %q", s)
	}
	if err := c.SetOffloads("eth0", true); err != nil {
		t.Fatal(err)
	}
	if s := state(); s != "on" {
		t.Errorf("TSO after SetOffloads(true) = %q", s)
	}
	if err := c.SetOffloads("nope0", true); err == nil {
		t.Error("SetOffloads on a missing interface succeeded")
	}
}

// TestAttach reopens a lab built by New (as `tslb lab up` leaves it) and
// removes it through the attached Lab.
func TestAttach(t *testing.T) {
	t.Parallel()
	Require(t)
	prefix := uniquePrefix(t, "a")
	if _, err := Attach(prefix); err == nil {
		t.Fatal("Attach to a missing lab succeeded")
	}
	orig, err := New(Config{Prefix: prefix, Clients: 2, Backends: 3})
	if err != nil {
		t.Fatal(err)
	}
	defer orig.Close()
	l, err := Attach(prefix)
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Clients) != 2 || len(l.Backends) != 3 || l.LB.Name != prefix+"-lb" || l.Backends[2].Addr != netip.MustParseAddr("198.18.1.13") {
		t.Fatalf("attached lab: clients %d backends %d lb %s", len(l.Clients), len(l.Backends), l.LB.Name)
	}
	if as, err := l.Clients[1].Addrs("eth0"); err != nil || len(as) != 1 || as[0].Addr() != l.Clients[1].Addr {
		t.Errorf("attached c2 addresses %v (%v)", as, err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if left := netnsList(t, prefix); len(left) != 0 {
		t.Errorf("after Close of the attached lab: %v", left)
	}
}

// BenchmarkDo measures one NS.Do round trip (fresh locked goroutine, two
// setns calls).
func BenchmarkDo(b *testing.B) {
	l := benchLab(b)
	b.ReportAllocs()
	for range b.N {
		if err := l.Clients[0].Do(func() error { return nil }); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDialContext measures a TCP connect from one client namespace to
// another through the switch.
func BenchmarkDialContext(b *testing.B) {
	l := benchLab(b)
	ln, err := l.Clients[1].Listen("tcp4", "198.18.0.12:7000")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	ctx := context.Background()
	b.ReportAllocs()
	for range b.N {
		c, err := l.Clients[0].DialContext(ctx, "tcp4", "198.18.0.12:7000")
		if err != nil {
			b.Fatal(err)
		}
		c.Close()
	}
}

func benchLab(b *testing.B) *Lab {
	b.Helper()
	l := NewT(b, Config{Clients: 2, Backends: 1})
	return l
}

func TestRRResponse(t *testing.T) {
	if got := string(RRResponse(30)); got != "abcdefghijklmnopqrstuvwxyzabcd" {
		t.Errorf("RRResponse(30) = %q", got)
	}
	if len(RRResponse(0)) != 0 || len(RRResponse(-1)) != 0 {
		t.Error("RRResponse of a size < 1 is not empty")
	}
}

// TestRRServer talks to the request/response server from inside its own
// backend namespace: split and pipelined requests, the answers' bytes,
// the counters, and Close ending the connection.
func TestRRServer(t *testing.T) {
	t.Parallel()
	l := NewT(t, Config{Backends: 2})
	if _, err := l.StartRRServers(RRConfig{Size: MaxRRSize + 1}); err == nil {
		t.Fatal("StartRRServers accepted a size above MaxRRSize")
	}
	ss, err := l.StartRRServers(RRConfig{Size: 10})
	if err != nil {
		t.Fatal(err)
	}
	if len(ss) != 2 || ss[1].ID != "b2" || ss[1].Addr != netip.MustParseAddrPort("198.18.1.12:8081") {
		t.Fatalf("servers %+v", ss)
	}
	s := ss[0]
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := s.NS.DialContext(ctx, "tcp4", s.Addr.String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	want := RRResponse(10)
	read := func(n int) {
		t.Helper()
		got := make([]byte, n*10)
		if _, err := io.ReadFull(c, got); err != nil {
			t.Fatalf("reading %d answers: %v", n, err)
		}
		if !bytes.Equal(got, bytes.Repeat(want, n)) {
			t.Fatalf("answers %q, want %d × %q", got, n, want)
		}
	}
	// A request in two parts gets one answer, after its last byte.
	io.WriteString(c, "012345")
	c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	if n, err := c.Read(make([]byte, 1)); n != 0 || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("answer to a partial request: %d bytes, %v", n, err)
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, "6789")
	read(1)
	// Three and a half pipelined requests: three answers, then the fourth
	// once it is complete.
	io.WriteString(c, strings.Repeat("x", 35))
	read(3)
	io.WriteString(c, "yyyyy")
	read(1)
	if s.Transactions() != 5 || s.Accepted() != 1 || ss[1].Transactions() != 0 {
		t.Errorf("transactions %d, accepted %d, other server %d; want 5, 1, 0", s.Transactions(), s.Accepted(), ss[1].Transactions())
	}
	// A pipelined burst larger than the socket buffers, read only after a
	// pause, is answered in full: the server's writes would block, so it
	// keeps what it owes and stops reading until it has written it.
	burst := 1500000
	wrote := make(chan error, 1)
	go func() { _, err := c.Write(bytes.Repeat([]byte("z"), burst*10)); wrote <- err }()
	time.Sleep(300 * time.Millisecond)
	read(burst)
	if err := <-wrote; err != nil {
		t.Fatalf("writing the burst: %v", err)
	}
	if s.Transactions() != int64(5+burst) {
		t.Errorf("transactions %d after the burst, want %d", s.Transactions(), 5+burst)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if n, err := c.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Errorf("after Close: %d bytes, %v; want EOF", n, err)
	}
	if _, err := s.NS.DialContext(ctx, "tcp4", s.Addr.String()); err == nil {
		t.Error("server still accepts after Close")
	}
}

// checkL2 checks a lab's segments for one family: c1 reaches c2 (at
// c2Addr) over the client bridge from c1Addr, c1 cannot reach the backend
// b1Addr (the subnets are not routed to each other), and b2 pings b1
// (pingFlag "-6" for IPv6) when ping is installed.
func checkL2(ctx context.Context, t *testing.T, l *Lab, network, c2Addr, c1Addr, b1Addr, pingFlag string) {
	t.Helper()
	ln, err := l.Clients[1].Listen(network, net.JoinHostPort(c2Addr, "9999"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		if c, err := ln.Accept(); err == nil {
			c.Write([]byte("hi"))
			c.Close()
		}
	}()
	c, err := l.Clients[0].DialContext(ctx, network, net.JoinHostPort(c2Addr, "9999"))
	if err != nil {
		t.Fatalf("c1 -> c2 (%s): %v", network, err)
	}
	if b, _ := io.ReadAll(c); string(b) != "hi" {
		t.Errorf("c1 read %q", b)
	}
	if la := c.LocalAddr().(*net.TCPAddr); la.IP.String() != c1Addr {
		t.Errorf("c1 local address %v, want %s", la, c1Addr)
	}
	c.Close()
	dctx, dcancel := context.WithTimeout(ctx, time.Second)
	defer dcancel()
	if _, err := l.Clients[0].DialContext(dctx, network, net.JoinHostPort(b1Addr, "8080")); err == nil {
		t.Errorf("c1 reached backend %s directly (%s); the subnets must not be routed", b1Addr, network)
	}
	if _, lerr := exec.LookPath("ping"); lerr == nil {
		args := []string{"-c1", "-W2", b1Addr}
		if pingFlag != "" {
			args = append([]string{pingFlag}, args...)
		}
		if out, err := l.Backends[1].Command(ctx, "ping", args...).CombinedOutput(); err != nil {
			t.Errorf("b2 ping %s b1: %v: %s", pingFlag, err, out)
		}
	}
}
