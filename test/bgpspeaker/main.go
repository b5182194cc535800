// Command bgpspeaker runs one lb/cluster/bgp Speaker for the cluster lab
// tests: started inside an instance's namespace (ip netns exec), so that
// GoBGP's sockets are that namespace's, and driven line by line on stdin:
//
//	announce PREFIX NEXTHOP  -> "ok" or "err MESSAGE"
//	withdraw PREFIX          -> "ok" or "err MESSAGE"
//	peers                    -> one JSON line: []bgp.PeerState
//	stop                     -> Stop, "ok", exit 0 (also on end of input)
//
// The configuration is one JSON object (bgp.Config) in the -config flag.
// A configuration NewSpeaker refuses exits 2 with the error on stderr.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"strings"
	"time"

	"tslb/lb/cluster/bgp"
)

func main() {
	cfgJSON := flag.String("config", "", "bgp.Config as JSON")
	flag.Parse()
	var cfg bgp.Config
	if err := json.Unmarshal([]byte(*cfgJSON), &cfg); err != nil {
		fmt.Fprintln(os.Stderr, "bgpspeaker: config:", err)
		os.Exit(2)
	}
	cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, nil))
	s, err := bgp.NewSpeaker(cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bgpspeaker:", err)
		os.Exit(2)
	}
	ctx := context.Background()
	if err := s.Start(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "bgpspeaker:", err)
		os.Exit(1)
	}
	reply := func(err error) {
		if err != nil {
			fmt.Println("err", err)
		} else {
			fmt.Println("ok")
		}
	}
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 {
			continue
		}
		switch {
		case f[0] == "announce" && len(f) == 3:
			p, err1 := netip.ParsePrefix(f[1])
			nh, err2 := netip.ParseAddr(f[2])
			if err1 != nil || err2 != nil {
				reply(fmt.Errorf("bad arguments %q %q", f[1], f[2]))
				continue
			}
			reply(s.Announce(p, nh))
		case f[0] == "withdraw" && len(f) == 2:
			p, err := netip.ParsePrefix(f[1])
			if err != nil {
				reply(err)
				continue
			}
			reply(s.Withdraw(p))
		case f[0] == "peers":
			c, cancel := context.WithTimeout(ctx, 5*time.Second)
			ps, err := s.Peers(c)
			cancel()
			if err != nil {
				reply(err)
				continue
			}
			b, _ := json.Marshal(ps)
			fmt.Println(string(b))
		case f[0] == "stop":
			reply(s.Stop())
			os.Exit(0)
		default:
			reply(fmt.Errorf("unknown command %q", sc.Text()))
		}
	}
	s.Stop()
}
