package link

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Lab benchmarks: they run only with -bench (each builds its own pair of
// namespaces), and every load loop is bounded by b.N and a deadline.
// The figures in the package doc come from, as root:
//
//	go test -c -o /tmp/lb.test ./lb/link
//	/tmp/lb.test -test.run '^$' -test.bench 'BenchmarkTX$|BenchmarkRXDrain$|BenchmarkRX$' \
//		-test.benchtime 1000000x -test.count 5
//	/tmp/lb.test -test.run '^$' -test.bench 'BenchmarkPingPong$' -test.benchtime 2000x -test.count 5
//
// (with V3 a ping-pong round trip waits for the block retire timer, 8 ms
// by default: keep -benchtime small there).
//
// Figures are frames per second and CPU time per frame: of the thread
// under test (getrusage RUSAGE_THREAD; this kernel has no
// CONFIG_IRQ_TIME_ACCOUNTING, so a softirq that runs in a thread's system
// call is charged to it), and the machine's softirq time (/proc/stat, in
// 10 ms ticks), where the kernel's per-frame receive work on a veth runs.
// Sender and receiver threads are bound to different CPUs.

// benchFrame is a minimum-size Ethernet frame (60 bytes, 64 on the wire
// with the FCS; plus the virtio header) from a to b, to an address nobody
// owns: b's kernel drops it at ip_rcv.
func benchFrame(l *vlab, i uint32) []byte {
	f := ipv4TCP(l.bMAC, l.aMAC, [4]byte{198, 18, 0, 1}, farIP, 40000, 80, 5, 0x4000, i)[:60]
	ip := f[ethLen:]
	binary.BigEndian.PutUint16(ip[2:], uint16(len(ip)))
	binary.BigEndian.PutUint16(ip[10:], 0)
	binary.BigEndian.PutUint16(ip[10:], ipChecksum(ip[:20]))
	return withVnet(f)
}

// threadCPU returns the calling thread's user+system time.
func threadCPU() time.Duration {
	var ru unix.Rusage
	unix.Getrusage(unix.RUSAGE_THREAD, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// softirqTime returns the machine's softirq time so far (all CPUs).
func softirqTime() time.Duration {
	f, err := os.Open("/proc/stat")
	if err != nil {
		return 0
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		fs := strings.Fields(s.Text())
		if len(fs) > 7 && fs[0] == "cpu" {
			v, _ := strconv.ParseInt(fs[7], 10, 64) // softirq, in USER_HZ
			return time.Duration(v) * time.Second / 100
		}
	}
	return 0
}

// lockedOn runs fn on a goroutine locked to its thread (for
// RUSAGE_THREAD) and bound to CPU cpu (sender and receiver apart, as
// tslb's workers would be, and not at the scheduler's whim on a shared
// machine), and returns a channel closed when it is done.
func lockedOn(cpu int, fn func()) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		var old, one unix.CPUSet
		if unix.SchedGetaffinity(0, &old) == nil {
			one.Set(cpu % runtime.NumCPU())
			unix.SchedSetaffinity(0, &one)
			defer unix.SchedSetaffinity(0, &old)
		}
		fn()
	}()
	return done
}

// spinOf parses the "+spinD" suffix of a benchmark kind ("ring+spin50µs").
func spinOf(kind string) (string, time.Duration) {
	base, spin, ok := strings.Cut(kind, "+spin")
	if !ok {
		return kind, 0
	}
	d, err := time.ParseDuration(spin)
	if err != nil {
		panic(err)
	}
	return base, d
}

// openRX opens the receiving queue of a benchmark on b's end.
func openRX(b *testing.B, l *vlab, kind string) Queue {
	var q Queue
	kind, _ = spinOf(kind)
	err := inNS(l.b, func() error {
		switch kind {
		case "socket", "ring":
			qs, _, err := Open(l.bIf, Config{Mode: Mode(kind)})
			if err != nil {
				return err
			}
			q = qs[0]
		case "ring-8k": // 8192 slots, 16 MiB: as deep as the socket's 8 MiB buffer for small frames
			qs, _, err := Open(l.bIf, Config{Mode: ModeRing, RingFrames: 8192})
			if err != nil {
				return err
			}
			q = qs[0]
		case "ringV3", "ringV3-1ms":
			// The same 2 MiB as the V2 ring: 32 blocks of 64 KiB. The
			// retire timeout is the kernel's choice (prb_calc_retire_
			// blk_tmo; a veth reports no link speed, so
			// DEFAULT_PRB_RETIRE_TOV, 8 ms) or the smallest one can ask
			// for, 1 ms, which msecs_to_jiffies rounds up to one jiffy
			// (4 ms at HZ=250).
			tov := 0
			if kind == "ringV3-1ms" {
				tov = 1
			}
			v3, err := openV3(l.bIf, 64<<10, 32, tov)
			if err != nil {
				return err
			}
			q = v3
		default:
			return fmt.Errorf("unknown kind %q", kind)
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { q.Close() })
	return q
}

// openTXA opens a sending queue of the given kind on a's end.
func openTXA(b *testing.B, l *vlab, kind string) Queue {
	var q Queue
	err := inNS(l.a, func() error {
		var err error
		switch kind {
		case "write", "write+bypass":
			var qs []Queue
			qs, _, err = Open(l.aIf, Config{Mode: ModeSocket, qdiscBypass: kind == "write+bypass"})
			if err == nil {
				q = qs[0]
			}
		case "sendmmsg", "sendmmsg+bypass":
			var qs []Queue
			qs, _, err = Open(l.aIf, Config{Mode: ModeRing, RingFrames: 64, qdiscBypass: kind == "sendmmsg+bypass"})
			if err == nil {
				q = qs[0]
			}
		case "txring":
			q, err = openTXRing(l.aIf, 1024)
		default:
			err = fmt.Errorf("unknown kind %q", kind)
		}
		return err
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { q.Close() })
	return q
}

func rxPackets(ns netns.NsHandle, ifname string) uint64 {
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return 0
	}
	defer h.Close()
	lk, err := h.LinkByName(ifname)
	if err != nil || lk.Attrs().Statistics == nil {
		return 0
	}
	return lk.Attrs().Statistics.RxPackets
}

// BenchmarkTX: 64-byte frames out of a veth, b.N of them, batches of 64
// (write(2) sends each at once), by write(2), sendmmsg(2) and a
// PACKET_TX_RING, with and without PACKET_QDISC_BYPASS. The peer's kernel
// receive path runs in the sender's context (veth_xmit → netif_rx, then
// the softirq at local_bh_enable), as it does for tslb.
func BenchmarkTX(b *testing.B) {
	for _, kind := range []string{"write", "write+bypass", "sendmmsg", "sendmmsg+bypass", "txring"} {
		b.Run(kind, func(b *testing.B) {
			l := newLab(b)
			q := openTXA(b, l, kind)
			frames := make([][]byte, 64)
			for i := range frames {
				frames[i] = benchFrame(l, uint32(i))
			}
			before := rxPackets(l.b, l.bIf)
			var cpu time.Duration
			b.ResetTimer()
			start := time.Now()
			<-lockedOn(0, func() {
				c0 := threadCPU()
				for sent := 0; sent < b.N; {
					k := min(64, b.N-sent)
					for _, f := range frames[:k] {
						q.Send(f)
					}
					q.Flush()
					sent += k
				}
				cpu = threadCPU() - c0
			})
			el := time.Since(start)
			b.StopTimer()
			time.Sleep(20 * time.Millisecond)
			got := rxPackets(l.b, l.bIf) - before
			st := q.Stats()
			b.ReportMetric(float64(b.N)/el.Seconds(), "frames/s")
			b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/frame")
			b.ReportMetric(100*float64(got)/float64(b.N), "%delivered")
			if st.TxErrors > 0 {
				b.ReportMetric(float64(st.TxErrors), "txerrors")
			}
		})
	}
}

// BenchmarkRX: a sender on a (sendmmsg ×64, one thread) sends b.N
// 64-byte frames as fast as it can; the queue under test on b receives
// them (Recv of up to 64, Release; poll when empty) on another thread.
// Reported: frames received per second, the receiver thread's CPU per
// frame received, the machine's softirq time per frame (the kernel's
// delivery into the ring or socket), and kernel drops.
func BenchmarkRX(b *testing.B) {
	for _, kind := range []string{"socket", "ring", "ring-8k", "ring+spin20us", "ring+spin100us", "ringV3"} {
		b.Run(kind, func(b *testing.B) {
			l := newLab(b)
			rx := openRX(b, l, kind)
			_, spin := spinOf(kind)
			tx := openTXA(b, l, "sendmmsg")
			frames := make([][]byte, 64)
			for i := range frames {
				frames[i] = benchFrame(l, uint32(i))
			}
			var received atomic.Int64
			var stop atomic.Bool
			var rcpu time.Duration
			ready := make(chan struct{})
			b.ResetTimer()
			start := time.Now()
			si0 := softirqTime()
			rdone := lockedOn(1, func() {
				p, _ := NewPoller([]Queue{rx})
				defer p.Close()
				p.SetSpin(spin)
				buf := make([][]byte, 64)
				c0 := threadCPU()
				close(ready)
				n := int64(0)
				for !stop.Load() {
					k, err := rx.Recv(buf)
					if err != nil {
						break
					}
					if k == 0 {
						p.Wait(5 * time.Millisecond)
						continue
					}
					n += int64(k)
					received.Store(n)
					rx.Release()
				}
				rcpu = threadCPU() - c0
			})
			<-ready
			<-lockedOn(0, func() {
				for sent := 0; sent < b.N; {
					k := min(64, b.N-sent)
					for _, f := range frames[:k] {
						tx.Send(f)
					}
					tx.Flush()
					sent += k
				}
			})
			// Let the receiver drain what is queued (bounded).
			for last, t0 := int64(-1), time.Now(); time.Since(t0) < 2*time.Second; time.Sleep(5 * time.Millisecond) {
				n := received.Load()
				if n == last {
					break
				}
				last = n
			}
			el := time.Since(start)
			stop.Store(true)
			<-rdone
			b.StopTimer()
			si := softirqTime() - si0
			n := received.Load()
			st := rx.Stats()
			tst := tx.Stats()
			b.ReportMetric(float64(n)/el.Seconds(), "rx-frames/s")
			b.ReportMetric(float64(rcpu.Nanoseconds())/float64(max(n, 1)), "rx-cpu-ns/frame")
			b.ReportMetric(float64(si.Nanoseconds())/float64(max(n, 1)), "softirq-ns/frame")
			b.ReportMetric(100*float64(st.KernelDrops)/float64(b.N), "%kdrops")
			b.ReportMetric(100*float64(tst.TxErrors)/float64(b.N), "%txerr")
		})
	}
}

// BenchmarkPingPong: request/response. The client on a (a V2 ring queue,
// batched sends, no spinning) keeps `inflight` requests outstanding, one
// per "connection": each reply is answered with the next request on that
// connection until b.N round trips are done. The server on b, the mode
// under test, echoes every frame back (zero copy, Flush per batch).
// Reported: round trips per second and the round-trip time percentiles.
func BenchmarkPingPong(b *testing.B) {
	for _, kind := range []string{"socket", "ring", "ring+spin20us", "ring+spin100us", "ringV3", "ringV3-1ms"} {
		for _, inflight := range []int{1, 64} {
			b.Run(fmt.Sprintf("%s/inflight=%d", kind, inflight), func(b *testing.B) {
				pingPong(b, kind, inflight)
			})
		}
	}
}

func pingPong(b *testing.B, kind string, inflight int) {
	l := newLab(b)
	srv := openRX(b, l, kind)
	_, spin := spinOf(kind)
	var cli Queue
	if err := inNS(l.a, func() error {
		qs, _, err := Open(l.aIf, Config{Mode: ModeRing})
		if err == nil {
			cli = qs[0]
		}
		return err
	}); err != nil {
		b.Fatal(err)
	}
	defer cli.Close()

	var stop atomic.Bool
	srvDone := lockedOn(1, func() { // server
		p, _ := NewPoller([]Queue{srv})
		defer p.Close()
		p.SetSpin(spin)
		buf := make([][]byte, 64)
		for !stop.Load() {
			k, err := srv.Recv(buf)
			if err != nil {
				return
			}
			if k == 0 {
				p.Wait(5 * time.Millisecond)
				continue
			}
			for _, f := range buf[:k] {
				swapMACs(f[vnetLen:])
				srv.Send(f)
			}
			srv.Flush()
			srv.Release()
		}
	})

	// Requests are a→b frames; the server's echoes come back b→a with
	// the MACs swapped. The marker carries the connection.
	reqs := make([][]byte, inflight)
	for i := range reqs {
		reqs[i] = benchFrame(l, uint32(i))
	}
	sentAt := make([]time.Time, inflight)
	rtts := make([]time.Duration, 0, b.N)
	p, _ := NewPoller([]Queue{cli})
	defer p.Close()
	buf := make([][]byte, 64)
	b.ResetTimer()
	start := time.Now()
	done := 0
	<-lockedOn(0, func() { // client
		for i := range reqs {
			sentAt[i] = time.Now()
			cli.Send(reqs[i])
		}
		cli.Flush()
		issued := inflight
		deadline := time.Now().Add(60 * time.Second)
		for done < b.N && time.Now().Before(deadline) {
			k, err := cli.Recv(buf)
			if err != nil {
				return
			}
			if k == 0 {
				p.Wait(5 * time.Millisecond)
				continue
			}
			now := time.Now()
			for _, f := range buf[:k] {
				eth := f[vnetLen:]
				if binary.BigEndian.Uint16(eth[12:]) != etherTypeIPv4 {
					continue
				}
				m, ok := markerOf(eth)
				if !ok || int(m) >= inflight {
					continue
				}
				rtts = append(rtts, now.Sub(sentAt[m]))
				done++
				if issued < b.N {
					sentAt[m] = now
					cli.Send(reqs[m])
					issued++
				}
			}
			cli.Flush()
			cli.Release()
		}
	})
	el := time.Since(start)
	b.StopTimer()
	stop.Store(true)
	<-srvDone
	if done < b.N {
		b.Fatalf("%d of %d round trips in 60 s", done, b.N)
	}
	slices.Sort(rtts)
	pct := func(p float64) float64 { return rtts[int(p*float64(len(rtts)-1))].Seconds() * 1e6 }
	b.ReportMetric(float64(done)/el.Seconds(), "rt/s")
	b.ReportMetric(pct(0.50), "p50-µs")
	b.ReportMetric(pct(0.99), "p99-µs")
}

// BenchmarkRXDrain measures the receive path without wakeups: with the
// receiver stopped, a sender on a fills the queue with fill frames
// (sendmmsg ×64; the kernel delivers each into the ring or the socket
// queue inline, in the sender's system call), then the receiver drains
// them (Recv up to 64, Release). drain-cpu-ns/frame is the receiver
// thread's CPU per frame; deliver-cpu-ns/frame the sender thread's CPU per
// frame during the fill, which includes the kernel's delivery
// (tpacket_rcv's copy into the ring, or packet_rcv's clone onto the
// socket queue) when the softirq runs in the sender's system call; and
// softirq-ns/frame the machine's softirq time during the fill, per frame
// (the delivery when it runs elsewhere). CPU times, unlike ns/op, hold on
// a machine shared with other work.
func BenchmarkRXDrain(b *testing.B) {
	const fill = 8192
	for _, kind := range []string{"socket", "ring", "ringV3"} {
		b.Run(kind, func(b *testing.B) {
			l := newLab(b)
			var rx Queue
			if err := inNS(l.b, func() error {
				switch kind {
				case "socket":
					qs, _, err := Open(l.bIf, Config{Mode: ModeSocket})
					if err != nil {
						return err
					}
					rx = qs[0]
					return unix.SetsockoptInt(rx.(*sockQueue).fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 256<<20)
				case "ring":
					qs, _, err := Open(l.bIf, Config{Mode: ModeRing, RingFrames: 2 * fill})
					rx = qs[0]
					return err
				default:
					q, err := openV3(l.bIf, 64<<10, 64, 0)
					rx = q
					return err
				}
			}); err != nil {
				b.Fatal(err)
			}
			defer rx.Close()
			tx := openTXA(b, l, "sendmmsg")
			frames := make([][]byte, 64)
			for i := range frames {
				frames[i] = benchFrame(l, uint32(i))
			}
			buf := make([][]byte, 64)
			var deliver, drainCPU, softirq time.Duration
			got := 0
			b.ResetTimer()
			for done := 0; done < b.N; {
				k := min(fill, b.N-done)
				b.StopTimer()
				si0 := softirqTime()
				<-lockedOn(0, func() {
					c0 := threadCPU()
					for sent := 0; sent < k; sent += 64 {
						for _, f := range frames[:min(64, k-sent)] {
							tx.Send(f)
						}
						tx.Flush()
					}
					deliver += threadCPU() - c0
				})
				softirq += softirqTime() - si0
				time.Sleep(10 * time.Millisecond) // V3: let the retire timer close the last block
				b.StartTimer()
				<-lockedOn(1, func() {
					c0 := threadCPU()
					for n := 0; n < k; {
						m, err := rx.Recv(buf)
						if err != nil || m == 0 {
							break
						}
						n += m
						got += m
						rx.Release()
					}
					drainCPU += threadCPU() - c0
				})
				done += k
			}
			b.StopTimer()
			st := rx.Stats()
			b.ReportMetric(float64(deliver.Nanoseconds())/float64(b.N), "deliver-cpu-ns/frame")
			b.ReportMetric(float64(softirq.Nanoseconds())/float64(b.N), "softirq-ns/frame")
			b.ReportMetric(float64(drainCPU.Nanoseconds())/float64(max(got, 1)), "drain-cpu-ns/frame")
			b.ReportMetric(100*float64(b.N-got)/float64(b.N), "%lost")
			if st.KernelDrops > 0 {
				b.ReportMetric(float64(st.KernelDrops), "kdrops")
			}
		})
	}
}
