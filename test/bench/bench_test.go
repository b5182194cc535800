package bench

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"errors"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"golang.org/x/sys/unix"

	"tslb/config"
	"tslb/test/harness"
	"tslb/test/lab"
)

var (
	snat = netip.MustParseAddr("198.18.1.100")
	be1  = netip.MustParseAddr("198.18.1.11")
	t0   = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
)

// seg describes one synthetic segment between the balancer (snat) and a
// backend.
type seg struct {
	at            time.Duration
	toBackend     bool
	port          uint16 // SNAT-side port
	syn, ack, rst bool
	seq, ackNo    uint32
}

// frame serialises s as Ethernet/IPv4/TCP.
func frame(t *testing.T, s seg) lab.Frame {
	t.Helper()
	src, dst := snat, be1
	sp, dp := s.port, uint16(backendPort)
	if !s.toBackend {
		src, dst, sp, dp = dst, src, dp, sp
	}
	eth := &layers.Ethernet{SrcMAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}, DstMAC: net.HardwareAddr{2, 0, 0, 0, 0, 2}, EthernetType: layers.EthernetTypeIPv4}
	ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolTCP, SrcIP: src.AsSlice(), DstIP: dst.AsSlice()}
	tcp := &layers.TCP{SrcPort: layers.TCPPort(sp), DstPort: layers.TCPPort(dp), SYN: s.syn, ACK: s.ack, RST: s.rst, Seq: s.seq, Ack: s.ackNo, Window: 1000}
	tcp.SetNetworkLayerForChecksum(ip)
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, eth, ip, tcp); err != nil {
		t.Fatal(err)
	}
	b := buf.Bytes()
	return lab.Frame{Time: t0.Add(s.at), Data: b, Len: len(b)}
}

func TestAnalyze(t *testing.T) {
	tests := []struct {
		name string
		segs []seg
		want CaptureStats
	}{
		{"clean handshake", []seg{
			{at: 0, toBackend: true, port: 20000, syn: true, seq: 100},
			{at: time.Millisecond, port: 20000, syn: true, ack: true, seq: 5, ackNo: 101},
			{at: 2 * time.Millisecond, toBackend: true, port: 20000, ack: true, seq: 101, ackNo: 6},
		}, CaptureStats{SYNs: 1}},
		{"old ACK then client RST then SYN again", []seg{
			{at: 0, toBackend: true, port: 20001, syn: true, seq: 100},
			{at: time.Millisecond, port: 20001, ack: true, seq: 9, ackNo: 77777},
			{at: 2 * time.Millisecond, toBackend: true, port: 20001, rst: true, seq: 77777},
			{at: 10 * time.Millisecond, toBackend: true, port: 20001, syn: true, seq: 100},
			{at: 11 * time.Millisecond, port: 20001, syn: true, ack: true, seq: 5, ackNo: 101},
		}, CaptureStats{SYNs: 2, SYNRetransmits: 1, OldACKs: 1, OldACKThenRST: 1, RSTsToBackend: 1}},
		{"old ACK, RST only after a second", []seg{
			{at: 0, toBackend: true, port: 20002, syn: true, seq: 100},
			{at: time.Millisecond, port: 20002, ack: true, seq: 9, ackNo: 5},
			{at: 1100 * time.Millisecond, toBackend: true, port: 20002, rst: true, seq: 5},
		}, CaptureStats{SYNs: 1, OldACKs: 1, RSTsToBackend: 1}},
		{"backend RST on SYN is not an old ACK", []seg{
			{at: 0, toBackend: true, port: 20003, syn: true, seq: 100},
			{at: time.Millisecond, port: 20003, rst: true, ack: true, ackNo: 101},
		}, CaptureStats{SYNs: 1, RSTsFromBackend: 1}},
		{"data ACK after the handshake is not an old ACK", []seg{
			{at: 0, toBackend: true, port: 20004, syn: true, seq: 100},
			{at: time.Millisecond, port: 20004, syn: true, ack: true, seq: 5, ackNo: 101},
			{at: 3 * time.Millisecond, port: 20004, ack: true, seq: 6, ackNo: 140},
		}, CaptureStats{SYNs: 1}},
		{"new ISN on a reused tuple is no retransmit", []seg{
			{at: 0, toBackend: true, port: 20005, syn: true, seq: 100},
			{at: time.Millisecond, port: 20005, syn: true, ack: true, seq: 5, ackNo: 101},
			{at: time.Second, toBackend: true, port: 20005, syn: true, seq: 900},
		}, CaptureStats{SYNs: 2}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var fs []lab.Frame
			for _, s := range tt.segs {
				fs = append(fs, frame(t, s))
			}
			fs = append(fs, lab.Frame{Time: t0, Data: []byte{1, 2, 3}}) // garbage is skipped
			var coll []int
			got := Analyze(fs, backendPort, &coll)
			tt.want.Frames = len(fs)
			if got != tt.want {
				t.Errorf("Analyze = %+v\nwant      %+v", got, tt.want)
			}
			if len(coll) != tt.want.OldACKs {
				t.Errorf("%d collision indices, want %d", len(coll), tt.want.OldACKs)
			}
			if len(coll) > 0 {
				cf := collisionFrames(fs, coll, backendPort, 20)
				if len(cf) < 2 {
					t.Errorf("collision frames: %d, want the SYN and the old ACK at least", len(cf))
				}
			}
		})
	}
}

func TestPercentile(t *testing.T) {
	var v []float64
	for i := 1; i <= 1000; i++ {
		v = append(v, float64(i))
	}
	for _, tt := range []struct{ p, want float64 }{{50, 500}, {90, 900}, {99, 990}, {99.9, 999}, {100, 1000}, {0, 1}} {
		if got := Percentile(v, tt.p); got != tt.want {
			t.Errorf("Percentile(1..1000, %v) = %v, want %v", tt.p, got, tt.want)
		}
	}
	if got := Percentile(nil, 50); got != 0 {
		t.Errorf("Percentile(nil) = %v", got)
	}
	if got := Percentile([]float64{7}, 99.9); got != 7 {
		t.Errorf("Percentile([7], 99.9) = %v", got)
	}
}

func TestClassify(t *testing.T) {
	for _, tt := range []struct {
		err  error
		want Outcome
	}{
		{nil, OK},
		{unix.ECONNRESET, Reset},
		{&os.SyscallError{Syscall: "read", Err: unix.ECONNRESET}, Reset},
		{unix.ECONNREFUSED, Reset},
		{os.ErrDeadlineExceeded, Timeout},
		{unix.ETIMEDOUT, Timeout},
		{errors.New("bad answer"), Other},
	} {
		if got := classify(tt.err); got != tt.want {
			t.Errorf("classify(%v) = %v, want %v", tt.err, got, tt.want)
		}
	}
}

func TestSummarizeOpen(t *testing.T) {
	cs := []Conn{
		{Start: t0, Connect: time.Millisecond, Total: 2 * time.Millisecond},
		{Start: t0.Add(10 * time.Millisecond), Connect: 1010 * time.Millisecond, Total: 1011 * time.Millisecond},
		{Start: t0.Add(20 * time.Millisecond), Total: 5 * time.Second, Outcome: Timeout, Err: os.ErrDeadlineExceeded},
		{Start: t0.Add(30 * time.Millisecond), Total: time.Millisecond, Outcome: Reset, Err: unix.ECONNRESET},
	}
	s, ms := summarizeOpen(cs)
	if s.Attempted != 4 || s.Succeeded != 2 || s.FailedTimeout != 1 || s.FailedReset != 1 || s.Failed() != 2 || s.Slow500 != 1 {
		t.Errorf("summary %+v", s)
	}
	if len(ms) != 2 || ms[0] != 1 || ms[1] != 1010 || s.ConnectMaxMS != 1010 || s.ConnectP50MS != 1 {
		t.Errorf("connect ms %v, summary %+v", ms, s)
	}
	if s.DurationS != 5.02 {
		t.Errorf("duration %v, want 5.02", s.DurationS)
	}
	if len(s.FirstErrors) != 2 {
		t.Errorf("first errors %v", s.FirstErrors)
	}
}

// sampleReport is a report with one cell of each status.
func sampleReport() *Report {
	open, ms := summarizeOpen([]Conn{
		{Start: t0, Connect: 300 * time.Microsecond, Total: time.Millisecond},
		{Start: t0, Connect: 1005 * time.Millisecond, Total: time.Second},
		{Start: t0, Total: 5 * time.Second, Outcome: Timeout, Err: os.ErrDeadlineExceeded},
	})
	open.CPU = &PhaseCPU{SoftirqSystemS: 0.1, WallS: 1}
	tslbOpen := *open
	tslbOpen.CPU = &PhaseCPU{BalancerS: f64(0.5), SoftirqSystemS: 0.1, WallS: 1}
	r := &Report{Schema: SchemaVersion, Started: t0, Machine: machine(), Config: ConfigJSON{Cells: []string{"nft-strip", "tslb-rewrite", "haproxy"}, Rate: 100, Ports: 256, PortMin: 20000,
		RRConns: 64, RRS: 5, RRSize: 64, RRVIPPort: rrVIPPort, RRBackendPort: rrBackendPort},
		Cells: []Cell{
			{Name: "nft-strip", Status: StatusOK, Open: open, ConnectMS: ms, Capture: &CaptureStats{SYNs: 3, OldACKs: 1},
				Closed: &ClosedStats{Requests: 10, PerSecond: 5, CPU: &PhaseCPU{SoftirqSystemS: 0.1}}, Bulk: &BulkStats{Bytes: 1e9, Gbps: 4, CPU: &PhaseCPU{SoftirqSystemS: 0.05}},
				RR: &RRStats{Conns: 64, Established: 64, Transactions: 250000, PerSecond: 50000, DurationS: 5, CPU: &PhaseCPU{SoftirqSystemS: 0.05}}},
			{Name: "tslb-rewrite", Status: StatusOK, Open: &tslbOpen, ConnectMS: ms, TSLB: map[string]float64{"collisions_old_ack": 0},
				RR: &RRStats{Conns: 64, Established: 64, Transactions: 100000, PerSecond: 20000, DurationS: 5, CPU: &PhaseCPU{BalancerS: f64(1), SoftirqSystemS: 0.7},
					TSLBFramesPerTx: f64(2)}},
			{Name: "haproxy", Status: StatusUnavailable, Error: "haproxy not installed"},
		}}
	for i := range r.Cells {
		c := &r.Cells[i]
		if c.Status == StatusOK {
			p := c.phaseCPU()
			c.CPU = sumCPU("note", p[:]...)
		}
	}
	rrCPU(r.Cells)
	return r
}

func TestReportFiles(t *testing.T) {
	r := sampleReport()
	dir := t.TempDir()
	if err := r.WriteFiles(dir); err != nil {
		t.Fatal(err)
	}
	got, err := ReadReport(filepath.Join(dir, "results.json"))
	if err != nil {
		t.Fatal(err)
	}
	if got.Schema != "tslb-bench/2" || got.Config.RRConns != 64 || got.Config.RRVIPPort != 81 {
		t.Errorf("schema %q, config %+v", got.Schema, got.Config)
	}
	if len(got.Cells) != 3 || got.Cells[2].Status != StatusUnavailable || got.Cells[0].Open.FailedTimeout != 1 ||
		got.Cells[0].Capture.OldACKs != 1 || *got.Cells[1].CPU.BalancerS != 1.5 || got.Cells[0].CPU.BalancerS != nil ||
		got.Cells[0].CPU.SoftirqSystemS != 0.3 || got.Cells[1].RR.Transactions != 100000 || *got.Cells[1].RR.BalancerUSPerTx != 10 ||
		*got.Cells[1].Open.CPU.BalancerS != 0.5 || got.Cells[0].Open.CPU.BalancerS != nil || got.Cells[0].RR.BalancerMethod != RRMethodNeedsDirect {
		t.Errorf("round trip lost data: %+v", got.Cells)
	}
	// The documented field names are the schema.
	raw, _ := os.ReadFile(filepath.Join(dir, "results.json"))
	var generic map[string]any
	if err := json.Unmarshal(raw, &generic); err != nil {
		t.Fatal(err)
	}
	cell := generic["cells"].([]any)[0].(map[string]any)
	for _, k := range []string{"name", "status", "open", "closed", "bulk", "rr", "capture", "cpu"} {
		if _, ok := cell[k]; !ok {
			t.Errorf("results.json cell lacks %q", k)
		}
	}
	for _, phase := range []string{"open", "closed", "bulk", "rr"} {
		pc, ok := cell[phase].(map[string]any)["cpu"].(map[string]any)
		if !ok {
			t.Errorf("results.json %s lacks its cpu object", phase)
			continue
		}
		for _, k := range []string{"balancer_s", "softirq_system_s", "generator_s", "wall_s"} {
			if _, ok := pc[k]; !ok {
				t.Errorf("results.json %s.cpu lacks %q", phase, k)
			}
		}
		if pc["balancer_s"] != nil {
			t.Errorf("nft cell %s.cpu.balancer_s = %v, want null", phase, pc["balancer_s"])
		}
	}
	rr := cell["rr"].(map[string]any)
	for _, k := range []string{"conns", "established", "connect_errors", "size_bytes", "transactions", "errors", "transactions_per_s",
		"latency_p50_ms", "latency_p99_ms", "softirq_system_us_per_tx", "generator_cpu_us_per_tx", "balancer_cpu_us_per_tx", "balancer_cpu_method", "tslb_frames_per_tx"} {
		if _, ok := rr[k]; !ok {
			t.Errorf("results.json rr lacks %q", k)
		}
	}
	if rr["balancer_cpu_us_per_tx"] != nil || rr["balancer_cpu_method"] != "needs_direct" || rr["tslb_frames_per_tx"] != nil {
		t.Errorf("nft cell without direct: rr %v, want a null balancer figure that needs direct", rr)
	}
	for _, k := range []string{"attempted", "succeeded", "failed_reset", "failed_timeout", "connect_p50_ms", "connect_p99_ms", "connect_p999_ms", "connect_max_ms", "slow_connects_500ms"} {
		if _, ok := cell["open"].(map[string]any)[k]; !ok {
			t.Errorf("results.json open lacks %q", k)
		}
	}
	if v, ok := cell["cpu"].(map[string]any)["balancer_s"]; !ok || v != nil {
		t.Errorf("nft cell balancer_s = %v (present %v), want null", v, ok)
	}
	md, _ := os.ReadFile(filepath.Join(dir, "results.md"))
	for _, want := range []string{"| nft-strip | 2/3 | 0 | 1 |", "**unavailable**: haproxy not installed", "| kernel |", "| 1.50 |",
		"| 50000 (0 err) | n/a (needs direct) |", "| 20000 (0 err) | 10.0 |", "| tslb-rewrite | 64/64 | 100000 | 0 | 20000 |",
		"| 0.50 / – / – / 1.00 | 0.10 / – / – / 0.70 |", "| – / – / – / – | 0.10 / 0.10 / 0.05 / 0.05 |",
		"2.00 frames received by tslb per transaction", "request/response 64 connections"} {
		if !strings.Contains(string(md), want) {
			t.Errorf("results.md lacks %q:\n%s", want, md)
		}
	}
	svg, _ := os.ReadFile(filepath.Join(dir, "connect-latency.svg"))
	d := xml.NewDecoder(bytes.NewReader(svg))
	polylines := 0
	for {
		tok, err := d.Token()
		if err != nil {
			if err.Error() != "EOF" {
				t.Fatalf("SVG is not well-formed XML: %v", err)
			}
			break
		}
		if se, ok := tok.(xml.StartElement); ok && se.Name.Local == "polyline" {
			polylines++
		}
	}
	if polylines != 2 {
		t.Errorf("SVG has %d curves, want 2 (one per cell that ran)", polylines)
	}
	if !strings.Contains(string(svg), "haproxy: unavailable") {
		t.Errorf("SVG does not mention the unavailable cell")
	}
}

func TestReadReportRejectsOtherSchema(t *testing.T) {
	p := filepath.Join(t.TempDir(), "r.json")
	os.WriteFile(p, []byte(`{"schema":"other/9","cells":[]}`), 0o644)
	if _, err := ReadReport(p); err == nil {
		t.Error("ReadReport accepted another schema")
	}
}

func TestConfigDefaults(t *testing.T) {
	c, err := Config{}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	if c.Rate != 100 || c.Conns != 1200 || c.Ports != 256 || c.CTTimeWait != 5*time.Second || len(c.Cells) != len(DefaultCells) ||
		c.RRConns != 64 || c.RRFor != 5*time.Second || c.RRSize != 64 {
		t.Errorf("defaults %+v", c)
	}
	if c, err := (Config{RRFor: -1}).withDefaults(); err != nil || c.RRFor >= 0 {
		t.Errorf("negative RRFor (skip) = %v, %v", c.RRFor, err)
	}
	for _, bad := range []Config{
		{RRConns: -1},
		{RRConns: 5000},
		{RRSize: -1},
		{RRSize: 1<<16 + 1},
		{RRFor: time.Hour},
		{Cells: []string{"nope"}},
		{Ports: 70000},
		{CTTimeWait: time.Millisecond},
		{Backends: 80, Clients: 20},
		{Rate: -1},
	} {
		if _, err := bad.withDefaults(); err == nil {
			t.Errorf("withDefaults(%+v) accepted", bad)
		}
	}
}

func TestHAProxyConfig(t *testing.T) {
	a := netip.MustParseAddr
	for _, tc := range []struct {
		name      string
		vip, snat netip.Addr
		backends  []netip.Addr
		want      []string
	}{
		{"ipv4", a("198.18.0.100"), snat, []netip.Addr{be1, a("198.18.1.12")}, []string{"mode tcp", "bind 198.18.0.100:80",
			"server b1 198.18.1.11:8080 source 198.18.1.100:20000-20255",
			"server b2 198.18.1.12:8080 source 198.18.1.100:20000-20255", "frontend fe_rr\n  bind 198.18.0.100:81\n  default_backend be_rr",
			"backend be_rr\n  balance roundrobin\n  server b1 198.18.1.11:8081 source 198.18.1.100:20000-20255\n  server b2 198.18.1.12:8081"}},
		{"ipv6", a("fd00:5e18::100"), a("fd00:5e18:0:1::100"), []netip.Addr{a("fd00:5e18:0:1::11")}, []string{"bind [fd00:5e18::100]:80",
			"server b1 [fd00:5e18:0:1::11]:8080 source [fd00:5e18:0:1::100]:20000-20255", "bind [fd00:5e18::100]:81",
			"server b1 [fd00:5e18:0:1::11]:8081 source [fd00:5e18:0:1::100]:20000-20255"}},
	} {
		got := haproxyConfig(tc.vip, tc.snat, tc.backends, 20000, 20255)
		for _, want := range tc.want {
			if !strings.Contains(got, want) {
				t.Errorf("%s: haproxy config lacks %q:\n%s", tc.name, want, got)
			}
		}
	}
}

func TestProcTicks(t *testing.T) {
	if _, err := procTicks(os.Getpid()); err != nil {
		t.Fatal(err)
	}
	if softirqSeconds() < 0 {
		t.Error("negative softirq time")
	}
}

// TestTestdataResults: the committed results.json of a real default run
// (the README's table) parses with the current schema and holds every
// default cell, each with the figures the table shows.
func TestTestdataResults(t *testing.T) {
	r, err := ReadReport(filepath.Join("testdata", "results.json"))
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Cells) != len(DefaultCells) {
		t.Fatalf("%d cells, want %d", len(r.Cells), len(DefaultCells))
	}
	for i, c := range r.Cells {
		if c.Name != DefaultCells[i] || c.Status != StatusOK || c.Open == nil || c.Open.Attempted == 0 ||
			c.Capture == nil || c.ClientCapture == nil || c.Closed == nil || c.Bulk == nil || c.CPU == nil || c.RR == nil {
			t.Errorf("cell %d: %+v", i, c)
			continue
		}
		if c.RR.Transactions == 0 || c.RR.Errors+c.RR.ConnectErrors != 0 || c.Open.CPU == nil || c.Closed.CPU == nil || c.Bulk.CPU == nil || c.RR.CPU == nil {
			t.Errorf("cell %s: rr %+v, phase CPU %v %v %v", c.Name, c.RR, c.Open.CPU, c.Closed.CPU, c.Bulk.CPU)
		}
		if strings.HasPrefix(c.Name, "tslb-") != (c.TSLB != nil) {
			t.Errorf("cell %s: tslb counters %v", c.Name, c.TSLB)
		}
	}
}

// TestTSLBOptions: every tslb cell's configuration loads and has the HTTP
// service and the request/response service, on their own ports.
func TestTSLBOptions(t *testing.T) {
	l := &lab.Lab{VIP: netip.MustParseAddr("198.18.0.100"), SNAT: snat, ClientNet: netip.MustParsePrefix("198.18.0.0/24"),
		BackendNet: netip.MustParsePrefix("198.18.1.0/24"), LBClientIf: "tslb-c0", LBBackendIf: "tslb-b0",
		Backends: []*lab.NS{{Name: "x-b1", Addr: be1}, {Name: "x-b2", Addr: netip.MustParseAddr("198.18.1.12")}}}
	cfg, err := Config{Binary: "/bin/true"}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{CellTSLBStrip, CellTSLBPass, CellTSLBRewrite, CellTSLBStripBroken} {
		c := harness.Config(l, tslbOptions(cfg, name, t.TempDir()))
		c.ApplyDefaults()
		data, err := c.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		got, err := config.Parse(data, name)
		if err != nil {
			t.Fatalf("%s: generated config does not load: %v", name, err)
		}
		if len(got.Services) != 2 {
			t.Fatalf("%s: %d services, want 2", name, len(got.Services))
		}
		for i, want := range []struct{ port, backend uint16 }{{vipPort, backendPort}, {rrVIPPort, rrBackendPort}} {
			s := got.Services[i]
			if s.VIP != l.VIP || s.Port != want.port || len(s.Backends) != 2 || s.Backends[1].Address != netip.AddrPortFrom(l.Backends[1].Addr, want.backend) ||
				s.Timestamps != got.Services[0].Timestamps || s.NoISNTranslation != got.Services[0].NoISNTranslation {
				t.Errorf("%s: service %d = %+v", name, i, s)
			}
		}
	}
}
