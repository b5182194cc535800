// Command tslb is a userspace L4 TCP load balancer that keeps backends'
// TIME_WAIT in mind. Subcommands: run, check-config, reload, drain,
// status, demo, lab, bench, version.
package main

import (
	"fmt"
	"os"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

const usage = `usage: tslb <command> [flags]

commands:
  run -c FILE [-log-format text|json]
                       run the balancer with the configuration in FILE
  check-config FILE... validate each FILE, printing every error with its key and
                       line; several files are one cluster's: checked together too
  reload [-socket S]   make a running tslb re-read its configuration file
  drain [-socket S]    stop a running tslb gracefully (a cluster instance withdraws its routes first)
  status [-socket S] [-json]
                       print a running tslb's services, backends, SNAT pressure, links and drops
                       as tables (-json: the status document, as /status.json); the same is
                       the status page at / of metrics.listen
  demo                 build a network-namespace lab, balance HTTP through it, print a table
  lab up|down          build or remove a lab topology to play with by hand
  bench [flags]        run one workload through nftables, HAProxy and tslb side by side
  version              print the version
`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	cmd, args := os.Args[1], os.Args[2:]
	var code int
	switch cmd {
	case "run":
		code = cmdRun(args)
	case "check-config":
		code = cmdCheckConfig(args)
	case "demo":
		code = cmdDemo(args)
	case "reload":
		code = cmdReload(args)
	case "drain":
		code = cmdDrain(args)
	case "status":
		code = cmdStatus(args)
	case "lab":
		code = cmdLab(args)
	case "bench":
		code = cmdBench(args)
	case "version", "--version", "-v":
		fmt.Println("tslb", version)
	case "help", "-h", "--help":
		fmt.Print(usage)
	default:
		fmt.Fprintf(os.Stderr, "tslb: unknown command %q\n\n%s", cmd, usage)
		code = 2
	}
	os.Exit(code)
}
