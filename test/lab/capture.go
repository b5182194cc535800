package lab

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"
	"github.com/mdlayher/packet"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// CaptureSnapLen is how many leading bytes of each frame a Capture keeps:
// enough for Ethernet, IPv4 and TCP headers with options.
const CaptureSnapLen = 256

// captureDrain bounds how long Stop keeps reading frames already queued in
// the socket.
const captureDrain = 20 * time.Millisecond

// Frame is one frame seen by a Capture.
type Frame struct {
	// Time is when the capture goroutine read the frame.
	Time time.Time
	// Data holds the first min(Len, CaptureSnapLen) bytes of the frame.
	Data []byte
	// Outgoing reports that the frame was sent by the captured interface
	// (PACKET_OUTGOING) rather than received on it.
	Outgoing bool
	// Len is the frame's length on the wire; with TSO/GSO on a veth it can
	// exceed the MTU (a superframe).
	Len int
}

// Capture records frames on one interface of a namespace through an
// AF_PACKET socket (github.com/mdlayher/packet). It is an independent
// observer for tests; it neither filters nor diverts traffic.
type Capture struct {
	ns   *NS
	conn *packet.Conn
	max  int
	done chan struct{} // closed when the reader goroutine exits

	mu      sync.Mutex
	frames  []Frame
	dropped int // frames seen after max was reached
	err     error

	stopOnce sync.Once
}

// Capture starts recording the frames seen on ifname inside n, keeping at
// most maxFrames frames (further frames are counted by Dropped) of at most
// CaptureSnapLen bytes each. Stop it with Stop; Lab.Close also stops it.
func (n *NS) Capture(ifname string, maxFrames int) (*Capture, error) {
	return n.CaptureFiltered(ifname, maxFrames, nil)
}

// CaptureFiltered is Capture keeping only the frames a classic BPF
// program accepts (attached before the socket is bound, so nothing else
// is ever queued); nil keeps everything.
func (n *NS) CaptureFiltered(ifname string, maxFrames int, filter []bpf.RawInstruction) (*Capture, error) {
	if maxFrames <= 0 {
		return nil, fmt.Errorf("lab: capture maxFrames=%d must be positive", maxFrames)
	}
	var conn *packet.Conn
	err := n.Do(func() error {
		ifi, err := net.InterfaceByName(ifname)
		if err != nil {
			return err
		}
		var pc *packet.Config
		if filter != nil {
			pc = &packet.Config{Filter: filter}
		}
		conn, err = packet.Listen(ifi, packet.Raw, unix.ETH_P_ALL, pc)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("lab: capture %s in %s: %w", ifname, n.Name, err)
	}
	rc, err := conn.SyscallConn()
	if err != nil {
		conn.Close()
		return nil, err
	}
	// A larger receive buffer keeps short bursts from being dropped; a
	// failure only makes drops more likely.
	rc.Control(func(fd uintptr) {
		unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 8<<20)
	})
	c := &Capture{ns: n, conn: conn, max: maxFrames, done: make(chan struct{})}
	if !n.addCapture(c) {
		conn.Close()
		return nil, errClosed
	}
	go c.run(rc)
	return c, nil
}

// run reads frames until the socket fails (closed or read deadline).
func (c *Capture) run(rc interface {
	Read(func(fd uintptr) bool) error
}) {
	defer close(c.done)
	buf := make([]byte, 1<<16)
	for {
		var (
			n    int
			from unix.Sockaddr
			rerr error
		)
		err := rc.Read(func(fd uintptr) bool {
			n, from, rerr = unix.Recvfrom(int(fd), buf, unix.MSG_DONTWAIT|unix.MSG_TRUNC)
			return !errors.Is(rerr, unix.EAGAIN)
		})
		if err == nil {
			err = rerr
		}
		if err != nil {
			if !errors.Is(err, os.ErrDeadlineExceeded) && !errors.Is(err, net.ErrClosed) {
				c.mu.Lock()
				c.err = err
				c.mu.Unlock()
			}
			return
		}
		out := false
		if sll, ok := from.(*unix.SockaddrLinklayer); ok {
			out = sll.Pkttype == unix.PACKET_OUTGOING
		}
		c.mu.Lock()
		if len(c.frames) < c.max {
			k := min(n, len(buf), CaptureSnapLen)
			c.frames = append(c.frames, Frame{
				Time:     time.Now(),
				Data:     append([]byte(nil), buf[:k]...),
				Outgoing: out,
				Len:      n,
			})
		} else {
			c.dropped++
		}
		c.mu.Unlock()
	}
}

// Stop reads what is already queued (for at most a few milliseconds),
// stops the capture and returns the frames in arrival order. Later calls
// return the same frames.
func (c *Capture) Stop() []Frame {
	c.stopOnce.Do(func() {
		c.conn.SetReadDeadline(time.Now().Add(captureDrain))
		<-c.done
		c.conn.Close()
		c.ns.removeCapture(c)
	})
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.frames
}

// Dropped returns how many frames arrived after maxFrames was reached.
func (c *Capture) Dropped() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.dropped
}

// Err returns the read error that ended the capture early, if any.
func (c *Capture) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// addCapture registers c so the lab can stop it on Close; it reports false
// if n is already closed.
func (n *NS) addCapture(c *Capture) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if !n.handle.IsOpen() {
		return false
	}
	if n.captures == nil {
		n.captures = make(map[*Capture]struct{})
	}
	n.captures[c] = struct{}{}
	return true
}

// removeCapture forgets c.
func (n *NS) removeCapture(c *Capture) {
	n.mu.Lock()
	delete(n.captures, c)
	n.mu.Unlock()
}

// stopCaptures stops every capture still running in n.
func (n *NS) stopCaptures() {
	n.mu.Lock()
	cs := make([]*Capture, 0, len(n.captures))
	for c := range n.captures {
		cs = append(cs, c)
	}
	n.mu.Unlock()
	for _, c := range cs {
		c.Stop()
	}
}

// WritePcap writes frames to path as a pcap file (nanosecond timestamps,
// LinkTypeEthernet), recording each frame's original length.
func WritePcap(path string, frames []Frame) (err error) {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("lab: %w", err)
	}
	defer func() {
		if cerr := f.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("lab: %w", cerr)
		}
	}()
	bw := bufio.NewWriter(f)
	w := pcapgo.NewWriterNanos(bw)
	if err := w.WriteFileHeader(1<<16, layers.LinkTypeEthernet); err != nil {
		return fmt.Errorf("lab: pcap header: %w", err)
	}
	for _, fr := range frames {
		ci := gopacket.CaptureInfo{
			Timestamp:     fr.Time,
			CaptureLength: len(fr.Data),
			Length:        max(fr.Len, len(fr.Data)),
		}
		if err := w.WritePacket(ci, fr.Data); err != nil {
			return fmt.Errorf("lab: pcap write: %w", err)
		}
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("lab: pcap flush: %w", err)
	}
	return nil
}

// IPHeader is the part of a decoded IPv4 or IPv6 header that DecodeTCP
// returns.
type IPHeader struct {
	// Version is 4 or 6.
	Version uint8
	// SrcIP and DstIP are the header's addresses (4 or 16 bytes).
	SrcIP, DstIP net.IP
}

// Src returns the source address.
func (h *IPHeader) Src() netip.Addr { a, _ := netip.AddrFromSlice(h.SrcIP); return a }

// Dst returns the destination address.
func (h *IPHeader) Dst() netip.Addr { a, _ := netip.AddrFromSlice(h.DstIP); return a }

// DecodeTCP decodes f as Ethernet/IPv4/TCP or Ethernet/IPv6/TCP (no IPv6
// extension headers) with gopacket, independently of tslb's own
// parser. It reports false for anything else or for headers cut short; a
// payload cut by the snap length is fine.
func DecodeTCP(f Frame) (*IPHeader, *layers.TCP, bool) {
	var (
		eth layers.Ethernet
		ip4 layers.IPv4
		ip6 layers.IPv6
		tcp layers.TCP
		pl  gopacket.Payload
	)
	p := gopacket.NewDecodingLayerParser(layers.LayerTypeEthernet, &eth, &ip4, &ip6, &tcp, &pl)
	p.IgnoreUnsupported = true
	var decoded []gopacket.LayerType
	// Errors after the TCP header (e.g. a truncated payload) do not matter.
	_ = p.DecodeLayers(f.Data, &decoded)
	var ip *IPHeader
	var sawTCP bool
	for _, t := range decoded {
		switch t {
		case layers.LayerTypeIPv4:
			ip = &IPHeader{Version: 4, SrcIP: ip4.SrcIP, DstIP: ip4.DstIP}
		case layers.LayerTypeIPv6:
			ip = &IPHeader{Version: 6, SrcIP: ip6.SrcIP, DstIP: ip6.DstIP}
		case layers.LayerTypeTCP:
			sawTCP = true
		}
	}
	if ip == nil || !sawTCP {
		return nil, nil, false
	}
	return ip, &tcp, true
}

// TCPFlagsFilter is a classic BPF program for CaptureFiltered that keeps
// untagged IPv4 TCP frames (first fragments) whose flags byte, masked
// with mask, equals value: TCPFlagsFilter(0x12, 0x02) keeps SYNs without
// ACK. A port of 0 matches any destination port.
func TCPFlagsFilter(mask, value uint8, dstPort uint16) []bpf.RawInstruction {
	prog := []bpf.Instruction{
		bpf.LoadAbsolute{Off: 12, Size: 2},                           // 0: EtherType
		bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: 0x0800, SkipTrue: 9}, // -> drop
		bpf.LoadAbsolute{Off: 23, Size: 1},                           // 2: IP protocol
		bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: 6, SkipTrue: 7},
		bpf.LoadAbsolute{Off: 20, Size: 2}, // 4: fragment offset
		bpf.JumpIf{Cond: bpf.JumpBitsSet, Val: 0x1fff, SkipTrue: 5},
		bpf.LoadMemShift{Off: 14},               // 6: X = IP header length
		bpf.LoadIndirect{Off: 14 + 13, Size: 1}, // 7: TCP flags
		bpf.ALUOpConstant{Op: bpf.ALUOpAnd, Val: uint32(mask)},
		bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: uint32(value), SkipTrue: 1},
		bpf.Jump{Skip: 1},       // 10: -> port check
		bpf.RetConstant{Val: 0}, // 11: drop
	}
	if dstPort != 0 {
		prog = append(prog,
			bpf.LoadIndirect{Off: 14 + 2, Size: 2}, // 12: TCP destination port
			bpf.JumpIf{Cond: bpf.JumpEqual, Val: uint32(dstPort), SkipTrue: 1},
			bpf.RetConstant{Val: 0},
		)
	}
	prog = append(prog, bpf.RetConstant{Val: 1 << 16})
	raw, err := bpf.Assemble(prog)
	if err != nil {
		panic("lab: TCPFlagsFilter: " + err.Error()) // a bug in the program above
	}
	return raw
}
