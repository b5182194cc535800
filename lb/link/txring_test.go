package link

import (
	"fmt"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// A PACKET_TX_RING (TPACKET_V2) transmit queue, for the benchmarks only:
// the measurement behind keeping sendmmsg(2) for ModeRing (see the
// package doc). Send copies the frame into the next free slot and marks
// it TP_STATUS_SEND_REQUEST; Flush kicks the kernel with one send(2),
// and tpacket_snd turns every requested slot into an skb. A slot is free
// again when the kernel frees that skb (tpacket_destruct_skb sets
// TP_STATUS_AVAILABLE). Frames larger than a slot (GSO superframes) do
// not fit: a real implementation would need a second path for them.

// txSlotData is where a TPACKET_V2 TX frame starts in its slot without
// PACKET_TX_HAS_OFF: tp_hdrlen - sizeof(struct sockaddr_ll).
const txSlotData = tpacket2HdrLen - unix.SizeofSockaddrLinklayer

type txRingQueue struct {
	life
	ring      []byte
	frameSize int
	frames    int
	head      int
	queued    int
}

func openTXRing(ifname string, slots int) (*txRingQueue, error) {
	info, err := interfaceInfo(ifname)
	if err != nil {
		return nil, err
	}
	fd, err := newSocket(false)
	if err != nil {
		return nil, err
	}
	fail := func(err error) (*txRingQueue, error) { unix.Close(fd); return nil, err }
	if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_VERSION, unix.TPACKET_V2); err != nil {
		return fail(err)
	}
	frameSize, blockSize, frames := ringGeometry(info.MTU, slots, unix.Getpagesize())
	req := unix.TpacketReq{Block_size: uint32(blockSize), Block_nr: uint32(frames * frameSize / blockSize),
		Frame_size: uint32(frameSize), Frame_nr: uint32(frames)}
	if err := unix.SetsockoptTpacketReq(fd, unix.SOL_PACKET, unix.PACKET_TX_RING, &req); err != nil {
		return fail(fmt.Errorf("PACKET_TX_RING: %w", err))
	}
	ring, err := unix.Mmap(fd, 0, frames*frameSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return fail(err)
	}
	if err := bindTX(fd, info.Index); err != nil {
		unix.Munmap(ring)
		return fail(err)
	}
	q := &txRingQueue{ring: ring, frameSize: frameSize, frames: frames}
	q.init(fd, false, func() { unix.Munmap(q.ring) })
	return q, nil
}

func (q *txRingQueue) Fd() int                    { return -1 }
func (q *txRingQueue) Recv([][]byte) (int, error) { return 0, nil }
func (q *txRingQueue) Release()                   {}

func (q *txRingQueue) Send(frame []byte) error {
	if q.closed() {
		return ErrClosed
	}
	if len(frame) > q.frameSize-txSlotData {
		q.c.local.TxErrors++
		return nil
	}
	off := q.head * q.frameSize
	st := (*uint32)(unsafe.Pointer(&q.ring[off]))
	if atomic.LoadUint32(st) != unix.TP_STATUS_AVAILABLE {
		q.Flush() // the ring is full of requests: kick, then look again
		if atomic.LoadUint32(st) != unix.TP_STATUS_AVAILABLE {
			q.c.local.TxErrors++
			return nil
		}
	}
	h := (*unix.Tpacket2Hdr)(unsafe.Pointer(&q.ring[off]))
	h.Len = uint32(len(frame))
	copy(q.ring[off+txSlotData:], frame)
	atomic.StoreUint32(st, unix.TP_STATUS_SEND_REQUEST)
	if q.head++; q.head == q.frames {
		q.head = 0
	}
	q.queued++
	q.c.local.TxBytes += uint64(len(frame) - vnetLen)
	return nil
}

func (q *txRingQueue) Flush() error {
	if q.queued == 0 {
		return nil
	}
	if !q.enter() {
		return ErrClosed
	}
	for {
		_, _, e := unix.Syscall6(unix.SYS_SENDTO, uintptr(q.fd), 0, 0, unix.MSG_DONTWAIT, 0, 0)
		if e == unix.EINTR {
			continue
		}
		if e != 0 && e != unix.EAGAIN && e != unix.ENOBUFS {
			q.leave()
			return fmt.Errorf("send: %w", e)
		}
		break
	}
	q.c.local.TxFrames += uint64(q.queued)
	q.queued = 0
	q.c.publishTx()
	q.leave()
	return nil
}

func (q *txRingQueue) Stats() Stats { return q.stats(false) }
func (q *txRingQueue) Close() error { return q.close() }

var _ Queue = (*txRingQueue)(nil)
