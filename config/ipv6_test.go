package config_test

import (
	"bytes"
	"net/netip"
	"reflect"
	"strings"
	"testing"

	"tslb/config"
)

// dual is minimal with an IPv6 service beside the IPv4 one; tests edit it.
// Line numbers: 3 and 5 the subnets, 8 and 13 the VIPs, 11 and 16 the
// backends, 18 snat.addresses; appended keys start at line 19.
const dual = `links:
  - interface: tslb-c0
    subnets: [198.18.0.0/24, "2001:db8::/64"]
  - interface: tslb-b0
    subnets: [198.18.1.0/24, "2001:db8:1::/64"]
services:
  - name: web
    vip: 198.18.0.100
    port: 80
    backends:
      - address: 198.18.1.11:8080
  - name: web6
    vip: "2001:db8::100"
    port: 80
    backends:
      - address: "[2001:db8:1::11]:8080"
snat:
  addresses: [198.18.1.100, "2001:db8:1::100"]
`

// only6 has no IPv4 at all.
const only6 = `links:
  - interface: tslb-c0
    subnets: ["fd00:18::/64"]
  - interface: tslb-b0
    subnets: ["fd00:18:1::/64"]
services:
  - name: web6
    vip: "fd00:18::100"
    port: 443
    backends:
      - address: "[fd00:18:1::11]:8443"
      - address: "[fd00:18:1::12]:8443"
snat:
  addresses: ["fd00:18:1::100"]
`

// edit applies edits to src in order: each replaces its first string by
// its second (once), or appends the second when the first is empty. It
// fails the test when src lacks a string to replace.
func edit(t *testing.T, src string, edits ...[2]string) string {
	t.Helper()
	for _, e := range edits {
		if e[0] == "" {
			src += e[1]
			continue
		}
		if !strings.Contains(src, e[0]) {
			t.Fatalf("source lacks %q", e[0])
		}
		src = strings.Replace(src, e[0], e[1], 1)
	}
	return src
}

// on1 appends text to links[1] of dual (after line 5).
func on1(text string) [2]string {
	return [2]string{`"2001:db8:1::/64"]` + "\n", `"2001:db8:1::/64"]` + "\n" + text}
}

func TestIPv6Good(t *testing.T) {
	addr, pfx, ap := netip.MustParseAddr, netip.MustParsePrefix, netip.MustParseAddrPort
	type edits = [][2]string
	for _, tt := range []struct {
		name  string
		src   string
		edits edits
		check func(t *testing.T, c *config.Config)
	}{
		{"dual stack", dual, nil, func(t *testing.T, c *config.Config) {
			if got, want := c.Links[1].Subnets, []netip.Prefix{pfx("198.18.1.0/24"), pfx("2001:db8:1::/64")}; !reflect.DeepEqual(got, want) {
				t.Errorf("subnets = %v, want %v", got, want)
			}
			if s := c.Services[1]; s.VIP != addr("2001:db8::100") || s.Backends[0].Address != ap("[2001:db8:1::11]:8080") {
				t.Errorf("web6 = %+v", s)
			}
			if got, want := c.SNAT.Addresses, []netip.Addr{addr("198.18.1.100"), addr("2001:db8:1::100")}; !reflect.DeepEqual(got, want) {
				t.Errorf("snat = %v, want %v", got, want)
			}
			// The same port on a VIP of each family: two services.
			if c.Services[0].Port != c.Services[1].Port {
				t.Errorf("ports %d, %d", c.Services[0].Port, c.Services[1].Port)
			}
		}},
		{"IPv6 only, ULA", only6, nil, func(t *testing.T, c *config.Config) {
			if c.Services[0].VIP != addr("fd00:18::100") || len(c.Services[0].Backends) != 2 || c.SNAT.Addresses[0] != addr("fd00:18:1::100") {
				t.Errorf("config = %+v", c)
			}
		}},
		// Plain (unquoted) IPv6 that YAML reads as strings.
		{"unquoted in a flow list", dual, edits{{`"2001:db8:1::/64"]`, "2001:db8:1::/64]"}}, nil},
		{"unquoted VIP", dual, edits{{`vip: "2001:db8::100"`, "vip: 2001:db8::100"}}, nil},
		{"unquoted block list items", dual, edits{{`addresses: [198.18.1.100, "2001:db8:1::100"]`, "addresses:\n    - 198.18.1.100\n    - 2001:db8:1::100"}}, nil},
		{"non-canonical spelling", dual, edits{{`"[2001:db8:1::11]:8080"`, `"[2001:DB8:1:0:0:0:0:11]:8080"`}}, func(t *testing.T, c *config.Config) {
			if got := c.Services[1].Backends[0].Address; got != ap("[2001:db8:1::11]:8080") {
				t.Errorf("backend = %v", got)
			}
		}},
		// Gateways: a scalar of either family, or a list of one each.
		{"IPv6 gateway scalar", dual, edits{on1("    gateway: \"2001:db8:1::1\"\n")}, func(t *testing.T, c *config.Config) {
			if l := c.Links[1]; l.Gateway.IsValid() || l.Gateway6 != addr("2001:db8:1::1") {
				t.Errorf("gateways = %v, %v", l.Gateway, l.Gateway6)
			}
		}},
		{"link-local IPv6 gateway", dual, edits{on1("    gateway: \"fe80::1\"\n")}, func(t *testing.T, c *config.Config) {
			if c.Links[1].Gateway6 != addr("fe80::1") {
				t.Errorf("Gateway6 = %v", c.Links[1].Gateway6)
			}
		}},
		{"gateway list, IPv6 first", dual, edits{on1("    gateway: [\"fe80::1\", 198.18.1.1]\n")}, func(t *testing.T, c *config.Config) {
			if l := c.Links[1]; l.Gateway != addr("198.18.1.1") || l.Gateway6 != addr("fe80::1") {
				t.Errorf("gateways = %v, %v", l.Gateway, l.Gateway6)
			}
		}},
		{"gateway block list", dual, edits{on1("    gateway:\n      - 198.18.1.1\n      - \"2001:db8:1::1\"\n")}, func(t *testing.T, c *config.Config) {
			if l := c.Links[1]; l.Gateway != addr("198.18.1.1") || l.Gateway6 != addr("2001:db8:1::1") {
				t.Errorf("gateways = %v, %v", l.Gateway, l.Gateway6)
			}
		}},
		{"IPv4 and IPv6 gateways on different links", dual, edits{
			{"[198.18.0.0/24, \"2001:db8::/64\"]\n", "[198.18.0.0/24, \"2001:db8::/64\"]\n    gateway: 198.18.0.1\n"},
			on1("    gateway: \"2001:db8:1::1\"\n"),
		}, func(t *testing.T, c *config.Config) {
			if l0, l1 := c.Links[0], c.Links[1]; l0.Gateway != addr("198.18.0.1") || l0.Gateway6.IsValid() || l1.Gateway.IsValid() || l1.Gateway6 != addr("2001:db8:1::1") {
				t.Errorf("links = %+v", c.Links)
			}
		}},
		{"IPv6 backend off link through the IPv6 gateway", dual, edits{
			on1("    gateway: \"2001:db8:1::1\"\n"),
			{`"[2001:db8:1::11]:8080"`, `"[2001:db8:99::11]:8080"`},
		}, nil},
		// health.source: a scalar of either family, or one of each.
		{"health source IPv6 scalar", dual, edits{{"", "health:\n  source: \"2001:db8:1::2\"\n"}}, func(t *testing.T, c *config.Config) {
			if c.Health.Source.IsValid() || c.Health.Source6 != addr("2001:db8:1::2") {
				t.Errorf("health = %+v", c.Health)
			}
		}},
		{"health source list, IPv6 first", dual, edits{{"", "health:\n  source: [\"2001:db8:1::2\", 198.18.1.2]\n"}}, func(t *testing.T, c *config.Config) {
			if c.Health.Source != addr("198.18.1.2") || c.Health.Source6 != addr("2001:db8:1::2") {
				t.Errorf("health = %+v", c.Health)
			}
		}},
		{"health source list of one", dual, edits{{"", "health:\n  source: [198.18.1.2]\n"}}, func(t *testing.T, c *config.Config) {
			if c.Health.Source != addr("198.18.1.2") || c.Health.Source6.IsValid() {
				t.Errorf("health = %+v", c.Health)
			}
		}},
		{"metrics on IPv6 loopback", dual, edits{{"", "metrics:\n  listen: \"[::1]:9100\"\n"}}, func(t *testing.T, c *config.Config) {
			if c.Metrics.Listen != "[::1]:9100" {
				t.Errorf("metrics.listen = %q", c.Metrics.Listen)
			}
		}},
		// The documented default (config.Health.Source6, lb/health.go):
		// without an IPv6 source the kernel picks the probes' source.
		{"IPv6 health checks without an IPv6 source", dual, edits{
			{`"[2001:db8:1::11]:8080"`, "\"[2001:db8:1::11]:8080\"\n    health_check: {type: tcp}"},
			{"", "health:\n  source: 198.18.1.2\n"},
		}, func(t *testing.T, c *config.Config) {
			if c.Services[1].HealthCheck == nil || c.Health.Source6.IsValid() {
				t.Errorf("health check %+v, source6 %v", c.Services[1].HealthCheck, c.Health.Source6)
			}
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := mustParse(t, edit(t, tt.src, tt.edits...))
			if tt.check != nil {
				tt.check(t, c)
			}
			// Every good input survives Marshal and Parse.
			out, err := c.Marshal()
			if err != nil {
				t.Fatalf("Marshal: %v", err)
			}
			back, err := config.Parse(out, "marshalled")
			if err != nil {
				t.Fatalf("Parse(Marshal()): %v\n%s", err, out)
			}
			sameConfig(t, back, c)
		})
	}
}

func TestIPv6Bad(t *testing.T) {
	type edits = [][2]string
	health := func(src string) [2]string { return [2]string{"", "health:\n  source: " + src + "\n"} } // line 20
	for _, tt := range []struct {
		name  string
		edits edits
		key   string
		line  int
		msg   string
	}{
		// One service is one family.
		{"IPv6 backend in an IPv4 service", edits{{"198.18.1.11:8080", `"[2001:db8:1::12]:8080"`}},
			"services[0].backends[0].address", 11, "backend 2001:db8:1::12 is IPv6 but VIP 198.18.0.100 is IPv4: a service is one family"},
		{"IPv4 backend in an IPv6 service", edits{{`"[2001:db8:1::11]:8080"`, "198.18.1.12:8080"}},
			"services[1].backends[0].address", 16, "backend 198.18.1.12 is IPv4 but VIP 2001:db8::100 is IPv6"},
		{"no IPv6 SNAT address", edits{{`, "2001:db8:1::100"]`, "]"}},
			"services[1].vip", 13, "no IPv6 address in snat.addresses"},
		{"no IPv4 SNAT address", edits{{"[198.18.1.100, ", "["}},
			"services[0].vip", 8, "no IPv4 address in snat.addresses"},
		// On-link checks per family.
		{"IPv6 VIP without IPv6 subnets", edits{{`, "2001:db8::/64"]`, "]"}, {`, "2001:db8:1::/64"]`, "]"}},
			"services[1].vip", 13, "VIP 2001:db8::100 is not inside any link's subnets (no link has an IPv6 subnet)"},
		{"IPv6 VIP off link", edits{{`vip: "2001:db8::100"`, `vip: "2001:db8:5::100"`}},
			"services[1].vip", 13, "VIP 2001:db8:5::100 is not inside any link's subnets"},
		{"IPv6 backend off link with only an IPv4 gateway", edits{on1("    gateway: 198.18.1.1\n"), {"2001:db8:1::11]", "2001:db8:99::11]"}},
			"services[1].backends[0].address", 17, "not inside any link's subnets and no link has an IPv6 gateway"},
		{"IPv6 SNAT address off link", edits{{`"2001:db8:1::100"]`, `"2001:db8:2::100"]`}},
			"snat.addresses[1]", 18, "SNAT address 2001:db8:2::100 is not inside any link's subnets"},
		{"duplicate IPv6 SNAT address in another spelling", edits{{`"2001:db8:1::100"]`, `"2001:db8:1::100", "2001:DB8:1:0:0::100"]`}},
			"snat.addresses[2]", 18, "duplicate SNAT address"},
		{"duplicate IPv6 VIP and port", edits{{"snat:\n", "  - name: web6b\n    vip: 2001:db8:0::100\n    port: 80\n    backends:\n      - address: \"[2001:db8:1::12]:8080\"\nsnat:\n"}},
			"services[2].vip", 18, "[2001:db8::100]:80 is also used by services[1]"},
		// Scope and spelling.
		{"link-local VIP", edits{{`vip: "2001:db8::100"`, `vip: "fe80::100"`}}, "services[1].vip", 13, "link-local (fe80::/10)"},
		{"link-local backend", edits{{"2001:db8:1::11]", "fe80::11]"}}, "services[1].backends[0].address", 16, "a backend address needs global scope"},
		{"link-local SNAT address", edits{{`"2001:db8:1::100"]`, `"fe80::100"]`}}, "snat.addresses[1]", 18, "an SNAT address needs global scope"},
		{"zone in a VIP", edits{{`vip: "2001:db8::100"`, `vip: "2001:db8::100%tslb-c0"`}}, "services[1].vip", 13, "zone identifiers are not allowed"},
		{"zone in a backend", edits{{"2001:db8:1::11]", "2001:db8:1::11%eth0]"}}, "services[1].backends[0].address", 16, "zone identifiers are not allowed"},
		{"IPv4-mapped VIP", edits{{`vip: "2001:db8::100"`, `vip: "::ffff:198.18.0.101"`}}, "services[1].vip", 13, "IPv4-mapped IPv6 address; use the IPv4 form 198.18.0.101"},
		{"IPv4-mapped backend", edits{{"2001:db8:1::11]", "::ffff:198.18.1.12]"}}, "services[1].backends[0].address", 16, "use the IPv4 form 198.18.1.12"},
		{"IPv4-mapped SNAT address", edits{{`"2001:db8:1::100"]`, `"::ffff:198.18.1.101"]`}}, "snat.addresses[1]", 18, "use the IPv4 form 198.18.1.101"},
		{"multicast VIP", edits{{`vip: "2001:db8::100"`, `vip: "ff05::1"`}}, "services[1].vip", 13, "not a usable unicast address"},
		// Subnets.
		{"link-local subnet", edits{{`"2001:db8:1::/64"]`, `"fe80::/64"]`}}, "links[1].subnets[1]", 5, "link-local (fe80::/10)"},
		{"multicast subnet", edits{{`"2001:db8:1::/64"]`, `"ff02::/16"]`}}, "links[1].subnets[1]", 5, "multicast prefix"},
		{"IPv4-mapped subnet", edits{{`"2001:db8:1::/64"]`, `"::ffff:198.18.2.0/120"]`}}, "links[1].subnets[1]", 5, "use the IPv4 form 198.18.2.0/24"},
		{"IPv6 subnet with host bits", edits{{`"2001:db8:1::/64"]`, `"2001:db8:1::1/64"]`}}, "links[1].subnets[1]", 5, "did you mean 2001:db8:1::/64?"},
		{"overlapping IPv6 subnets", edits{{`"2001:db8:1::/64"]`, `"2001:db8::/48"]`}}, "links[1].subnets[1]", 5, "overlaps 2001:db8::/64 (links[0].subnets[1])"},
		// links[].gateway: at most one address per family.
		{"gateway: two IPv4", edits{on1("    gateway: [198.18.1.1, 198.18.1.2]\n")}, "links[1].gateway[1]", 6, "a second IPv4 address (links[1].gateway[0] is one already)"},
		{"gateway: two IPv6", edits{on1("    gateway: [\"fe80::1\", \"2001:db8:1::1\"]\n")}, "links[1].gateway[1]", 6, "a second IPv6 address"},
		{"gateway: three items", edits{on1("    gateway: [198.18.1.1, \"fe80::1\", \"fe80::2\"]\n")}, "links[1].gateway", 6, "got a list of 3 items"},
		{"gateway: empty list", edits{on1("    gateway: []\n")}, "links[1].gateway", 6, "got a list of 0 items"},
		{"gateway: mapping", edits{on1("    gateway: {v6: \"fe80::1\"}\n")}, "links[1].gateway", 6, "got a mapping"},
		{"IPv6 gateway off the link's IPv6 subnets", edits{on1("    gateway: \"2001:db8:9::1\"\n")}, "links[1].gateway", 6, "not inside any of this link's IPv6 subnets"},
		{"IPv6 gateway in the IPv4 half of a list", edits{on1("    gateway: [198.18.1.1, \"2001:db8:9::1\"]\n")}, "links[1].gateway[1]", 6, "gateway 2001:db8:9::1 is not inside any of this link's IPv6 subnets"},
		{"IPv6 gateway with a zone", edits{on1("    gateway: \"fe80::1%tslb-b0\"\n")}, "links[1].gateway", 6, "zone identifiers are not allowed"},
		{"multicast IPv6 gateway", edits{on1("    gateway: \"ff02::2\"\n")}, "links[1].gateway", 6, "not a usable unicast address"},
		{"two links with an IPv6 gateway", edits{
			{"[198.18.0.0/24, \"2001:db8::/64\"]\n", "[198.18.0.0/24, \"2001:db8::/64\"]\n    gateway: \"fe80::1\"\n"},
			on1("    gateway: \"2001:db8:1::1\"\n"),
		}, "links[1].gateway", 7, "only one link may have an IPv6 gateway; links[0] already has one"},
		{"VIP is the IPv6 gateway", edits{{`vip: "2001:db8::100"`, `vip: "2001:db8:1::1"`}, on1("    gateway: \"2001:db8:1::1\"\n")},
			"services[1].vip", 14, "2001:db8:1::1 is links[1].gateway"},
		// health.source: at most one address per family, the kernel's.
		{"health source: two IPv6", edits{health(`["2001:db8:1::2", "2001:db8:1::3"]`)}, "health.source[1]", 20, "a second IPv6 address (health.source[0] is one already)"},
		{"health source: empty list", edits{health("[]")}, "health.source", 20, "got a list of 0 items"},
		{"health source is the IPv6 VIP", edits{health(`"2001:db8::100"`)}, "health.source", 20, "2001:db8::100 is the VIP of services[1]"},
		{"health source is the IPv6 SNAT address", edits{health(`[198.18.1.2, "2001:db8:1::100"]`)}, "health.source[1]", 20, "equals snat.addresses[1]"},
		{"health source is an IPv6 backend", edits{health(`"2001:db8:1::11"`)}, "health.source", 20, "is the address of services[1].backends[0]"},
		{"IPv6 health source off link with only an IPv4 gateway", edits{on1("    gateway: 198.18.1.1\n"), health(`"2001:db8:9::2"`)},
			"health.source", 21, "not inside any link's subnets and no link has an IPv6 gateway"},
		{"link-local health source", edits{health(`"fe80::2"`)}, "health.source", 20, "the health probe source needs global scope"},
		// YAML spelling: brackets, quotes, ports.
		{"unquoted [address]:port", edits{{`"[2001:db8:1::11]:8080"`, "[2001:db8:1::11]:8080"}},
			"", 16, `IPv6 addresses must be quoted in YAML there: write "[2001:db8:1::11]:8080"`},
		{"unquoted [address] without port", edits{{`"[2001:db8:1::11]:8080"`, "[2001:db8:1::11]"}},
			"services[1].backends[0].address", 16, `an IPv6 address:port must be quoted in YAML: "[2001:db8:1::11]:PORT"`},
		{"bracketed VIP", edits{{`vip: "2001:db8::100"`, "vip: [2001:db8::100]"}},
			"services[1].vip", 13, `write the address without brackets: "2001:db8::100"`},
		{"unquoted ::1 in a flow list", edits{{`"2001:db8:1::100"]`, "::1]"}},
			"", 18, `IPv6 addresses must be quoted in YAML there: write "::1"`},
		{"unquoted metrics listen", edits{{"", "metrics:\n  listen: [::1]:9100\n"}},
			"", 20, `IPv6 addresses must be quoted in YAML there: write "[::1]:9100"`},
		{"IPv6 address:port without brackets", edits{{`"[2001:db8:1::11]:8080"`, "2001:db8:1::11:8080"}},
			"services[1].backends[0].address", 16, `an IPv6 address:port needs brackets (did you mean "[2001:db8:1::11]:8080"?)`},
		{"IPv6 backend without port", edits{{`"[2001:db8:1::11]:8080"`, `"2001:db8:1::11"`}},
			"services[1].backends[0].address", 16, "has no port"},
		{"IPv6 backend port 0", edits{{`"[2001:db8:1::11]:8080"`, `"[2001:db8:1::11]:0"`}},
			"services[1].backends[0].address", 16, "port must be 1..65535"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			errs := parseErrors(t, edit(t, dual, tt.edits...))
			if !hasError(errs, tt.key, tt.line, tt.msg) {
				t.Errorf("want %q line %d containing %q; got:\n%v", tt.key, tt.line, tt.msg, errs)
			}
		})
	}
}

// TestIPv6GoConfig: a Config built in Go may put an address in the field of
// the wrong family, which Parse never does; Validate names the twin field.
func TestIPv6GoConfig(t *testing.T) {
	addr := netip.MustParseAddr
	for _, tt := range []struct {
		name   string
		mutate func(c *config.Config)
		key    string
		msg    string
	}{
		{"IPv6 in Gateway", func(c *config.Config) { c.Links[1].Gateway = addr("2001:db8:1::1") }, "links[1].gateway", "not an IPv4 address (an IPv6 one goes in Link.Gateway6)"},
		{"IPv4 in Gateway6", func(c *config.Config) { c.Links[0].Gateway6 = addr("198.18.0.1") }, "links[0].gateway", "not an IPv6 address (an IPv4 one goes in Link.Gateway)"},
		{"IPv6 in Source", func(c *config.Config) { c.Health.Source = addr("2001:db8:1::2") }, "health.source", "not an IPv4 address (an IPv6 one goes in Health.Source6)"},
		{"IPv4 in Source6", func(c *config.Config) { c.Health.Source6 = addr("198.18.1.2") }, "health.source", "not an IPv6 address (an IPv4 one goes in Health.Source)"},
		{"IPv6 VIP, no IPv6 SNAT", func(c *config.Config) {
			c.Links[0].Subnets = append(c.Links[0].Subnets, netip.MustParsePrefix("2001:db8::/64"))
			c.Services[0].VIP = addr("2001:db8::100")
		}, "services[0].vip", "no IPv6 address in snat.addresses"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := goConfig()
			c.ApplyDefaults()
			tt.mutate(c)
			if errs := c.Validate(); !hasError(errs, tt.key, 0, tt.msg) {
				t.Errorf("want %s %q; got:\n%v", tt.key, tt.msg, errs)
			}
		})
	}
}

// dualGoConfig is goConfig with an IPv6 service, IPv6 subnets, SNAT
// address, gateway and probe source.
func dualGoConfig() *config.Config {
	c := goConfig()
	c.Links[0].Subnets = append(c.Links[0].Subnets, netip.MustParsePrefix("2001:db8::/64"))
	c.Links[1].Subnets = append(c.Links[1].Subnets, netip.MustParsePrefix("2001:db8:1::/64"))
	c.Links[1].Gateway6 = netip.MustParseAddr("fe80::1")
	c.Services = append(c.Services, config.Service{
		Name: "web6", VIP: netip.MustParseAddr("2001:db8::100"), Port: 80,
		Backends: []config.Backend{
			{Address: netip.MustParseAddrPort("[2001:db8:1::11]:8080"), Weight: 2},
			{Address: netip.MustParseAddrPort("[2001:db8:7::11]:8080"), Weight: 1}, // through the gateway
		},
	})
	c.SNAT.Addresses = append(c.SNAT.Addresses, netip.MustParseAddr("2001:db8:1::100"))
	c.Health.Source6 = netip.MustParseAddr("2001:db8:1::2")
	return c
}

func TestIPv6RoundTrip(t *testing.T) {
	example, err := config.Load("example-dualstack.yaml")
	if err != nil {
		t.Fatal(err)
	}
	both := dualGoConfig()
	both.Health.Source = netip.MustParseAddr("198.18.1.2")
	both.ApplyDefaults()
	only6Gw := dualGoConfig()
	only6Gw.Links[1].Gateway = netip.Addr{}
	only6Gw.Services[0].Backends = only6Gw.Services[0].Backends[:1] // 203.0.113.7 needs the IPv4 gateway
	only6Gw.ApplyDefaults()
	for _, tt := range []struct {
		name string
		c    *config.Config
		want []string // lines the YAML must hold
	}{
		{"example-dualstack", example, []string{
			"    gateway: [198.18.0.1, 'fe80::1']", "      - address: '[2001:db8:0:1::11]:8080'",
			"  source: [198.18.1.2, '2001:db8:0:1::2']", "  addresses: [198.18.1.100, '2001:db8:0:1::100']",
		}},
		{"both families in gateway and source", both, []string{"    gateway: [198.18.1.1, 'fe80::1']", "  source: [198.18.1.2, '2001:db8:1::2']"}},
		{"IPv6 only in gateway and source: scalars", only6Gw, []string{"    gateway: fe80::1", "  source: 2001:db8:1::2"}},
		{"IPv4 only: as before", mustParse(t, minimal+"health:\n  source: 198.18.1.2\n"), []string{"  source: 198.18.1.2"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			out, err := tt.c.Marshal()
			if err != nil {
				t.Fatalf("Marshal: %v", err)
			}
			for _, w := range tt.want {
				if !bytes.Contains(out, []byte("\n"+w+"\n")) {
					t.Errorf("output lacks line %q:\n%s", w, out)
				}
			}
			back, err := config.Parse(out, "marshalled")
			if err != nil {
				t.Fatalf("Parse(Marshal()): %v\n%s", err, out)
			}
			sameConfig(t, back, tt.c)
			again, err := back.Marshal()
			if err != nil || !bytes.Equal(again, out) {
				t.Errorf("second Marshal differs (err %v):\n%s\n---\n%s", err, out, again)
			}
		})
	}
}

// TestIPv4OutputUnchanged: a configuration without IPv6 marshals as before
// IPv6 existed: gateway and health.source are plain scalars.
func TestIPv4OutputUnchanged(t *testing.T) {
	c := goConfig()
	c.Health.Source = netip.MustParseAddr("198.18.1.2")
	c.ApplyDefaults()
	out, err := c.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{"\n    gateway: 198.18.1.1\n", "\nhealth:\n  source: 198.18.1.2\n"} {
		if !bytes.Contains(out, []byte(w)) {
			t.Errorf("output lacks %q:\n%s", w, out)
		}
	}
	if bytes.Contains(out, []byte("gateway: [")) || bytes.Contains(out, []byte("source: [")) {
		t.Errorf("an IPv4-only gateway or source was written as a list:\n%s", out)
	}
}

func TestDualStackExample(t *testing.T) {
	c, err := config.Load("example-dualstack.yaml")
	if err != nil {
		t.Fatalf("Load(example-dualstack.yaml): %v", err)
	}
	addr, pfx, ap := netip.MustParseAddr, netip.MustParsePrefix, netip.MustParseAddrPort
	wantLinks := []config.Link{
		{Name: "clients", Interface: "tslb-c0", Subnets: []netip.Prefix{pfx("198.18.0.0/24"), pfx("2001:db8::/64")},
			Gateway: addr("198.18.0.1"), Gateway6: addr("fe80::1")},
		{Name: "backends", Interface: "tslb-b0", Subnets: []netip.Prefix{pfx("198.18.1.0/24"), pfx("2001:db8:0:1::/64")}},
	}
	if !reflect.DeepEqual(c.Links, wantLinks) {
		t.Errorf("Links = %+v, want %+v", c.Links, wantLinks)
	}
	if len(c.Services) != 2 {
		t.Fatalf("%d services, want 2", len(c.Services))
	}
	for i, want := range []struct {
		vip      netip.Addr
		backends []netip.AddrPort
	}{
		{addr("198.18.0.100"), []netip.AddrPort{ap("198.18.1.11:8080"), ap("198.18.1.12:8080")}},
		{addr("2001:db8::100"), []netip.AddrPort{ap("[2001:db8:0:1::11]:8080"), ap("[2001:db8:0:1::12]:8080")}},
	} {
		s := c.Services[i]
		var got []netip.AddrPort
		for _, b := range s.Backends {
			got = append(got, b.Address)
		}
		if s.VIP != want.vip || s.Port != 80 || !reflect.DeepEqual(got, want.backends) || s.HealthCheck == nil {
			t.Errorf("services[%d] = %+v", i, s)
		}
	}
	if got, want := c.SNAT.Addresses, []netip.Addr{addr("198.18.1.100"), addr("2001:db8:0:1::100")}; !reflect.DeepEqual(got, want) {
		t.Errorf("SNAT = %v, want %v", got, want)
	}
	if c.Health.Source != addr("198.18.1.2") || c.Health.Source6 != addr("2001:db8:0:1::2") {
		t.Errorf("Health = %+v", c.Health)
	}
	// The IPv4 half is example.yaml's addressing: one file, two families.
	example, err := config.Load("example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if c.Services[0].VIP != example.Services[0].VIP || c.SNAT.Addresses[0] != example.SNAT.Addresses[0] {
		t.Errorf("IPv4 half differs from example.yaml: %v %v", c.Services[0].VIP, c.SNAT.Addresses)
	}
	again, err := config.Load("example-dualstack.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if got := c.RestartKeysDiffer(again); got != nil {
		t.Errorf("example-dualstack vs itself: %q, want nil", got)
	}
}
