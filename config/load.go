package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/viper"
	"gopkg.in/yaml.v3"
)

// Load reads the file at path and parses it with Parse, using path as the
// Source. An unreadable file gives an error wrapping the os error; a bad
// configuration gives Errors.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return Parse(data, path)
}

// Parse decodes and validates a YAML configuration; source names it in
// errors and becomes Config.Source. Absent keys get their documented
// defaults. On any problem Parse returns a nil Config and an error of type
// Errors holding every problem found, sorted by line.
func Parse(data []byte, source string) (*Config, error) {
	d := &decoder{file: source, m: &meta{lines: map[string]int{}, bad: map[string]bool{}, fam: map[string]string{}}}
	root, err := parseYAML(data)
	if err != nil {
		line, msg := yamlErrorLine(err)
		ctx := line
		if l := syntaxErrorLine(data); l > 0 && l != line {
			if line > 0 {
				msg += fmt.Sprintf(" (parser context at line %d)", line)
			}
			line = l
		}
		msg += unquotedIPv6Hint(data, line, ctx)
		d.errAt(line, "", "%s", msg)
		return nil, d.errs
	}
	if root == nil {
		d.errAt(1, "", "empty configuration file")
		return nil, d.errs
	}
	c := d.root(root)
	c.Source = source
	if len(d.errs) == 0 {
		// Read the same bytes with viper, the project's configuration
		// library, so other sources can be layered on later. The values
		// come from the schema walk above; any disagreement on the syntax
		// is still reported.
		v := viper.New()
		v.SetConfigType("yaml")
		if err := v.ReadConfig(bytes.NewReader(data)); err != nil {
			line, msg := yamlErrorLine(err)
			d.errAt(line, "", "viper: %s", msg)
		}
	}
	errs := append(d.errs, c.Validate()...)
	if len(errs) > 0 {
		errs.sort()
		return nil, errs
	}
	return c, nil
}

// parseYAML returns the single document's root node, or nil if data holds
// no document (empty, only comments, or only a null).
func parseYAML(data []byte) (*yaml.Node, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, nil
		}
		return nil, err
	}
	var extra yaml.Node
	switch err := dec.Decode(&extra); {
	case err == nil:
		return nil, fmt.Errorf("yaml: line %d: a second YAML document is not allowed", extra.Line)
	case !errors.Is(err, io.EOF):
		return nil, err
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) == 0 {
		return nil, nil
	}
	root := deref(doc.Content[0])
	if isNull(root) {
		return nil, nil
	}
	return root, nil
}

// maxSyntaxScanLines bounds the prefix scan of syntaxErrorLine, which costs
// one parse per line.
const maxSyntaxScanLines = 2000

// syntaxErrorLine returns the 1-based line where data stops being valid
// YAML: one past the longest prefix of whole lines that still parses. It
// returns 0 if no such line is found or data is too long to scan.
//
// yaml.v3 reports the line of the enclosing construct (the parser's context
// mark), which can be far above the actual mistake; the first line whose
// addition makes the document unparseable is a better pointer.
func syntaxErrorLine(data []byte) int {
	lines := bytes.SplitAfter(data, []byte("\n"))
	if len(lines) > maxSyntaxScanLines {
		return 0
	}
	end := len(data)
	for k := len(lines) - 1; k >= 0; k-- {
		end -= len(lines[k])
		if _, err := parseYAML(data[:end]); err == nil {
			return k + 1
		}
	}
	return 0
}

// unquotedIPv6RE matches an IPv6 spelling YAML cannot read unquoted: a
// bracketed address:port ([2001:db8::11]:8080 starts a flow list) or a
// plain scalar starting with "::" (a ':' indicator), unless a quote or a
// word character precedes it.
var unquotedIPv6RE = regexp.MustCompile(`(?:^|[^"'\w])(\[[0-9A-Fa-f.:]*:[0-9A-Fa-f.:]*\]:[0-9]+|::[0-9A-Fa-f.:]*(?:/[0-9]+)?)`)

// unquotedIPv6Hint returns a hint to quote an IPv6 address for a YAML
// syntax error at one of lines (1-based; 0 is skipped), or "".
func unquotedIPv6Hint(data []byte, lines ...int) string {
	all := bytes.Split(data, []byte("\n"))
	for _, l := range lines {
		if l < 1 || l > len(all) {
			continue
		}
		text, _, _ := bytes.Cut(all[l-1], []byte(" #")) // drop a comment
		if m := unquotedIPv6RE.FindSubmatch(text); m != nil {
			return fmt.Sprintf(`; line %d: IPv6 addresses must be quoted in YAML there: write "%s"`, l, m[1])
		}
	}
	return ""
}

var yamlLineRE = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// yamlErrorLine splits a yaml.v3 error "yaml: line N: msg" into its line and
// message; other errors get line 0.
func yamlErrorLine(err error) (int, string) {
	s := err.Error()
	// viper wraps parser errors; look at the innermost "yaml:" part.
	if i := strings.LastIndex(s, "yaml: "); i > 0 {
		s = s[i:]
	}
	if m := yamlLineRE.FindStringSubmatch(s); m != nil {
		if n, err := strconv.Atoi(m[1]); err == nil {
			return n, "YAML syntax: " + m[2]
		}
	}
	return 0, "YAML syntax: " + strings.TrimPrefix(s, "yaml: ")
}

// meta records where Parse found each key path, and which paths already had
// a decoding error, so Validate neither repeats nor loses their lines.
type meta struct {
	lines map[string]int
	bad   map[string]bool
	// fam maps a key that holds one address per family (see addrPair),
	// suffixed "#4" or "#6", to where that family's address was: the key
	// itself for a scalar, "key[i]" for a list item.
	fam map[string]string
}

// famPath returns the key path where Parse found the IPv4 (is6 false) or
// IPv6 address of the one-per-family key path; path itself without meta
// or when the file had no such address.
func (m *meta) famPath(path string, is6 bool) string {
	if m == nil {
		return path
	}
	if p, ok := m.fam[path+famSuffix(is6)]; ok {
		return p
	}
	return path
}

// famSuffix is the meta.fam key suffix of a family.
func famSuffix(is6 bool) string {
	if is6 {
		return "#6"
	}
	return "#4"
}

// line returns the line of path, or of its nearest ancestor that was seen
// (the enclosing mapping for a missing key); 0 without meta.
func (m *meta) line(path string) int {
	if m == nil {
		return 0
	}
	for {
		if l, ok := m.lines[path]; ok {
			return l
		}
		if path == "" {
			return 0
		}
		path = parentPath(path)
	}
}

// isBad reports whether path or one of its ancestors already has an error.
func (m *meta) isBad(path string) bool {
	if m == nil {
		return false
	}
	for {
		if m.bad[path] {
			return true
		}
		if path == "" {
			return false
		}
		path = parentPath(path)
	}
}

// parentPath strips the last ".key" or "[i]" from path.
func parentPath(path string) string {
	i := strings.LastIndexAny(path, ".[")
	if i < 0 {
		return ""
	}
	return path[:i]
}

// joinPath appends key to path.
func joinPath(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// indexPath appends an index to path.
func indexPath(path string, i int) string {
	return path + "[" + strconv.Itoa(i) + "]"
}

// decoder walks a yaml.v3 node tree according to the schema, collecting
// every error.
type decoder struct {
	file string
	errs Errors
	m    *meta
}

// errAt records an error at line for path and marks path as bad.
func (d *decoder) errAt(line int, path, format string, args ...any) {
	d.errs = append(d.errs, Error{File: d.file, Line: line, Key: path, Msg: fmt.Sprintf(format, args...)})
	d.m.bad[path] = true
}

// deref follows aliases to the node they name.
func deref(n *yaml.Node) *yaml.Node {
	for i := 0; n.Kind == yaml.AliasNode && n.Alias != nil && i < 100; i++ {
		n = n.Alias
	}
	return n
}

// isNull reports whether n is a null scalar ("", "~" or "null").
func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

// describe names n's kind and value for error messages.
func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		kind := map[string]string{
			"!!str": "string", "!!int": "integer", "!!float": "number",
			"!!bool": "boolean", "!!null": "null", "!!timestamp": "timestamp",
		}[n.ShortTag()]
		if kind == "" {
			kind = "value tagged " + n.ShortTag()
		}
		v := n.Value
		if len(v) > 40 {
			v = v[:40] + "..."
		}
		return fmt.Sprintf("%s %q", kind, v)
	}
	return "an unsupported node"
}

// mapping walks the mapping n at path. Unknown, duplicate and non-string keys
// are errors; f is called for every known key whose value is not null.
func (d *decoder) mapping(n *yaml.Node, path string, known []string, f func(key string, v *yaml.Node, p string)) bool {
	n = deref(n)
	if n.Kind != yaml.MappingNode {
		d.errAt(n.Line, path, "expected a mapping, got %s", describe(n))
		return false
	}
	if _, ok := d.m.lines[path]; !ok {
		d.m.lines[path] = n.Line
	}
	seen := make(map[string]int, len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := deref(n.Content[i]), n.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			d.errAt(k.Line, path, "keys must be strings, got %s", describe(k))
			continue
		}
		p := joinPath(path, k.Value)
		if k.ShortTag() == "!!merge" {
			d.errAt(k.Line, p, "merge keys (<<) are not supported")
			continue
		}
		if first, dup := seen[k.Value]; dup {
			d.errAt(k.Line, p, "duplicate key (first at line %d)", first)
			continue
		}
		seen[k.Value] = k.Line
		if !slices.Contains(known, k.Value) {
			d.errAt(k.Line, p, "unknown key (valid keys here: %s)", strings.Join(known, ", "))
			continue
		}
		d.m.lines[p] = k.Line
		if isNull(deref(v)) {
			continue
		}
		f(k.Value, v, p)
	}
	return true
}

// seq walks the list n at path and returns its length, calling f for every
// non-null item; null items are errors. It returns -1 if n is not a list.
func (d *decoder) seq(n *yaml.Node, path string, f func(i int, item *yaml.Node, p string)) int {
	n = deref(n)
	if n.Kind != yaml.SequenceNode {
		d.errAt(n.Line, path, "expected a list, got %s", describe(n))
		return -1
	}
	for i, it := range n.Content {
		it = deref(it)
		p := indexPath(path, i)
		d.m.lines[p] = it.Line
		if isNull(it) {
			d.errAt(it.Line, p, "empty list item")
			continue
		}
		f(i, it, p)
	}
	return len(n.Content)
}

// list decodes the list n at path into a fresh slice whose items start as
// init(), so indexes in the result match indexes in the file.
func list[T any](d *decoder, n *yaml.Node, path string, init func() T, f func(item *yaml.Node, p string, out *T)) []T {
	n = deref(n)
	if n.Kind != yaml.SequenceNode {
		d.errAt(n.Line, path, "expected a list, got %s", describe(n))
		return nil
	}
	out := make([]T, len(n.Content))
	for i := range out {
		out[i] = init()
	}
	d.seq(n, path, func(i int, item *yaml.Node, p string) { f(item, p, &out[i]) })
	return out
}

// str decodes a string scalar.
func (d *decoder) str(v *yaml.Node, p string) (string, bool) {
	v = deref(v)
	if v.Kind != yaml.ScalarNode || v.ShortTag() != "!!str" {
		d.errAt(v.Line, p, "expected a string, got %s", describe(v))
		return "", false
	}
	return v.Value, true
}

// integer decodes an integer scalar within lo..hi.
func (d *decoder) integer(v *yaml.Node, p string, lo, hi int64) (int64, bool) {
	v = deref(v)
	if v.Kind != yaml.ScalarNode || v.ShortTag() != "!!int" {
		d.errAt(v.Line, p, "expected an integer, got %s", describe(v))
		return 0, false
	}
	var x int64
	if err := v.Decode(&x); err != nil {
		d.errAt(v.Line, p, "%q is not a valid integer", v.Value)
		return 0, false
	}
	if x < lo || x > hi {
		d.errAt(v.Line, p, "%d is out of range %d..%d", x, lo, hi)
		return 0, false
	}
	return x, true
}

// boolean decodes a true/false scalar. YAML 1.1 spellings such as yes, no,
// on and off are strings in YAML 1.2 and are refused rather than guessed.
func (d *decoder) boolean(v *yaml.Node, p string) (bool, bool) {
	v = deref(v)
	if v.Kind != yaml.ScalarNode || v.ShortTag() != "!!bool" {
		d.errAt(v.Line, p, "expected a boolean (true or false), got %s", describe(v))
		return false, false
	}
	var x bool
	if err := v.Decode(&x); err != nil {
		d.errAt(v.Line, p, "%q is not a valid boolean", v.Value)
		return false, false
	}
	return x, true
}

// duration decodes a Go duration string such as "60s" or "1h30m".
func (d *decoder) duration(v *yaml.Node, p string) (time.Duration, bool) {
	v = deref(v)
	if v.Kind != yaml.ScalarNode || v.ShortTag() != "!!str" {
		d.errAt(v.Line, p, "expected a duration such as \"60s\", got %s", describe(v))
		return 0, false
	}
	x, err := time.ParseDuration(v.Value)
	if err != nil {
		d.errAt(v.Line, p, "%q is not a valid duration (examples: 500ms, 60s, 1h30m)", v.Value)
		return 0, false
	}
	return x, true
}

// bracketedIPv6 returns the address of an unquoted [2001:db8::1], which
// YAML reads as a list of one string.
func bracketedIPv6(v *yaml.Node) (netip.Addr, bool) {
	v = deref(v)
	if v.Kind != yaml.SequenceNode || len(v.Content) != 1 {
		return netip.Addr{}, false
	}
	it := deref(v.Content[0])
	if it.Kind != yaml.ScalarNode {
		return netip.Addr{}, false
	}
	a, err := netip.ParseAddr(it.Value)
	if err != nil || !a.Is6() {
		return netip.Addr{}, false
	}
	return a, true
}

// addr decodes an IP address of either family.
func (d *decoder) addr(v *yaml.Node, p string) (netip.Addr, bool) {
	if a, ok := bracketedIPv6(v); ok {
		d.errAt(deref(v).Line, p, `expected a string, got a list: unquoted [%s] is a YAML list; write the address without brackets: "%s"`, a, a)
		return netip.Addr{}, false
	}
	s, ok := d.str(v, p)
	if !ok {
		return netip.Addr{}, false
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		d.errAt(deref(v).Line, p, "%q is not a valid IP address", s)
		return netip.Addr{}, false
	}
	return a, true
}

// prefix decodes an IP prefix such as 198.18.0.0/24 or 2001:db8::/64.
func (d *decoder) prefix(v *yaml.Node, p string) (netip.Prefix, bool) {
	s, ok := d.str(v, p)
	if !ok {
		return netip.Prefix{}, false
	}
	x, err := netip.ParsePrefix(s)
	if err != nil {
		d.errAt(deref(v).Line, p, "%q is not a valid prefix (want address/bits, such as 198.18.0.0/24 or 2001:db8::/64)", s)
		return netip.Prefix{}, false
	}
	return x, true
}

// addrPort decodes address:port, an IPv6 address in brackets.
func (d *decoder) addrPort(v *yaml.Node, p string) (netip.AddrPort, bool) {
	if a, ok := bracketedIPv6(v); ok {
		d.errAt(deref(v).Line, p, `expected a string, got a list: an IPv6 address:port must be quoted in YAML: "[%s]:PORT"`, a)
		return netip.AddrPort{}, false
	}
	s, ok := d.str(v, p)
	if !ok {
		return netip.AddrPort{}, false
	}
	x, err := netip.ParseAddrPort(s)
	if err != nil {
		if a, err := netip.ParseAddr(s); err == nil {
			hint := ""
			if a.Is6() {
				// 2001:db8::11:8080 is a valid IPv6 address: without
				// brackets the port cannot be told from the last group.
				hint = "; an IPv6 address:port needs brackets"
				if i := strings.LastIndexByte(s, ':'); i > 0 {
					if h, err := netip.ParseAddr(s[:i]); err == nil && h.Is6() {
						if port, err := strconv.ParseUint(s[i+1:], 10, 16); err == nil && port > 0 {
							hint += fmt.Sprintf(` (did you mean "[%s]:%d"?)`, s[:i], port)
						}
					}
				}
			}
			d.errAt(deref(v).Line, p, `%q has no port; want address:port, such as 198.18.1.11:8080 or "[2001:db8::11]:8080"%s`, s, hint)
		} else {
			d.errAt(deref(v).Line, p, `%q is not a valid address:port (such as 198.18.1.11:8080 or "[2001:db8::11]:8080")`, s)
		}
		return netip.AddrPort{}, false
	}
	return x, true
}

// addrPair decodes a key that holds at most one address per family: one
// address, or a list of at most two, one IPv4 and one IPv6 (in either
// order). IPv4-mapped IPv6 addresses count as IPv6, so Validate can tell
// the user to write the IPv4 form. It records in meta.fam where each
// family's address was.
func (d *decoder) addrPair(v *yaml.Node, p string) (v4, v6 netip.Addr) {
	v = deref(v)
	const want = "expected an address or a list of at most two (one IPv4, one IPv6)"
	put := func(a netip.Addr, ap string, line int) {
		dst, fam := &v4, "IPv4"
		if a.Is6() {
			dst, fam = &v6, "IPv6"
		}
		if dst.IsValid() {
			d.errAt(line, ap, "a second %s address (%s is one already); at most one per family", fam, d.m.fam[p+famSuffix(a.Is6())])
			return
		}
		*dst = a
		d.m.fam[p+famSuffix(a.Is6())] = ap
	}
	switch v.Kind {
	case yaml.ScalarNode:
		if a, ok := d.addr(v, p); ok {
			put(a, p, v.Line)
		}
	case yaml.SequenceNode:
		if len(v.Content) == 0 || len(v.Content) > 2 {
			d.errAt(v.Line, p, "%s, got a list of %d items", want, len(v.Content))
			return
		}
		d.seq(v, p, func(_ int, it *yaml.Node, ip string) {
			if a, ok := d.addr(it, ip); ok {
				put(a, ip, it.Line)
			}
		})
	default:
		d.errAt(v.Line, p, "%s, got %s", want, describe(v))
	}
	return v4, v6
}

// portRange decodes "lo-hi" or [lo, hi].
func (d *decoder) portRange(v *yaml.Node, p string) (lo, hi uint16, ok bool) {
	v = deref(v)
	const want = `expected "lo-hi" (such as "20000-60999") or a list [lo, hi]`
	switch {
	case v.Kind == yaml.ScalarNode && v.ShortTag() == "!!str":
		a, b, found := strings.Cut(v.Value, "-")
		x, err1 := strconv.ParseUint(strings.TrimSpace(a), 10, 16)
		y, err2 := strconv.ParseUint(strings.TrimSpace(b), 10, 16)
		if !found || err1 != nil || err2 != nil {
			d.errAt(v.Line, p, "%q: %s, each port 0..65535", v.Value, want)
			return 0, 0, false
		}
		return uint16(x), uint16(y), true
	case v.Kind == yaml.SequenceNode:
		if len(v.Content) != 2 {
			d.errAt(v.Line, p, "%s; got a list of %d items", want, len(v.Content))
			return 0, 0, false
		}
		var ports [2]uint16
		ok := true
		for i, it := range v.Content {
			x, good := d.integer(it, indexPath(p, i), 0, 65535)
			ports[i], ok = uint16(x), ok && good
		}
		if !ok {
			d.m.bad[p] = true
		}
		return ports[0], ports[1], ok
	}
	d.errAt(v.Line, p, "%s, got %s", want, describe(v))
	return 0, 0, false
}

// root decodes the top-level mapping, starting from the defaults.
func (d *decoder) root(n *yaml.Node) *Config {
	c := &Config{
		SNAT:    SNAT{PortMin: DefaultPortMin, PortMax: DefaultPortMax},
		Flows:   Flows{Max: DefaultFlowsMax, HalfOpenMax: DefaultHalfOpenMax},
		Metrics: Metrics{Listen: DefaultMetricsListen},
		Log:     Log{Level: DefaultLogLevel, Format: DefaultLogFormat},
		Detector: Detector{
			PcapMaxFiles: DefaultPcapMaxFiles,
			NoRepair:     !DefaultRepair,
		},
		Control:   Control{Socket: DefaultControlSocket},
		Shutdown:  Shutdown{Timeout: DefaultShutdownTimeout},
		StateFile: DefaultStateFile,
		Datapath:  Datapath{IO: DefaultDatapathIO, RingFrames: DefaultRingFrames},
		Health: Health{Passive: PassiveHealth{SYNTimeout: DefaultPassiveSYN, Retries: DefaultPassiveRetries,
			Fall: DefaultPassiveFall, DownFor: DefaultPassiveDownFor}},
		meta: d.m,
	}
	c.Flows.Timeouts = Timeouts{
		Syn:         DefaultSynTimeout,
		Established: DefaultEstTimeout,
		Fin:         DefaultFinTimeout,
		TimeWait:    DefaultTWTimeout,
		Closed:      DefaultClosedTimeout,
	}
	known := []string{
		"links", "services", "snat", "flows", "metrics", "log", "detector",
		"health", "control", "shutdown", "state_file", "datapath", "cluster",
	}
	if !d.mapping(n, "", known, func(key string, v *yaml.Node, p string) {
		switch key {
		case "links":
			c.Links = list(d, v, p, func() Link { return Link{} }, d.link)
		case "services":
			c.Services = list(d, v, p, newService, d.service)
		case "snat":
			d.snat(v, p, &c.SNAT)
		case "flows":
			d.flows(v, p, &c.Flows)
		case "metrics":
			d.mapping(v, p, []string{"listen"}, func(_ string, v *yaml.Node, p string) {
				c.Metrics.Listen, _ = d.str(v, p)
			})
		case "log":
			d.mapping(v, p, []string{"level", "format"}, func(key string, v *yaml.Node, p string) {
				switch key {
				case "level":
					c.Log.Level, _ = d.str(v, p)
				case "format":
					c.Log.Format, _ = d.str(v, p)
				}
			})
		case "detector":
			d.detector(v, p, &c.Detector)
		case "health":
			d.mapping(v, p, []string{"source", "passive"}, func(key string, v *yaml.Node, p string) {
				switch key {
				case "source":
					c.Health.Source, c.Health.Source6 = d.addrPair(v, p)
				case "passive":
					d.passive(v, p, &c.Health.Passive)
				}
			})
		case "control":
			d.mapping(v, p, []string{"socket"}, func(_ string, v *yaml.Node, p string) {
				c.Control.Socket, _ = d.str(v, p)
			})
		case "shutdown":
			d.mapping(v, p, []string{"timeout"}, func(_ string, v *yaml.Node, p string) {
				if x, ok := d.duration(v, p); ok {
					c.Shutdown.Timeout = x
				}
			})
		case "state_file":
			c.StateFile, _ = d.str(v, p)
		case "datapath":
			d.datapath(v, p, &c.Datapath)
		case "cluster":
			c.Cluster = d.cluster(v, p)
		}
	}) {
		d.m.bad[""] = true
	}
	return c
}

// link decodes one links[] item.
func (d *decoder) link(n *yaml.Node, path string, l *Link) {
	d.mapping(n, path, []string{"name", "interface", "subnets", "gateway"}, func(key string, v *yaml.Node, p string) {
		switch key {
		case "name":
			l.Name, _ = d.str(v, p)
		case "interface":
			l.Interface, _ = d.str(v, p)
		case "subnets":
			l.Subnets = list(d, v, p, func() netip.Prefix { return netip.Prefix{} }, func(it *yaml.Node, p string, out *netip.Prefix) {
				*out, _ = d.prefix(it, p)
			})
		case "gateway":
			l.Gateway, l.Gateway6 = d.addrPair(v, p)
		}
	})
	if l.Name == "" {
		l.Name = l.Interface
	}
}

// newService returns a Service holding the defaults, except ExhaustionWait,
// which service fills in once it knows the exhaustion policy.
func newService() Service {
	return Service{
		Protocol:          DefaultProtocol,
		Scheduler:         DefaultScheduler,
		Timestamps:        DefaultTimestamps,
		TimeWait:          DefaultTimeWait,
		NoISNTranslation:  !DefaultISNTranslation,
		Exhaustion:        DefaultExhaustion,
		SYNProxy:          DefaultSYNProxy,
		SYNProxyThreshold: DefaultSYNProxyThresh,
	}
}

// service decodes one services[] item.
func (d *decoder) service(n *yaml.Node, path string, s *Service) {
	known := []string{
		"name", "vip", "port", "protocol", "scheduler", "timestamps", "time_wait",
		"isn_translation", "exhaustion", "exhaustion_wait", "backends", "health_check",
		"half_open_max", "syn_proxy", "syn_proxy_threshold",
	}
	haveWait := false
	d.mapping(n, path, known, func(key string, v *yaml.Node, p string) {
		switch key {
		case "name":
			s.Name, _ = d.str(v, p)
		case "vip":
			s.VIP, _ = d.addr(v, p)
		case "port":
			x, _ := d.integer(v, p, 1, 65535)
			s.Port = uint16(x)
		case "protocol":
			s.Protocol, _ = d.str(v, p)
		case "scheduler":
			s.Scheduler, _ = d.str(v, p)
		case "timestamps":
			x, _ := d.str(v, p)
			s.Timestamps = TSMode(x)
		case "time_wait":
			s.TimeWait, _ = d.duration(v, p)
		case "isn_translation":
			if x, ok := d.boolean(v, p); ok {
				s.NoISNTranslation = !x
			}
		case "exhaustion":
			x, _ := d.str(v, p)
			s.Exhaustion = Exhaustion(x)
		case "exhaustion_wait":
			s.ExhaustionWait, haveWait = d.duration(v, p)
		case "backends":
			s.Backends = list(d, v, p, func() Backend { return Backend{Weight: DefaultWeight} }, d.backend)
		case "health_check":
			s.HealthCheck = d.healthCheck(v, p)
		case "half_open_max":
			if x, ok := d.integer(v, p, 0, 100_000_000); ok {
				s.HalfOpenMax = int(x)
			}
		case "syn_proxy":
			x, _ := d.str(v, p)
			s.SYNProxy = SYNProxyMode(x)
		case "syn_proxy_threshold":
			if x, ok := d.integer(v, p, 1, 1_000_000); ok {
				s.SYNProxyThreshold = int(x)
			}
		}
	})
	if s.Exhaustion == ExhaustWait && !haveWait && !d.m.bad[joinPath(path, "exhaustion_wait")] {
		s.ExhaustionWait = DefaultExhaustionWait
	}
}

// backend decodes one backends[] item.
func (d *decoder) backend(n *yaml.Node, path string, b *Backend) {
	d.mapping(n, path, []string{"address", "weight", "drain"}, func(key string, v *yaml.Node, p string) {
		switch key {
		case "address":
			b.Address, _ = d.addrPort(v, p)
		case "weight":
			if x, ok := d.integer(v, p, 0, 1000); ok {
				b.Weight = int(x)
			}
		case "drain":
			if x, ok := d.boolean(v, p); ok {
				b.Drain = x
			}
		}
	})
}

// healthCheck decodes a health_check mapping.
func (d *decoder) healthCheck(n *yaml.Node, path string) *HealthCheck {
	hc := &HealthCheck{
		Interval: DefaultHCInterval,
		Timeout:  DefaultHCTimeout,
		Rise:     DefaultHCRise,
		Fall:     DefaultHCFall,
	}
	var havePath, haveStatus bool
	known := []string{"type", "interval", "timeout", "rise", "fall", "path", "expect_status"}
	d.mapping(n, path, known, func(key string, v *yaml.Node, p string) {
		switch key {
		case "type":
			hc.Type, _ = d.str(v, p)
		case "interval":
			hc.Interval, _ = d.duration(v, p)
		case "timeout":
			hc.Timeout, _ = d.duration(v, p)
		case "rise":
			x, _ := d.integer(v, p, 1, 100)
			hc.Rise = int(x)
		case "fall":
			x, _ := d.integer(v, p, 1, 100)
			hc.Fall = int(x)
		case "path":
			hc.Path, havePath = d.str(v, p)
		case "expect_status":
			x, ok := d.integer(v, p, 100, 599)
			hc.ExpectStatus, haveStatus = int(x), ok
		}
	})
	if hc.Type == "http" {
		if !havePath && !d.m.bad[joinPath(path, "path")] {
			hc.Path = DefaultHCPath
		}
		if !haveStatus && !d.m.bad[joinPath(path, "expect_status")] {
			hc.ExpectStatus = DefaultHCStatus
		}
	}
	return hc
}

// snat decodes the snat mapping.
func (d *decoder) snat(n *yaml.Node, path string, s *SNAT) {
	d.mapping(n, path, []string{"addresses", "port_range"}, func(key string, v *yaml.Node, p string) {
		switch key {
		case "addresses":
			s.Addresses = list(d, v, p, func() netip.Addr { return netip.Addr{} }, func(it *yaml.Node, p string, out *netip.Addr) {
				*out, _ = d.addr(it, p)
			})
		case "port_range":
			if lo, hi, ok := d.portRange(v, p); ok {
				s.PortMin, s.PortMax = lo, hi
			}
		}
	})
}

// detector decodes the detector mapping.
func (d *decoder) detector(n *yaml.Node, path string, det *Detector) {
	d.mapping(n, path, []string{"pcap_dir", "pcap_max_files", "repair"}, func(key string, v *yaml.Node, p string) {
		switch key {
		case "pcap_dir":
			det.PcapDir, _ = d.str(v, p)
		case "pcap_max_files":
			if x, ok := d.integer(v, p, 1, 100_000); ok {
				det.PcapMaxFiles = int(x)
			}
		case "repair":
			if x, ok := d.boolean(v, p); ok {
				det.NoRepair = !x
			}
		}
	})
}

// flows decodes the flows mapping.
func (d *decoder) flows(n *yaml.Node, path string, f *Flows) {
	haveHalfOpen := false
	defer func() {
		if !haveHalfOpen {
			f.HalfOpenMax = min(DefaultHalfOpenMax, f.Max)
		}
	}()
	d.mapping(n, path, []string{"max", "half_open_max", "timeouts"}, func(key string, v *yaml.Node, p string) {
		switch key {
		case "max":
			if x, ok := d.integer(v, p, 1, 100_000_000); ok {
				f.Max = int(x)
			}
		case "half_open_max":
			if x, ok := d.integer(v, p, 1, 100_000_000); ok {
				f.HalfOpenMax, haveHalfOpen = int(x), true
			}
		case "timeouts":
			t := &f.Timeouts
			fields := map[string]*time.Duration{
				"syn": &t.Syn, "established": &t.Established, "fin": &t.Fin,
				"time_wait": &t.TimeWait, "closed": &t.Closed,
			}
			known := []string{"syn", "established", "fin", "time_wait", "closed"}
			d.mapping(v, p, known, func(key string, v *yaml.Node, p string) {
				if x, ok := d.duration(v, p); ok {
					*fields[key] = x
				}
			})
		}
	})
}

// datapath decodes the datapath section.
func (d *decoder) datapath(n *yaml.Node, path string, dp *Datapath) {
	d.mapping(n, path, []string{"workers", "io", "ring_frames", "kernel_drop"}, func(key string, v *yaml.Node, p string) {
		switch key {
		case "kernel_drop":
			if x, ok := d.boolean(v, p); ok {
				dp.KernelDropOff = !x
			}
		case "workers":
			if x, ok := d.integer(v, p, 0, MaxWorkers); ok {
				dp.Workers = int(x)
			}
		case "io":
			dp.IO, _ = d.str(v, p)
		case "ring_frames":
			if x, ok := d.integer(v, p, 64, 65536); ok {
				dp.RingFrames = int(x)
			}
		}
	})
}

// passive decodes health.passive.
func (d *decoder) passive(n *yaml.Node, path string, ph *PassiveHealth) {
	d.mapping(n, path, []string{"enabled", "syn_timeout", "retries", "fall", "down_for"}, func(key string, v *yaml.Node, p string) {
		switch key {
		case "enabled":
			if x, ok := d.boolean(v, p); ok {
				ph.Off = !x
			}
		case "syn_timeout":
			if x, ok := d.duration(v, p); ok {
				ph.SYNTimeout = x
			}
		case "retries":
			if x, ok := d.integer(v, p, 0, 8); ok {
				ph.Retries = int(x)
			}
		case "fall":
			if x, ok := d.integer(v, p, 1, 100); ok {
				ph.Fall = int(x)
			}
		case "down_for":
			if x, ok := d.duration(v, p); ok {
				ph.DownFor = x
			}
		}
	})
}
