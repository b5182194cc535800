package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// SchemaVersion names the layout of results.json. It changes only when a
// field is removed or changes meaning; new fields may be added.
//
// tslb-bench/2 added the request/response phase (Cell.RR,
// ConfigJSON.RR*) and per-phase CPU (the cpu object of every phase); the
// cell's cpu object became the sum of the phases' figures.
const SchemaVersion = "tslb-bench/2"

// Report is the content of results.json.
//
// Durations are in milliseconds (fields ending in _ms) or seconds (_s),
// CPU time per transaction in microseconds (_us_per_tx); a null value
// means "not measured" (e.g. process CPU of an nftables cell, which is
// kernel softirq work no process owns).
type Report struct {
	// Schema is SchemaVersion.
	Schema string `json:"schema"`
	// Started is when the run began (RFC 3339, UTC).
	Started time.Time `json:"started"`
	// Machine describes where it ran.
	Machine Machine `json:"machine"`
	// Config is the run's configuration.
	Config ConfigJSON `json:"config"`
	// Cells holds one entry per requested cell, in the order run,
	// including cells that could not start.
	Cells []Cell `json:"cells"`
}

// Machine describes the host of a run.
type Machine struct {
	CPUs     int    `json:"cpus"`
	MemoryGB int    `json:"memory_gb"`
	Kernel   string `json:"kernel"`
	Go       string `json:"go"`
}

// ConfigJSON is Config as written in results.json.
type ConfigJSON struct {
	Cells        []string `json:"cells"`
	Rate         float64  `json:"rate_per_s"`
	Conns        int      `json:"conns"`
	Ports        int      `json:"ports"`
	PortMin      uint16   `json:"port_min"`
	Backends     int      `json:"backends"`
	Clients      int      `json:"clients"`
	CTTimeWaitS  float64  `json:"ct_timewait_s"`
	DurationS    float64  `json:"duration_s"`
	ClosedS      float64  `json:"closed_s"`
	BulkS        float64  `json:"bulk_s"`
	Workers      int      `json:"workers"`
	TimeoutS     float64  `json:"timeout_s"`
	BackendTS    bool     `json:"backend_timestamps"`
	BackendTWSec int      `json:"backend_time_wait_s"`
	// RRConns, RRS and RRSize are the request/response phase's
	// connections, length (0: skipped) and request and answer size.
	RRConns int     `json:"rr_conns"`
	RRS     float64 `json:"rr_s"`
	RRSize  int     `json:"rr_size_bytes"`
	// RRVIPPort and RRBackendPort are the ports of the request/response
	// service (the HTTP service is VIP:80 to backend port 8080).
	RRVIPPort     uint16 `json:"rr_vip_port"`
	RRBackendPort uint16 `json:"rr_backend_port"`
	// IPv6 reports a run over IPv6 (dual-stack labs, IPv6 services).
	IPv6 bool `json:"ipv6,omitempty"`
}

// Cell status values.
const (
	StatusOK          = "ok"          // the cell ran all its phases
	StatusUnavailable = "unavailable" // its software is missing
	StatusFailed      = "failed"      // it could not start or run
)

// Cell is one balancer's results.
type Cell struct {
	// Name is the cell name (see the package comment); Balancer describes
	// it in words.
	Name     string `json:"name"`
	Balancer string `json:"balancer"`
	// Status is StatusOK, StatusUnavailable or StatusFailed; Error says
	// why for the last two.
	Status string `json:"status"`
	Error  string `json:"error,omitempty"`
	// Open is the open-loop run; Closed the closed-loop run; Bulk the
	// throughput run; RR the request/response run (run last). A phase
	// that was skipped or not reached is absent.
	Open   *OpenStats   `json:"open,omitempty"`
	Closed *ClosedStats `json:"closed,omitempty"`
	Bulk   *BulkStats   `json:"bulk,omitempty"`
	RR     *RRStats     `json:"rr,omitempty"`
	// Capture is what the capture between balancer and backends showed
	// during the open-loop run (null for the direct cell).
	Capture *CaptureStats `json:"capture,omitempty"`
	// ClientCapture is the same analysis of a capture on the clients'
	// side of the balancer (segments to and from VIP:80): old ACKs that
	// reached a client, SYNs the clients retransmitted, RSTs they sent.
	ClientCapture *CaptureStats `json:"client_capture,omitempty"`
	// TSLB holds tslb's own counters after the open-loop run, for tslb
	// cells only.
	TSLB map[string]float64 `json:"tslb,omitempty"`
	// CPU is the CPU time used during the phases that ran: the sum of
	// their own cpu figures (open, closed, rr, bulk), so the time between
	// phases (capture analysis, opening the request/response connections)
	// is not in it.
	CPU *CPUStats `json:"cpu,omitempty"`
	// Pcap is the file of the first collisions (with --keep-pcap).
	Pcap string `json:"pcap,omitempty"`
	// ConnectMS holds every successful open-loop connect time, sorted (for
	// plots); omitted from results.json, kept in memory.
	ConnectMS []float64 `json:"-"`
}

// OpenStats summarises the open-loop run.
type OpenStats struct {
	Attempted int `json:"attempted"`
	Succeeded int `json:"succeeded"`
	// FailedReset, FailedTimeout and FailedOther split the failures.
	FailedReset   int `json:"failed_reset"`
	FailedTimeout int `json:"failed_timeout"`
	FailedOther   int `json:"failed_other"`
	// FirstErrors holds up to 5 error messages.
	FirstErrors []string `json:"first_errors,omitempty"`
	// Connect percentiles over succeeded connections (nearest rank).
	ConnectP50MS  float64 `json:"connect_p50_ms"`
	ConnectP90MS  float64 `json:"connect_p90_ms"`
	ConnectP99MS  float64 `json:"connect_p99_ms"`
	ConnectP999MS float64 `json:"connect_p999_ms"`
	ConnectMaxMS  float64 `json:"connect_max_ms"`
	// Slow500 counts connects slower than 500 ms (a SYN retransmitted).
	Slow500 int `json:"slow_connects_500ms"`
	// DurationS is the time from the first connect to the last answer.
	DurationS float64 `json:"duration_s"`
	// CPU is the CPU used from the start of the run to its last answer.
	CPU *PhaseCPU `json:"cpu"`
}

// Failed returns the number of failed attempts.
func (o *OpenStats) Failed() int { return o.FailedReset + o.FailedTimeout + o.FailedOther }

// ClosedStats summarises the closed-loop run.
type ClosedStats struct {
	Requests  int     `json:"requests"`
	Errors    int     `json:"errors"`
	PerSecond float64 `json:"requests_per_s"`
	DurationS float64 `json:"duration_s"`
	// CPU is the CPU used during the run.
	CPU *PhaseCPU `json:"cpu"`
}

// BulkStats summarises the throughput run.
type BulkStats struct {
	Bytes     int64   `json:"bytes"`
	Gbps      float64 `json:"gbit_per_s"`
	DurationS float64 `json:"duration_s"`
	Error     string  `json:"error,omitempty"`
	// CPU is the CPU used during the run (connect included).
	CPU *PhaseCPU `json:"cpu"`
}

// RRStats summarises the request/response run: Conns connections opened
// first (not timed), then on each one request of SizeBytes and its answer
// of SizeBytes at a time, for DurationS.
type RRStats struct {
	// Conns is the number of connections asked for; Established those
	// opened, ConnectErrors those that could not be.
	Conns         int `json:"conns"`
	Established   int `json:"established"`
	ConnectErrors int `json:"connect_errors"`
	// SizeBytes is the size of every request and every answer.
	SizeBytes int `json:"size_bytes"`
	// Transactions counts correct answers received before the end of the
	// run (those in flight at the end are not counted).
	Transactions int64 `json:"transactions"`
	// Errors counts connections lost during the run (reset, EOF, a wrong
	// answer, no answer within the timeout); they are not reopened.
	Errors int `json:"errors"`
	// FirstErrors holds up to 5 error messages, connects first.
	FirstErrors []string `json:"first_errors,omitempty"`
	// PerSecond is Transactions / DurationS.
	PerSecond float64 `json:"transactions_per_s"`
	DurationS float64 `json:"duration_s"`
	// Transaction time (request written to answer read) percentiles,
	// nearest rank, from a histogram with 1/128 relative resolution.
	LatencyP50MS float64 `json:"latency_p50_ms"`
	LatencyP90MS float64 `json:"latency_p90_ms"`
	LatencyP99MS float64 `json:"latency_p99_ms"`
	LatencyMaxMS float64 `json:"latency_max_ms"`
	// CPU is the CPU used during the run (from the first request to the
	// end; opening the connections is not in it).
	CPU *PhaseCPU `json:"cpu"`
	// SoftirqUSPerTx is CPU.SoftirqSystemS per transaction, in µs (null
	// without transactions).
	SoftirqUSPerTx *float64 `json:"softirq_system_us_per_tx"`
	// GeneratorUSPerTx is CPU.GeneratorS per transaction, in µs: the
	// clients' and the backends' servers' cost (null without
	// transactions).
	GeneratorUSPerTx *float64 `json:"generator_cpu_us_per_tx"`
	// BalancerUSPerTx is the balancer's CPU per transaction in µs, as
	// BalancerMethod says; null when it cannot be given.
	BalancerUSPerTx *float64 `json:"balancer_cpu_us_per_tx"`
	// BalancerMethod says how BalancerUSPerTx was obtained: one of the
	// RRMethod constants.
	BalancerMethod string `json:"balancer_cpu_method"`
	// TSLBFramesPerTx is, for tslb cells, the frames tslb received on
	// both links during the run (its tslb_link_packets_total, rx) per
	// transaction: 2 when every transaction is one segment each way and
	// nothing else crosses (e.g. pure ACKs); null for other cells.
	TSLBFramesPerTx *float64 `json:"tslb_frames_per_tx"`
}

// RRStats.BalancerMethod values.
const (
	// RRMethodProcess (tslb, HAProxy): CPU.BalancerS (utime+stime of the
	// processes in the lb namespace) / Transactions. It includes softirq
	// work run inline in their system calls (see PhaseCPU).
	RRMethodProcess = "process"
	// RRMethodSoftirq (nftables): the cell's softirq per transaction
	// minus the direct cell's softirq per transaction of the same run,
	// i.e. (softirq_cell − softirq_direct / tx_direct × tx_cell) / tx_cell:
	// the kernel work the balancer adds (forwarding, NAT, and the second
	// bridge and veth hop every balancer adds), assuming clients and
	// backends cost the same per transaction as without a balancer. It is
	// the difference of two sampled figures, so noisier than the others.
	RRMethodSoftirq = "softirq_minus_direct"
	// RRMethodNeedsDirect (nftables without a direct cell in the run, or
	// one without transactions): not measured.
	RRMethodNeedsDirect = "needs_direct"
	// RRMethodNone: no balancer (the direct cell), no transactions, or
	// a balancer process whose CPU could not be read.
	RRMethodNone = "none"
)

// PhaseCPU is the CPU time used during one phase of a cell.
//
// The kernel samples CPU time per tick unless it has
// CONFIG_IRQ_TIME_ACCOUNTING (the lab's 6.18 kernel has not): a tick that
// finds a process's thread serving a softirq counts for the process's
// stime and for the system's softirq alike. A process sending on a veth
// runs the receive side inline in its send (bridge, next veth, the
// receiver's TCP or AF_PACKET input), so BalancerS and GeneratorS include
// such work and overlap SoftirqSystemS; softirq served in ksoftirqd or on
// an idle CPU is only in SoftirqSystemS.
type PhaseCPU struct {
	// BalancerS is user+system time of the processes in the lb namespace
	// (tslb, haproxy) over the phase, from /proc/<pid>/stat; null for
	// kernel balancers and the direct cell.
	BalancerS *float64 `json:"balancer_s"`
	// SoftirqSystemS is the system-wide softirq time over the phase (all
	// CPUs, all namespaces: clients, balancer and backends alike) from
	// /proc/stat.
	SoftirqSystemS float64 `json:"softirq_system_s"`
	// GeneratorS is user+system time of the bench process itself: the
	// load generator, the backends' in-process servers and the captures.
	// It is what the load costs outside the balancer (in the nftables
	// cells it includes the forwarding that runs inline in the clients'
	// and servers' sends).
	GeneratorS float64 `json:"generator_s"`
	// WallS is the wall-clock time the figures cover.
	WallS float64 `json:"wall_s"`
}

// CPUStats is CPU time used during a cell's phases: the sums of the
// phases' PhaseCPU figures.
type CPUStats struct {
	// BalancerS is user+system time of the processes in the lb namespace
	// (tslb, haproxy), from /proc/<pid>/stat; null for kernel balancers
	// (and if any phase's figure is null).
	BalancerS *float64 `json:"balancer_s"`
	// BalancerNote says what BalancerS covers.
	BalancerNote string `json:"balancer_note"`
	// SoftirqSystemS is the system-wide softirq time (all CPUs, all
	// namespaces: clients, balancer and backends alike) from /proc/stat.
	SoftirqSystemS float64 `json:"softirq_system_s"`
	// GeneratorS is the bench process's own CPU (see PhaseCPU).
	GeneratorS float64 `json:"generator_s"`
}

// summarizeOpen builds OpenStats from the connection results.
func summarizeOpen(cs []Conn) (*OpenStats, []float64) {
	s := &OpenStats{Attempted: len(cs)}
	var ms []float64
	var first, last time.Time
	for _, c := range cs {
		if first.IsZero() || c.Start.Before(first) {
			first = c.Start
		}
		if e := c.Start.Add(c.Total); e.After(last) {
			last = e
		}
		switch c.Outcome {
		case OK:
			s.Succeeded++
			ms = append(ms, float64(c.Connect)/float64(time.Millisecond))
			if c.Connect > 500*time.Millisecond {
				s.Slow500++
			}
			continue
		case Reset:
			s.FailedReset++
		case Timeout:
			s.FailedTimeout++
		default:
			s.FailedOther++
		}
		if len(s.FirstErrors) < 5 && c.Err != nil {
			s.FirstErrors = append(s.FirstErrors, c.Err.Error())
		}
	}
	slices.Sort(ms)
	s.ConnectP50MS = Percentile(ms, 50)
	s.ConnectP90MS = Percentile(ms, 90)
	s.ConnectP99MS = Percentile(ms, 99)
	s.ConnectP999MS = Percentile(ms, 99.9)
	if len(ms) > 0 {
		s.ConnectMaxMS = ms[len(ms)-1]
	}
	if !first.IsZero() {
		s.DurationS = last.Sub(first).Seconds()
	}
	return s, ms
}

// summarizeRR builds RRStats from a request/response run on conns of
// the asked-for connections (cpu may be nil).
func summarizeRR(asked int, conns *rrConns, size int, r RRResult, cpu *PhaseCPU) *RRStats {
	s := &RRStats{Conns: asked, Established: len(conns.fds), ConnectErrors: conns.failed, SizeBytes: size,
		Transactions: r.Transactions, Errors: r.Errors, DurationS: r.Elapsed.Seconds(), CPU: cpu}
	s.FirstErrors = append(append(s.FirstErrors, conns.errs...), r.FirstErrors...)
	s.FirstErrors = s.FirstErrors[:min(len(s.FirstErrors), maxErrors)]
	if r.Elapsed > 0 {
		s.PerSecond = float64(r.Transactions) / r.Elapsed.Seconds()
	}
	if h := r.Latency; h != nil && h.Count() > 0 {
		s.LatencyP50MS = float64(h.Quantile(50)) / 1e6
		s.LatencyP90MS = float64(h.Quantile(90)) / 1e6
		s.LatencyP99MS = float64(h.Quantile(99)) / 1e6
		s.LatencyMaxMS = float64(h.Max()) / 1e6
	}
	return s
}

// isNFT reports whether cell name is an nftables cell (its balancer is
// kernel softirq work).
func isNFT(name string) bool { return name == CellNFTStrip || name == CellNFTPass }

// rrCPU fills SoftirqUSPerTx, BalancerUSPerTx and BalancerMethod of every
// cell's RR phase (see the RRMethod constants). The nftables figure needs
// the softirq per transaction of the run's first direct cell with
// transactions.
func rrCPU(cells []Cell) {
	var direct *RRStats
	for i := range cells {
		if rr := cells[i].RR; cells[i].Name == CellDirect && direct == nil && rr != nil && rr.Transactions > 0 && rr.CPU != nil {
			direct = rr
		}
	}
	perTx := func(sec float64, tx int64) *float64 {
		v := sec / float64(tx) * 1e6
		return &v
	}
	for i := range cells {
		rr := cells[i].RR
		if rr == nil {
			continue
		}
		rr.SoftirqUSPerTx, rr.GeneratorUSPerTx, rr.BalancerUSPerTx, rr.BalancerMethod = nil, nil, nil, RRMethodNone
		if rr.Transactions <= 0 || rr.CPU == nil {
			continue
		}
		rr.SoftirqUSPerTx = perTx(rr.CPU.SoftirqSystemS, rr.Transactions)
		rr.GeneratorUSPerTx = perTx(rr.CPU.GeneratorS, rr.Transactions)
		switch {
		case cells[i].Name == CellDirect:
		case isNFT(cells[i].Name):
			if direct == nil {
				rr.BalancerMethod = RRMethodNeedsDirect
				continue
			}
			v := *rr.SoftirqUSPerTx - direct.CPU.SoftirqSystemS/float64(direct.Transactions)*1e6
			rr.BalancerUSPerTx, rr.BalancerMethod = &v, RRMethodSoftirq
		case rr.CPU.BalancerS != nil:
			rr.BalancerUSPerTx, rr.BalancerMethod = perTx(*rr.CPU.BalancerS, rr.Transactions), RRMethodProcess
		}
	}
}

// phaseCPU returns the CPU figures of the phases in the order they run:
// open, closed, bulk, RR (nil for a phase that did not run).
func (c *Cell) phaseCPU() [4]*PhaseCPU {
	var p [4]*PhaseCPU
	if c.Open != nil {
		p[0] = c.Open.CPU
	}
	if c.Closed != nil {
		p[1] = c.Closed.CPU
	}
	if c.Bulk != nil {
		p[2] = c.Bulk.CPU
	}
	if c.RR != nil {
		p[3] = c.RR.CPU
	}
	return p
}

// sumCPU returns the cell total of the phases that ran (nil entries are
// phases that did not). BalancerS is null if any phase's is.
func sumCPU(note string, phases ...*PhaseCPU) *CPUStats {
	c := &CPUStats{BalancerNote: note}
	var bal float64
	n, measured := 0, 0
	for _, p := range phases {
		if p == nil {
			continue
		}
		n++
		c.SoftirqSystemS += p.SoftirqSystemS
		c.GeneratorS += p.GeneratorS
		if p.BalancerS != nil {
			bal += *p.BalancerS
			measured++
		}
	}
	if n > 0 && measured == n {
		c.BalancerS = &bal
	}
	return c
}

// Percentile returns the nearest-rank p-th percentile of sorted (0 if
// empty).
func Percentile(sorted []float64, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	r := int(math.Ceil(p/100*float64(len(sorted)) - 1e-9)) // 99.9% of 1000 is 999, not 999.0000001
	return sorted[max(0, min(r-1, len(sorted)-1))]
}

// WriteFiles writes results.md, results.json and connect-latency.svg into
// dir, creating it.
func (r *Report) WriteFiles(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	var md strings.Builder
	r.Markdown(&md)
	if err := os.WriteFile(filepath.Join(dir, "results.md"), []byte(md.String()), 0o644); err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	js, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "results.json"), append(js, '\n'), 0o644); err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	var svg strings.Builder
	r.SVG(&svg)
	if err := os.WriteFile(filepath.Join(dir, "connect-latency.svg"), []byte(svg.String()), 0o644); err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	return nil
}

// ReadReport parses a results.json.
func ReadReport(path string) (*Report, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	var r Report
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("bench: %s: %w", path, err)
	}
	if r.Schema != SchemaVersion {
		return nil, fmt.Errorf("bench: %s: schema %q, want %q", path, r.Schema, SchemaVersion)
	}
	return &r, nil
}

// Markdown writes the side-by-side table, the request/response and
// per-phase CPU table, and the notes under them.
func (r *Report) Markdown(w io.Writer) {
	c := r.Config
	fmt.Fprintf(w, "tslb bench, %s; %d CPUs, %d GB, kernel %s\n\n", r.Started.UTC().Format("2006-01-02 15:04 UTC"),
		r.Machine.CPUs, r.Machine.MemoryGB, r.Machine.Kernel)
	rrDesc := "request/response skipped"
	if c.RRS > 0 {
		rrDesc = fmt.Sprintf("request/response %d connections, one %d-byte request and answer in flight on each, for %.0f s (VIP port %d, backend port %d)",
			c.RRConns, c.RRSize, c.RRS, c.RRVIPPort, c.RRBackendPort)
	}
	fam := "IPv4"
	if c.IPv6 {
		fam = "IPv6"
	}
	fmt.Fprintf(w, "%s. Open loop: %d connections at %.0f/s from %d client namespaces to %d backends (server closes, "+
		"TIME_WAIT %d s, timestamps %v), SNAT ports %d-%d (%d), conntrack TIME_WAIT %.0f s (nft cells); "+
		"closed loop %d in flight for %.0f s; bulk one connection for %.0f s; %s.\n\n",
		fam, c.Conns, c.Rate, c.Clients, c.Backends, c.BackendTWSec, onOff(c.BackendTS), c.PortMin, int(c.PortMin)+c.Ports-1, c.Ports,
		c.CTTimeWaitS, c.Workers, c.ClosedS, c.BulkS, rrDesc)
	fmt.Fprintln(w, "| cell | conns ok/tried | reset | timeout | connect p50 / p90 / p99 / p99.9 / max (ms) | > 500 ms | SYN rtx | old ACKs (→RST) | RST→backend | at clients: old ACKs / SYN rtx | tslb old_ack | closed-loop req/s | bulk Gbit/s | RR tx/s | RR CPU µs/tx | balancer CPU s | softirq s (system) |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
	for _, cell := range r.Cells {
		if cell.Status != StatusOK {
			fmt.Fprintf(w, "| %s | **%s**: %s |%s\n", cell.Name, cell.Status, strings.ReplaceAll(cell.Error, "|", "/"), strings.Repeat(" |", 15))
			continue
		}
		o := cell.Open
		row := []string{cell.Name, fmt.Sprintf("%d/%d", o.Succeeded, o.Attempted), itoa(o.FailedReset), itoa(o.FailedTimeout + o.FailedOther),
			fmt.Sprintf("%s / %s / %s / %s / %s", ms(o.ConnectP50MS), ms(o.ConnectP90MS), ms(o.ConnectP99MS), ms(o.ConnectP999MS), ms(o.ConnectMaxMS)),
			itoa(o.Slow500)}
		if p := cell.Capture; p != nil {
			row = append(row, itoa(p.SYNRetransmits), fmt.Sprintf("%d (%d)", p.OldACKs, p.OldACKThenRST), itoa(p.RSTsToBackend))
		} else {
			row = append(row, "–", "–", "–")
		}
		if p := cell.ClientCapture; p != nil {
			row = append(row, fmt.Sprintf("%d / %d", p.OldACKs, p.SYNRetransmits))
		} else {
			row = append(row, "–")
		}
		if cell.TSLB != nil {
			row = append(row, fmt.Sprintf("%.0f", cell.TSLB["collisions_old_ack"]))
		} else {
			row = append(row, "–")
		}
		if cell.Closed != nil {
			row = append(row, fmt.Sprintf("%.0f (%d err)", cell.Closed.PerSecond, cell.Closed.Errors))
		} else {
			row = append(row, "–")
		}
		if cell.Bulk != nil && cell.Bulk.Error == "" {
			row = append(row, fmt.Sprintf("%.2f", cell.Bulk.Gbps))
		} else {
			row = append(row, "–")
		}
		if rr := cell.RR; rr != nil {
			row = append(row, fmt.Sprintf("%.0f (%d err)", rr.PerSecond, rr.Errors+rr.ConnectErrors), rrCPUText(rr))
		} else {
			row = append(row, "–", "–")
		}
		if cell.CPU != nil && cell.CPU.BalancerS != nil {
			row = append(row, fmt.Sprintf("%.2f", *cell.CPU.BalancerS))
		} else if cell.CPU != nil && cell.Name == CellDirect {
			row = append(row, "none")
		} else if cell.CPU != nil {
			row = append(row, "kernel")
		} else {
			row = append(row, "–")
		}
		if cell.CPU != nil {
			row = append(row, fmt.Sprintf("%.2f", cell.CPU.SoftirqSystemS))
		} else {
			row = append(row, "–")
		}
		fmt.Fprintf(w, "| %s |\n", strings.Join(row, " | "))
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| cell | RR conns ok/asked | transactions | errors | tx/s | latency p50 / p99 / max (ms) | balancer CPU µs/tx | softirq µs/tx (system) | generator CPU µs/tx | balancer CPU s: open / closed / bulk / RR | softirq s: open / closed / bulk / RR |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|---|---|---|")
	for _, cell := range r.Cells {
		if cell.Status != StatusOK {
			continue
		}
		row := []string{cell.Name}
		if rr := cell.RR; rr != nil {
			row = append(row, fmt.Sprintf("%d/%d", rr.Established, rr.Conns), fmt.Sprint(rr.Transactions), itoa(rr.Errors+rr.ConnectErrors),
				fmt.Sprintf("%.0f", rr.PerSecond), fmt.Sprintf("%s / %s / %s", ms(rr.LatencyP50MS), ms(rr.LatencyP99MS), ms(rr.LatencyMaxMS)),
				rrCPUText(rr), usText(rr.SoftirqUSPerTx), usText(rr.GeneratorUSPerTx))
		} else {
			row = append(row, "–", "–", "–", "–", "–", "–", "–", "–")
		}
		var bal, soft []string
		for _, p := range cell.phaseCPU() {
			switch {
			case p == nil:
				bal, soft = append(bal, "–"), append(soft, "–")
			case p.BalancerS == nil:
				bal, soft = append(bal, "–"), append(soft, fmt.Sprintf("%.2f", p.SoftirqSystemS))
			default:
				bal, soft = append(bal, fmt.Sprintf("%.2f", *p.BalancerS)), append(soft, fmt.Sprintf("%.2f", p.SoftirqSystemS))
			}
		}
		row = append(row, strings.Join(bal, " / "), strings.Join(soft, " / "))
		fmt.Fprintf(w, "| %s |\n", strings.Join(row, " | "))
	}
	fmt.Fprintln(w)
	for _, cell := range r.Cells {
		if cell.Open != nil && len(cell.Open.FirstErrors) > 0 {
			fmt.Fprintf(w, "- %s first errors: %s\n", cell.Name, strings.Join(cell.Open.FirstErrors, "; "))
		}
		if cell.RR != nil && cell.RR.TSLBFramesPerTx != nil {
			fmt.Fprintf(w, "- %s request/response: %.2f frames received by tslb per transaction\n", cell.Name, *cell.RR.TSLBFramesPerTx)
		}
		if cell.RR != nil && len(cell.RR.FirstErrors) > 0 {
			fmt.Fprintf(w, "- %s request/response errors: %s\n", cell.Name, strings.Join(cell.RR.FirstErrors, "; "))
		}
		if cell.Pcap != "" {
			fmt.Fprintf(w, "- %s first collisions: %s\n", cell.Name, cell.Pcap)
		}
	}
	fmt.Fprintln(w, "\nconns, reset, timeout, connect times: measured by the clients (open loop). SYN rtx, old ACKs, RSTs: capture on the switch port between balancer and backends (gopacket); \"(→RST)\" counts old ACKs followed by an RST to the backend within 100 ms. \"at clients\": the same analysis on the clients' side of the balancer: old ACKs that reached a client, SYNs the clients retransmitted. tslb old_ack: tslb's own detector, for comparison only. balancer CPU: utime+stime of the processes in the lb namespace, summed over the phases; \"kernel\": nftables work is softirq, not attributable to a process; softirq s is system-wide (clients and backends included).")
	fmt.Fprintln(w, "\nRR (request/response): the connections are opened first (not timed), then each carries one request at a time and waits for its answer (TCP_NODELAY on both ends: one segment each way per transaction); tx/s counts answers completed in the run, errors are connections that failed to open or were lost. RR CPU µs/tx: for tslb and HAProxy, process CPU (utime+stime in the lb namespace) during the phase ÷ transactions; for nftables (marked softirq), the cell's system-wide softirq seconds during the phase minus the direct cell's softirq seconds scaled to the same number of transactions (direct's softirq per transaction × this cell's transactions), ÷ transactions — it also holds the second bridge and veth hop every balancer adds; \"n/a (needs direct)\": no direct cell with transactions in this run. generator CPU: utime+stime of the bench process itself (the clients and the backends' in-process servers) ÷ transactions. With tick-based CPU accounting, process CPU includes the softirq work run inline in the process's system calls (delivering what it sends over a veth), which is counted in softirq s too.")
}

// rrCPUText formats RRStats.BalancerUSPerTx for the tables.
func rrCPUText(rr *RRStats) string {
	switch {
	case rr.BalancerMethod == RRMethodNeedsDirect:
		return "n/a (needs direct)"
	case rr.BalancerUSPerTx == nil:
		return "–"
	case rr.BalancerMethod == RRMethodSoftirq:
		return fmt.Sprintf("%.1f (softirq)", *rr.BalancerUSPerTx)
	default:
		return fmt.Sprintf("%.1f", *rr.BalancerUSPerTx)
	}
}

// usText formats an optional µs figure.
func usText(v *float64) string {
	if v == nil {
		return "–"
	}
	return fmt.Sprintf("%.1f", *v)
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}

func itoa(n int) string { return fmt.Sprint(n) }

// ms formats milliseconds with 3 significant digits.
func ms(v float64) string {
	switch {
	case v >= 100:
		return fmt.Sprintf("%.0f", v)
	case v >= 10:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.2f", v)
	}
}
