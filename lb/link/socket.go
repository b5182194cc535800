package link

import (
	"errors"
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// errShortFrame is returned by Send for a frame shorter than a
// virtio_net_hdr and an Ethernet header.
var errShortFrame = errors.New("link: frame shorter than virtio_net_hdr + Ethernet header")

// sockQueue is a ModeSocket queue: one recvmsg(2) per Recv into a
// queue-owned buffer, one write(2) per Send. PACKET_AUXDATA tells it
// which frames the kernel took a VLAN tag off.
type sockQueue struct {
	life
	buf []byte
	oob []byte // one PACKET_AUXDATA control message
	iov unix.Iovec
	msg unix.Msghdr
}

func newSockQueue(fd int) (*sockQueue, error) {
	if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_AUXDATA, 1); err != nil {
		return nil, fmt.Errorf("PACKET_AUXDATA: %w", err)
	}
	q := &sockQueue{buf: make([]byte, MemFrameCap), oob: make([]byte, unix.CmsgSpace(auxLen))}
	q.iov.Base = &q.buf[0]
	q.iov.SetLen(len(q.buf))
	q.msg.Iov = &q.iov
	q.msg.Iovlen = 1
	q.init(fd, true, nil)
	return q, nil
}

// auxStatus returns tp_status from the PACKET_AUXDATA control message of
// the last recvmsg, or 0 without one.
func (q *sockQueue) auxStatus() uint32 {
	if q.msg.Controllen < uint64(unix.CmsgSpace(auxLen)) {
		return 0
	}
	h := (*unix.Cmsghdr)(unsafe.Pointer(&q.oob[0]))
	if h.Level != unix.SOL_PACKET || h.Type != unix.PACKET_AUXDATA {
		return 0
	}
	return (*unix.TpacketAuxdata)(unsafe.Pointer(&q.oob[unix.CmsgLen(0)])).Status
}

// Fd implements Queue.
func (q *sockQueue) Fd() int {
	if q.closed() {
		return -1
	}
	return q.fd
}

// Recv implements Queue: at most one frame, with one non-blocking
// recvmsg(2) (MSG_TRUNC, so that a frame longer than the buffer is
// counted as Truncated rather than handed out cut). It returns 0 while
// the previous frame is not released: it lives in the one buffer.
func (q *sockQueue) Recv(frames [][]byte) (int, error) {
	if len(frames) == 0 || q.held > 0 {
		if q.closed() {
			return 0, ErrClosed
		}
		return 0, nil
	}
	if !q.enter() {
		return 0, ErrClosed
	}
	defer q.leave()
	for {
		q.msg.Control = &q.oob[0]
		q.msg.SetControllen(len(q.oob))
		r, _, e := unix.Syscall(unix.SYS_RECVMSG, uintptr(q.fd), uintptr(unsafe.Pointer(&q.msg)),
			unix.MSG_DONTWAIT|unix.MSG_TRUNC)
		switch {
		case e == unix.EINTR:
			continue
		case e == unix.EAGAIN:
			return 0, nil
		case e != 0:
			// ENETDOWN (interface down) is reported once, then cleared.
			return 0, fmt.Errorf("link: recvfrom: %w", e)
		case int(r) > len(q.buf) || int(r) < vnetLen:
			q.c.local.Truncated++
			q.c.publishRx()
			return 0, nil
		case q.auxStatus()&unix.TP_STATUS_VLAN_VALID != 0:
			q.c.local.VLANTagged++ // see ringQueue.Recv
			q.c.publishRx()
			return 0, nil
		}
		frames[0] = q.buf[:r:len(q.buf)]
		q.held = 1
		q.c.local.RxFrames++
		q.c.local.RxBytes += uint64(int(r) - vnetLen)
		q.c.publishRx()
		return 1, nil
	}
}

// Release implements Queue.
func (q *sockQueue) Release() {
	if q.held == 0 {
		return
	}
	q.held = 0
	q.leave()
}

// Send implements Queue: the frame is written at once. A frame the kernel
// refuses is dropped and counted in Stats.TxErrors; an error is returned
// only when the link itself fails (the interface is down or gone).
func (q *sockQueue) Send(frame []byte) error {
	if len(frame) < vnetLen+ethLen {
		return errShortFrame
	}
	if !q.enter() {
		return ErrClosed
	}
	defer q.leave()
	c := &q.c.local
	for {
		_, _, e := unix.Syscall(unix.SYS_WRITE, uintptr(q.fd), uintptr(unsafe.Pointer(&frame[0])), uintptr(len(frame)))
		switch e {
		case 0:
			c.TxFrames++
			c.TxBytes += uint64(len(frame) - vnetLen)
		case unix.EINTR:
			continue
		case unix.ENETDOWN, unix.ENXIO, unix.ENODEV:
			c.TxErrors++
			q.c.publishTx()
			return fmt.Errorf("link: write: %w (%w)", e, errLink)
		default: // EAGAIN, ENOBUFS, EMSGSIZE, EINVAL, ...
			c.TxErrors++
		}
		q.c.publishTx()
		return nil
	}
}

// Flush implements Queue: Send already wrote every frame.
func (q *sockQueue) Flush() error {
	if q.closed() {
		return ErrClosed
	}
	return nil
}

// Stats implements Queue.
func (q *sockQueue) Stats() Stats { return q.stats(false) }

// Close implements Queue.
func (q *sockQueue) Close() error { return q.close() }

func (q *sockQueue) wakeOnClose(p *Poller) { q.pollers.add(p) }

var _ Queue = (*sockQueue)(nil)

// txQueue is the transmit-only queue of OpenTX: batched like ModeRing,
// never receives.
type txQueue struct {
	life
	tx *txBatch
}

func newTxQueue(fd, sendBatch int) *txQueue {
	q := &txQueue{tx: newTxBatch(fd, sendBatch)}
	q.init(fd, false, nil)
	return q
}

// Fd implements Queue: a transmit-only queue has nothing to wait for.
func (q *txQueue) Fd() int { return -1 }

// Recv implements Queue: there is never a frame.
func (q *txQueue) Recv([][]byte) (int, error) {
	if q.closed() {
		return 0, ErrClosed
	}
	return 0, nil
}

// Release implements Queue.
func (q *txQueue) Release() {}

// Send implements Queue. A full batch is flushed first.
func (q *txQueue) Send(frame []byte) error {
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
func (q *txQueue) Flush() error { return flushBatch(&q.life, q.tx) }

// Stats implements Queue.
func (q *txQueue) Stats() Stats { return q.stats(false) }

// Close implements Queue.
func (q *txQueue) Close() error { return q.close() }

func (q *txQueue) wakeOnClose(p *Poller) { q.pollers.add(p) }

var _ Queue = (*txQueue)(nil)

// auxLen is sizeof(struct tpacket_auxdata).
const auxLen = int(unsafe.Sizeof(unix.TpacketAuxdata{}))
