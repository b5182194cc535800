package main

import (
	"flag"
	"fmt"
	"os"

	"tslb/test/harness"
	"tslb/test/lab"
)

func cmdLab(args []string) int {
	if len(args) < 1 || (args[0] != "up" && args[0] != "down") {
		fmt.Fprintln(os.Stderr, "usage: tslb lab up|down [-prefix P] [-clients N] [-backends M] [-6] [-config FILE]")
		return 2
	}
	fs := flag.NewFlagSet("lab", flag.ContinueOnError)
	prefix := fs.String("prefix", "tslblab", "namespace name prefix")
	clients := fs.Int("clients", 1, "client namespaces")
	backends := fs.Int("backends", 3, "backend namespaces")
	ipv6 := fs.Bool("6", false, "dual-stack lab: the service in the written configuration is IPv6")
	cfgPath := fs.String("config", "", "where to write a tslb configuration for this lab (default: /tmp/<prefix>.yaml)")
	if err := fs.Parse(args[1:]); err != nil {
		return 2
	}
	if args[0] == "down" {
		if err := lab.Destroy(*prefix); err != nil {
			fmt.Fprintln(os.Stderr, "tslb lab down:", err)
			return 1
		}
		fmt.Println("removed namespaces", *prefix+"-*")
		return 0
	}
	l, err := lab.New(lab.Config{Prefix: *prefix, Clients: *clients, Backends: *backends, IPv6: *ipv6})
	if err != nil {
		fmt.Fprintln(os.Stderr, "tslb lab up:", err)
		return 1
	}
	if *cfgPath == "" {
		*cfgPath = "/tmp/" + l.Prefix + ".yaml"
	}
	cfg := harness.Config(l, harness.Options{IPv6: *ipv6})
	out, err := cfg.Marshal()
	if err == nil {
		err = os.WriteFile(*cfgPath, out, 0o644)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "tslb lab up: configuration:", err)
		return 1
	}
	fmt.Printf("lab %s up: namespaces", l.Prefix)
	for _, n := range append(append([]*lab.NS{l.LB}, l.Clients...), l.Backends...) {
		fmt.Printf(" %s", n.Name)
	}
	fmt.Printf("\nVIP %s on link %s, SNAT %s on link %s (both owned by tslb: no kernel address in %s)\n",
		l.VIP, l.LBClientIf, l.SNAT, l.LBBackendIf, l.LB.Name)
	fmt.Printf("start backends yourself, e.g.: ip netns exec %s python3 -m http.server 8080 --bind %s\n", l.Backends[0].Name, l.Backends[0].Addr)
	fmt.Printf("then: ip netns exec %s tslb run -c %s   (written for this lab: VIP port 80, backends port 8080)\n", l.LB.Name, *cfgPath)
	fmt.Printf("remove with: tslb lab down -prefix %s\n", l.Prefix)
	return 0
}
