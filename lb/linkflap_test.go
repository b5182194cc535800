package lb

import (
	"fmt"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestLinkDownUp: an interface going down under tslb makes every socket
// bound to it report ENETDOWN once (packet_notifier). The worker must not
// stop on it (it did: Run returned the error and tslb exited): it counts
// the event, keeps its flows, forwards again once frames arrive, and then
// announces its addresses again so that neighbours relearn its MAC.
func TestLinkDownUp(t *testing.T) {
	h := start(t, testConfig())
	h.prime(t)
	c := h.establish(t, 40000)

	for _, q := range h.b0.qs {
		q.FailRecv(fmt.Errorf("link: recvfrom: %w", unix.ENETDOWN))
	}
	if !waitFor(2*time.Second, func() bool { return metric(t, h.b, "tslb_link_down_total", "link", "b0") == 1 }) {
		t.Fatalf("tslb_link_down_total{link=b0} = %v, want 1", metric(t, h.b, "tslb_link_down_total", "link", "b0"))
	}
	if got := metric(t, h.b, "tslb_link_down_total", "link", "c0"); got != 0 {
		t.Errorf("tslb_link_down_total{link=c0} = %v, want 0", got)
	}
	// The client's side still forwards to the backend's link, and the
	// first frame back from it brings the link "up": forwarded on the
	// existing flow, then gratuitous ARPs for every owned address.
	h.clientData(t, c, 1, 1, []byte("after the flap"))
	h.backendData(t, c, 1, 15, []byte("answer"))
	h.expectGratuitous(t, h.c0, c0MAC, vipAddr)
	h.expectGratuitous(t, h.b0, b0MAC, snatAddr)
	h.clientData(t, c, 15, 7, nil)
	h.quiet(t, h.c0)
	if got := metric(t, h.b, "tslb_link_down_total", "link", "b0"); got != 1 {
		t.Errorf("tslb_link_down_total{link=b0} = %v after recovery, want 1", got)
	}
}
