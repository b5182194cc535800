package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"syscall"
	"time"

	"tslb/test/bench"
)

// cmdBench runs `tslb bench`: the same workload through several balancers
// in network-namespace labs, reported side by side (package test/bench).
func cmdBench(args []string) int {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	cells := fs.String("cells", strings.Join(bench.DefaultCells, ","), "comma-separated cells: "+strings.Join(bench.AllCells, ", "))
	rate := fs.Float64("rate", 100, "open-loop connection rate per second")
	conns := fs.Int("conns", 0, "open-loop connections (0: rate × duration)")
	duration := fs.Duration("duration", 12*time.Second, "open-loop duration bound")
	ports := fs.Int("ports", 256, "SNAT port range size (from 20000): the TIME_WAIT pressure knob")
	backends := fs.Int("backends", 2, "backend namespaces")
	clients := fs.Int("clients", 2, "client namespaces")
	ctTW := fs.Duration("ct-timewait", 5*time.Second, "conntrack TIME_WAIT timeout of the nft cells (kernel default 120s)")
	closed := fs.Duration("closed-duration", 3*time.Second, "closed-loop (max rate) run length; negative skips it")
	bulk := fs.Duration("bulk-duration", 2*time.Second, "bulk throughput run length; negative skips it")
	workers := fs.Int("workers", 32, "closed-loop connections in flight")
	rrConns := fs.Int("rr-conns", 64, "request/response connections, opened before the run (not timed), one request in flight on each")
	rrFor := fs.Duration("rr-duration", 5*time.Second, "request/response run length; negative skips it")
	rrSize := fs.Int("rr-size", 64, "request/response: bytes of each request and of each answer")
	timeout := fs.Duration("timeout", 5*time.Second, "bound on each connection (connect and answer)")
	noTS := fs.Bool("backend-ts-off", false, "turn the backends' TCP timestamps off")
	out := fs.String("out", "bench-results", "directory for results.md, results.json, connect-latency.svg")
	keepPcap := fs.Bool("keep-pcap", false, "write OUT/<cell>-collisions.pcap with the first collisions")
	tslbWorkers := fs.Int("tslb-workers", 0, "tslb cells: datapath.workers (0: one per CPU, tslb's default)")
	tslbIO := fs.String("tslb-io", "ring", "tslb cells: datapath.io, ring or socket (the per-frame fallback)")
	ipv6 := fs.Bool("6", false, "IPv6: every cell on a dual-stack lab with an IPv6 VIP, SNAT address and backends (nftables table ip6, HAProxy and tslb on IPv6)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() != 0 {
		fmt.Fprintf(os.Stderr, "tslb bench: unexpected arguments %q\n", fs.Args())
		return 2
	}
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "tslb bench: needs root (network namespaces, AF_PACKET)")
		return 1
	}
	exe, err := os.Executable()
	if err != nil {
		fmt.Fprintln(os.Stderr, "tslb bench:", err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	cfg := bench.Config{Binary: exe, Cells: strings.Split(*cells, ","), Rate: *rate, Conns: *conns, Duration: *duration,
		Ports: *ports, Backends: *backends, Clients: *clients, CTTimeWait: *ctTW, ClosedFor: *closed, BulkFor: *bulk,
		Workers: *workers, RRConns: *rrConns, RRFor: *rrFor, RRSize: *rrSize, Timeout: *timeout, BackendTSOff: *noTS, OutDir: *out, KeepPcap: *keepPcap, Progress: os.Stderr,
		TSLBWorkers: *tslbWorkers, TSLBIO: *tslbIO, IPv6: *ipv6}
	if cfg.TSLBWorkers == 0 {
		cfg.TSLBWorkers = runtime.NumCPU()
	}
	r, err := bench.Run(ctx, cfg)
	if r == nil {
		fmt.Fprintln(os.Stderr, "tslb bench:", err)
		return 2
	}
	r.Markdown(os.Stdout)
	fmt.Printf("\nwritten: %s/results.md, results.json, connect-latency.svg\n", *out)
	if err != nil {
		fmt.Fprintln(os.Stderr, "tslb bench:", err)
		return 1
	}
	for _, c := range r.Cells {
		if c.Status != bench.StatusOK {
			fmt.Fprintf(os.Stderr, "tslb bench: cell %s %s: %s\n", c.Name, c.Status, c.Error)
			return 1
		}
	}
	return 0
}
