package link

import (
	"errors"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// Socket setup shared by every queue kind. The order matters and follows
// the kernel (net/packet/af_packet.c, cited from torvalds/linux
// de80193308f4):
//
//  1. socket(AF_PACKET, SOCK_RAW, 0): protocol 0 registers no receive
//     hook ("if (proto) { po->prot_hook.type = proto;
//     __register_prot_hook(sk); }" in packet_create), so nothing is
//     queued before the socket is set up.
//  2. PACKET_VNET_HDR, which must precede the ring (packet_setsockopt:
//     "if (po->rx_ring.pg_vec || po->tx_ring.pg_vec) ret = -EBUSY").
//  3. PACKET_IGNORE_OUTGOING, buffers, a drop-all socket filter.
//  4. The ring (PACKET_VERSION, PACKET_RX_RING, mmap).
//  5. bind(ETH_P_ALL, ifindex): registers the hook; frames start to flow,
//     but the drop-all filter discards them.
//  6. PACKET_FANOUT (a bound socket is required: fanout_add checks
//     packet_sock_flag(po, PACKET_SOCK_RUNNING)), then PACKET_FANOUT_DATA.
//  7. The real socket filter (IPv4, IPv6, ARP) on every queue, last: the
//     first frame a queue accepts is already steered by the final
//     program over the final group.

// etherFilter is the socket filter of every receiving queue: it admits
// only IPv4, IPv6 and ARP frames. A socket filter runs in tpacket_rcv and
// packet_rcv after "skb_push(skb, skb->data - skb_mac_header(skb))" for
// SOCK_RAW, so offset 12 is the EtherType. It returns the largest snap
// length so that no frame, GSO superframes included, is truncated by it.
var etherFilter = mustAssemble([]bpf.Instruction{
	bpf.LoadAbsolute{Off: 12, Size: 2},
	bpf.JumpIf{Cond: bpf.JumpEqual, Val: etherTypeIPv4, SkipTrue: 3},
	bpf.JumpIf{Cond: bpf.JumpEqual, Val: etherTypeIPv6, SkipTrue: 2},
	bpf.JumpIf{Cond: bpf.JumpEqual, Val: etherTypeARP, SkipTrue: 1},
	bpf.RetConstant{Val: 0},
	bpf.RetConstant{Val: math.MaxUint32},
})

// dropAll is attached before bind(2) and replaced by etherFilter once the
// fanout group is complete.
var dropAll = mustAssemble([]bpf.Instruction{bpf.RetConstant{Val: 0}})

func mustAssemble(ins []bpf.Instruction) []bpf.RawInstruction {
	raw, err := bpf.Assemble(ins)
	if err != nil {
		panic(err)
	}
	return raw
}

// Socket buffer sizes: large, so that bursts toward a busy worker queue in
// the kernel rather than drop (in ModeRing the receive buffer only holds
// TP_STATUS_COPY superframes).
const sockBufBytes = 8 << 20

// newSocket creates an unbound, non-receiving AF_PACKET socket with the
// options every queue has (steps 1–3 above).
func newSocket(bypass bool) (int, error) {
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("socket(AF_PACKET): %w", err)
	}
	fail := func(what string, err error) (int, error) {
		unix.Close(fd)
		return -1, fmt.Errorf("%s: %w", what, err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_VNET_HDR, 1); err != nil {
		return fail("PACKET_VNET_HDR", err)
	}
	// Without fanout the socket's own hook honours this; in a fanout
	// group the group's hook does, through
	// PACKET_FANOUT_FLAG_IGNORE_OUTGOING (see joinFanout).
	if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_IGNORE_OUTGOING, 1); err != nil {
		return fail("PACKET_IGNORE_OUTGOING", err)
	}
	// SO_*BUFFORCE needs CAP_NET_ADMIN and ignores the rmem_max/wmem_max
	// sysctls; fall back to the capped options.
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, sockBufBytes); err != nil {
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, sockBufBytes)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, sockBufBytes); err != nil {
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, sockBufBytes)
	}
	if bypass {
		if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_QDISC_BYPASS, 1); err != nil {
			return fail("PACKET_QDISC_BYPASS", err)
		}
	}
	if err := attachFilter(fd, dropAll); err != nil {
		return fail("SO_ATTACH_FILTER", err)
	}
	return fd, nil
}

func attachFilter(fd int, prog []bpf.RawInstruction) error {
	return unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, sockFprog(prog))
}

func sockFprog(prog []bpf.RawInstruction) *unix.SockFprog {
	return &unix.SockFprog{
		Len:    uint16(len(prog)),
		Filter: (*unix.SockFilter)(unsafe.Pointer(&prog[0])),
	}
}

// bindAll binds fd to every protocol on the interface ifindex.
func bindAll(fd, ifindex int) error {
	sa := &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifindex}
	if err := unix.Bind(fd, sa); err != nil {
		return fmt.Errorf("bind: %w", err)
	}
	return nil
}

// bindTX binds fd to the interface with protocol 0: the socket can send
// (packet_do_bind still assigns the cached device), but registers no
// receive hook ("if (proto == 0 || !need_rehook) goto out_unlock").
func bindTX(fd, ifindex int) error {
	sa := &unix.SockaddrLinklayer{Protocol: 0, Ifindex: ifindex}
	if err := unix.Bind(fd, sa); err != nil {
		return fmt.Errorf("bind: %w", err)
	}
	return nil
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// joinFanout puts the bound sockets fds, in order, into one new
// PACKET_FANOUT_CBPF group and installs prog as its program.
//
// The group id comes from the kernel (PACKET_FANOUT_FLAG_UNIQUEID with id
// 0: fanout_add → fanout_find_new_id picks an id unused in this netns), so
// it cannot collide with another process's group; the first socket's
// getsockopt(PACKET_FANOUT) returns it ("(u32)po->fanout->id |
// ((u32)po->fanout->type << 16) | ((u32)po->fanout->flags << 24)"). The
// kernel drops UNIQUEID from the stored flags ("ephemeral flag for the
// first socket in the group: drop it"), and a joining socket's flags must
// equal them ("if (match->flags != flags) goto out"), so the others join
// without it.
//
// PACKET_FANOUT_FLAG_IGNORE_OUTGOING: a socket in a fanout group is
// reached through the group's own packet_type hook ("__dev_remove_pack(
// &po->prot_hook); ... __fanout_link(sk, po)"), so the socket's
// PACKET_IGNORE_OUTGOING no longer applies; the group flag sets
// "match->prot_hook.ignore_outgoing" (commit 58ba426388d9, "net/packet: add
// PACKET_FANOUT_FLAG_IGNORE_OUTGOING", Linux 6.2). Without it every queue
// would receive the link's own transmissions.
//
// Members are appended in join order ("rcu_assign_pointer(f->arr[
// f->num_members], sk)" in __fanout_link) and packet_rcv_fanout delivers a
// frame to "f->arr[idx]" with idx = "bpf_prog_run_clear_cb(prog, skb) %
// num" (fanout_demux_bpf): fds[i] is member i, the queue a Steering value
// i names. Closing a member moves the last one into its place
// (__fanout_unlink), so a link's queues are closed together.
func joinFanout(fds []int, prog []bpf.RawInstruction) error {
	const flags = unix.PACKET_FANOUT_CBPF | unix.PACKET_FANOUT_FLAG_IGNORE_OUTGOING
	if err := unix.SetsockoptInt(fds[0], unix.SOL_PACKET, unix.PACKET_FANOUT,
		(flags|unix.PACKET_FANOUT_FLAG_UNIQUEID)<<16); err != nil {
		return fmt.Errorf("PACKET_FANOUT (create): %w", err)
	}
	v, err := unix.GetsockoptInt(fds[0], unix.SOL_PACKET, unix.PACKET_FANOUT)
	if err != nil {
		return fmt.Errorf("getsockopt(PACKET_FANOUT): %w", err)
	}
	id := v & 0xffff
	for i, fd := range fds[1:] {
		if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_FANOUT, id|flags<<16); err != nil {
			return fmt.Errorf("PACKET_FANOUT (join %d of group %d): %w", i+1, id, err)
		}
	}
	if err := unix.SetsockoptSockFprog(fds[0], unix.SOL_PACKET, unix.PACKET_FANOUT_DATA, sockFprog(prog)); err != nil {
		return fmt.Errorf("PACKET_FANOUT_DATA: %w", err)
	}
	return nil
}

// Queue life cycle. A queue's worker enters (stIdle → stBusy) in every
// call that touches the socket or its memory, and leaves when the call
// returns, unless it still holds received frames, which point into the
// ring: then the queue stays stBusy until Release. Close turns stIdle into
// stClosed and frees at once, or stBusy into stClosing: the worker frees
// when it leaves (or at its next call), so memory is never unmapped under
// a worker that still reads it. The hot path pays one compare-and-swap on
// entry and one on exit per call (per batch), not per frame.
const (
	stIdle int32 = iota
	stBusy
	stClosing
	stClosed
)

// life is the part of a socket queue shared by every mode: descriptor,
// life cycle, counters, kernel statistics and the Pollers to wake on
// Close.
type life struct {
	fd int // valid until free
	st atomic.Int32
	c  counters

	kmu   sync.Mutex // guards kst, klast, kfd: the fd's getsockopt and close
	kfd   int        // fd for PACKET_STATISTICS; -1 once closed
	kst   kernelStats
	klast time.Time
	v3    bool // PACKET_STATISTICS has the TPACKET_V3 layout
	rx    bool // the socket receives (has statistics worth reading)

	pollers pollerSet

	// sockErr is a pending socket error (worker-owned), returned by the
	// next Recv.
	sockErr unix.Errno

	// held is the number of received frames the worker has not
	// released (worker-owned); the queue stays busy while it is not 0.
	held int

	freeOnce sync.Once
	freeMem  func() // unmaps the ring, after the fd is closed
}

func (l *life) init(fd int, rx bool, freeMem func()) {
	l.fd, l.kfd, l.rx, l.freeMem = fd, fd, rx, freeMem
}

// enter reports whether the worker may use the socket. On a queue being
// closed it frees the queue if the worker holds no frame.
func (l *life) enter() bool {
	switch l.st.Load() {
	case stBusy:
		return true
	case stIdle:
		if l.st.CompareAndSwap(stIdle, stBusy) {
			return true
		}
	}
	if l.st.Load() == stClosing && l.held == 0 {
		l.free()
	}
	return false
}

// leave ends a worker call; the queue stays busy while frames are held.
func (l *life) leave() {
	if l.held > 0 || l.st.CompareAndSwap(stBusy, stIdle) {
		return
	}
	l.free() // Close came while we were busy: ours to free.
}

// closed reports whether Close was called (for Send, which touches only
// queue-owned memory).
func (l *life) closed() bool { return l.st.Load() >= stClosing }

// close implements Queue.Close.
func (l *life) close() error {
	for {
		switch l.st.Load() {
		case stIdle:
			if l.st.CompareAndSwap(stIdle, stClosed) {
				l.free()
				l.pollers.wake()
				return nil
			}
		case stBusy:
			if l.st.CompareAndSwap(stBusy, stClosing) {
				l.pollers.wake()
				return nil
			}
		default:
			return nil
		}
	}
}

func (l *life) free() {
	l.freeOnce.Do(func() {
		l.st.Store(stClosed)
		l.kmu.Lock()
		if l.rx {
			l.readKernelLocked()
		}
		unix.Close(l.kfd)
		l.kfd = -1
		l.kmu.Unlock()
		if l.freeMem != nil {
			l.freeMem()
		}
	})
}

// kernelStats accumulates PACKET_STATISTICS, which the kernel clears on
// every read (packet_getsockopt: "memset(&po->stats, 0, ...)"; "drops =
// atomic_xchg(&po->tp_drops, 0)"). tp_packets counts the drops too
// ("st.stats1.tp_packets += drops").
type kernelStats struct {
	packets, drops, freezes uint64
}

// kernelStatsEvery bounds how often Stats asks the kernel: a scraper
// calling Stats in a loop costs at most one getsockopt per queue per
// interval.
const kernelStatsEvery = 5 * time.Millisecond

func (l *life) readKernelLocked() {
	l.klast = time.Now()
	if l.kfd < 0 {
		return
	}
	if l.v3 {
		s, err := unix.GetsockoptTpacketStatsV3(l.kfd, unix.SOL_PACKET, unix.PACKET_STATISTICS)
		if err == nil {
			l.kst.packets += uint64(s.Packets)
			l.kst.drops += uint64(s.Drops)
			l.kst.freezes += uint64(s.Freeze_q_cnt)
		}
		return
	}
	s, err := unix.GetsockoptTpacketStats(l.kfd, unix.SOL_PACKET, unix.PACKET_STATISTICS)
	if err == nil {
		l.kst.packets += uint64(s.Packets)
		l.kst.drops += uint64(s.Drops)
	}
}

// stats implements Queue.Stats: the worker's published counters and the
// kernel's, read at most every kernelStatsEvery (always if force).
func (l *life) stats(force bool) Stats {
	s := l.c.load()
	l.kmu.Lock()
	if l.rx && (force || time.Since(l.klast) >= kernelStatsEvery) {
		l.readKernelLocked()
	}
	s.KernelPackets, s.KernelDrops, s.FreezeCount = l.kst.packets, l.kst.drops, l.kst.freezes
	l.kmu.Unlock()
	return s
}

// txBatch queues frames and sends them with sendmmsg(2): one system call
// per SendBatch frames, headers and iovecs built once per queue.
type txBatch struct {
	fd   int
	hdrs []unix.Mmsghdr
	iovs []unix.Iovec
	n    int
}

func newTxBatch(fd, batch int) *txBatch {
	t := &txBatch{fd: fd, hdrs: make([]unix.Mmsghdr, batch), iovs: make([]unix.Iovec, batch)}
	for i := range t.hdrs {
		// The socket is bound: packet_snd uses the bound device and
		// protocol when msg_name is NULL ("if (likely(saddr == NULL))").
		t.hdrs[i].Hdr.Iov = &t.iovs[i]
		t.hdrs[i].Hdr.Iovlen = 1
	}
	return t
}

// full reports whether add must be preceded by a flush.
func (t *txBatch) full() bool { return t.n == len(t.iovs) }

// add queues frame (zero copy: only its address is kept).
func (t *txBatch) add(frame []byte) {
	t.iovs[t.n].Base = unsafe.SliceData(frame)
	t.iovs[t.n].SetLen(len(frame))
	t.n++
}

// errLink marks errors that fail the whole link rather than one frame.
var errLink = errors.New("link down")

// flush sends every queued frame and counts the outcome in c. Per-frame
// refusals are dropped and counted; EAGAIN (socket buffer full) and
// ENOBUFS (a full device queue: net_xmit_errno(NET_XMIT_DROP)) drop the
// rest of the batch so the worker never waits on the kernel; a down or
// vanished device drops everything and is returned.
func (t *txBatch) flush(c *Stats) error {
	var err error
	i := 0
	for i < t.n {
		// A raw system call: sendmmsg with MSG_DONTWAIT never sleeps, but
		// it runs the receivers' softirq work inline (a veth peer, a
		// bridge, a local TCP stack), tens of µs; through Syscall the
		// runtime would count that as a blocking call and hand the
		// worker's P to another thread at every batch.
		r, _, e := unix.RawSyscall6(unix.SYS_SENDMMSG, uintptr(t.fd),
			uintptr(unsafe.Pointer(&t.hdrs[i])), uintptr(t.n-i), unix.MSG_DONTWAIT, 0, 0)
		if e == 0 {
			if r == 0 { // cannot happen: sendmmsg sends one or fails
				c.TxErrors += uint64(t.n - i)
				break
			}
			for k := i; k < i+int(r); k++ {
				c.TxFrames++
				c.TxBytes += uint64(max(int(t.iovs[k].Len)-vnetLen, 0))
			}
			i += int(r)
			continue
		}
		switch e {
		case unix.EINTR:
			continue
		case unix.EAGAIN, unix.ENOBUFS:
			c.TxErrors += uint64(t.n - i)
			i = t.n
		case unix.ENETDOWN, unix.ENXIO, unix.ENODEV, unix.EBADF:
			c.TxErrors += uint64(t.n - i)
			i = t.n
			err = fmt.Errorf("link: sendmmsg: %w (%w)", e, errLink)
		default: // this frame is refused (EMSGSIZE, EINVAL, EFAULT, ...)
			c.TxErrors++
			i++
		}
	}
	for k := 0; k < t.n; k++ {
		t.iovs[k].Base = nil
	}
	t.n = 0
	return err
}

// drop discards the queued frames, counting them as refused.
func (t *txBatch) drop(c *Stats) {
	c.TxErrors += uint64(t.n)
	for k := 0; k < t.n; k++ {
		t.iovs[k].Base = nil
	}
	t.n = 0
}
