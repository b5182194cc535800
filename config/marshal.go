package config

import (
	"bytes"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// The yaml* types mirror the file schema for Marshal. Fields whose zero
// value means "use the default" are omitted when zero, so a Config built in
// Go without ApplyDefaults still marshals to a file Parse completes the same
// way.
type (
	yamlConfig struct {
		Links     []yamlLink    `yaml:"links"`
		Services  []yamlService `yaml:"services"`
		SNAT      yamlSNAT      `yaml:"snat"`
		Flows     yamlFlows     `yaml:"flows"`
		Metrics   yamlMetrics   `yaml:"metrics"`
		Log       yamlLog       `yaml:"log"`
		Detector  *yamlDetector `yaml:"detector,omitempty"`
		Health    *yamlHealth   `yaml:"health,omitempty"`
		Control   yamlControl   `yaml:"control"`
		Shutdown  yamlShutdown  `yaml:"shutdown"`
		StateFile string        `yaml:"state_file,omitempty"`
		Datapath  *yamlDatapath `yaml:"datapath,omitempty"`
		Cluster   *yamlCluster  `yaml:"cluster,omitempty"`
	}
	yamlCluster struct {
		Name              string              `yaml:"name"`
		ID                uint16              `yaml:"id"`
		Link              string              `yaml:"link,omitempty"`
		HeartbeatInterval string              `yaml:"heartbeat_interval,omitempty"`
		DeadAfter         string              `yaml:"dead_after,omitempty"`
		Members           []yamlClusterMember `yaml:"members"`
		BGP               yamlBGP             `yaml:"bgp"`
	}
	yamlClusterMember struct {
		ID            uint16   `yaml:"id"`
		MAC           string   `yaml:"mac"`
		Address       string   `yaml:"address"`
		SNATAddresses []string `yaml:"snat_addresses,flow"`
	}
	yamlBGP struct {
		ASN          uint32        `yaml:"asn"`
		RouterID     string        `yaml:"router_id,omitempty"`
		LocalAddress string        `yaml:"local_address,omitempty"`
		ListenPort   uint16        `yaml:"listen_port,omitempty"`
		Peers        []yamlBGPPeer `yaml:"peers"`
	}
	yamlBGPPeer struct {
		Address  string   `yaml:"address"`
		ASN      uint32   `yaml:"asn"`
		HoldTime string   `yaml:"hold_time,omitempty"`
		Passive  bool     `yaml:"passive,omitempty"`
		BFD      *yamlBFD `yaml:"bfd,omitempty"`
	}
	yamlBFD struct {
		MinTx      string `yaml:"min_tx,omitempty"`
		MinRx      string `yaml:"min_rx,omitempty"`
		Multiplier int    `yaml:"multiplier,omitempty"`
	}
	yamlDatapath struct {
		Workers    int    `yaml:"workers,omitempty"`
		IO         string `yaml:"io,omitempty"`
		RingFrames int    `yaml:"ring_frames,omitempty"`
		KernelDrop *bool  `yaml:"kernel_drop,omitempty"`
	}
	yamlLink struct {
		Name      string   `yaml:"name,omitempty"`
		Interface string   `yaml:"interface"`
		Subnets   []string `yaml:"subnets,flow"`
		Gateway   addrPair `yaml:"gateway,omitempty"`
	}
	yamlService struct {
		Name           string           `yaml:"name"`
		VIP            string           `yaml:"vip"`
		Port           uint16           `yaml:"port"`
		Protocol       string           `yaml:"protocol,omitempty"`
		Scheduler      string           `yaml:"scheduler,omitempty"`
		Timestamps     string           `yaml:"timestamps,omitempty"`
		TimeWait       string           `yaml:"time_wait,omitempty"`
		ISNTranslation *bool            `yaml:"isn_translation,omitempty"`
		Exhaustion     string           `yaml:"exhaustion,omitempty"`
		ExhaustionWait string           `yaml:"exhaustion_wait,omitempty"`
		Backends       []yamlBackend    `yaml:"backends"`
		HalfOpenMax    int              `yaml:"half_open_max,omitempty"`
		SYNProxy       string           `yaml:"syn_proxy,omitempty"`
		SYNProxyThresh int              `yaml:"syn_proxy_threshold,omitempty"`
		HealthCheck    *yamlHealthCheck `yaml:"health_check,omitempty"`
	}
	yamlBackend struct {
		Address string `yaml:"address"`
		Weight  int    `yaml:"weight"`
		Drain   bool   `yaml:"drain,omitempty"`
	}
	yamlHealthCheck struct {
		Type         string `yaml:"type"`
		Interval     string `yaml:"interval,omitempty"`
		Timeout      string `yaml:"timeout,omitempty"`
		Rise         int    `yaml:"rise,omitempty"`
		Fall         int    `yaml:"fall,omitempty"`
		Path         string `yaml:"path,omitempty"`
		ExpectStatus int    `yaml:"expect_status,omitempty"`
	}
	yamlSNAT struct {
		Addresses []string `yaml:"addresses,flow"`
		PortRange string   `yaml:"port_range,omitempty"`
	}
	yamlFlows struct {
		Max         int          `yaml:"max,omitempty"`
		HalfOpenMax int          `yaml:"half_open_max,omitempty"`
		Timeouts    yamlTimeouts `yaml:"timeouts"`
	}
	yamlTimeouts struct {
		Syn         string `yaml:"syn,omitempty"`
		Established string `yaml:"established,omitempty"`
		Fin         string `yaml:"fin,omitempty"`
		TimeWait    string `yaml:"time_wait,omitempty"`
		Closed      string `yaml:"closed,omitempty"`
	}
	yamlMetrics struct {
		Listen string `yaml:"listen"`
	}
	yamlLog struct {
		Level  string `yaml:"level,omitempty"`
		Format string `yaml:"format,omitempty"`
	}
	yamlDetector struct {
		PcapDir      string `yaml:"pcap_dir,omitempty"`
		PcapMaxFiles int    `yaml:"pcap_max_files,omitempty"`
		Repair       *bool  `yaml:"repair,omitempty"`
	}
	yamlHealth struct {
		Source  addrPair     `yaml:"source,omitempty"`
		Passive *yamlPassive `yaml:"passive,omitempty"`
	}
	yamlPassive struct {
		Enabled    *bool  `yaml:"enabled,omitempty"`
		SYNTimeout string `yaml:"syn_timeout,omitempty"`
		Retries    *int   `yaml:"retries,omitempty"`
		Fall       int    `yaml:"fall,omitempty"`
		DownFor    string `yaml:"down_for,omitempty"`
	}
	yamlControl struct {
		Socket string `yaml:"socket"`
	}
	yamlShutdown struct {
		Timeout string `yaml:"timeout"`
	}
)

// Marshal encodes c as YAML that Parse accepts and decodes back to an equal
// Config. Zero-valued fields that have a default are left out, so Parse fills
// in the default. Marshal parses its own output before returning it and
// fails with the Errors if c is not valid. The booleans isn_translation and
// detector.repair are written only when false, and backends' drain only when
// true: their non-default values. Metrics.Listen and Control.Socket are always
// written, because "" (disabled) differs from the absent key (the default),
// and so is Shutdown.Timeout, as "0s" when 0 (stop at once).
func (c *Config) Marshal() ([]byte, error) {
	y := yamlConfig{
		SNAT: yamlSNAT{Addresses: make([]string, 0, len(c.SNAT.Addresses))},
		Flows: yamlFlows{
			Max:         c.Flows.Max,
			HalfOpenMax: c.Flows.HalfOpenMax,
			Timeouts: yamlTimeouts{
				Syn:         formatDuration(c.Flows.Timeouts.Syn),
				Established: formatDuration(c.Flows.Timeouts.Established),
				Fin:         formatDuration(c.Flows.Timeouts.Fin),
				TimeWait:    formatDuration(c.Flows.Timeouts.TimeWait),
				Closed:      formatDuration(c.Flows.Timeouts.Closed),
			},
		},
		Metrics:   yamlMetrics{Listen: c.Metrics.Listen},
		Log:       yamlLog{Level: c.Log.Level, Format: c.Log.Format},
		Control:   yamlControl{Socket: c.Control.Socket},
		Shutdown:  yamlShutdown{Timeout: formatDuration(c.Shutdown.Timeout)},
		StateFile: c.StateFile,
	}
	if y.Shutdown.Timeout == "" {
		y.Shutdown.Timeout = "0s"
	}
	if src := newAddrPair(c.Health.Source, c.Health.Source6); src != nil {
		y.Health = &yamlHealth{Source: src}
	}
	if ph := c.Health.Passive; ph != (PassiveHealth{}) {
		if y.Health == nil {
			y.Health = &yamlHealth{}
		}
		yp := &yamlPassive{SYNTimeout: formatDuration(ph.SYNTimeout), Fall: ph.Fall, DownFor: formatDuration(ph.DownFor)}
		if ph.Off {
			yp.Enabled = new(false)
		}
		if !ph.Off || ph.Retries != 0 {
			yp.Retries = new(ph.Retries)
		}
		y.Health.Passive = yp
	}
	for _, l := range c.Links {
		yl := yamlLink{Interface: l.Interface, Subnets: make([]string, 0, len(l.Subnets))}
		if l.Name != l.Interface {
			yl.Name = l.Name
		}
		for _, s := range l.Subnets {
			yl.Subnets = append(yl.Subnets, s.String())
		}
		yl.Gateway = newAddrPair(l.Gateway, l.Gateway6)
		y.Links = append(y.Links, yl)
	}
	for _, s := range c.Services {
		ys := yamlService{
			Name:        s.Name,
			VIP:         addrString(s.VIP),
			Port:        s.Port,
			Protocol:    s.Protocol,
			Scheduler:   s.Scheduler,
			Timestamps:  string(s.Timestamps),
			TimeWait:    formatDuration(s.TimeWait),
			Exhaustion:  string(s.Exhaustion),
			HalfOpenMax: s.HalfOpenMax, SYNProxy: string(s.SYNProxy), SYNProxyThresh: s.SYNProxyThreshold,
		}
		ys.ExhaustionWait = formatDuration(s.ExhaustionWait)
		if s.NoISNTranslation {
			ys.ISNTranslation = new(false)
		}
		for _, b := range s.Backends {
			ys.Backends = append(ys.Backends, yamlBackend{Address: b.Address.String(), Weight: b.Weight, Drain: b.Drain})
		}
		if hc := s.HealthCheck; hc != nil {
			ys.HealthCheck = &yamlHealthCheck{
				Type:         hc.Type,
				Interval:     formatDuration(hc.Interval),
				Timeout:      formatDuration(hc.Timeout),
				Rise:         hc.Rise,
				Fall:         hc.Fall,
				Path:         hc.Path,
				ExpectStatus: hc.ExpectStatus,
			}
		}
		y.Services = append(y.Services, ys)
	}
	for _, a := range c.SNAT.Addresses {
		y.SNAT.Addresses = append(y.SNAT.Addresses, addrString(a))
	}
	if c.SNAT.PortMin != 0 || c.SNAT.PortMax != 0 {
		y.SNAT.PortRange = fmt.Sprintf("%d-%d", c.SNAT.PortMin, c.SNAT.PortMax)
	}
	if dp := c.Datapath; dp != (Datapath{}) {
		y.Datapath = &yamlDatapath{Workers: dp.Workers, IO: dp.IO, RingFrames: dp.RingFrames}
		if dp.KernelDropOff {
			off := false
			y.Datapath.KernelDrop = &off
		}
	}
	if cl := c.Cluster; cl != nil {
		y.Cluster = marshalCluster(cl)
	}
	if det := c.Detector; det != (Detector{}) {
		y.Detector = &yamlDetector{PcapDir: det.PcapDir, PcapMaxFiles: det.PcapMaxFiles}
		if det.NoRepair {
			y.Detector.Repair = new(false)
		}
	}

	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(&y); err != nil {
		return nil, fmt.Errorf("config: marshal: %w", err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("config: marshal: %w", err)
	}
	if _, err := Parse(buf.Bytes(), c.Source); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func marshalCluster(cl *Cluster) *yamlCluster {
	y := &yamlCluster{
		Name: cl.Name, ID: cl.ID, Link: cl.Link,
		HeartbeatInterval: formatDuration(cl.HeartbeatInterval), DeadAfter: formatDuration(cl.DeadAfter),
		BGP: yamlBGP{ASN: cl.BGP.ASN, RouterID: addrString(cl.BGP.RouterID), LocalAddress: addrString(cl.BGP.LocalAddress), ListenPort: cl.BGP.ListenPort},
	}
	for _, m := range cl.Members {
		ym := yamlClusterMember{ID: m.ID, Address: addrString(m.Address), SNATAddresses: []string{}}
		if len(m.MAC) > 0 {
			ym.MAC = m.MAC.String()
		}
		for _, a := range m.SNATAddresses {
			ym.SNATAddresses = append(ym.SNATAddresses, addrString(a))
		}
		y.Members = append(y.Members, ym)
	}
	for _, p := range cl.BGP.Peers {
		yp := yamlBGPPeer{Address: addrString(p.Address), ASN: p.ASN, HoldTime: formatDuration(p.HoldTime), Passive: p.Passive}
		if b := p.BFD; b != nil {
			yp.BFD = &yamlBFD{MinTx: formatDuration(b.MinTx), MinRx: formatDuration(b.MinRx), Multiplier: b.Multiplier}
		}
		y.BGP.Peers = append(y.BGP.Peers, yp)
	}
	return y
}

// addrPair is the YAML form of a key with one address per family
// (links[].gateway, health.source): a scalar when one family is set, a
// flow list [IPv4, IPv6] when both are.
type addrPair []string

// newAddrPair returns the addrPair of v4 and v6, nil if neither is set.
func newAddrPair(v4, v6 netip.Addr) addrPair {
	var p addrPair
	for _, a := range []netip.Addr{v4, v6} {
		if a.IsValid() {
			p = append(p, a.String())
		}
	}
	return p
}

// MarshalYAML writes p as a scalar or a flow list.
func (p addrPair) MarshalYAML() (any, error) {
	if len(p) == 1 {
		return p[0], nil
	}
	var n yaml.Node
	if err := n.Encode([]string(p)); err != nil {
		return nil, err
	}
	n.Style = yaml.FlowStyle
	return &n, nil
}

// addrString formats a, or "" for the zero Addr (so Parse reports it as
// missing rather than as "invalid IP").
func addrString(a netip.Addr) string {
	if !a.IsValid() {
		return ""
	}
	return a.String()
}

// formatDuration formats d as time.Duration.String does, without zero
// trailing units ("1h" rather than "1h0m0s"), or "" for 0.
func formatDuration(d time.Duration) string {
	if d == 0 {
		return ""
	}
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}
