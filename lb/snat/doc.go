// Package snat decides which backend tuple (SNAT address and port toward a
// backend address:port) a new flow gets, and what its SYN must carry so
// that a backend still holding that tuple in TIME_WAIT accepts it.
//
// It owns the per-(SNAT address, backend) port pools with their TIME_WAIT
// ledger (Pool), tslb's timestamp clock toward each backend (Clock), and
// the choice itself (Pick): a fresh tuple first, then a tuple in TIME_WAIT
// whose reuse is proven safe, then the service's exhaustion policy. It is
// pure: no goroutines, no locks, no clock of its own — the caller passes
// now (unix ns) in and gets a verdict back. It may not import lb or
// anything that does I/O.
//
// The kernel rule it relies on (net/ipv4/tcp_minisocks.c,
// tcp_timewait_state_process; see ../shared/reference/tcp-timewait.md): a
// SYN that arrives for a 4-tuple in TIME_WAIT is accepted (the old
// connection is replaced) iff PAWS does not reject it — when both sides
// used timestamps, its TSval must not be older than ts_recent — and its
// seq is after the old rcv_nxt or its TSval is newer than ts_recent.
// Otherwise the backend answers with the old connection's ACK (the
// "old ACK" the collision detector in lb looks for). So a reuse is safe
// when tslb can make the SYN's seq pass rcv_nxt (ISN translation: the
// kernel's own choice, tw_snd_nxt + 65535 + 2 in tcp_twsk_unique) without
// a PAWS veto, or make its TSval newer (tslb's own clock in rewrite mode).
package snat
