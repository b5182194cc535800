package statuspage

import (
	"crypto/sha256"
	_ "embed"
	"encoding/base64"
	"fmt"
	"html/template"
	"io"
	"math"
	"sort"
	"strconv"
	"strings"
	"time"

	"tslb/lb"
)

//go:embed page.html
var pageHTML string

//go:embed style.css
var styleCSS string

// styleHash is the CSP source of the inline stylesheet.
var styleHash = func() string {
	h := sha256.Sum256([]byte(styleCSS))
	return "sha256-" + base64.StdEncoding.EncodeToString(h[:])
}()

var pageTmpl = template.Must(template.New("page").Funcs(template.FuncMap{
	"fmtTime": func(t time.Time) string {
		if t.IsZero() {
			return "-"
		}
		return t.UTC().Format("2006-01-02 15:04:05Z")
	},
	"since":   since,
	"fmtRate": fmtRate,
	"fmtF":    func(v float64) string { return strconv.FormatFloat(v, 'f', -1, 64) },
	"exhaust": func(v *float64) string { return fmtDuration(*v) },
}).Parse(pageHTML))

// page is what the template sees.
type page struct {
	S        *lb.Status
	Now      time.Time
	Refresh  int // seconds
	CSS      template.CSS
	Charts   []chart
	Services []servicePage
	Drops    []dropRow
}

type servicePage struct {
	ID       string
	S        lb.ServiceStatus
	Backends []backendPage
}

type backendPage struct {
	ID, Service string
	B           lb.BackendStatus
	Health      string // "up" or "down"
	NewPerSec   float64
	Chart       *chart
}

type dropRow struct {
	Reason string
	Count  uint64
}

// chart is one inline SVG sparkline.
type chart struct {
	ID, Title string
	W, H      int
	Points    string // polyline points, "" without samples
	Last, Max float64
}

// Render writes the status page of st with the history hist (oldest
// first) to w; refresh is its meta refresh period.
func Render(w io.Writer, st *lb.Status, hist []Sample, refresh time.Duration) error {
	if st == nil {
		st = &lb.Status{Schema: lb.StatusSchema}
	}
	p := page{S: st, Now: st.Time, Refresh: max(1, int(refresh.Round(time.Second)/time.Second)), CSS: template.CSS(styleCSS)}
	if len(hist) > 0 {
		series := func(f func(Sample) float64) []float64 { return seriesOf(hist, f) }
		p.Charts = []chart{
			newChart("new-flows", "new flows/s", 240, 48, series(func(s Sample) float64 { return s.NewFlows })),
			newChart("active-flows", "active flows", 240, 48, series(func(s Sample) float64 { return s.FlowsActive })),
			newChart("drops", "drops/s", 240, 48, series(func(s Sample) float64 { return s.Drops })),
			newChart("packets", "packets/s received", 240, 48, series(func(s Sample) float64 { return s.Packets })),
		}
	}
	for i, sv := range st.Services {
		sp := servicePage{ID: strconv.Itoa(i), S: sv}
		for j, be := range sv.Backends {
			k := BackendKey(sv.Name, be.Address)
			bp := backendPage{ID: fmt.Sprintf("%d-%d", i, j), Service: sv.Name, B: be, Health: "down"}
			if be.Up {
				bp.Health = "up"
			}
			if len(hist) > 0 {
				bp.NewPerSec = hist[len(hist)-1].Backends[k]
				c := newChart("backend-"+bp.ID, "new flows/s of "+be.Address, 120, 20,
					seriesOf(hist, func(s Sample) float64 { return s.Backends[k] }))
				bp.Chart = &c
			}
			sp.Backends = append(sp.Backends, bp)
		}
		p.Services = append(p.Services, sp)
	}
	for r, n := range st.Drops {
		p.Drops = append(p.Drops, dropRow{r, n})
	}
	sort.Slice(p.Drops, func(i, j int) bool { return p.Drops[i].Reason < p.Drops[j].Reason })
	return pageTmpl.Execute(w, p)
}

func seriesOf(hist []Sample, f func(Sample) float64) []float64 {
	out := make([]float64, len(hist))
	for i, s := range hist {
		out[i] = f(s)
	}
	return out
}

// newChart scales v (oldest first) into a w×h polyline: x evenly spaced,
// y from 0 at the bottom to the largest value at the top (1 px margin).
func newChart(id, title string, w, h int, v []float64) chart {
	c := chart{ID: id, Title: title, W: w, H: h}
	if len(v) == 0 {
		return c
	}
	for _, x := range v {
		if x > c.Max && !math.IsInf(x, 0) {
			c.Max = x
		}
	}
	c.Last = v[len(v)-1]
	var sb strings.Builder
	for i, x := range v {
		px := float64(w - 1)
		if len(v) > 1 {
			px = float64(i) * float64(w-1) / float64(len(v)-1)
		}
		y := float64(h - 1)
		if c.Max > 0 && !math.IsNaN(x) {
			y = float64(h-1) - min(max(x, 0), c.Max)/c.Max*float64(h-2)
		}
		if i > 0 {
			sb.WriteByte(' ')
		}
		fmt.Fprintf(&sb, "%.1f,%.1f", px, y)
	}
	c.Points = sb.String()
	return c
}

// fmtRate formats a per-second rate or a count: integers as they are,
// others with one or two decimals.
func fmtRate(v float64) string {
	switch {
	case v == math.Trunc(v) && math.Abs(v) < 1e15:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case math.Abs(v) >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	}
	return strconv.FormatFloat(v, 'f', 2, 64)
}

// fmtDuration formats seconds as "42s", "7m30s", "3h5m".
func fmtDuration(sec float64) string {
	if math.IsInf(sec, 0) || math.IsNaN(sec) {
		return "never"
	}
	d := time.Duration(sec * float64(time.Second))
	switch {
	case d < time.Minute:
		return d.Round(100 * time.Millisecond).String()
	case d < time.Hour:
		return d.Round(time.Second).String()
	}
	return d.Round(time.Minute).String()
}

// since is now - t, rounded for a person ("3.2s", "5m12s").
func since(t, now time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return fmtDuration(now.Sub(t).Seconds())
}
