package lb

import (
	"net/netip"
	"testing"
	"time"

	"tslb/config"
	"tslb/nat"
)

func otherBackend(be netip.AddrPort) netip.AddrPort {
	if be == be1AP {
		return be2AP
	}
	return be1AP
}

// A SYN a backend refuses (RST) or leaves unanswered is re-sent to the
// other backend on a fresh tuple; the client sees only the good SYN-ACK.
// Failures count against the backend; fall in a row take it out.
func TestPassiveHealth(t *testing.T) {
	t.Parallel()
	h := start(t, testConfig(func(c *config.Config) {
		c.Health.Passive = config.PassiveHealth{SYNTimeout: 100 * time.Millisecond, Retries: 2, Fall: 2, DownFor: time.Hour}
		c.SNAT.PortMax = 20099
	}))
	h.prime(t)

	// Refused.
	c := h.connect(t, 47100, 1000)
	first := c.backend
	h.b0.inject(t, tcpFrame(t, backendSeg(t, first, c.sport, nat.TCPFlagRST|nat.TCPFlagACK, 0, c.cisn+1)))
	again := tcpOf(t, decode(t, h.b0.next(t)))
	if again.flags != nat.TCPFlagSYN || again.dst != otherBackend(first) || again.seq != c.cisn || again.src.Port() == c.sport {
		t.Fatalf("after the RST: %+v, want the SYN (seq %d) to %s on a new tuple", again, c.cisn, otherBackend(first))
	}
	c.backend, c.sport = again.dst, again.src.Port()
	h.accept(t, c, 5000) // the client gets the second backend's SYN-ACK, nothing else
	h.quiet(t, h.c0)
	h.clientData(t, c, 1, 1, []byte("hello"))
	if got := metric(t, h.b, "tslb_syn_redispatched_total", "service", "web", "reason", "rst"); got != 1 {
		t.Errorf("redispatched{rst} = %v, want 1", got)
	}
	if got := metric(t, h.b, "tslb_backend_passive_failures_total", "service", "web", "backend", first.String()); got != 1 {
		t.Errorf("passive failures of %s = %v, want 1", first, got)
	}
	if got := metric(t, h.b, "tslb_snat_ports_in_use"); got != 1 {
		t.Errorf("SNAT ports in use %v, want 1: the refused tuple is free again", got)
	}

	// Unanswered: after syn_timeout the silent backend is reset and the
	// SYN goes to the other one.
	var silent *conn
	for i := 0; silent == nil; i++ {
		d := h.connect(t, uint16(47200+i), 2000)
		if d.backend == first {
			silent = d
		} else {
			h.accept(t, d, 6000) // not the one we want silent
			h.clientData(t, d, 1, 1, nil)
		}
	}
	sent := time.Now()
	rst := tcpOf(t, decode(t, h.b0.next(t)))
	if rst.flags != nat.TCPFlagRST || rst.dst != first || rst.seq != silent.cisn+1 {
		t.Errorf("after the silence: %+v, want an RST seq %d to %s", rst, silent.cisn+1, first)
	}
	if d := time.Since(sent); d > 2*time.Second {
		t.Errorf("re-dispatched after %v, want about syn_timeout (100ms)", d)
	}
	syn := tcpOf(t, decode(t, h.b0.next(t)))
	if syn.flags != nat.TCPFlagSYN || syn.dst != otherBackend(first) || syn.seq != silent.cisn {
		t.Errorf("then %+v, want the SYN to %s", syn, otherBackend(first))
	}
	silent.backend, silent.sport = syn.dst, syn.src.Port()
	h.accept(t, silent, 7000)
	if got := metric(t, h.b, "tslb_syn_redispatched_total", "service", "web", "reason", "timeout"); got != 1 {
		t.Errorf("redispatched{timeout} = %v, want 1", got)
	}
	// Two failures in a row (fall 2): the first backend is out; every new
	// flow goes to the other.
	if got := metric(t, h.b, "tslb_backend_passive_downs_total", "service", "web", "backend", first.String()); got != 1 {
		t.Errorf("passive downs of %s = %v, want 1", first, got)
	}
	for i := range 4 {
		d := h.connect(t, uint16(47300+i), 3000)
		if d.backend == first {
			t.Errorf("new flow %d went to %s, which passive health took out", i, first)
		}
	}
}

// When passive health has taken out every backend of a service (a link
// outage, a network blip that made all of them miss SYNs), new flows
// still go to the backends the active check calls up instead of being
// refused: passive health guards against one bad backend, not against an
// outage of all.
func TestPassiveHealthAllDown(t *testing.T) {
	t.Parallel()
	h := start(t, testConfig(func(c *config.Config) {
		c.Health.Passive = config.PassiveHealth{SYNTimeout: 10 * time.Second, Retries: 2, Fall: 1, DownFor: time.Hour}
		c.SNAT.PortMax = 20099
	}))
	h.prime(t)
	c := h.connect(t, 47400, 1000)
	h.b0.inject(t, tcpFrame(t, backendSeg(t, c.backend, c.sport, nat.TCPFlagRST|nat.TCPFlagACK, 0, c.cisn+1)))
	again := tcpOf(t, decode(t, h.b0.next(t)))
	if again.flags != nat.TCPFlagSYN || again.dst != otherBackend(c.backend) {
		t.Fatalf("after the first RST: %+v, want the SYN re-dispatched to %s", again, otherBackend(c.backend))
	}
	h.b0.inject(t, tcpFrame(t, backendSeg(t, again.dst, again.src.Port(), nat.TCPFlagRST|nat.TCPFlagACK, 0, c.cisn+1)))
	if rst := tcpOf(t, decode(t, h.c0.next(t))); rst.flags&nat.TCPFlagRST == 0 {
		t.Fatalf("after both refused: %+v reached the client, want the RST", rst)
	}
	for _, be := range []netip.AddrPort{be1AP, be2AP} {
		if got := metric(t, h.b, "tslb_backend_passive_downs_total", "service", "web", "backend", be.String()); got != 1 {
			t.Fatalf("passive downs of %s = %v, want 1", be, got)
		}
	}
	for i := range 4 {
		d := h.connect(t, uint16(47500+i), 3000) // fails the test if the SYN is refused
		h.accept(t, d, 9000)
	}
	if got := metric(t, h.b, "tslb_syn_refused_total", "service", "web", "reason", "no_backend"); got != 0 {
		t.Errorf("no_backend refusals = %v, want 0", got)
	}
}
