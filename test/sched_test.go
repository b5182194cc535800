package test

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"testing"
	"time"

	"tslb/test/harness"
	"tslb/test/lab"
)

// holdConn opens a keep-alive connection through the VIP, makes one request
// on it and returns it open (idle) with the backend that answered.
func holdConn(t *testing.T, l *lab.Lab) (net.Conn, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := l.Clients[0].DialContext(ctx, "tcp4", netip.AddrPortFrom(l.VIP, 80).String())
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	return c, request(t, c)
}

// request sends GET / on c and returns the X-Backend of the answer.
func request(t *testing.T, c net.Conn) string {
	t.Helper()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	defer c.SetDeadline(time.Time{})
	if _, err := fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: vip\r\n\r\n"); err != nil {
		t.Fatalf("write request: %v", err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("read response: %v", err)
	}
	resp.Body.Close()
	return resp.Header.Get("X-Backend")
}

// TestLeastConnPrefersIdleBackend makes backend b1 the busy one: it keeps
// 6 idle keep-alive connections there (opened through tslb, those that
// landed on b2 closed and reaped), then sends 6 short requests. least_conn
// must send all of them to b2 (b1 has 6 live flows, b2 fewer until the
// sixth); round-robin, the control row, splits them 3/3 regardless of load,
// which shows the scenario tells the two apart.
func TestLeastConnPrefersIdleBackend(t *testing.T) {
	for _, tc := range []struct {
		sched  string
		wantB2 int
	}{
		{"least_conn", 6},
		{"rr", 3},
	} {
		t.Run(tc.sched, func(t *testing.T) {
			const held = 6
			l, bs, tl := deploy(t, 1, 2, lab.ServerConfig{Port: 8080}, harness.Options{Scheduler: tc.sched})
			var onB1, onB2 []net.Conn
			defer func() {
				for _, c := range onB1 {
					c.Close()
				}
			}()
			for i := 0; len(onB1) < held; i++ {
				if i >= 3*held {
					t.Fatalf("%d connections, only %d on b1", i, len(onB1))
				}
				c, id := holdConn(t, l)
				switch id {
				case bs[0].ID:
					onB1 = append(onB1, c)
				case bs[1].ID:
					onB2 = append(onB2, c)
				default:
					t.Fatalf("answer from backend %q", id)
				}
			}
			for _, c := range onB2 {
				c.Close()
			}
			// Wait until tslb has reaped b2's closed flows (TIME_WAIT 2 s).
			b1 := "backend=" + bs[0].Addr.String()
			b2 := "backend=" + bs[1].Addr.String()
			deadline := time.Now().Add(15 * time.Second)
			for {
				m := metrics(t, tl)
				a1, a2 := m.Sum("tslb_backend_flows_active", b1), m.Sum("tslb_backend_flows_active", b2)
				if a1 == held && a2 == 0 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("live flows b1 %v b2 %v after 15 s, want %d and 0", a1, a2, held)
				}
				time.Sleep(200 * time.Millisecond)
			}
			hc := l.Clients[0].HTTPClient(false, 5*time.Second)
			got := map[string]int{}
			for i := range held {
				resp, err := hc.Get(fmt.Sprintf("http://%s/", l.VIP))
				if err != nil {
					t.Fatalf("short request %d: %v", i, err)
				}
				resp.Body.Close()
				got[resp.Header.Get("X-Backend")]++
			}
			t.Logf("%s: with %d idle flows on b1, %d short requests went b1 %d, b2 %d",
				tc.sched, held, held, got[bs[0].ID], got[bs[1].ID])
			if got[bs[1].ID] != tc.wantB2 || got[bs[0].ID] != held-tc.wantB2 {
				t.Errorf("short requests b1 %d b2 %d, want b1 %d b2 %d",
					got[bs[0].ID], got[bs[1].ID], held-tc.wantB2, tc.wantB2)
			}
			// The held connections still work.
			for _, c := range onB1 {
				if id := request(t, c); id != bs[0].ID {
					t.Errorf("held connection answered by %q, want %s", id, bs[0].ID)
				}
			}
		})
	}
}

// TestMaglevSameTupleSameBackend connects from 8 fixed client ports, twice
// (the second round in reverse order, after tslb has forgotten the first
// round's flows), and checks each port reaches the same backend both times.
// Connections end with RST (SO_LINGER 0) so that the client keeps no
// TIME_WAIT and can reuse its port at once.
func TestMaglevSameTupleSameBackend(t *testing.T) {
	l, bs, tl := deploy(t, 1, 3, lab.ServerConfig{Port: 8080}, harness.Options{Scheduler: "maglev"})
	const ports = 8
	vip := netip.AddrPortFrom(l.VIP, 80).String()
	connect := func(port int) string {
		t.Helper()
		var c net.Conn
		err := l.Clients[0].Do(func() error {
			d := net.Dialer{Timeout: 5 * time.Second,
				LocalAddr: &net.TCPAddr{IP: l.Clients[0].Addr.AsSlice(), Port: port}}
			var err error
			c, err = d.Dial("tcp4", vip)
			return err
		})
		if err != nil {
			t.Fatalf("dial from port %d: %v", port, err)
		}
		id := request(t, c)
		c.(*net.TCPConn).SetLinger(0)
		c.Close()
		return id
	}
	waitEmpty := func() {
		t.Helper()
		deadline := time.Now().Add(15 * time.Second)
		for metrics(t, tl).Sum("tslb_flow_table_entries") != 0 {
			if time.Now().After(deadline) {
				t.Fatalf("flow table not empty 15 s after the connections ended")
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	first := map[int]string{}
	used := map[string]bool{}
	for i := range ports {
		p := 30100 + i
		first[p] = connect(p)
		used[first[p]] = true
	}
	waitEmpty()
	for i := ports - 1; i >= 0; i-- {
		p := 30100 + i
		if id := connect(p); id != first[p] {
			t.Errorf("client port %d: %s, then %s", p, first[p], id)
		}
	}
	t.Logf("8 client ports over %d of %d backends: %v", len(used), len(bs), first)
	// Not a constant mapping: 8 tuples over 3 backends all on one has
	// probability 3·3^-8 ≈ 0.05%.
	if len(used) < 2 {
		t.Errorf("all 8 tuples on one backend: %v", first)
	}
}
