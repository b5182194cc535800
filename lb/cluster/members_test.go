package cluster

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"
)

const ms = int64(time.Millisecond)

// testCluster is n Members instances on one fake clock, exchanging
// heartbeats through the frame codec as the datapath would.
type testCluster struct {
	t   *testing.T
	now int64
	cfg []Member
	m   []*Members
	buf []byte
}

func testMembers(n int) []Member {
	var out []Member
	for i := 1; i <= n; i++ {
		out = append(out, Member{
			ID:   MemberID(i),
			MAC:  MAC{0x02, 0, 0, 0, 0, byte(i)},
			Addr: netip.AddrFrom4([4]byte{198, 18, 4, byte(10 + i)}),
			SNAT: []netip.Addr{netip.AddrFrom4([4]byte{198, 18, 1, byte(100 + i)})},
		})
	}
	return out
}

func newTestCluster(t *testing.T, n int) *testCluster {
	t.Helper()
	c := &testCluster{t: t, now: 1_000_000 * ms, cfg: testMembers(n)}
	for i := range n {
		m, err := New(Config{Cluster: ClusterID("test"), Self: MemberID(i + 1), Members: c.cfg, TableSize: 4099}, c.now)
		if err != nil {
			t.Fatal(err)
		}
		c.m = append(c.m, m)
	}
	return c
}

// beat makes instance i (0-based) send one heartbeat that every other
// instance in to receives (all others if to is empty).
func (c *testCluster) beat(i int, leaving bool, to ...int) {
	c.t.Helper()
	c.buf = AppendHeartbeat(c.buf[:0], c.m[i].NextHeartbeat(leaving))
	hb, err := ParseHeartbeat(c.buf)
	if err != nil {
		c.t.Fatalf("ParseHeartbeat of our own frame: %v", err)
	}
	for j, m := range c.m {
		if j == i || (len(to) > 0 && !slices.Contains(to, j)) {
			continue
		}
		if o := m.Observe(hb, c.now); o != Accepted {
			c.t.Fatalf("instance %d: Observe(heartbeat of %d) = %v", j+1, i+1, o)
		}
	}
}

// beatAll advances the clock by one interval rounds times, every instance
// sending a heartbeat and ticking each round.
func (c *testCluster) beatAll(rounds int, alive ...int) {
	c.t.Helper()
	for range rounds {
		c.now += 500 * ms
		for i := range c.m {
			if len(alive) > 0 && !slices.Contains(alive, i) {
				continue
			}
			c.beat(i, false, alive...)
		}
		for i, m := range c.m {
			if len(alive) == 0 || slices.Contains(alive, i) {
				m.Tick(c.now)
			}
		}
	}
}

func current(m *Members) []MemberID  { return m.Snapshot().Current.Members }
func previous(m *Members) []MemberID { return m.Snapshot().Previous.Members }

func TestMembersJoin(t *testing.T) {
	c := newTestCluster(t, 3)
	for i, m := range c.m {
		if got := current(m); !slices.Equal(got, []MemberID{MemberID(i + 1)}) {
			t.Fatalf("instance %d starts with view %v, want only itself", i+1, got)
		}
		if m.Ready(c.now) {
			t.Errorf("instance %d ready before hearing anyone", i+1)
		}
	}
	c.beatAll(1)
	for i, m := range c.m {
		if got := current(m); !slices.Equal(got, []MemberID{1, 2, 3}) {
			t.Errorf("instance %d: view %v after one round", i+1, got)
		}
		if !m.Ready(c.now) {
			t.Errorf("instance %d not ready after hearing everyone", i+1)
		}
		s := m.Snapshot()
		for id := MemberID(1); id <= 3; id++ {
			if !s.Live(id) || s.Draining(id) {
				t.Errorf("instance %d: member %d live %v draining %v", i+1, id, s.Live(id), s.Draining(id))
			}
		}
	}
	// One more round: every instance now hears views equal to its own.
	c.beatAll(1)
	for i, m := range c.m {
		for id := MemberID(1); id <= 3; id++ {
			if !m.Snapshot().Agrees(id) {
				t.Errorf("instance %d: member %d does not agree after two rounds", i+1, id)
			}
		}
	}
}

func TestMembersReadyAfterDeadAfter(t *testing.T) {
	c := newTestCluster(t, 3)
	m := c.m[0]
	if m.Ready(c.now + 1999*ms) {
		t.Errorf("ready before dead_after")
	}
	if !m.Ready(c.now + 2000*ms) {
		t.Errorf("not ready after dead_after with nobody heard")
	}
}

// TestMembersDeath: a member silent for DeadAfter leaves the current view
// (within DeadAfter + one tick interval of its last heartbeat) and stays
// in the previous one.
func TestMembersDeath(t *testing.T) {
	c := newTestCluster(t, 3)
	c.beatAll(2)
	lastHeard := c.now
	drain := func() {
		for _, m := range c.m {
			select {
			case <-m.Changes():
			default:
			}
		}
	}
	drain()
	// Instance 3 stops sending; 1 and 2 keep going.
	var diedAt int64
	for range 10 {
		c.beatAll(1, 0, 1)
		if diedAt == 0 && !slices.Contains(current(c.m[0]), 3) {
			diedAt = c.now
		}
	}
	if diedAt == 0 {
		t.Fatalf("member 3 never died: view %v", current(c.m[0]))
	}
	if d := diedAt - lastHeard; d < 2000*ms || d > 2500*ms {
		t.Errorf("detected %d ms after the last heartbeat, want 2000..2500", d/ms)
	}
	for i := range 2 {
		m := c.m[i]
		if got := current(m); !slices.Equal(got, []MemberID{1, 2}) {
			t.Errorf("instance %d: current %v", i+1, got)
		}
		if got := previous(m); !slices.Equal(got, []MemberID{1, 2, 3}) {
			t.Errorf("instance %d: previous %v", i+1, got)
		}
		if m.Snapshot().Live(3) {
			t.Errorf("instance %d: 3 still live", i+1)
		}
		select {
		case <-m.Changes():
		default:
			t.Errorf("instance %d: no change signalled", i+1)
		}
		st := m.Status()
		if st[2].Live || st[2].Deaths != 1 {
			t.Errorf("instance %d: status of 3 = %+v", i+1, st[2])
		}
	}
	// It comes back (same generation, later sequence numbers).
	c.beatAll(1)
	if got := current(c.m[0]); !slices.Equal(got, []MemberID{1, 2, 3}) {
		t.Errorf("after return: %v", got)
	}
	if got := previous(c.m[0]); !slices.Equal(got, []MemberID{1, 2}) {
		t.Errorf("after return: previous %v", got)
	}
}

func TestMembersLeaving(t *testing.T) {
	c := newTestCluster(t, 3)
	c.beatAll(1)
	c.beat(1, true) // instance 2 stops
	for _, i := range []int{0, 2} {
		if got := current(c.m[i]); !slices.Equal(got, []MemberID{1, 3}) {
			t.Errorf("instance %d: current %v after 2 left", i+1, got)
		}
		if c.m[i].Snapshot().Live(2) {
			t.Errorf("instance %d: 2 still live", i+1)
		}
	}
}

// TestMembersDraining: a draining member leaves the current view, stays
// in the previous one, and stays there while it lives even through a
// further change; it leaves both when it dies.
func TestMembersDraining(t *testing.T) {
	c := newTestCluster(t, 3)
	c.beatAll(1)
	c.m[1].SetDraining(true)
	if got := current(c.m[1]); !slices.Equal(got, []MemberID{1, 3}) {
		t.Errorf("draining instance's own current view %v", got)
	}
	c.beatAll(1)
	for i, m := range c.m {
		if got := current(m); !slices.Equal(got, []MemberID{1, 3}) {
			t.Errorf("instance %d: current %v, want 2 out", i+1, got)
		}
		if got := previous(m); !slices.Equal(got, []MemberID{1, 2, 3}) {
			t.Errorf("instance %d: previous %v, want 2 in", i+1, got)
		}
		if !m.Snapshot().Draining(2) || !m.Snapshot().Live(2) {
			t.Errorf("instance %d: 2 not live and draining", i+1)
		}
	}
	// Member 3 dies while 2 drains: the previous view becomes {1, 3} plus
	// the draining 2, which is the table 2's flows were made with.
	before := c.m[0].Snapshot().Previous
	for range 6 {
		c.beatAll(1, 0, 1)
	}
	s := c.m[0].Snapshot()
	if !slices.Equal(s.Current.Members, []MemberID{1}) || !slices.Equal(s.Previous.Members, []MemberID{1, 2, 3}) {
		t.Fatalf("after 3 died: current %v previous %v", s.Current.Members, s.Previous.Members)
	}
	if !slices.Equal(s.Previous.table, before.table) {
		t.Errorf("the previous table changed although its member set did not")
	}
	// 2 stops draining: back in the current view.
	c.m[1].SetDraining(false)
	c.beatAll(1, 0, 1)
	if got := current(c.m[0]); !slices.Equal(got, []MemberID{1, 2}) {
		t.Errorf("after 2 stopped draining: %v", got)
	}
	// 2 drains again, then dies: it is no longer live, so nothing is sent
	// to it; the previous table keeps its slots (rebuilding it without 2
	// would move the survivors' flows too).
	c.m[1].SetDraining(true)
	c.beatAll(1, 0, 1)
	if got := previous(c.m[0]); !slices.Contains(got, 2) {
		t.Fatalf("draining 2 not in previous %v", got)
	}
	for range 6 {
		c.beatAll(1, 0)
	}
	s = c.m[0].Snapshot()
	if s.Current.Has(2) || s.Live(2) {
		t.Errorf("dead draining member live or current: current %v", s.Current.Members)
	}
	for h := uint64(0); h < 4099; h++ {
		if s.Previous.Owner(h) != 2 {
			continue
		}
		if v, to := s.Decide(h, false, false, 0); v != DropNotHeld {
			t.Fatalf("a frame of the dead member's flow: %v to %d, want not_held", v, to)
		}
	}
}

// TestMembersRestart: a larger generation is a restart (counted, the member
// stays live); an older generation and replayed sequence numbers are stale.
func TestMembersRestart(t *testing.T) {
	c := newTestCluster(t, 2)
	c.beatAll(2)
	old := c.m[1].NextHeartbeat(false)
	// Instance 2 restarts 300 ms later (a new Members, a new generation).
	c.now += 300 * ms
	m2, err := New(c.m[1].Config(), c.now)
	if err != nil {
		t.Fatal(err)
	}
	c.m[1] = m2
	c.beat(1, false, 0)
	st := c.m[0].Status()[1]
	if !st.Live || st.Restarts != 1 || st.Generation != m2.Generation() {
		t.Errorf("after restart: %+v", st)
	}
	if o := c.m[0].Observe(old, c.now); o != Stale {
		t.Errorf("old generation: %v, want stale", o)
	}
	hb := m2.NextHeartbeat(false)
	if o := c.m[0].Observe(hb, c.now); o != Accepted {
		t.Errorf("fresh: %v", o)
	}
	if o := c.m[0].Observe(hb, c.now); o != Stale {
		t.Errorf("replayed: %v, want stale", o)
	}
}

func TestMembersRejects(t *testing.T) {
	c := newTestCluster(t, 2)
	good := c.m[1].NextHeartbeat(false)
	for _, tt := range []struct {
		name string
		edit func(*Heartbeat)
		want Outcome
	}{
		{"other cluster", func(h *Heartbeat) { h.Cluster = ClusterID("other") }, OtherCluster},
		{"unknown member", func(h *Heartbeat) { h.From = 9 }, UnknownMember},
		{"wrong mac", func(h *Heartbeat) { h.Src[5] = 0x77 }, WrongMAC},
		{"own id", func(h *Heartbeat) { h.From = 1 }, FromSelf},
	} {
		hb := good
		tt.edit(&hb)
		if o := c.m[0].Observe(hb, c.now); o != tt.want {
			t.Errorf("%s: %v, want %v", tt.name, o, tt.want)
		}
	}
	if got := current(c.m[0]); !slices.Equal(got, []MemberID{1}) {
		t.Errorf("rejected heartbeats changed the view: %v", got)
	}
	st := c.m[0].Stats()
	for _, o := range []Outcome{OtherCluster, UnknownMember, WrongMAC, FromSelf} {
		if st[o] != 1 {
			t.Errorf("Stats[%v] = %d, want 1", o, st[o])
		}
	}
	if Outcome(99).String() == "" || Stale.String() != "stale" {
		t.Errorf("Outcome strings")
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	ms := testMembers(3)
	for _, tt := range []struct {
		name string
		edit func(*Config)
		msg  string
	}{
		{"no members", func(c *Config) { c.Members = nil }, "0 members"},
		{"self missing", func(c *Config) { c.Self = 9 }, "self 9"},
		{"id 0", func(c *Config) { c.Members[0].ID = 0 }, "ID 0"},
		{"dup id", func(c *Config) { c.Members[1].ID = 1 }, "duplicate member ID 1"},
		{"dup mac", func(c *Config) { c.Members[1].MAC = c.Members[0].MAC }, "same MAC"},
		{"multicast mac", func(c *Config) { c.Members[1].MAC[0] = 1 }, "multicast"},
		{"dead before interval", func(c *Config) { c.DeadAfter = c.Interval }, "must exceed"},
		{"table not prime", func(c *Config) { c.TableSize = 65536 }, "prime"},
		{"table too small", func(c *Config) { c.TableSize = 101 }, "at least 100 per member"},
	} {
		cfg := Config{Cluster: 1, Self: 1, Members: slices.Clone(ms), Interval: DefaultInterval, DeadAfter: DefaultDeadAfter}
		for i := range cfg.Members {
			cfg.Members[i].SNAT = nil
		}
		tt.edit(&cfg)
		_, err := New(cfg, 1)
		if err == nil || !strings.Contains(err.Error(), tt.msg) {
			t.Errorf("%s: err %v, want %q", tt.name, err, tt.msg)
		}
	}
}

// TestObserveSteadyStateAllocs: a heartbeat that changes nothing costs no
// allocation (it is handled per frame on the front link).
func TestObserveSteadyStateAllocs(t *testing.T) {
	c := newTestCluster(t, 3)
	c.beatAll(3)
	m := c.m[0]
	frames := make([][]byte, 0, 2000)
	for range cap(frames) {
		frames = append(frames, AppendHeartbeat(nil, c.m[1].NextHeartbeat(false)))
	}
	i := 0
	if n := testing.AllocsPerRun(1000, func() {
		hb, err := ParseHeartbeat(frames[i])
		i++
		if err != nil || m.Observe(hb, c.now) != Accepted {
			t.Fatal("not accepted")
		}
	}); n != 0 {
		t.Errorf("Parse+Observe of a steady heartbeat: %v allocs", n)
	}
}

func BenchmarkObserve(b *testing.B) {
	ms := testMembers(3)
	m, _ := New(Config{Cluster: 1, Self: 1, Members: ms}, 1)
	peer, _ := New(Config{Cluster: 1, Self: 2, Members: ms}, 1)
	hb := peer.NextHeartbeat(false)
	b.ReportAllocs()
	for i := range b.N {
		hb.Seq = uint64(i + 1)
		m.Observe(hb, int64(i))
	}
}

// TestSetMembers: a reload adds a fourth member (unheard until it beats),
// changes the MAC of another (its state restarts) and then removes one.
func TestSetMembers(t *testing.T) {
	c := newTestCluster(t, 3)
	c.beatAll(1)
	m := c.m[0]
	four := testMembers(4)
	four[1].MAC[5] = 0x42 // member 2 moved to another NIC
	if err := m.SetMembers(four); err != nil {
		t.Fatal(err)
	}
	s := m.Snapshot()
	if !slices.Equal(s.Current.Members, []MemberID{1, 3}) || s.Live(2) || s.Live(4) {
		t.Errorf("after reload: current %v live2 %v live4 %v", s.Current.Members, s.Live(2), s.Live(4))
	}
	if mac, _ := s.MAC(2); mac[5] != 0x42 {
		t.Errorf("member 2's MAC not updated: %v", mac)
	}
	// Its old MAC is refused now; the new one is accepted.
	hb := c.m[1].NextHeartbeat(false)
	if o := m.Observe(hb, c.now); o != WrongMAC {
		t.Errorf("old MAC: %v", o)
	}
	hb.Src[5] = 0x42
	hb.Seq++
	if o := m.Observe(hb, c.now); o != Accepted {
		t.Errorf("new MAC: %v", o)
	}
	if !m.Snapshot().Live(2) {
		t.Errorf("2 not live after a heartbeat from its new MAC")
	}
	// Remove member 3: gone from the current view, not live, no MAC.
	if err := m.SetMembers(testMembers(2)); err != nil {
		t.Fatal(err)
	}
	s = m.Snapshot()
	if s.Current.Has(3) || s.Live(3) {
		t.Errorf("removed member still current or live: %v", s.Current.Members)
	}
	if _, ok := s.MAC(3); ok {
		t.Errorf("removed member still has a MAC")
	}
	// Own entry must stay.
	bad := testMembers(2)
	bad[0].MAC[5] = 0x99
	if err := m.SetMembers(bad); err == nil {
		t.Errorf("own MAC change accepted")
	}
	if err := m.SetMembers(testMembers(2)[1:]); err == nil {
		t.Errorf("a list without this instance accepted")
	}
}
