package statuspage

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/html"

	"tslb/lb"
)

var t0 = time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)

// fixture is a status with two services, one backend down with an error,
// a SNAT pair, a link, drops, a collision with a capture and a cluster.
func fixture() *lb.Status {
	tte := 42.5
	return &lb.Status{Schema: lb.StatusSchema, Time: t0, Started: t0.Add(-time.Hour), Workers: 2,
		Config: lb.ConfigStatus{Source: "/etc/tslb/tslb.yaml", Version: 3, LastReload: t0.Add(-time.Minute), LastReloadError: "services[0].port: <bad>"},
		Flows:  lb.FlowsStatus{Entries: 10, Capacity: 65536},
		Services: []lb.ServiceStatus{
			{Name: "web", VIP: "198.18.0.100", Port: 80, Timestamps: "rewrite", Scheduler: "wrr", SYNProxy: "auto", FlowsActive: 10, FlowsCreated: 1000,
				Backends: []lb.BackendStatus{
					{Address: "198.18.1.11:8080", Weight: 1, Up: true, HealthCheck: "http", LastCheck: t0.Add(-time.Second), LastCheckOK: true, FlowsActive: 7, FlowsCreated: 600},
					{Address: "198.18.1.12:8080", Weight: 1, Up: false, HealthCheck: "http", LastCheck: t0.Add(-time.Second), LastCheckError: "dial: <connection refused>", Transitions: 1, FlowsActive: 3, FlowsCreated: 400},
				}},
		},
		SNAT: []lb.SNATStatus{{SNAT: "198.18.1.2", Backend: "198.18.1.11:8080", InUse: 7, TimeWait: 100, Free: 40000, EntryRate: 3, SecondsToExhaustion: &tte,
			Allocations: map[string]uint64{"fresh": 500, "early_reuse_isn": 50, "early_reuse_ts": 40, "forced": 0}}},
		Links:      []lb.LinkStatus{{Name: "clients", RxPackets: 5000, TxPackets: 4900, KernelDrops: 2}},
		Drops:      map[string]uint64{"no_flow": 4},
		Collisions: []lb.CollisionStatus{{Time: t0, Backend: "198.18.1.11:8080", Tuple: "198.18.1.2:20001", Client: "198.18.0.11:5555", Signature: "old_ack", Repaired: true, Pcap: "collision-x.pcap"}},
	}
}

func render(t *testing.T, st *lb.Status, hist []Sample) string {
	t.Helper()
	var buf bytes.Buffer
	if err := Render(&buf, st, hist, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	return buf.String()
}

// elements returns the attributes of every element of page whose tag is
// tag and whose class attribute is class ("" for any).
func elements(t *testing.T, page, tag, class string) []map[string]string {
	t.Helper()
	doc, err := html.Parse(strings.NewReader(page))
	if err != nil {
		t.Fatal(err)
	}
	var out []map[string]string
	var walk func(*html.Node)
	walk = func(n *html.Node) {
		if n.Type == html.ElementNode && n.Data == tag {
			a := map[string]string{}
			for _, at := range n.Attr {
				a[at.Key] = at.Val
			}
			if class == "" || a["class"] == class {
				out = append(out, a)
			}
		}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			walk(c)
		}
	}
	walk(doc)
	return out
}

func TestRenderEscapesConfigStrings(t *testing.T) {
	st := fixture()
	st.Services[0].Name = `<script>alert("svc")</script>`
	st.Services[0].Backends[1].LastCheckError = `<img src=x onerror=alert(1)>`
	page := render(t, st, nil)
	for _, raw := range []string{`<script>`, `<img src=x`, `<bad>`, `<connection refused>`} {
		if strings.Contains(page, raw) {
			t.Errorf("page contains %q unescaped", raw)
		}
	}
	for _, esc := range []string{`&lt;script&gt;alert(&#34;svc&#34;)&lt;/script&gt;`, `&lt;img src=x onerror=alert(1)&gt;`} {
		if !strings.Contains(page, esc) {
			t.Errorf("page lacks the escaped %q", esc)
		}
	}
	// The name is in the data attribute as it is (the parser unescapes).
	rows := elements(t, page, "tr", "backend")
	if len(rows) != 2 || rows[0]["data-service"] != st.Services[0].Name {
		t.Errorf("backend rows %v", rows)
	}
	if n := len(elements(t, page, "script", "")); n != 0 {
		t.Errorf("%d script elements in the page", n)
	}
}

func TestPageHeadersAndNoExternalURL(t *testing.T) {
	s := New(func() *lb.Status { return fixture() }, Options{})
	rec := httptest.NewRecorder()
	s.PageHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
	if rec.Code != 200 {
		t.Fatalf("GET / = %d", rec.Code)
	}
	csp := rec.Header().Get("Content-Security-Policy")
	for _, want := range []string{"default-src 'none'", "img-src data:", "style-src 'sha256-"} {
		if !strings.Contains(csp, want) {
			t.Errorf("CSP %q lacks %q", csp, want)
		}
	}
	page := rec.Body.String()
	// The CSP hash is that of the inline stylesheet as served.
	m := regexp.MustCompile(`(?s)<style>(.*?)</style>`).FindStringSubmatch(page)
	if m == nil {
		t.Fatal("no style element")
	}
	h := sha256.Sum256([]byte(m[1]))
	if want := "'sha256-" + base64.StdEncoding.EncodeToString(h[:]) + "'"; !strings.Contains(csp, want) {
		t.Errorf("CSP %q does not allow the served stylesheet (%s)", csp, want)
	}
	if strings.Contains(page, "style=") {
		t.Error("inline style attribute: the CSP forbids it")
	}
	// Nothing from elsewhere: every href/src is a path of this server.
	for _, tag := range []string{"a", "link", "img", "script", "iframe", "object"} {
		for _, a := range elements(t, page, tag, "") {
			for _, k := range []string{"href", "src"} {
				if v, ok := a[k]; ok && !strings.HasPrefix(v, "/") || strings.HasPrefix(v, "//") {
					t.Errorf("<%s %s=%q>: not a local path", tag, k, v)
				}
			}
		}
	}
	for _, bad := range []string{"http://", "https://", "url(", "@import"} {
		if strings.Contains(page, bad) {
			t.Errorf("page contains %q", bad)
		}
	}
	if !strings.Contains(page, `http-equiv="refresh" content="5"`) {
		t.Error("no meta refresh")
	}
}

func TestRenderStatuses(t *testing.T) {
	withCluster := fixture()
	withCluster.Cluster = &lb.ClusterStatus{Name: "lab", Self: 1, Ready: true, Current: []uint16{1, 2}, Previous: []uint16{1},
		Members: []lb.ClusterMemberStatus{{ID: 1, Self: true, Live: true, Address: "198.18.2.1"}, {ID: 2, Live: false, Address: "198.18.2.2", LastHeard: t0.Add(-3 * time.Second)}},
		BGP:     lb.BGPStatus{Announced: []string{"198.18.0.100/32"}, Peers: []lb.BGPPeerStatus{{Address: "198.18.2.254", ASN: 65000, State: "established"}}}}
	noCollisions := fixture()
	noCollisions.Collisions = nil
	tests := []struct {
		name string
		st   *lb.Status
		// want: tag, class, attribute, value that must be present
		want [][4]string
		not  []string // substrings that must be absent
	}{
		{"nil", nil, nil, []string{`class="backend"`}},
		{"empty", &lb.Status{Schema: lb.StatusSchema}, [][4]string{{"p", "meta", "id", "no-services"}}, []string{`class="backend"`, `id="cluster"`}},
		{"collision", fixture(), [][4]string{
			{"tr", "backend", "data-health", "up"}, {"tr", "backend", "data-health", "down"},
			{"a", "pcap", "href", "/pcap/collision-x.pcap"}, {"tr", "collision", "data-repaired", "true"},
			{"tr", "snat", "data-backend", "198.18.1.11:8080"}, {"tr", "link", "data-link", "clients"}, {"tr", "drop", "data-reason", "no_flow"},
		}, []string{`id="cluster"`}},
		{"no collisions", noCollisions, [][4]string{{"p", "meta", "id", "no-collisions"}}, []string{`class="pcap"`}},
		{"cluster", withCluster, [][4]string{{"p", "meta", "id", "cluster"}, {"tr", "member", "data-live", "false"}, {"tr", "peer", "data-state", "established"}}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			page := render(t, tt.st, nil)
			for _, w := range tt.want {
				found := false
				for _, a := range elements(t, page, w[0], w[1]) {
					if a[w[2]] == w[3] {
						found = true
					}
				}
				if !found {
					t.Errorf("no <%s class=%q %s=%q>", w[0], w[1], w[2], w[3])
				}
			}
			for _, n := range tt.not {
				if strings.Contains(page, n) {
					t.Errorf("page contains %q", n)
				}
			}
		})
	}
}

func TestRenderCharts(t *testing.T) {
	h := NewHistory(10)
	for i := range 4 {
		st := fixture()
		st.Time = t0.Add(time.Duration(i) * 2 * time.Second)
		st.Services[0].Backends[0].FlowsCreated = 600 + float64(20*i)
		h.Add(st)
	}
	page := render(t, fixture(), h.Samples())
	svgs := elements(t, page, "svg", "spark")
	if len(svgs) != 4+2 { // four charts, one per backend
		t.Fatalf("%d sparklines, want 6", len(svgs))
	}
	lines := elements(t, page, "polyline", "")
	if len(lines) != 6 || strings.Count(lines[0]["points"], ",") != 3 {
		t.Errorf("polylines %v", lines)
	}
}

func sample(sec int, created, dropped, rx uint64) *lb.Status {
	return &lb.Status{Time: t0.Add(time.Duration(sec) * time.Second),
		Services: []lb.ServiceStatus{{Name: "web", FlowsActive: 5, Backends: []lb.BackendStatus{{Address: "b1", FlowsCreated: float64(created)}}}},
		Drops:    map[string]uint64{"no_flow": dropped}, Links: []lb.LinkStatus{{RxPackets: rx, KernelDrops: dropped}}}
}

func TestHistoryRates(t *testing.T) {
	h := NewHistory(3)
	h.Add(sample(0, 100, 0, 1000))
	if h.Len() != 0 {
		t.Fatalf("one status gave %d samples, want 0", h.Len())
	}
	h.Add(sample(2, 120, 3, 3000)) // 10 new/s, (3+3)/2 drops/s, 1000 pkt/s
	h.Add(sample(2, 999, 9, 9999)) // not newer: ignored
	h.Add(sample(4, 110, 3, 3000)) // counter went down: 0/s
	got := h.Samples()
	if len(got) != 2 {
		t.Fatalf("%d samples, want 2", len(got))
	}
	want := []Sample{{NewFlows: 10, Drops: 3, Packets: 1000, FlowsActive: 5}, {NewFlows: 0, Drops: 0, Packets: 0, FlowsActive: 5}}
	for i, w := range want {
		g := got[i]
		if g.NewFlows != w.NewFlows || g.Drops != w.Drops || g.Packets != w.Packets || g.FlowsActive != w.FlowsActive || g.Backends[BackendKey("web", "b1")] != w.NewFlows {
			t.Errorf("sample %d = %+v, want %+v", i, g, w)
		}
	}
	// Bounded: after many more, only the last 3 remain, oldest first.
	for i := 3; i < 50; i++ {
		h.Add(sample(2*i, uint64(110+i), 3, 3000))
	}
	got = h.Samples()
	if len(got) != 3 || h.Len() != 3 {
		t.Fatalf("%d samples kept, want 3", len(got))
	}
	for i, s := range got {
		if wantT := t0.Add(time.Duration(2*(47+i)) * time.Second); !s.Time.Equal(wantT) {
			t.Errorf("sample %d at %v, want %v", i, s.Time, wantT)
		}
		if s.NewFlows != 0.5 {
			t.Errorf("sample %d: %v new flows/s, want 0.5", i, s.NewFlows)
		}
	}
}

func TestHistoryNewBackendNoSpike(t *testing.T) {
	h := NewHistory(4)
	h.Add(sample(0, 100, 0, 0))
	st := sample(2, 100, 0, 0)
	st.Services[0].Backends = append(st.Services[0].Backends, lb.BackendStatus{Address: "b2", FlowsCreated: 5000})
	h.Add(st)
	if r := h.Samples()[0].Backends[BackendKey("web", "b2")]; r != 0 {
		t.Errorf("a backend added by reload rates %v/s in its first interval, want 0", r)
	}
}

func TestJSONCache(t *testing.T) {
	var calls atomic.Int64
	now := t0
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	s := New(func() *lb.Status { calls.Add(1); return fixture() }, Options{Now: clock})
	get := func(path string) *httptest.ResponseRecorder {
		rec := httptest.NewRecorder()
		mux := http.NewServeMux()
		s.Register(mux)
		mux.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
		return rec
	}
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 125 {
				if r := get("/status.json"); r.Code != 200 {
					t.Errorf("status.json: %d", r.Code)
				}
				get("/")
			}
		}()
	}
	wg.Wait()
	if n := calls.Load(); n != 1 {
		t.Errorf("2,000 requests within the TTL computed the status %d times, want 1", n)
	}
	mu.Lock()
	now = now.Add(300 * time.Millisecond)
	mu.Unlock()
	rec := get("/status.json")
	if n := calls.Load(); n != 2 {
		t.Errorf("after the TTL: %d computations, want 2", n)
	}
	var st lb.Status
	if err := json.Unmarshal(rec.Body.Bytes(), &st); err != nil || st.Schema != lb.StatusSchema || len(st.Services) != 1 {
		t.Errorf("status.json: %v %+v", err, st)
	}
	if get("/nothing").Code != 404 {
		t.Error("GET /nothing is not 404: / must match only itself")
	}
}

func TestPcapHandler(t *testing.T) {
	base := t.TempDir()
	dir := filepath.Join(base, "pcap")
	os.Mkdir(dir, 0o755)
	os.WriteFile(filepath.Join(dir, "collision-1.pcap"), []byte("PCAPDATA"), 0o644)
	os.WriteFile(filepath.Join(dir, "notes.txt"), []byte("x"), 0o644)
	os.WriteFile(filepath.Join(base, "secret.pcap"), []byte("SECRET"), 0o644)
	os.Symlink(filepath.Join(base, "secret.pcap"), filepath.Join(dir, "link.pcap"))
	os.Mkdir(filepath.Join(dir, "d.pcap"), 0o755)
	s := New(func() *lb.Status { return fixture() }, Options{PcapDir: dir})
	mux := http.NewServeMux()
	s.Register(mux)
	tests := []struct {
		path string
		code int
	}{
		{"/pcap/collision-1.pcap", 200},
		{"/pcap/missing.pcap", 404},
		{"/pcap/notes.txt", 400},
		{"/pcap/..%2fsecret.pcap", 400},
		{"/pcap/%2e%2e%2fsecret.pcap", 400},
		{"/pcap/..%5csecret.pcap", 400},
		{"/pcap/.hidden.pcap", 400},
		{"/pcap/.pcap", 400},
		{"/pcap/link.pcap", 403}, // a symlink out of the directory: os.Root refuses it
		{"/pcap/d.pcap", 404},
		{"/pcap/a%00.pcap", 400},
	}
	for _, tt := range tests {
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, httptest.NewRequest("GET", tt.path, nil))
		// The mux may clean a path with ".." itself (a redirect): that is a
		// refusal too, as long as nothing of the secret is served.
		if strings.Contains(rec.Body.String(), "SECRET") {
			t.Errorf("%s served the file outside the directory", tt.path)
		}
		if rec.Code != tt.code {
			t.Errorf("GET %s = %d, want %d", tt.path, rec.Code, tt.code)
		}
	}
	rec := httptest.NewRecorder()
	mux.ServeHTTP(rec, httptest.NewRequest("GET", "/pcap/collision-1.pcap", nil))
	if rec.Body.String() != "PCAPDATA" || rec.Header().Get("Content-Type") != "application/vnd.tcpdump.pcap" {
		t.Errorf("capture served as %q %q", rec.Header().Get("Content-Type"), rec.Body.String())
	}
	// Without a pcap_dir nothing is served.
	s2 := New(func() *lb.Status { return fixture() }, Options{})
	mux2 := http.NewServeMux()
	s2.Register(mux2)
	rec = httptest.NewRecorder()
	mux2.ServeHTTP(rec, httptest.NewRequest("GET", "/pcap/collision-1.pcap", nil))
	if rec.Code != 404 {
		t.Errorf("without pcap_dir: %d, want 404", rec.Code)
	}
}

func TestWriteText(t *testing.T) {
	st := fixture()
	st.Services[0].Name = "web\x1b[2J"
	var buf bytes.Buffer
	if err := WriteText(&buf, st); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	if strings.Contains(out, "\x1b") {
		t.Error("control character passed through")
	}
	for _, want := range []string{"198.18.1.12:8080  down", "dial: <connection refused>", "198.18.1.2  198.18.1.11:8080  7", "42.5s", "no_flow", "FAILED: services[0].port: <bad>", "collision-x.pcap"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	// Aligned: a backend's health sits under the HEALTH header.
	var col int
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "BACKEND") {
			col = strings.Index(l, "HEALTH")
		}
		if strings.HasPrefix(l, "198.18.1.12:8080") {
			if h := strings.Index(l, "down"); h != col || col <= 0 {
				t.Errorf("health at %d in %q, header at %d", h, l, col)
			}
		}
	}
}
