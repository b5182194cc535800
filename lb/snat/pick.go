package snat

import (
	"tslb/config"
	"tslb/nat"
)

// Kind is how a tuple was chosen for a new flow.
type Kind uint8

// Allocation kinds.
const (
	// Fresh: the backend holds no state for the tuple.
	Fresh Kind = iota
	// EarlyReuseISN: the tuple may be in the backend's TIME_WAIT; the
	// SYN's translated seq is after the old rcv_nxt and no timestamp can
	// veto it.
	EarlyReuseISN
	// EarlyReuseTS: the tuple may be in TIME_WAIT; the SYN's TSval is
	// newer than the old connection's (tslb's clock, or the client's).
	EarlyReuseTS
	// Forced: the tuple may be in TIME_WAIT and nothing guarantees the
	// backend accepts the SYN (exhaustion: reuse).
	Forced
	// NumKinds is the number of kinds.
	NumKinds
)

var kindNames = [NumKinds]string{"fresh", "early_reuse_isn", "early_reuse_ts", "forced"}

// String returns the kind's metric label: "fresh", "early_reuse_isn",
// "early_reuse_ts" or "forced".
func (k Kind) String() string {
	if k < NumKinds {
		return kindNames[k]
	}
	return "unknown"
}

// Request is what Pick needs to know of a new flow's SYN and service.
type Request struct {
	// Seq is the client's ISN (the SYN's seq).
	Seq uint32
	// HasTS and TSVal are the SYN's timestamp option, if any.
	HasTS bool
	TSVal uint32
	// Mode is the service's timestamp mode.
	Mode nat.TSMode
	// ISNTranslation allows shifting the flow's sequence space
	// (services[].isn_translation).
	ISNTranslation bool
	// Exhaustion is the service's policy when no tuple is safe.
	Exhaustion config.Exhaustion
}

// Tuple is a tuple chosen by Pick.
type Tuple struct {
	Pool *Pool
	Port uint16
	Kind Kind
	// Rec is the ledger record of a reused tuple: what to give back with
	// Unalloc if the flow is not made after all.
	Rec Record
	// ISN is the seq the SYN must carry toward the backend (backend
	// space); Seq unless ISN translation shifts it.
	ISN uint32
	// TSVal is the TSval the SYN carries toward the backend in rewrite
	// mode: the pool's clock, or above the ledger's last TSval.
	TSVal uint32
}

// Verdict is Pick's outcome.
type Verdict uint8

// Verdicts.
const (
	// OK: Tuple is allocated (live) in its pool.
	OK Verdict = iota
	// Wait: no tuple is safe now; the policy is to hold the SYN and ask
	// again later.
	Wait
	// Reject: no tuple is safe; the policy is to refuse the SYN (reset
	// the client).
	Reject
)

// ReuseCandidates bounds the TIME_WAIT tuples Pick examines per pool for
// one SYN.
const ReuseCandidates = 4

// Pick chooses the backend tuple of a new flow from pools (the pools
// toward the chosen backend, in the order to try: one per SNAT address),
// in this order: a fresh tuple from any pool; a tuple in TIME_WAIT whose
// reuse is proven safe (up to ReuseCandidates per pool, oldest TIME_WAIT
// first: unsafe candidates go back to the end of the pool's ring, so a SYN
// asked again later meets other tuples); else the exhaustion policy: reuse
// takes the first unsafe candidate anyway (Kind Forced), wait and reject
// return Wait or Reject with nothing allocated. now is unix ns.
func Pick(pools []*Pool, req *Request, now int64) (Tuple, Verdict) {
	for _, pl := range pools {
		if port, ok := pl.AllocFresh(now); ok {
			return Tuple{Pool: pl, Port: port, Kind: Fresh, ISN: req.Seq, TSVal: pl.Clock.At(now)}, OK
		}
	}
	var forced Tuple
	haveForced := false
	var unsafe [ReuseCandidates]Tuple
	for _, pl := range pools {
		nu := 0
		var found Tuple
		ok := false
		for c := 0; c < ReuseCandidates; c++ {
			port, reused, rec, live := pl.Alloc(now)
			if !live {
				break // every tuple is held by a live flow
			}
			if !reused { // freed since the first pass
				found, ok = Tuple{Pool: pl, Port: port, Kind: Fresh, ISN: req.Seq, TSVal: pl.Clock.At(now)}, true
				break
			}
			t := Tuple{Pool: pl, Port: port, Rec: rec, ISN: req.Seq, TSVal: pl.Clock.At(now)}
			if reuseSafely(&t, req) {
				found, ok = t, true
				break
			}
			unsafe[nu] = t
			nu++
		}
		for i := 0; i < nu; i++ {
			if !haveForced && !ok {
				forced, haveForced = unsafe[i], true
				continue
			}
			pl.Unalloc(unsafe[i].Port, now, unsafe[i].Rec)
		}
		if ok {
			if haveForced {
				forced.Pool.Unalloc(forced.Port, now, forced.Rec)
			}
			return found, OK
		}
	}
	switch {
	case req.Exhaustion == config.ExhaustReuse && haveForced:
		forced.Kind = Forced
		return forced, OK
	case haveForced:
		forced.Pool.Unalloc(forced.Port, now, forced.Rec)
	}
	if req.Exhaustion == config.ExhaustWait {
		return Tuple{}, Wait
	}
	return Tuple{}, Reject
}

// reuseSafely decides whether t, a tuple the backend may still hold in
// TIME_WAIT (record t.Rec), can carry the SYN so that the backend must
// accept it, and sets t's ISN, TSVal and Kind accordingly.
func reuseSafely(t *Tuple, req *Request) bool {
	rec := t.Rec
	if rec.Unknown {
		return false // the backend may hold it in any state
	}
	// An ISN past everything sent on the old connection, as the kernel's
	// own tw_snd_nxt + 65535 + 2 (tcp_twsk_unique).
	isnOK := req.ISNTranslation
	if isnOK {
		t.ISN = rec.NextSeq + 65537
	}
	switch req.Mode {
	case nat.TSRewrite:
		// tslb's TSval, newer than any sent on the tuple.
		if nat.SeqAfter(rec.LastTS+1, t.TSVal) {
			t.TSVal = rec.LastTS + 1
		}
		if rec.HasTS {
			t.Kind = EarlyReuseTS
			return true
		}
		// The old connection had no timestamps (backend without them):
		// the kernel looks at the sequence number only.
		t.Kind = EarlyReuseISN
		return isnOK
	case nat.TSPassthrough:
		if req.HasTS && rec.HasTS {
			switch {
			case nat.SeqAfter(req.TSVal, rec.LastTS): // newer TSval: accepted by TS
				t.Kind = EarlyReuseTS
				return true
			case req.TSVal == rec.LastTS: // PAWS passes, seq must be after
				t.Kind = EarlyReuseISN
				return isnOK
			default: // PAWS rejects whatever the seq
				return false
			}
		}
	}
	// No timestamp reaches the backend on this SYN (strip, or a client
	// without them), or the old connection had none: PAWS is not
	// evaluated and the seq decides.
	t.Kind = EarlyReuseISN
	return isnOK
}
