package lb

import (
	"log/slog"
	"net"
	"net/netip"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"tslb/config"
	"tslb/lb/link"
	"tslb/nat"
)

// BenchmarkWorkerPath measures the whole per-packet path of the datapath
// workers with in-memory links: Recv of a batch (a copy of each frame from
// a template, standing in for the kernel's write into a ring slot),
// decode, ownership check, flow lookup, tracker, seq/TS translation
// (rewrite mode), NAT rewrite with checksum updates, neighbour lookup,
// Send and Flush. One op is one batch of 64 frames (32 client→backend and
// 32 backend→client data segments with Linux's timestamp option and 64
// bytes of payload, on 32 established flows per worker); ns/pkt is what
// counts. Workers = GOMAXPROCS, one goroutine each, each on its own flows:
// run with -cpu 1,2 for the scaling.
func BenchmarkWorkerPath(b *testing.B) {
	nw := runtime.GOMAXPROCS(0)
	bal, queues := benchBalancer(b, nw)
	defer bal.closeLinks()
	benchWorkers(b, bal.workers, []map[string][]*benchQueue{queues})
}

// BenchmarkWorkerPathSeparate is BenchmarkWorkerPath with one Balancer of
// one worker per GOMAXPROCS: nothing shared between the goroutines but the
// process. Its scaling against BenchmarkWorkerPath's shows the cost of
// what the workers of one Balancer share.
func BenchmarkWorkerPathSeparate(b *testing.B) {
	var ws []*worker
	var qs []map[string][]*benchQueue
	for range runtime.GOMAXPROCS(0) {
		bal, queues := benchBalancer(b, 1)
		defer bal.closeLinks()
		ws = append(ws, bal.workers[0])
		qs = append(qs, queues)
	}
	benchWorkers(b, ws, qs)
}

// benchBalancer is a Balancer of nw workers on bench queues, each worker
// with 32 established flows whose data segments its queues replay.
func benchBalancer(b *testing.B, nw int) (*Balancer, map[string][]*benchQueue) {
	cfg := testConfig(func(c *config.Config) {
		c.Datapath.Workers = nw
		c.SNAT.PortMax = 29999
		c.Services[0].Timestamps = config.TSRewrite
	})
	cfg.ApplyDefaults()
	if errs := cfg.Validate(); len(errs) > 0 {
		b.Fatal(errs)
	}
	queues := map[string][]*benchQueue{}
	open := func(name string, lc link.Config) ([]link.Queue, link.Info, error) {
		var qs []link.Queue
		for range lc.Queues {
			q := &benchQueue{}
			queues[name] = append(queues[name], q)
			qs = append(qs, q)
		}
		mac := c0MAC
		if name == "b0" {
			mac = b0MAC
		}
		return qs, link.Info{Name: name, MAC: [6]byte(mac), MTU: 1500}, nil
	}
	now := time.Now().UnixNano()
	bal, err := New(cfg, Options{Open: open, Seed: 1, Logger: slog.New(slog.DiscardHandler), Clock: func() int64 { return now }})
	if err != nil {
		b.Fatal(err)
	}
	for _, l := range bal.sh.nics {
		l.neigh.learn(nat.AddrFrom(clientAddr), clientMAC, now)
		l.neigh.learn(nat.AddrFrom(be1Addr), be1MAC, now)
		l.neigh.learn(nat.AddrFrom(be2Addr), be2MAC, now)
	}
	payload := make([]byte, 64)
	for wi, w := range bal.workers {
		cq, bq := queues["c0"][wi], queues["b0"][wi]
		var ctmpl, btmpl [][]byte
		for cport := uint16(30000); len(ctmpl) < flowsPer; cport++ {
			if link.FlowOwner([4]byte(a4(clientAddr)), cport, 80, nw) != wi {
				continue
			}
			// Handshake through the real datapath of this worker.
			s := clientSeg(cport, nat.TCPFlagSYN, 1000, 0)
			s.opts = synOptions(5000, 0)
			syn := w.benchHandle(b, 0, tcpFrame(b, s), bq)
			fwd := decode(b, syn)
			tcp := fwd.tcp
			be := netip4Port(fwd.ip.DstIP, uint16(tcp.DstPort))
			sport := uint16(tcp.SrcPort)
			tsval, _, _ := tsOf(tcp)
			sa := backendSeg(b, be, sport, nat.TCPFlagSYN|nat.TCPFlagACK, 9000, tcp.Seq+1)
			sa.opts = synOptions(77000, tsval)
			w.benchHandle(b, 1, tcpFrame(b, sa), cq)
			ack := clientSeg(cport, nat.TCPFlagACK, 1001, 9001)
			ack.opts = tsOpts(5001, 77000)
			w.benchHandle(b, 0, tcpFrame(b, ack), bq)
			// The replayed data segments.
			cd := clientSeg(cport, nat.TCPFlagACK|nat.TCPFlagPSH, 1001, 9001)
			cd.opts, cd.payload = tsOpts(5002, 77000), payload
			ctmpl = append(ctmpl, tcpFrame(b, cd))
			bd := backendSeg(b, be, sport, nat.TCPFlagACK|nat.TCPFlagPSH, 9001, tcp.Seq+1)
			bd.opts, bd.payload = tsOpts(77001, tsval+1), payload
			btmpl = append(btmpl, tcpFrame(b, bd))
		}
		cq.replay(ctmpl)
		bq.replay(btmpl)
	}
	return bal, queues
}

const flowsPer = 32

func benchWorkers(b *testing.B, workers []*worker, queueSets []map[string][]*benchQueue) {
	nw := len(workers)
	var next atomic.Int64
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		w := workers[int(next.Add(1)-1)%nw]
		for pb.Next() {
			if _, err := w.once(); err != nil {
				b.Error(err)
				return
			}
		}
	})
	el := time.Since(start)
	b.StopTimer()
	pkts := float64(b.N) * 2 * flowsPer
	b.ReportMetric(float64(el.Nanoseconds())/pkts, "ns/pkt")
	b.ReportMetric(pkts/el.Seconds()/1e6, "Mpps")
	var sent, drops uint64
	for _, queues := range queueSets {
		for _, qs := range queues {
			for _, q := range qs {
				sent += q.sent
			}
		}
	}
	for _, w := range workers {
		for i := range w.c.drops {
			drops += w.c.drops[i].Load()
		}
		for i := range w.c.decode {
			drops += w.c.decode[i].Load()
		}
		if h := w.c.handoffs.Load(); h != 0 {
			b.Errorf("worker %d handed %d frames over", w.id, h)
		}
	}
	if drops != 0 || sent < uint64(pkts) {
		b.Fatalf("%d drops, %d of %v frames sent: the benchmark is not measuring forwarding", drops, sent, pkts)
	}
}

// benchHandle runs one frame through worker w as if received on link nic
// and returns the single frame it sent on out.
func (w *worker) benchHandle(t testing.TB, nic int, frame []byte, out *benchQueue) []byte {
	t.Helper()
	w.now = w.sh.clock()
	w.s = w.sh.snap.Load()
	w.in = w.sh.nics[nic]
	out.keep = true
	out.last = nil
	buf := make([]byte, len(frame), len(frame)+64)
	copy(buf, frame)
	w.handle(buf)
	w.flush()
	out.keep = false
	if out.last == nil {
		t.Fatalf("worker %d sent nothing for a setup frame", w.id)
	}
	return out.last
}

// benchQueue is a link.Queue that hands out the same batch of frames on
// every Recv (copied from the templates into its buffers) and counts what
// is sent.
type benchQueue struct {
	_    [64]byte // queues of different workers are allocated side by side: no false sharing of sent
	tmpl [][]byte
	bufs [][]byte
	sent uint64
	keep bool   // setup: remember the last frame sent
	last []byte // a copy of it
	_    [64]byte
}

func (q *benchQueue) replay(tmpl [][]byte) {
	q.tmpl = tmpl
	q.bufs = make([][]byte, len(tmpl))
	for i, t := range tmpl {
		q.bufs[i] = make([]byte, len(t), len(t)+64)
	}
}

func (q *benchQueue) Fd() int { return -1 }
func (q *benchQueue) Recv(frames [][]byte) (int, error) {
	n := min(len(frames), len(q.tmpl))
	for i := 0; i < n; i++ {
		b := q.bufs[i][:len(q.tmpl[i])]
		copy(b, q.tmpl[i])
		frames[i] = b
	}
	return n, nil
}
func (q *benchQueue) Release() {}
func (q *benchQueue) Send(f []byte) error {
	q.sent++
	if q.keep {
		q.last = append([]byte(nil), f...)
	}
	return nil
}
func (q *benchQueue) Flush() error      { return nil }
func (q *benchQueue) Stats() link.Stats { return link.Stats{} }
func (q *benchQueue) Close() error      { return nil }

func netip4Port(ip net.IP, port uint16) netip.AddrPort {
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte(ip.To4())), port)
}
