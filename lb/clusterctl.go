package lb

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"tslb/config"
	"tslb/lb/cluster"
	"tslb/lb/cluster/bgp"
	"tslb/nat"
)

// The cluster's control part: the membership machine and the BGP speaker
// of one instance, the announcements, drain and leave. The datapath part
// is clusterpath.go.

// Announcer is the BGP speaker as the balancer drives it:
// *bgp.Speaker, or a fake in tests (Options.NewAnnouncer).
type Announcer interface {
	Start(ctx context.Context) error
	Announce(prefix netip.Prefix, nextHop netip.Addr) error
	Withdraw(prefix netip.Prefix) error
	Announced() []netip.Prefix
	Peers(ctx context.Context) ([]bgp.PeerState, error)
	SetPeers(ctx context.Context, peers []bgp.Peer) error
	Stop() error
}

// Why a VIP is not announced (status and logs).
const (
	notReady         = "not_ready"          // the membership has not heard every member nor waited dead_after
	notHealthy       = "no_healthy_backend" // no service of the VIP has a usable backend
	notDraining      = "draining"           // tslb drain or SIGTERM
	notIPv6          = "ipv6_not_supported" // the speaker carries IPv4 unicast only
	reconcileEvery   = 200 * time.Millisecond
	speakerRetry     = 5 * time.Second
	leaveWait        = 500 * time.Millisecond
	defaultConnRetry = time.Second
)

// clusterCtl is one instance's cluster control: created by New when the
// configuration has a cluster section, run by Run.
type clusterCtl struct {
	name    string
	members *cluster.Members
	path    *clusterPath
	clc     []*clusterCounters // by worker
	speaker Announcer
	nextHop netip.Addr
	log     *slog.Logger
	clock   func() int64
	wake    func() // wakes worker 0 (a heartbeat to send now)

	draining atomic.Bool

	mu         sync.Mutex
	started    bool // the speaker started
	left       bool // leave ran: the speaker stays stopped
	lastStart  time.Time
	announced  map[netip.Prefix]bool
	why        map[netip.Prefix]string // VIPs not announced, and why
	announces  uint64
	withdrawn  uint64
	lastErr    string
	readySince time.Time
}

// clusterMembers translates the configuration's member list.
func clusterMembers(cl *config.Cluster) []cluster.Member {
	out := make([]cluster.Member, 0, len(cl.Members))
	for _, m := range cl.Members {
		out = append(out, cluster.Member{ID: cluster.MemberID(m.ID), MAC: cluster.MAC(m.MAC), Addr: m.Address, SNAT: slices.Clone(m.SNATAddresses)})
	}
	return out
}

// bgpPeers translates cluster.bgp.peers.
func bgpPeers(b config.BGP) []bgp.Peer {
	out := make([]bgp.Peer, 0, len(b.Peers))
	for _, p := range b.Peers {
		bp := bgp.Peer{Address: p.Address, ASN: p.ASN, HoldTime: p.HoldTime, Passive: p.Passive, ConnectRetry: defaultConnRetry}
		if p.BFD != nil {
			bp.BFD = &bgp.BFD{MinTx: p.BFD.MinTx, MinRx: p.BFD.MinRx, Multiplier: uint8(p.BFD.Multiplier)}
		}
		out = append(out, bp)
	}
	return out
}

// newClusterCtl builds the membership machine and the (not started)
// speaker of cfg's cluster section; front is the front link.
func newClusterCtl(cfg *config.Config, front *nic, sh *shared, newAnnouncer func(bgp.Config) (Announcer, error)) (*clusterCtl, error) {
	cl := cfg.Cluster
	self := cl.Self()
	if self == nil {
		return nil, fmt.Errorf("lb: cluster.id %d is not a member", cl.ID)
	}
	m, err := cluster.New(cluster.Config{Cluster: cluster.ClusterID(cl.Name), Self: cluster.MemberID(cl.ID),
		Members: clusterMembers(cl), Interval: cl.HeartbeatInterval, DeadAfter: cl.DeadAfter}, sh.clock())
	if err != nil {
		return nil, fmt.Errorf("lb: %w", err)
	}
	if newAnnouncer == nil {
		newAnnouncer = func(c bgp.Config) (Announcer, error) { return bgp.NewSpeaker(c) }
	}
	sp, err := newAnnouncer(bgp.Config{ASN: cl.BGP.ASN, RouterID: cl.BGP.RouterID, LocalAddress: cl.BGP.LocalAddress,
		ListenPort: int32(cl.BGP.ListenPort), Peers: bgpPeers(cl.BGP), Logger: sh.log})
	if err != nil {
		return nil, fmt.Errorf("lb: %w", err)
	}
	c := &clusterCtl{name: cl.Name, members: m, speaker: sp, nextHop: self.Address, log: sh.log, clock: sh.clock,
		path:      &clusterPath{members: m, front: front, interval: int64(m.Config().Interval)},
		announced: map[netip.Prefix]bool{}, why: map[netip.Prefix]string{}}
	return c, nil
}

// run starts the speaker and keeps the announcements right until ctx
// ends: every reconcileEvery, and at once when the membership changes.
func (c *clusterCtl) run(ctx context.Context, snap func() *snapshot) {
	tick := time.NewTicker(reconcileEvery)
	defer tick.Stop()
	for {
		c.reconcile(ctx, snap())
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-c.members.Changes():
			c.logView()
		}
	}
}

func (c *clusterCtl) logView() {
	s := c.members.Snapshot()
	c.log.Info("cluster: view changed", "current", s.Current.Members, "previous", s.Previous.Members, "live", s.LiveMembers())
}

// startSpeaker starts the speaker if it is not yet (retrying every
// speakerRetry after a failure). c.mu is held.
func (c *clusterCtl) startSpeaker(ctx context.Context) bool {
	if c.started {
		return true
	}
	if c.left || time.Since(c.lastStart) < speakerRetry {
		return false
	}
	c.lastStart = time.Now()
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := c.speaker.Start(sctx); err != nil {
		c.lastErr = err.Error()
		c.log.Error("cluster: BGP speaker did not start", "err", err)
		return false
	}
	c.started = true
	c.log.Info("cluster: BGP speaker started", "next_hop", c.nextHop)
	return true
}

// reconcile announces every IPv4 VIP that should be (the membership is
// ready, the instance does not drain, a service of the VIP has a usable
// backend) and withdraws the others.
func (c *clusterCtl) reconcile(ctx context.Context, s *snapshot) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.startSpeaker(ctx) {
		return
	}
	now := c.clock()
	ready := c.members.Ready(now)
	if ready && c.readySince.IsZero() {
		c.readySince = time.Now()
		c.log.Info("cluster: ready (heard every member or waited dead_after)", "live", c.members.Snapshot().LiveMembers())
	}
	why := map[netip.Prefix]string{}
	for _, sv := range s.svcList {
		pfx := netip.PrefixFrom(sv.vip.Addr(), sv.vip.Addr().BitLen())
		r := ""
		switch {
		case !sv.vip.Is4():
			r = notIPv6
		case c.draining.Load():
			r = notDraining
		case !ready:
			r = notReady
		case !sv.healthy(now):
			r = notHealthy
		}
		if old, seen := why[pfx]; !seen || (old != "" && r == "") {
			why[pfx] = r // a VIP with several services: announced if any is healthy
		}
	}
	for pfx, r := range why {
		if r != "" || c.announced[pfx] {
			continue
		}
		if err := c.speaker.Announce(pfx, c.nextHop); err != nil {
			c.lastErr = err.Error()
			c.log.Error("cluster: announce", "prefix", pfx, "err", err)
			continue
		}
		c.announced[pfx] = true
		c.announces++
		c.log.Info("cluster: VIP announced", "prefix", pfx, "next_hop", c.nextHop)
	}
	for pfx := range c.announced {
		r, ok := why[pfx]
		if ok && r == "" {
			continue
		}
		if !ok {
			r = "removed"
		}
		if err := c.speaker.Withdraw(pfx); err != nil {
			c.lastErr = err.Error()
			c.log.Error("cluster: withdraw", "prefix", pfx, "err", err)
			continue
		}
		delete(c.announced, pfx)
		c.withdrawn++
		c.log.Info("cluster: VIP withdrawn", "prefix", pfx, "reason", r)
	}
	for pfx, r := range why {
		if r != c.why[pfx] && r != "" && r != notIPv6 {
			c.log.Info("cluster: VIP not announced", "prefix", pfx, "reason", r)
		}
	}
	c.why = why
}

// healthy reports whether a new flow of the service would find a backend.
func (sv *service) healthy(now int64) bool {
	for _, be := range sv.backends {
		if be.weight > 0 && be.usable(now) {
			return true
		}
	}
	return false
}

// beginDrain makes the instance drain: its heartbeat says so at once, it
// leaves its own current view (new flows go to the others, frames of its
// flows keep reaching it through the previous view) and its VIPs are
// withdrawn.
func (c *clusterCtl) beginDrain(ctx context.Context, s *snapshot) {
	if c.draining.Swap(true) {
		return
	}
	c.log.Info("cluster: draining: routes withdrawn, new flows to the other members")
	c.members.SetDraining(true)
	c.path.beatNow.Store(true)
	c.wake()
	c.reconcile(ctx, s)
}

// leave sends the heartbeat that says this instance leaves (the others
// drop it at once), then stops the speaker: its withdrawals, then a Cease
// on every session.
func (c *clusterCtl) leave() {
	c.path.leaving.Store(true)
	c.path.beatNow.Store(true)
	c.wake()
	deadline := time.Now().Add(leaveWait)
	for c.path.leftSent.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.left = true
	if c.started {
		if err := c.speaker.Stop(); err != nil {
			c.log.Error("cluster: BGP speaker stop", "err", err)
		}
		c.started = false
		clear(c.announced)
	}
}

// reload applies cluster.members and cluster.bgp.peers (config's reload
// rules keep every other cluster key from changing).
func (c *clusterCtl) reload(ctx context.Context, old, cfg *config.Config) error {
	if old.Cluster == nil || cfg.Cluster == nil {
		return nil
	}
	if !slices.EqualFunc(old.Cluster.Members, cfg.Cluster.Members, sameMember) {
		if err := c.members.SetMembers(clusterMembers(cfg.Cluster)); err != nil {
			return fmt.Errorf("lb: reload: cluster.members: %w", err)
		}
		c.log.Info("cluster: members reloaded", "members", len(cfg.Cluster.Members))
	}
	if !slices.EqualFunc(bgpPeers(old.Cluster.BGP), bgpPeers(cfg.Cluster.BGP), samePeerCfg) {
		c.mu.Lock()
		started := c.started
		c.mu.Unlock()
		if started {
			if err := c.speaker.SetPeers(ctx, bgpPeers(cfg.Cluster.BGP)); err != nil {
				return fmt.Errorf("lb: reload: cluster.bgp.peers: %w", err)
			}
		}
		c.log.Info("cluster: BGP peers reloaded", "peers", len(cfg.Cluster.BGP.Peers))
	}
	return nil
}

func sameMember(a, b config.ClusterMember) bool {
	return a.ID == b.ID && a.MAC.String() == b.MAC.String() && a.Address == b.Address && slices.Equal(a.SNATAddresses, b.SNATAddresses)
}

func samePeerCfg(a, b bgp.Peer) bool {
	if (a.BFD == nil) != (b.BFD == nil) || (a.BFD != nil && *a.BFD != *b.BFD) {
		return false
	}
	a.BFD, b.BFD = nil, nil
	return a == b
}

// Drain begins a graceful stop of a cluster instance from the control
// socket (`tslb drain`), as SIGTERM does: the caller then cancels Run's
// context. Without a cluster it does nothing.
func (b *Balancer) Drain() {
	if c := b.cl; c != nil {
		c.beginDrain(context.Background(), b.sh.snap.Load())
	}
}

// clusterKernelAddr is this instance's member address (the kernel's, on
// the front link: BGP sessions and next hop), or an invalid address.
func clusterKernelAddr(cfg *config.Config) netip.Addr {
	if cfg.Cluster == nil {
		return netip.Addr{}
	}
	if self := cfg.Cluster.Self(); self != nil {
		return self.Address
	}
	return netip.Addr{}
}

// ownClusterAddr records the member address in s as the kernel's (tslb
// ignores TCP to it and never answers ARP for it: the kernel of the same
// interface does, with the same MAC), and makes it the source of tslb's
// ARP requests on the front link when tslb owns no address there.
func (s *snapshot) ownClusterAddr(cfg *config.Config) {
	a := clusterKernelAddr(cfg)
	if !a.IsValid() {
		return
	}
	a16 := nat.AddrFrom(a)
	s.owned[a16] = &ownedAddr{kind: ownedKernel}
	if i := frontIndex(cfg); i >= 0 && i < len(s.arpFrom) && a.Is4() && s.arpFrom[i] == (nat.Addr4{}).Mapped() {
		s.arpFrom[i] = a16
	}
}

// frontIndex is the index in cfg.Links of the cluster's front link, or -1.
func frontIndex(cfg *config.Config) int {
	name := cfg.FrontLink()
	if name == "" {
		return -1
	}
	for i, l := range cfg.Links {
		if l.Name == name {
			return i
		}
	}
	return -1
}

// newCluster sets up the cluster of cfg: the control part, and the
// datapath part handed to every worker.
func (b *Balancer) newCluster(cfg *config.Config, front int, opts Options) error {
	if front < 0 {
		return fmt.Errorf("lb: cluster: no front link (cluster.link, or a link holding this member's address)")
	}
	c, err := newClusterCtl(cfg, b.sh.nics[front], b.sh, opts.NewAnnouncer)
	if err != nil {
		return err
	}
	w0 := b.workers[0]
	c.wake = w0.poll.Wake
	for _, w := range b.workers {
		w.cl = c.path
		w.clc = &clusterCounters{}
		c.clc = append(c.clc, w.clc)
	}
	b.cl = c
	b.sh.m.reg.MustRegister(&clusterCollector{b: b})
	return nil
}
