package test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"tslb/test/bench"
	"tslb/test/lab"
)

// TestBenchHarness runs a short `tslb bench` matrix, a stripping nftables
// balancer whose conntrack forgets TIME_WAIT after 2 s against tslb in
// rewrite mode, 2 backends behind 256 SNAT ports at 100 connections/s for
// 10 s (the backends' 60 s TIME_WAIT holds all 512 tuples after 5.1 s),
// and checks what
// the harness is for: the stripping cell fails or stalls and the capture
// shows old ACKs answered by client RSTs; the tslb cell has no failure, no
// slow connect, no old ACK, and a p99 connect time under 100 ms; and
// results.json holds both cells. A 2 s request/response phase (64
// connections) runs in both cells: it must produce transactions with no
// error and per-phase CPU figures; how fast is for benchmarks, not tests.
// For IPv4 and IPv6 (nftables table ip6, tslb on an IPv6 service).
func TestBenchHarness(t *testing.T) { forFamilies(t, testBenchHarness) }

func testBenchHarness(t *testing.T, ipv6 bool) {
	out := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	r, err := bench.Run(ctx, bench.Config{
		Binary: tslbBinary, Cells: []string{bench.CellNFTStrip, bench.CellTSLBRewrite},
		Rate: 100, Duration: 10 * time.Second, Ports: 256, Backends: 2, Clients: 2, CTTimeWait: 2 * time.Second,
		ClosedFor: time.Second, BulkFor: time.Second, RRFor: 2 * time.Second, RRConns: 64, OutDir: out, IPv6: ipv6,
		// lab.NewT: CI=true fails instead of skipping, and every lab is
		// removed when the test ends.
		NewLab: func(c lab.Config) (*lab.Lab, error) { return lab.NewT(t, c), nil },
	})
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]bench.Cell{}
	for _, c := range r.Cells {
		byName[c.Name] = c
		if c.Status != bench.StatusOK {
			t.Fatalf("cell %s: %s: %s", c.Name, c.Status, c.Error)
		}
		t.Logf("%s: open %+v; capture %+v; tslb %v; closed %+v; bulk %+v; rr %+v", c.Name, *c.Open, *c.Capture, c.TSLB, *c.Closed, *c.Bulk, c.RR)
		rr := c.RR
		if rr == nil {
			t.Errorf("%s: no request/response phase", c.Name)
			continue
		}
		if rr.Established != 64 || rr.ConnectErrors != 0 || rr.Errors != 0 || rr.Transactions <= 0 {
			t.Errorf("%s: request/response %d/64 connections, %d connect errors, %d errors, %d transactions; want 64, 0, 0, > 0 (%v)",
				c.Name, rr.Established, rr.ConnectErrors, rr.Errors, rr.Transactions, rr.FirstErrors)
		}
		if c.Open.CPU == nil || c.Closed.CPU == nil || c.Bulk.CPU == nil || rr.CPU == nil || c.CPU == nil {
			t.Errorf("%s: a phase lacks its CPU figures: open %v closed %v bulk %v rr %v total %v", c.Name, c.Open.CPU, c.Closed.CPU, c.Bulk.CPU, rr.CPU, c.CPU)
		}
	}
	strip, tslb := byName[bench.CellNFTStrip], byName[bench.CellTSLBRewrite]
	if t.Failed() {
		t.FailNow()
	}
	// tslb's CPU is its process's; nftables' needs a direct cell, which
	// this run has not.
	if rr := tslb.RR; rr.BalancerMethod != bench.RRMethodProcess || rr.BalancerUSPerTx == nil || rr.CPU.BalancerS == nil || *rr.CPU.BalancerS <= 0 {
		t.Errorf("tslb-rewrite: request/response CPU %v µs/tx by %q (process %v s), want the tslb process's", rr.BalancerUSPerTx, rr.BalancerMethod, rr.CPU.BalancerS)
	}
	if rr := strip.RR; rr.BalancerMethod != bench.RRMethodNeedsDirect || rr.BalancerUSPerTx != nil {
		t.Errorf("nft-strip without a direct cell: %v µs/tx by %q, want none, needs direct", rr.BalancerUSPerTx, rr.BalancerMethod)
	}
	// Every transaction crossed tslb: a request and an answer at least.
	if f := tslb.RR.TSLBFramesPerTx; f == nil || *f < 2 {
		t.Errorf("tslb-rewrite: %v frames received by tslb per transaction, want >= 2", f)
	}

	if strip.Open.Failed()+strip.Open.Slow500 == 0 || strip.Capture.OldACKs == 0 {
		t.Fatalf("nft-strip showed no failure (%d failed, %d > 500 ms, %d old ACKs in the capture): the lab did not build TIME_WAIT pressure",
			strip.Open.Failed(), strip.Open.Slow500, strip.Capture.OldACKs)
	}
	// The failure signature: a Linux client answers each old ACK with an RST
	// that reaches the backend (and ends its TIME_WAIT).
	if c := strip.Capture; c.OldACKThenRST < c.OldACKs/2 {
		t.Errorf("nft-strip: %d old ACKs but only %d followed by an RST to the backend", c.OldACKs, c.OldACKThenRST)
	}
	// On this kernel the old ACK crosses nftables and reaches the client
	// (the clients' side capture), which is what makes it answer with RST.
	if strip.ClientCapture == nil || strip.ClientCapture.OldACKs == 0 {
		t.Errorf("nft-strip: no old ACK reached a client (%+v), though %d reached the balancer", strip.ClientCapture, strip.Capture.OldACKs)
	}
	if tslb.ClientCapture == nil || tslb.ClientCapture.OldACKs != 0 {
		t.Errorf("tslb-rewrite: client-side capture %+v, want no old ACK", tslb.ClientCapture)
	}
	if tslb.Open.Attempted < 800 {
		t.Errorf("tslb-rewrite: only %d connections attempted", tslb.Open.Attempted)
	}
	if tslb.Open.Failed() != 0 || tslb.Open.Slow500 != 0 || tslb.Open.ConnectP99MS >= 100 {
		t.Errorf("tslb-rewrite: %d failed, %d > 500 ms, p99 %.2f ms; want 0, 0, < 100 ms (first errors %v)",
			tslb.Open.Failed(), tslb.Open.Slow500, tslb.Open.ConnectP99MS, tslb.Open.FirstErrors)
	}
	if tslb.Capture.OldACKs != 0 || tslb.TSLB["collisions_old_ack"] != 0 {
		t.Errorf("tslb-rewrite: %d old ACKs in the capture, %v by tslb's detector; want 0", tslb.Capture.OldACKs, tslb.TSLB["collisions_old_ack"])
	}
	if tslb.TSLB["alloc_early_reuse_ts"] == 0 {
		t.Errorf("tslb-rewrite reused no tuple early (%v): the run built no pressure on it", tslb.TSLB)
	}

	got, err := bench.ReadReport(filepath.Join(out, "results.json"))
	if err != nil {
		t.Fatal(err)
	}
	if got.Config.IPv6 != ipv6 {
		t.Errorf("results.json ipv6 = %v, want %v", got.Config.IPv6, ipv6)
	}
	if len(got.Cells) != 2 || got.Cells[0].Name != bench.CellNFTStrip || got.Cells[1].Name != bench.CellTSLBRewrite {
		t.Fatalf("results.json cells = %+v, want nft-strip and tslb-rewrite", got.Cells)
	}
	for _, c := range got.Cells {
		if c.Open == nil || c.Capture == nil || c.CPU == nil || c.Open.Attempted != byName[c.Name].Open.Attempted ||
			c.RR == nil || c.RR.Transactions != byName[c.Name].RR.Transactions || c.RR.CPU == nil {
			t.Errorf("results.json cell %s incomplete: %+v", c.Name, c)
		}
	}
}
