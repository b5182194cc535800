package link

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"golang.org/x/sys/unix"
)

// Config configures Open. The zero value means: ModeRing, one queue.
type Config struct {
	// Mode selects ring or per-frame socket I/O ("" means ModeRing).
	Mode Mode
	// Queues is the number of queues (datapath workers); each is its own
	// socket in one PACKET_FANOUT group of the link (0 means 1: no
	// fanout).
	Queues int
	// Steering is the fanout program that picks the queue of each
	// received frame (ignored with one queue).
	Steering Steering
	// RingFrames is the number of slots of each queue's receive ring (0
	// means DefaultRingFrames), rounded up to whole pages. A slot holds
	// one frame: 2048 bytes for an MTU of 1500 (the next power of two
	// that fits the slot header, the virtio_net_hdr, the frame and 64
	// bytes of room to grow it).
	RingFrames int
	// SendBatch bounds the frames of one sendmmsg(2) (0 means
	// DefaultSendBatch).
	SendBatch int

	// qdiscBypass sets PACKET_QDISC_BYPASS (benchmarks only).
	qdiscBypass bool
}

// Defaults of Config.
const (
	DefaultRingFrames = 1024
	DefaultSendBatch  = 64
)

// Steering is how a link's fanout group picks the queue (worker) of a
// received frame. Each value is a classic-BPF fanout program
// (PACKET_FANOUT_CBPF) with a Go mirror (Pick, FlowOwner, FlowOwner6,
// PortOwner) that gives the same answer, so the datapath knows which
// worker owns a tuple. Frames that are not TCP over IPv4 (not a fragment)
// or IPv6 (no extension header) go to queue 0. Steerings are comparable
// values; the zero value is SteerFlowHash.
type Steering struct {
	kind steerKind
	dsts *portDsts // SteerSplit's addresses; nil otherwise
}

type steerKind uint8

const (
	steerFlow steerKind = iota
	steerPort
	steerSplit
)

// portDsts are the destinations SteerSplit steers by port.
type portDsts struct {
	v4 [][4]byte
	v6 [][16]byte
}

// Steerings.
var (
	// SteerFlowHash picks by a hash of the source address and the TCP
	// ports (FlowOwner, FlowOwner6): client links, where a flow is known
	// by its client tuple.
	SteerFlowHash = Steering{kind: steerFlow}
	// SteerDstPort picks by the TCP destination port modulo the number of
	// queues (PortOwner): backend links, where each worker owns the SNAT
	// ports p with p % n == worker.
	SteerDstPort = Steering{kind: steerPort}
)

// MaxSplitAddrs is the most addresses of one family SteerSplit takes:
// the program compares a frame's destination with each in turn, and a
// classic-BPF jump reaches at most 255 instructions ahead.
const MaxSplitAddrs = 16

// SteerSplit steers TCP segments to one of addrs by destination port
// (SteerDstPort) and every other frame by flow hash (SteerFlowHash): a
// link that carries both clients' traffic to VIPs and backends' replies to
// SNAT addresses (one-arm deployments). With no addresses it is
// SteerFlowHash.
func SteerSplit(addrs []netip.Addr) (Steering, error) {
	d := &portDsts{}
	for _, a := range addrs {
		switch a = a.Unmap(); {
		case a.Is4():
			d.v4 = append(d.v4, a.As4())
		case a.Is6():
			d.v6 = append(d.v6, a.As16())
		default:
			return Steering{}, fmt.Errorf("link: steering: invalid address %v", a)
		}
	}
	if len(d.v4) > MaxSplitAddrs || len(d.v6) > MaxSplitAddrs {
		return Steering{}, fmt.Errorf("link: steering: %d IPv4 and %d IPv6 addresses, at most %d of each", len(d.v4), len(d.v6), MaxSplitAddrs)
	}
	if len(d.v4)+len(d.v6) == 0 {
		return SteerFlowHash, nil
	}
	return Steering{kind: steerSplit, dsts: d}, nil
}

// maxQueues is the largest fanout group Open builds: the kernel's legacy
// PACKET_FANOUT_MAX, the member limit of a group created without
// fanout_args ("args->max_num_members = 256").
const maxQueues = 256

// maxSendBatch is UIO_MAXIOV, the most messages one sendmmsg(2) takes.
const maxSendBatch = 1024

func (c Config) withDefaults() (Config, error) {
	if c.Mode == "" {
		c.Mode = ModeRing
	}
	if c.Queues == 0 {
		c.Queues = 1
	}
	if c.RingFrames == 0 {
		c.RingFrames = DefaultRingFrames
	}
	if c.SendBatch == 0 {
		c.SendBatch = DefaultSendBatch
	}
	switch {
	case c.Mode != ModeRing && c.Mode != ModeSocket:
		return c, fmt.Errorf("unknown mode %q", c.Mode)
	case c.Queues < 1 || c.Queues > maxQueues:
		return c, fmt.Errorf("queues %d: want 1 to %d", c.Queues, maxQueues)
	case c.Steering.kind > steerSplit || (c.Steering.kind == steerSplit) != (c.Steering.dsts != nil):
		return c, fmt.Errorf("invalid steering %v", c.Steering)
	case c.RingFrames < 1 || c.RingFrames > maxRingFrames:
		return c, fmt.Errorf("ring frames %d: want 1 to %d", c.RingFrames, maxRingFrames)
	case c.SendBatch < 1 || c.SendBatch > maxSendBatch:
		return c, fmt.Errorf("send batch %d: want 1 to %d", c.SendBatch, maxSendBatch)
	}
	return c, nil
}

// interfaceInfo looks ifname up; it must be an Ethernet interface.
func interfaceInfo(ifname string) (Info, error) {
	ifi, err := net.InterfaceByName(ifname)
	if err != nil {
		return Info{}, err
	}
	if len(ifi.HardwareAddr) != 6 {
		return Info{}, errors.New("not an Ethernet interface")
	}
	return Info{Name: ifi.Name, MAC: [6]byte(ifi.HardwareAddr), MTU: ifi.MTU, Index: ifi.Index}, nil
}

// Open opens cfg.Queues queues on the interface ifname: one AF_PACKET
// socket each, with PACKET_VNET_HDR, PACKET_IGNORE_OUTGOING, large socket
// buffers and a socket filter that admits IPv4, IPv6 and ARP. With more
// than one queue the sockets form one PACKET_FANOUT group (a
// kernel-assigned id, so it cannot collide with another group in the
// network namespace) whose classic-BPF program is cfg.Steering's: queue i
// of the result receives exactly the frames cfg.Steering.Pick(frame,
// cfg.Queues) == i. Open needs CAP_NET_RAW; the queues stay in the
// network namespace of the calling thread.
//
// The queues of a link must be closed together: closing one re-numbers
// the group (the kernel moves its last member into the gap), and frames
// no longer reach the queue Pick names.
func Open(ifname string, cfg Config) ([]Queue, Info, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, Info{}, fmt.Errorf("link: %s: %w", ifname, err)
	}
	info, err := interfaceInfo(ifname)
	if err != nil {
		return nil, Info{}, fmt.Errorf("link: %s: %w", ifname, err)
	}
	fds := make([]int, 0, cfg.Queues)
	var rings [][]byte
	fail := func(err error) ([]Queue, Info, error) {
		for _, r := range rings {
			unix.Munmap(r)
		}
		for _, fd := range fds {
			unix.Close(fd)
		}
		return nil, info, fmt.Errorf("link: %s: %w", ifname, err)
	}
	type ring struct {
		mem               []byte
		frameSize, frames int
	}
	rs := make([]ring, cfg.Queues)
	for i := range cfg.Queues {
		fd, err := newSocket(cfg.qdiscBypass)
		if err != nil {
			return fail(err)
		}
		fds = append(fds, fd)
		if cfg.Mode == ModeRing {
			mem, fs, n, err := setupRing(fd, info.MTU, cfg.RingFrames)
			if err != nil {
				return fail(err)
			}
			rings = append(rings, mem)
			rs[i] = ring{mem, fs, n}
		}
		if err := bindAll(fd, info.Index); err != nil {
			return fail(err)
		}
	}
	if cfg.Queues > 1 {
		if err := joinFanout(fds, cfg.Steering.Program(cfg.Queues)); err != nil {
			return fail(err)
		}
	}
	for _, fd := range fds {
		if err := attachFilter(fd, etherFilter); err != nil {
			return fail(fmt.Errorf("SO_ATTACH_FILTER: %w", err))
		}
	}
	qs := make([]Queue, cfg.Queues)
	for i, fd := range fds {
		if cfg.Mode == ModeRing {
			qs[i] = newRingQueue(fd, rs[i].mem, rs[i].frameSize, rs[i].frames, cfg.SendBatch)
		} else {
			q, err := newSockQueue(fd)
			if err != nil {
				return fail(err)
			}
			qs[i] = q
		}
	}
	return qs, info, nil
}

// OpenTX opens a transmit-only queue on ifname, for control-plane frames
// (gratuitous ARP at start, ...): the same PACKET_VNET_HDR frame format
// and batched transmit as a ModeRing queue, but bound with protocol 0, so
// it receives nothing and is in no fanout group. Its Fd is -1 and Recv
// always returns 0.
func OpenTX(ifname string) (Queue, Info, error) {
	info, err := interfaceInfo(ifname)
	if err != nil {
		return nil, Info{}, fmt.Errorf("link: %s: %w", ifname, err)
	}
	fd, err := newSocket(false)
	if err == nil {
		err = bindTX(fd, info.Index)
		if err != nil {
			unix.Close(fd)
		}
	}
	if err != nil {
		return nil, info, fmt.Errorf("link: %s: %w", ifname, err)
	}
	return newTxQueue(fd, DefaultSendBatch), info, nil
}
