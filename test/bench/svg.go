package bench

import (
	"fmt"
	"io"
	"math"
)

// Plot geometry and axes: x is connect time from 10 µs to 10 s, y the
// fraction of attempted connections not yet established, from 1 to 1e-4,
// both logarithmic.
const (
	svgW, svgH                 = 1000, 520
	plotL, plotR, plotT, plotB = 80, 690, 50, 460
	xMinLog, xMaxLog           = -2.0, 4.0 // log10 ms
	yMinLog                    = -4.0      // log10 fraction
)

var svgColors = []string{"#d62728", "#ff7f0e", "#2ca02c", "#1f77b4", "#9467bd", "#17becf", "#8c564b", "#7f7f7f"}

// SVG draws the connect-time distribution of every cell that ran as a
// complementary CDF: for each connect time x, the fraction of attempted
// connections not established within x. Failed attempts never are, so a
// cell with failures levels off at its failure rate; SYN retransmits show
// as steps at 1 s and 3 s.
func (r *Report) SVG(w io.Writer) {
	fmt.Fprintf(w, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n", svgW, svgH, svgW, svgH)
	fmt.Fprintf(w, `<rect width="%d" height="%d" fill="white"/>`+"\n", svgW, svgH)
	fmt.Fprintf(w, `<text x="%d" y="22" font-size="15" font-weight="bold">Connect time through each balancer (open loop, %.0f conns/s, %d SNAT ports)</text>`+"\n",
		plotL, r.Config.Rate, r.Config.Ports)
	fmt.Fprintf(w, `<text x="%d" y="40" fill="#444">fraction of attempted connections not established within x; failures never are (log-log; lower and further left is better)</text>`+"\n", plotL)
	px := func(lms float64) float64 {
		return plotL + (lms-xMinLog)/(xMaxLog-xMinLog)*(plotR-plotL)
	}
	py := func(lf float64) float64 {
		return plotT + (0-lf)/(0-yMinLog)*(plotB-plotT)
	}
	// Grid and axes.
	xlabels := map[int]string{-2: "10µs", -1: "100µs", 0: "1ms", 1: "10ms", 2: "100ms", 3: "1s", 4: "10s"}
	for e := int(xMinLog); e <= int(xMaxLog); e++ {
		x := px(float64(e))
		fmt.Fprintf(w, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#ddd"/>`+"\n", x, plotT, x, plotB)
		fmt.Fprintf(w, `<text x="%.1f" y="%d" text-anchor="middle">%s</text>`+"\n", x, plotB+18, xlabels[e])
	}
	ylabels := map[int]string{0: "1", -1: "0.1", -2: "0.01", -3: "0.001", -4: "0.0001"}
	for e := 0; e >= int(yMinLog); e-- {
		y := py(float64(e))
		fmt.Fprintf(w, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#ddd"/>`+"\n", plotL, y, plotR, y)
		fmt.Fprintf(w, `<text x="%d" y="%.1f" text-anchor="end">%s</text>`+"\n", plotL-6, y+4, ylabels[e])
	}
	fmt.Fprintf(w, `<rect x="%d" y="%d" width="%d" height="%d" fill="none" stroke="#333"/>`+"\n", plotL, plotT, plotR-plotL, plotB-plotT)
	fmt.Fprintf(w, `<text x="%d" y="%d" text-anchor="middle">connect time (SYN to established, measured by the client)</text>`+"\n", (plotL+plotR)/2, plotB+38)
	fmt.Fprintf(w, `<text x="18" y="%d" text-anchor="middle" transform="rotate(-90 18 %d)">fraction slower than x (or failed)</text>`+"\n", (plotT+plotB)/2, (plotT+plotB)/2)
	// 500 ms marker.
	x500 := px(math.Log10(500))
	fmt.Fprintf(w, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#999" stroke-dasharray="4 3"/><text x="%.1f" y="%d" fill="#666" text-anchor="middle">500 ms</text>`+"\n",
		x500, plotT, x500, plotB, x500, plotT-3)

	ly := plotT + 8
	n := 0
	for _, c := range r.Cells {
		if c.Open == nil || c.Open.Attempted == 0 {
			continue
		}
		col := svgColors[n%len(svgColors)]
		n++
		att := float64(c.Open.Attempted)
		// Step function: after the k-th fastest connect, (att-k)/att remain.
		fmt.Fprintf(w, `<polyline fill="none" stroke="%s" stroke-width="2" points="`, col)
		lf := 0.0
		x := px(xMinLog)
		fmt.Fprintf(w, "%.1f,%.1f", x, py(lf))
		// Only steps that move at least half a pixel are drawn: the file
		// stays small whatever the number of connections.
		lastX, lastY := x, py(lf)
		for k, v := range c.ConnectMS {
			lx := math.Log10(math.Max(v, 1e-9))
			x = px(math.Max(xMinLog, math.Min(xMaxLog, lx)))
			rem := (att - float64(k+1)) / att
			nlf := yMinLog
			if rem > 0 {
				nlf = math.Max(yMinLog, math.Log10(rem))
			}
			last := k == len(c.ConnectMS)-1
			if x-lastX >= 0.5 || math.Abs(py(nlf)-lastY) >= 0.5 || last {
				fmt.Fprintf(w, " %.1f,%.1f %.1f,%.1f", x, py(lf), x, py(nlf))
				lastX, lastY = x, py(nlf)
			}
			lf = nlf
		}
		fmt.Fprintf(w, " %.1f,%.1f\"/>\n", px(xMaxLog), py(lf))
		// Legend.
		fmt.Fprintf(w, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="%s" stroke-width="3"/>`, plotR+12, ly, plotR+36, ly, col)
		fmt.Fprintf(w, `<text x="%d" y="%d" font-weight="bold">%s</text>`, plotR+42, ly+4, c.Name)
		fmt.Fprintf(w, `<text x="%d" y="%d" fill="#444">p99 %s ms, %d &gt;500ms, %d failed</text>`+"\n",
			plotR+42, ly+18, ms(c.Open.ConnectP99MS), c.Open.Slow500, c.Open.Failed())
		ly += 40
	}
	for _, c := range r.Cells {
		if c.Status != StatusOK {
			fmt.Fprintf(w, `<text x="%d" y="%d" fill="#a00">%s: %s</text>`+"\n", plotR+12, ly, c.Name, c.Status)
			ly += 18
		}
	}
	fmt.Fprintln(w, "</svg>")
}
