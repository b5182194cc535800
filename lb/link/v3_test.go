package link

import (
	"fmt"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// A TPACKET_V3 receive queue, for the benchmarks only: the measurement
// behind the choice of TPACKET_V2 for ModeRing (see the package doc). V3
// hands out whole blocks: the kernel closes a block when the next frame
// does not fit or when the retire timer fires (prb_retire_rx_blk_timer_
// expired), and only then wakes the reader ("sk->sk_data_ready(sk)" in
// prb_close_block; tpacket_rcv does not wake per frame for V3). V3 also
// has no TP_STATUS_COPY: a frame longer than a block is clamped.

// v3Offsets in struct tpacket3_hdr and struct tpacket_block_desc.
const (
	v3BlockStatus = 8  // hdr.bh1.block_status
	v3NumPkts     = 12 // hdr.bh1.num_pkts
	v3FirstPkt    = 16 // hdr.bh1.offset_to_first_pkt
)

type ringV3Queue struct {
	life
	ring      []byte
	blockSize int
	blocks    int
	cur       int // block being read
	pkt       int // packets of cur already handed out
	off       int // offset of the next packet in cur
	held      int // blocks fully handed out, not released (cur excluded)
	first     int // oldest block not released
	inCur     bool
	tx        *txBatch
}

// openV3 opens a one-queue TPACKET_V3 link on ifname (in the calling
// thread's netns) with blocks of blockSize bytes and the retire timeout
// tovMs (0: the kernel's choice, prb_calc_retire_blk_tmo).
func openV3(ifname string, blockSize, blocks, tovMs int) (*ringV3Queue, error) {
	info, err := interfaceInfo(ifname)
	if err != nil {
		return nil, err
	}
	fd, err := newSocket(false)
	if err != nil {
		return nil, err
	}
	fail := func(err error) (*ringV3Queue, error) { unix.Close(fd); return nil, err }
	if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_VERSION, unix.TPACKET_V3); err != nil {
		return fail(err)
	}
	req := unix.TpacketReq3{
		Block_size: uint32(blockSize), Block_nr: uint32(blocks),
		Frame_size: 2048, Frame_nr: uint32(blocks * blockSize / 2048),
		Retire_blk_tov: uint32(tovMs),
	}
	if err := unix.SetsockoptTpacketReq3(fd, unix.SOL_PACKET, unix.PACKET_RX_RING, &req); err != nil {
		return fail(fmt.Errorf("PACKET_RX_RING v3: %w", err))
	}
	ring, err := unix.Mmap(fd, 0, blocks*blockSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return fail(err)
	}
	if err := bindAll(fd, info.Index); err != nil {
		unix.Munmap(ring)
		return fail(err)
	}
	if err := attachFilter(fd, etherFilter); err != nil {
		unix.Munmap(ring)
		return fail(err)
	}
	q := &ringV3Queue{ring: ring, blockSize: blockSize, blocks: blocks, tx: newTxBatch(fd, DefaultSendBatch)}
	q.init(fd, true, func() { unix.Munmap(q.ring) })
	q.v3 = true
	return q, nil
}

func (q *ringV3Queue) Fd() int { return q.fd }

func (q *ringV3Queue) u32(off int) *uint32 { return (*uint32)(unsafe.Pointer(&q.ring[off])) }

func (q *ringV3Queue) Recv(frames [][]byte) (int, error) {
	if !q.enter() {
		return 0, ErrClosed
	}
	n := 0
	for n < len(frames) && q.held < q.blocks {
		b := q.cur * q.blockSize
		if !q.inCur {
			if atomic.LoadUint32(q.u32(b+v3BlockStatus))&unix.TP_STATUS_USER == 0 {
				break
			}
			q.inCur, q.pkt, q.off = true, 0, int(*q.u32(b + v3FirstPkt))
		}
		num := int(*q.u32(b + v3NumPkts))
		for n < len(frames) && q.pkt < num {
			h := (*unix.Tpacket3Hdr)(unsafe.Pointer(&q.ring[b+q.off]))
			p := b + q.off
			frames[n] = q.ring[p+int(h.Mac)-vnetLen : p+int(h.Mac)+int(h.Snaplen)]
			n++
			q.c.local.RxFrames++
			q.c.local.RxBytes += uint64(h.Len)
			q.pkt++
			q.off += int(h.Next_offset)
		}
		if q.pkt < num {
			break
		}
		// Block done: hold it until Release.
		q.inCur = false
		q.held++
		if q.cur++; q.cur == q.blocks {
			q.cur = 0
		}
	}
	q.life.held = q.held
	if q.inCur {
		q.life.held++
	}
	if n == 0 {
		q.giveBack()
	}
	q.c.publishRx()
	q.leave()
	return n, nil
}

func (q *ringV3Queue) giveBack() {
	for ; q.held > 0; q.held-- {
		atomic.StoreUint32(q.u32(q.first*q.blockSize+v3BlockStatus), unix.TP_STATUS_KERNEL)
		if q.first++; q.first == q.blocks {
			q.first = 0
		}
	}
	q.life.held = 0
	if q.inCur {
		q.life.held = 1
	}
}

// Release gives back the blocks fully handed out; a partly read block
// stays until its last frame is handed out and released.
func (q *ringV3Queue) Release() {
	if q.life.held == 0 {
		return
	}
	q.giveBack()
	q.leave()
}

func (q *ringV3Queue) Send(frame []byte) error {
	if q.closed() {
		return ErrClosed
	}
	if q.tx.full() {
		q.Flush()
	}
	q.tx.add(frame)
	return nil
}

func (q *ringV3Queue) Flush() error          { return flushBatch(&q.life, q.tx) }
func (q *ringV3Queue) Stats() Stats          { return q.stats(false) }
func (q *ringV3Queue) Close() error          { return q.close() }
func (q *ringV3Queue) wakeOnClose(p *Poller) { q.pollers.add(p) }

var _ Queue = (*ringV3Queue)(nil)
