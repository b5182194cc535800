package link

import (
	"fmt"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The TPACKET_V2 receive ring (ModeRing). References are to
// net/packet/af_packet.c (torvalds/linux de80193308f4) unless named.
//
// Each slot is a struct tpacket2_hdr followed, at tp_mac, by the frame.
// With PACKET_VNET_HDR the kernel reserves the virtio_net_hdr in front of
// the frame and writes it there: in tpacket_rcv, "netoff += vnet_hdr_sz;
// macoff = netoff - maclen" and "virtio_net_hdr_from_skb(skb, h.raw +
// macoff - sizeof(struct virtio_net_hdr), ...)". So slot[tp_mac-10 :
// tp_mac+tp_snaplen] is exactly the frame Recv hands out, and everything
// after it up to the end of the slot is room to grow it.
//
// A slot is the worker's when its tp_status has TP_STATUS_USER: the kernel
// fills it, then "__packet_set_status(po, h.raw, status)" (a store
// followed by smp_wmb()), then wakes pollers. The worker gives it back by
// storing TP_STATUS_KERNEL after it is done with the bytes; the kernel
// looks only at the slot at its head ("packet_lookup_frame(po,
// &po->rx_ring, po->rx_ring.head, status)") and drops the frame (tp_drops)
// if that slot is not TP_STATUS_KERNEL. The status word is read and
// written with sync/atomic: the load orders the reads of the slot after
// it, the store orders them before the hand-back.
//
// A frame longer than a slot (a GSO superframe, up to 64 KiB on a veth) is
// truncated in the slot; with PACKET_COPY_THRESH set, tpacket_rcv also
// queues the whole skb on the socket's receive queue:
//
//	if (macoff + snaplen > po->rx_ring.frame_size) {
//		if (po->copy_thresh &&
//		    atomic_read(&sk->sk_rmem_alloc) < sk->sk_rcvbuf) {
//			... copy_skb = skb_get(skb) (or skb_clone) ...
//	...
//	spin_lock(&sk->sk_receive_queue.lock);
//	h.raw = packet_current_rx_frame(...);      /* claims the slot */
//	...
//	if (copy_skb) {
//		status |= TP_STATUS_COPY;
//		__skb_queue_tail(&sk->sk_receive_queue, copy_skb);
//	}
//	spin_unlock(&sk->sk_receive_queue.lock);
//
// The slot claim and the enqueue happen under the same lock, so the
// receive queue holds the copies in slot order, and a copy is queued
// before its slot's status says TP_STATUS_COPY. Reading the slots in order
// and doing one recv(2) per TP_STATUS_COPY slot therefore yields that
// slot's frame. The copy keeps skb->data at the MAC header (the skb_push
// above happened first; "skb_head = skb->data" stops the restore), and
// packet_recvmsg prepends the virtio_net_hdr ("if (vnet_hdr_len) { err =
// packet_rcv_vnet(...)"), so the copy has the same layout as a slot. If the
// receive buffer is full, no copy is made and the slot is simply
// truncated: counted in Stats.Truncated and dropped.

const (
	// tpacket2HdrLen is TPACKET2_HDRLEN: TPACKET_ALIGN(sizeof(struct
	// tpacket2_hdr)) + sizeof(struct sockaddr_ll).
	tpacket2HdrLen = 32 + unix.SizeofSockaddrLinklayer
	// ringMacOff is tp_mac for an untagged Ethernet frame:
	// TPACKET_ALIGN(tpacket2HdrLen + 16) + vnetLen - 14.
	ringMacOff = (tpacket2HdrLen+16+unix.TPACKET_ALIGNMENT-1)&^(unix.TPACKET_ALIGNMENT-1) + vnetLen - ethLen
	// growRoom is the least room a full-MTU frame has behind it in a
	// slot, for in-place growth (TCP option insertion).
	growRoom = 64
	// copyBufs superframes of up to copyBufLen bytes can be held at once
	// (until Release); a batch stops at the next one.
	copyBufs   = 4
	copyBufLen = MemFrameCap
	// maxRingFrames bounds Config.RingFrames (2 GiB of slots at 2 KiB).
	maxRingFrames = 1 << 20
)

// ringGeometry returns the slot size for mtu (a power of two of at least
// 2048 holding tp_mac + the Ethernet header + mtu + growRoom), the block
// size (a page, or one slot if larger: slots then tile the mapping with
// no gap) and the slot count (want, rounded up to whole blocks).
func ringGeometry(mtu, want, page int) (frameSize, blockSize, frames int) {
	frameSize = 2048
	for frameSize < ringMacOff+ethLen+mtu+growRoom {
		frameSize *= 2
	}
	blockSize = max(page, frameSize)
	perBlock := blockSize / frameSize
	frames = (want + perBlock - 1) / perBlock * perBlock
	return frameSize, blockSize, frames
}

// ringQueue is a ModeRing queue.
type ringQueue struct {
	life

	ring      []byte // the mapped RX ring
	frameSize int
	frames    int // slots
	head      int // next slot to look at
	rel       int // oldest slot not yet given back
	handed    int // frames handed out since the last Release

	cbuf  [copyBufs][]byte // TP_STATUS_COPY frames
	cused int

	tx *txBatch
}

// setupRing sets TPACKET_V2, PACKET_COPY_THRESH and the RX ring on fd and
// maps it.
func setupRing(fd, mtu, want int) (ring []byte, frameSize, frames int, err error) {
	frameSize, blockSize, frames := ringGeometry(mtu, want, unix.Getpagesize())
	if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_VERSION, unix.TPACKET_V2); err != nil {
		return nil, 0, 0, fmt.Errorf("PACKET_VERSION: %w", err)
	}
	// Any non-zero value enables the copy ("if (po->copy_thresh && ...").
	if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_COPY_THRESH, 1); err != nil {
		return nil, 0, 0, fmt.Errorf("PACKET_COPY_THRESH: %w", err)
	}
	req := unix.TpacketReq{
		Block_size: uint32(blockSize),
		Block_nr:   uint32(frames * frameSize / blockSize),
		Frame_size: uint32(frameSize),
		Frame_nr:   uint32(frames),
	}
	if err := unix.SetsockoptTpacketReq(fd, unix.SOL_PACKET, unix.PACKET_RX_RING, &req); err != nil {
		return nil, 0, 0, fmt.Errorf("PACKET_RX_RING (%d slots of %d): %w", frames, frameSize, err)
	}
	ring, err = unix.Mmap(fd, 0, frames*frameSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return nil, 0, 0, fmt.Errorf("mmap RX ring: %w", err)
	}
	return ring, frameSize, frames, nil
}

func newRingQueue(fd int, ring []byte, frameSize, frames, sendBatch int) *ringQueue {
	q := &ringQueue{ring: ring, frameSize: frameSize, frames: frames, tx: newTxBatch(fd, sendBatch)}
	for i := range q.cbuf {
		q.cbuf[i] = make([]byte, copyBufLen)
	}
	q.init(fd, true, func() { unix.Munmap(q.ring) })
	return q
}

// Fd implements Queue.
func (q *ringQueue) Fd() int {
	if q.closed() {
		return -1
	}
	return q.fd
}

func (q *ringQueue) status(slot int) *uint32 {
	return (*uint32)(unsafe.Pointer(&q.ring[slot*q.frameSize]))
}

// Recv implements Queue. It takes the slots the kernel has filled, in
// order, and stops at the first the kernel still owns, when frames is
// full, or when every copy buffer is in use.
func (q *ringQueue) Recv(frames [][]byte) (int, error) {
	if !q.enter() {
		return 0, ErrClosed
	}
	if e := q.sockErr; e != 0 {
		q.sockErr = 0
		q.leave()
		return 0, fmt.Errorf("link: %w", e)
	}
	c := &q.c.local
	n := 0
	for n < len(frames) && q.held < q.frames {
		off := q.head * q.frameSize
		st := atomic.LoadUint32(q.status(q.head))
		if st&unix.TP_STATUS_USER == 0 {
			break
		}
		h := (*unix.Tpacket2Hdr)(unsafe.Pointer(&q.ring[off]))
		mac, snap, length := int(h.Mac), int(h.Snaplen), int(h.Len)
		switch {
		case st&unix.TP_STATUS_VLAN_VALID != 0:
			// The kernel moved an 802.1Q/802.1ad tag out of the frame
			// into skb metadata (every NIC with rx-vlan-offload, and
			// veth); the bytes look untagged. tslb's links are untagged.
			// A TP_STATUS_COPY frame is still on the receive queue.
			if st&unix.TP_STATUS_COPY != 0 {
				q.discardCopy()
			}
			c.VLANTagged++
		case st&unix.TP_STATUS_COPY != 0:
			if q.cused == len(q.cbuf) {
				goto done // this slot again after Release
			}
			if f := q.readCopy(length); f != nil {
				frames[n] = f
				n++
				c.CopyFrames++
				c.RxFrames++
				c.RxBytes += uint64(length)
			} else {
				c.Truncated++
			}
		case snap < length || mac < tpacket2HdrLen+vnetLen || mac+snap > q.frameSize:
			c.Truncated++ // larger than a slot and no room for a copy
		default:
			frames[n] = q.ring[off+mac-vnetLen : off+mac+snap : off+q.frameSize]
			n++
			c.RxFrames++
			c.RxBytes += uint64(length)
		}
		q.held++
		if q.head++; q.head == q.frames {
			q.head = 0
		}
	}
done:
	q.handed += n
	if q.handed == 0 {
		q.giveBack() // only dropped slots: nothing for Release to wait for
	}
	q.c.publishRx()
	q.leave()
	return n, nil
}

// readCopy reads the TP_STATUS_COPY frame of the current slot from the
// socket's receive queue into a copy buffer; want is the slot's tp_len.
func (q *ringQueue) readCopy(want int) []byte {
	b := q.cbuf[q.cused]
	for {
		r, _, e := unix.Syscall6(unix.SYS_RECVFROM, uintptr(q.fd), uintptr(unsafe.Pointer(&b[0])),
			uintptr(len(b)), unix.MSG_DONTWAIT|unix.MSG_TRUNC, 0, 0)
		if e == unix.EINTR {
			continue
		}
		// With MSG_TRUNC, r is the whole length ("vnet_hdr_len +
		// ((flags&MSG_TRUNC) ? skb->len : copied)"); a length other than
		// the slot's would mean the queue and the ring disagree.
		if e != 0 || int(r) > len(b) || int(r) != vnetLen+want {
			return nil
		}
		q.cused++
		return b[:r:len(b)]
	}
}

// discardCopy takes the current slot's TP_STATUS_COPY frame off the
// socket's receive queue unread, so that the queue and the ring stay in
// step.
func (q *ringQueue) discardCopy() {
	var b [1]byte
	for {
		_, _, e := unix.Syscall6(unix.SYS_RECVFROM, uintptr(q.fd), uintptr(unsafe.Pointer(&b[0])),
			1, unix.MSG_DONTWAIT|unix.MSG_TRUNC, 0, 0)
		if e != unix.EINTR {
			return
		}
	}
}

// giveBack returns every held slot to the kernel, oldest first.
func (q *ringQueue) giveBack() {
	for ; q.held > 0; q.held-- {
		atomic.StoreUint32(q.status(q.rel), unix.TP_STATUS_KERNEL)
		if q.rel++; q.rel == q.frames {
			q.rel = 0
		}
	}
	q.handed, q.cused = 0, 0
}

// Release implements Queue.
func (q *ringQueue) Release() {
	if q.held == 0 {
		return
	}
	// Held slots keep the queue busy, so the ring is still mapped.
	q.giveBack()
	q.leave()
}

// Send implements Queue. A full batch is flushed first.
func (q *ringQueue) Send(frame []byte) error {
	if q.closed() {
		return ErrClosed
	}
	if len(frame) < vnetLen+ethLen {
		return errShortFrame
	}
	if q.tx.full() {
		if err := q.Flush(); err == ErrClosed {
			return err
		}
	}
	q.tx.add(frame)
	return nil
}

// Flush implements Queue.
func (q *ringQueue) Flush() error { return flushBatch(&q.life, q.tx) }

// Stats implements Queue.
func (q *ringQueue) Stats() Stats { return q.stats(false) }

// Close implements Queue.
func (q *ringQueue) Close() error { return q.close() }

func (q *ringQueue) wakeOnClose(p *Poller) { q.pollers.add(p) }

// ready reports whether Recv would find a frame (or an error, or the
// queue closed) without a system call: for Poller.SetSpin. It is called
// by the worker, like Recv.
func (q *ringQueue) ready() bool {
	if !q.enter() {
		return true
	}
	r := q.sockErr != 0 || (q.held < q.frames && atomic.LoadUint32(q.status(q.head))&unix.TP_STATUS_USER != 0)
	q.leave()
	return r
}

func (q *ringQueue) pollErr() { clearSockErr(&q.life) }

func flushBatch(l *life, tx *txBatch) error {
	if tx.n == 0 {
		if l.closed() {
			return ErrClosed
		}
		return nil
	}
	if !l.enter() {
		tx.drop(&l.c.local)
		l.c.publishTx()
		return ErrClosed
	}
	err := tx.flush(&l.c.local)
	l.c.publishTx()
	l.leave()
	return err
}

// clearSockErr reads and clears the socket's pending error (ENETDOWN when
// the interface goes down: packet_notifier sets "sk->sk_err = ENETDOWN"),
// which makes poll(2) report POLLERR until it is read; Recv returns it.
func clearSockErr(l *life) {
	if !l.enter() {
		return
	}
	if v, err := unix.GetsockoptInt(l.fd, unix.SOL_SOCKET, unix.SO_ERROR); err == nil && v != 0 {
		l.sockErr = unix.Errno(v)
	}
	l.leave()
}

var _ Queue = (*ringQueue)(nil)
