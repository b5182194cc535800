package lb

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"tslb/config"
)

// Health checks go through the kernel's TCP stack of tslb's own network
// namespace, from health.source: an address the kernel owns there (never a
// VIP or SNAT address, which belong to the datapath). A real TCP
// handshake and a real HTTP GET are what a backend answers for its users,
// and they need no second TCP implementation inside tslb. Frames to the
// probe source reach tslb's links too; the datapath ignores them.
//
// A backend starts up; fall consecutive failures take it down (no new
// flows; its existing flows continue), rise consecutive successes bring
// it back. Transitions are logged and counted.

// healthChecker probes one backend of one service.
type healthChecker struct {
	be     *backend
	svc    string
	hc     config.HealthCheck
	source netip.Addr
	log    *slog.Logger

	upGauge              prometheus.Gauge
	toUp, toDown         prometheus.Counter
	checksOK, checksFail prometheus.Counter

	cancel context.CancelFunc
	done   chan struct{}
}

func (c *healthChecker) start() {
	ctx, cancel := context.WithCancel(context.Background())
	c.cancel = cancel
	c.done = make(chan struct{})
	go c.run(ctx)
}

func (c *healthChecker) stop() {
	c.cancel()
	<-c.done
}

func (c *healthChecker) run(ctx context.Context) {
	defer close(c.done)
	tick := time.NewTicker(c.hc.Interval)
	defer tick.Stop()
	succ, fail := 0, 0
	c.upGauge.Set(boolFloat(c.be.up.Load()))
	for {
		err := c.probe(ctx)
		if ctx.Err() != nil {
			return
		}
		up := c.be.up.Load()
		transition := false
		if err == nil {
			c.checksOK.Inc()
			succ, fail = succ+1, 0
			if !up && succ >= c.hc.Rise {
				// Back up: whatever passive health concluded while it was
				// down is over too.
				c.be.downUntil.Store(0)
				c.be.passiveFails.Store(0)
				c.be.up.Store(true)
				c.toUp.Inc()
				transition = true
				c.log.Info("backend up", "service", c.svc, "backend", c.be.ap.String(), "successes", succ)
			}
		} else {
			c.checksFail.Inc()
			succ, fail = 0, fail+1
			if up && fail >= c.hc.Fall {
				c.be.up.Store(false)
				c.toDown.Inc()
				transition = true
				c.log.Warn("backend down", "service", c.svc, "backend", c.be.ap.String(), "failures", fail, "err", err)
			}
		}
		c.be.health.note(err == nil, err, transition)
		c.upGauge.Set(boolFloat(c.be.up.Load()))
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

func boolFloat(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// probe runs one check, bounded by the timeout.
func (c *healthChecker) probe(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, c.hc.Timeout)
	defer cancel()
	d := &net.Dialer{}
	if c.source.IsValid() {
		d.LocalAddr = &net.TCPAddr{IP: c.source.AsSlice()}
	}
	switch c.hc.Type {
	case "http":
		tr := &http.Transport{DialContext: d.DialContext, DisableKeepAlives: true}
		defer tr.CloseIdleConnections()
		path := c.hc.Path
		if path == "" {
			path = "/"
		}
		req, err := http.NewRequestWithContext(ctx, "GET", "http://"+c.be.ap.String()+path, nil) // [v6]:port for IPv6
		if err != nil {
			return err
		}
		req.Header.Set("User-Agent", "tslb-health/1")
		resp, err := (&http.Client{Transport: tr}).Do(req)
		if err != nil {
			return err
		}
		io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
		want := c.hc.ExpectStatus
		if want == 0 {
			want = 200
		}
		if resp.StatusCode != want {
			return fmt.Errorf("status %d, want %d", resp.StatusCode, want)
		}
		return nil
	default: // tcp
		conn, err := d.DialContext(ctx, "tcp", c.be.ap.String())
		if err != nil {
			return err
		}
		return conn.Close()
	}
}

// healthSet runs the checkers of a configuration; reload replaces it.
type healthSet struct {
	mu       sync.Mutex
	checkers map[healthKey]*healthChecker
}

type healthKey struct {
	svc string
	be  netip.AddrPort
	hc  config.HealthCheck
}

// apply starts checkers for every (service, backend) with a health check in
// snap and stops the others; unchanged ones keep running (and their
// state).
func (h *healthSet) apply(b *Balancer, snap *snapshot) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.checkers == nil {
		h.checkers = make(map[healthKey]*healthChecker)
	}
	want := make(map[healthKey]*backend)
	for _, s := range snap.svcList {
		if s.hc == nil {
			continue
		}
		for _, be := range s.backends {
			want[healthKey{s.name, be.ap, *s.hc}] = be
		}
	}
	for k, c := range h.checkers {
		if _, ok := want[k]; !ok {
			c.stop()
			delete(h.checkers, k)
		}
	}
	for k, be := range want {
		if _, ok := h.checkers[k]; ok {
			continue
		}
		lv := []string{k.svc, k.be.String()}
		src := snap.cfg.Health.Source
		if be.ap.Addr().Is6() {
			src = snap.cfg.Health.Source6
		}
		c := &healthChecker{be: be, svc: k.svc, hc: k.hc, source: src, log: b.sh.log,
			upGauge:  b.sh.m.backendUp.WithLabelValues(lv...),
			toUp:     b.sh.m.healthTransitions.WithLabelValues(k.svc, k.be.String(), "up"),
			toDown:   b.sh.m.healthTransitions.WithLabelValues(k.svc, k.be.String(), "down"),
			checksOK: b.sh.m.healthChecks.WithLabelValues(k.svc, k.be.String(), "ok"), checksFail: b.sh.m.healthChecks.WithLabelValues(k.svc, k.be.String(), "fail")}
		h.checkers[k] = c
		c.start()
	}
}

func (h *healthSet) stopAll() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for k, c := range h.checkers {
		c.stop()
		delete(h.checkers, k)
	}
}
