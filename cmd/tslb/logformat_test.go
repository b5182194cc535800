package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestNewLogger: the json format writes one JSON object per line with
// time, level, msg and the attributes; text writes key=value pairs; the
// level filters.
func TestNewLogger(t *testing.T) {
	var buf bytes.Buffer
	log := newLogger(&buf, "info", "json")
	log.Debug("hidden")
	log.Info("reload: configuration applied", "services", 2)
	log.Error("start", "err", "boom")
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("json: %d lines, want 2 (debug filtered):\n%s", len(lines), buf.String())
	}
	var first, second map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &first); err != nil {
		t.Fatalf("json line %q: %v", lines[0], err)
	}
	if err := json.Unmarshal([]byte(lines[1]), &second); err != nil {
		t.Fatalf("json line %q: %v", lines[1], err)
	}
	if first["level"] != "INFO" || first["msg"] != "reload: configuration applied" || first["services"] != 2.0 || first["time"] == nil {
		t.Errorf("json info line = %v", first)
	}
	if second["level"] != "ERROR" || second["msg"] != "start" || second["err"] != "boom" {
		t.Errorf("json error line = %v", second)
	}

	buf.Reset()
	log = newLogger(&buf, "debug", "text")
	log.Debug("probe", "backend", "198.18.1.11:8080")
	got := buf.String()
	if !strings.Contains(got, `level=DEBUG msg=probe backend=198.18.1.11:8080`) || strings.HasPrefix(got, "{") {
		t.Errorf("text line = %q", got)
	}
}

// nxConfig is a valid configuration whose links name interfaces that do
// not exist, so `tslb run` logs one error ("start") and exits 1 without
// touching the network, root or not.
const nxConfig = `links:
  - interface: tslbnx0
    subnets: [198.18.0.0/24]
  - interface: tslbnx1
    subnets: [198.18.1.0/24]
services:
  - name: web
    vip: 198.18.0.100
    port: 80
    backends:
      - address: 198.18.1.11:8080
snat:
  addresses: [198.18.1.100]
metrics:
  listen: ""
control:
  socket: ""
`

// TestRunLogFormat runs the binary: log.format selects the handler, and
// -log-format overrides it both ways; an unknown -log-format exits 2
// before the configuration is read.
func TestRunLogFormat(t *testing.T) {
	bin := buildTSLB(t)
	dir := t.TempDir()
	write := func(name, extra string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(nxConfig+extra), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	textCfg := write("text.yaml", "")
	jsonCfg := write("json.yaml", "log:\n  format: json\n")
	for _, tt := range []struct {
		name     string
		args     []string
		wantJSON bool
	}{
		{"default text", []string{"-c", textCfg}, false},
		{"config json", []string{"-c", jsonCfg}, true},
		{"flag json over config text", []string{"-c", textCfg, "-log-format", "json"}, true},
		{"flag text over config json", []string{"-log-format", "text", "-c", jsonCfg}, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var stderr bytes.Buffer
			cmd := exec.Command(bin, append([]string{"run"}, tt.args...)...)
			cmd.Stderr = &stderr
			err := cmd.Run()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != 1 {
				t.Fatalf("exit %v, want code 1; stderr:\n%s", err, stderr.String())
			}
			line := strings.TrimSpace(stderr.String())
			if strings.Count(line, "\n") != 0 {
				t.Fatalf("want one log line, got:\n%s", line)
			}
			var obj map[string]any
			isJSON := json.Unmarshal([]byte(line), &obj) == nil
			if isJSON != tt.wantJSON {
				t.Fatalf("line is JSON: %v, want %v: %s", isJSON, tt.wantJSON, line)
			}
			if isJSON {
				if obj["level"] != "ERROR" || obj["msg"] != "start" || !strings.Contains(obj["err"].(string), "tslbnx0") {
					t.Errorf("json line = %v", obj)
				}
			} else if !strings.Contains(line, "level=ERROR msg=start err=") || !strings.Contains(line, "tslbnx0") {
				t.Errorf("text line = %s", line)
			}
		})
	}
	out, err := exec.Command(bin, "run", "-log-format", "yaml", "-c", textCfg).CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 2 || !strings.Contains(string(out), `-log-format "yaml": want text or json`) {
		t.Errorf("-log-format yaml: %v, output %q; want exit 2 naming the flag", err, out)
	}
}
