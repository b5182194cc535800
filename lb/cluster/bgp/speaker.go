package bgp

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	api "github.com/osrg/gobgp/v4/api"
	"github.com/osrg/gobgp/v4/pkg/apiutil"
	"github.com/osrg/gobgp/v4/pkg/packet/bgp"
	"github.com/osrg/gobgp/v4/pkg/server"
)

// Defaults of Config and Peer.
const (
	DefaultHoldTime     = 9 * time.Second // short: a dead instance must leave ECMP fast (BFD is faster still)
	DefaultConnectRetry = 2 * time.Second
	DefaultPort         = 179
	DefaultStopTimeout  = 3 * time.Second
)

// Config configures a Speaker.
type Config struct {
	// ASN is the local AS number (1..4294967295, not 23456: AS_TRANS).
	ASN uint32
	// RouterID is the BGP identifier, an IPv4 address (often
	// LocalAddress).
	RouterID netip.Addr
	// LocalAddress is the instance's front kernel address: the source of
	// active sessions and the address the speaker listens on. The kernel
	// of tslb's namespace must own it.
	LocalAddress netip.Addr
	// ListenPort is the TCP port to listen on for passive sessions (0
	// means 179; -1 means do not listen: every peer must then be active).
	ListenPort int32
	// Peers are the routers to talk to; at least one.
	Peers []Peer
	// StopTimeout bounds how long Stop waits for withdrawals to leave (0
	// means DefaultStopTimeout).
	StopTimeout time.Duration
	// Logger receives GoBGP's and the speaker's logs; nil discards them.
	Logger *slog.Logger
}

// Peer is one BGP neighbour.
type Peer struct {
	// Address is the neighbour's IPv4 address, on the front segment.
	Address netip.Addr
	// ASN is the neighbour's AS number.
	ASN uint32
	// HoldTime is the proposed hold time (0 means DefaultHoldTime; else
	// 3s..65535s); keepalives go every third of it.
	HoldTime time.Duration
	// ConnectRetry is the time between connection attempts (0 means
	// DefaultConnectRetry).
	ConnectRetry time.Duration
	// Passive makes the speaker wait for the neighbour to connect.
	Passive bool
	// Port is the neighbour's TCP port (0 means 179).
	Port uint16
	// BFD enables BFD (single-hop, UDP 3784) on the session; nil means
	// off.
	BFD *BFD
}

// BFD are a session's BFD timers (RFC 5880 §6.8.1).
type BFD struct {
	// MinTx is the desired minimum transmit interval (0 means 300ms).
	MinTx time.Duration
	// MinRx is the required minimum receive interval (0 means 300ms).
	MinRx time.Duration
	// Multiplier is the detection multiplier (0 means 3).
	Multiplier uint8
}

// check validates c and fills in the defaults.
func (c *Config) check() error {
	var errs []error
	if c.ASN == 0 || c.ASN == 23456 {
		errs = append(errs, fmt.Errorf("bgp: local ASN %d is not usable", c.ASN))
	}
	if !c.RouterID.Is4() || c.RouterID.IsUnspecified() {
		errs = append(errs, fmt.Errorf("bgp: router ID %v must be a nonzero IPv4 address", c.RouterID))
	}
	if !c.LocalAddress.Is4() || c.LocalAddress.IsUnspecified() {
		errs = append(errs, fmt.Errorf("bgp: local address %v must be an IPv4 address", c.LocalAddress))
	}
	if c.ListenPort == 0 {
		c.ListenPort = DefaultPort
	}
	if c.ListenPort < -1 || c.ListenPort > 65535 {
		errs = append(errs, fmt.Errorf("bgp: listen port %d out of range", c.ListenPort))
	}
	if c.StopTimeout == 0 {
		c.StopTimeout = DefaultStopTimeout
	}
	if len(c.Peers) == 0 {
		errs = append(errs, errors.New("bgp: no peers"))
	}
	seen := map[netip.Addr]bool{}
	for i := range c.Peers {
		p := &c.Peers[i]
		if err := p.check(c); err != nil {
			errs = append(errs, err)
		}
		if seen[p.Address] {
			errs = append(errs, fmt.Errorf("bgp: peer %v listed twice", p.Address))
		}
		seen[p.Address] = true
	}
	return errors.Join(errs...)
}

func (p *Peer) check(c *Config) error {
	var errs []error
	if !p.Address.Is4() || p.Address.IsUnspecified() || p.Address == c.LocalAddress {
		errs = append(errs, fmt.Errorf("bgp: peer address %v must be another IPv4 address", p.Address))
	}
	if p.ASN == 0 || p.ASN == 23456 {
		errs = append(errs, fmt.Errorf("bgp: peer %v: ASN %d is not usable", p.Address, p.ASN))
	}
	if p.HoldTime == 0 {
		p.HoldTime = DefaultHoldTime
	}
	if p.HoldTime < 3*time.Second || p.HoldTime > 65535*time.Second || p.HoldTime%time.Second != 0 {
		errs = append(errs, fmt.Errorf("bgp: peer %v: hold time %v must be whole seconds in 3s..65535s", p.Address, p.HoldTime))
	}
	if p.ConnectRetry == 0 {
		p.ConnectRetry = DefaultConnectRetry
	}
	if p.ConnectRetry < time.Second || p.ConnectRetry%time.Second != 0 {
		errs = append(errs, fmt.Errorf("bgp: peer %v: connect retry %v must be whole seconds, at least 1s", p.Address, p.ConnectRetry))
	}
	if p.Passive && c.ListenPort == -1 {
		errs = append(errs, fmt.Errorf("bgp: peer %v is passive but the speaker does not listen", p.Address))
	}
	if b := p.BFD; b != nil {
		b2 := *b
		if b2.MinTx == 0 {
			b2.MinTx = 300 * time.Millisecond
		}
		if b2.MinRx == 0 {
			b2.MinRx = 300 * time.Millisecond
		}
		if b2.Multiplier == 0 {
			b2.Multiplier = 3
		}
		if b2.MinTx < 10*time.Millisecond || b2.MinRx < 10*time.Millisecond || b2.MinTx > time.Hour || b2.MinRx > time.Hour {
			errs = append(errs, fmt.Errorf("bgp: peer %v: BFD intervals %v/%v must be 10ms..1h", p.Address, b2.MinTx, b2.MinRx))
		}
		p.BFD = &b2
	}
	return errors.Join(errs...)
}

// Speaker is one BGP instance and its sessions.
type Speaker struct {
	cfg Config
	log *slog.Logger
	srv *server.BgpServer

	mu      sync.Mutex
	started bool
	stopped bool
	routes  map[netip.Prefix]netip.Addr // announced: prefix -> next hop
	events  map[netip.Addr]*peerEvents
	cancel  context.CancelFunc
	served  chan struct{}
}

type peerEvents struct {
	established uint64 // transitions to Established
	lastDown    string
}

// NewSpeaker validates cfg and returns a speaker that is not started.
func NewSpeaker(cfg Config) (*Speaker, error) {
	cfg.Peers = slices.Clone(cfg.Peers)
	if err := cfg.check(); err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return &Speaker{cfg: cfg, log: log, routes: map[netip.Prefix]netip.Addr{}, events: map[netip.Addr]*peerEvents{}}, nil
}

// ErrNotStarted is returned by the methods that need a started speaker.
var ErrNotStarted = errors.New("bgp: speaker not started (or stopped)")

// Start starts GoBGP, its listener and every peer. The sessions come up in
// the background; Peers tells their state. ctx bounds the start only.
func (s *Speaker) Start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started {
		return errors.New("bgp: speaker already started")
	}
	lvl := &slog.LevelVar{}
	lvl.Set(slog.LevelInfo)
	s.srv = server.NewBgpServer(server.LoggerOption(s.log.With("component", "gobgp"), lvl))
	s.served = make(chan struct{})
	go func() {
		defer close(s.served)
		s.srv.Serve()
	}()
	fail := func(err error) error {
		s.srv.Stop()
		<-s.served
		s.srv = nil
		return err
	}
	g := &api.Global{Asn: s.cfg.ASN, RouterId: s.cfg.RouterID.String(), ListenPort: s.cfg.ListenPort}
	if s.cfg.ListenPort > 0 {
		g.ListenAddresses = []string{s.cfg.LocalAddress.String()}
	}
	if err := s.srv.StartBgp(ctx, &api.StartBgpRequest{Global: g}); err != nil {
		return fail(fmt.Errorf("bgp: start: %w", err))
	}
	// Import nothing: tslb never installs or re-advertises a route it
	// hears. GoBGP applies the global import policy to local paths too,
	// so the policy rejects what comes from any neighbour (0.0.0.0/0: a
	// local path has no neighbour address) and accepts the rest. Rejected
	// routes still count as received (Peers).
	if err := s.importNothing(ctx); err != nil {
		return fail(err)
	}
	wctx, cancel := context.WithCancel(context.Background())
	if err := s.srv.WatchEvent(wctx, server.WatchEventMessageCallbacks{
		OnPeerUpdate: s.onPeer,
	}, server.WatchPeer()); err != nil {
		cancel()
		return fail(fmt.Errorf("bgp: watch: %w", err))
	}
	s.cancel = cancel
	for _, p := range s.cfg.Peers {
		if err := s.srv.AddPeer(ctx, &api.AddPeerRequest{Peer: s.apiPeer(p)}); err != nil {
			cancel()
			return fail(fmt.Errorf("bgp: add peer %v: %w", p.Address, err))
		}
		s.events[p.Address] = &peerEvents{}
	}
	s.started = true
	s.log.Info("bgp: speaker started", "asn", s.cfg.ASN, "router_id", s.cfg.RouterID, "local", s.cfg.LocalAddress, "peers", len(s.cfg.Peers))
	return nil
}

// Names of the import policy's parts.
const (
	anyPeerSet   = "tslb-any-peer"
	importPolicy = "tslb-import-nothing"
)

func (s *Speaker) importNothing(ctx context.Context) error {
	if err := s.srv.AddDefinedSet(ctx, &api.AddDefinedSetRequest{DefinedSet: &api.DefinedSet{
		DefinedType: api.DefinedType_DEFINED_TYPE_NEIGHBOR, Name: anyPeerSet, List: []string{"0.0.0.0/0"},
	}}); err != nil {
		return fmt.Errorf("bgp: import policy: %w", err)
	}
	if err := s.srv.AddPolicy(ctx, &api.AddPolicyRequest{Policy: &api.Policy{Name: importPolicy, Statements: []*api.Statement{{
		Name:       importPolicy + "-learned",
		Conditions: &api.Conditions{NeighborSet: &api.MatchSet{Type: api.MatchSet_TYPE_ANY, Name: anyPeerSet}},
		Actions:    &api.Actions{RouteAction: api.RouteAction_ROUTE_ACTION_REJECT},
	}}}}); err != nil {
		return fmt.Errorf("bgp: import policy: %w", err)
	}
	if err := s.srv.SetPolicyAssignment(ctx, &api.SetPolicyAssignmentRequest{Assignment: &api.PolicyAssignment{
		Name: "global", Direction: api.PolicyDirection_POLICY_DIRECTION_IMPORT,
		Policies: []*api.Policy{{Name: importPolicy}}, DefaultAction: api.RouteAction_ROUTE_ACTION_ACCEPT,
	}}); err != nil {
		return fmt.Errorf("bgp: import policy: %w", err)
	}
	return nil
}

func (s *Speaker) apiPeer(p Peer) *api.Peer {
	hold := uint64(p.HoldTime / time.Second)
	ap := &api.Peer{
		Conf: &api.PeerConf{NeighborAddress: p.Address.String(), PeerAsn: p.ASN, Description: "tslb"},
		Timers: &api.Timers{Config: &api.TimersConfig{
			HoldTime: hold, KeepaliveInterval: max(hold/3, 1),
			ConnectRetry: uint64(p.ConnectRetry / time.Second), IdleHoldTimeAfterReset: uint64(p.ConnectRetry / time.Second),
		}},
		Transport: &api.Transport{LocalAddress: s.cfg.LocalAddress.String(), PassiveMode: p.Passive, RemotePort: uint32(p.Port)},
		AfiSafis: []*api.AfiSafi{{Config: &api.AfiSafiConfig{
			Family: &api.Family{Afi: api.Family_AFI_IP, Safi: api.Family_SAFI_UNICAST}, Enabled: true,
		}}},
	}
	if p.Port == 0 {
		ap.Transport.RemotePort = DefaultPort
	}
	if b := p.BFD; b != nil {
		ap.Bfd = &api.BfdPeerConfig{
			Enabled: true, Port: 3784,
			DesiredMinimumTxInterval: uint32(b.MinTx / time.Microsecond),
			RequiredMinimumReceive:   uint32(b.MinRx / time.Microsecond),
			DetectionMultiplier:      uint32(b.Multiplier),
		}
	}
	return ap
}

// onPeer logs session state changes and counts them.
func (s *Speaker) onPeer(ev *apiutil.WatchEventMessage_PeerEvent, _ time.Time) {
	if ev.Type != apiutil.PEER_EVENT_STATE {
		return
	}
	st := ev.Peer.State
	s.mu.Lock()
	reason := ""
	if st.DisconnectReason != api.PeerState_DISCONNECT_REASON_UNSPECIFIED {
		reason = strings.ToLower(strings.TrimPrefix(st.DisconnectReason.String(), "DISCONNECT_REASON_"))
		if st.DisconnectMessage != "" {
			reason += ": " + st.DisconnectMessage
		}
	}
	if e := s.events[st.NeighborAddress]; e != nil {
		if st.SessionState == bgp.BGP_FSM_ESTABLISHED {
			e.established++
		}
		if reason != "" {
			e.lastDown = reason
		}
	}
	s.mu.Unlock()
	if reason != "" {
		s.log.Warn("bgp: peer state", "peer", st.NeighborAddress, "state", sessionName(st.SessionState), "reason", reason)
	} else {
		s.log.Info("bgp: peer state", "peer", st.NeighborAddress, "state", sessionName(st.SessionState))
	}
}

func sessionName(st bgp.FSMState) string {
	switch st {
	case bgp.BGP_FSM_IDLE:
		return "idle"
	case bgp.BGP_FSM_CONNECT:
		return "connect"
	case bgp.BGP_FSM_ACTIVE:
		return "active"
	case bgp.BGP_FSM_OPENSENT:
		return "opensent"
	case bgp.BGP_FSM_OPENCONFIRM:
		return "openconfirm"
	case bgp.BGP_FSM_ESTABLISHED:
		return "established"
	}
	return "unknown"
}

// Announce advertises prefix with nextHop (an IPv4 address; the instance's
// front address) to every peer, now and whenever a session comes up.
// Announcing a prefix again with another next hop replaces it.
func (s *Speaker) Announce(prefix netip.Prefix, nextHop netip.Addr) error {
	if !prefix.IsValid() || !prefix.Addr().Is4() || prefix != prefix.Masked() {
		return fmt.Errorf("bgp: announce %v: want a masked IPv4 prefix", prefix)
	}
	if !nextHop.Is4() || nextHop.IsUnspecified() {
		return fmt.Errorf("bgp: announce %v: next hop %v is not an IPv4 address", prefix, nextHop)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.started || s.stopped {
		return ErrNotStarted
	}
	if nh, ok := s.routes[prefix]; ok && nh == nextHop {
		return nil
	}
	p, err := path(prefix, nextHop, false)
	if err != nil {
		return err
	}
	rs, err := s.srv.AddPath(apiutil.AddPathRequest{Paths: []*apiutil.Path{p}})
	if err == nil && len(rs) > 0 {
		err = rs[0].Error
	}
	if err != nil {
		return fmt.Errorf("bgp: announce %v: %w", prefix, err)
	}
	s.routes[prefix] = nextHop
	s.log.Info("bgp: announce", "prefix", prefix, "next_hop", nextHop)
	return nil
}

// Withdraw withdraws prefix from every peer; withdrawing a prefix that is
// not announced does nothing.
func (s *Speaker) Withdraw(prefix netip.Prefix) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.started || s.stopped {
		return ErrNotStarted
	}
	return s.withdraw(prefix)
}

func (s *Speaker) withdraw(prefix netip.Prefix) error {
	nh, ok := s.routes[prefix]
	if !ok {
		return nil
	}
	p, err := path(prefix, nh, true)
	if err != nil {
		return err
	}
	if err := s.srv.DeletePath(apiutil.DeletePathRequest{Paths: []*apiutil.Path{p}}); err != nil {
		return fmt.Errorf("bgp: withdraw %v: %w", prefix, err)
	}
	delete(s.routes, prefix)
	s.log.Info("bgp: withdraw", "prefix", prefix)
	return nil
}

func path(prefix netip.Prefix, nextHop netip.Addr, withdrawal bool) (*apiutil.Path, error) {
	nlri, err := bgp.NewIPAddrPrefix(prefix)
	if err != nil {
		return nil, fmt.Errorf("bgp: %v: %w", prefix, err)
	}
	nh, err := bgp.NewPathAttributeNextHop(nextHop)
	if err != nil {
		return nil, fmt.Errorf("bgp: next hop %v: %w", nextHop, err)
	}
	return &apiutil.Path{
		Family:     bgp.RF_IPv4_UC,
		Nlri:       nlri,
		Attrs:      []bgp.PathAttributeInterface{bgp.NewPathAttributeOrigin(bgp.BGP_ORIGIN_ATTR_TYPE_IGP), nh},
		Withdrawal: withdrawal,
	}, nil
}

// Announced returns the announced prefixes, sorted.
func (s *Speaker) Announced() []netip.Prefix {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]netip.Prefix, 0, len(s.routes))
	for p := range s.routes {
		out = append(out, p)
	}
	slices.SortFunc(out, func(a, b netip.Prefix) int { return a.Addr().Compare(b.Addr()) })
	return out
}

// PeerState is one session's state, for metrics.
type PeerState struct {
	// Address and ASN are the neighbour's.
	Address netip.Addr
	ASN     uint32
	// State is the FSM state: idle, connect, active, opensent,
	// openconfirm, established.
	State string
	// Established is State == "established".
	Established bool
	// Since is when the session came up (zero unless established).
	Since time.Time
	// Establishments counts the session's transitions to Established
	// since Start (a flapping peer shows more than one).
	Establishments uint64
	// Flops counts how often GoBGP saw the session go down.
	Flops uint32
	// Received counts the routes the neighbour sent us (its Adj-RIB-In);
	// Imported those of them in the speaker's RIB, which is always 0: the
	// speaker imports nothing.
	Received, Imported uint64
	// Notifications counts the NOTIFICATION messages received from the
	// neighbour since Start.
	Notifications uint64
	// Advertised counts the routes sent to the neighbour.
	Advertised uint64
	// LastError is the reason the session last went down (GoBGP's
	// state reason, such as "notification_received: ..."), "" if none.
	LastError string
	// BFD is the BFD session state ("" if BFD is off): up, down, init,
	// admin_down.
	BFD string
}

// Peers returns every session's state, by address.
func (s *Speaker) Peers(ctx context.Context) ([]PeerState, error) {
	s.mu.Lock()
	srv := s.srv
	ok := s.started && !s.stopped
	s.mu.Unlock()
	if !ok {
		return nil, ErrNotStarted
	}
	var out []PeerState
	err := srv.ListPeer(ctx, &api.ListPeerRequest{EnableAdvertised: true}, func(p *api.Peer) {
		st := PeerState{}
		if p.Conf != nil {
			st.Address, _ = netip.ParseAddr(p.Conf.NeighborAddress)
			st.ASN = p.Conf.PeerAsn
		}
		if ps := p.State; ps != nil {
			st.State = apiSessionName(ps.SessionState)
			st.Established = ps.SessionState == api.PeerState_SESSION_STATE_ESTABLISHED
			st.Flops = ps.Flops
			if m := ps.Messages; m != nil && m.Received != nil {
				st.Notifications = m.Received.Notification
			}
			if b := ps.BfdState; b != nil && p.Bfd != nil && p.Bfd.Enabled {
				st.BFD = bfdName(b.SessionState)
			}
		}
		if t := p.Timers; st.Established && t != nil && t.State != nil && t.State.Uptime != nil {
			st.Since = t.State.Uptime.AsTime()
		}
		for _, af := range p.AfiSafis {
			if af.State != nil {
				st.Received += af.State.Received
				st.Advertised += af.State.Advertised
			}
		}
		out = append(out, st)
	})
	if err != nil {
		return nil, fmt.Errorf("bgp: list peers: %w", err)
	}
	imported := map[netip.Addr]uint64{}
	err = srv.ListPath(apiutil.ListPathRequest{TableType: api.TableType_TABLE_TYPE_GLOBAL, Family: bgp.RF_IPv4_UC},
		func(_ bgp.NLRI, paths []*apiutil.Path) {
			for _, p := range paths {
				if p.PeerAddress.IsValid() {
					imported[p.PeerAddress]++
				}
			}
		})
	if err != nil {
		return nil, fmt.Errorf("bgp: list paths: %w", err)
	}
	s.mu.Lock()
	for i := range out {
		if e := s.events[out[i].Address]; e != nil {
			out[i].Establishments = e.established
			out[i].LastError = e.lastDown
		}
		out[i].Imported = imported[out[i].Address]
	}
	s.mu.Unlock()
	slices.SortFunc(out, func(a, b PeerState) int { return a.Address.Compare(b.Address) })
	return out, nil
}

func apiSessionName(st api.PeerState_SessionState) string {
	switch st {
	case api.PeerState_SESSION_STATE_IDLE:
		return "idle"
	case api.PeerState_SESSION_STATE_CONNECT:
		return "connect"
	case api.PeerState_SESSION_STATE_ACTIVE:
		return "active"
	case api.PeerState_SESSION_STATE_OPENSENT:
		return "opensent"
	case api.PeerState_SESSION_STATE_OPENCONFIRM:
		return "openconfirm"
	case api.PeerState_SESSION_STATE_ESTABLISHED:
		return "established"
	}
	return "unknown"
}

func bfdName(st api.BfdSessionState) string {
	switch st {
	case api.BfdSessionState_BFD_SESSION_STATE_UP:
		return "up"
	case api.BfdSessionState_BFD_SESSION_STATE_DOWN:
		return "down"
	case api.BfdSessionState_BFD_SESSION_STATE_INIT:
		return "init"
	case api.BfdSessionState_BFD_SESSION_STATE_ADMIN_DOWN:
		return "admin_down"
	}
	return "unknown"
}

// Stop withdraws every announced prefix, waits up to StopTimeout until no
// established peer has them in its Adj-RIB-Out any more, then closes every
// session with a Cease NOTIFICATION (RFC 4486 subcode 3, peer
// de-configured) and stops GoBGP. It is idempotent.
func (s *Speaker) Stop() error {
	s.mu.Lock()
	if !s.started || s.stopped {
		s.mu.Unlock()
		return nil
	}
	var errs []error
	for p := range s.routes {
		if err := s.withdraw(p); err != nil {
			errs = append(errs, err)
		}
	}
	s.stopped = true
	srv := s.srv
	s.mu.Unlock()

	deadline := time.Now().Add(s.cfg.StopTimeout)
	for time.Now().Before(deadline) {
		if s.advertisedTo(srv) == 0 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	// The withdrawals are queued per session; give the writers a moment
	// to put the UPDATE on the wire before the NOTIFICATION closes it.
	time.Sleep(50 * time.Millisecond)
	srv.Stop()
	<-s.served
	s.cancel()
	s.log.Info("bgp: speaker stopped")
	return errors.Join(errs...)
}

// advertisedTo counts the routes still in the Adj-RIB-Out of established
// peers.
func (s *Speaker) advertisedTo(srv *server.BgpServer) uint64 {
	var n uint64
	srv.ListPeer(context.Background(), &api.ListPeerRequest{EnableAdvertised: true}, func(p *api.Peer) {
		if p.State == nil || p.State.SessionState != api.PeerState_SESSION_STATE_ESTABLISHED {
			return
		}
		for _, af := range p.AfiSafis {
			if af.State != nil {
				n += af.State.Advertised
			}
		}
	})
	return n
}

// SetPeers replaces the peers (a reload of cluster.bgp.peers): sessions to
// removed peers are closed with a Cease, new peers are added, and a peer
// whose settings changed is removed and added again (its session
// restarts); unchanged sessions stay up. Announced routes go to the new
// sessions as they come up.
func (s *Speaker) SetPeers(ctx context.Context, peers []Peer) error {
	cfg := s.cfg
	cfg.Peers = slices.Clone(peers)
	if err := cfg.check(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.started || s.stopped {
		return ErrNotStarted
	}
	old := map[netip.Addr]Peer{}
	for _, p := range s.cfg.Peers {
		old[p.Address] = p
	}
	next := map[netip.Addr]Peer{}
	for _, p := range cfg.Peers {
		next[p.Address] = p
	}
	var errs []error
	for a, p := range old {
		if n, ok := next[a]; ok && samePeer(p, n) {
			continue
		}
		if err := s.srv.DeletePeer(ctx, &api.DeletePeerRequest{Address: a.String()}); err != nil {
			errs = append(errs, fmt.Errorf("bgp: delete peer %v: %w", a, err))
		}
		delete(s.events, a)
	}
	for a, p := range next {
		if o, ok := old[a]; ok && samePeer(o, p) {
			continue
		}
		if err := s.srv.AddPeer(ctx, &api.AddPeerRequest{Peer: s.apiPeer(p)}); err != nil {
			errs = append(errs, fmt.Errorf("bgp: add peer %v: %w", a, err))
			continue
		}
		s.events[a] = &peerEvents{}
	}
	s.cfg.Peers = cfg.Peers
	return errors.Join(errs...)
}

func samePeer(a, b Peer) bool {
	if (a.BFD == nil) != (b.BFD == nil) || (a.BFD != nil && *a.BFD != *b.BFD) {
		return false
	}
	a.BFD, b.BFD = nil, nil
	return a == b
}
