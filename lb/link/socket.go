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

// sockQueue is a ModeSocket queue: one recvfrom(2) per Recv into a
// queue-owned buffer, one write(2) per Send.
type sockQueue struct {
	life
	buf []byte
}

func newSockQueue(fd int) *sockQueue {
	q := &sockQueue{buf: make([]byte, MemFrameCap)}
	q.init(fd, true, nil)
	return q
}

// Fd implements Queue.
func (q *sockQueue) Fd() int {
	if q.closed() {
		return -1
	}
	return q.fd
}

// Recv implements Queue: at most one frame, with one non-blocking
// recvfrom(2) (MSG_TRUNC, so that a frame longer than the buffer is
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
		r, _, e := unix.Syscall6(unix.SYS_RECVFROM, uintptr(q.fd), uintptr(unsafe.Pointer(&q.buf[0])),
			uintptr(len(q.buf)), unix.MSG_DONTWAIT|unix.MSG_TRUNC, 0, 0)
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
