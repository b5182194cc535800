package test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"

	"tslb/config"
	"tslb/test/bench"
	"tslb/test/harness"
	"tslb/test/lab"
)

// The TIME_WAIT tests put one backend behind 64 SNAT ports and open 600
// server-closed connections at 20/s from two client namespaces: about 19
// times what an allocator that only avoids TIME_WAIT tuples can carry
// (64 per 60 s). Backends run with Linux defaults (60 s TIME_WAIT,
// tcp_timestamps=1, tcp_rfc1337=0).
const (
	twPorts = 64
	twConns = 600
	twRate  = 20.0
)

// connResult is one request of an open-loop run.
type connResult struct {
	start   time.Time     // when the request was sent
	connect time.Duration // TCP connect time (SYN to established)
	total   time.Duration
	backend string // X-Backend of the answer
	err     error
}

type loadSummary struct {
	ok, errors, slow int // slow: connect > 500 ms
	p50, p99, max    time.Duration
	firstErrors      []string
}

func (s loadSummary) String() string {
	return fmt.Sprintf("%d ok, %d errors, %d connects > 500 ms, connect p50 %v p99 %v max %v",
		s.ok, s.errors, s.slow, s.p50, s.p99, s.max)
}

// openLoopRun opens n connections at a fixed rate (one HTTP GET each, the
// server closes), round-robin over the clients, whatever the answers
// take: an open-loop load, bounded by n and by timeout per request. It
// returns every request's result in order.
func openLoopRun(clients []*lab.NS, url string, n int, rate float64, timeout time.Duration) []connResult {
	hcs := make([]*http.Client, len(clients))
	for i, c := range clients {
		hcs[i] = c.HTTPClient(false, timeout)
	}
	res := make([]connResult, n)
	var wg sync.WaitGroup
	start := time.Now()
	for i := 0; i < n; i++ {
		time.Sleep(time.Until(start.Add(time.Duration(float64(i) / rate * float64(time.Second)))))
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			var cs time.Time
			r := &res[i]
			trace := &httptrace.ClientTrace{
				ConnectStart: func(string, string) { cs = time.Now() },
				ConnectDone:  func(string, string, error) { r.connect = time.Since(cs) },
			}
			ctx := httptrace.WithClientTrace(context.Background(), trace)
			req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
			r.start = time.Now()
			resp, err := hcs[i%len(hcs)].Do(req)
			if err == nil {
				_, err = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				r.backend = resp.Header.Get("X-Backend")
				if err == nil && resp.StatusCode != 200 {
					err = fmt.Errorf("status %s", resp.Status)
				}
			}
			r.total, r.err = time.Since(r.start), err
		}(i)
	}
	wg.Wait()
	return res
}

// openLoop is openLoopRun summarised: errors, slow connects, percentiles.
func openLoop(t testing.TB, clients []*lab.NS, url string, n int, rate float64, timeout time.Duration) loadSummary {
	t.Helper()
	var s loadSummary
	var lat []time.Duration
	for _, r := range openLoopRun(clients, url, n, rate, timeout) {
		if r.err != nil {
			s.errors++
			if len(s.firstErrors) < 5 {
				s.firstErrors = append(s.firstErrors, r.err.Error())
			}
			continue
		}
		s.ok++
		lat = append(lat, r.connect)
		if r.connect > 500*time.Millisecond {
			s.slow++
		}
	}
	slices.Sort(lat)
	if len(lat) > 0 {
		s.p50, s.p99, s.max = lat[len(lat)/2], lat[len(lat)*99/100], lat[len(lat)-1]
	}
	return s
}

// twDeploy builds a lab with 2 clients and 1 backend (server closes
// first), dual-stack with IPv6 primary if o.IPv6, and tslb with 64 SNAT
// ports. clientTS is the clients' net.ipv4.tcp_timestamps, which Linux
// applies to IPv6 too.
func twDeploy(t testing.TB, o harness.Options, clientTS string) (*lab.Lab, *harness.TSLB) {
	t.Helper()
	l := lab.NewT(t, lab.Config{Clients: 2, Backends: 1, IPv6: o.IPv6})
	for _, c := range l.Clients {
		if err := c.Sysctl("net.ipv4.tcp_timestamps", clientTS); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := l.StartBackends(lab.ServerConfig{Port: 8080, CloseFirst: true}); err != nil {
		t.Fatal(err)
	}
	o.Binary, o.Dir = tslbBinary, t.TempDir()
	o.PortMin, o.PortMax = 20000, 20000+twPorts-1
	if o.LogLevel == "" {
		o.LogLevel = "warn"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tl, err := harness.Start(ctx, l, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if code, err := tl.Stop(10 * time.Second); err != nil || code != 0 {
			t.Errorf("tslb stop: code %d err %v\n%s", code, err, tl.Log())
		}
	})
	return l, tl
}

// oldACKs counts, in a capture on the backend's link, SYNs from the SNAT
// address, those answered by an ACK (no SYN) that does not acknowledge
// them (the TIME_WAIT answer, seen independently of tslb's detector), and
// RSTs toward the backend (clients answering such ACKs): bench.Analyze.
func oldACKs(frames []lab.Frame) (syns, old, clientRSTs int) {
	s := bench.Analyze(frames, 8080, nil)
	return s.SYNs, s.OldACKs, s.RSTsToBackend
}

// TestTimeWaitRewrite: timestamps: rewrite under 19x TIME_WAIT pressure:
// 0 errors, 0 connects slower than 500 ms, tuples reused early because
// tslb's TSval toward the backend is newer than any it sent on them. For
// IPv4 and IPv6 (Linux keeps IPv6 TIME_WAIT by the same rules).
func TestTimeWaitRewrite(t *testing.T) { forFamilies(t, testTimeWaitRewrite) }

func testTimeWaitRewrite(t *testing.T, ipv6 bool) {
	l, tl := twDeploy(t, harness.Options{Timestamps: config.TSRewrite, IPv6: ipv6}, "1")
	bc, err := l.Backends[0].Capture("eth0", 40000)
	if err != nil {
		t.Fatal(err)
	}
	s := openLoop(t, l.Clients, vipURL(l, 80, "/"), twConns, twRate, 10*time.Second)
	frames := bc.Stop()
	syns, old, rsts := oldACKs(frames)
	time.Sleep(3 * time.Second) // the last flows leave the table (flows.timeouts.time_wait 2 s)
	m := metrics(t, tl)
	t.Logf("rewrite: %v; capture: %d SYNs, %d old ACKs, %d client RSTs; allocations fresh %.0f early_reuse_ts %.0f early_reuse_isn %.0f; detector old_ack %.0f",
		s, syns, old, rsts, m.Sum("tslb_snat_allocations_total", "kind=fresh"), m.Sum("tslb_snat_allocations_total", "kind=early_reuse_ts"),
		m.Sum("tslb_snat_allocations_total", "kind=early_reuse_isn"), m.Sum("tslb_collisions_total", "signature=old_ack"))
	if s.errors != 0 || s.slow != 0 {
		t.Errorf("rewrite mode: %v; first errors %v", s, s.firstErrors)
	}
	if got := m.Sum("tslb_snat_allocations_total", "kind=early_reuse_ts"); got < twConns/2 {
		t.Errorf("early_reuse_ts allocations = %v, want most of %d: the lab did not build TIME_WAIT pressure", got, twConns)
	}
	if old != 0 || m.Sum("tslb_collisions_total", "signature=old_ack") != 0 {
		t.Errorf("old ACKs: %d in capture, %v by the detector; want 0", old, m.Sum("tslb_collisions_total", "signature=old_ack"))
	}
	// Once the flows are gone every tuple is in the ledger or free (free:
	// the client's FIN came first and the backend acknowledged it before
	// closing, so it keeps no TIME_WAIT).
	tw, free, inUse := m.Sum("tslb_snat_ports_time_wait"), m.Sum("tslb_snat_ports_free"), m.Sum("tslb_snat_ports_in_use")
	if inUse != 0 || tw+free != twPorts || tw < twPorts/2 {
		t.Errorf("after the run: %v in use, %v in TIME_WAIT, %v free; want 0, most, the rest of %d", inUse, tw, free, twPorts)
	}
}

// TestTimeWaitStripForcedReuse is the control: timestamps stripped, no ISN
// translation, exhaustion: reuse and no repair — a stripping balancer.
// The same load must show the failure, or the lab built no pressure; for
// IPv4 and IPv6.
func TestTimeWaitStripForcedReuse(t *testing.T) { forFamilies(t, testTimeWaitStripForcedReuse) }

func testTimeWaitStripForcedReuse(t *testing.T, ipv6 bool) {
	l, tl := twDeploy(t, harness.Options{Timestamps: config.TSStrip, NoISN: true, Exhaustion: config.ExhaustReuse, NoRepair: true, IPv6: ipv6}, "1")
	bc, err := l.Backends[0].Capture("eth0", 40000)
	if err != nil {
		t.Fatal(err)
	}
	s := openLoop(t, l.Clients, vipURL(l, 80, "/"), twConns, twRate, 10*time.Second)
	frames := bc.Stop()
	syns, old, rsts := oldACKs(frames)
	m := metrics(t, tl)
	det := m.Sum("tslb_collisions_total", "signature=old_ack")
	t.Logf("strip+forced reuse: %v; capture: %d SYNs, %d old ACKs, %d client RSTs; detector old_ack %.0f; forced allocations %.0f",
		s, syns, old, rsts, det, m.Sum("tslb_snat_allocations_total", "kind=forced"))
	if old == 0 || det == 0 {
		t.Fatalf("no old ACKs (capture %d, detector %v): the lab did not build TIME_WAIT pressure", old, det)
	}
	if rsts == 0 {
		t.Errorf("clients sent no RST after %d old ACKs: the failure did not reach them", old)
	}
	if det < float64(old)/2 {
		t.Errorf("detector saw %v old ACKs, the capture %d", det, old)
	}
}

// TestISNTranslation: passthrough with client timestamps off, so only the
// sequence number can make a reused tuple acceptable: 0 slow connects under
// the same pressure; then a 20 MB upload and download on a reused tuple
// with 2% loss on the backend's side (nftables drops, so the backend sends
// SACKs): intact, and seq, ack and SACK blocks are translated consistently
// between the client's and the backend's captures.
func TestISNTranslation(t *testing.T) {
	l, tl := twDeploy(t, harness.Options{Timestamps: config.TSPassthrough}, "0")
	s := openLoop(t, l.Clients, vipURL(l, 80, "/"), twConns, twRate, 10*time.Second)
	m := metrics(t, tl)
	t.Logf("ISN translation: %v; early_reuse_isn %.0f, fresh %.0f, old_ack %.0f", s, m.Sum("tslb_snat_allocations_total", "kind=early_reuse_isn"),
		m.Sum("tslb_snat_allocations_total", "kind=fresh"), m.Sum("tslb_collisions_total", "signature=old_ack"))
	if s.errors != 0 || s.slow != 0 {
		t.Errorf("ISN translation: %v; first errors %v", s, s.firstErrors)
	}
	if got := m.Sum("tslb_snat_allocations_total", "kind=early_reuse_isn"); got < twConns/2 {
		t.Errorf("early_reuse_isn allocations = %v, want most of %d", got, twConns)
	}
	if got := m.Sum("tslb_collisions_total", "signature=old_ack"); got != 0 {
		t.Errorf("detector saw %v old ACKs, want 0", got)
	}

	// Loss on the backend's input makes it SACK the upload.
	lossy := "table inet lossy {\n chain in {\n  type filter hook input priority 0; policy accept;\n" +
		"  tcp dport 8080 meta length > 500 numgen random mod 100 < 2 drop\n }\n}\n"
	cmd := l.Backends[0].Command(context.Background(), "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(lossy)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("nft: %v %s", err, out)
	}
	cc, err := l.Clients[0].Capture("eth0", 60000)
	if err != nil {
		t.Fatal(err)
	}
	bc, err := l.Backends[0].Capture("eth0", 60000)
	if err != nil {
		t.Fatal(err)
	}
	const n = 20 << 20
	hc := l.Clients[0].HTTPClient(false, 2*time.Minute)
	want := sha256.New()
	io.Copy(want, lab.Stream(11, n))
	wantHex := hex.EncodeToString(want.Sum(nil))
	resp, err := hc.Post(vipURL(l, 80, "/upload"), "application/octet-stream", lab.Stream(11, n))
	if err != nil {
		t.Fatalf("upload: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != fmt.Sprintf("%s %d\n", wantHex, n) {
		t.Fatalf("upload through a reused tuple: backend got %q", body)
	}
	cf, bf := cc.Stop(), bc.Stop()
	checkSeqTranslation(t, cf, bf)
}

type seg struct {
	seq, ack    uint32
	sack        [][2]uint32
	syn, hasACK bool
	payload     int
}

func tcpSegs(frames []lab.Frame, fromPort, toPort uint16) []seg {
	var out []seg
	for _, f := range frames {
		_, tcp, ok := lab.DecodeTCP(f)
		if !ok {
			continue
		}
		if (fromPort != 0 && uint16(tcp.SrcPort) != fromPort) || (toPort != 0 && uint16(tcp.DstPort) != toPort) {
			continue
		}
		s := seg{seq: tcp.Seq, ack: tcp.Ack, syn: tcp.SYN, hasACK: tcp.ACK, payload: len(tcp.Payload)}
		for _, o := range tcp.Options {
			if o.OptionType == layers.TCPOptionKindSACK {
				for i := 0; i+8 <= len(o.OptionData); i += 8 {
					d := o.OptionData[i:]
					s.sack = append(s.sack, [2]uint32{be32(d), be32(d[4:])})
				}
			}
		}
		out = append(out, s)
	}
	return out
}

func be32(b []byte) uint32 {
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

// checkSeqTranslation compares the upload seen on the client's link and on
// the backend's link: client->backend seq is shifted by one delta; the
// backend's acks and SACK blocks come back shifted by minus that delta.
func checkSeqTranslation(t *testing.T, client, backend []lab.Frame) {
	t.Helper()
	cUp, bUp := tcpSegs(client, 0, 80), tcpSegs(backend, 0, 8080)
	cDown, bDown := tcpSegs(client, 80, 0), tcpSegs(backend, 8080, 0)
	var cSYN, bSYN *seg
	for i := range cUp {
		if cUp[i].syn {
			cSYN = &cUp[i]
		}
	}
	for i := range bUp {
		if bUp[i].syn {
			bSYN = &bUp[i]
		}
	}
	if cSYN == nil || bSYN == nil {
		t.Fatalf("no SYN captured (client %v, backend %v)", cSYN != nil, bSYN != nil)
	}
	delta := bSYN.seq - cSYN.seq
	if delta == 0 {
		t.Fatalf("the upload's tuple was not translated (delta 0): it did not reuse a TIME_WAIT tuple")
	}
	t.Logf("ISN delta %d; captured %d/%d client->backend and %d/%d backend->client segments (client/backend side)",
		delta, len(cUp), len(bUp), len(cDown), len(bDown))
	clientSeqs := map[uint32]bool{}
	for _, s := range cUp {
		clientSeqs[s.seq] = true
	}
	matched, wrong := 0, 0
	for _, s := range bUp {
		if s.payload == 0 {
			continue
		}
		if clientSeqs[s.seq-delta] {
			matched++
		} else if clientSeqs[s.seq] {
			wrong++ // seen untranslated
		}
	}
	if matched < 100 || wrong > 0 {
		t.Errorf("client->backend data: %d segments match seq+delta, %d arrived untranslated", matched, wrong)
	}
	// Backend->client: seq is the backend's own; ack and SACK shift back.
	// Duplicate ACKs share seq and ack and differ in their SACK blocks, so
	// each (seq, ack) maps to every SACK list seen with it.
	type k struct{ seq, ack uint32 }
	byKey := map[k][][][2]uint32{}
	for _, s := range cDown {
		byKey[k{s.seq, s.ack}] = append(byKey[k{s.seq, s.ack}], s.sack)
	}
	sackSeen, sackOK, ackOK := 0, 0, 0
	for _, s := range bDown {
		if !s.hasACK || s.syn {
			continue
		}
		cands, ok := byKey[k{s.seq, s.ack - delta}]
		if !ok {
			continue
		}
		ackOK++
		if len(s.sack) == 0 {
			continue
		}
		sackSeen++
		want := make([][2]uint32, len(s.sack))
		for i, b := range s.sack {
			want[i] = [2]uint32{b[0] - delta, b[1] - delta}
		}
		found := false
		for _, c := range cands {
			if slices.Equal(c, want) {
				found = true
			}
		}
		if found {
			sackOK++
		} else {
			t.Errorf("SACK %v at the backend arrived as none of %v, want %v", s.sack, cands, want)
		}
	}
	t.Logf("acks matched with -delta: %d; SACK segments matched %d/%d", ackOK, sackOK, sackSeen)
	if ackOK < 50 {
		t.Errorf("only %d backend->client ACKs found on the client side with ack-delta", ackOK)
	}
	if sackSeen == 0 {
		t.Errorf("no SACK blocks captured: the loss did not make the backend SACK")
	}
}

// TestSynthesizedTimestamps: clients with tcp_timestamps=0, rewrite mode:
// the backend sees a TS option on every segment of the flow, the client on
// none, transfers intact. With tcp_timestamps=0 on the backend too, tslb
// falls back cleanly.
func TestSynthesizedTimestamps(t *testing.T) {
	l, tl := twDeploy(t, harness.Options{Timestamps: config.TSRewrite}, "0")
	check := func(t *testing.T, backendTS bool) {
		cc, err := l.Clients[0].Capture("eth0", 40000)
		if err != nil {
			t.Fatal(err)
		}
		bc, err := l.Backends[0].Capture("eth0", 40000)
		if err != nil {
			t.Fatal(err)
		}
		transfer(t, l, 5<<20)
		cf, bf := cc.Stop(), bc.Stop()
		withTS := func(frames []lab.Frame) (with, without int) {
			for _, f := range frames {
				_, tcp, ok := lab.DecodeTCP(f)
				if !ok || tcp.RST {
					continue
				}
				if _, ok := tsOption(tcp); ok {
					with++
				} else {
					without++
				}
			}
			return
		}
		cw, cwo := withTS(cf)
		bw, bwo := withTS(bf)
		t.Logf("client side: %d segments with TS, %d without; backend side: %d with, %d without", cw, cwo, bw, bwo)
		if cw != 0 || cwo == 0 {
			t.Errorf("client saw %d segments with a TS option (want 0 of %d)", cw, cw+cwo)
		}
		if backendTS && (bwo != 0 || bw == 0) {
			t.Errorf("backend side: %d segments without TS, want 0 (of %d)", bwo, bw+bwo)
		}
		if !backendTS && bw > 2 {
			// Only the SYN may carry tslb's TS before the fallback.
			t.Errorf("backend without timestamps: %d segments carried TS", bw)
		}
	}
	t.Run("backend_ts_on", func(t *testing.T) { check(t, true) })
	if err := l.Backends[0].Sysctl("net.ipv4.tcp_timestamps", "0"); err != nil {
		t.Fatal(err)
	}
	t.Run("backend_ts_off", func(t *testing.T) { check(t, false) })
	m := metrics(t, tl)
	if got := m.Sum("tslb_drops_total"); got > 0 {
		for k, v := range m {
			if strings.HasPrefix(k, "tslb_drops_total{") && v > 0 {
				t.Logf("%s %v", k, v)
			}
		}
	}
}

// transfer downloads and uploads n bytes through the VIP and checks them.
func transfer(t *testing.T, l *lab.Lab, n int64) {
	t.Helper()
	hc := l.Clients[0].HTTPClient(false, time.Minute)
	want := sha256.New()
	io.Copy(want, lab.Stream(5, n))
	resp, err := hc.Get(vipURL(l, 80, fmt.Sprintf("/bytes?n=%d&seed=5", n)))
	if err != nil {
		t.Fatalf("download: %v", err)
	}
	h := sha256.New()
	got, err := io.Copy(h, resp.Body)
	resp.Body.Close()
	if err != nil || got != n || !bytes.Equal(h.Sum(nil), want.Sum(nil)) {
		t.Fatalf("download: %d bytes, err %v, sha match %v", got, err, bytes.Equal(h.Sum(nil), want.Sum(nil)))
	}
	resp, err = hc.Post(vipURL(l, 80, "/upload"), "application/octet-stream", lab.Stream(5, n))
	if err != nil {
		t.Fatalf("upload: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != fmt.Sprintf("%s %d\n", hex.EncodeToString(want.Sum(nil)), n) {
		t.Fatalf("upload: backend answered %q", body)
	}
}

// TestCollisionRepair forces collisions (strip, no ISN translation,
// exhaustion: reuse) with the detector's repair on: every connect
// completes, no client sees the old ACK (so sends no RST) nor any RST, and
// the pcap files parse and hold the SYN and the old ACK.
func TestCollisionRepair(t *testing.T) {
	pcaps := t.TempDir()
	l, tl := twDeploy(t, harness.Options{Timestamps: config.TSStrip, NoISN: true, Exhaustion: config.ExhaustReuse, PcapDir: pcaps}, "1")
	var caps []*lab.Capture
	for _, c := range l.Clients {
		cp, err := c.Capture("eth0", 40000)
		if err != nil {
			t.Fatal(err)
		}
		caps = append(caps, cp)
	}
	s := openLoop(t, l.Clients, vipURL(l, 80, "/"), 300, twRate, 10*time.Second)
	rsts := 0
	for _, cp := range caps {
		for _, f := range cp.Stop() {
			if _, tcp, ok := lab.DecodeTCP(f); ok && tcp.RST {
				rsts++
			}
		}
	}
	time.Sleep(3 * time.Second) // flows end, captures are flushed
	m := metrics(t, tl)
	det, rep := m.Sum("tslb_collisions_total", "signature=old_ack"), m.Sum("tslb_collision_repairs_total")
	t.Logf("repair: %v; old_ack %.0f, repairs %.0f, RSTs on the client links %d", s, det, rep, rsts)
	if det == 0 {
		t.Fatalf("no collision forced: the lab built no pressure")
	}
	if rep == 0 || s.errors != 0 {
		t.Errorf("repairs %v, client errors %d (%v)", rep, s.errors, s.firstErrors)
	}
	if rsts != 0 {
		t.Errorf("%d RSTs on the clients' links: the repair let the old ACK through", rsts)
	}
	files, _ := filepath.Glob(filepath.Join(pcaps, "collision-*.pcap"))
	if len(files) == 0 {
		t.Fatalf("no pcap file in %s", pcaps)
	}
	good := 0
	for _, path := range files {
		if pcapHasCollision(t, path) {
			good++
		}
	}
	t.Logf("%d pcap files, %d hold a SYN and its old ACK", len(files), good)
	if good == 0 {
		t.Errorf("no pcap file holds a SYN and an old ACK")
	}
}

func pcapHasCollision(t *testing.T, path string) bool {
	fh, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	r, err := pcapgo.NewReader(fh)
	if err != nil {
		t.Errorf("%s: %v", path, err)
		return false
	}
	var synSeq uint32
	haveSYN := false
	for {
		data, _, err := r.ReadPacketData()
		if err != nil {
			break
		}
		p := gopacket.NewPacket(data, layers.LayerTypeEthernet, gopacket.Default)
		tcp, _ := p.Layer(layers.LayerTypeTCP).(*layers.TCP)
		if tcp == nil {
			continue
		}
		if tcp.SYN && !tcp.ACK {
			synSeq, haveSYN = tcp.Seq, true
		}
		if haveSYN && tcp.ACK && !tcp.SYN && !tcp.RST && tcp.Ack != synSeq+1 && tcp.SrcPort == 8080 {
			return true
		}
	}
	return false
}
