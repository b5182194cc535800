package lab

import (
	"fmt"
	"net/netip"
)

// StartBackend starts the HTTP server of backend namespace i (0-based) again,
// e.g. after Backend.Close, to test health checks bringing it back. It is
// stopped by l.Close like the others.
func (l *Lab) StartBackend(i int, cfg ServerConfig) (*Backend, error) {
	if i < 0 || i >= len(l.Backends) {
		return nil, fmt.Errorf("lab: no backend %d", i)
	}
	if cfg.Port == 0 {
		cfg.Port = 8080
	}
	ns := l.Backends[i]
	b, err := startBackend(ns, fmt.Sprintf("b%d", i+1), netip.AddrPortFrom(ns.Addr, uint16(cfg.Port)), cfg.CloseFirst)
	if err != nil {
		return nil, err
	}
	l.mu.Lock()
	l.backends = append(l.backends, b)
	l.mu.Unlock()
	return b, nil
}
