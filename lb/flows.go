package lb

import (
	"encoding/binary"

	"tslb/lb/snat"
	"tslb/nat"
)

// flowKey is the tuple of a packet as it arrives: from a client
// (src=client, dst=VIP) or from a backend (src=backend, dst=SNAT). It is
// packed and pointer-free (Tailscale flowtrack: netip keys were twice as
// slow).
type flowKey struct {
	src, dst     nat.Addr4
	sport, dport uint16
}

func (k flowKey) hash(seed uint64) uint64 {
	h := seed ^ uint64(binary.LittleEndian.Uint32(k.src[:]))<<32 ^ uint64(binary.LittleEndian.Uint32(k.dst[:]))
	h ^= uint64(k.sport)<<16 | uint64(k.dport)
	return mix64(h)
}

// flow is one client connection through tslb. It belongs to one worker
// (the one its client tuple and SNAT port steer to) and only that worker
// touches it, so it has no lock.
type flow struct {
	svc  *service
	be   *backend
	pool *snat.Pool

	client, vip, snat, baddr   nat.Addr4
	cport, vport, sport, bport uint16

	clientNIC *nic
	clientHop nat.Addr4

	created, last int64 // unix ns; last: the last packet either way
	state         nat.ConnState

	isn   uint32 // seq of the SYN sent to the backend (backend space)
	synTS uint32 // TSval of that SYN in rewrite mode

	capt *flowCapture // collision capture in progress
	// released: the connection finished (TIME_WAIT or RST) and its
	// backend tuple went back to the pool at once; the flow stays under
	// its client key only, until its timeout, to absorb late segments.
	released bool
	dead     bool

	tr      nat.Tracker
	x       nat.Translation
	syn     []byte // the SYN as sent to the backend, until it answers (repair)
	repairs uint8
	// backendFIN: the backend sent a FIN; backendTW: it will hold the
	// tuple in TIME_WAIT (it closed first, or simultaneously).
	backendFIN, backendTW bool
}

func (f *flow) clientKey() flowKey  { return flowKey{f.client, f.vip, f.cport, f.vport} }
func (f *flow) backendKey() flowKey { return flowKey{f.baddr, f.snat, f.bport, f.sport} }

// finished reports whether the connection is over (TIME_WAIT or closed).
func (f *flow) finished() bool { return f.state == nat.StateTimeWait || f.state == nat.StateClosed }

const numFlowShards = 64 // power of two; the reaper visits a quarter per round

// flowTable is one worker's flows, each under its two keys (client→VIP and
// backend→SNAT). It is split in shards only so that the reaper can visit
// it a part at a time; it has no lock: only its worker uses it.
type flowTable struct {
	seed   uint64
	shards [numFlowShards]map[flowKey]*flow
}

func newFlowTable() *flowTable {
	t := &flowTable{seed: 0x9e3779b97f4a7c15}
	for i := range t.shards {
		t.shards[i] = make(map[flowKey]*flow)
	}
	return t
}

func (t *flowTable) shard(k flowKey) map[flowKey]*flow {
	return t.shards[k.hash(t.seed)&(numFlowShards-1)]
}

func (t *flowTable) get(k flowKey) *flow { return t.shard(k)[k] }

// insert adds f under both keys.
func (t *flowTable) insert(f *flow) {
	t.shard(f.clientKey())[f.clientKey()] = f
	t.shard(f.backendKey())[f.backendKey()] = f
}

// removeKey deletes k if it points at f.
func (t *flowTable) removeKey(k flowKey, f *flow) {
	m := t.shard(k)
	if m[k] == f {
		delete(m, k)
	}
}

// remove deletes both keys of f if they still point at f.
func (t *flowTable) remove(f *flow) {
	t.removeKey(f.clientKey(), f)
	t.removeKey(f.backendKey(), f)
}

// collect appends to out the flows of shard i for which expired returns
// true, visiting each flow once (under its client key).
func (t *flowTable) collect(i int, out []*flow, expired func(*flow) bool) []*flow {
	for k, f := range t.shards[i] {
		if k == f.clientKey() && expired(f) {
			out = append(out, f)
		}
	}
	return out
}
