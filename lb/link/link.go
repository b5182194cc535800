// Package link owns tslb's frame I/O: the AF_PACKET sockets of each link
// (a TPACKET_V2 receive ring with PACKET_VNET_HDR and batched transmit, or
// the per-frame read(2)/write(2) fallback), the PACKET_FANOUT group that
// spreads a link over the datapath workers with a classic-BPF steering
// program, the kernel's drop counters (PACKET_STATISTICS), and an in-memory
// queue for tests and benchmarks.
//
// It knows nothing of flows, NAT or configuration files, and may not import
// any other tslb package but nat (for header lengths). Every frame it
// hands out or takes starts with a virtio_net_hdr (nat.VirtioNetHdrLen
// bytes) followed by the Ethernet frame, as PACKET_VNET_HDR delivers it.
package link

import (
	"errors"
	"sync/atomic"

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
	// Release hands the frames of the last Recv back (to the kernel's
	// ring). Frames passed to Send since must have been flushed first.
	Release()
	// Send queues frame for transmission. frame must stay unchanged until
	// the next Flush (it may point into a received frame). In ModeSocket
	// it is written at once.
	Send(frame []byte) error
	// Flush transmits every queued frame. Frames the kernel refuses (a
	// full socket buffer) are dropped and counted in Stats.TxErrors.
	Flush() error
	// Stats returns the queue's counters so far.
	Stats() Stats
	// Close releases the socket; it is idempotent.
	Close() error
}

// Stats are a queue's cumulative counters. The frame and byte counts are
// tslb's own; the Kernel* fields are the socket's PACKET_STATISTICS
// (accumulated: the kernel clears them on every read).
type Stats struct {
	RxFrames, RxBytes uint64 // frames handed out by Recv, and their Ethernet bytes
	TxFrames, TxBytes uint64 // frames the kernel accepted
	TxErrors          uint64 // frames the kernel refused (dropped)
	CopyFrames        uint64 // frames larger than a ring slot, read by TP_STATUS_COPY
	Truncated         uint64 // frames larger than a ring slot with no copy (dropped)
	KernelPackets     uint64 // tp_packets: frames the kernel gave the socket
	KernelDrops       uint64 // tp_drops: frames lost because the ring or buffer was full
	FreezeCount       uint64 // tp_freeze_q_cnt (TPACKET_V3 only; 0 otherwise)
}

// Add returns the sum of s and t.
func (s Stats) Add(t Stats) Stats {
	return Stats{
		RxFrames: s.RxFrames + t.RxFrames, RxBytes: s.RxBytes + t.RxBytes,
		TxFrames: s.TxFrames + t.TxFrames, TxBytes: s.TxBytes + t.TxBytes,
		TxErrors: s.TxErrors + t.TxErrors, CopyFrames: s.CopyFrames + t.CopyFrames,
		Truncated: s.Truncated + t.Truncated, KernelPackets: s.KernelPackets + t.KernelPackets,
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
		rxFrames, rxBytes, txFrames, txBytes, txErrors, copyFrames, truncated atomic.Uint64
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
		Truncated: c.pub.truncated.Load(),
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
