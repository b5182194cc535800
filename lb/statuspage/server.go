package statuspage

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io/fs"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"tslb/lb"
)

// Options configure a Server. Zero values mean the defaults noted.
type Options struct {
	// PcapDir is detector.pcap_dir, where /pcap/<name> serves captures
	// from ("" serves none).
	PcapDir string
	// CacheTTL is how long one computed status answers every request
	// (0 means 250 ms).
	CacheTTL time.Duration
	// Interval is the History's sampling period (0 means 2 s) and
	// HistoryLen how many samples it keeps (0 means 150: 5 minutes).
	Interval   time.Duration
	HistoryLen int
	// Refresh is the page's meta refresh period (0 means 5 s).
	Refresh time.Duration
	// Now is the clock of the cache (nil means time.Now).
	Now func() time.Time
}

// Server serves the status page, /status.json and /pcap/<name>.
type Server struct {
	status  func() *lb.Status
	opts    Options
	history *History

	mu     sync.Mutex // held while a status is computed: one at a time
	cached *entry
}

// entry is one computed status with its JSON and, once asked for, its
// page.
type entry struct {
	at   time.Time
	st   *lb.Status
	json []byte
	page []byte // rendered on first use
}

// New returns a Server that takes the status from status (such as
// (*lb.Balancer).Status).
func New(status func() *lb.Status, o Options) *Server {
	if o.CacheTTL == 0 {
		o.CacheTTL = 250 * time.Millisecond
	}
	if o.Interval == 0 {
		o.Interval = 2 * time.Second
	}
	if o.HistoryLen == 0 {
		o.HistoryLen = 150
	}
	if o.Refresh == 0 {
		o.Refresh = 5 * time.Second
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return &Server{status: status, opts: o, history: NewHistory(o.HistoryLen)}
}

// History is the Server's history ring.
func (s *Server) History() *History { return s.history }

// Run samples the status every Interval into the History until ctx ends.
func (s *Server) Run(ctx context.Context) {
	t := time.NewTicker(s.opts.Interval)
	defer t.Stop()
	s.history.Add(s.status())
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.history.Add(s.status())
		}
	}
}

// current returns the cached entry, computing a new one if the cached
// one is older than CacheTTL. Concurrent callers wait for one
// computation rather than each doing their own.
func (s *Server) current() *entry {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.opts.Now()
	if e := s.cached; e != nil && now.Sub(e.at) < s.opts.CacheTTL && !now.Before(e.at) {
		return e
	}
	st := s.status()
	j, err := json.MarshalIndent(st, "", " ")
	if err != nil { // a Status always marshals; keep serving something valid
		j = []byte(`{"schema":"` + lb.StatusSchema + `","error":"marshal"}`)
	}
	s.cached = &entry{at: now, st: st, json: append(j, '\n')}
	return s.cached
}

// Status returns the (cached) status.
func (s *Server) Status() *lb.Status { return s.current().st }

// StatusJSON returns the (cached) status as /status.json serves it.
func (s *Server) StatusJSON() []byte { return s.current().json }

// Register adds GET / (the page, that path only), /status.json and
// /pcap/{name} to mux; its other paths (/metrics, /healthz) are the
// caller's.
func (s *Server) Register(mux *http.ServeMux) {
	mux.Handle("GET /{$}", s.PageHandler())
	mux.Handle("GET /status.json", s.JSONHandler())
	mux.Handle("GET /pcap/{name}", s.PcapHandler())
}

// JSONHandler serves the cached status as JSON (lb.Status, schema
// lb.StatusSchema).
func (s *Server) JSONHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e := s.current()
		h := w.Header()
		h.Set("Content-Type", "application/json")
		h.Set("Cache-Control", "no-store")
		h.Set("X-Content-Type-Options", "nosniff")
		w.Write(e.json)
	})
}

// PageHandler serves the HTML page with a strict Content-Security-Policy.
func (s *Server) PageHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		page, err := s.page()
		if err != nil {
			http.Error(w, "status page: "+err.Error(), http.StatusInternalServerError)
			return
		}
		h := w.Header()
		setPageHeaders(h)
		h.Set("Content-Type", "text/html; charset=utf-8")
		w.Write(page)
	})
}

// page returns the page of the current entry, rendering it once per
// entry.
func (s *Server) page() ([]byte, error) {
	e := s.current()
	s.mu.Lock()
	defer s.mu.Unlock()
	if e.page != nil {
		return e.page, nil
	}
	var buf bytes.Buffer
	if err := Render(&buf, e.st, s.history.Samples(), s.opts.Refresh); err != nil {
		return nil, err
	}
	e.page = buf.Bytes()
	return e.page, nil
}

// CSP is the Content-Security-Policy of the page: nothing may load but
// the inline stylesheet (by its hash) and data: images.
var CSP = "default-src 'none'; style-src '" + styleHash + "'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

func setPageHeaders(h http.Header) {
	h.Set("Content-Security-Policy", CSP)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-store")
}

// PcapHandler serves /pcap/{name}: the capture file name (*.pcap, a base
// name) of PcapDir, opened through an os.Root so that no name, symlink
// or "..", can reach a file outside it.
func (s *Server) PcapHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name := r.PathValue("name")
		if !validPcapName(name) {
			http.Error(w, "not a capture name", http.StatusBadRequest)
			return
		}
		if s.opts.PcapDir == "" {
			http.NotFound(w, r)
			return
		}
		root, err := os.OpenRoot(s.opts.PcapDir)
		if err != nil {
			http.NotFound(w, r)
			return
		}
		defer root.Close()
		f, err := root.Open(name)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				http.NotFound(w, r)
			} else {
				http.Error(w, "capture not readable", http.StatusForbidden)
			}
			return
		}
		defer f.Close()
		fi, err := f.Stat()
		if err != nil || !fi.Mode().IsRegular() {
			http.NotFound(w, r)
			return
		}
		h := w.Header()
		h.Set("Content-Type", "application/vnd.tcpdump.pcap")
		h.Set("Content-Disposition", `attachment; filename="`+name+`"`)
		h.Set("X-Content-Type-Options", "nosniff")
		http.ServeContent(w, r, name, fi.ModTime(), f)
	})
}

// validPcapName accepts what the detector writes: a non-hidden base name
// of letters, digits and "._-+:" ending in ".pcap".
func validPcapName(name string) bool {
	if !strings.HasSuffix(name, ".pcap") || len(name) <= len(".pcap") || len(name) > 255 || name[0] == '.' {
		return false
	}
	for _, c := range name {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', strings.ContainsRune("._-+:", c):
		default:
			return false
		}
	}
	return !strings.Contains(name, "..")
}
