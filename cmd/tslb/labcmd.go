package main

import (
	"flag"
	"fmt"
	"os"

	"tslb/test/lab"
)

func cmdLab(args []string) int {
	if len(args) < 1 || (args[0] != "up" && args[0] != "down") {
		fmt.Fprintln(os.Stderr, "usage: tslb lab up|down [-prefix P] [-clients N] [-backends M]")
		return 2
	}
	fs := flag.NewFlagSet("lab", flag.ContinueOnError)
	prefix := fs.String("prefix", "tslblab", "namespace name prefix")
	clients := fs.Int("clients", 1, "client namespaces")
	backends := fs.Int("backends", 3, "backend namespaces")
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
	l, err := lab.New(lab.Config{Prefix: *prefix, Clients: *clients, Backends: *backends})
	if err != nil {
		fmt.Fprintln(os.Stderr, "tslb lab up:", err)
		return 1
	}
	fmt.Printf("lab %s up: namespaces", l.Prefix)
	for _, n := range append(append([]*lab.NS{l.LB}, l.Clients...), l.Backends...) {
		fmt.Printf(" %s", n.Name)
	}
	fmt.Printf("\nVIP %s on link %s, SNAT %s on link %s (both owned by tslb: no kernel address in %s)\n",
		l.VIP, l.LBClientIf, l.SNAT, l.LBBackendIf, l.LB.Name)
	fmt.Printf("start backends yourself, e.g.: ip netns exec %s python3 -m http.server 8080 --bind %s\n", l.Backends[0].Name, l.Backends[0].Addr)
	fmt.Printf("then: ip netns exec %s tslb run -c config/example.yaml\n", l.LB.Name)
	fmt.Printf("remove with: tslb lab down -prefix %s\n", l.Prefix)
	return 0
}
