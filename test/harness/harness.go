// Package harness runs the real tslb binary in a lab (package lab): it
// writes a configuration for the lab's topology, starts `tslb run` inside
// the lb namespace, waits until it serves metrics, scrapes them, and stops
// it with SIGTERM. The demo, the end-to-end tests and the benchmarks share
// it.
package harness

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"tslb/config"
	"tslb/test/lab"
)

// MetricsAddr is where tslb serves metrics inside the lb namespace.
const MetricsAddr = "127.0.0.1:9100"

// Options describe one tslb deployment in a lab. Zero values mean the
// defaults noted.
type Options struct {
	Binary      string            // tslb binary (required)
	Dir         string            // where the config and log go (required)
	Weights     []int             // per backend; nil means 1 each
	Scheduler   string            // "" means wrr
	Timestamps  config.TSMode     // "" means passthrough
	FlowsMax    int               // 0 means 65536
	PortMin     uint16            // 0 means 20000
	PortMax     uint16            // 0 means 60999
	LogLevel    string            // "" means info
	Port        uint16            // service port, 0 means 80
	BackendPort uint16            // 0 means 8080
	Exhaustion  config.Exhaustion // "" means wait
	NoISN       bool              // isn_translation: false
	NoRepair    bool              // detector.repair: false
	PcapDir     string            // detector.pcap_dir
	TimeWait    time.Duration     // services[].time_wait, 0 means 60s
	// IPv6 makes the service IPv6 (VIP, backends "[addr]:port", SNAT
	// address and link subnets of the lab's V6 addressing); it needs a
	// dual-stack lab (lab.Config.IPv6), whose primary family is IPv6, and
	// Start refuses a mismatch.
	IPv6 bool
	// ExtraPorts adds one service per entry on the same VIP and backends,
	// named "web-<VIP port>", with the settings of the main one.
	ExtraPorts []lab.PortMap

	HealthCheck *config.HealthCheck // services[].health_check; also puts HealthSource on the lb ns kernel
	// ShutdownTimeout is shutdown.timeout (0: stop at once).
	ShutdownTimeout time.Duration
	// StateFile is state_file ("" = none).
	StateFile string
	// Control enables the control socket at Dir/tslb.sock.
	Control bool
	// Workers is datapath.workers (0 means 2, what CI runs); IO is datapath.io ("" means
	// ring).
	Workers int
	IO      string
	// ControlSocket, if set, is control.socket instead (Control is then
	// implied).
	ControlSocket string
	// NS is the namespace tslb runs in (nil means the lab's lb
	// namespace); Custom, if set, is the configuration to run instead of
	// the one Config builds (ClusterConfig builds a cluster instance's).
	NS     *lab.NS
	Custom *config.Config
	// Wrapper, if set, is a command tslb runs under: Start runs
	// Wrapper... Binary run -c FILE in the lb namespace (such as setpriv
	// dropping to a user with ambient capabilities).
	Wrapper []string
	// Edit, if set, changes the configuration last (after the defaults
	// are applied, before it is written and loaded back): for keys the
	// options above do not cover (syn_proxy, half_open_max,
	// health.passive, ...).
	Edit func(*config.Config)
}

// HealthSource and HealthSource6 are the addresses the harness gives the
// kernel of the lb namespace (on the backend link) for tslb's health
// probes to IPv4 and IPv6 backends.
var (
	HealthSource  = netip.MustParseAddr("198.18.1.99")
	HealthSource6 = netip.MustParseAddr("fd00:5e18:0:1::99")
)

// Config builds the configuration of a tslb deployment on l: one service
// (and one per ExtraPorts entry) of the lab's primary family, which is
// IPv6 in a dual-stack lab (see Options.IPv6).
func Config(l *lab.Lab, o Options) *config.Config {
	if o.Port == 0 {
		o.Port = 80
	}
	if o.BackendPort == 0 {
		o.BackendPort = 8080
	}
	if o.Timestamps == "" {
		o.Timestamps = config.TSPassthrough
	}
	if o.Scheduler == "" {
		o.Scheduler = "wrr"
	}
	if o.FlowsMax == 0 {
		o.FlowsMax = 65536
	}
	if o.PortMin == 0 {
		o.PortMin, o.PortMax = 20000, 60999
	}
	if o.LogLevel == "" {
		o.LogLevel = "info"
	}
	if o.TimeWait == 0 {
		o.TimeWait = 60 * time.Second
	}
	svc := config.Service{Name: "web", VIP: l.VIP, Port: o.Port, Protocol: "tcp", Scheduler: o.Scheduler,
		Timestamps: o.Timestamps, TimeWait: o.TimeWait, Exhaustion: o.Exhaustion, NoISNTranslation: o.NoISN,
		HealthCheck: o.HealthCheck}
	for i, b := range l.Backends {
		w := 1
		if i < len(o.Weights) {
			w = o.Weights[i]
		}
		svc.Backends = append(svc.Backends, config.Backend{Address: netip.AddrPortFrom(b.Addr, o.BackendPort), Weight: w})
	}
	svcs := []config.Service{svc}
	for _, p := range o.ExtraPorts {
		x := svc
		x.Name, x.Port, x.Backends = fmt.Sprintf("web-%d", p.VIPPort), p.VIPPort, nil
		for _, b := range svc.Backends {
			b.Address = netip.AddrPortFrom(b.Address.Addr(), p.BackendPort)
			x.Backends = append(x.Backends, b)
		}
		svcs = append(svcs, x)
	}
	c := &config.Config{
		Links: []config.Link{
			{Name: "clients", Interface: l.LBClientIf, Subnets: []netip.Prefix{l.ClientNet}},
			{Name: "backends", Interface: l.LBBackendIf, Subnets: []netip.Prefix{l.BackendNet}},
		},
		Services: svcs,
		SNAT:     config.SNAT{Addresses: []netip.Addr{l.SNAT}, PortMin: o.PortMin, PortMax: o.PortMax},
		Flows: config.Flows{Max: o.FlowsMax, Timeouts: config.Timeouts{
			Syn: 30 * time.Second, Established: time.Hour, Fin: 2 * time.Minute,
			TimeWait: config.DefaultTWTimeout, Closed: config.DefaultClosedTimeout}},
		Metrics:   config.Metrics{Listen: MetricsAddr},
		Log:       config.Log{Level: o.LogLevel},
		Detector:  config.Detector{PcapDir: o.PcapDir, NoRepair: o.NoRepair},
		Shutdown:  config.Shutdown{Timeout: o.ShutdownTimeout},
		StateFile: o.StateFile,
		Datapath:  config.Datapath{Workers: cmp.Or(o.Workers, 2), IO: o.IO},
	}
	if o.HealthCheck != nil {
		if l.IPv6() {
			c.Health.Source6 = HealthSource6
		} else {
			c.Health.Source = HealthSource
		}
	}
	if o.Control {
		c.Control.Socket = filepath.Join(o.Dir, "tslb.sock")
	}
	if o.ControlSocket != "" {
		c.Control.Socket = o.ControlSocket
	}
	return c
}

// ClusterConfig builds the configuration of cluster instance in of c,
// with o's service settings: the front link (tslb-f0, gateway the
// router), the backend link, the instance's own SNAT address, and a
// cluster section listing every instance (heartbeats every 500 ms, dead
// after 2 s, eBGP to the router). o.StateFile, o.ShutdownTimeout and
// o.Control apply; the control socket is Dir/tslb.sock.
func ClusterConfig(c *lab.Cluster, in *lab.Instance, o Options) *config.Config {
	cfg := Config(c.Lab, o)
	cfg.Links = []config.Link{
		{Name: "front", Interface: lab.ClusterFrontIf, Subnets: []netip.Prefix{lab.ClusterFrontNet}, Gateway: lab.ClusterRouter},
		{Name: "backends", Interface: lab.ClusterBackendIf, Subnets: []netip.Prefix{c.BackendNet}},
	}
	cfg.SNAT.Addresses = []netip.Addr{in.SNAT}
	cl := &config.Cluster{Name: "lab", ID: uint16(in.ID), Link: "front",
		HeartbeatInterval: 500 * time.Millisecond, DeadAfter: 2 * time.Second,
		BGP: config.BGP{ASN: c.InstanceASN(), Peers: []config.BGPPeer{{Address: lab.ClusterRouter, ASN: c.RouterASN(), HoldTime: c.HoldTime()}}}}
	for _, m := range c.Instances {
		cl.Members = append(cl.Members, config.ClusterMember{ID: uint16(m.ID), MAC: m.MAC, Address: m.Addr, SNATAddresses: []netip.Addr{m.SNAT}})
	}
	cfg.Cluster = cl
	return cfg
}

// TSLB is a running tslb process in a lab's lb namespace.
type TSLB struct {
	Lab        *lab.Lab
	Config     *config.Config
	ConfigPath string
	LogPath    string

	cmd      *exec.Cmd
	done     chan struct{}
	waitErr  error
	stopOnce sync.Once
	http     *http.Client
}

// Start writes the configuration (checked by a Marshal/Parse round trip:
// the file is exactly what tslb reads) and starts `tslb run` in l.LB. It
// returns once tslb answers on its metrics address.
func Start(ctx context.Context, l *lab.Lab, o Options) (*TSLB, error) {
	if o.Binary == "" || o.Dir == "" {
		return nil, errors.New("harness: Binary and Dir are required")
	}
	cfg := o.Custom
	if cfg == nil {
		if o.IPv6 != l.IPv6() {
			return nil, fmt.Errorf("harness: Options.IPv6 is %v but the lab's primary family is IPv6: %v (lab.Config.IPv6)", o.IPv6, l.IPv6())
		}
		cfg = Config(l, o)
	}
	ns := o.NS
	if ns == nil {
		ns = l.LB
	}
	cfg.ApplyDefaults()
	if o.Edit != nil {
		o.Edit(cfg)
	}
	if cfg.Health.Source.IsValid() && o.NS == nil {
		out, err := l.LB.Command(ctx, "ip", "addr", "replace", cfg.Health.Source.String()+"/24", "dev", l.LBBackendIf).CombinedOutput()
		if err != nil {
			return nil, fmt.Errorf("harness: health source address: %v: %s", err, out)
		}
	}
	if cfg.Health.Source6.IsValid() && o.NS == nil {
		out, err := l.LB.Command(ctx, "ip", "-6", "addr", "replace", cfg.Health.Source6.String()+"/64", "dev", l.LBBackendIf, "nodad").CombinedOutput()
		if err != nil {
			return nil, fmt.Errorf("harness: IPv6 health source address: %v: %s", err, out)
		}
	}
	data, err := cfg.Marshal()
	if err != nil {
		return nil, fmt.Errorf("harness: marshal config: %w", err)
	}
	path := filepath.Join(o.Dir, "tslb.yaml")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		return nil, err
	}
	if cfg, err = config.Load(path); err != nil {
		return nil, fmt.Errorf("harness: generated config does not load: %w", err)
	}
	logPath := filepath.Join(o.Dir, "tslb.log")
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	argv := append(append(slices.Clone(o.Wrapper), o.Binary), "run", "-c", path)
	cmd := ns.Command(context.Background(), argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("harness: start tslb: %w", err)
	}
	t := &TSLB{Lab: l, Config: cfg, ConfigPath: path, LogPath: logPath, cmd: cmd, done: make(chan struct{}),
		http: ns.HTTPClient(false, 2*time.Second)}
	go func() {
		t.waitErr = cmd.Wait()
		logf.Close()
		close(t.done)
	}()
	deadline := time.Now().Add(15 * time.Second)
	for {
		if _, err := t.get(ctx, "/healthz"); err == nil {
			return t, nil
		}
		select {
		case <-t.done:
			return nil, fmt.Errorf("harness: tslb exited during start (%v): %s", t.waitErr, t.Log())
		case <-ctx.Done():
			t.Kill()
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Kill()
			return nil, fmt.Errorf("harness: tslb not ready after 15 s: %s", t.Log())
		}
	}
}

func (t *TSLB) get(ctx context.Context, path string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, "GET", "http://"+MetricsAddr+path, nil)
	if err != nil {
		return nil, err
	}
	resp, err := t.http.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		return nil, fmt.Errorf("harness: GET %s: %s", path, resp.Status)
	}
	return body, err
}

// WriteConfig replaces the configuration file with cfg (for reload tests).
func (t *TSLB) WriteConfig(cfg *config.Config) error {
	data, err := cfg.Marshal()
	if err != nil {
		return err
	}
	return os.WriteFile(t.ConfigPath, data, 0o644)
}

// WriteRaw replaces the configuration file with data as it is (for invalid
// reloads).
func (t *TSLB) WriteRaw(data []byte) error { return os.WriteFile(t.ConfigPath, data, 0o644) }

// Signal sends sig to tslb.
func (t *TSLB) Signal(sig os.Signal) error { return t.cmd.Process.Signal(sig) }

// Pid is tslb's process id.
func (t *TSLB) Pid() int { return t.cmd.Process.Pid }

// Log returns what tslb wrote so far (last 4 KiB).
func (t *TSLB) Log() string {
	b, _ := os.ReadFile(t.LogPath)
	if len(b) > 4096 {
		b = b[len(b)-4096:]
	}
	return string(b)
}

// Metrics scrapes tslb and returns every sample as "name{l1="v1",...}" ->
// value, labels sorted by name (the Prometheus text form).
func (t *TSLB) Metrics(ctx context.Context) (Samples, error) {
	body, err := t.get(ctx, "/metrics")
	if err != nil {
		return nil, err
	}
	return ParseMetrics(body)
}

// Status returns tslb's /status.json body.
func (t *TSLB) Status(ctx context.Context) ([]byte, error) { return t.get(ctx, "/status.json") }

// RawMetrics returns tslb's /metrics body as served (Prometheus text
// format, # HELP and # TYPE lines included).
func (t *TSLB) RawMetrics(ctx context.Context) ([]byte, error) { return t.get(ctx, "/metrics") }

// Samples maps a sample's name and labels to its value.
type Samples map[string]float64

// Sum adds every sample of metric name whose labels include all of match
// (given as "k=v" strings).
func (s Samples) Sum(name string, match ...string) float64 {
	var sum float64
	for k, v := range s {
		n, labels, _ := strings.Cut(k, "{")
		if n != name {
			continue
		}
		ok := true
		for _, m := range match {
			kv := strings.SplitN(m, "=", 2)
			if !strings.Contains(labels, kv[0]+`="`+kv[1]+`"`) {
				ok = false
				break
			}
		}
		if ok {
			sum += v
		}
	}
	return sum
}

// ParseMetrics parses the Prometheus text format.
func ParseMetrics(body []byte) (Samples, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	out := make(Samples)
	for name, f := range fams {
		for _, m := range f.GetMetric() {
			var sb strings.Builder
			sb.WriteString(name)
			if len(m.GetLabel()) > 0 {
				sb.WriteByte('{')
				for i, l := range m.GetLabel() {
					if i > 0 {
						sb.WriteByte(',')
					}
					fmt.Fprintf(&sb, "%s=%q", l.GetName(), l.GetValue())
				}
				sb.WriteByte('}')
			}
			out[sb.String()] = value(m)
		}
	}
	return out, nil
}

func value(m *dto.Metric) float64 {
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	case m.Untyped != nil:
		return m.Untyped.GetValue()
	}
	return 0
}

// Stop sends SIGTERM and waits up to timeout; it returns tslb's exit code
// (-1 if it had to be killed).
func (t *TSLB) Stop(timeout time.Duration) (int, error) {
	t.stopOnce.Do(func() { t.cmd.Process.Signal(syscall.SIGTERM) })
	select {
	case <-t.done:
	case <-time.After(timeout):
		t.Kill()
		return -1, fmt.Errorf("harness: tslb did not stop within %v", timeout)
	}
	if t.cmd.ProcessState == nil {
		return -1, t.waitErr
	}
	return t.cmd.ProcessState.ExitCode(), nil
}

// Kill stops tslb at once and waits for it.
func (t *TSLB) Kill() {
	t.cmd.Process.Kill()
	<-t.done
}

// Exited reports whether tslb has exited.
func (t *TSLB) Exited() bool {
	select {
	case <-t.done:
		return true
	default:
		return false
	}
}

// BuildBinary builds ./cmd/tslb of the module rooted at root into dir.
func BuildBinary(root, dir string) (string, error) {
	out := filepath.Join(dir, "tslb")
	cmd := exec.Command("go", "build", "-o", out, "./cmd/tslb")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("harness: go build: %v: %s", err, b)
	}
	return out, nil
}
