package test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"tslb/config"
	"tslb/test/harness"
	"tslb/test/lab"
)

// longRun selects the long variants of the edge tests (floods and crash
// runs of the lengths issue 11 names); CI runs shorter ones.
var longRun = flag.Bool("tslb.long", false, "run the long variants of the edge-hardening tests (flood 10 s, longer crash runs)")

// transferVia downloads and uploads n bytes through base (http://VIP:port)
// from ns and checks both by sha256. It returns how long each took.
func transferVia(t *testing.T, ns *lab.NS, base string, n int64, seed uint64) (down, up time.Duration) {
	t.Helper()
	hc := ns.HTTPClient(false, 30*time.Second)
	want := sha256.New()
	io.Copy(want, lab.Stream(seed, n))
	start := time.Now()
	resp, err := hc.Get(fmt.Sprintf("%s/bytes?n=%d&seed=%d", base, n, seed))
	if err != nil {
		t.Errorf("download %s: %v", base, err)
		return
	}
	h := sha256.New()
	got, err := io.Copy(h, resp.Body)
	resp.Body.Close()
	down = time.Since(start)
	if err != nil || got != n || !bytes.Equal(h.Sum(nil), want.Sum(nil)) {
		t.Errorf("download %s: %d of %d bytes, err %v, sha256 match %v", base, got, n, err, bytes.Equal(h.Sum(nil), want.Sum(nil)))
	}
	start = time.Now()
	resp, err = hc.Post(base+"/upload", "application/octet-stream", lab.Stream(seed, n))
	if err != nil {
		t.Errorf("upload %s: %v", base, err)
		return
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	up = time.Since(start)
	if string(body) != fmt.Sprintf("%s %d\n", hex.EncodeToString(want.Sum(nil)), n) {
		t.Errorf("upload %s: backend answered %q, want the sha256 of %d bytes", base, body, n)
	}
	return
}

// nftLoss drops pct% of the TCP segments longer than 500 bytes that ns
// receives (so the receiver's peer sees holes and SACKs arrive), in a
// table of its own; it returns a function removing it.
func nftLoss(t *testing.T, ns *lab.NS, pct int) func() {
	t.Helper()
	rules := fmt.Sprintf("table inet edgeloss {\n chain in {\n  type filter hook input priority 0; policy accept;\n"+
		"  meta l4proto tcp meta length > 500 numgen random mod 100 < %d drop\n }\n}\n", pct)
	cmd := ns.Command(context.Background(), "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(rules)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("nft in %s: %v %s", ns.Name, err, out)
	}
	return func() {
		ns.Command(context.Background(), "nft", "delete", "table", "inet", "edgeloss").Run()
	}
}

// TestSYNProxyRealStacks: syn_proxy: on, for each timestamp mode
// (services on three ports of the VIP: 80 rewrite, 81 passthrough, 82
// strip), with a Linux client using timestamps and one with
// tcp_timestamps=0. First, one connection at a time: 50 MB each way
// through a proxied flow arrive intact with 1% loss on both ends' input
// (so both sides SACK through the cookie/backend sequence join of
// nat.Proxy) and the kernels' GSO/GRO superframes on, and 50 sequential
// HTTP requests succeed. Then 100 requests 8 at a time (several cookie
// ACKs in one receive batch): all succeed. Every connection is made from
// a valid cookie, no real client's ACK is refused.
func TestSYNProxyRealStacks(t *testing.T) {
	modes := []struct {
		port uint16
		ts   config.TSMode
	}{{80, config.TSRewrite}, {81, config.TSPassthrough}, {82, config.TSStrip}}
	l, _, tl := deploy(t, 2, 1, lab.ServerConfig{Port: 8080}, harness.Options{
		Timestamps: config.TSRewrite,
		ExtraPorts: []lab.PortMap{{VIPPort: 81, BackendPort: 8080}, {VIPPort: 82, BackendPort: 8080}},
		Edit: func(c *config.Config) {
			for i := range c.Services {
				c.Services[i].SYNProxy = config.SYNProxyOn
				c.Services[i].Timestamps = modes[i].ts
			}
		}})
	if err := l.Clients[1].Sysctl("net.ipv4.tcp_timestamps", "0"); err != nil {
		t.Fatal(err)
	}
	const n = 50 << 20
	const seqReqs, concReqs = 50, 100
	type cell struct {
		name, svc, base string
		c               *lab.NS
	}
	var cells []cell
	for _, md := range modes {
		svc := "web"
		if md.port != 80 {
			svc = fmt.Sprintf("web-%d", md.port)
		}
		for ci, c := range l.Clients {
			cells = append(cells, cell{fmt.Sprintf("%s/client_ts_%v", md.ts, ci == 0), svc, fmt.Sprintf("http://%s:%d", l.VIP, md.port), c})
		}
	}
	// check runs f and checks that each of its conns connections came
	// through a valid cookie.
	check := func(t *testing.T, c cell, conns int, what string, f func()) {
		before := metrics(t, tl)
		f()
		m := metrics(t, tl)
		d := func(name string, lv ...string) float64 { return m.Sum(name, lv...) - before.Sum(name, lv...) }
		valid, sent := d("tslb_synproxy_cookies_total", "service="+c.svc, "result=valid"), d("tslb_synproxy_cookies_total", "service="+c.svc, "result=sent")
		created := d("tslb_flows_created_total", "service="+c.svc)
		t.Logf("%s %s: cookies sent %v valid %v, flows %v; drops %s", c.name, what, sent, valid, created, fmtDeltas(dropDeltas(before, m)))
		if valid != float64(conns) || created != float64(conns) {
			t.Errorf("%s: cookies valid %v, flows created %v; want %d each (every connection through the proxy)", what, valid, created, conns)
		}
		if sent < valid {
			t.Errorf("%s: cookies sent %v < valid %v", what, sent, valid)
		}
		if got := d("tslb_synproxy_cookies_total", "service="+c.svc, "result=invalid"); got != 0 {
			t.Errorf("%s: %v ACKs of real clients refused as invalid cookies", what, got)
		}
	}
	for _, c := range cells {
		t.Run(c.name+"/sequential", func(t *testing.T) {
			check(t, c, 2, "50 MB down + 50 MB up", func() {
				undo := []func(){nftLoss(t, c.c, 1), nftLoss(t, l.Backends[0], 1)}
				down, up := transferVia(t, c.c, c.base, n, uint64(len(c.name))*7919)
				for _, u := range undo {
					u()
				}
				t.Logf("%s: 50 MB down %v, up %v (1%% loss on each end's input)", c.name, down.Round(time.Millisecond), up.Round(time.Millisecond))
			})
			check(t, c, seqReqs, "sequential requests", func() {
				res := lab.Requests(context.Background(), []*lab.NS{c.c}, c.base+"/", seqReqs, 1, 5*time.Second, 60*time.Second, false)
				if res.Errors != 0 || res.OK != seqReqs {
					t.Errorf("sequential: %d ok, %d errors: %v", res.OK, res.Errors, res.FirstErrors)
				}
			})
		})
	}
	for _, c := range cells {
		t.Run(c.name+"/concurrent", func(t *testing.T) {
			check(t, c, concReqs, "8 concurrent", func() {
				res := lab.Requests(context.Background(), []*lab.NS{c.c}, c.base+"/", concReqs, 8, 5*time.Second, 60*time.Second, false)
				if res.Errors != 0 || res.OK != concReqs {
					t.Errorf("8 concurrent: %d ok, %d errors: %v", res.OK, res.Errors, res.FirstErrors)
				}
			})
		})
	}
	m := metrics(t, tl)
	for k, v := range m {
		if strings.HasPrefix(k, "tslb_translation_events_total") && v > 0 {
			t.Logf("%s %v", k, v)
		}
	}
}
