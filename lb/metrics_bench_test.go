package lb

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// BenchmarkMetricsScrape: one /metrics scrape of the test configuration,
// plain and gzip (Prometheus and Go's HTTP client ask for gzip).
func BenchmarkMetricsScrape(b *testing.B) {
	h := start(b, testConfig())
	mh := h.b.MetricsHandler()
	for _, enc := range []string{"identity", "gzip"} {
		b.Run(enc, func(b *testing.B) {
			var n int
			for b.Loop() {
				rec := httptest.NewRecorder()
				req := httptest.NewRequest("GET", "/metrics", nil)
				req.Header.Set("Accept-Encoding", enc)
				mh.ServeHTTP(rec, req)
				if rec.Code != http.StatusOK {
					b.Fatal(rec.Code)
				}
				n = rec.Body.Len()
			}
			b.ReportMetric(float64(n), "bytes")
		})
	}
}

// countingCollector counts its Collect calls.
type countingCollector struct {
	n    int
	desc *prometheus.Desc
}

func (c *countingCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }
func (c *countingCollector) Collect(ch chan<- prometheus.Metric) {
	c.n++
	ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(c.n))
}

func TestCachedCollector(t *testing.T) {
	inner := &countingCollector{desc: prometheus.NewDesc("x", "x", nil, nil)}
	now := time.Unix(1000, 0)
	c := newCachedCollector(inner, time.Second, func() time.Time { return now })
	value := func() float64 {
		ch := make(chan prometheus.Metric, 4)
		c.Collect(ch)
		close(ch)
		var out []float64
		for m := range ch {
			var d dto.Metric
			m.Write(&d)
			out = append(out, d.GetGauge().GetValue())
		}
		if len(out) != 1 {
			t.Fatalf("%d metrics, want 1", len(out))
		}
		return out[0]
	}
	for _, step := range []struct {
		advance time.Duration
		want    float64
	}{{0, 1}, {500 * time.Millisecond, 1}, {499 * time.Millisecond, 1}, {time.Millisecond, 2}, {10 * time.Second, 3}} {
		now = now.Add(step.advance)
		if got := value(); got != step.want {
			t.Errorf("after +%v: value %v, want %v (inner collected %d times)", step.advance, got, step.want, inner.n)
		}
	}
}

// TestMetricsUncompressed: /metrics answers in plain text even when the
// client asks for gzip (gzip cost 1.5x the gather; see MetricsHandler).
func TestMetricsUncompressed(t *testing.T) {
	h := start(t, testConfig())
	rec := httptest.NewRecorder()
	req := httptest.NewRequest("GET", "/metrics", nil)
	req.Header.Set("Accept-Encoding", "gzip")
	h.b.MetricsHandler().ServeHTTP(rec, req)
	if rec.Code != http.StatusOK || rec.Header().Get("Content-Encoding") != "" {
		t.Fatalf("status %d, Content-Encoding %q: want 200, uncompressed", rec.Code, rec.Header().Get("Content-Encoding"))
	}
	if !strings.Contains(rec.Body.String(), "tslb_flows_active") {
		t.Errorf("body is not the text exposition")
	}
}
