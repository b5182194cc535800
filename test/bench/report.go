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
const SchemaVersion = "tslb-bench/1"

// Report is the content of results.json.
//
// Durations are in milliseconds (fields ending in _ms) or seconds (_s);
// a null value means "not measured" (e.g. CPU of an nftables cell, which
// is kernel softirq work no process owns).
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
	// throughput run.
	Open   *OpenStats   `json:"open,omitempty"`
	Closed *ClosedStats `json:"closed,omitempty"`
	Bulk   *BulkStats   `json:"bulk,omitempty"`
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
	// CPU is the CPU time used during the three phases.
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
}

// Failed returns the number of failed attempts.
func (o *OpenStats) Failed() int { return o.FailedReset + o.FailedTimeout + o.FailedOther }

// ClosedStats summarises the closed-loop run.
type ClosedStats struct {
	Requests  int     `json:"requests"`
	Errors    int     `json:"errors"`
	PerSecond float64 `json:"requests_per_s"`
	DurationS float64 `json:"duration_s"`
}

// BulkStats summarises the throughput run.
type BulkStats struct {
	Bytes     int64   `json:"bytes"`
	Gbps      float64 `json:"gbit_per_s"`
	DurationS float64 `json:"duration_s"`
	Error     string  `json:"error,omitempty"`
}

// CPUStats is CPU time used during a cell's phases.
type CPUStats struct {
	// BalancerS is user+system time of the processes in the lb namespace
	// (tslb, haproxy), from /proc/<pid>/stat; null for kernel balancers.
	BalancerS *float64 `json:"balancer_s"`
	// BalancerNote says what BalancerS covers.
	BalancerNote string `json:"balancer_note"`
	// SoftirqSystemS is the system-wide softirq time (all CPUs, all
	// namespaces: clients, balancer and backends alike) from /proc/stat.
	SoftirqSystemS float64 `json:"softirq_system_s"`
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

// Markdown writes the side-by-side table and the notes under it.
func (r *Report) Markdown(w io.Writer) {
	c := r.Config
	fmt.Fprintf(w, "tslb bench, %s; %d CPUs, %d GB, kernel %s\n\n", r.Started.UTC().Format("2006-01-02 15:04 UTC"),
		r.Machine.CPUs, r.Machine.MemoryGB, r.Machine.Kernel)
	fmt.Fprintf(w, "Open loop: %d connections at %.0f/s from %d client namespaces to %d backends (server closes, "+
		"TIME_WAIT %d s, timestamps %v), SNAT ports %d-%d (%d), conntrack TIME_WAIT %.0f s (nft cells); "+
		"closed loop %d in flight for %.0f s; bulk one connection for %.0f s.\n\n",
		c.Conns, c.Rate, c.Clients, c.Backends, c.BackendTWSec, onOff(c.BackendTS), c.PortMin, int(c.PortMin)+c.Ports-1, c.Ports,
		c.CTTimeWaitS, c.Workers, c.ClosedS, c.BulkS)
	fmt.Fprintln(w, "| cell | conns ok/tried | reset | timeout | connect p50 / p90 / p99 / p99.9 / max (ms) | > 500 ms | SYN rtx | old ACKs (→RST) | RST→backend | at clients: old ACKs / SYN rtx | tslb old_ack | closed-loop req/s | bulk Gbit/s | balancer CPU s | softirq s (system) |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
	for _, cell := range r.Cells {
		if cell.Status != StatusOK {
			fmt.Fprintf(w, "| %s | **%s**: %s | | | | | | | | | | | | | |\n", cell.Name, cell.Status, strings.ReplaceAll(cell.Error, "|", "/"))
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
		if cell.CPU != nil && cell.CPU.BalancerS != nil {
			row = append(row, fmt.Sprintf("%.2f", *cell.CPU.BalancerS))
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
	for _, cell := range r.Cells {
		if cell.Open != nil && len(cell.Open.FirstErrors) > 0 {
			fmt.Fprintf(w, "- %s first errors: %s\n", cell.Name, strings.Join(cell.Open.FirstErrors, "; "))
		}
		if cell.Pcap != "" {
			fmt.Fprintf(w, "- %s first collisions: %s\n", cell.Name, cell.Pcap)
		}
	}
	fmt.Fprintln(w, "\nconns, reset, timeout, connect times: measured by the clients (open loop). SYN rtx, old ACKs, RSTs: capture on the switch port between balancer and backends (gopacket); \"(→RST)\" counts old ACKs followed by an RST to the backend within 100 ms. \"at clients\": the same analysis on the clients' side of the balancer: old ACKs that reached a client, SYNs the clients retransmitted. tslb old_ack: tslb's own detector, for comparison only. balancer CPU: utime+stime of the processes in the lb namespace; \"kernel\": nftables work is softirq, not attributable to a process; softirq s is system-wide (clients and backends included).")
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
