package link

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"runtime"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"tslb/nat"
)

// modes are the receiving queue kinds under test.
var modes = []Mode{ModeRing, ModeSocket}

func swapMACs(eth []byte) {
	var t [6]byte
	copy(t[:], eth[0:6])
	copy(eth[0:6], eth[6:12])
	copy(eth[6:12], t[:])
}

// TestSmallFramesBothWays sends small frames from the peer to the queues
// and echoes them back with Send (zero copy from the ring) and Flush:
// everything arrives, in order, and the queues never read back their own
// transmissions (PACKET_IGNORE_OUTGOING, and the fanout group's
// PACKET_FANOUT_FLAG_IGNORE_OUTGOING with two queues).
func TestSmallFramesBothWays(t *testing.T) {
	l := newLab(t)
	tx := l.raw(t, l.a, l.aIf, false, false)
	capA := l.raw(t, l.a, l.aIf, false, true)
	for _, mode := range modes {
		for _, n := range []int{1, 2} {
			t.Run(fmt.Sprintf("%s/%d", mode, n), func(t *testing.T) {
				qs, info := l.openB(t, Config{Mode: mode, Queues: n})
				if info.MAC != l.bMAC || info.Name != l.bIf || info.MTU != 1500 {
					t.Errorf("Info %+v, want %s %x mtu 1500", info, l.bIf, l.bMAC)
				}
				testBothWays(t, l, tx, capA, qs, mode)
			})
		}
	}
}

func testBothWays(t *testing.T, l *vlab, tx, capA *rawSock, qs []Queue, mode Mode) {
	const frames = 300
	// Flows with different source ports, so that two queues both get
	// some; order is checked per flow (a flow has one queue).
	sent := make([][]byte, frames)
	for i := range frames {
		sent[i] = ipv4TCP(l.bMAC, l.aMAC, [4]byte{198, 18, 0, byte(i % 7)}, farIP, uint16(40000+i%5), 80, 5, 0x4000, uint32(i))
		tx.write(t, sent[i])
	}
	p, err := NewPoller(qs)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	buf := make([][]byte, 16)
	var got []uint32
	last := map[[2]int]int{} // (queue, flow) → last marker
	deadline := time.Now().Add(5 * time.Second)
	for len(got) < frames && time.Now().Before(deadline) {
		idle := true
		for qi, q := range qs {
			k, err := q.Recv(buf)
			if err != nil {
				t.Fatal(err)
			}
			idle = idle && k == 0
			for _, f := range buf[:k] {
				m, ok := markerOf(f[vnetLen:])
				if !ok {
					continue
				}
				got = append(got, m)
				if !bytes.Equal(f[vnetLen:], sent[m]) {
					t.Errorf("frame %d: got %x, sent %x", m, f[vnetLen:], sent[m])
				}
				if hdr := f[:vnetLen]; hdr[1] != 0 || hdr[0]&nat.VirtioNetHdrFNeedsCsum != 0 {
					t.Errorf("frame %d: virtio header %x on a plain frame", m, hdr)
				}
				flow := int(m % 35)
				if prev, ok := last[[2]int{qi, flow}]; ok && prev >= int(m) {
					t.Errorf("queue %d: frame %d after %d of the same flow", qi, m, prev)
				}
				last[[2]int{qi, flow}] = int(m)
				// Room to grow in place (TCP option insertion).
				room := cap(f) - len(f)
				if mode == ModeRing && room < growRoom {
					t.Errorf("frame %d: %d bytes of room, want >= %d", m, room, growRoom)
				}
				g := f[: len(f)+12 : len(f)+12]
				copy(g[len(f):], "growth-bytes")
				// Echo: back to the peer, from the queue's own memory.
				swapMACs(f[vnetLen:])
				if err := q.Send(f); err != nil {
					t.Fatal(err)
				}
			}
			if err := q.Flush(); err != nil {
				t.Fatal(err)
			}
			q.Release()
		}
		if idle {
			p.Wait(20 * time.Millisecond)
		}
	}
	if len(got) != frames {
		t.Fatalf("received %d of %d frames", len(got), frames)
	}
	// The peer receives every echo, in the order sent per flow, intact.
	echoed := map[uint32]bool{}
	lastA := map[int]int{}
	for len(echoed) < frames {
		f := capA.read(2 * time.Second)
		if f == nil {
			t.Fatalf("peer received %d of %d echoes", len(echoed), frames)
		}
		m, ok := markerOf(f)
		if !ok {
			continue
		}
		want := append([]byte(nil), sent[m]...)
		swapMACs(want)
		if !bytes.Equal(f, want) {
			t.Errorf("echo %d: got %x, want %x", m, f, want)
		}
		if echoed[m] {
			t.Errorf("echo %d twice", m)
		}
		echoed[m] = true
		if prev, ok := lastA[int(m%35)]; ok && prev >= int(m) {
			t.Errorf("echo %d after %d of the same flow", m, prev)
		}
		lastA[int(m%35)] = int(m)
	}
	// The queues must not have read their own transmissions back.
	time.Sleep(20 * time.Millisecond)
	for qi, q := range qs {
		k, _ := q.Recv(buf)
		for _, f := range buf[:k] {
			if m, ok := markerOf(f[vnetLen:]); ok {
				t.Errorf("queue %d read back its own echo %d", qi, m)
			}
		}
		q.Release()
	}
	var sum Stats
	for _, q := range qs {
		sum = sum.Add(q.Stats())
	}
	if sum.RxFrames < frames || sum.TxFrames != frames || sum.TxErrors != 0 || sum.Truncated != 0 {
		t.Errorf("stats %+v", sum)
	}
	if sum.TxBytes != uint64(frames*len(sent[0])) {
		t.Errorf("TxBytes %d, want %d", sum.TxBytes, frames*len(sent[0]))
	}
}

// parseTCP4 returns the IPv4 TCP header fields of an Ethernet frame.
func parseTCP4(eth []byte) (ipl, tcpl int, seq uint32, dport uint16, ok bool) {
	if len(eth) < ethLen+40 || binary.BigEndian.Uint16(eth[12:]) != etherTypeIPv4 {
		return
	}
	ip := eth[ethLen:]
	if ip[9] != ipProtoTCP {
		return
	}
	ipl = int(ip[0]&0xf) * 4
	tcp := ip[ipl:]
	tcpl = int(tcp[12]>>4) * 4
	return ipl, tcpl, binary.BigEndian.Uint32(tcp[4:]), binary.BigEndian.Uint16(tcp[2:]), true
}

// TestGSO sends real TCP through the veth (TSO on, the kernel's
// defaults): the queues get GSO superframes larger than a ring slot,
// whole (ModeRing: through TP_STATUS_COPY) and with a correct
// virtio_net_hdr; every stream byte is seen, with the sender's value.
// (Strict order is TestCopyOrder's: on a 2-CPU machine a veth may reorder
// one TCP flow, whose segments leave from both CPUs into per-CPU backlogs.) One is sent back with Send: with
// TSO on it reaches the peer still one GSO frame; with TSO off the kernel
// segments it into valid segments carrying the same bytes.
func TestGSO(t *testing.T) {
	l := newLab(t)
	for _, c := range []struct {
		mode Mode
		n    int
	}{{ModeRing, 1}, {ModeRing, 2}, {ModeSocket, 1}} {
		t.Run(fmt.Sprintf("%s/%d", c.mode, c.n), func(t *testing.T) {
			testGSO(t, l, c.mode, c.n)
		})
	}
}

func testGSO(t *testing.T, l *vlab, mode Mode, n int) {
	if err := setTSO(l.b, l.bIf, true); err != nil {
		t.Fatal(err)
	}
	qs, info := l.openB(t, Config{Mode: mode, Queues: n, Steering: SteerFlowHash})
	capA := l.raw(t, l.a, l.aIf, true, true)

	// A kernel TCP transfer from a to b (b's kernel is the receiver; the
	// queues tap the same frames).
	var ln net.Listener
	if err := inNS(l.b, func() (err error) {
		ln, err = net.Listen("tcp4", net.JoinHostPort(l.bIP.String(), "0"))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := uint16(ln.Addr().(*net.TCPAddr).Port)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		io.Copy(io.Discard, c)
	}()
	const total = 4 << 20
	var sendErr error
	go func() {
		defer wg.Done()
		var c net.Conn
		if sendErr = inNS(l.a, func() (err error) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			c, err = (&net.Dialer{}).DialContext(ctx, "tcp4", ln.Addr().String())
			return err
		}); sendErr != nil {
			return
		}
		defer c.Close()
		chunk := make([]byte, 64<<10)
		for i := range chunk {
			chunk[i] = byte(i * 7)
		}
		for sent := 0; sent < total; sent += len(chunk) {
			c.SetWriteDeadline(time.Now().Add(5 * time.Second))
			if _, sendErr = c.Write(chunk); sendErr != nil {
				return
			}
		}
	}()

	p, err := NewPoller(qs)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	buf := make([][]byte, 64)
	var isn uint32
	var haveISN bool
	seen := make([]bool, total) // stream bytes seen (retransmissions may repeat some)
	var super []byte            // a copy of the largest superframe
	var gsoFrames, bad int
	payload := 0
	deadline := time.Now().Add(10 * time.Second)
	for payload < total && time.Now().Before(deadline) {
		idle := true
		for qi, q := range qs {
			k, err := q.Recv(buf)
			if err != nil {
				t.Fatal(err)
			}
			idle = idle && k == 0
			for _, f := range buf[:k] {
				eth := f[vnetLen:]
				ipl, tcpl, seq, dport, ok := parseTCP4(eth)
				if !ok || dport != port {
					continue
				}
				if n > 1 {
					if pick := SteerFlowHash.Pick(f, n); pick != qi {
						t.Errorf("segment seq %d on queue %d, Pick says %d", seq, qi, pick)
					}
				}
				if eth[ethLen+ipl+13]&0x02 != 0 { // SYN
					isn, haveISN = seq+1, true
					continue
				}
				data := eth[ethLen+ipl+tcpl:]
				if len(data) == 0 || !haveISN {
					continue
				}
				// The sender repeats a 64 KiB pattern: the byte at stream
				// offset o is byte(o%65536*7). Every byte must match, in
				// small frames and in superframes alike.
				for i, b := range data {
					o := int(seq-isn) + i
					if o >= total || b != byte(o%65536*7) {
						bad++
						break
					}
					if !seen[o] {
						seen[o] = true
						payload++
					}
				}
				var h nat.VirtioNetHdr
				h.Decode(f)
				if h.GSOType == nat.GSONone {
					continue
				}
				gsoFrames++
				checkGSOHeader(t, h, eth, ipl, tcpl)
				if len(f) > len(super) {
					super = append(make([]byte, 0, len(f)), f...)
				}
			}
			q.Release()
		}
		if idle {
			p.Wait(20 * time.Millisecond)
		}
	}
	ln.Close()
	wg.Wait()
	if sendErr != nil {
		t.Fatalf("sender: %v", sendErr)
	}
	if bad != 0 {
		t.Fatalf("%d segments with bytes that are not the sender's", bad)
	}
	if payload < total {
		t.Fatalf("queues saw %d of %d stream bytes", payload, total)
	}
	var st Stats
	for _, q := range qs {
		st = st.Add(q.Stats())
	}
	t.Logf("%s/%d: %d GSO data frames, the largest %d bytes; stats %+v", mode, n, gsoFrames, len(super), st)
	// TCP autosizing decides how large the superframes get (usually 64
	// KiB here, sometimes less on a busy machine); TestCopyOrder sends a
	// maximal one by hand.
	if len(super) < 32<<10 {
		t.Fatalf("the largest GSO superframe had %d bytes, want >= 32 KiB", len(super))
	}
	if mode == ModeRing && st.CopyFrames == 0 {
		t.Error("ModeRing: no frame came through TP_STATUS_COPY")
	}
	if st.Truncated != 0 || st.KernelDrops != 0 {
		t.Errorf("truncated or dropped frames: %+v", st)
	}

	// Send the superframe back toward the peer (addressed to it).
	var h nat.VirtioNetHdr
	h.Decode(super)
	eth := super[vnetLen:]
	copy(eth[0:6], l.aMAC[:])
	copy(eth[6:12], info.MAC[:])
	ipl, tcpl, seq, _, _ := parseTCP4(eth)
	hdrs := ethLen + ipl + tcpl
	data := eth[hdrs:]
	sendBack := func() {
		t.Helper()
		if err := qs[0].Send(super); err != nil {
			t.Fatal(err)
		}
		if err := qs[0].Flush(); err != nil {
			t.Fatal(err)
		}
	}
	// The echo is told apart from the live traffic by its direction:
	// source a, arriving at a.
	next := func() ([]byte, nat.VirtioNetHdr) {
		for {
			f := capA.read(2 * time.Second)
			if f == nil {
				t.Fatal("the peer got no echo of the superframe")
			}
			e := f[vnetLen:]
			if _, _, s, _, ok := parseTCP4(e); ok && bytes.Equal(e[ethLen+12:ethLen+16], l.aIP) && s-seq < uint32(len(data)) {
				var g nat.VirtioNetHdr
				g.Decode(f)
				return e, g
			}
		}
	}
	sendBack()
	e, g := next()
	if len(e) != len(eth) || g.GSOType != h.GSOType || g.GSOSize != h.GSOSize {
		t.Errorf("TSO on: echo of %d bytes, GSO %d/%d; sent %d bytes, GSO %d/%d", len(e), g.GSOType, g.GSOSize, len(eth), h.GSOType, h.GSOSize)
	} else if !bytes.Equal(e[hdrs:], data) {
		t.Error("TSO on: echo payload differs")
	}

	if err := setTSO(l.b, l.bIf, false); err != nil {
		t.Fatal(err)
	}
	defer setTSO(l.b, l.bIf, true)
	sendBack()
	var got []byte
	segsN := 0
	for len(got) < len(data) {
		e, g := next()
		if g.GSOType != nat.GSONone {
			t.Fatalf("TSO off: a GSO frame (%d bytes) reached the peer", len(e))
		}
		ipl2, tcpl2, s, _, _ := parseTCP4(e)
		if s != seq+uint32(len(got)) {
			t.Fatalf("TSO off: segment seq %d, want %d", s, seq+uint32(len(got)))
		}
		if plen := len(e) - ethLen - ipl2 - tcpl2; plen > int(h.GSOSize) {
			t.Errorf("TSO off: segment of %d bytes, gso_size %d", plen, h.GSOSize)
		}
		checkSegment(t, e, g)
		got = append(got, e[ethLen+ipl2+tcpl2:]...)
		segsN++
	}
	if !bytes.Equal(got, data) {
		t.Error("TSO off: the segments do not carry the superframe's payload")
	}
	if want := (len(data) + int(h.GSOSize) - 1) / int(h.GSOSize); segsN != want {
		t.Errorf("TSO off: %d segments, want %d", segsN, want)
	}
}

// checkGSOHeader checks the virtio_net_hdr of a TCPv4 GSO superframe
// against its headers.
func checkGSOHeader(t *testing.T, h nat.VirtioNetHdr, eth []byte, ipl, tcpl int) {
	t.Helper()
	hdrs := ethLen + ipl + tcpl
	ok := h.GSOType&^nat.GSOECN == nat.GSOTCPv4 &&
		h.GSOSize > 0 && int(h.GSOSize) <= 1500-ipl-tcpl &&
		int(h.HdrLen) >= hdrs &&
		h.Flags&nat.VirtioNetHdrFNeedsCsum != 0 &&
		int(h.CsumStart) == ethLen+ipl && h.CsumOffset == 16 &&
		len(eth) == ethLen+int(binary.BigEndian.Uint16(eth[ethLen+2:]))
	if !ok {
		t.Errorf("superframe of %d bytes: bad virtio header %+v (headers %d)", len(eth), h, hdrs)
	}
}

// checkSegment checks the IPv4 header checksum and the TCP checksum of a
// segment, completing a partial one (NEEDS_CSUM) first as a NIC would.
func checkSegment(t *testing.T, eth []byte, h nat.VirtioNetHdr) {
	t.Helper()
	ip := eth[ethLen:]
	ipl := int(ip[0]&0xf) * 4
	if fold(sum16(ip[:ipl], 0)) != 0xffff {
		t.Errorf("segment: bad IPv4 header checksum")
	}
	tcp := append([]byte(nil), ip[ipl:binary.BigEndian.Uint16(ip[2:])]...)
	if h.Flags&nat.VirtioNetHdrFNeedsCsum != 0 {
		if int(h.CsumStart) != ethLen+ipl || h.CsumOffset != 16 {
			t.Fatalf("segment: partial checksum at %d+%d", h.CsumStart, h.CsumOffset)
		}
		binary.BigEndian.PutUint16(tcp[16:], ^fold(sum16(tcp, 0)))
	}
	ph := sum16(ip[12:20], 0) + ipProtoTCP + uint32(len(tcp))
	if fold(sum16(tcp, ph)) != 0xffff {
		t.Errorf("segment: bad TCP checksum")
	}
}

// TestKernelDrops fills a small ring without draining it: the kernel
// drops the rest and says so in Stats; Recv still works afterwards.
func TestKernelDrops(t *testing.T) {
	l := newLab(t)
	tx := l.raw(t, l.a, l.aIf, false, false)
	qs, _ := l.openB(t, Config{RingFrames: 8})
	q := qs[0].(*ringQueue)
	if q.frames != 8 {
		t.Fatalf("ring of %d slots, want 8", q.frames)
	}
	frame := func(i int) []byte {
		return ipv4TCP(l.bMAC, l.aMAC, [4]byte{198, 18, 0, 1}, farIP, 40000, 80, 5, 0x4000, uint32(i))
	}
	for i := range 100 {
		tx.write(t, frame(i))
	}
	time.Sleep(20 * time.Millisecond)
	st := q.Stats()
	if st.KernelDrops < 90 || st.KernelPackets < 100 {
		t.Fatalf("after 100 frames into 8 slots: %+v", st)
	}
	got, _ := drain(t, qs, 8, time.Second)
	for i, m := range got[0] {
		if m != uint32(i) {
			t.Fatalf("kept frames %v, want 0..7", got[0])
		}
	}
	for i := 100; i < 105; i++ {
		tx.write(t, frame(i))
	}
	got, _ = drain(t, qs, 5, time.Second)
	if fmt.Sprint(got[0]) != "[100 101 102 103 104]" {
		t.Fatalf("after draining, got %v", got[0])
	}
	time.Sleep(2 * kernelStatsEvery)
	st2 := q.Stats()
	if st2.KernelDrops < st.KernelDrops || st2.KernelPackets < st.KernelPackets+5 {
		t.Errorf("kernel counters not accumulated: %+v then %+v", st, st2)
	}
}

// openAll returns one queue of every kind on b: ring, socket, TX-only.
func openAll(t *testing.T, l *vlab) map[string]Queue {
	qs := map[string]Queue{}
	r, _ := l.openB(t, Config{Mode: ModeRing})
	qs["ring"] = r[0]
	s, _ := l.openB(t, Config{Mode: ModeSocket})
	qs["socket"] = s[0]
	if err := inNS(l.b, func() (err error) {
		qs["tx"], _, err = OpenTX(l.bIf)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	m, err := NewMem("mem", 4)
	if err != nil {
		t.Fatal(err)
	}
	qs["mem"] = m
	return qs
}

// TestClose: Close wakes a Poller blocked on the queue; afterwards Recv,
// Send and Flush return ErrClosed; a second Close is harmless.
func TestClose(t *testing.T) {
	l := newLab(t)
	for name, q := range openAll(t, l) {
		t.Run(name, func(t *testing.T) {
			p, err := NewPoller([]Queue{q})
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			done := make(chan error, 1)
			go func() {
				_, err := p.Wait(-1)
				done <- err
			}()
			time.Sleep(50 * time.Millisecond)
			select {
			case err := <-done:
				t.Fatalf("Wait returned before Close: %v", err)
			default:
			}
			if err := q.Close(); err != nil {
				t.Fatal(err)
			}
			select {
			case err := <-done:
				if err != nil {
					t.Fatal(err)
				}
			case <-time.After(2 * time.Second):
				t.Fatal("Close did not wake the Poller")
			}
			if _, err := q.Recv(make([][]byte, 4)); err != ErrClosed {
				t.Errorf("Recv after Close: %v", err)
			}
			if err := q.Send(make([]byte, 60)); err != ErrClosed {
				t.Errorf("Send after Close: %v", err)
			}
			if err := q.Flush(); err != ErrClosed {
				t.Errorf("Flush after Close: %v", err)
			}
			q.Release()
			if err := q.Close(); err != nil {
				t.Errorf("second Close: %v", err)
			}
			_ = q.Stats()
			if fd := q.Fd(); fd >= 0 && name != "mem" {
				t.Errorf("Fd after Close = %d", fd)
			}
			// A Poller built after Close returns at once.
			p2, err := NewPoller([]Queue{q})
			if err != nil {
				t.Fatal(err)
			}
			defer p2.Close()
			start := time.Now()
			if _, err := p2.Wait(time.Second); err != nil {
				t.Fatal(err)
			}
			if d := time.Since(start); d > 500*time.Millisecond {
				t.Errorf("Wait on a closed queue took %v", d)
			}
		})
	}
}

// TestCloseWhileHeld: Close while the worker holds received frames keeps
// their memory valid until Release, which then frees the queue.
func TestCloseWhileHeld(t *testing.T) {
	l := newLab(t)
	tx := l.raw(t, l.a, l.aIf, false, false)
	for _, mode := range modes {
		t.Run(string(mode), func(t *testing.T) {
			qs, _ := l.openB(t, Config{Mode: mode})
			q := qs[0]
			sent := ipv4TCP(l.bMAC, l.aMAC, [4]byte{198, 18, 0, 1}, farIP, 40000, 80, 5, 0x4000, 7)
			tx.write(t, sent)
			p, _ := NewPoller(qs)
			defer p.Close()
			buf := make([][]byte, 4)
			var k int
			for deadline := time.Now().Add(2 * time.Second); k == 0 && time.Now().Before(deadline); {
				p.Wait(10 * time.Millisecond)
				var err error
				if k, err = q.Recv(buf); err != nil {
					t.Fatal(err)
				}
			}
			if k == 0 {
				t.Fatal("no frame")
			}
			fd := q.Fd()
			var st unix.Stat_t
			if err := unix.Fstat(fd, &st); err != nil {
				t.Fatal(err)
			}
			closed := make(chan struct{})
			go func() { q.Close(); close(closed) }()
			<-closed
			// Still mapped and ours: read and write it.
			if !bytes.Equal(buf[0][vnetLen:], sent) {
				t.Fatal("held frame changed after Close")
			}
			buf[0][vnetLen] ^= 0xff
			if _, err := q.Recv(buf[1:]); err != ErrClosed {
				t.Errorf("Recv after Close: %v", err)
			}
			q.Release()
			var st2 unix.Stat_t
			if err := unix.Fstat(fd, &st2); err == nil && st2.Ino == st.Ino {
				t.Error("socket still open after Close and Release")
			}
		})
	}
}

// TestOpenTX: a transmit-only queue sends (gratuitous ARP), receives
// nothing, and the link's receiving queues do not see its frames.
func TestOpenTX(t *testing.T) {
	l := newLab(t)
	capA := l.raw(t, l.a, l.aIf, false, true)
	rx, _ := l.openB(t, Config{Queues: 2})
	var q Queue
	var info Info
	if err := inNS(l.b, func() (err error) {
		q, info, err = OpenTX(l.bIf)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	if q.Fd() != -1 || info.MAC != l.bMAC {
		t.Fatalf("Fd %d, Info %+v", q.Fd(), info)
	}
	for i := range 10 {
		if err := q.Send(withVnet(arpFrame(info.MAC, [4]byte(l.bIP), [4]byte(l.bIP), uint32(i)))); err != nil {
			t.Fatal(err)
		}
	}
	if err := q.Flush(); err != nil {
		t.Fatal(err)
	}
	for seen := 0; seen < 10; {
		f := capA.read(2 * time.Second)
		if f == nil {
			t.Fatalf("peer got %d of 10 ARP frames", seen)
		}
		if m, ok := markerOf(f); ok && m == uint32(seen) {
			seen++
		}
	}
	if st := q.Stats(); st.TxFrames != 10 || st.TxErrors != 0 {
		t.Errorf("stats %+v", st)
	}
	if k, err := q.Recv(make([][]byte, 4)); k != 0 || err != nil {
		t.Errorf("Recv = %d, %v", k, err)
	}
	time.Sleep(20 * time.Millisecond)
	for i, r := range rx {
		buf := make([][]byte, 16)
		k, _ := r.Recv(buf)
		for _, f := range buf[:k] {
			if _, ok := markerOf(f[vnetLen:]); ok {
				t.Errorf("receiving queue %d saw the TX queue's frame", i)
			}
		}
		r.Release()
	}
}

// TestSendErrors: frames the kernel refuses are counted, never returned
// as errors; a too-short frame is the caller's bug.
func TestSendErrors(t *testing.T) {
	l := newLab(t)
	for name, q := range openAll(t, l) {
		if name == "mem" {
			continue
		}
		t.Run(name, func(t *testing.T) {
			if err := q.Send(make([]byte, 20)); err == nil {
				t.Error("Send of a 20-byte frame: no error")
			}
			big := withVnet(make([]byte, 3000)) // over the MTU, no GSO: EMSGSIZE
			copy(big[vnetLen:], l.aMAC[:])
			good := withVnet(arpFrame(l.bMAC, [4]byte(l.bIP), [4]byte(l.bIP), 1))
			for _, f := range [][]byte{good, big, good} {
				if err := q.Send(f); err != nil {
					t.Fatal(err)
				}
			}
			if err := q.Flush(); err != nil {
				t.Fatal(err)
			}
			if st := q.Stats(); st.TxFrames != 2 || st.TxErrors != 1 {
				t.Errorf("stats %+v, want 2 sent, 1 refused", st)
			}
		})
	}
}

// TestRingAllocs: the ModeRing hot path (Recv, Send from the ring, Flush,
// Release) allocates nothing, on a real socket.
func TestRingAllocs(t *testing.T) {
	l := newLab(t)
	tx := l.raw(t, l.a, l.aIf, false, false)
	qs, _ := l.openB(t, Config{RingFrames: 2048})
	q := qs[0]
	const runs, batch = 100, 8
	for i := range (runs + 2) * batch {
		tx.write(t, ipv4TCP(l.bMAC, l.aMAC, [4]byte{198, 18, 0, 1}, farIP, 40000, 80, 5, 0x4000, uint32(i)))
	}
	time.Sleep(20 * time.Millisecond)
	buf := make([][]byte, batch)
	var short int
	allocs := testing.AllocsPerRun(runs, func() {
		n, err := q.Recv(buf)
		if err != nil || n != batch {
			short++
		}
		for _, f := range buf[:n] {
			swapMACs(f[vnetLen:])
			q.Send(f)
		}
		q.Flush()
		q.Release()
	})
	if short != 0 {
		t.Fatalf("%d runs got fewer than %d frames", short, batch)
	}
	if allocs != 0 {
		t.Errorf("%.1f allocations per Recv/Send/Flush/Release", allocs)
	}
	if st := q.Stats(); st.TxFrames < runs*batch || st.TxErrors != 0 {
		t.Errorf("stats %+v", st)
	}

	// The TP_STATUS_COPY path too: superframes and small frames mixed.
	vtx := l.raw(t, l.a, l.aIf, true, false)
	const copyRuns = 20
	for i := range (copyRuns + 2) * 4 {
		if i%2 == 0 {
			vtx.write(t, gsoFrame(l.bMAC, l.aMAC, [4]byte{198, 18, 0, 1}, farIP, 20000, uint32(i)))
		} else {
			vtx.write(t, withVnet(ipv4TCP(l.bMAC, l.aMAC, [4]byte{198, 18, 0, 1}, farIP, 40000, 80, 5, 0x4000, uint32(i))))
		}
	}
	time.Sleep(20 * time.Millisecond)
	before := q.Stats().CopyFrames
	short = 0
	allocs = testing.AllocsPerRun(copyRuns, func() {
		if n, err := q.Recv(buf[:4]); err != nil || n != 4 {
			short++
		}
		q.Release()
	})
	if short != 0 {
		t.Fatalf("%d runs got fewer than 4 frames", short)
	}
	if copied := q.Stats().CopyFrames - before; copied < copyRuns { // (8 small frames are left from above)
		t.Fatalf("only %d frames through TP_STATUS_COPY", copied)
	}
	if allocs != 0 {
		t.Errorf("%.1f allocations per Recv/Release with superframes", allocs)
	}
}

// gsoFrame returns a virtio_net_hdr + Ethernet frame carrying an IPv4 TCP
// GSO superframe of payload bytes (gso_size 1448, partial checksum), with
// the test marker at the start of the payload.
func gsoFrame(dst, src [6]byte, sip, dip [4]byte, payload int, marker uint32) []byte {
	eth := ipv4TCP(dst, src, sip, dip, 40000, 80, 5, 0x4000, marker)
	eth = append(eth, make([]byte, payload-8)...)
	for i := ethLen + 40 + 8; i < len(eth); i++ {
		eth[i] = byte(i)
	}
	ip := eth[ethLen:]
	binary.BigEndian.PutUint16(ip[2:], uint16(len(ip)))
	binary.BigEndian.PutUint16(ip[10:], 0)
	binary.BigEndian.PutUint16(ip[10:], ipChecksum(ip[:20]))
	// CHECKSUM_PARTIAL: the field holds the pseudo-header sum.
	binary.BigEndian.PutUint16(ip[36:], fold(sum16(ip[12:20], 0)+ipProtoTCP+uint32(len(ip)-20)))
	h := nat.VirtioNetHdr{
		Flags: nat.VirtioNetHdrFNeedsCsum, GSOType: nat.GSOTCPv4,
		HdrLen: ethLen + 40, GSOSize: 1448, CsumStart: ethLen + 20, CsumOffset: 16,
	}
	f := withVnet(eth)
	h.Encode(f)
	return f
}

// pinned runs fn on a locked thread bound to one CPU, so that every frame
// fn sends goes through that CPU's backlog, in order.
func pinned(fn func()) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		var old, one unix.CPUSet
		if err := unix.SchedGetaffinity(0, &old); err == nil {
			one.Set(0)
			unix.SchedSetaffinity(0, &one)
			defer unix.SchedSetaffinity(0, &old)
		}
		fn()
	}()
	<-done
}

// TestCopyOrder interleaves superframes (larger than a ring slot: read
// through TP_STATUS_COPY) with small frames, sent from one CPU: Recv must
// hand them out in exactly the order sent, each whole, with its virtio
// header.
func TestCopyOrder(t *testing.T) {
	l := newLab(t)
	tx := l.raw(t, l.a, l.aIf, true, false)
	for _, mode := range modes {
		t.Run(string(mode), func(t *testing.T) {
			qs, _ := l.openB(t, Config{Mode: mode})
			const frames = 240
			sent := make([][]byte, frames)
			bigs := 0
			for i := range sent {
				if i%3 == 0 {
					size := 2000 + i*271%63000
					if i == 3 {
						// The largest superframe a veth passes whole: larger
						// skbs (skb->len >= gso_max_size, 65536) are
						// segmented on transmit (gso_features_check).
						size = 65535 - ethLen - 40
					}
					sent[i] = gsoFrame(l.bMAC, l.aMAC, [4]byte{198, 18, 0, 1}, farIP, size, uint32(i))
					bigs++
				} else {
					sent[i] = withVnet(ipv4TCP(l.bMAC, l.aMAC, [4]byte{198, 18, 0, 1}, farIP, 40000, 80, 5, 0x4000, uint32(i)))
				}
			}
			pinned(func() {
				for i, f := range sent {
					tx.write(t, f)
					if i%40 == 39 {
						time.Sleep(time.Millisecond)
					}
				}
			})
			got, frs := drain(t, qs, frames, 5*time.Second)
			if len(got[0]) != frames {
				t.Fatalf("received %d of %d frames", len(got[0]), frames)
			}
			for i, m := range got[0] {
				if m != uint32(i) {
					t.Fatalf("frame %d in position %d: order %v", m, i, got[0])
				}
				f, want := frs[0][i], sent[i]
				if !bytes.Equal(f[vnetLen:], want[vnetLen:]) {
					t.Fatalf("frame %d: %d bytes differ from the %d sent", i, len(f), len(want))
				}
				var h, wh nat.VirtioNetHdr
				h.Decode(f)
				wh.Decode(want)
				if h.GSOType != wh.GSOType || h.GSOSize != wh.GSOSize || h.Flags&nat.VirtioNetHdrFNeedsCsum != wh.Flags&nat.VirtioNetHdrFNeedsCsum ||
					(wh.GSOType != 0 && (h.CsumStart != wh.CsumStart || h.CsumOffset != wh.CsumOffset)) {
					t.Errorf("frame %d: virtio header %+v, sent %+v", i, h, wh)
				}
			}
			st := qs[0].Stats()
			if mode == ModeRing && st.CopyFrames != uint64(bigs) {
				t.Errorf("CopyFrames %d, want %d", st.CopyFrames, bigs)
			}
			if st.Truncated != 0 || st.KernelDrops != 0 {
				t.Errorf("stats %+v", st)
			}
		})
	}
}

// TestPollerSpin: a spinning Wait returns when a frame lands in the ring,
// when Wake is called, and when the queue is closed; with nothing, it
// spins for the spin time and then sleeps in poll(2) until the timeout.
func TestPollerSpin(t *testing.T) {
	l := newLab(t)
	tx := l.raw(t, l.a, l.aIf, false, false)
	qs, _ := l.openB(t, Config{})
	q := qs[0]
	p, err := NewPoller(qs)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	p.SetSpin(20 * time.Millisecond)

	start := time.Now()
	if woken, err := p.Wait(60 * time.Millisecond); woken || err != nil {
		t.Fatalf("idle Wait: %v, %v", woken, err)
	}
	if d := time.Since(start); d < 55*time.Millisecond {
		t.Errorf("idle Wait returned after %v, want the 60 ms timeout", d)
	}

	go func() {
		time.Sleep(5 * time.Millisecond)
		tx.write(t, ipv4TCP(l.bMAC, l.aMAC, [4]byte{198, 18, 0, 1}, farIP, 1, 2, 5, 0x4000, 1))
	}()
	if _, err := p.Wait(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	buf := make([][]byte, 4)
	if n, _ := q.Recv(buf); n != 1 {
		t.Fatalf("after a spinning Wait: Recv = %d", n)
	}
	q.Release()

	go func() { time.Sleep(5 * time.Millisecond); p.Wake() }()
	start = time.Now()
	if woken, _ := p.Wait(5 * time.Second); !woken {
		t.Error("Wake during spin: not woken")
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("Wake during spin took %v", d)
	}

	go func() { time.Sleep(5 * time.Millisecond); q.Close() }()
	start = time.Now()
	p.Wait(5 * time.Second)
	if d := time.Since(start); d > time.Second {
		t.Errorf("Close during spin took %v", d)
	}
	if _, err := q.Recv(buf); err != ErrClosed {
		t.Errorf("Recv after Close: %v", err)
	}
}

// TestVLANTagged: the kernel takes an 802.1Q or 802.1ad tag off a frame
// before AF_PACKET sees it (__netif_receive_skb_core → skb_vlan_untag;
// on a NIC, rx-vlan-offload), so the bytes tslb reads look untagged.
// Both modes must refuse such frames by the metadata (tp_status
// TP_STATUS_VLAN_VALID in the ring slot or in PACKET_AUXDATA) and count
// them, and still deliver every untagged frame.
func TestVLANTagged(t *testing.T) {
	l := newLab(t)
	tx := l.raw(t, l.a, l.aIf, false, false)
	tag := func(f []byte, tpid, tci uint16) []byte {
		g := make([]byte, 0, len(f)+4)
		g = append(g, f[:12]...)
		g = binary.BigEndian.AppendUint16(g, tpid)
		g = binary.BigEndian.AppendUint16(g, tci)
		return append(g, f[12:]...)
	}
	for _, mode := range modes {
		t.Run(fmt.Sprint(mode), func(t *testing.T) {
			qs, _ := l.openB(t, Config{Mode: mode, Queues: 2})
			const tagged, plain = 30, 20
			for i := range tagged + plain {
				f := ipv4TCP(l.bMAC, l.aMAC, [4]byte{198, 18, 0, byte(i % 7)}, farIP, uint16(40000+i%5), 80, 5, 0x4000, uint32(i))
				switch {
				case i >= tagged:
				case i%3 == 0:
					f = tag(f, 0x8100, 100) // 802.1Q, VLAN 100
				case i%3 == 1:
					f = tag(f, 0x8100, 5<<13) // priority tag: VLAN 0, PCP 5
				default:
					f = tag(f, 0x88a8, 200) // 802.1ad service tag
				}
				tx.write(t, f)
			}
			got, _ := drain(t, qs, plain, 5*time.Second)
			n := 0
			for _, ms := range got {
				for _, m := range ms {
					if m < tagged {
						t.Errorf("tagged frame %d delivered", m)
					}
					n++
				}
			}
			if n != plain {
				t.Errorf("%d untagged frames delivered, want %d", n, plain)
			}
			var st Stats
			for _, q := range qs {
				st = st.Add(q.Stats())
			}
			if st.VLANTagged != tagged {
				t.Errorf("Stats.VLANTagged = %d, want %d", st.VLANTagged, tagged)
			}
		})
	}
}
