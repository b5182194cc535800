package lb

import (
	"os"
	"runtime"
	"testing"
)

func BenchmarkZZShareSnap(b *testing.B) {
	var ws []*worker
	var qs []map[string][]*benchQueue
	var bals []*Balancer
	for range runtime.GOMAXPROCS(0) {
		bal, queues := benchBalancer(b, 1)
		defer bal.closeLinks()
		ws = append(ws, bal.workers[0])
		qs = append(qs, queues)
		bals = append(bals, bal)
	}
	switch os.Getenv("ZZ") {
	case "snap":
		for _, bal := range bals[1:] {
			bal.sh.snap.Store(bals[0].sh.snap.Load())
		}
	case "sh":
		for _, w := range ws[1:] {
			w.sh = bals[0].sh
		}
	case "nics":
		for _, bal := range bals[1:] {
			for i := range bal.sh.nics {
				bal.sh.nics[i].neigh = bals[0].sh.nics[i].neigh
			}
		}
	}
	benchWorkers(b, ws, qs)
}
