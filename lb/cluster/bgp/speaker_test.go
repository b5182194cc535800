package bgp

import (
	"context"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"
)

func TestConfigErrors(t *testing.T) {
	good := func() Config {
		return Config{ASN: 65010, RouterID: netip.MustParseAddr("198.18.4.11"), LocalAddress: netip.MustParseAddr("198.18.4.11"),
			Peers: []Peer{{Address: netip.MustParseAddr("198.18.4.1"), ASN: 65000}}}
	}
	if _, err := NewSpeaker(good()); err != nil {
		t.Fatalf("good config: %v", err)
	}
	for _, tt := range []struct {
		name string
		edit func(*Config)
		msg  string
	}{
		{"asn 0", func(c *Config) { c.ASN = 0 }, "local ASN 0"},
		{"as_trans", func(c *Config) { c.ASN = 23456 }, "local ASN 23456"},
		{"router id v6", func(c *Config) { c.RouterID = netip.MustParseAddr("2001:db8::1") }, "router ID"},
		{"no local", func(c *Config) { c.LocalAddress = netip.Addr{} }, "local address"},
		{"no peers", func(c *Config) { c.Peers = nil }, "no peers"},
		{"peer asn", func(c *Config) { c.Peers[0].ASN = 0 }, "ASN 0 is not usable"},
		{"peer is local", func(c *Config) { c.Peers[0].Address = c.LocalAddress }, "another IPv4"},
		{"dup peer", func(c *Config) { c.Peers = append(c.Peers, c.Peers[0]) }, "listed twice"},
		{"hold short", func(c *Config) { c.Peers[0].HoldTime = 2 * time.Second }, "hold time"},
		{"hold fraction", func(c *Config) { c.Peers[0].HoldTime = 3500 * time.Millisecond }, "hold time"},
		{"passive without listener", func(c *Config) { c.ListenPort = -1; c.Peers[0].Passive = true }, "does not listen"},
		{"bfd fast", func(c *Config) { c.Peers[0].BFD = &BFD{MinTx: time.Millisecond} }, "BFD intervals"},
		{"listen port", func(c *Config) { c.ListenPort = 70000 }, "listen port"},
	} {
		c := good()
		tt.edit(&c)
		_, err := NewSpeaker(c)
		if err == nil || !strings.Contains(err.Error(), tt.msg) {
			t.Errorf("%s: err %v, want %q", tt.name, err, tt.msg)
		}
	}
	s, _ := NewSpeaker(good())
	if err := s.Announce(netip.MustParsePrefix("198.18.0.100/32"), netip.MustParseAddr("198.18.4.11")); err != ErrNotStarted {
		t.Errorf("Announce before Start: %v", err)
	}
	if err := s.Stop(); err != nil {
		t.Errorf("Stop before Start: %v", err)
	}
}

// freePort returns a TCP port free on addr right now.
func freePort(t *testing.T, addr string) int32 {
	t.Helper()
	l, err := net.Listen("tcp4", addr+":0")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("cannot listen on %s (CI=true, not skipping): %v", addr, err)
		}
		t.Skipf("cannot listen on %s: %v", addr, err)
	}
	defer l.Close()
	return int32(l.Addr().(*net.TCPAddr).Port)
}

func waitFor(t *testing.T, what string, d time.Duration, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !f() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func peer(t *testing.T, s *Speaker) PeerState {
	t.Helper()
	ps, err := s.Peers(context.Background())
	if err != nil || len(ps) != 1 {
		t.Fatalf("Peers: %v %v", ps, err)
	}
	return ps[0]
}

// TestTwoSpeakersLoopback: two speakers on 127.0.0.1 and 127.0.0.2 (high
// ports, this namespace's loopback). A announces a /32; B counts it as
// received and rejects it (a speaker imports nothing); A withdraws it; A
// stops and B sees the session closed with a Cease.
func TestTwoSpeakersLoopback(t *testing.T) {
	a1, a2 := netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("127.0.0.2")
	pa, pb := freePort(t, "127.0.0.1"), freePort(t, "127.0.0.2")
	a, err := NewSpeaker(Config{ASN: 65010, RouterID: a1, LocalAddress: a1, ListenPort: pa,
		Peers: []Peer{{Address: a2, ASN: 65020, Port: uint16(pb), HoldTime: 3 * time.Second, ConnectRetry: time.Second}}})
	if err != nil {
		t.Fatal(err)
	}
	b, err := NewSpeaker(Config{ASN: 65020, RouterID: a2, LocalAddress: a2, ListenPort: pb,
		Peers: []Peer{{Address: a1, ASN: 65010, Port: uint16(pa), HoldTime: 3 * time.Second, ConnectRetry: time.Second, Passive: true}}})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := b.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer b.Stop()
	if err := a.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer a.Stop()
	if err := a.Start(ctx); err == nil {
		t.Errorf("second Start succeeded")
	}
	waitFor(t, "session up", 15*time.Second, func() bool { return peer(t, a).Established && peer(t, b).Established })
	vip := netip.MustParsePrefix("198.18.0.100/32")
	if err := a.Announce(vip, a1); err != nil {
		t.Fatal(err)
	}
	if err := a.Announce(netip.MustParsePrefix("198.18.0.100/24"), a1); err == nil {
		t.Errorf("unmasked prefix accepted")
	}
	waitFor(t, "B receives the route", 10*time.Second, func() bool { return peer(t, b).Received == 1 })
	if p := peer(t, b); p.Imported != 0 {
		t.Errorf("B imported a route: %+v", p)
	}
	if p := peer(t, a); p.Advertised != 1 || p.Received != 0 || p.Establishments != 1 {
		t.Errorf("A: %+v", p)
	}
	if got := a.Announced(); len(got) != 1 || got[0] != vip {
		t.Errorf("Announced = %v", got)
	}
	// B (standing in for a router that sends what it should not) announces
	// a prefix to A: A counts it and imports nothing.
	if err := b.Announce(netip.MustParsePrefix("198.19.255.0/24"), a2); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "A receives B's route", 10*time.Second, func() bool { return peer(t, a).Received == 1 })
	if p := peer(t, a); p.Imported != 0 {
		t.Errorf("A imported a route: %+v", p)
	}
	if err := a.Withdraw(vip); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "B sees the withdrawal", 10*time.Second, func() bool { return peer(t, b).Received == 0 })
	if err := a.Withdraw(vip); err != nil {
		t.Errorf("second withdraw: %v", err)
	}
	if err := a.Announce(vip, a1); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "B receives it again", 10*time.Second, func() bool { return peer(t, b).Received == 1 })
	// A reload with the same peer keeps the session; a changed hold time
	// restarts it and the route comes back.
	same := []Peer{{Address: a2, ASN: 65020, Port: uint16(pb), HoldTime: 3 * time.Second, ConnectRetry: time.Second}}
	if err := a.SetPeers(ctx, same); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	if p := peer(t, a); !p.Established || p.Establishments != 1 {
		t.Errorf("unchanged peer after SetPeers: %+v", p)
	}
	same[0].HoldTime = 6 * time.Second
	if err := a.SetPeers(ctx, same); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the changed session back up with the route", 15*time.Second, func() bool {
		p := peer(t, a)
		return p.Established && p.Advertised == 1 && peer(t, b).Received == 1
	})
	if err := a.SetPeers(ctx, nil); err == nil {
		t.Errorf("SetPeers(nil) accepted")
	}
	start := time.Now()
	if err := a.Stop(); err != nil {
		t.Fatal(err)
	}
	t.Logf("Stop took %v", time.Since(start))
	// Within a second, not after the 3 s hold time: A closed the session.
	waitFor(t, "B sees the session close", time.Second, func() bool { return !peer(t, b).Established })
	p := peer(t, b)
	if p.Received != 0 {
		t.Errorf("B still has %d routes", p.Received)
	}
	t.Logf("B after A stopped: %+v", p)
	if p.Notifications == 0 || !strings.Contains(p.LastError, "notification_received") {
		t.Errorf("B got no NOTIFICATION from A's Stop: %+v", p)
	}
	if err := a.Announce(vip, a1); err != ErrNotStarted {
		t.Errorf("Announce after Stop: %v", err)
	}
}
