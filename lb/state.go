package lb

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"time"

	"tslb/config"
	"tslb/lb/snat"
	"tslb/nat"
)

// The state file keeps the TIME_WAIT ledger across a restart: without it a
// restarted tslb would hand out tuples its backends still hold in
// TIME_WAIT. JSON, written atomically (temporary file + rename) on stop,
// read on start; records whose TIME_WAIT ended are skipped. Records are
// keyed by (SNAT address, backend, port), not by worker: a ledger saved by
// N workers is restored by M, each tuple going to the worker that owns its
// port (snat.PortOwner). Timestamps
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

// saveState writes every tuple in TIME_WAIT, of every worker's pools, to
// path. The file does not depend on the number of workers: loadState gives
// each tuple to the worker that owns its port then.
func (b *Balancer) saveState(path string) (int, error) {
	now := b.sh.clock()
	st := stateFile{Version: stateVersion, Saved: time.Unix(0, now).UTC()}
	for _, ps := range b.shards {
		ps.mu.Lock()
		for _, p := range ps.list {
			p.TimeWaitRecords(now, func(port uint16, rec snat.Record) {
				st.Tuples = append(st.Tuples, stateTuple{SNAT: p.SNAT.Text(), Backend: p.Backend.String(), Port: port,
					Until: rec.Until, NextSeq: rec.NextSeq, LastTS: rec.LastTS, HasTS: rec.HasTS})
			})
		}
		ps.mu.Unlock()
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
	now := b.sh.clock()
	n := 0
	for _, t := range st.Tuples {
		a, err1 := netip.ParseAddr(t.SNAT)
		be, err2 := netip.ParseAddrPort(t.Backend)
		if err1 != nil || err2 != nil {
			continue
		}
		ps := b.shards[snat.PortOwner(t.Port, len(b.shards))]
		ps.mu.Lock()
		p := ps.byKey[poolKey{nat.AddrFrom(a), be}]
		if p != nil && p.Restore(t.Port, now, snat.Record{Until: t.Until, NextSeq: t.NextSeq, LastTS: t.LastTS, HasTS: t.HasTS}) {
			n++
		}
		ps.mu.Unlock()
	}
	return n, nil
}

// restoreLedger gives every tuple read back from the previous run's pool
// files to the pool that owns its port now: TIME_WAIT records as they
// were; tuples that were live as Unknown until the backend's time_wait
// has passed (or a probe proves the backend holds nothing), queued for
// the owning worker to probe. Tuples of pairs no longer configured are
// dropped. It returns how many of each it restored.
func (b *Balancer) restoreLedger(ts []ledgerTuple) (timeWait, unknown int) {
	now := b.sh.clock()
	tw := map[netip.AddrPort]int64{}
	for _, s := range b.sh.snap.Load().svcList {
		for _, be := range s.backends {
			tw[be.ap] = max(tw[be.ap], s.timeWaitNs)
		}
	}
	// Records in Until order keep each pool's ring in order.
	sort.SliceStable(ts, func(i, j int) bool { return ts[i].rec.Until < ts[j].rec.Until })
	for _, t := range ts {
		owner := snat.PortOwner(t.port, len(b.shards))
		ps := b.shards[owner]
		rec := t.rec
		if t.live {
			d := tw[t.backend]
			if d == 0 {
				d = int64(config.DefaultTimeWait)
			}
			rec = snat.Record{Until: now + d, Unknown: true}
		}
		ps.mu.Lock()
		p := ps.byKey[poolKey{t.snat, t.backend}]
		ok := p != nil && p.Restore(t.port, now, rec)
		ps.mu.Unlock()
		switch {
		case !ok:
		case t.live:
			unknown++
			// The first probe waits a moment: for the neighbours to be
			// resolved and the announcements to go out.
			b.workers[owner].probes = append(b.workers[owner].probes, probe{pool: p, port: t.port, next: now + int64(probeStart)})
		default:
			timeWait++
		}
	}
	return timeWait, unknown
}
