package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"tslb/lb"
)

// TestStatusCommand runs `tslb status` against a control socket served by
// serveControl with a fixed status: the tables show every service,
// backend, SNAT pair, link and drop reason, aligned; -json gives the
// document back; an error answer and a missing socket fail.
func TestStatusCommand(t *testing.T) {
	tte := 90.0
	t0 := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	st := &lb.Status{Schema: lb.StatusSchema, Time: t0, Started: t0.Add(-2 * time.Minute), Workers: 2,
		Config: lb.ConfigStatus{Source: "/etc/tslb/tslb.yaml", Version: 1, LastReload: t0.Add(-time.Minute), LastReloadOK: true},
		Flows:  lb.FlowsStatus{Entries: 3, Capacity: 65536},
		Services: []lb.ServiceStatus{{Name: "web", VIP: "198.18.0.100", Port: 80, Timestamps: "rewrite", Scheduler: "wrr", SYNProxy: "off", FlowsActive: 3, FlowsCreated: 50,
			Backends: []lb.BackendStatus{
				{Address: "198.18.1.11:8080", Weight: 1, Up: true, FlowsActive: 3, FlowsCreated: 30},
				{Address: "198.18.1.12:8080", Weight: 0, Drain: true, Up: false, HealthCheck: "tcp", LastCheck: t0.Add(-time.Second), LastCheckError: "connection refused", Transitions: 1, FlowsCreated: 20},
			}}},
		SNAT:  []lb.SNATStatus{{SNAT: "198.18.1.2", Backend: "198.18.1.11:8080", InUse: 3, TimeWait: 27, Free: 40970, EntryRate: 0.5, SecondsToExhaustion: &tte, Allocations: map[string]uint64{"fresh": 30, "early_reuse_ts": 4}}},
		Links: []lb.LinkStatus{{Name: "clients", RxPackets: 700, TxPackets: 650}, {Name: "backends", RxPackets: 650, TxPackets: 700, KernelDrops: 1}},
		Drops: map[string]uint64{"no_service": 2},
	}
	sock := filepath.Join(t.TempDir(), "tslb.sock")
	ln, err := listenControl(sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var fail atomic.Bool
	go serveControl(ln, controlCommands{status: func() ([]byte, error) {
		if fail.Load() {
			return nil, errors.New("no status\nnow")
		}
		return json.Marshal(st)
	}}, slog.New(slog.NewTextHandler(io.Discard, nil)))

	var out bytes.Buffer
	if code := status([]string{"-socket", sock}, &out); code != 0 {
		t.Fatalf("tslb status exited %d", code)
	}
	text := out.String()
	t.Logf("tslb status:\n%s", text)
	for _, want := range []string{
		"service web  198.18.0.100:80  timestamps rewrite  scheduler wrr",
		"config /etc/tslb/tslb.yaml version 1, last reload 2026-12-03 11:59:00Z ok",
		"tcp 1s ago: connection refused", "drain",
		"1m30s", "no_service", "KERNEL DROPS",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("output lacks %q", want)
		}
	}
	// Each table's columns line up: the value under a header starts where
	// the header does.
	lines := strings.Split(text, "\n")
	col := func(header, name string) int {
		for _, l := range lines {
			if strings.HasPrefix(l, header) {
				return strings.Index(l, name)
			}
		}
		return -1
	}
	row := func(prefix string) string {
		for _, l := range lines {
			if strings.HasPrefix(l, prefix) {
				return l
			}
		}
		return ""
	}
	for _, c := range []struct{ header, name, row, value string }{
		{"BACKEND", "HEALTH", "198.18.1.11:8080", "up"},
		{"BACKEND", "HEALTH", "198.18.1.12:8080", "down"},
		{"BACKEND", "DRAIN", "198.18.1.12:8080", "drain"},
		{"SNAT", "TIME_WAIT", "198.18.1.2 ", "27"},
		{"SNAT", "EXHAUSTED IN", "198.18.1.2 ", "1m30s"},
		{"LINK", "KERNEL DROPS", "backends", "1"},
		{"DROP REASON", "FRAMES", "no_service", "2"},
	} {
		h, r := col(c.header, c.name), row(c.row)
		if h < 0 || r == "" || !strings.HasPrefix(r[h:], c.value) {
			t.Errorf("%s: column %q at %d, row %q", c.header, c.name, h, r)
		}
	}

	out.Reset()
	if code := status([]string{"-socket", sock, "-json"}, &out); code != 0 {
		t.Fatalf("tslb status -json exited %d", code)
	}
	var back lb.Status
	if err := json.Unmarshal(out.Bytes(), &back); err != nil || back.Schema != lb.StatusSchema || len(back.Services[0].Backends) != 2 {
		t.Errorf("-json: %v %+v", err, back)
	}

	fail.Store(true)
	if code := status([]string{"-socket", sock}, io.Discard); code != 1 {
		t.Errorf("an error answer: exit %d, want 1", code)
	}
	if code := status([]string{"-socket", sock + ".none"}, io.Discard); code != 1 {
		t.Errorf("no socket: exit %d, want 1", code)
	}
}
