package cluster

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// MemberID identifies one tslb instance of a cluster (cluster.members[].id,
// 1..65535). 0 means none.
type MemberID uint16

// Member is one configured instance.
type Member struct {
	// ID is unique in the cluster and nonzero.
	ID MemberID
	// MAC is the instance's MAC on the front segment: heartbeats come from
	// it and forwarded frames go to it.
	MAC MAC
	// Addr is the instance's kernel address on the front segment (BGP
	// next hop and session address).
	Addr netip.Addr
	// SNAT are the SNAT addresses the instance owns, disjoint from every
	// other member's.
	SNAT []netip.Addr
}

// Defaults of Config.
const (
	DefaultInterval  = 500 * time.Millisecond
	DefaultDeadAfter = 2 * time.Second
)

// Config configures Members.
type Config struct {
	// Cluster is the cluster's ID, ClusterID(cluster.name).
	Cluster uint32
	// Self is this instance's ID; it must be one of Members.
	Self MemberID
	// Members are every instance of the cluster, this one included
	// (1..MaxMembers, unique IDs and MACs).
	Members []Member
	// Interval is how often the datapath sends a heartbeat (0 means
	// DefaultInterval). Members does not send: it only numbers them.
	Interval time.Duration
	// DeadAfter is how long a member may stay silent before it is dead (0
	// means DefaultDeadAfter); more than Interval.
	DeadAfter time.Duration
	// TableSize is the number of slots of each Maglev table, a prime of
	// at least 100 per member (0 means DefaultTableSize). Every instance
	// of a cluster must use the same.
	TableSize uint64
}

// Outcome says what Observe did with a heartbeat. Every outcome is
// counted (Stats).
type Outcome uint8

// Observe outcomes.
const (
	Accepted      Outcome = iota // a configured member, newer than what was seen
	OtherCluster                 // another cluster's ID: ignored
	UnknownMember                // an ID not configured: ignored
	WrongMAC                     // a configured ID from another MAC: ignored
	FromSelf                     // this instance's ID from another MAC (a duplicate ID on the segment) or its own echo
	Stale                        // an older generation, or an old sequence number: ignored
	numOutcomes
)

var outcomeNames = [numOutcomes]string{"accepted", "other_cluster", "unknown_member", "wrong_mac", "from_self", "stale"}

// String returns the outcome as a metric label.
func (o Outcome) String() string {
	if o < numOutcomes {
		return outcomeNames[o]
	}
	return fmt.Sprintf("Outcome(%d)", o)
}

// peer is the state of one configured member as this instance sees it.
type peer struct {
	Member
	live       bool
	draining   bool
	heard      bool
	lastHeard  int64
	generation uint64
	seq        uint64
	viewHash   uint64
	restarts   uint64
	deaths     uint64
	ctr        *PeerCounters
}

// Members is the membership state machine of one instance. Observe and
// Tick may be called from any goroutine; readers take Snapshot, an
// immutable value behind an atomic pointer.
//
// A member is live from its first accepted heartbeat until it has been
// silent for DeadAfter or says it is leaving. The current view holds the
// live members that are not draining (this instance included unless it
// drains). When the current view changes, the view it replaces becomes
// the previous view, and every live draining member is added to it, so a
// draining member's flows keep reaching it through the second chance as
// long as it lives. An instance that starts while the others run (a
// restart, a new member) takes as its previous view the current one
// without itself until it has heard every member or DeadAfter passed:
// the view the others had before it joined. Only the last change is remembered: flows that
// survived one change but not their owner's second one are lost (counted
// by the datapath as not held by any live instance).
type Members struct {
	cfg       Config
	self      int // index of Self in peers
	deadAfter int64
	m         uint64
	started   int64

	mu    sync.Mutex
	peers []peer // sorted by ID
	seq   uint64
	epoch uint64
	gen   uint64
	// prevBase is the current view before the last change of the
	// current view; the previous view is it plus the draining members.
	prevBase *View
	// joining is set from New until every member has been heard or
	// DeadAfter has passed: while it is, the previous view is the current
	// one without this instance (the view the others had before it
	// joined), so that the flows they made meanwhile get their second
	// chance at the member that holds them.
	joining bool
	stats   [numOutcomes]atomic.Uint64
	changes chan struct{}

	snap atomic.Pointer[Snapshot]
}

// New validates cfg and returns the state machine of instance cfg.Self,
// started at now (nanoseconds on the caller's clock, which must not go
// backwards). The instance's generation is now, so a restarted instance
// announces a larger one as long as its clock is the wall clock. At first
// only this instance is live: the others join as their heartbeats arrive
// (see Ready).
func New(cfg Config, now int64) (*Members, error) {
	if cfg.Interval == 0 {
		cfg.Interval = DefaultInterval
	}
	if cfg.DeadAfter == 0 {
		cfg.DeadAfter = DefaultDeadAfter
	}
	if cfg.TableSize == 0 {
		cfg.TableSize = DefaultTableSize
	}
	if err := cfg.check(); err != nil {
		return nil, err
	}
	m := &Members{
		cfg:       cfg,
		deadAfter: int64(cfg.DeadAfter),
		m:         cfg.TableSize,
		started:   now,
		gen:       uint64(max(now, 1)),
		changes:   make(chan struct{}, 1),
	}
	for _, mb := range cfg.Members {
		mb.SNAT = slices.Clone(mb.SNAT)
		m.peers = append(m.peers, peer{Member: mb, ctr: &PeerCounters{}})
	}
	slices.SortFunc(m.peers, func(a, b peer) int { return int(a.ID) - int(b.ID) })
	for i := range m.peers {
		if m.peers[i].ID == cfg.Self {
			m.self = i
			m.peers[i].live, m.peers[i].heard, m.peers[i].generation = true, true, m.gen
		}
	}
	m.epoch = 1
	m.joining = len(m.peers) > 1
	cur := newView(m.liveIDs(), m.m, m.epoch)
	m.prevBase = cur
	m.snap.Store(m.newSnapshot(cur, cur))
	return m, nil
}

// check validates a Config whose defaults are set.
func (c *Config) check() error {
	var errs []error
	if len(c.Members) == 0 || len(c.Members) > MaxMembers {
		errs = append(errs, fmt.Errorf("cluster: %d members; want 1..%d", len(c.Members), MaxMembers))
	}
	ids := map[MemberID]bool{}
	macs := map[MAC]MemberID{}
	self := false
	for _, mb := range c.Members {
		switch {
		case mb.ID == 0:
			errs = append(errs, errors.New("cluster: member ID 0"))
		case ids[mb.ID]:
			errs = append(errs, fmt.Errorf("cluster: duplicate member ID %d", mb.ID))
		}
		ids[mb.ID] = true
		self = self || mb.ID == c.Self
		if mb.MAC[0]&1 != 0 || mb.MAC == (MAC{}) {
			errs = append(errs, fmt.Errorf("cluster: member %d: MAC %x is multicast or zero", mb.ID, mb.MAC))
		} else if o, dup := macs[mb.MAC]; dup {
			errs = append(errs, fmt.Errorf("cluster: members %d and %d have the same MAC", o, mb.ID))
		}
		macs[mb.MAC] = mb.ID
	}
	if !self {
		errs = append(errs, fmt.Errorf("cluster: self %d is not a member", c.Self))
	}
	if c.Interval <= 0 || c.DeadAfter <= c.Interval {
		errs = append(errs, fmt.Errorf("cluster: dead after %v must exceed the interval %v", c.DeadAfter, c.Interval))
	}
	if !isPrime(c.TableSize) || c.TableSize < 100*uint64(max(len(c.Members), 1)) || c.TableSize > 1<<24 {
		errs = append(errs, fmt.Errorf("cluster: table size %d must be a prime of at least 100 per member and at most 2^24", c.TableSize))
	}
	return errors.Join(errs...)
}

// index returns the position of id in m.peers, or -1.
func (m *Members) index(id MemberID) int {
	i, ok := slices.BinarySearchFunc(m.peers, id, func(p peer, id MemberID) int { return int(p.ID) - int(id) })
	if !ok {
		return -1
	}
	return i
}

// Observe takes a parsed heartbeat received at now and says what it did
// with it. It returns at once, allocating nothing, unless the heartbeat
// changes the membership (a member joins, drains, leaves or restarts), in
// which case it publishes a new Snapshot and signals Changes.
func (m *Members) Observe(hb Heartbeat, now int64) Outcome {
	o := m.observe(hb, now)
	m.stats[o].Add(1)
	return o
}

func (m *Members) observe(hb Heartbeat, now int64) Outcome {
	m.mu.Lock()
	defer m.mu.Unlock()
	if hb.Cluster != m.cfg.Cluster {
		return OtherCluster
	}
	i := m.index(hb.From) // m.peers is replaced by SetMembers: under m.mu
	if i < 0 {
		return UnknownMember
	}
	if i == m.self {
		return FromSelf
	}
	p := &m.peers[i]
	if hb.Src != p.MAC {
		return WrongMAC
	}
	switch {
	case hb.Generation < p.generation:
		return Stale
	case hb.Generation == p.generation && p.heard && hb.Seq <= p.seq:
		return Stale
	}
	changed := false
	if p.heard && hb.Generation > p.generation {
		p.restarts++
	}
	p.heard, p.generation, p.seq, p.lastHeard = true, hb.Generation, hb.Seq, now
	agreeWas := p.live && p.viewHash == m.snap.Load().Current.hash
	p.viewHash = hb.ViewHash
	if hb.Leaving {
		if p.live {
			p.live, p.draining = false, false
			p.deaths++
			changed = true
		}
	} else {
		if !p.live || p.draining != hb.Draining {
			changed = true
		}
		p.live, p.draining = true, hb.Draining
	}
	if changed {
		m.publish()
	} else if agree := hb.ViewHash == m.snap.Load().Current.hash; agree != agreeWas {
		m.republish()
	}
	if m.joining && m.allHeard() {
		m.joining = false
	}
	return Accepted
}

// Tick expires members silent for DeadAfter at now and reports whether
// the membership changed. Call it at least every Interval.
func (m *Members) Tick(now int64) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.joining && now-m.started >= m.deadAfter {
		m.joining = false
	}
	changed := false
	for i := range m.peers {
		p := &m.peers[i]
		if i == m.self || !p.live || now-p.lastHeard < m.deadAfter {
			continue
		}
		p.live, p.draining = false, false
		p.deaths++
		changed = true
	}
	if changed {
		m.publish()
	}
	return changed
}

// SetDraining sets whether this instance drains: a draining instance
// leaves its own current view (it takes no new flows) and stays in the
// previous one; its heartbeats say so, and the others do the same.
func (m *Members) SetDraining(draining bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	p := &m.peers[m.self]
	if p.draining == draining {
		return
	}
	p.draining = draining
	m.publish()
}

// NextHeartbeat returns the next heartbeat this instance sends, with the
// next sequence number; src is its front MAC (Config's entry for Self).
// leaving marks the last one of a stopping instance.
func (m *Members) NextHeartbeat(leaving bool) Heartbeat {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.seq++
	self := &m.peers[m.self]
	cur := m.snap.Load().Current
	return Heartbeat{
		Src: self.MAC, Cluster: m.cfg.Cluster, From: self.ID, Generation: m.gen, Seq: m.seq,
		Draining: self.draining, Leaving: leaving, ViewHash: cur.hash, ViewLen: uint16(len(cur.Members)),
	}
}

// Ready reports whether this instance has listened long enough to know
// the others: every configured member has been heard from, or DeadAfter
// has passed since New. Until then its view may lack live members, so it
// should not announce its VIPs yet.
func (m *Members) Ready(now int64) bool {
	if now-m.started >= m.deadAfter {
		return true
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.allHeard()
}

// allHeard reports whether every configured member has been heard. m.mu
// is held.
func (m *Members) allHeard() bool {
	for i := range m.peers {
		if !m.peers[i].heard {
			return false
		}
	}
	return true
}

// Snapshot returns the current snapshot (one atomic load).
func (m *Members) Snapshot() *Snapshot { return m.snap.Load() }

// Changes is signalled (without blocking, coalescing) whenever a new
// Snapshot with a new current view is published.
func (m *Members) Changes() <-chan struct{} { return m.changes }

// Config returns the configuration, defaults filled in.
func (m *Members) Config() Config { return m.cfg }

// Generation is this instance's generation.
func (m *Members) Generation() uint64 { return m.gen }

// MemberStatus is one member's state, for metrics and logs.
type MemberStatus struct {
	Member
	Self       bool
	Live       bool
	Draining   bool
	LastHeard  int64 // 0: never
	Generation uint64
	Restarts   uint64 // generations seen after the first
	Deaths     uint64 // times it went from live to dead
	Agrees     bool   // its last heartbeat's view hash equals our current view's
	// Forwarded and Received count the client frames this instance
	// forwarded to the member and received from it (PeerCounters).
	Forwarded, Received uint64
}

// Status returns every member's state, by ascending ID.
func (m *Members) Status() []MemberStatus {
	m.mu.Lock()
	defer m.mu.Unlock()
	cur := m.snap.Load().Current
	out := make([]MemberStatus, len(m.peers))
	for i, p := range m.peers {
		out[i] = MemberStatus{
			Member: p.Member, Self: i == m.self, Live: p.live, Draining: p.draining, LastHeard: p.lastHeard,
			Generation: p.generation, Restarts: p.restarts, Deaths: p.deaths,
			Agrees:    i == m.self || (p.live && p.viewHash == cur.hash),
			Forwarded: p.ctr.ForwardedTo.Load(), Received: p.ctr.ReceivedFrom.Load(),
		}
	}
	return out
}

// Stats counts Observe's outcomes, indexed by Outcome.
func (m *Members) Stats() [numOutcomes]uint64 {
	var s [numOutcomes]uint64
	for i := range s {
		s[i] = m.stats[i].Load()
	}
	return s
}

// NumOutcomes is the number of Outcome values (the length of Stats).
const NumOutcomes = int(numOutcomes)

// liveIDs returns the live, non-draining members, ascending. m.mu is
// held (or m is not shared yet).
func (m *Members) liveIDs() []MemberID {
	var ids []MemberID
	for _, p := range m.peers {
		if p.live && !p.draining {
			ids = append(ids, p.ID)
		}
	}
	return ids
}

// publish recomputes the views: if the current view's member set changed,
// the old current view becomes the base of the previous one; the previous
// view is that base with every live draining member added. It stores a new
// Snapshot and signals Changes. m.mu is held.
func (m *Members) publish() {
	old := m.snap.Load()
	cur := old.Current
	if ids := m.liveIDs(); !slices.Equal(ids, cur.Members) {
		m.prevBase = cur
		if m.joining {
			m.epoch++
			m.prevBase = newView(slices.DeleteFunc(slices.Clone(ids), func(id MemberID) bool { return id == m.cfg.Self }), m.m, m.epoch)
		}
		m.epoch++
		cur = newView(ids, m.m, m.epoch)
	}
	ids := slices.Clone(m.prevBase.Members)
	for _, p := range m.peers {
		if p.live && p.draining && !m.prevBase.Has(p.ID) {
			ids = append(ids, p.ID)
		}
	}
	slices.Sort(ids)
	prev := old.Previous
	switch {
	case slices.Equal(ids, m.prevBase.Members):
		prev = m.prevBase
	case !slices.Equal(ids, prev.Members):
		m.epoch++
		prev = newView(ids, m.m, m.epoch)
	}
	m.snap.Store(m.newSnapshot(cur, prev))
	m.signal()
}

// republish stores a snapshot with the same views and fresh liveness and
// agreement. m.mu is held.
func (m *Members) republish() {
	old := m.snap.Load()
	m.snap.Store(m.newSnapshot(old.Current, old.Previous))
}

func (m *Members) signal() {
	select {
	case m.changes <- struct{}{}:
	default:
	}
}

// newSnapshot builds a snapshot of cur and prev with the liveness and
// agreement of now. m.mu is held.
func (m *Members) newSnapshot(cur, prev *View) *Snapshot {
	s := &Snapshot{Self: m.cfg.Self, Current: cur, Previous: prev}
	for i, p := range m.peers {
		s.macs = append(s.macs, memberMAC{p.ID, p.MAC, p.ctr})
		if p.live {
			s.live = append(s.live, p.ID)
			if i == m.self || p.viewHash == cur.hash {
				s.agree = append(s.agree, p.ID)
			}
			if p.draining {
				s.draining = append(s.draining, p.ID)
			}
		}
	}
	return s
}

// SetMembers replaces the configured members (a reload of
// cluster.members). This instance's own entry must stay the same. A
// member whose ID and MAC stay keeps its state (liveness, generation,
// counters); a new or changed one starts unheard; a removed one leaves
// every view it was in from the next change on and is never forwarded to
// again (Snapshot.Live and MAC no longer know it). It publishes a new
// Snapshot.
func (m *Members) SetMembers(members []Member) error {
	cfg := m.cfg
	cfg.Members = members
	if err := cfg.check(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	self := m.peers[m.self]
	old := map[MemberID]peer{}
	for _, p := range m.peers {
		old[p.ID] = p
	}
	var peers []peer
	for _, mb := range members {
		mb.SNAT = slices.Clone(mb.SNAT)
		if mb.ID == self.ID && mb.MAC != self.MAC {
			return fmt.Errorf("cluster: this instance's MAC cannot change without a restart")
		}
		p, ok := old[mb.ID]
		if !ok || p.MAC != mb.MAC {
			p = peer{ctr: &PeerCounters{}}
		}
		p.Member = mb
		peers = append(peers, p)
	}
	slices.SortFunc(peers, func(a, b peer) int { return int(a.ID) - int(b.ID) })
	m.peers = peers
	m.self = m.index(self.ID)
	m.cfg = cfg
	m.publish()
	return nil
}
