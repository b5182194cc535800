package statuspage

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"tslb/lb"
)

// WriteText writes st as aligned text tables (what `tslb status`
// prints): a summary, services with their backends, SNAT pairs, links,
// drops by reason, collisions and the cluster. Strings from the
// configuration are printed with control characters replaced, so a name
// cannot move the terminal's cursor.
func WriteText(w io.Writer, st *lb.Status) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	p := func(format string, a ...any) { fmt.Fprintf(tw, format, a...) }
	p("tslb status at %s, up %s, %d workers, flows %d/%d (half-open %d)%s\n", ts(st.Time), since(st.Started, st.Time),
		st.Workers, st.Flows.Entries, st.Flows.Capacity, st.Flows.HalfOpen, map[bool]string{true: ", STOPPING"}[st.Stopping])
	c := st.Config
	reload := "none"
	if !c.LastReload.IsZero() {
		reload = ts(c.LastReload) + " ok"
		if !c.LastReloadOK {
			reload = ts(c.LastReload) + " FAILED: " + clean(c.LastReloadError)
		}
	}
	p("config %s version %d, last reload %s\n", clean(c.Source), c.Version, reload)

	for _, sv := range st.Services {
		proxy := sv.SYNProxy
		if sv.SYNProxyActive {
			proxy += " (active)"
		}
		p("\nservice %s  %s  timestamps %s  scheduler %s  syn_proxy %s  flows %g active, %g created, %d half-open\n",
			clean(sv.Name), joinHostPort(sv.VIP, sv.Port), sv.Timestamps, clean(sv.Scheduler), proxy, sv.FlowsActive, sv.FlowsCreated, sv.HalfOpen)
		p("BACKEND\tHEALTH\tLAST CHECK\tTRANSITIONS\tWEIGHT\tDRAIN\tFLOWS\tCREATED\tCOLLISIONS\tREPAIRS\n")
		for _, be := range sv.Backends {
			health := "down"
			if be.Up {
				health = "up"
			}
			if be.PassiveDown {
				health += " (passive down)"
			}
			check := "-"
			if be.HealthCheck != "" {
				check = be.HealthCheck + " not yet"
				if !be.LastCheck.IsZero() {
					check = be.HealthCheck + " " + since(be.LastCheck, st.Time) + " ago"
					if !be.LastCheckOK {
						check += ": " + clean(be.LastCheckError)
					}
				}
			}
			drain := "-"
			if be.Drain {
				drain = "drain"
			}
			p("%s\t%s\t%s\t%d\t%d\t%s\t%d\t%g\t%g\t%g\n", be.Address, health, check, be.Transitions, be.Weight, drain,
				be.FlowsActive, be.FlowsCreated, be.Collisions, be.Repairs)
		}
	}
	if len(st.Services) == 0 {
		p("\nno services\n")
	}

	p("\nSNAT\tBACKEND\tIN USE\tTIME_WAIT\tFREE\tTW ENTRIES/S\tEXHAUSTED IN\tFRESH\tSAFE REUSE ISN\tSAFE REUSE TS\tFORCED\n")
	for _, s := range st.SNAT {
		ex := "never"
		if s.SecondsToExhaustion != nil {
			ex = fmtDuration(*s.SecondsToExhaustion)
		}
		p("%s\t%s\t%d\t%d\t%d\t%s\t%s\t%d\t%d\t%d\t%d\n", s.SNAT, s.Backend, s.InUse, s.TimeWait, s.Free, fmtRate(s.EntryRate), ex,
			s.Allocations["fresh"], s.Allocations["early_reuse_isn"], s.Allocations["early_reuse_ts"], s.Allocations["forced"])
	}

	p("\nLINK\tRX PACKETS\tTX PACKETS\tRX BYTES\tTX BYTES\tTX ERRORS\tKERNEL PACKETS\tKERNEL DROPS\tNEIGHBOURS\n")
	for _, l := range st.Links {
		p("%s\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\n", clean(l.Name), l.RxPackets, l.TxPackets, l.RxBytes, l.TxBytes, l.TxErrors, l.KernelPackets, l.KernelDrops, l.Neighbours)
	}

	p("\nDROP REASON\tFRAMES\n")
	reasons := make([]string, 0, len(st.Drops))
	for r := range st.Drops {
		reasons = append(reasons, r)
	}
	sort.Strings(reasons)
	for _, r := range reasons {
		p("%s\t%d\n", r, st.Drops[r])
	}
	if len(reasons) == 0 {
		p("(none)\t\n")
	}

	if len(st.Collisions) > 0 {
		p("\nCOLLISION AT\tBACKEND\tTUPLE\tCLIENT\tSIGNATURE\tREPAIRED\tPCAP\n")
		for _, e := range st.Collisions {
			p("%s\t%s\t%s\t%s\t%s\t%v\t%s\n", ts(e.Time), e.Backend, e.Tuple, e.Client, e.Signature, e.Repaired, clean(e.Pcap))
		}
	}
	if cl := st.Cluster; cl != nil {
		p("\ncluster %s self %d ready %v draining %v view %v previous %v flows lost %d\n", clean(cl.Name), cl.Self, cl.Ready, cl.Draining, cl.Current, cl.Previous, cl.FlowsLost)
		p("MEMBER\tADDRESS\tLIVE\tAGREES\tDRAINING\tRESTARTS\tDEATHS\tFORWARDED\tRECEIVED\n")
		for _, m := range cl.Members {
			id := fmt.Sprint(m.ID)
			if m.Self {
				id += " (self)"
			}
			p("%s\t%s\t%v\t%v\t%v\t%d\t%d\t%d\t%d\n", id, m.Address, m.Live, m.Agrees, m.Draining, m.Restarts, m.Deaths, m.Forwarded, m.Received)
		}
		for _, peer := range cl.BGP.Peers {
			p("BGP peer %s AS%d %s, %d routes received, %d advertised %s\n", peer.Address, peer.ASN, peer.State, peer.Received, peer.Advertised, clean(peer.LastError))
		}
	}
	return tw.Flush()
}

func ts(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format("2006-01-02 15:04:05Z")
}

func joinHostPort(host string, port uint16) string {
	if strings.Contains(host, ":") {
		return fmt.Sprintf("[%s]:%d", host, port)
	}
	return fmt.Sprintf("%s:%d", host, port)
}

// clean replaces control characters and tabs (which would break the
// table's columns) with '?'.
func clean(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return '?'
		}
		return r
	}, s)
}
