package test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"tslb/config"
	"tslb/test/harness"
	"tslb/test/lab"
)

// TestPMTU6: path-MTU discovery through tslb on IPv6. The backend sits
// behind a router whose link to it has MTU 1280 while every other link
// has 1500, and it advertises the MSS of a 1500-byte link, so the client
// sends full-size segments (1500-byte packets) that the router cannot
// forward. The router's Packet Too Big goes to the SNAT address; tslb must
// translate it (outer and quoted addresses and ports) to the client, which
// then learns a path MTU of 1280 for the VIP and completes the upload
// intact. Both with client timestamps (rewrite mode offsets them) and
// without (tslb inserts 12 bytes of options into each segment: on a path
// MTU under 1292 it must stop, since the client cannot send packets under
// 1280 bytes). The control drops the router's Packet Too Big: the same upload
// then stalls (a black hole) and the client learns nothing.
func TestPMTU6(t *testing.T) {
	t.Run("client_ts", func(t *testing.T) { testPMTU6(t, true) })
	t.Run("no_client_ts", func(t *testing.T) { testPMTU6(t, false) })
}

func testPMTU6(t *testing.T, clientTS bool) {
	l := lab.NewT(t, lab.Config{Clients: 1, Backends: 1, IPv6: true})
	if !clientTS {
		if err := l.Clients[0].Sysctl("net.ipv4.tcp_timestamps", "0"); err != nil {
			t.Fatal(err)
		}
	}
	router, err := l.RouteBackend(0, 1280)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.StartBackends(lab.ServerConfig{Port: 8080}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tl, err := harness.Start(ctx, l, harness.Options{Binary: tslbBinary, Dir: t.TempDir(), IPv6: true, Timestamps: config.TSRewrite,
		Edit: func(c *config.Config) { c.Links[1].Gateway6 = router.Addr6 }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if code, err := tl.Stop(10 * time.Second); err != nil || code != 0 {
			t.Errorf("tslb stop: code %d err %v\n%s", code, err, tl.Log())
		}
	})
	cache := func() string {
		out, _ := l.Clients[0].Command(ctx, "ip", "-6", "route", "get", l.VIP.String()).CombinedOutput()
		return strings.TrimSpace(string(out))
	}
	if before := cache(); strings.Contains(before, "mtu 1280") {
		t.Fatalf("the client knows a path MTU of 1280 before any transfer: %s", before)
	}

	const n = 8 << 20
	// Control: with the router's Packet Too Big dropped, the same upload
	// stalls, so the lab builds the black hole the translation avoids.
	nft := func(rules string) {
		cmd := router.Command(ctx, "nft", "-f", "-")
		cmd.Stdin = strings.NewReader(rules)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("nft in the router: %v: %s", err, out)
		}
	}
	nft("table ip6 noptb {\n chain out {\n  type filter hook output priority 0; policy accept;\n  icmpv6 type packet-too-big drop\n }\n}\n")
	if resp, err := l.Clients[0].HTTPClient(false, 3*time.Second).Post(vipURL(l, 80, "/upload"), "application/octet-stream", lab.Stream(13, n)); err == nil {
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		t.Fatalf("control: the upload completed (%q) with the router's Packet Too Big dropped: no 1280-byte bottleneck", body)
	}
	if r := cache(); strings.Contains(r, "mtu 1280") {
		t.Fatalf("control: the client learnt the path MTU without a Packet Too Big: %s", r)
	}
	nft("delete table ip6 noptb\n")

	want := sha256.New()
	io.Copy(want, lab.Stream(13, n))
	hc := l.Clients[0].HTTPClient(false, 20*time.Second)
	start := time.Now()
	resp, err := hc.Post(vipURL(l, 80, "/upload"), "application/octet-stream", lab.Stream(13, n))
	if err != nil {
		t.Fatalf("upload through the 1280-byte hop: %v (client route: %s); tslb log:\n%s", err, cache(), tl.Log())
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if w := fmt.Sprintf("%s %d\n", hex.EncodeToString(want.Sum(nil)), n); string(body) != w {
		t.Fatalf("upload: backend answered %q, want %q", body, w)
	}
	el := time.Since(start)
	route := cache()
	m := metrics(t, tl)
	tr := m.Sum("tslb_icmp_errors_translated_total")
	t.Logf("8 MB upload through the 1280-byte hop in %v; client: %s; tslb translated %.0f ICMP errors", el.Round(time.Millisecond), route, tr)
	if !strings.Contains(route, "mtu 1280") {
		t.Errorf("the client learnt no path MTU of 1280 for the VIP: %s", route)
	}
	if tr < 1 {
		t.Errorf("tslb_icmp_errors_translated_total = %v, want >= 1", tr)
	}
	// The download fits the 1280-byte hop from the start (the server's
	// route MTU): it must work too.
	transferDown(t, l, 2<<20)
}

// transferDown downloads n bytes through the VIP and checks them.
func transferDown(t *testing.T, l *lab.Lab, n int64) {
	t.Helper()
	hc := l.Clients[0].HTTPClient(false, 20*time.Second)
	want := sha256.New()
	io.Copy(want, lab.Stream(5, n))
	resp, err := hc.Get(vipURL(l, 80, fmt.Sprintf("/bytes?n=%d&seed=5", n)))
	if err != nil {
		t.Fatalf("download: %v", err)
	}
	h := sha256.New()
	got, err := io.Copy(h, resp.Body)
	resp.Body.Close()
	if err != nil || got != n || hex.EncodeToString(h.Sum(nil)) != hex.EncodeToString(want.Sum(nil)) {
		t.Fatalf("download: %d bytes, err %v", got, err)
	}
}
