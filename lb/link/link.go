// Package link owns tslb's frame I/O: the AF_PACKET sockets of each link
// (a TPACKET_V2 receive ring with PACKET_VNET_HDR and batched transmit, or
// the per-frame read(2)/write(2) fallback), the PACKET_FANOUT group that
// spreads a link over the datapath workers with a classic-BPF steering
// program, the kernel's drop counters (PACKET_STATISTICS), the ingress
// drop that spares the namespace's kernel the frames tslb takes
// (KernelDrop, an nftables netdev table), and an in-memory queue for tests
// and benchmarks.
//
// It knows nothing of flows, NAT or configuration files, and may not import
// any other tslb package but nat (for header lengths). Every frame it
// hands out or takes starts with a virtio_net_hdr (nat.VirtioNetHdrLen
// bytes) followed by the Ethernet frame, as PACKET_VNET_HDR delivers it.
//
// # Using a queue
//
// Open returns one Queue per worker. A worker loops: Recv a batch, work
// on the frames in place (a ModeRing frame is a slice of the ring slot,
// with room to grow behind it), Send frames (zero copy: Send keeps only
// the address), Flush, Release. A frame Sent on any queue must be Flushed
// before the queue it was received on is Released: Release hands the
// memory back to the kernel, which may overwrite it at once. Between
// batches the worker sleeps in a Poller over its queues.
//
// Close may come from any goroutine, also while the worker is blocked in
// Poller.Wait (the Poller is woken) or holds frames (their memory stays
// mapped until the worker's Release, which then frees the queue: a
// worker that stops on ErrClosed releases what it holds); every later
// call returns ErrClosed. The queues of one link are closed
// together: the kernel renumbers a fanout group when a member leaves.
//
// # Steering
//
// With more than one queue the sockets form one PACKET_FANOUT_CBPF group;
// Config.Steering's program sends each received frame to one queue, and
// Steering.Pick (FlowOwner, FlowOwner6, PortOwner) tells the datapath
// which, without looking at the kernel. SteerSplit combines the two by
// destination address (port steering for up to MaxSplitAddrs SNAT
// addresses per family, flow hash for the rest), for links that carry
// clients' and backends' frames alike. The lab tests check every frame
// of several hundred, in both modes, against the kernel's choice.
//
// # Why a TPACKET_V2 ring, sendmmsg, and no PACKET_QDISC_BYPASS
//
// Measured on this project's 2-vCPU VM (kernel 6.18, HZ=250, a veth pair
// between two namespaces, minimum-size frames, sender and receiver
// threads bound to different CPUs, a machine shared with other work).
// Each figure is the median of 5 runs; where two sets of runs were made,
// the second is in brackets. Commands in bench_test.go.
//
//   - Request/response (BenchmarkPingPong, one frame in flight): the V2
//     ring answers in 48 µs p50 [63], 13,300 round trips/s [14,100], like
//     the socket (51 µs [64]). A V3 ring hands a block out only when it is
//     full or its retire timer fires (prb_retire_rx_blk_timer_expired), so
//     every round trip waits for the timer: 8.0 ms with the kernel's
//     default for a veth (DEFAULT_PRB_RETIRE_TOV: a veth reports no link
//     speed), 1.0 ms at the smallest one can ask for; 125 and 976 round
//     trips/s. With 64 in flight: V2 252,000 [369,000] round trips/s, V3
//     7,900 (56,600 at 1 ms). A balancer cannot add a millisecond to every
//     packet of a quiet connection: ModeRing is TPACKET_V2.
//   - Receive cost with a busy worker (BenchmarkRXDrain: the queue is
//     filled, then drained without sleeping): receiver CPU per frame
//     ModeSocket 617 ns [626] (a recvfrom each), V2 ring 5.3 ns [8.2], V3
//     2.8 ns [4.0]. The kernel's delivery costs the ring more than the
//     socket queue: softirq 830 ns [860] per frame against 590 [620] (V3
//     590 [510]).
//   - Receive cost with an idle worker (BenchmarkRX: the receiver does
//     nothing with the frames and sleeps whenever the ring is empty; three
//     sets of runs, noisy): V2 370–870 ns of receiver CPU and 1,120–1,340
//     ns of softirq per frame, the socket 890 ns and 815–980 ns, V3 55–70
//     ns and 550–570 ns. A V2 ring wakes its reader for every frame
//     (tpacket_rcv calls sk_data_ready per slot; perf puts 26% of the
//     samples in that wakeup, tpacket_rcv → sock_def_readable), so a
//     reader faster than the traffic is woken per frame and the ring's
//     gain is lost; a busy worker does not sleep and does not pay.
//     Poller.SetSpin keeps an idle worker awake across short gaps (20 µs:
//     ping-pong p50 30 µs [28]); it pays on dedicated cores, but here,
//     with other processes on the CPUs, a spinning thread is preempted and
//     lost frames. A 1024-slot ring (2 MiB) holds 1024 frames, against
//     20,000 small ones in the socket's buffer (8 MiB, which the kernel
//     doubles; measured) or 13,800 in a V3 ring of 2 MiB: it dropped 0.2–10% of a 0.5–0.6 Mpps burst (median; up to
//     30% in single runs), 8192 slots dropped none. Size RingFrames for
//     the bursts a worker must absorb.
//   - Transmit (BenchmarkTX): write(2) per frame 1.06 [1.15] Mpps at 884
//     [802] ns of CPU per frame; sendmmsg(2) of 64 1.31 [1.32] Mpps at 677
//     [690] ns; a PACKET_TX_RING 1.24 [1.08] Mpps at 739 [726] ns (and it
//     copies each frame into a slot, and would need a second path for
//     superframes larger than a slot). PACKET_QDISC_BYPASS made no
//     consistent difference on a veth (noqueue: sendmmsg 1.33 [1.18]
//     Mpps) and hides the queue's frames from every tap on the interface
//     (packet_direct_xmit does not go through dev_queue_xmit_nit; checked
//     in the lab: tcpdump would not see tslb's transmissions), so it is
//     off.
//
// # Limits
//
//   - More than one queue needs PACKET_FANOUT_FLAG_IGNORE_OUTGOING (Linux
//     6.2): without it every queue would read the link's transmissions.
//   - Steering loads relative to the network header; on kernels without
//     the 2025 fix for classic-BPF negative-offset loads, headers that a
//     driver leaves in page fragments are read as out of range and those
//     frames go to queue 0 (see steer.go).
//   - A ModeRing queue holds at most 4 superframes (TP_STATUS_COPY) per
//     batch; a superframe arrives whole only while the socket's receive
//     buffer (8 MiB) has room for its copy, else it is counted Truncated
//     and dropped. Frames longer than 64 KiB (BIG TCP) are Truncated.
//   - ModeSocket holds one frame at a time: Recv returns nothing until the
//     last frame is released.
package link

import (
	"errors"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"tslb/nat"
)

// Mode selects how a link's frames are read and written.
type Mode string

// Modes.
const (
	// ModeRing receives from a memory-mapped TPACKET_V2 ring (no system
	// call per frame while the ring has frames) and transmits in batches
	// with sendmmsg(2). GSO superframes larger than a ring slot are read
	// with the TP_STATUS_COPY path (one recv(2) each). The default.
	ModeRing Mode = "ring"
	// ModeSocket reads one frame per read(2) and writes one per write(2):
	// the fallback, and the reference the ring is benchmarked against.
	ModeSocket Mode = "socket"
)

// Queue is one datapath worker's share of a link: its own socket, a member
// of the link's fanout group. A Queue is used by one goroutine (its
// worker) for Recv, Release, Send and Flush; Stats and Close may be called
// from any goroutine.
type Queue interface {
	// Fd returns a descriptor that becomes readable when Recv has frames
	// (for Poller), or -1 if the queue has none.
	Fd() int
	// Recv fills frames with up to len(frames) frames that are ready now
	// and returns how many; it never blocks. Each frame is valid, and may
	// be modified in place, until the next Release; its capacity may
	// exceed its length, and bytes up to cap may be used to grow it.
	Recv(frames [][]byte) (int, error)
	// Release hands the frames of the last Recv (of every Recv since the
	// last Release) back (to the kernel's ring). Frames passed to Send
	// since, on any queue, must have been flushed first.
	Release()
	// Send queues frame for transmission. frame must stay unchanged until
	// the next Flush (it may point into a received frame). In ModeSocket
	// it is written at once.
	Send(frame []byte) error
	// Flush transmits every queued frame. Frames the kernel refuses (a
	// full socket buffer) are dropped and counted in Stats.TxErrors; an
	// error means the link itself failed (the interface is down or gone)
	// or the queue is closed (ErrClosed).
	Flush() error
	// Stats returns the queue's counters so far.
	Stats() Stats
	// Close releases the socket; it is idempotent.
	Close() error
}

// Stats are a queue's cumulative counters. The frame and byte counts are
// tslb's own, published by the worker once per call; the Kernel* fields
// are the socket's PACKET_STATISTICS (accumulated: the kernel clears them
// on every read), which Stats reads at most every 5 ms and once more at
// Close. Byte counts are of the Ethernet frames, without the
// virtio_net_hdr.
type Stats struct {
	RxFrames, RxBytes uint64 // frames handed out by Recv, and their Ethernet bytes
	TxFrames, TxBytes uint64 // frames the kernel accepted
	TxErrors          uint64 // frames the kernel refused (dropped)
	CopyFrames        uint64 // frames larger than a ring slot, read by TP_STATUS_COPY
	Truncated         uint64 // frames larger than a ring slot with no copy (dropped)
	VLANTagged        uint64 // frames whose 802.1Q/802.1ad tag the kernel took off (dropped: tslb's links are untagged)
	KernelPackets     uint64 // tp_packets: frames that reached the socket, the dropped ones included
	KernelDrops       uint64 // tp_drops: frames lost because the ring or buffer was full
	FreezeCount       uint64 // tp_freeze_q_cnt (TPACKET_V3 only; 0 otherwise)
}

// Add returns the sum of s and t.
func (s Stats) Add(t Stats) Stats {
	return Stats{
		RxFrames: s.RxFrames + t.RxFrames, RxBytes: s.RxBytes + t.RxBytes,
		TxFrames: s.TxFrames + t.TxFrames, TxBytes: s.TxBytes + t.TxBytes,
		TxErrors: s.TxErrors + t.TxErrors, CopyFrames: s.CopyFrames + t.CopyFrames,
		Truncated: s.Truncated + t.Truncated, VLANTagged: s.VLANTagged + t.VLANTagged, KernelPackets: s.KernelPackets + t.KernelPackets,
		KernelDrops: s.KernelDrops + t.KernelDrops, FreezeCount: s.FreezeCount + t.FreezeCount,
	}
}

// Info describes an opened link.
type Info struct {
	Name  string  // interface name
	MAC   [6]byte // hardware address
	MTU   int
	Index int
}

// ErrClosed is returned by a queue's methods after Close.
var ErrClosed = errors.New("link: closed")

// counters are a queue's own counts: written by its single user without
// atomics, published with atomic stores once per call (a batch), read by
// Stats with atomic loads. On x86-64 an atomic store is an XCHG (a locked
// instruction, some 20 cycles) and on arm64 an STLR, so the hot path pays
// a few of them per batch, none per frame.
type counters struct {
	local Stats
	pub   struct {
		rxFrames, rxBytes, txFrames, txBytes, txErrors, copyFrames, truncated, vlanTagged atomic.Uint64
	}
}

func (c *counters) publish() {
	c.publishRx()
	c.publishTx()
}

// publishRx publishes the counters Recv changes.
func (c *counters) publishRx() {
	c.pub.rxFrames.Store(c.local.RxFrames)
	c.pub.rxBytes.Store(c.local.RxBytes)
	c.pub.copyFrames.Store(c.local.CopyFrames)
	c.pub.truncated.Store(c.local.Truncated)
	c.pub.vlanTagged.Store(c.local.VLANTagged)
}

// publishTx publishes the counters Send and Flush change.
func (c *counters) publishTx() {
	c.pub.txFrames.Store(c.local.TxFrames)
	c.pub.txBytes.Store(c.local.TxBytes)
	c.pub.txErrors.Store(c.local.TxErrors)
}

func (c *counters) load() Stats {
	return Stats{
		RxFrames: c.pub.rxFrames.Load(), RxBytes: c.pub.rxBytes.Load(),
		TxFrames: c.pub.txFrames.Load(), TxBytes: c.pub.txBytes.Load(),
		TxErrors: c.pub.txErrors.Load(), CopyFrames: c.pub.copyFrames.Load(),
		Truncated: c.pub.truncated.Load(), VLANTagged: c.pub.vlanTagged.Load(),
	}
}

// Frame layout constants.
const (
	vnetLen = nat.VirtioNetHdrLen   // every frame starts with a virtio_net_hdr
	ethLen  = nat.EthernetHeaderLen // then an untagged Ethernet header

	etherTypeIPv4 = nat.EtherTypeIPv4
	etherTypeIPv6 = 0x86dd
	etherTypeARP  = nat.EtherTypeARP
)

// IsDown reports whether err is a queue's report that its interface went
// down (ENETDOWN, set by the kernel's packet_notifier on every packet
// socket bound to the interface). The socket stays usable: the kernel
// re-registers it when the interface comes up again.
func IsDown(err error) bool { return errors.Is(err, unix.ENETDOWN) }
