package lb

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"time"

	"tslb/nat"
)

// The state file keeps the TIME_WAIT ledger across a restart: without it a
// restarted tslb would hand out tuples its backends still hold in
// TIME_WAIT. JSON, written atomically (temporary file + rename) on stop,
// read on start; records whose TIME_WAIT ended are skipped. Timestamps
// stay valid across the restart because tslb's TS clock is wall-clock
// milliseconds (plus a per-pair base derived from the addresses).

const stateVersion = 1

type stateFile struct {
	Version int          `json:"version"`
	Saved   time.Time    `json:"saved"`
	Tuples  []stateTuple `json:"time_wait_tuples"`
}

type stateTuple struct {
	SNAT    string `json:"snat"`
	Backend string `json:"backend"`
	Port    uint16 `json:"port"`
	Until   int64  `json:"until_unix_ns"`
	NextSeq uint32 `json:"next_seq"`
	LastTS  uint32 `json:"last_tsval"`
	HasTS   bool   `json:"has_ts"`
}

// saveState writes every tuple in TIME_WAIT to path.
func (b *Balancer) saveState(path string) (int, error) {
	now := time.Now().UnixNano()
	st := stateFile{Version: stateVersion, Saved: time.Now().UTC()}
	for _, p := range b.snap.Load().snat.pools() {
		p.mu.Lock()
		p.tw.TimeWaitRecords(now, func(port uint16, rec nat.TWRecord) {
			st.Tuples = append(st.Tuples, stateTuple{SNAT: p.snat.String(), Backend: p.backend.String(), Port: port,
				Until: rec.Until, NextSeq: rec.NextSeq, LastTS: rec.LastTS, HasTS: rec.HasTS})
		})
		p.mu.Unlock()
	}
	data, err := json.MarshalIndent(st, "", " ")
	if err != nil {
		return 0, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return 0, err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return 0, err
	}
	return len(st.Tuples), os.Rename(tmp, path)
}

// loadState restores the ledger from path; a missing file is no error.
func (b *Balancer) loadState(path string) (int, error) {
	data, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	var st stateFile
	if err := json.Unmarshal(data, &st); err != nil {
		return 0, fmt.Errorf("lb: state file %s: %w", path, err)
	}
	if st.Version != stateVersion {
		return 0, fmt.Errorf("lb: state file %s: version %d, want %d", path, st.Version, stateVersion)
	}
	sort.Slice(st.Tuples, func(i, j int) bool { return st.Tuples[i].Until < st.Tuples[j].Until })
	now := time.Now().UnixNano()
	snat := b.snap.Load().snat
	n := 0
	for _, t := range st.Tuples {
		a, err1 := netip.ParseAddr(t.SNAT)
		be, err2 := netip.ParseAddrPort(t.Backend)
		if err1 != nil || err2 != nil || !a.Is4() {
			continue
		}
		p := snat.byKey[poolKey{nat.Addr4From(a), be}]
		if p == nil {
			continue // backend no longer configured
		}
		p.mu.Lock()
		if p.tw.Restore(t.Port, now, nat.TWRecord{Until: t.Until, NextSeq: t.NextSeq, LastTS: t.LastTS, HasTS: t.HasTS}) {
			n++
		}
		p.mu.Unlock()
	}
	return n, nil
}
