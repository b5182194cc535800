package lb

import (
	"testing"

	"github.com/gopacket/gopacket/layers"

	"tslb/config"
	"tslb/nat"
)

func wsOf(tcp *layers.TCP) (uint8, bool) {
	for _, o := range tcp.Options {
		if o.OptionType == layers.TCPOptionKindWindowScale && len(o.OptionData) == 1 {
			return o.OptionData[0], true
		}
	}
	return 0, false
}

func sackPermOf(tcp *layers.TCP) bool {
	for _, o := range tcp.Options {
		if o.OptionType == layers.TCPOptionKindSACKPermitted {
			return true
		}
	}
	return false
}

// TestSYNProxy runs a whole connection through the SYN proxy: the SYN is
// answered with a cookie and makes nothing; the ACK returning it opens the
// backend connection with the client's options recovered from the cookie;
// the backend's SYN-ACK completes it with the held ACK (and its data);
// then every segment is translated between the backend's sequence space,
// clock and window scale and the ones the cookie gave the client, exactly.
func TestSYNProxy(t *testing.T) {
	t.Parallel()
	h := start(t, testConfig(func(c *config.Config) {
		c.Services[0].SYNProxy = config.SYNProxyOn
		c.Services[0].Backends = c.Services[0].Backends[:1]
		c.SNAT.PortMax = 20099
	}))
	h.prime(t)
	const cport, isn, cTS = 48000, 1_000_000, 5000

	// 1. SYN → cookie SYN-ACK; nothing toward the backend, no flow.
	s := clientSeg(cport, nat.TCPFlagSYN, isn, 0)
	s.opts = synOptions(cTS, 0) // MSS 1460, SACK-permitted, TS, WScale 7
	h.c0.inject(t, tcpFrame(t, s))
	sa := decode(t, h.c0.next(t))
	checkCsums(t, sa)
	got := tcpOf(t, sa)
	if got.flags != nat.TCPFlagSYN|nat.TCPFlagACK || got.src != vipAP || got.ack != isn+1 {
		t.Fatalf("cookie SYN-ACK: %+v", got)
	}
	cookie := got.seq
	cookieTS, ecr, ok := tsOf(sa.tcp)
	if !ok || ecr != cTS {
		t.Fatalf("cookie SYN-ACK TS %d/%d %v, want TSecr %d", cookieTS, ecr, ok, cTS)
	}
	if mss, _ := mssOf(sa.tcp); mss != 1460 {
		t.Errorf("cookie SYN-ACK MSS %d, want 1460", mss)
	}
	if ws, ok := wsOf(sa.tcp); !ok || ws != proxyWScale || !sackPermOf(sa.tcp) {
		t.Errorf("cookie SYN-ACK window scale %d %v, SACK-permitted %v", ws, ok, sackPermOf(sa.tcp))
	}
	h.quiet(t, h.b0)
	if n := metric(t, h.b, "tslb_flow_table_entries"); n != 0 {
		t.Fatalf("%v flows after a proxied SYN, want 0", n)
	}

	// 2. A forged ACK (no cookie) is dropped and counted.
	forged := clientSeg(cport+1, nat.TCPFlagACK, isn+1, cookie+1)
	forged.opts = tsOpts(cTS+1, cookieTS)
	h.c0.inject(t, tcpFrame(t, forged))
	h.quiet(t, h.c0)
	if d := drops(t, h.b, "syncookie_invalid"); d != 1 {
		t.Errorf("syncookie_invalid drops = %v, want 1", d)
	}

	// 3. The client's ACK (with data) → a SYN toward the backend.
	ack := clientSeg(cport, nat.TCPFlagACK|nat.TCPFlagPSH, isn+1, cookie+1)
	ack.opts, ack.payload = tsOpts(cTS+1, cookieTS), []byte("GET /")
	h.c0.inject(t, tcpFrame(t, ack))
	bs := decode(t, h.b0.next(t))
	checkCsums(t, bs)
	g := tcpOf(t, bs)
	if g.flags != nat.TCPFlagSYN || g.dst != be1AP || g.src.Addr() != snatAddr || g.seq != isn {
		t.Fatalf("backend SYN: %+v, want SYN seq %d to %s", g, isn, be1AP)
	}
	sport := g.src.Port()
	if mss, _ := mssOf(bs.tcp); mss != 1460 {
		t.Errorf("backend SYN MSS %d, want the cookie's 1460", mss)
	}
	if ws, ok := wsOf(bs.tcp); !ok || ws != 7 || !sackPermOf(bs.tcp) {
		t.Errorf("backend SYN window scale %d %v (want the client's 7), SACK-permitted %v", ws, ok, sackPermOf(bs.tcp))
	}
	if v, _, ok := tsOf(bs.tcp); !ok || v != cTS+1 {
		t.Errorf("backend SYN TSval %d %v, want the client's %d (passthrough)", v, ok, cTS+1)
	}
	h.quiet(t, h.c0)

	// 4. The backend's SYN-ACK (window scale 9) is not forwarded; the
	// held ACK goes, in the backend's space.
	const bisn, bTS = 70_000_000, 9000
	bsa := backendSeg(t, be1AP, sport, nat.TCPFlagSYN|nat.TCPFlagACK, bisn, isn+1)
	bsa.opts = append(synOptions(bTS, cTS+1)[:4], layers.TCPOption{OptionType: layers.TCPOptionKindWindowScale, OptionData: []byte{9}})
	h.b0.inject(t, tcpFrame(t, bsa))
	held := decode(t, h.b0.next(t))
	checkCsums(t, held)
	hg := tcpOf(t, held)
	if hg.flags != nat.TCPFlagACK|nat.TCPFlagPSH || hg.seq != isn+1 || hg.ack != bisn+1 || string(held.tcp.Payload) != "GET /" {
		t.Errorf("held ACK: %+v %q, want seq %d ack %d with the data", hg, held.tcp.Payload, isn+1, bisn+1)
	}
	if v, e, _ := tsOf(held.tcp); v != cTS+1 || e != bTS {
		t.Errorf("held ACK TS %d/%d, want %d/%d (the backend's own TSval echoed)", v, e, cTS+1, bTS)
	}
	h.quiet(t, h.c0)

	// 5. Backend data → the client, in the cookie's space, window rescaled
	// from the backend's scale (9) to the one the client was told (7).
	bd := backendSeg(t, be1AP, sport, nat.TCPFlagACK|nat.TCPFlagPSH, bisn+1, isn+6)
	bd.opts, bd.payload, bd.win = tsOpts(bTS+1, cTS+1), []byte("200 OK"), 100
	h.b0.inject(t, tcpFrame(t, bd))
	cd := decode(t, h.c0.next(t))
	checkCsums(t, cd)
	cg := tcpOf(t, cd)
	if cg.src != vipAP || cg.seq != cookie+1 || cg.ack != isn+6 || cd.tcp.Window != 400 || string(cd.tcp.Payload) != "200 OK" {
		t.Errorf("backend data at the client: %+v window %d, want seq %d ack %d window 400", cg, cd.tcp.Window, cookie+1, isn+6)
	}
	if v, e, _ := tsOf(cd.tcp); v != cookieTS+1 || e != cTS+1 {
		t.Errorf("backend data TS %d/%d, want %d/%d (the cookie's clock)", v, e, cookieTS+1, cTS+1)
	}

	// 6. Client data with a SACK block → the backend's space both ways.
	c2 := clientSeg(cport, nat.TCPFlagACK, isn+6, cookie+7)
	c2.opts = append(tsOpts(cTS+2, cookieTS+1), layers.TCPOption{OptionType: layers.TCPOptionKindNop}, layers.TCPOption{OptionType: layers.TCPOptionKindNop},
		layers.TCPOption{OptionType: layers.TCPOptionKindSACK, OptionData: append(be32(cookie+100), be32(cookie+200)...)})
	h.c0.inject(t, tcpFrame(t, c2))
	b2 := decode(t, h.b0.next(t))
	checkCsums(t, b2)
	if g := tcpOf(t, b2); g.seq != isn+6 || g.ack != bisn+7 {
		t.Errorf("client ACK at the backend: %+v, want seq %d ack %d", g, isn+6, bisn+7)
	}
	if _, e, _ := tsOf(b2.tcp); e != bTS+1 {
		t.Errorf("client TSecr at the backend %d, want %d", e, bTS+1)
	}
	if sk := sackOf(b2.tcp); len(sk) != 1 || sk[0] != [2]uint32{bisn + 100, bisn + 200} {
		t.Errorf("SACK at the backend %v, want [%d %d]", sk, bisn+100, bisn+200)
	}
	for res, want := range map[string]float64{"sent": 1, "valid": 1, "invalid": 1} {
		if got := metric(t, h.b, "tslb_synproxy_cookies_total", "service", "web", "result", res); got != want {
			t.Errorf("cookies %s = %v, want %v", res, got, want)
		}
	}
	if n := metric(t, h.b, "tslb_half_open_flows"); n != 0 {
		t.Errorf("half-open flows %v after the handshake, want 0", n)
	}
}

// TestSYNProxyACKsInOneBatch: cookie ACKs of several clients received in
// one batch each open their own backend connection. (Each rebuilt SYN
// needs memory of its own until the batch is flushed: they once shared
// one buffer, and only the last SYN of a batch reached the backend,
// several times.)
func TestSYNProxyACKsInOneBatch(t *testing.T) {
	t.Parallel()
	h := start(t, testConfig(func(c *config.Config) {
		c.Services[0].SYNProxy = config.SYNProxyOn
		c.Services[0].Backends = c.Services[0].Backends[:1]
		c.SNAT.PortMax = 20099
	}))
	h.prime(t)
	const n = 5
	// Client ports whose frames the fanout gives the same worker.
	var ports []uint16
	for p := uint16(41000); len(ports) < n; p++ {
		if h.c0.owner(tcpFrame(t, clientSeg(p, nat.TCPFlagSYN, 1, 0))) == h.c0.owner(tcpFrame(t, clientSeg(41000, nat.TCPFlagSYN, 1, 0))) {
			ports = append(ports, p)
		}
	}
	acks := make([][]byte, n)
	for i, p := range ports {
		isn := uint32(1_000_000 * (i + 1))
		s := clientSeg(p, nat.TCPFlagSYN, isn, 0)
		s.opts = synOptions(5000, 0)
		h.c0.inject(t, tcpFrame(t, s))
		sa := decode(t, h.c0.next(t))
		cookieTS, _, _ := tsOf(sa.tcp)
		a := clientSeg(p, nat.TCPFlagACK, isn+1, tcpOf(t, sa).seq+1)
		a.opts = tsOpts(5001, cookieTS)
		acks[i] = tcpFrame(t, a)
	}
	if err := h.c0.qs[h.c0.owner(acks[0])].InjectBatch(acks...); err != nil {
		t.Fatal(err)
	}
	seen := map[uint32]bool{}
	for range n {
		g := tcpOf(t, decode(t, h.b0.next(t)))
		if g.flags != nat.TCPFlagSYN {
			t.Fatalf("backend got %+v, want SYNs", g)
		}
		seen[g.seq] = true
	}
	for i := range n {
		if isn := uint32(1_000_000 * (i + 1)); !seen[isn] {
			t.Errorf("no backend SYN with the ISN %d of client %d (got %v)", isn, ports[i], seen)
		}
	}
	h.quiet(t, h.b0)
}

// TestSYNProxyCookieMSS: the cookie SYN-ACK stands in for the backend's,
// whose MSS the client never sees, so its MSS must already leave room for
// the 12 bytes of timestamps tslb inserts toward the backend for a client
// without them (rewrite). Otherwise every full-size segment of an upload
// grows past the MTU and is lost.
func TestSYNProxyCookieMSS(t *testing.T) {
	t.Parallel()
	noTS := []layers.TCPOption{{OptionType: layers.TCPOptionKindMSS, OptionData: []byte{0x05, 0xb4}}}
	for _, c := range []struct {
		name string
		ts   config.TSMode
		opts []layers.TCPOption
		want uint16
	}{
		{"rewrite/client_ts", config.TSRewrite, synOptions(5000, 0), 1460},
		{"rewrite/no_client_ts", config.TSRewrite, noTS, 1440}, // 1460 − 12, down to the cookie table
		{"passthrough/no_client_ts", config.TSPassthrough, noTS, 1460},
		{"strip/client_ts", config.TSStrip, synOptions(5000, 0), 1460},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			h := start(t, testConfig(func(cf *config.Config) {
				cf.Services[0].SYNProxy = config.SYNProxyOn
				cf.Services[0].Timestamps = c.ts
			}))
			h.prime(t)
			s := clientSeg(45000, nat.TCPFlagSYN, 7, 0)
			s.opts = c.opts
			h.c0.inject(t, tcpFrame(t, s))
			sa := decode(t, h.c0.next(t))
			if mss, _ := mssOf(sa.tcp); mss != c.want {
				t.Errorf("cookie SYN-ACK MSS %d, want %d", mss, c.want)
			}
		})
	}
}
