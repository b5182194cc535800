package lab

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// ServerConfig configures the backend HTTP servers started by
// Lab.StartBackends.
type ServerConfig struct {
	// Port is the TCP port to listen on (0 means 8080).
	Port int
	// CloseFirst makes every response carry "Connection: close", so the
	// server closes the connection first and the backend, not the client,
	// holds the TIME_WAIT state.
	CloseFirst bool
}

// MaxSleep bounds the duration of GET /sleep.
const MaxSleep = 10 * time.Second

// maxBytes bounds n in GET /bytes (64 GiB).
const maxBytes = 1 << 36

// Backend is an in-process HTTP server listening inside one backend
// namespace.
//
// Endpoints:
//
//	GET /                  body "<id>\n"
//	GET /bytes?n=N&seed=S  exactly N bytes of Stream(S, N)
//	POST /upload           reads the body, answers "<hex sha256> <bytes>\n"
//	GET /sleep?ms=M        sleeps min(M ms, MaxSleep), then answers "<id>\n"
//
// Every response carries the headers "X-Backend: <id>" and "X-Client:
// <address:port>", the connection's remote end as the server sees it (the
// SNAT tuple behind a balancer).
type Backend struct {
	// NS is the namespace the server listens in.
	NS *NS
	// ID is the backend's name, "b1", "b2", ...
	ID string
	// Addr is the listening address, e.g. 198.18.1.11:8080.
	Addr netip.AddrPort

	closeFirst bool
	srv        *http.Server
	done       chan struct{} // closed when Serve returned
	requests   atomic.Int64

	mu      sync.Mutex
	remotes map[netip.Addr]int64

	closeOnce sync.Once
	closeErr  error
}

// StartBackends starts one HTTP server per backend namespace, listening on
// the backend's address and cfg.Port. The servers are stopped by l.Close
// (or individually by Backend.Close). On error the servers already started
// by this call are closed.
func (l *Lab) StartBackends(cfg ServerConfig) ([]*Backend, error) {
	if cfg.Port == 0 {
		cfg.Port = 8080
	}
	if cfg.Port < 0 || cfg.Port > 65535 {
		return nil, fmt.Errorf("lab: invalid backend port %d", cfg.Port)
	}
	var out []*Backend
	for i, ns := range l.Backends {
		b, err := startBackend(ns, fmt.Sprintf("b%d", i+1), netip.AddrPortFrom(ns.Addr, uint16(cfg.Port)), cfg.CloseFirst)
		if err != nil {
			for _, b := range out {
				b.Close()
			}
			return nil, err
		}
		out = append(out, b)
	}
	l.mu.Lock()
	l.backends = append(l.backends, out...)
	l.mu.Unlock()
	return out, nil
}

// startBackend listens inside ns and serves in a goroutine owned by the
// returned Backend.
func startBackend(ns *NS, id string, addr netip.AddrPort, closeFirst bool) (*Backend, error) {
	ln, err := ns.Listen("tcp", addr.String())
	if err != nil {
		return nil, fmt.Errorf("lab: backend %s listen: %w", id, err)
	}
	b := &Backend{
		NS:         ns,
		ID:         id,
		Addr:       addr,
		closeFirst: closeFirst,
		done:       make(chan struct{}),
		remotes:    make(map[netip.Addr]int64),
	}
	b.srv = &http.Server{
		Handler:           b,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       60 * time.Second,
	}
	go func() {
		defer close(b.done)
		b.srv.Serve(ln)
	}()
	return b, nil
}

// Requests returns the number of requests the server has handled.
func (b *Backend) Requests() int64 { return b.requests.Load() }

// RemoteIPs returns how many requests came from each source address, as
// seen by the server (to check SNAT).
func (b *Backend) RemoteIPs() map[netip.Addr]int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	m := make(map[netip.Addr]int64, len(b.remotes))
	for k, v := range b.remotes {
		m[k] = v
	}
	return m
}

// Close stops the server, closing its listener and all connections, and
// waits for the serving goroutine. It is idempotent.
func (b *Backend) Close() error {
	b.closeOnce.Do(func() {
		err := b.srv.Close()
		<-b.done
		if err != nil && !errors.Is(err, net.ErrClosed) {
			b.closeErr = fmt.Errorf("lab: backend %s close: %w", b.ID, err)
		}
	})
	return b.closeErr
}

// ServeHTTP implements http.Handler with the endpoints listed on Backend.
func (b *Backend) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b.requests.Add(1)
	if ap, err := netip.ParseAddrPort(r.RemoteAddr); err == nil {
		b.mu.Lock()
		b.remotes[ap.Addr().Unmap()]++
		b.mu.Unlock()
	}
	h := w.Header()
	h.Set("X-Backend", b.ID)
	h.Set("X-Client", r.RemoteAddr)
	if b.closeFirst {
		h.Set("Connection", "close")
	}
	q := r.URL.Query()
	switch r.URL.Path {
	case "/":
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		io.WriteString(w, b.ID+"\n")
	case "/bytes":
		n, err := strconv.ParseInt(q.Get("n"), 10, 64)
		if err != nil || n < 0 || n > maxBytes {
			http.Error(w, "bad n", http.StatusBadRequest)
			return
		}
		seed, err := strconv.ParseUint(q.Get("seed"), 10, 64)
		if q.Get("seed") != "" && err != nil {
			http.Error(w, "bad seed", http.StatusBadRequest)
			return
		}
		h.Set("Content-Type", "application/octet-stream")
		h.Set("Content-Length", strconv.FormatInt(n, 10))
		io.Copy(w, Stream(seed, n))
	case "/upload":
		if r.Method != http.MethodPost && r.Method != http.MethodPut {
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		d := sha256.New()
		n, err := io.Copy(d, r.Body)
		if err != nil {
			http.Error(w, "read body: "+err.Error(), http.StatusBadRequest)
			return
		}
		fmt.Fprintf(w, "%x %d\n", d.Sum(nil), n)
	case "/sleep":
		ms, err := strconv.ParseInt(q.Get("ms"), 10, 64)
		if err != nil || ms < 0 {
			http.Error(w, "bad ms", http.StatusBadRequest)
			return
		}
		d := min(time.Duration(ms)*time.Millisecond, MaxSleep)
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
		case <-r.Context().Done():
			return
		}
		io.WriteString(w, b.ID+"\n")
	default:
		http.NotFound(w, r)
	}
}

// Stream returns a reader of exactly n deterministic pseudo-random bytes
// derived from seed (ChaCha8, math/rand/v2), so a client can compute the
// expected sha256 of GET /bytes?n=N&seed=S itself. A negative n reads as 0.
func Stream(seed uint64, n int64) io.Reader {
	var key [32]byte
	binary.LittleEndian.PutUint64(key[:], seed)
	copy(key[8:], "tslb/test/lab stream")
	return io.LimitReader(rand.NewChaCha8(key), max(n, 0))
}
