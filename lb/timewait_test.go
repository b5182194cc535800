package lb

import (
	"encoding/binary"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"

	"tslb/config"
	"tslb/lb/snat"
	"tslb/nat"
)

// The tests below drive tslb's TIME_WAIT safety (timewait.go, detector.go)
// through the fake links of datapath_test.go: which tuple a flow leaves in
// the ledger, what a SYN on a reused tuple carries (ISN, TSval), the PAWS
// rule and the exhaustion policies, the collision detector and repair, and
// header growth of GSO superframes with a synthesised timestamp. The
// service has one backend (be1) and two SNAT ports (20000-20001), so two
// flows closed by the backend exhaust the pool; flows leave the table 50 ms
// after they end, once the reaper visits their shard (every second).

// twConfig is testConfig with one backend, SNAT ports 20000-20001, flow
// time_wait and closed timeouts of 50 ms and the backends' TIME_WAIT 60 s
// (so a tuple stays in the ledger for the whole test), changed by mods.
func twConfig(mods ...func(*config.Config)) *config.Config {
	return testConfig(append([]func(*config.Config){func(c *config.Config) {
		c.Services[0].Backends = c.Services[0].Backends[:1]
		c.Services[0].TimeWait = 60 * time.Second
		c.SNAT.PortMax = 20001
		c.Flows.Timeouts.TimeWait = 50 * time.Millisecond
		c.Flows.Timeouts.Closed = 50 * time.Millisecond
	}}, mods...)...)
}

// twFlow is one flow as these tests drive it. Sequence numbers are kept in
// the client's space; delta is what tslb adds toward the backend.
type twFlow struct {
	cport, sport uint16
	cisn, bisn   uint32
	delta        uint32 // seq toward the backend - the client's seq
	cseq, bseq   uint32 // next seq of each side (client space, backend's own)

	// Timestamps the next segments carry (0: no TS option): the client's
	// TSval and the backend's TSval.
	cTS, bTS uint32

	// Observed on the frames tslb sent toward the backend: what its ledger
	// must hold when the flow ends (backend space).
	next       uint32 // highest seq+len(+SYN/FIN)
	lastTS     uint32 // highest TSval
	seen, tsOK bool
}

func (f *twFlow) snatAP() netip.AddrPort   { return netip.AddrPortFrom(snatAddr, f.sport) }
func (f *twFlow) clientAP() netip.AddrPort { return netip.AddrPortFrom(clientAddr, f.cport) }

// observe records a frame tslb sent toward the backend on f's tuple.
func (f *twFlow) observe(o *out) {
	end := o.tcp.Seq + uint32(len(o.tcp.Payload))
	if o.tcp.SYN {
		end++
	}
	if o.tcp.FIN {
		end++
	}
	if !o.tcp.RST && (!f.seen || nat.SeqAfter(end, f.next)) {
		f.next, f.seen = end, true
	}
	if v, _, ok := tsOf(o.tcp); ok && (!f.tsOK || nat.SeqAfter(v, f.lastTS)) {
		f.lastTS, f.tsOK = v, true
	}
}

// tsOpts is NOP NOP TS(val, ecr), the option list of Linux's segments.
func tsOpts(val, ecr uint32) []layers.TCPOption {
	return []layers.TCPOption{
		{OptionType: layers.TCPOptionKindNop},
		{OptionType: layers.TCPOptionKindNop},
		{OptionType: layers.TCPOptionKindTimestamps, OptionData: append(be32(val), be32(ecr)...)},
	}
}

// noTSSynOptions is a SYN option list without TS, 12 bytes: MSS 1460, NOP,
// WScale 7, NOP, NOP, SACK-permitted.
func noTSSynOptions() []layers.TCPOption {
	return []layers.TCPOption{
		{OptionType: layers.TCPOptionKindMSS, OptionData: []byte{0x05, 0xb4}},
		{OptionType: layers.TCPOptionKindNop},
		{OptionType: layers.TCPOptionKindWindowScale, OptionData: []byte{7}},
		{OptionType: layers.TCPOptionKindNop},
		{OptionType: layers.TCPOptionKindNop},
		{OptionType: layers.TCPOptionKindSACKPermitted},
	}
}

// tsOf returns the TS option of a decoded segment.
func tsOf(tcp *layers.TCP) (val, ecr uint32, ok bool) {
	for _, o := range tcp.Options {
		if o.OptionType == layers.TCPOptionKindTimestamps && len(o.OptionData) == 8 {
			return binary.BigEndian.Uint32(o.OptionData), binary.BigEndian.Uint32(o.OptionData[4:]), true
		}
	}
	return 0, 0, false
}

// mssOf returns the MSS option of a decoded segment.
func mssOf(tcp *layers.TCP) (uint16, bool) {
	for _, o := range tcp.Options {
		if o.OptionType == layers.TCPOptionKindMSS && len(o.OptionData) == 2 {
			return binary.BigEndian.Uint16(o.OptionData), true
		}
	}
	return 0, false
}

// sackOf returns the SACK blocks of a decoded segment as edge pairs.
func sackOf(tcp *layers.TCP) [][2]uint32 {
	var bs [][2]uint32
	for _, o := range tcp.Options {
		if o.OptionType != layers.TCPOptionKindSACK {
			continue
		}
		for d := o.OptionData; len(d) >= 8; d = d[8:] {
			bs = append(bs, [2]uint32{binary.BigEndian.Uint32(d), binary.BigEndian.Uint32(d[4:])})
		}
	}
	return bs
}

func segLen(flags uint8, payload []byte) uint32 {
	n := uint32(len(payload))
	if flags&nat.TCPFlagSYN != 0 {
		n++
	}
	if flags&nat.TCPFlagFIN != 0 {
		n++
	}
	return n
}

// twSYN sends a client SYN from cport and returns the new flow and the SYN
// as it reached the backend: SNAT address to be1, TTL 63, valid checksums.
// The flow's delta is read from it (the caller checks its value).
func (h *harness) twSYN(t testing.TB, cport uint16, isn uint32, opts []layers.TCPOption) (*twFlow, *out) {
	t.Helper()
	s := clientSeg(cport, nat.TCPFlagSYN, isn, 0)
	s.opts = opts
	h.c0.inject(t, tcpFrame(t, s))
	o := decode(t, h.b0.next(t))
	got := tcpOf(t, o)
	if got.src.Addr() != snatAddr || got.dst != be1AP || got.flags != nat.TCPFlagSYN || got.ttl != 63 ||
		got.ethSrc != b0MAC || got.ethDst != be1MAC {
		t.Fatalf("client SYN forwarded as %+v", got)
	}
	checkCsums(t, o)
	f := &twFlow{cport: cport, sport: got.src.Port(), cisn: isn, delta: got.seq - isn, cseq: isn + 1}
	f.observe(o)
	return f, o
}

// c2b sends a client segment of f (seq f.cseq, ack f.bseq) and returns it as
// forwarded to the backend: on f's tuple, seq + delta, ack unchanged, same
// flags and payload, TTL 63, valid checksums. f.cseq advances.
func (h *harness) c2b(t testing.TB, f *twFlow, flags uint8, opts []layers.TCPOption, payload []byte) *out {
	t.Helper()
	s := clientSeg(f.cport, flags, f.cseq, 0)
	if flags&nat.TCPFlagACK != 0 {
		s.ack = f.bseq
	}
	s.opts, s.payload = opts, payload
	h.c0.inject(t, tcpFrame(t, s))
	o := decode(t, h.b0.next(t))
	want := tcpWant{ethSrc: b0MAC, ethDst: be1MAC, src: f.snatAP(), dst: be1AP, ttl: 63, flags: flags,
		seq: f.cseq + f.delta, ack: s.ack}
	if got := tcpOf(t, o); got != want {
		t.Errorf("client segment forwarded as\n got %+v\nwant %+v", got, want)
	}
	if !slices.Equal(o.tcp.Payload, payload) && len(payload) > 0 {
		t.Errorf("payload changed: %q, sent %q", o.tcp.Payload, payload)
	}
	checkCsums(t, o)
	f.cseq += segLen(flags, payload)
	f.observe(o)
	return o
}

// b2c sends a backend segment of f (seq f.bseq; ack, in the client's
// space, ackClient + delta on the wire) and returns it as forwarded to the
// client: seq unchanged, ack = ackClient, TTL 63, valid checksums. f.bseq
// advances.
func (h *harness) b2c(t testing.TB, f *twFlow, flags uint8, ackClient uint32, opts []layers.TCPOption, payload []byte) *out {
	t.Helper()
	s := backendSeg(t, be1AP, f.sport, flags, f.bseq, 0)
	want := tcpWant{ethSrc: c0MAC, ethDst: clientMAC, src: vipAP, dst: f.clientAP(), ttl: 63, flags: flags, seq: f.bseq}
	if flags&nat.TCPFlagACK != 0 {
		s.ack, want.ack = ackClient+f.delta, ackClient
	}
	s.opts, s.payload = opts, payload
	h.b0.inject(t, tcpFrame(t, s))
	o := decode(t, h.c0.next(t))
	if got := tcpOf(t, o); got != want {
		t.Errorf("backend segment forwarded as\n got %+v\nwant %+v", got, want)
	}
	checkCsums(t, o)
	f.bseq += segLen(flags, payload)
	return o
}

// copts and bopts are the options of f's next client and backend segments:
// NOP NOP TS when that side uses timestamps (the backend echoing the last
// TSval it received).
func (f *twFlow) copts() []layers.TCPOption {
	if f.cTS == 0 {
		return nil
	}
	return tsOpts(f.cTS, f.bTS)
}

func (f *twFlow) bopts() []layers.TCPOption {
	if f.bTS == 0 {
		return nil
	}
	return tsOpts(f.bTS, f.lastTS)
}

// twOpen opens a flow from cport: SYN (with TS cTS unless 0), SYN-ACK from
// the backend (with TS bTS unless 0), the client's ACK. The SYN must go out
// on a fresh tuple: seq = isn.
func (h *harness) twOpen(t testing.TB, cport uint16, isn, bisn, cTS, bTS uint32) *twFlow {
	t.Helper()
	opts := []layers.TCPOption{{OptionType: layers.TCPOptionKindMSS, OptionData: []byte{0x05, 0xb4}}}
	if cTS != 0 {
		opts = synOptions(cTS, 0)
	}
	f, syn := h.twSYN(t, cport, isn, opts)
	if f.delta != 0 {
		t.Fatalf("SYN on a fresh tuple has seq %d, want the client's %d", syn.tcp.Seq, isn)
	}
	f.cTS = cTS
	f.bisn, f.bseq, f.bTS = bisn, bisn, bTS
	bo := []layers.TCPOption{{OptionType: layers.TCPOptionKindMSS, OptionData: []byte{0x05, 0xb4}}}
	if bTS != 0 {
		bo = synOptions(bTS, f.lastTS)
	}
	h.b2c(t, f, nat.TCPFlagSYN|nat.TCPFlagACK, f.cseq, bo, nil)
	h.c2b(t, f, nat.TCPFlagACK, f.copts(), nil)
	return f
}

// closeBackendFirst: backend FIN, client FIN+ACK, backend ACK.
func (h *harness) closeBackendFirst(t testing.TB, f *twFlow) {
	t.Helper()
	h.b2c(t, f, nat.TCPFlagFIN|nat.TCPFlagACK, f.cseq, f.bopts(), nil)
	h.c2b(t, f, nat.TCPFlagFIN|nat.TCPFlagACK, f.copts(), nil)
	h.b2c(t, f, nat.TCPFlagACK, f.cseq, f.bopts(), nil)
}

// closeClientFirst: client FIN, backend ACK, backend FIN, client ACK.
func (h *harness) closeClientFirst(t testing.TB, f *twFlow) {
	t.Helper()
	h.c2b(t, f, nat.TCPFlagFIN|nat.TCPFlagACK, f.copts(), nil)
	h.b2c(t, f, nat.TCPFlagACK, f.cseq, f.bopts(), nil)
	h.b2c(t, f, nat.TCPFlagFIN|nat.TCPFlagACK, f.cseq, f.bopts(), nil)
	h.c2b(t, f, nat.TCPFlagACK, f.copts(), nil)
}

// waitPorts waits (bounded) until the flow table holds flows entries and
// the SNAT pool counts are inUse, timeWait and free.
func (h *harness) waitPorts(t testing.TB, flows, inUse, timeWait, free float64) {
	t.Helper()
	get := func() [4]float64 {
		return [4]float64{metric(t, h.b, "tslb_flow_table_entries"), metric(t, h.b, "tslb_snat_ports_in_use"),
			metric(t, h.b, "tslb_snat_ports_time_wait"), metric(t, h.b, "tslb_snat_ports_free")}
	}
	want := [4]float64{flows, inUse, timeWait, free}
	// Flows leave the table 50 ms after they end, when the reaper next
	// visits their shard: within about 1.1 s.
	if !waitFor(5*time.Second, func() bool { return get() == want }) {
		t.Fatalf("after 5s: flows, ports in use, in TIME_WAIT, free = %v, want %v", get(), want)
	}
}

// ledger returns the TIME_WAIT record of a port of the only pool.
func (h *harness) ledger(t testing.TB, port uint16) (snat.Record, bool) {
	t.Helper()
	ps := h.b.shards[snat.PortOwner(port, len(h.b.shards))]
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if len(ps.list) != 1 {
		t.Fatalf("%d SNAT pools, want 1", len(ps.list))
	}
	return ps.list[0].Record(port)
}

func allocs(t testing.TB, b *Balancer, kind string) float64 {
	t.Helper()
	return metric(t, b, "tslb_snat_allocations_total", "kind", kind)
}

func exhaustion(t testing.TB, b *Balancer, outcome string) float64 {
	t.Helper()
	return metric(t, b, "tslb_snat_exhaustion_total", "outcome", outcome)
}

// fillTimeWait opens two flows (client ports 50000 and 50001) and has the
// backend close both first, with payload sent by the client in between, so
// both SNAT ports end in the ledger. cTS and bTS are as in twOpen; with
// cTS set, the client's TSval jumps by tsJump before its data. It returns
// the flows by SNAT port, after checking the ledger against what was
// observed on the wire.
func (h *harness) fillTimeWait(t testing.TB, cTS, bTS, tsJump uint32) map[uint16]*twFlow {
	t.Helper()
	byPort := map[uint16]*twFlow{}
	for i := range 2 {
		f := h.twOpen(t, uint16(50000+i), 1_000_000*uint32(i+1), 70_000_000*uint32(i+1), cTS, bTS)
		if f.cTS != 0 {
			f.cTS += tsJump
		}
		h.c2b(t, f, nat.TCPFlagACK|nat.TCPFlagPSH, f.copts(), []byte("hello"))
		h.b2c(t, f, nat.TCPFlagACK, f.cseq, f.bopts(), nil)
		h.closeBackendFirst(t, f)
		byPort[f.sport] = f
	}
	if len(byPort) != 2 {
		t.Fatalf("two flows on one SNAT port: %v", byPort)
	}
	h.waitPorts(t, 0, 0, 2, 0)
	for port, f := range byPort {
		rec, ok := h.ledger(t, port)
		if !ok {
			t.Fatalf("port %d is not in the ledger", port)
		}
		if rec.NextSeq != f.next || rec.HasTS != (cTS != 0 && bTS != 0) || (rec.HasTS && rec.LastTS != f.lastTS) {
			t.Errorf("ledger of port %d = %+v, want NextSeq %d, LastTS %d (seen on the wire), HasTS %v",
				port, rec, f.next, f.lastTS, cTS != 0 && bTS != 0)
		}
	}
	return byPort
}

// =========================================================================
// 1. The ledger: which ended flows leave their tuple in the backend's
// TIME_WAIT.

func TestTimeWaitLedger(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name     string
		end      func(t *testing.T, h *harness, f *twFlow)
		timeWait bool
		closed   string // tslb_flows_closed_total label
	}{
		{"backend closes first", func(t *testing.T, h *harness, f *twFlow) {
			h.closeBackendFirst(t, f)
		}, true, "backend"},
		{"client closes first", func(t *testing.T, h *harness, f *twFlow) {
			h.closeClientFirst(t, f)
		}, false, "client"},
		{"simultaneous close", func(t *testing.T, h *harness, f *twFlow) {
			// The client's FIN comes first, but the backend sends its own
			// before acknowledging it: both ends go through CLOSING to
			// TIME_WAIT, the backend included.
			h.c2b(t, f, nat.TCPFlagFIN|nat.TCPFlagACK, nil, nil)
			h.b2c(t, f, nat.TCPFlagFIN|nat.TCPFlagACK, f.cseq-1, nil, nil)
			h.c2b(t, f, nat.TCPFlagACK, nil, nil)
			h.b2c(t, f, nat.TCPFlagACK, f.cseq, nil, nil)
		}, true, "client"},
		{"backend acks the client's FIN with its own", func(t *testing.T, h *harness, f *twFlow) {
			// The control of the row above: the backend's FIN acks the
			// client's, so it goes LAST_ACK -> CLOSED.
			h.c2b(t, f, nat.TCPFlagFIN|nat.TCPFlagACK, nil, nil)
			h.b2c(t, f, nat.TCPFlagFIN|nat.TCPFlagACK, f.cseq, nil, nil)
			h.c2b(t, f, nat.TCPFlagACK, nil, nil)
		}, false, "client"},
		{"backend resets", func(t *testing.T, h *harness, f *twFlow) {
			h.b2c(t, f, nat.TCPFlagRST|nat.TCPFlagACK, f.cseq, nil, nil)
		}, false, "reset"},
		{"client resets after the backend's FIN", func(t *testing.T, h *harness, f *twFlow) {
			h.b2c(t, f, nat.TCPFlagFIN|nat.TCPFlagACK, f.cseq, nil, nil)
			h.c2b(t, f, nat.TCPFlagRST, nil, nil)
		}, false, "backend"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := start(t, twConfig())
			h.prime(t)
			f := h.twOpen(t, 51000, 5_000_000, 9_000_000, 0, 0)
			h.c2b(t, f, nat.TCPFlagACK|nat.TCPFlagPSH, nil, []byte("request"))
			h.b2c(t, f, nat.TCPFlagACK|nat.TCPFlagPSH, f.cseq, nil, []byte("response"))
			tc.end(t, h, f)
			h.quiet(t, h.c0)
			h.quiet(t, h.b0)
			if tc.timeWait {
				h.waitPorts(t, 0, 0, 1, 1)
				rec, ok := h.ledger(t, f.sport)
				if !ok {
					t.Fatalf("port %d not in the ledger", f.sport)
				}
				// rcv_nxt of the backend: everything the client sent, its
				// FIN included.
				if want := f.cisn + 1 + uint32(len("request")) + 1; rec.NextSeq != want || f.next != want || rec.HasTS {
					t.Errorf("ledger %+v (seen on the wire: next %d), want NextSeq %d, no TS", rec, f.next, want)
				}
				if left := time.Duration(rec.Until - h.b.sh.clock()); left < 50*time.Second || left > 60*time.Second {
					t.Errorf("ledger entry ends in %v, want about the service's time_wait (60s)", left)
				}
			} else {
				h.waitPorts(t, 0, 0, 0, 2)
				if rec, ok := h.ledger(t, f.sport); ok {
					t.Errorf("port %d in the ledger: %+v", f.sport, rec)
				}
			}
			if got := metric(t, h.b, "tslb_flows_closed_total", "closed_first", tc.closed); got != 1 {
				t.Errorf("tslb_flows_closed_total{%s} = %v, want 1", tc.closed, got)
			}
		})
	}
}

// =========================================================================
// 2. Early reuse by ISN translation (timestamps: passthrough, a client
// without TS): the SYN on a tuple in TIME_WAIT goes out with seq = the old
// connection's rcv_nxt + 65537, and the flow is translated both ways.

func TestTimeWaitEarlyReuseISN(t *testing.T) {
	t.Parallel()
	h := start(t, twConfig())
	h.prime(t)
	old := h.fillTimeWait(t, 0, 0, 0)

	const cisn = 3_000_000_000 // far from the old flows' sequence space
	mss := []layers.TCPOption{{OptionType: layers.TCPOptionKindMSS, OptionData: []byte{0x05, 0xb4}}}
	f, syn := h.twSYN(t, 52000, cisn, mss)
	prev := old[f.sport]
	if prev == nil {
		t.Fatalf("SYN went out on port %d, not a port in TIME_WAIT", f.sport)
	}
	want := prev.next + 65537
	if syn.tcp.Seq != want {
		t.Fatalf("SYN seq %d, want old rcv_nxt %d + 65537 = %d", syn.tcp.Seq, prev.next, want)
	}
	// Nothing else changed: the SYN is the client's with that seq.
	s := clientSeg(52000, nat.TCPFlagSYN, want, 0)
	s.opts = mss
	checkUntouched(t, syn, tcpFrame(t, s))
	if got := allocs(t, h.b, "early_reuse_isn"); got != 1 {
		t.Errorf("early_reuse_isn allocations = %v, want 1", got)
	}
	if got := allocs(t, h.b, "fresh"); got != 2 {
		t.Errorf("fresh allocations = %v, want 2", got)
	}
	h.waitPorts(t, 1, 1, 1, 0)

	// The SYN-ACK acks the translated ISN; the client sees its own + 1.
	f.bisn, f.bseq = 123_456, 123_456
	h.b2c(t, f, nat.TCPFlagSYN|nat.TCPFlagACK, cisn+1, nil, nil)
	h.c2b(t, f, nat.TCPFlagACK, nil, nil)
	h.c2b(t, f, nat.TCPFlagACK|nat.TCPFlagPSH, nil, []byte("GET / HTTP/1.1\r\n\r\n"))

	// A SACK from the backend (backend space) comes back minus delta.
	sackAt := func(lo, hi uint32) []layers.TCPOption {
		return []layers.TCPOption{{OptionType: layers.TCPOptionKindNop}, {OptionType: layers.TCPOptionKindNop},
			{OptionType: layers.TCPOptionKindSACK, OptionData: append(be32(lo+f.delta), be32(hi+f.delta)...)}}
	}
	// (The backend lost the first 4 bytes and holds the rest.)
	o := h.b2c(t, f, nat.TCPFlagACK, cisn+1, sackAt(cisn+5, cisn+19), nil)
	if got, want := sackOf(o.tcp), [][2]uint32{{cisn + 5, cisn + 19}}; !slices.Equal(got, want) {
		t.Errorf("SACK blocks at the client %v, want %v (delta %d)", got, want, f.delta)
	}
	// Data from the backend keeps its seq; its ack is translated.
	h.b2c(t, f, nat.TCPFlagACK|nat.TCPFlagPSH, f.cseq, nil, []byte("HTTP/1.1 200 OK\r\n\r\n"))
	h.quiet(t, h.c0)
	h.quiet(t, h.b0)
}

// =========================================================================
// 3. Rewrite mode: tslb's TSval on a reused tuple is newer than any sent on
// it; the backend's echo is translated back exactly; a client without
// timestamps gets a synthesised option.

func TestTimeWaitRewrite(t *testing.T) {
	t.Parallel()
	h := start(t, twConfig(func(c *config.Config) { c.Services[0].Timestamps = config.TSRewrite }))
	h.prime(t)
	// The old flows' TSvals jump a million ticks ahead of tslb's clock, so
	// the next SYN's TSval must come from the ledger, not the clock.
	old := h.fillTimeWait(t, 5000, 800_000, 1_000_000)
	for p, f := range old {
		if !f.tsOK {
			t.Fatalf("no TSval seen toward the backend on port %d", p)
		}
	}

	const clientTS = 777 // older than anything the backend saw
	f, syn := h.twSYN(t, 53000, 4_000_000_000, synOptions(clientTS, 0))
	prev := old[f.sport]
	if prev == nil {
		t.Fatalf("SYN went out on port %d, not a port in TIME_WAIT", f.sport)
	}
	v, ecr, ok := tsOf(syn.tcp)
	if !ok {
		t.Fatalf("SYN toward the backend has no TS: %v", syn.pkt)
	}
	if !nat.SeqAfter(v, prev.lastTS) {
		t.Errorf("SYN TSval %d, not after the last TSval %d sent on the tuple", v, prev.lastTS)
	}
	// tslb's clock is far behind the ledger here, so the TSval is exactly
	// the ledger's + 1.
	if v != prev.lastTS+1 || ecr != 0 {
		t.Errorf("SYN TS (%d, %d), want (%d, 0)", v, ecr, prev.lastTS+1)
	}
	if want := prev.next + 65537; syn.tcp.Seq != want {
		t.Errorf("SYN seq %d, want %d (ISN translation applies too)", syn.tcp.Seq, want)
	}
	if len(syn.tcp.Options) != 5 || len(syn.raw) != 14+20+40 {
		t.Errorf("SYN options changed shape: %v", syn.tcp.Options)
	}
	if got := allocs(t, h.b, "early_reuse_ts"); got != 1 {
		t.Errorf("early_reuse_ts allocations = %v, want 1", got)
	}
	// The backend echoes tslb's TSval; the client sees its own.
	f.cTS, f.bTS = clientTS, 4242
	f.bisn, f.bseq = 55_555, 55_555
	o := h.b2c(t, f, nat.TCPFlagSYN|nat.TCPFlagACK, f.cseq, synOptions(f.bTS, v), nil)
	if bv, becr, ok := tsOf(o.tcp); !ok || bv != 4242 || becr != clientTS {
		t.Errorf("SYN-ACK TS at the client (%d, %d, %v), want (4242, %d)", bv, becr, ok, clientTS)
	}
	f.cTS++
	o = h.c2b(t, f, nat.TCPFlagACK, f.copts(), nil)
	if gv, gecr, _ := tsOf(o.tcp); gv != v+1 || gecr != 4242 {
		t.Errorf("client ACK TS toward the backend (%d, %d), want (%d, 4242)", gv, gecr, v+1)
	}

	// A second client, without timestamps, gets the other port and a
	// synthesised TS newer than that port's ledger.
	var other *twFlow
	for p, x := range old {
		if p != f.sport {
			other = x
		}
	}
	in := clientSeg(53001, nat.TCPFlagSYN, 9, 0)
	in.opts = noTSSynOptions()
	inFrame := tcpFrame(t, in)
	h.c0.inject(t, inFrame)
	syn2 := decode(t, h.b0.next(t))
	checkCsums(t, syn2)
	g := tcpOf(t, syn2)
	if g.src != other.snatAP() || g.dst != be1AP || g.flags != nat.TCPFlagSYN || g.seq != other.next+65537 {
		t.Errorf("TS-less SYN forwarded as %+v, want %s > %s seq %d", g, other.snatAP(), be1AP, other.next+65537)
	}
	if got, want := len(syn2.raw), len(inFrame)-nat.VirtioNetHdrLen+12; got != want {
		t.Errorf("synthesised-TS SYN is %d bytes, want %d (+12)", got, want)
	}
	if syn2.tcp.DataOffset != 11 || syn2.ip.Length != 20+44 {
		t.Errorf("data offset %d, IPv4 length %d; want 11 and 64", syn2.tcp.DataOffset, syn2.ip.Length)
	}
	v2, ecr2, ok := tsOf(syn2.tcp)
	if !ok || v2 != other.lastTS+1 || ecr2 != 0 {
		t.Errorf("synthesised TS (%d, %d, %v), want (%d, 0)", v2, ecr2, ok, other.lastTS+1)
	}
	if m, ok := mssOf(syn2.tcp); !ok || m != 1460 {
		t.Errorf("SYN MSS %d (%v), want 1460 kept", m, ok)
	}
	if got := allocs(t, h.b, "early_reuse_ts"); got != 2 {
		t.Errorf("early_reuse_ts allocations = %v, want 2", got)
	}
	// Its SYN-ACK reaches the client without TS, MSS clamped by 12.
	sa := backendSeg(t, be1AP, other.sport, nat.TCPFlagSYN|nat.TCPFlagACK, 31337, g.seq+1)
	sa.opts = synOptions(99, v2)
	saFrame := tcpFrame(t, sa)
	h.b0.inject(t, saFrame)
	o = decode(t, h.c0.next(t))
	checkCsums(t, o)
	if g := tcpOf(t, o); g.dst.Port() != 53001 || g.ack != 10 || g.seq != 31337 {
		t.Errorf("SYN-ACK forwarded as %+v, want to :53001 seq 31337 ack 10", g)
	}
	if _, _, ok := tsOf(o.tcp); ok {
		t.Errorf("SYN-ACK to a TS-less client carries a TS: %v", o.tcp.Options)
	}
	if m, ok := mssOf(o.tcp); !ok || m != 1448 {
		t.Errorf("SYN-ACK MSS %d (%v), want 1448", m, ok)
	}
	if len(o.raw) != len(saFrame)-nat.VirtioNetHdrLen {
		t.Errorf("SYN-ACK length changed: %d, sent %d", len(o.raw), len(saFrame)-nat.VirtioNetHdrLen)
	}
	h.quiet(t, h.c0)
	h.quiet(t, h.b0)
}

// =========================================================================
// 4. The PAWS rule (passthrough, isn_translation: false): a client TSval
// older than the ledger's makes reuse unsafe, and the exhaustion policy
// decides.

func TestTimeWaitPAWS(t *testing.T) {
	t.Parallel()
	const oldTS = 5_000_000 // the old flows' client TSval (+1000 after the jump)
	for _, tc := range []struct {
		name   string
		policy config.Exhaustion
		wait   time.Duration
		synTS  uint32
	}{
		{"newer TSval is safe", config.ExhaustReject, 0, oldTS + 5000},
		{"equal TSval needs ISN translation", config.ExhaustReject, 0, oldTS + 1000},
		{"reject", config.ExhaustReject, 0, oldTS - 1},
		{"reuse", config.ExhaustReuse, 0, 1},
		{"wait times out", config.ExhaustWait, 200 * time.Millisecond, oldTS},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := start(t, twConfig(func(c *config.Config) {
				s := &c.Services[0]
				s.NoISNTranslation = true
				s.Exhaustion, s.ExhaustionWait = tc.policy, tc.wait
			}))
			h.prime(t)
			h.fillTimeWait(t, oldTS, 600, 1000)
			const cport, isn = 54000, 42
			s := clientSeg(cport, nat.TCPFlagSYN, isn, 0)
			s.opts = synOptions(tc.synTS, 0)
			in := tcpFrame(t, s)
			sent := time.Now()
			h.c0.inject(t, in)
			switch tc.name {
			case "newer TSval is safe", "reuse":
				o := decode(t, h.b0.next(t))
				g := tcpOf(t, o)
				if g.src.Addr() != snatAddr || g.dst != be1AP {
					t.Fatalf("SYN forwarded as %+v", g)
				}
				// Untranslated: only addresses, ports, TTL and checksums change.
				checkTCP(t, o, in, tcpWant{ethSrc: b0MAC, ethDst: be1MAC, src: g.src, dst: be1AP, ttl: 63,
					flags: nat.TCPFlagSYN, seq: isn})
				kind, outcome := "early_reuse_ts", "reused"
				if tc.name == "reuse" {
					kind = "forced"
				}
				if got := allocs(t, h.b, kind); got != 1 {
					t.Errorf("%s allocations = %v, want 1", kind, got)
				}
				want := 0.0
				if tc.name == "reuse" {
					want = 1
				}
				if got := exhaustion(t, h.b, outcome); got != want {
					t.Errorf("exhaustion{%s} = %v, want %v", outcome, got, want)
				}
				h.quiet(t, h.c0)
			case "equal TSval needs ISN translation", "reject":
				// Equal passes PAWS but needs a later seq, which tslb may
				// not make: as unsafe as an older TSval.
				same, other := h.sync(t, h.c0)
				for _, f := range other {
					t.Errorf("SYN reached the backend side: % x", f)
				}
				if len(same) != 1 {
					t.Fatalf("%d frames to the client, want the reject RST", len(same))
				}
				checkResetOfSYN(t, decode(t, same[0]), cport, isn)
				if got := exhaustion(t, h.b, "rejected"); got != 1 {
					t.Errorf("exhaustion{rejected} = %v, want 1", got)
				}
				if got := metric(t, h.b, "tslb_syn_refused_total", "reason", "snat_exhausted"); got != 1 {
					t.Errorf("tslb_syn_refused_total{snat_exhausted} = %v, want 1", got)
				}
			case "wait times out":
				h.quiet(t, h.c0)
				if got := exhaustion(t, h.b, "waited"); got != 1 {
					t.Errorf("exhaustion{waited} = %v, want 1", got)
				}
				o := decode(t, h.c0.next(t))
				// The wait is measured on the datapath's clock, a 1 ms tick
				// that may lag the wall clock a little: allow 10 ms.
				if d := time.Since(sent); d < tc.wait-10*time.Millisecond {
					t.Errorf("client reset after %v, before the %v wait", d, tc.wait)
				}
				checkResetOfSYN(t, o, cport, isn)
				if got := exhaustion(t, h.b, "wait_timeout"); got != 1 {
					t.Errorf("exhaustion{wait_timeout} = %v, want 1", got)
				}
				if got := exhaustion(t, h.b, "wait_served"); got != 0 {
					t.Errorf("exhaustion{wait_served} = %v, want 0", got)
				}
				h.quiet(t, h.c0)
				h.quiet(t, h.b0)
			}
			// Refused or not, the ledger never lost a tuple.
			ports := metric(t, h.b, "tslb_snat_ports_in_use") + metric(t, h.b, "tslb_snat_ports_time_wait")
			if ports != 2 {
				t.Errorf("ports in use + in TIME_WAIT = %v, want 2", ports)
			}
		})
	}
}

// checkResetOfSYN checks tslb's answer to a refused client SYN: RST|ACK
// from the VIP, seq 0, ack = ISN + 1, valid checksums.
func checkResetOfSYN(t testing.TB, o *out, cport uint16, isn uint32) {
	t.Helper()
	want := tcpWant{ethSrc: c0MAC, ethDst: clientMAC, src: vipAP, dst: netip.AddrPortFrom(clientAddr, cport),
		ttl: 64, flags: nat.TCPFlagRST | nat.TCPFlagACK, seq: 0, ack: isn + 1}
	if got := tcpOf(t, o); got != want {
		t.Errorf("answer to the refused SYN\n got %+v\nwant %+v", got, want)
	}
	checkCsums(t, o)
}

// A SYN held by the wait policy is served when a tuple frees in time.
func TestTimeWaitWaitServed(t *testing.T) {
	t.Parallel()
	h := start(t, twConfig(func(c *config.Config) {
		s := &c.Services[0]
		s.NoISNTranslation = true
		// Long enough for the reaper (up to ~1.1 s) to free the live
		// flow's tuple.
		s.Exhaustion, s.ExhaustionWait = config.ExhaustWait, 4*time.Second
	}))
	h.prime(t)
	// One tuple in TIME_WAIT with timestamps, one held by a live flow.
	f1 := h.twOpen(t, 50000, 1000, 2000, 9_000_000, 100)
	live := h.twOpen(t, 50001, 3000, 4000, 9_000_000, 100)
	h.closeBackendFirst(t, f1)
	h.waitPorts(t, 1, 1, 1, 0)

	const cport, isn = 54100, 77
	s := clientSeg(cport, nat.TCPFlagSYN, isn, 0)
	s.opts = synOptions(1, 0) // older than the ledger's: PAWS would reject it
	in := tcpFrame(t, s)
	h.c0.inject(t, in)
	h.quiet(t, h.c0)
	if got := exhaustion(t, h.b, "waited"); got != 1 {
		t.Fatalf("exhaustion{waited} = %v, want 1", got)
	}
	// The live flow closes client first: its tuple is free once the flow
	// leaves the table, and the held SYN takes it.
	h.closeClientFirst(t, live)
	o := decode(t, h.b0.next(t))
	checkTCP(t, o, in, tcpWant{ethSrc: b0MAC, ethDst: be1MAC, src: live.snatAP(), dst: be1AP, ttl: 63,
		flags: nat.TCPFlagSYN, seq: isn})
	if got := exhaustion(t, h.b, "wait_served"); got != 1 {
		t.Errorf("exhaustion{wait_served} = %v, want 1", got)
	}
	if got := exhaustion(t, h.b, "wait_timeout"); got != 0 {
		t.Errorf("exhaustion{wait_timeout} = %v, want 0", got)
	}
	if got := allocs(t, h.b, "fresh"); got != 3 {
		t.Errorf("fresh allocations = %v, want 3", got)
	}
	h.quiet(t, h.c0)
	h.quiet(t, h.b0)
	// The served flow works: SYN-ACK to the client.
	f := &twFlow{cport: cport, sport: live.sport, cisn: isn, cseq: isn + 1, bisn: 500, bseq: 500}
	h.b2c(t, f, nat.TCPFlagSYN|nat.TCPFlagACK, isn+1, nil, nil)
}

// =========================================================================
// 5. The collision detector.

// oldACKFrame is the backend's answer to the SYN of f from TIME_WAIT: an
// ACK of its old rcv_nxt (ack) from its old snd_nxt.
func oldACKFrame(t testing.TB, sport uint16, seq, ack uint32) []byte {
	s := backendSeg(t, be1AP, sport, nat.TCPFlagACK, seq, ack)
	s.win = 502
	return tcpFrame(t, s)
}

func TestCollisionRepair(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	h := start(t, twConfig(func(c *config.Config) {
		c.SNAT.PortMax = 20009
		c.Detector.PcapDir = dir
	}))
	h.prime(t)
	const cport, isn = 55000, 1_000_000
	f, syn := h.twSYN(t, cport, isn, synOptions(10, 0))
	const bogus = 987_654_321 // the backend's old rcv_nxt
	for i := range maxRepairs {
		h.b0.inject(t, oldACKFrame(t, f.sport, 5555, bogus+uint32(i)))
		same, other := h.sync(t, h.b0)
		if len(other) != 0 {
			t.Fatalf("repair %d: %d frames reached the client side", i+1, len(other))
		}
		if len(same) != 2 {
			t.Fatalf("repair %d: %d frames to the backend, want RST and SYN", i+1, len(same))
		}
		rst := decode(t, same[0])
		checkCsums(t, rst)
		if g := tcpOf(t, rst); g != (tcpWant{ethSrc: b0MAC, ethDst: be1MAC, src: f.snatAP(), dst: be1AP, ttl: 64,
			flags: nat.TCPFlagRST, seq: bogus + uint32(i)}) {
			t.Errorf("repair %d: RST %+v, want seq %d from %s", i+1, g, bogus+uint32(i), f.snatAP())
		}
		again := decode(t, same[1])
		checkCsums(t, again)
		if !slices.Equal(again.raw, syn.raw) {
			t.Errorf("repair %d: re-sent SYN differs from the first:\n got % x\nwant % x", i+1, again.raw, syn.raw)
		}
		if got := metric(t, h.b, "tslb_collision_repairs_total"); got != float64(i+1) {
			t.Errorf("repairs = %v, want %d", got, i+1)
		}
		if got := metric(t, h.b, "tslb_collisions_total", "signature", "old_ack"); got != float64(i+1) {
			t.Errorf("collisions{old_ack} = %v, want %d", got, i+1)
		}
	}
	if got := metric(t, h.b, "tslb_collisions_total", "signature", "old_ack"); got != maxRepairs {
		t.Errorf("collisions{old_ack} = %v, want %d", got, maxRepairs)
	}
	// The fourth is left to the client.
	h.b0.inject(t, oldACKFrame(t, f.sport, 5555, bogus+7))
	o := decode(t, h.c0.next(t))
	checkCsums(t, o)
	if g := tcpOf(t, o); g != (tcpWant{ethSrc: c0MAC, ethDst: clientMAC, src: vipAP, dst: f.clientAP(), ttl: 63,
		flags: nat.TCPFlagACK, seq: 5555, ack: bogus + 7}) {
		t.Errorf("fourth old ACK forwarded as %+v", g)
	}
	h.quiet(t, h.b0)
	if got := metric(t, h.b, "tslb_collision_repairs_total"); got != maxRepairs {
		t.Errorf("repairs = %v after the fourth, want %d", got, maxRepairs)
	}
	if got := metric(t, h.b, "tslb_collisions_total", "signature", "old_ack"); got != maxRepairs+1 {
		t.Errorf("collisions{old_ack} = %v, want %d", got, maxRepairs+1)
	}

	// The capture: 9 frames recorded (the SYN, then 3 x old ACK, RST,
	// SYN minus the last SYN) fill it, and it is written in the background.
	var path string
	if !waitFor(5*time.Second, func() bool {
		m, _ := filepath.Glob(filepath.Join(dir, "collision-*.pcap"))
		if len(m) == 1 {
			path = m[0]
		}
		return path != ""
	}) {
		ents, _ := os.ReadDir(dir)
		t.Fatalf("no collision pcap in %s after 5s: %v", dir, ents)
	}
	if !strings.Contains(filepath.Base(path), f.snatAP().Addr().String()) {
		t.Errorf("pcap name %s does not name the SNAT address", path)
	}
	fh, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	r, err := pcapgo.NewReader(fh)
	if err != nil {
		t.Fatal(err)
	}
	if r.LinkType() != layers.LinkTypeEthernet {
		t.Errorf("pcap link type %v", r.LinkType())
	}
	var sawSYN, sawACK, sawRST bool
	n := 0
	for {
		data, _, err := r.ReadPacketData()
		if err != nil {
			break
		}
		n++
		o := decode(t, append(make([]byte, nat.VirtioNetHdrLen), data...))
		tcp := o.tcp
		if tcp == nil {
			t.Errorf("pcap frame %d is not TCP: %v", n, o.pkt)
			continue
		}
		checkCsums(t, o)
		switch {
		case tcp.SYN && !tcp.ACK:
			sawSYN = sawSYN || (tcp.Seq == isn && uint16(tcp.SrcPort) == f.sport && tcp.DstPort == 8080)
		case tcp.RST:
			sawRST = sawRST || tcp.Seq == bogus
		case tcp.ACK:
			sawACK = sawACK || (tcp.Ack == bogus && uint16(tcp.DstPort) == f.sport)
		}
	}
	if n != 9 || !sawSYN || !sawACK || !sawRST {
		t.Errorf("pcap has %d frames, SYN %v, old ACK %v, RST %v; want 9 with all three", n, sawSYN, sawACK, sawRST)
	}
}

// With detector.repair false, an old ACK reaches the client at once, its
// ack translated back to the client's space.
func TestCollisionNoRepair(t *testing.T) {
	t.Parallel()
	h := start(t, twConfig(func(c *config.Config) { c.Detector.NoRepair = true }))
	h.prime(t)
	old := h.fillTimeWait(t, 0, 0, 0)
	const isn = 2_000_000_000
	f, syn := h.twSYN(t, 55100, isn, nil)
	prev := old[f.sport]
	if prev == nil || syn.tcp.Seq != prev.next+65537 {
		t.Fatalf("SYN on port %d seq %d, want a reused port with seq rcv_nxt+65537", f.sport, syn.tcp.Seq)
	}
	// The backend (say its TIME_WAIT was longer than tslb assumed) answers
	// with its old rcv_nxt.
	h.b0.inject(t, oldACKFrame(t, f.sport, prev.bseq, prev.next))
	o := decode(t, h.c0.next(t))
	checkCsums(t, o)
	if g := tcpOf(t, o); g != (tcpWant{ethSrc: c0MAC, ethDst: clientMAC, src: vipAP, dst: f.clientAP(), ttl: 63,
		flags: nat.TCPFlagACK, seq: prev.bseq, ack: prev.next - f.delta}) {
		t.Errorf("old ACK forwarded as %+v, want ack %d (delta %d)", g, prev.next-f.delta, f.delta)
	}
	h.quiet(t, h.b0)
	if got := metric(t, h.b, "tslb_collisions_total", "signature", "old_ack"); got != 1 {
		t.Errorf("collisions{old_ack} = %v, want 1", got)
	}
	if got := metric(t, h.b, "tslb_collision_repairs_total"); got != 0 {
		t.Errorf("repairs = %v, want 0", got)
	}
}

// An RST answering the SYN and a retransmitted SYN are counted; both are
// forwarded.
func TestCollisionSignatures(t *testing.T) {
	t.Parallel()
	h := start(t, twConfig(func(c *config.Config) { c.SNAT.PortMax = 20009 }))
	h.prime(t)

	f, _ := h.twSYN(t, 56000, 100, nil)
	f.bseq = 0
	h.b2c(t, f, nat.TCPFlagRST|nat.TCPFlagACK, 101, nil, nil)
	h.quiet(t, h.b0)
	if got := metric(t, h.b, "tslb_collisions_total", "signature", "rst_on_syn"); got != 1 {
		t.Errorf("collisions{rst_on_syn} = %v, want 1", got)
	}

	in := tcpFrame(t, clientSeg(56001, nat.TCPFlagSYN, 200, 0))
	h.c0.inject(t, in)
	first := decode(t, h.b0.next(t))
	h.c0.inject(t, in)
	second := decode(t, h.b0.next(t))
	checkCsums(t, second)
	if !slices.Equal(first.raw, second.raw) {
		t.Errorf("retransmitted SYN forwarded differently:\n got % x\nwant % x", second.raw, first.raw)
	}
	h.quiet(t, h.c0)
	if got := metric(t, h.b, "tslb_collisions_total", "signature", "syn_retransmit"); got != 1 {
		t.Errorf("collisions{syn_retransmit} = %v, want 1", got)
	}
	if got := metric(t, h.b, "tslb_collisions_total", "signature", "old_ack"); got != 0 {
		t.Errorf("collisions{old_ack} = %v, want 0", got)
	}
	if got := metric(t, h.b, "tslb_collision_repairs_total"); got != 0 {
		t.Errorf("repairs = %v, want 0", got)
	}
}

// =========================================================================
// 6. A GSO superframe in a flow with a synthesised TS: the header grows by
// 12 bytes in every segment, so the virtio header's HdrLen does too.

func TestGSOSynthesisedTS(t *testing.T) {
	t.Parallel()
	h := start(t, twConfig(func(c *config.Config) { c.Services[0].Timestamps = config.TSRewrite }))
	h.prime(t)
	f, syn := h.twSYN(t, 57000, 1000, noTSSynOptions())
	synTS, _, ok := tsOf(syn.tcp)
	if !ok {
		t.Fatalf("no synthesised TS on the SYN: %v", syn.tcp.Options)
	}
	f.bisn, f.bseq = 9000, 9000
	h.b2c(t, f, nat.TCPFlagSYN|nat.TCPFlagACK, 1001, synOptions(5150, synTS), nil)

	payload := make([]byte, 3*1448)
	for i := range payload {
		payload[i] = byte(i * 7)
	}
	vh := nat.VirtioNetHdr{Flags: nat.VirtioNetHdrFNeedsCsum, GSOType: nat.GSOTCPv4,
		HdrLen: 14 + 20 + 20, GSOSize: 1448, CsumStart: 14 + 20, CsumOffset: 16}
	s := clientSeg(f.cport, nat.TCPFlagACK|nat.TCPFlagPSH, 1001, 9001)
	s.vh, s.payload = vh, payload
	in := tcpFrame(t, s)
	// What a kernel with TSO hands over: the checksum field holds the
	// folded pseudo-header sum.
	hdr, l4 := ipDatagram(t, in[nat.VirtioNetHdrLen:])
	binary.BigEndian.PutUint16(l4[16:], nat.Fold(nat.PseudoHeaderSum(nat.Addr4(hdr[12:16]), nat.Addr4(hdr[16:20]), nat.ProtoTCP, uint16(len(l4)))))
	h.c0.inject(t, in)
	o := decode(t, h.b0.next(t))

	want := vh
	want.HdrLen += 12
	if o.vh != want {
		t.Errorf("virtio header %+v, want %+v", o.vh, want)
	}
	if got := len(o.raw); got != len(in)-nat.VirtioNetHdrLen+12 {
		t.Errorf("superframe is %d bytes, want %d (+12)", got, len(in)-nat.VirtioNetHdrLen+12)
	}
	if g := tcpOf(t, o); g.src != f.snatAP() || g.dst != be1AP || g.seq != 1001 || g.ack != 9001 {
		t.Errorf("superframe forwarded as %+v", g)
	}
	if o.tcp.DataOffset != 8 || !slices.Equal(o.tcp.Payload, payload) {
		t.Errorf("data offset %d (want 8), payload intact %v", o.tcp.DataOffset, slices.Equal(o.tcp.Payload, payload))
	}
	if v, ecr, ok := tsOf(o.tcp); !ok || ecr != 5150 || nat.SeqBefore(v, synTS) {
		t.Errorf("inserted TS (%d, %d, %v), want TSval >= %d and TSecr 5150", v, ecr, ok, synTS)
	}
	// The partial checksum covers the new length; completed it is valid.
	ohdr, ol4 := ipDatagram(t, o.raw)
	if got, w := binary.BigEndian.Uint16(ol4[16:]), nat.Fold(nat.PseudoHeaderSum(nat.Addr4(ohdr[12:16]), nat.Addr4(ohdr[16:20]), nat.ProtoTCP, uint16(len(ol4)))); got != w {
		t.Errorf("partial checksum field %#04x, want pseudo-header sum %#04x", got, w)
	}
	done := slices.Clone(o.raw)
	nat.CompletePartial(done, int(o.vh.CsumStart), int(o.vh.CsumOffset))
	checkCsums(t, decode(t, append(make([]byte, nat.VirtioNetHdrLen), done...)))
	h.quiet(t, h.c0)
}

// TestTimeWaitLooksPastUnsafeHead: when the TIME_WAIT tuple that ends
// soonest cannot take the SYN (its last TSval is newer than the client's:
// PAWS), tslb looks at the next ones and reuses a tuple whose last TSval is
// older, instead of applying the exhaustion policy.
func TestTimeWaitLooksPastUnsafeHead(t *testing.T) {
	t.Parallel()
	h := start(t, twConfig(func(c *config.Config) {
		s := &c.Services[0]
		s.NoISNTranslation = true
		s.Exhaustion = config.ExhaustReject
	}))
	h.prime(t)
	// Closed in this order, so the first (newer timestamps) heads the ring.
	newer := h.twOpen(t, 50000, 1_000_000, 70_000_000, 9_000_000, 600)
	h.closeBackendFirst(t, newer)
	older := h.twOpen(t, 50001, 2_000_000, 80_000_000, 5_000_000, 600)
	h.closeBackendFirst(t, older)
	h.waitPorts(t, 0, 0, 2, 0)

	s := clientSeg(54000, nat.TCPFlagSYN, 42, 0)
	s.opts = synOptions(6_000_000, 0) // newer than older's, older than newer's
	h.c0.inject(t, tcpFrame(t, s))
	o := decode(t, h.b0.next(t))
	g := tcpOf(t, o)
	if g.src != netip.AddrPortFrom(snatAddr, older.sport) {
		t.Errorf("SYN went out from %v, want the tuple with the older TSval (port %d), not %d", g.src, older.sport, newer.sport)
	}
	if got := allocs(t, h.b, "early_reuse_ts"); got != 1 {
		t.Errorf("early_reuse_ts allocations = %v, want 1", got)
	}
	if got := exhaustion(t, h.b, "rejected"); got != 0 {
		t.Errorf("exhaustion{rejected} = %v, want 0", got)
	}
	// The unsafe tuple is still in the ledger, not lost.
	if _, ok := h.ledger(t, newer.sport); !ok {
		t.Errorf("the skipped tuple left the ledger")
	}
}
