package config_test

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"tslb/config"
)

// minimal is the smallest valid configuration; tests edit it.
const minimal = `links:
  - interface: tslb-c0
    subnets: [198.18.0.0/24]
  - interface: tslb-b0
    subnets: [198.18.1.0/24]
services:
  - name: web
    vip: 198.18.0.100
    port: 80
    backends:
      - address: 198.18.1.11:8080
snat:
  addresses: [198.18.1.100]
`

// mustParse parses src and fails the test on any error.
func mustParse(t *testing.T, src string) *config.Config {
	t.Helper()
	c, err := config.Parse([]byte(src), "test.yaml")
	if err != nil {
		t.Fatalf("Parse: %v\n--- input:\n%s", err, src)
	}
	return c
}

// parseErrors parses src, requires it to fail with Errors, and returns them.
func parseErrors(t *testing.T, src string) config.Errors {
	t.Helper()
	c, err := config.Parse([]byte(src), "test.yaml")
	if err == nil {
		t.Fatalf("Parse succeeded, want errors\n--- input:\n%s", src)
	}
	if c != nil {
		t.Errorf("Parse returned a Config together with an error")
	}
	var errs config.Errors
	if !errors.As(err, &errs) {
		t.Fatalf("Parse error is %T, want config.Errors: %v", err, err)
	}
	if len(errs) == 0 {
		t.Fatalf("Parse returned an empty Errors")
	}
	return errs
}

// hasError reports whether errs has an error for key at line whose message
// contains msg.
func hasError(errs config.Errors, key string, line int, msg string) bool {
	for _, e := range errs {
		if e.Key == key && e.Line == line && strings.Contains(e.Msg, msg) {
			return true
		}
	}
	return false
}

// sameConfig compares every exported field of a and b except Source.
func sameConfig(t *testing.T, a, b *config.Config) {
	t.Helper()
	pairs := []struct {
		name string
		x, y any
	}{
		{"Links", a.Links, b.Links},
		{"Services", a.Services, b.Services},
		{"SNAT", a.SNAT, b.SNAT},
		{"Flows", a.Flows, b.Flows},
		{"Metrics", a.Metrics, b.Metrics},
		{"Log", a.Log, b.Log},
		{"Detector", a.Detector, b.Detector},
		{"Health", a.Health, b.Health},
		{"Control", a.Control, b.Control},
		{"Shutdown", a.Shutdown, b.Shutdown},
		{"StateFile", a.StateFile, b.StateFile},
		{"Cluster", a.Cluster, b.Cluster},
	}
	for _, p := range pairs {
		if !reflect.DeepEqual(p.x, p.y) {
			t.Errorf("%s differ:\n got %+v\nwant %+v", p.name, p.x, p.y)
		}
	}
}

func TestExampleParses(t *testing.T) {
	c, err := config.Load("example.yaml")
	if err != nil {
		t.Fatalf("Load(example.yaml): %v", err)
	}
	if c.Source != "example.yaml" {
		t.Errorf("Source = %q", c.Source)
	}
	if errs := c.Validate(); errs != nil {
		t.Errorf("Validate on a parsed config: %v", errs)
	}
	want := []config.Link{
		{Name: "clients", Interface: "tslb-c0", Subnets: []netip.Prefix{netip.MustParsePrefix("198.18.0.0/24")}},
		{Name: "backends", Interface: "tslb-b0", Subnets: []netip.Prefix{netip.MustParsePrefix("198.18.1.0/24")}},
	}
	if !reflect.DeepEqual(c.Links, want) {
		t.Errorf("Links = %+v, want %+v", c.Links, want)
	}
	if len(c.Services) != 1 {
		t.Fatalf("got %d services, want 1", len(c.Services))
	}
	s := c.Services[0]
	if s.Name != "web" || s.VIP != netip.MustParseAddr("198.18.0.100") || s.Port != 80 ||
		s.Scheduler != "wrr" || s.Protocol != "tcp" || s.Timestamps != config.TSPassthrough || s.TimeWait != time.Minute {
		t.Errorf("service = %+v", s)
	}
	wantB := []config.Backend{
		{Address: netip.MustParseAddrPort("198.18.1.11:8080"), Weight: 1},
		{Address: netip.MustParseAddrPort("198.18.1.12:8080"), Weight: 2},
		{Address: netip.MustParseAddrPort("198.18.1.13:8080"), Weight: 3},
	}
	if !reflect.DeepEqual(s.Backends, wantB) {
		t.Errorf("Backends = %+v, want %+v", s.Backends, wantB)
	}
	if s.HealthCheck == nil || s.HealthCheck.Type != "http" || s.HealthCheck.Path != "/healthz" {
		t.Errorf("HealthCheck = %+v", s.HealthCheck)
	}
	wantSNAT := config.SNAT{Addresses: []netip.Addr{netip.MustParseAddr("198.18.1.100")}, PortMin: 20000, PortMax: 60999}
	if !reflect.DeepEqual(c.SNAT, wantSNAT) {
		t.Errorf("SNAT = %+v, want %+v", c.SNAT, wantSNAT)
	}
	if c.Metrics.Listen != "127.0.0.1:9100" {
		t.Errorf("Metrics.Listen = %q", c.Metrics.Listen)
	}
	if s.NoISNTranslation || s.Exhaustion != config.ExhaustWait || s.ExhaustionWait != time.Second {
		t.Errorf("ISN/exhaustion = %v %q %v", s.NoISNTranslation, s.Exhaustion, s.ExhaustionWait)
	}
	if c.Flows.Timeouts.TimeWait != 2*time.Second || c.Flows.Timeouts.Closed != 5*time.Second {
		t.Errorf("Timeouts = %+v", c.Flows.Timeouts)
	}
	if want := (config.Detector{PcapMaxFiles: 100}); c.Detector != want {
		t.Errorf("Detector = %+v, want %+v", c.Detector, want)
	}
	if c.Health.Source.IsValid() || c.Control.Socket != "/run/tslb.sock" || c.Shutdown.Timeout != 30*time.Second || c.StateFile != "" {
		t.Errorf("Health/Control/Shutdown/StateFile = %+v %+v %+v %q", c.Health, c.Control, c.Shutdown, c.StateFile)
	}
}

// wantRE matches the first line of every file in testdata/bad; msgRE an
// optional second line, text the error's message must contain.
var (
	wantRE = regexp.MustCompile(`^# want: (\S+) line (\d+)$`)
	msgRE  = regexp.MustCompile(`^# msg: (.+)$`)
)

func TestBadFiles(t *testing.T) {
	files, err := filepath.Glob("testdata/bad/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	// Each error kind the brief lists has a file; a missing one fails.
	required := []string{
		"unknown_key", "wrong_type", "bad_ip", "bad_port", "missing_vip", "no_backends",
		"all_weights_zero", "port_range_low", "port_range_reversed", "vip_equals_snat",
		"duplicate_snat", "duplicate_service", "duplicate_vip_port", "bad_duration",
		"bad_timestamps_mode", "overlapping_subnets", "vip_off_link", "yaml_syntax",
		"empty_file", "bad_scheduler",
		"bad_isn_translation", "bad_exhaustion", "exhaustion_wait_range",
		"exhaustion_wait_not_wait", "bad_repair", "pcap_max_files_range",
		"health_source_vip", "health_source_snat", "health_source_backend",
		"health_source_off_link", "health_source_not_ipv4",
		"control_socket_relative", "control_socket_too_long",
		"shutdown_timeout_range", "state_file_relative",
		"bad_drain", "all_backends_drained", "bad_log_format",
		"cluster_snat_mismatch", "cluster_snat_overlap", "cluster_duplicate_id", "cluster_duplicate_mac",
		"cluster_duplicate_address", "cluster_vip_is_member", "cluster_bad_asn", "cluster_peer_asn_zero",
		"cluster_id_not_member", "cluster_bad_mac", "cluster_dead_after_short",
		"ipv6_backend_family", "ipv6_vip_no_snat", "ipv6_vip_off_link", "ipv6_backend_off_link",
		"ipv6_link_local_vip", "ipv6_zone", "ipv6_mapped_backend", "ipv6_subnet_link_local",
		"ipv6_overlapping_subnets", "ipv6_gateway_two_v4", "ipv6_gateway_off_subnet",
		"ipv6_two_gateways", "ipv6_health_source_two_v6", "ipv6_health_source_vip",
		"ipv6_health_source_off_link", "ipv6_unquoted_backend", "ipv6_backend_no_brackets",
		"ipv6_cluster_vip",
	}
	have := map[string]bool{}
	for _, f := range files {
		have[strings.TrimSuffix(filepath.Base(f), ".yaml")] = true
	}
	for _, r := range required {
		if !have[r] {
			t.Errorf("testdata/bad/%s.yaml is missing", r)
		}
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			first, rest, _ := bytes.Cut(data, []byte("\n"))
			second, _, _ := bytes.Cut(rest, []byte("\n"))
			var msg string
			if mm := msgRE.FindSubmatch(second); mm != nil {
				msg = string(mm[1])
			}
			m := wantRE.FindSubmatch(first)
			if m == nil {
				t.Fatalf("first line %q is not `# want: KEY line N`", first)
			}
			key := string(m[1])
			if key == `""` {
				key = ""
			}
			line, _ := strconv.Atoi(string(m[2]))

			c, err := config.Load(f)
			if c != nil || err == nil {
				t.Fatalf("Load succeeded, want an error at %s line %d", key, line)
			}
			var errs config.Errors
			if !errors.As(err, &errs) {
				t.Fatalf("error is %T, want config.Errors: %v", err, err)
			}
			found := false
			for _, e := range errs {
				if e.File != f {
					t.Errorf("error %q has File %q, want %q", e, e.File, f)
				}
				found = found || (e.Key == key && e.Line == line && strings.Contains(e.Msg, msg))
			}
			if !found {
				t.Errorf("no error for key %q at line %d containing %q; got:\n%v", key, line, msg, err)
			}
			prefix := fmt.Sprintf("%s:%d: ", f, line)
			if key != "" {
				prefix += key + ": "
			}
			if !strings.Contains(err.Error(), prefix) {
				t.Errorf("Error() lacks %q:\n%s", prefix, err)
			}
		})
	}
}

func TestDefaults(t *testing.T) {
	c := mustParse(t, `links:
  - interface: tslb-c0
    subnets: [198.18.0.0/24]
  - interface: tslb-b0
    subnets: [198.18.1.0/24]
services:
  - name: web
    vip: 198.18.0.100
    port: 80
    backends:
      - address: 198.18.1.11:8080
    health_check:
      type: http
  - name: ssh
    vip: 198.18.0.100
    port: 22
    backends:
      - address: 198.18.1.11:22
    health_check:
      type: tcp
snat:
  addresses: [198.18.1.100]
`)
	if c.Links[0].Name != "tslb-c0" || c.Links[1].Name != "tslb-b0" {
		t.Errorf("link names = %q, %q; want the interface names", c.Links[0].Name, c.Links[1].Name)
	}
	if c.Links[0].Gateway.IsValid() {
		t.Errorf("Gateway = %v, want none", c.Links[0].Gateway)
	}
	s := c.Services[0]
	if s.Protocol != "tcp" || s.Scheduler != "wrr" || s.Timestamps != config.TSPassthrough || s.TimeWait != 60*time.Second {
		t.Errorf("service defaults = %q %q %q %v", s.Protocol, s.Scheduler, s.Timestamps, s.TimeWait)
	}
	for i, s := range c.Services {
		if s.NoISNTranslation || s.Exhaustion != config.ExhaustWait || s.ExhaustionWait != time.Second {
			t.Errorf("services[%d] ISN/exhaustion defaults = %v %q %v, want false wait 1s", i, s.NoISNTranslation, s.Exhaustion, s.ExhaustionWait)
		}
	}
	if s.Backends[0].Weight != 1 || s.Backends[0].Drain {
		t.Errorf("default weight, drain = %d, %v; want 1, false", s.Backends[0].Weight, s.Backends[0].Drain)
	}
	wantHTTP := config.HealthCheck{Type: "http", Interval: 2 * time.Second, Timeout: time.Second, Rise: 2, Fall: 3, Path: "/", ExpectStatus: 200}
	if *s.HealthCheck != wantHTTP {
		t.Errorf("http health check = %+v, want %+v", *s.HealthCheck, wantHTTP)
	}
	wantTCP := config.HealthCheck{Type: "tcp", Interval: 2 * time.Second, Timeout: time.Second, Rise: 2, Fall: 3}
	if *c.Services[1].HealthCheck != wantTCP {
		t.Errorf("tcp health check = %+v, want %+v", *c.Services[1].HealthCheck, wantTCP)
	}
	if c.SNAT.PortMin != 20000 || c.SNAT.PortMax != 60999 {
		t.Errorf("port range = %d-%d, want 20000-60999", c.SNAT.PortMin, c.SNAT.PortMax)
	}
	wantFlows := config.Flows{Max: 1048576, HalfOpenMax: 65536, Timeouts: config.Timeouts{
		Syn: 5 * time.Second, Established: time.Hour, Fin: 2 * time.Minute, TimeWait: 2 * time.Second, Closed: 5 * time.Second,
	}}
	if c.Flows != wantFlows {
		t.Errorf("Flows = %+v, want %+v", c.Flows, wantFlows)
	}
	if c.Metrics.Listen != "127.0.0.1:9100" || c.Log != (config.Log{Level: "info", Format: "text"}) || c.Detector != (config.Detector{PcapMaxFiles: 100}) {
		t.Errorf("Metrics/Log/Detector = %+v %+v %+v", c.Metrics, c.Log, c.Detector)
	}

	if c.Health.Source.IsValid() || c.Control.Socket != "/run/tslb.sock" ||
		c.Shutdown.Timeout != 30*time.Second || c.StateFile != "" {
		t.Errorf("Health/Control/Shutdown/StateFile = %+v %+v %+v %q", c.Health, c.Control, c.Shutdown, c.StateFile)
	}

	// An explicit "" disables metrics rather than selecting the default.
	c = mustParse(t, minimal+"metrics:\n  listen: \"\"\n")
	if c.Metrics.Listen != "" {
		t.Errorf("listen \"\" gave %q", c.Metrics.Listen)
	}
	// The same for the control socket, and 0s stops at once.
	c = mustParse(t, minimal+"control:\n  socket: \"\"\nshutdown:\n  timeout: 0s\nstate_file: \"\"\n")
	if c.Control.Socket != "" || c.Shutdown.Timeout != 0 || c.StateFile != "" {
		t.Errorf("socket \"\", timeout 0s, state_file \"\" gave %q %v %q", c.Control.Socket, c.Shutdown.Timeout, c.StateFile)
	}
	// Null values and empty mappings keep the defaults.
	c = mustParse(t, minimal+"control:\n  socket:\nshutdown: {}\nhealth:\nstate_file:\n")
	if c.Control.Socket != "/run/tslb.sock" || c.Shutdown.Timeout != 30*time.Second || c.Health.Source.IsValid() || c.StateFile != "" {
		t.Errorf("null values: %+v %+v %+v %q", c.Control, c.Shutdown, c.Health, c.StateFile)
	}
	// A null value is the same as an absent key.
	c = mustParse(t, minimal+"log:\n  level:\nflows:\n")
	if c.Log.Level != "info" || c.Flows.Max != 1048576 {
		t.Errorf("null values: level %q, max %d", c.Log.Level, c.Flows.Max)
	}
}

func TestApplyDefaults(t *testing.T) {
	c := goConfig()
	c.Services[0].HealthCheck = &config.HealthCheck{Type: "http"}
	c.ApplyDefaults()
	if errs := c.Validate(); errs != nil {
		t.Fatalf("Validate after ApplyDefaults: %v", errs)
	}
	parsed := mustParse(t, minimal)
	if c.Flows != parsed.Flows || c.SNAT.PortMin != parsed.SNAT.PortMin || c.Log != parsed.Log {
		t.Errorf("ApplyDefaults differs from Parse's defaults: %+v %+v", c.Flows, c.SNAT)
	}
	if c.Detector.PcapMaxFiles != parsed.Detector.PcapMaxFiles || c.Detector.NoRepair != parsed.Detector.NoRepair {
		t.Errorf("Detector = %+v, parsed %+v", c.Detector, parsed.Detector)
	}
	s, ps := c.Services[0], parsed.Services[0]
	if s.NoISNTranslation != ps.NoISNTranslation || s.Exhaustion != ps.Exhaustion || s.ExhaustionWait != ps.ExhaustionWait {
		t.Errorf("service ISN/exhaustion = %v %q %v, parsed %v %q %v",
			s.NoISNTranslation, s.Exhaustion, s.ExhaustionWait, ps.NoISNTranslation, ps.Exhaustion, ps.ExhaustionWait)
	}
	if hc := c.Services[0].HealthCheck; hc.Path != "/" || hc.ExpectStatus != 200 || hc.Rise != 2 {
		t.Errorf("health check = %+v", hc)
	}
	if c.Services[0].Backends[1].Weight != 0 {
		t.Errorf("ApplyDefaults changed a weight-0 (drained) backend")
	}
	// Zero values that mean something are left alone.
	if c.Control.Socket != "" || c.Shutdown.Timeout != 0 || c.StateFile != "" || c.Health.Source.IsValid() || c.Services[0].Backends[0].Drain {
		t.Errorf("ApplyDefaults set Control/Shutdown/StateFile/Health/Drain: %+v %+v %q %+v", c.Control, c.Shutdown, c.StateFile, c.Health)
	}
	// ExhaustionWait is defaulted only for the wait policy.
	c = goConfig()
	c.Services[0].Exhaustion = config.ExhaustReject
	c.ApplyDefaults()
	if c.Services[0].ExhaustionWait != 0 {
		t.Errorf("ApplyDefaults set ExhaustionWait %v for exhaustion reject", c.Services[0].ExhaustionWait)
	}
	if errs := c.Validate(); errs != nil {
		t.Errorf("Validate with exhaustion reject: %v", errs)
	}
}

func TestPortRangeForms(t *testing.T) {
	for _, tt := range []struct {
		name, value string
		lo, hi      uint16
		errMsg      string // "" means valid
	}{
		{name: "string", value: `"20000-30000"`, lo: 20000, hi: 30000},
		{name: "plain", value: `1024-65535`, lo: 1024, hi: 65535},
		{name: "spaces", value: `"2000 - 3000"`, lo: 2000, hi: 3000},
		{name: "list", value: `[20000, 30000]`, lo: 20000, hi: 30000},
		{name: "block list", value: "\n    - 40000\n    - 40000", lo: 40000, hi: 40000},
		{name: "low", value: `1000-2000`, errMsg: "below 1024"},
		{name: "reversed", value: `[3000, 2000]`, errMsg: "reversed"},
		{name: "too high", value: `2000-70000`, errMsg: "each port 0..65535"},
		{name: "one item", value: `[2000]`, errMsg: "list of 1 items"},
		{name: "three items", value: `[2000, 3000, 4000]`, errMsg: "list of 3 items"},
		{name: "strings in list", value: `["2000", "3000"]`, errMsg: "expected an integer"},
		{name: "single int", value: `2000`, errMsg: "expected"},
		{name: "no dash", value: `abc`, errMsg: "expected"},
		{name: "mapping", value: `{lo: 1, hi: 2}`, errMsg: "got a mapping"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			src := minimal + "  port_range: " + tt.value + "\n"
			if tt.errMsg == "" {
				c := mustParse(t, src)
				if c.SNAT.PortMin != tt.lo || c.SNAT.PortMax != tt.hi {
					t.Errorf("range = %d-%d, want %d-%d", c.SNAT.PortMin, c.SNAT.PortMax, tt.lo, tt.hi)
				}
				return
			}
			errs := parseErrors(t, src)
			found := false
			for _, e := range errs {
				found = found || (strings.HasPrefix(e.Key, "snat.port_range") && e.Line == 14 && strings.Contains(e.Msg, tt.errMsg))
			}
			if !found {
				t.Errorf("want an error on snat.port_range line 14 containing %q, got:\n%v", tt.errMsg, errs)
			}
		})
	}
}

// goConfig builds a valid configuration in Go, relying on no defaults
// except those ApplyDefaults fills.
func goConfig() *config.Config {
	return &config.Config{
		Source: "go",
		Links: []config.Link{
			{Name: "clients", Interface: "tslb-c0", Subnets: []netip.Prefix{netip.MustParsePrefix("198.18.0.0/24")}},
			{Interface: "tslb-b0", Subnets: []netip.Prefix{netip.MustParsePrefix("198.18.1.0/24")}, Gateway: netip.MustParseAddr("198.18.1.1")},
		},
		Services: []config.Service{{
			Name: "web", VIP: netip.MustParseAddr("198.18.0.100"), Port: 80,
			Backends: []config.Backend{
				{Address: netip.MustParseAddrPort("198.18.1.11:8080"), Weight: 5},
				{Address: netip.MustParseAddrPort("203.0.113.7:8080"), Weight: 0},
			},
		}},
		SNAT:     config.SNAT{Addresses: []netip.Addr{netip.MustParseAddr("198.18.1.100"), netip.MustParseAddr("198.18.1.101")}},
		Metrics:  config.Metrics{Listen: ""},
		Detector: config.Detector{PcapDir: "/tmp/pcaps"},
	}
}

func TestRoundTrip(t *testing.T) {
	example, err := config.Load("example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	goCfg := goConfig()
	goCfg.ApplyDefaults()
	odd := mustParse(t, strings.Replace(minimal, "    port: 80\n", `    port: 80
    scheduler: rr
    timestamps: rewrite
    time_wait: 1m30s
    health_check:
      type: tcp
      interval: 1500ms
      timeout: 250ms
      rise: 1
      fall: 100
    isn_translation: false
    exhaustion: reuse
`, 1)+"flows:\n  max: 7\n  timeouts:\n    established: 25h\n    closed: 1ns\n"+
		"detector:\n  pcap_max_files: 100000\n  repair: false\n")
	if s := odd.Services[0]; !s.NoISNTranslation || s.Exhaustion != config.ExhaustReuse || s.ExhaustionWait != 0 ||
		!odd.Detector.NoRepair || odd.Detector.PcapMaxFiles != 100000 {
		t.Fatalf("odd: service %+v, detector %+v", s, odd.Detector)
	}
	wait := mustParse(t, strings.Replace(minimal, "    port: 80\n", "    port: 80\n    exhaustion_wait: 10ms\n", 1)+
		"detector:\n  pcap_dir: /var/lib/tslb\n  pcap_max_files: 1\n  repair: true\n")
	if s := wait.Services[0]; s.Exhaustion != config.ExhaustWait || s.ExhaustionWait != 10*time.Millisecond ||
		wait.Detector != (config.Detector{PcapDir: "/var/lib/tslb", PcapMaxFiles: 1}) {
		t.Fatalf("wait: service %+v, detector %+v", s, wait.Detector)
	}
	reject := mustParse(t, strings.Replace(minimal, "    port: 80\n", "    port: 80\n    exhaustion: reject\n    isn_translation: true\n", 1))
	// The new keys at non-default values: a drained backend next to a live
	// one, a probe source, no control socket, stop at once, a state file.
	process := mustParse(t, strings.Replace(minimal, "      - address: 198.18.1.11:8080\n",
		"      - address: 198.18.1.11:8080\n        drain: true\n      - address: 198.18.1.12:8080\n        drain: false\n", 1)+
		"health:\n  source: 198.18.1.2\ncontrol:\n  socket: \"\"\nshutdown:\n  timeout: 0s\nstate_file: /var/lib/tslb/ledger\n")
	if b := process.Services[0].Backends; !b[0].Drain || b[1].Drain || process.Health.Source != netip.MustParseAddr("198.18.1.2") ||
		process.Control.Socket != "" || process.Shutdown.Timeout != 0 || process.StateFile != "/var/lib/tslb/ledger" {
		t.Fatalf("process: backends %+v, %+v %+v %+v %q", b, process.Health, process.Control, process.Shutdown, process.StateFile)
	}
	longStop := mustParse(t, minimal+"control:\n  socket: /tmp/t.sock\nshutdown:\n  timeout: 1h\n")
	if longStop.Control.Socket != "/tmp/t.sock" || longStop.Shutdown.Timeout != time.Hour {
		t.Fatalf("longStop: %+v %+v", longStop.Control, longStop.Shutdown)
	}
	goOdd := goConfig()
	goOdd.Services[0].NoISNTranslation = true
	goOdd.Services[0].Exhaustion = config.ExhaustReject
	goOdd.Detector.NoRepair = true
	goOdd.ApplyDefaults()

	for name, c := range map[string]*config.Config{
		"example": example, "go": goCfg, "odd": odd, "wait": wait, "reject": reject, "go odd": goOdd,
		"process": process, "long stop": longStop,
	} {
		t.Run(name, func(t *testing.T) {
			out, err := c.Marshal()
			if err != nil {
				t.Fatalf("Marshal: %v", err)
			}
			back, err := config.Parse(out, "marshalled")
			if err != nil {
				t.Fatalf("Parse(Marshal()): %v\n%s", err, out)
			}
			sameConfig(t, back, c)
			// The booleans are written only when false.
			if got, want := bytes.Contains(out, []byte("isn_translation: false")), c.Services[0].NoISNTranslation; got != want {
				t.Errorf("isn_translation: false written = %v, want %v:\n%s", got, want, out)
			}
			if got, want := bytes.Contains(out, []byte("repair: false")), c.Detector.NoRepair; got != want {
				t.Errorf("repair: false written = %v, want %v:\n%s", got, want, out)
			}
			drained := false
			for _, b := range c.Services[0].Backends {
				drained = drained || b.Drain
			}
			if got := bytes.Contains(out, []byte("drain: true")); got != drained {
				t.Errorf("drain: true written = %v, want %v:\n%s", got, drained, out)
			}
			if bytes.Contains(bytes.ReplaceAll(out, []byte("drain: true"), nil), []byte(": true")) || bytes.Contains(out, []byte("drain: false")) {
				t.Errorf("a default boolean was written:\n%s", out)
			}
			// Marshal is deterministic.
			again, err := back.Marshal()
			if err != nil || !bytes.Equal(again, out) {
				t.Errorf("second Marshal differs (err %v):\n%s\n---\n%s", err, out, again)
			}
		})
	}
}

func TestMarshalWithoutDefaults(t *testing.T) {
	// A Config built in Go without ApplyDefaults marshals to a file that
	// Parse completes with the defaults.
	c := goConfig()
	out, err := c.Marshal()
	if err != nil {
		t.Fatalf("Marshal: %v", err)
	}
	back, err := config.Parse(out, "x")
	if err != nil {
		t.Fatal(err)
	}
	c.ApplyDefaults()
	sameConfig(t, back, c)
}

func TestMarshalRejectsInvalid(t *testing.T) {
	c := goConfig()
	c.ApplyDefaults()
	c.SNAT.Addresses = append(c.SNAT.Addresses, c.Services[0].VIP)
	if _, err := c.Marshal(); err == nil || !strings.Contains(err.Error(), "equals snat.addresses[2]") {
		t.Errorf("Marshal of an invalid config: err = %v", err)
	}
}

func TestMultipleErrors(t *testing.T) {
	src := `links:
  - interface: tslb-c0
    subnets: [198.18.0.0/24]
    mtu: 1500
services:
  - name: Web
    vip: 198.18.0.100
    port: 0x1FFFF
    scheduler: random
    backends:
      - address: 198.18.0.11:8080
        weight: 0
snat:
  addresses: [198.18.0.100]
  port_range: 80-90
flows:
  timeouts:
    syn: 0s
log:
  level: loud
`
	errs := parseErrors(t, src)
	want := []struct {
		key  string
		line int
		msg  string
	}{
		{"links[0].mtu", 4, "unknown key"},
		{"services[0].name", 6, "must match"},
		{"services[0].vip", 7, "equals snat.addresses[0]"},
		{"services[0].port", 8, "out of range"},
		{"services[0].scheduler", 9, "unknown scheduler"},
		{"services[0].backends", 10, "weight 0"},
		{"snat.port_range", 15, "below 1024"},
		{"flows.timeouts.syn", 18, "must be positive"},
		{"log.level", 20, "unknown level"},
	}
	for _, w := range want {
		if !hasError(errs, w.key, w.line, w.msg) {
			t.Errorf("missing error %s line %d %q", w.key, w.line, w.msg)
		}
	}
	if len(errs) != len(want) {
		t.Errorf("got %d errors, want %d:\n%v", len(errs), len(want), errs)
	}
	for i := 1; i < len(errs); i++ {
		if errs[i].Line < errs[i-1].Line {
			t.Errorf("errors not sorted by line:\n%v", errs)
		}
	}
	if n := strings.Count(errs.Error(), "\n"); n != len(errs)-1 {
		t.Errorf("Errors.Error() has %d newlines, want %d", n, len(errs)-1)
	}
}

func TestKeyOrderIrrelevant(t *testing.T) {
	reordered := `# same as example.yaml, every mapping in a different key order
state_file: ""
shutdown: {timeout: 30s}
control: {socket: /run/tslb.sock}
detector: {repair: true, pcap_max_files: 100, pcap_dir: ""}
log: {level: info}
metrics: {listen: 127.0.0.1:9100}
flows:
  timeouts: {closed: 5s, time_wait: 2s, fin: 2m, established: 1h, syn: 5s}
  max: 1048576
snat:
  port_range: [20000, 60999]
  addresses: [198.18.1.100]
services:
  - backends:
      - weight: 1
        address: 198.18.1.11:8080
      - {weight: 2, address: 198.18.1.12:8080}
      - weight: 3
        address: 198.18.1.13:8080
    health_check:
      expect_status: 200
      path: /healthz
      fall: 3
      rise: 2
      timeout: 1s
      interval: 2s
      type: http
    exhaustion_wait: 1s
    exhaustion: wait
    isn_translation: true
    time_wait: 60s
    timestamps: passthrough
    scheduler: wrr
    protocol: tcp
    port: 80
    vip: 198.18.0.100
    name: web
links:
  - subnets: [198.18.0.0/24]
    interface: tslb-c0
    name: clients
  - {subnets: [198.18.1.0/24], interface: tslb-b0, name: backends}
`
	example, err := config.Load("example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	sameConfig(t, mustParse(t, reordered), example)
}

func TestWrongTypes(t *testing.T) {
	for _, tt := range []struct {
		name, from, to string
		key            string
		line           int
		msg            string
	}{
		{"port string", "port: 80", `port: "80"`, "services[0].port", 9, "expected an integer, got string"},
		{"port float", "port: 80", `port: 80.5`, "services[0].port", 9, "got number"},
		{"port list", "port: 80", `port: [80]`, "services[0].port", 9, "got a list"},
		{"port too big", "port: 80", `port: 65536`, "services[0].port", 9, "out of range"},
		{"port huge", "port: 80", `port: 99999999999999999999999`, "services[0].port", 9, "integer"},
		{"name int", "name: web", `name: 7`, "services[0].name", 7, "expected a string, got integer"},
		{"name bool", "name: web", `name: true`, "services[0].name", 7, "expected a string, got boolean"},
		{"vip int", "vip: 198.18.0.100", `vip: 3323068516`, "services[0].vip", 8, "expected a string"},
		{"vip ipv6 without ipv6 subnets", "vip: 198.18.0.100", `vip: "2001:db8::1"`, "services[0].vip", 8, "not inside any link's subnets (no link has an IPv6 subnet)"},
		{"vip mapped", "vip: 198.18.0.100", `vip: "::ffff:198.18.0.100"`, "services[0].vip", 8, "IPv4-mapped IPv6 address; use the IPv4 form 198.18.0.100"},
		{"vip multicast", "vip: 198.18.0.100", `vip: 224.0.0.1`, "services[0].vip", 8, "unicast"},
		{"backends mapping", "backends:\n      - address: 198.18.1.11:8080", "backends: {address: 198.18.1.11:8080}", "services[0].backends", 10, "expected a list, got a mapping"},
		{"backends scalar", "backends:\n      - address: 198.18.1.11:8080", "backends: 198.18.1.11:8080", "services[0].backends", 10, "expected a list"},
		{"backend item scalar", "- address: 198.18.1.11:8080", "- 198.18.1.11:8080", "services[0].backends[0]", 11, "expected a mapping"},
		{"backend item null", "- address: 198.18.1.11:8080", "-", "services[0].backends[0]", 11, "empty list item"},
		{"address no port", "198.18.1.11:8080", "198.18.1.11", "services[0].backends[0].address", 11, "address:port"},
		{"weight string", "198.18.1.11:8080", "198.18.1.11:8080\n        weight: heavy", "services[0].backends[0].weight", 12, "expected an integer"},
		{"weight too big", "198.18.1.11:8080", "198.18.1.11:8080\n        weight: 1001", "services[0].backends[0].weight", 12, "out of range"},
		{"weight negative", "198.18.1.11:8080", "198.18.1.11:8080\n        weight: -1", "services[0].backends[0].weight", 12, "out of range"},
		{"subnets string", "subnets: [198.18.0.0/24]", "subnets: 198.18.0.0/24", "links[0].subnets", 3, "expected a list"},
		{"subnet host bits", "198.18.0.0/24]", "198.18.0.1/24]", "links[0].subnets[0]", 3, "host bits"},
		{"links mapping", "links:\n", "links:\n  x: 1\nz:\n", "links", 2, "expected a list, got a mapping"},
		{"key is a list", "snat:\n", "snat:\n  [a]: 1\n", "snat", 13, "keys must be strings"},
		{"merge key", "  - name: web\n", "  - name: web\n    <<: {port: 81}\n", "services[0].<<", 8, "merge keys"},
		{"duration int", "port: 80", "port: 80\n    time_wait: 60", "services[0].time_wait", 10, "expected a duration"},
		{"time_wait too long", "port: 80", "port: 80\n    time_wait: 11m", "services[0].time_wait", 10, "out of range 1s..10m"},
		{"protocol udp", "port: 80", "port: 80\n    protocol: udp", "services[0].protocol", 10, `only "tcp"`},
		{"scheduler unknown", "port: 80", "port: 80\n    scheduler: random", "services[0].scheduler", 10, "unknown scheduler"},
		{"isn_translation yes", "port: 80", "port: 80\n    isn_translation: yes", "services[0].isn_translation", 10, "expected a boolean (true or false), got string"},
		{"isn_translation int", "port: 80", "port: 80\n    isn_translation: 1", "services[0].isn_translation", 10, "expected a boolean"},
		{"isn_translation quoted", "port: 80", "port: 80\n    isn_translation: \"true\"", "services[0].isn_translation", 10, "expected a boolean"},
		{"exhaustion unknown", "port: 80", "port: 80\n    exhaustion: drop", "services[0].exhaustion", 10, "unknown exhaustion policy"},
		{"exhaustion empty", "port: 80", "port: 80\n    exhaustion: \"\"", "services[0].exhaustion", 10, "unknown exhaustion policy"},
		{"exhaustion int", "port: 80", "port: 80\n    exhaustion: 1", "services[0].exhaustion", 10, "expected a string"},
		{"exhaustion_wait short", "port: 80", "port: 80\n    exhaustion_wait: 5ms", "services[0].exhaustion_wait", 10, "out of range 10ms..30s"},
		{"exhaustion_wait long", "port: 80", "port: 80\n    exhaustion_wait: 31s", "services[0].exhaustion_wait", 10, "out of range 10ms..30s"},
		{"exhaustion_wait bad", "port: 80", "port: 80\n    exhaustion_wait: soon", "services[0].exhaustion_wait", 10, "not a valid duration"},
		{"exhaustion_wait with reuse", "port: 80", "port: 80\n    exhaustion_wait: 1s\n    exhaustion: reuse", "services[0].exhaustion_wait", 10, "only valid with exhaustion: wait"},
		{"repair string", "", "detector:\n  repair: \"no\"\n", "detector.repair", 15, "expected a boolean"},
		{"pcap_max_files big", "", "detector:\n  pcap_max_files: 100001\n", "detector.pcap_max_files", 15, "out of range 1..100000"},
		{"pcap_max_files string", "", "detector:\n  pcap_max_files: many\n", "detector.pcap_max_files", 15, "expected an integer"},
		{"detector unknown key", "", "detector:\n  max_files: 3\n", "detector.max_files", 15, "unknown key"},
		{"workers negative", "", "datapath:\n  workers: -1\n", "datapath.workers", 15, "out of range 0..256"},
		{"workers string", "", "datapath:\n  workers: all\n", "datapath.workers", 15, "expected an integer"},
		{"io unknown", "", "datapath:\n  io: xdp\n", "datapath.io", 15, "unknown I/O mode"},
		{"ring_frames not power of two", "", "datapath:\n  ring_frames: 1000\n", "datapath.ring_frames", 15, "power of two"},
		{"ring_frames small", "", "datapath:\n  ring_frames: 8\n", "datapath.ring_frames", 15, "out of range 64..65536"},
		{"datapath unknown key", "", "datapath:\n  threads: 2\n", "datapath.threads", 15, "unknown key"},
		{"kernel_drop not a boolean", "", "datapath:\n  kernel_drop: maybe\n", "datapath.kernel_drop", 15, "expected a boolean"},
		{"passive syn_timeout short", "", "health:\n  passive:\n    syn_timeout: 1ms\n", "health.passive.syn_timeout", 16, "out of range 10ms..10s"},
		{"passive retries big", "", "health:\n  passive:\n    retries: 9\n", "health.passive.retries", 16, "out of range 0..8"},
		{"passive enabled string", "", "health:\n  passive:\n    enabled: sometimes\n", "health.passive.enabled", 16, "expected a boolean"},
		{"passive unknown key", "", "health:\n  passive:\n    rise: 2\n", "health.passive.rise", 16, "unknown key"},
		{"syn_proxy unknown", "port: 80", "port: 80\n    syn_proxy: maybe", "services[0].syn_proxy", 10, "unknown mode"},
		{"syn_proxy_threshold zero", "port: 80", "port: 80\n    syn_proxy_threshold: 0", "services[0].syn_proxy_threshold", 10, "out of range 1..1000000"},
		{"half_open_max negative", "port: 80", "port: 80\n    half_open_max: -1", "services[0].half_open_max", 10, "out of range"},
		{"health source int", "", "health:\n  source: 7\n", "health.source", 15, "expected a string"},
		{"health source bad", "", "health:\n  source: 198.18.1.256\n", "health.source", 15, "not a valid IP address"},
		{"health source ipv6 loopback", "", "health:\n  source: \"::1\"\n", "health.source", 15, "not a usable unicast"},
		{"health source loopback", "", "health:\n  source: 127.0.0.1\n", "health.source", 15, "not a usable unicast"},
		{"health source vip", "", "health:\n  source: 198.18.0.100\n", "health.source", 15, "VIP of services[0]"},
		{"health source snat", "", "health:\n  source: 198.18.1.100\n", "health.source", 15, "equals snat.addresses[0]"},
		{"health source backend", "", "health:\n  source: 198.18.1.11\n", "health.source", 15, "services[0].backends[0]"},
		{"health source off link", "", "health:\n  source: 10.0.0.1\n", "health.source", 15, "not inside any link's subnets"},
		{"health list", "", "health: [198.18.1.2]\n", "health", 14, "expected a mapping"},
		{"health unknown key", "", "health:\n  src: 198.18.1.2\n", "health.src", 15, "unknown key"},
		{"control socket int", "", "control:\n  socket: 1\n", "control.socket", 15, "expected a string"},
		{"control socket relative", "", "control:\n  socket: tslb.sock\n", "control.socket", 15, "absolute path"},
		{"control socket long", "", "control:\n  socket: /" + strings.Repeat("s", 107) + "\n", "control.socket", 15, "at most 107"},
		{"shutdown timeout int", "", "shutdown:\n  timeout: 30\n", "shutdown.timeout", 15, "expected a duration"},
		{"shutdown timeout negative", "", "shutdown:\n  timeout: -1s\n", "shutdown.timeout", 15, "out of range 0s..1h"},
		{"shutdown timeout long", "", "shutdown:\n  timeout: 1h0m1s\n", "shutdown.timeout", 15, "out of range 0s..1h"},
		{"state_file list", "", "state_file: [a]\n", "state_file", 14, "expected a string"},
		{"state_file relative", "", "state_file: ./ledger\n", "state_file", 14, "absolute path"},
		{"drain string", "198.18.1.11:8080", "198.18.1.11:8080\n        drain: \"true\"", "services[0].backends[0].drain", 12, "expected a boolean"},
		{"drain int", "198.18.1.11:8080", "198.18.1.11:8080\n        drain: 1", "services[0].backends[0].drain", 12, "expected a boolean"},
		{"only backend drained", "198.18.1.11:8080", "198.18.1.11:8080\n        drain: true", "services[0].backends", 10, "or is drained"},
		{"ifname too long", "tslb-c0", "tslb-c0-much-too-long", "links[0].interface", 2, "not a valid interface name"},
		{"missing interface", "  - interface: tslb-c0\n    subnets", "  - subnets", "links[0].interface", 2, "required"},
		{"gateway off subnet", "[198.18.0.0/24]\n", "[198.18.0.0/24]\n    gateway: 198.18.9.1\n", "links[0].gateway", 4, "not inside"},
		{"log format unknown", "", "log:\n  format: logfmt\n", "log.format", 15, `unknown format "logfmt" (supported: text, json)`},
		{"log format upper case", "", "log:\n  format: JSON\n", "log.format", 15, "unknown format"},
		{"log format empty", "", "log:\n  format: \"\"\n", "log.format", 15, "unknown format"},
		{"log format int", "", "log:\n  format: 1\n", "log.format", 15, "expected a string, got integer"},
		{"log unknown key", "", "log:\n  formatter: json\n", "log.formatter", 15, "unknown key (valid keys here: level, format)"},
		{"second document", "", "---\nlog: {}\n", "", 14, "second YAML document"},
		{"tab indent", "    port: 80", "	port: 80", "", 9, "YAML syntax"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			src := minimal
			if tt.from == "" {
				src += tt.to
			} else {
				if !strings.Contains(src, tt.from) {
					t.Fatalf("minimal lacks %q", tt.from)
				}
				src = strings.Replace(src, tt.from, tt.to, 1)
			}
			errs := parseErrors(t, src)
			if !hasError(errs, tt.key, tt.line, tt.msg) {
				t.Errorf("want %q line %d containing %q; got:\n%v", tt.key, tt.line, tt.msg, errs)
			}
		})
	}
}

// TestLogFormat: log.format text and json parse, survive Marshal, and
// default to text when absent or null.
func TestLogFormat(t *testing.T) {
	for _, tt := range []struct{ src, want string }{
		{"", "text"},
		{"log:\n  format:\n", "text"},
		{"log:\n  format: text\n", "text"},
		{"log:\n  format: json\n", "json"},
		{"log:\n  level: debug\n  format: json\n", "json"},
	} {
		c := mustParse(t, minimal+tt.src)
		if c.Log.Format != tt.want {
			t.Errorf("%q: Log.Format = %q, want %q", tt.src, c.Log.Format, tt.want)
		}
		out, err := c.Marshal()
		if err != nil {
			t.Fatalf("Marshal: %v", err)
		}
		if c2 := mustParse(t, string(out)); c2.Log != c.Log {
			t.Errorf("%q: after Marshal and Parse Log = %+v, want %+v", tt.src, c2.Log, c.Log)
		}
	}
	for _, f := range []string{"text", "json"} {
		if !config.ValidLogFormat(f) {
			t.Errorf("ValidLogFormat(%q) = false", f)
		}
	}
	for _, f := range []string{"", "JSON", "logfmt", "text "} {
		if config.ValidLogFormat(f) {
			t.Errorf("ValidLogFormat(%q) = true", f)
		}
	}
	// A Config built in Go gets the default from ApplyDefaults and an
	// unknown format from Validate.
	c := goConfig()
	c.ApplyDefaults()
	if c.Log.Format != config.DefaultLogFormat {
		t.Errorf("ApplyDefaults: Log.Format = %q, want %q", c.Log.Format, config.DefaultLogFormat)
	}
	c.Log.Format = "xml"
	if errs := c.Validate(); !hasError(errs, "log.format", 0, `unknown format "xml"`) {
		t.Errorf("Validate with format xml: %v", errs)
	}
}

func TestRootNotMapping(t *testing.T) {
	for _, src := range []string{"- links\n- services\n", "just a string\n", "42\n"} {
		errs := parseErrors(t, src)
		if !hasError(errs, "", 1, "expected a mapping") {
			t.Errorf("%q: want a root error at line 1, got:\n%v", src, errs)
		}
	}
}

func TestEmptyInputs(t *testing.T) {
	for _, src := range []string{"", "\n\n", "# only a comment\n", "---\n", "~\n", "null\n"} {
		errs := parseErrors(t, src)
		if len(errs) != 1 || errs[0].Line != 1 || errs[0].Key != "" || !strings.Contains(errs[0].Msg, "empty") {
			t.Errorf("%q: got %v, want one empty-file error at line 1", src, errs)
		}
	}
}

func TestAliases(t *testing.T) {
	c := mustParse(t, strings.Replace(minimal, "    backends:\n      - address: 198.18.1.11:8080\n",
		"    backends: &pool\n      - address: 198.18.1.11:8080\n  - name: web2\n    vip: 198.18.0.101\n    port: 80\n    backends: *pool\n", 1))
	if len(c.Services) != 2 || !reflect.DeepEqual(c.Services[0].Backends, c.Services[1].Backends) {
		t.Errorf("alias not followed: %+v", c.Services)
	}
}

func TestErrorString(t *testing.T) {
	for _, tt := range []struct {
		e    config.Error
		want string
	}{
		{config.Error{File: "a.yaml", Line: 3, Key: "snat.port_range", Msg: "bad"}, "a.yaml:3: snat.port_range: bad"},
		{config.Error{File: "a.yaml", Key: "log.level", Msg: "bad"}, "a.yaml: log.level: bad"},
		{config.Error{File: "a.yaml", Line: 1, Msg: "empty configuration file"}, "a.yaml:1: empty configuration file"},
		{config.Error{Key: "log.level", Msg: "bad"}, "log.level: bad"},
	} {
		if got := tt.e.Error(); got != tt.want {
			t.Errorf("Error() = %q, want %q", got, tt.want)
		}
	}
	es := config.Errors{{File: "f", Line: 1, Key: "a", Msg: "x"}, {File: "f", Line: 2, Key: "b", Msg: "y"}}
	if got, want := es.Error(), "f:1: a: x\nf:2: b: y"; got != want {
		t.Errorf("Errors.Error() = %q, want %q", got, want)
	}
}

func TestLoadMissingFile(t *testing.T) {
	_, err := config.Load(filepath.Join(t.TempDir(), "nope.yaml"))
	if !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Load of a missing file: %v, want os.ErrNotExist", err)
	}
	var errs config.Errors
	if errors.As(err, &errs) {
		t.Errorf("a missing file is not a config.Errors")
	}
}

func TestValidateGoConfig(t *testing.T) {
	base := func() *config.Config {
		c := goConfig()
		c.ApplyDefaults()
		return c
	}
	if errs := base().Validate(); errs != nil {
		t.Fatalf("valid Go config: %v", errs)
	}
	addr := netip.MustParseAddr
	for _, tt := range []struct {
		name   string
		mutate func(c *config.Config)
		key    string
		msg    string
	}{
		{"no links", func(c *config.Config) { c.Links = nil }, "links", "at least one link"},
		{"dup link name", func(c *config.Config) { c.Links[1].Name = "clients" }, "links[1].name", "also used by links[0]"},
		{"no subnets no gateway", func(c *config.Config) { c.Links[0].Subnets = nil }, "links[0].subnets", "unless gateway"},
		{"mapped subnet", func(c *config.Config) { c.Links[0].Subnets[0] = netip.MustParsePrefix("::ffff:198.18.0.0/120") }, "links[0].subnets[0]", "IPv4-mapped prefix; use the IPv4 form 198.18.0.0/24"},
		{"two gateways", func(c *config.Config) { c.Links[0].Gateway = addr("198.18.0.1") }, "links[1].gateway", "only one link"},
		{"no services", func(c *config.Config) { c.Services = nil }, "services", "at least one service"},
		{"no name", func(c *config.Config) { c.Services[0].Name = "" }, "services[0].name", "required"},
		{"no vip", func(c *config.Config) { c.Services[0].VIP = netip.Addr{} }, "services[0].vip", "required"},
		{"vip off link", func(c *config.Config) { c.Services[0].VIP = addr("203.0.113.1") }, "services[0].vip", "not inside"},
		{"vip is gateway", func(c *config.Config) { c.Services[0].VIP = addr("198.18.1.1") }, "services[0].vip", "links[1].gateway"},
		{"no port", func(c *config.Config) { c.Services[0].Port = 0 }, "services[0].port", "required"},
		{"no scheduler", func(c *config.Config) { c.Services[0].Scheduler = "" }, "services[0].scheduler", "unknown scheduler"},
		{"no timestamps", func(c *config.Config) { c.Services[0].Timestamps = "" }, "services[0].timestamps", "unknown timestamps"},
		{"short time_wait", func(c *config.Config) { c.Services[0].TimeWait = time.Millisecond }, "services[0].time_wait", "out of range"},
		{"no backends", func(c *config.Config) { c.Services[0].Backends = nil }, "services[0].backends", "at least one backend"},
		{"all drained", func(c *config.Config) { c.Services[0].Backends[0].Weight = 0 }, "services[0].backends", "weight 0"},
		{"live backend drained", func(c *config.Config) { c.Services[0].Backends[0].Drain = true }, "services[0].backends", "weight 0 or is drained"},
		{"health source vip", func(c *config.Config) { c.Health.Source = c.Services[0].VIP }, "health.source", "VIP of services[0]"},
		{"health source snat", func(c *config.Config) { c.Health.Source = c.SNAT.Addresses[1] }, "health.source", "equals snat.addresses[1]"},
		{"health source backend", func(c *config.Config) { c.Health.Source = addr("203.0.113.7") }, "health.source", "services[0].backends[1]"},
		{"health source gateway", func(c *config.Config) { c.Health.Source = addr("198.18.1.1") }, "health.source", "links[1].gateway"},
		{"health source off link", func(c *config.Config) {
			c.Links[1].Gateway = netip.Addr{}
			c.Services[0].Backends = c.Services[0].Backends[:1]
			c.Health.Source = addr("203.0.113.9")
		}, "health.source", "no link has an IPv4 gateway"},
		{"health source ipv6", func(c *config.Config) { c.Health.Source = addr("2001:db8::1") }, "health.source", "not an IPv4"},
		{"control socket relative", func(c *config.Config) { c.Control.Socket = "tslb.sock" }, "control.socket", "absolute path"},
		{"shutdown negative", func(c *config.Config) { c.Shutdown.Timeout = -time.Nanosecond }, "shutdown.timeout", "out of range 0s..1h"},
		{"shutdown too long", func(c *config.Config) { c.Shutdown.Timeout = time.Hour + 1 }, "shutdown.timeout", "out of range 0s..1h"},
		{"state_file relative", func(c *config.Config) { c.StateFile = "ledger" }, "state_file", "absolute path"},
		{"dup backend", func(c *config.Config) { c.Services[0].Backends[1] = c.Services[0].Backends[0] }, "services[0].backends[1].address", "duplicate backend"},
		{"backend is snat", func(c *config.Config) {
			c.Services[0].Backends[1].Address = netip.AddrPortFrom(c.SNAT.Addresses[1], 80)
		}, "services[0].backends[1].address", "equals snat.addresses[1]"},
		{"backend off link without gateway", func(c *config.Config) { c.Links[1].Gateway = netip.Addr{} }, "services[0].backends[1].address", "no link has an IPv4 gateway"},
		{"hc timeout", func(c *config.Config) {
			c.Services[0].HealthCheck = &config.HealthCheck{Type: "tcp", Interval: time.Second, Timeout: 2 * time.Second, Rise: 1, Fall: 1}
		}, "services[0].health_check.timeout", "shorter than interval"},
		{"hc path on tcp", func(c *config.Config) {
			c.Services[0].HealthCheck = &config.HealthCheck{Type: "tcp", Interval: time.Second, Timeout: time.Millisecond, Rise: 1, Fall: 1, Path: "/"}
		}, "services[0].health_check.path", "only valid with type http"},
		{"hc status", func(c *config.Config) {
			c.Services[0].HealthCheck = &config.HealthCheck{Type: "http", Interval: time.Second, Timeout: time.Millisecond, Rise: 1, Fall: 101, Path: "/", ExpectStatus: 99}
		}, "services[0].health_check.expect_status", "out of range 100..599"},
		{"hc rise", func(c *config.Config) {
			c.Services[0].HealthCheck = &config.HealthCheck{Type: "http", Interval: time.Second, Timeout: time.Millisecond, Rise: 0, Fall: 1, Path: "/", ExpectStatus: 200}
		}, "services[0].health_check.rise", "out of range 1..100"},
		{"hc no type", func(c *config.Config) {
			c.Services[0].HealthCheck = &config.HealthCheck{Interval: time.Second, Timeout: time.Millisecond, Rise: 1, Fall: 1}
		}, "services[0].health_check.type", "required"},
		{"no snat", func(c *config.Config) { c.SNAT.Addresses = nil }, "snat.addresses", "at least one SNAT address"},
		{"dup snat", func(c *config.Config) { c.SNAT.Addresses[1] = c.SNAT.Addresses[0] }, "snat.addresses[1]", "duplicate SNAT"},
		{"snat off link", func(c *config.Config) { c.SNAT.Addresses[1] = addr("203.0.113.1") }, "snat.addresses[1]", "not inside"},
		{"snat ports zero", func(c *config.Config) { c.SNAT.PortMin, c.SNAT.PortMax = 0, 0 }, "snat.port_range", "below 1024"},
		{"flows max", func(c *config.Config) { c.Flows.Max = 0 }, "flows.max", "out of range"},
		{"timeout", func(c *config.Config) { c.Flows.Timeouts.Fin = -time.Second }, "flows.timeouts.fin", "must be positive"},
		{"metrics no port", func(c *config.Config) { c.Metrics.Listen = "localhost" }, "metrics.listen", "host:port"},
		{"metrics port 0", func(c *config.Config) { c.Metrics.Listen = ":0" }, "metrics.listen", "port must be"},
		{"log level", func(c *config.Config) { c.Log.Level = "" }, "log.level", "unknown level"},
		{"no exhaustion", func(c *config.Config) { c.Services[0].Exhaustion = "" }, "services[0].exhaustion", "unknown exhaustion policy"},
		{"exhaustion_wait zero", func(c *config.Config) { c.Services[0].ExhaustionWait = 0 }, "services[0].exhaustion_wait", "out of range 10ms..30s"},
		{"exhaustion_wait with reject", func(c *config.Config) { c.Services[0].Exhaustion = config.ExhaustReject }, "services[0].exhaustion_wait", "only valid with exhaustion: wait"},
		{"pcap_max_files zero", func(c *config.Config) { c.Detector.PcapMaxFiles = 0 }, "detector.pcap_max_files", "out of range 1..100000"},
		{"pcap_max_files big", func(c *config.Config) { c.Detector.PcapMaxFiles = 100_001 }, "detector.pcap_max_files", "out of range 1..100000"},
		{"workers above ports", func(c *config.Config) { c.Datapath.Workers, c.SNAT.PortMin, c.SNAT.PortMax = 4, 20000, 20002 }, "snat.port_range", "fewer ports than datapath.workers (4)"},
		{"io empty", func(c *config.Config) { c.Datapath.IO = "" }, "datapath.io", "unknown I/O mode"},
		{"half open above max", func(c *config.Config) { c.Flows.HalfOpenMax = c.Flows.Max + 1 }, "flows.half_open_max", "out of range 1..flows.max"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := base()
			tt.mutate(c)
			errs := c.Validate()
			if !hasError(errs, tt.key, 0, tt.msg) {
				t.Fatalf("want %s %q; got:\n%v", tt.key, tt.msg, errs)
			}
			want := "go: " + tt.key + ": "
			if !strings.Contains(errs.Error(), want) {
				t.Errorf("Error() lacks %q: %s", want, errs)
			}
		})
	}
}

func FuzzParse(f *testing.F) {
	files, _ := filepath.Glob("testdata/bad/*.yaml")
	good, _ := filepath.Glob("testdata/cluster/*.yaml")
	for _, name := range append(append(files, good...), "example.yaml", "example-dualstack.yaml") {
		data, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte(minimal))
	f.Add([]byte(dual))
	f.Add([]byte(only6))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := config.Parse(data, "fuzz")
		if (c == nil) == (err == nil) {
			t.Fatalf("Parse returned c=%v err=%v", c != nil, err)
		}
		if c == nil {
			return
		}
		// Anything Parse accepts must survive Marshal and Parse again.
		out, err := c.Marshal()
		if err != nil {
			t.Fatalf("Marshal of a parsed config: %v", err)
		}
		back, err := config.Parse(out, "fuzz")
		if err != nil {
			t.Fatalf("Parse(Marshal()): %v\n%s", err, out)
		}
		sameConfig(t, back, c)
	})
}

func BenchmarkParseExample(b *testing.B) {
	data, err := os.ReadFile("example.yaml")
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for range b.N {
		if _, err := config.Parse(data, "example.yaml"); err != nil {
			b.Fatal(err)
		}
	}
}

// The API the binary and package lb are written against; a signature change
// breaks this build.
var (
	_ func(string) (*config.Config, error)          = config.Load
	_ func([]byte, string) (*config.Config, error)  = config.Parse
	_ func(*config.Config) config.Errors            = (*config.Config).Validate
	_ func(*config.Config) ([]byte, error)          = (*config.Config).Marshal
	_ error                                         = config.Error{}
	_ error                                         = config.Errors{}
	_                                               = config.Config{Links: []config.Link{}, Services: []config.Service{}, SNAT: config.SNAT{}, Flows: config.Flows{Timeouts: config.Timeouts{}}, Metrics: config.Metrics{}, Log: config.Log{}, Detector: config.Detector{}, Source: ""}
	_                                               = []config.TSMode{config.TSStrip, config.TSPassthrough, config.TSRewrite}
	_                                               = []config.Exhaustion{config.ExhaustWait, config.ExhaustReject, config.ExhaustReuse}
	_                                               = config.Service{NoISNTranslation: true, Exhaustion: config.ExhaustWait, ExhaustionWait: time.Second}
	_                                               = config.Detector{PcapDir: "", PcapMaxFiles: 1, NoRepair: true}
	_                                               = config.Config{Health: config.Health{Source: netip.Addr{}}, Control: config.Control{Socket: ""}, Shutdown: config.Shutdown{Timeout: 0}, StateFile: ""}
	_                                               = config.Backend{Drain: true}
	_ func(*config.Config, *config.Config) []string = (*config.Config).RestartKeysDiffer
	_                                               = []any{config.DefaultControlSocket, config.DefaultShutdownTimeout, config.DefaultDrain, config.DefaultStateFile, config.MaxShutdownTimeout}
)

func TestRestartKeysDiffer(t *testing.T) {
	base := func() *config.Config {
		c := goConfig()
		c.ApplyDefaults()
		return c
	}
	addr := netip.MustParseAddr
	if got := base().RestartKeysDiffer(base()); len(got) != 0 {
		t.Errorf("equal configs: %q, want none", got)
	}
	// The same file parsed twice needs no restart.
	example, err := config.Load("example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	again, err := config.Load("example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if got := example.RestartKeysDiffer(again); got != nil {
		t.Errorf("example vs itself: %q, want nil", got)
	}
	for _, tt := range []struct {
		name   string
		mutate func(c *config.Config)
		want   []string // nil: a hot reload applies it
	}{
		// Hot-reloadable changes.
		{"backend weight", func(c *config.Config) { c.Services[0].Backends[0].Weight = 9 }, nil},
		{"backend drained", func(c *config.Config) { c.Services[0].Backends[1].Drain = true }, nil},
		{"service added", func(c *config.Config) {
			s := c.Services[0]
			s.Name, s.Port = "web2", 81
			c.Services = append(c.Services, s)
		}, nil},
		{"scheduler", func(c *config.Config) { c.Services[0].Scheduler = "maglev" }, nil},
		{"flow timeouts", func(c *config.Config) { c.Flows.Timeouts.Fin = time.Second }, nil},
		{"log level", func(c *config.Config) { c.Log.Level = "debug" }, nil},
		{"detector", func(c *config.Config) { c.Detector.NoRepair = true }, nil},
		{"health source", func(c *config.Config) { c.Health.Source = addr("198.18.1.2") }, nil},
		// health.source of either family is lb's to refuse (lb.restartKeys).
		{"health source6", func(c *config.Config) { c.Health.Source6 = addr("2001:db8:1::2") }, nil},
		{"shutdown timeout", func(c *config.Config) { c.Shutdown.Timeout = time.Minute }, nil},
		// Changes that need a restart.
		{"link name", func(c *config.Config) { c.Links[0].Name = "front" }, []string{"links[0].name"}},
		{"link interface", func(c *config.Config) { c.Links[1].Interface = "tslb-b1" }, []string{"links[1].interface"}},
		{"link subnets", func(c *config.Config) {
			c.Links[0].Subnets = append(c.Links[0].Subnets, netip.MustParsePrefix("198.18.2.0/24"))
		}, []string{"links[0].subnets"}},
		{"link gateway", func(c *config.Config) { c.Links[1].Gateway = addr("198.18.1.254") }, []string{"links[1].gateway"}},
		{"link gateway6 added", func(c *config.Config) { c.Links[1].Gateway6 = addr("fe80::1") }, []string{"links[1].gateway"}},
		{"link gateway6 moved", func(c *config.Config) { c.Links[0].Gateway6 = addr("fe80::1") }, []string{"links[0].gateway"}},
		{"link IPv6 subnet", func(c *config.Config) {
			c.Links[1].Subnets = append(c.Links[1].Subnets, netip.MustParsePrefix("2001:db8:1::/64"))
		}, []string{"links[1].subnets"}},
		{"snat IPv6 address added", func(c *config.Config) { c.SNAT.Addresses = append(c.SNAT.Addresses, addr("2001:db8:1::100")) }, []string{"snat.addresses"}},
		{"IPv6 service added", func(c *config.Config) {
			c.Services = append(c.Services, config.Service{Name: "web6", VIP: addr("2001:db8::100"), Port: 80,
				Backends: []config.Backend{{Address: netip.MustParseAddrPort("[2001:db8:1::11]:8080"), Weight: 1}}})
		}, nil},
		{"link added", func(c *config.Config) {
			c.Links = append(c.Links, config.Link{Name: "x", Interface: "tslb-x0", Subnets: []netip.Prefix{netip.MustParsePrefix("198.18.3.0/24")}})
		}, []string{"links"}},
		{"snat address", func(c *config.Config) { c.SNAT.Addresses[1] = addr("198.18.1.102") }, []string{"snat.addresses"}},
		{"snat order", func(c *config.Config) {
			c.SNAT.Addresses[0], c.SNAT.Addresses[1] = c.SNAT.Addresses[1], c.SNAT.Addresses[0]
		}, []string{"snat.addresses"}},
		{"snat port range", func(c *config.Config) { c.SNAT.PortMax-- }, []string{"snat.port_range"}},
		{"flows max", func(c *config.Config) { c.Flows.Max = 10 }, []string{"flows.max"}},
		{"metrics listen", func(c *config.Config) { c.Metrics.Listen = "127.0.0.1:9200" }, []string{"metrics.listen"}},
		{"control socket", func(c *config.Config) { c.Control.Socket = "/run/other.sock" }, []string{"control.socket"}},
		{"state file", func(c *config.Config) { c.StateFile = "/var/lib/tslb/ledger" }, []string{"state_file"}},
		{"workers", func(c *config.Config) { c.Datapath.Workers = 3 }, []string{"datapath.workers"}},
		{"io", func(c *config.Config) { c.Datapath.IO = "socket" }, []string{"datapath.io"}},
		{"kernel_drop", func(c *config.Config) { c.Datapath.KernelDropOff = true }, []string{"datapath.kernel_drop"}},
		{"several", func(c *config.Config) {
			c.StateFile = "/x"
			c.Links[1].Subnets = []netip.Prefix{netip.MustParsePrefix("198.18.1.0/25")}
			c.Links[1].Gateway = netip.Addr{}
			c.SNAT.PortMin = 30000
			c.Flows.Max = 5
			c.Services[0].Backends[0].Weight = 2
		}, []string{"links[1].subnets", "links[1].gateway", "snat.port_range", "flows.max", "state_file"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			old, o := base(), base()
			tt.mutate(o)
			if got := old.RestartKeysDiffer(o); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("RestartKeysDiffer = %q, want %q", got, tt.want)
			}
			// The relation is symmetric.
			if got := o.RestartKeysDiffer(old); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("reversed: RestartKeysDiffer = %q, want %q", got, tt.want)
			}
		})
	}
	// Through files: a changed file that only touches hot keys.
	hot := mustParse(t, strings.Replace(minimal, "      - address: 198.18.1.11:8080\n",
		"      - address: 198.18.1.11:8080\n        weight: 4\n", 1)+"shutdown:\n  timeout: 5s\n")
	cold := mustParse(t, minimal+"control:\n  socket: \"\"\nmetrics:\n  listen: \"\"\n")
	cur := mustParse(t, minimal)
	if got := cur.RestartKeysDiffer(hot); got != nil {
		t.Errorf("hot file: %q, want nil", got)
	}
	if got, want := cur.RestartKeysDiffer(cold), []string{"metrics.listen", "control.socket"}; !reflect.DeepEqual(got, want) {
		t.Errorf("cold file: %q, want %q", got, want)
	}
}
