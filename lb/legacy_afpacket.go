package lb

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/mdlayher/packet"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"

	"tslb/lb/link"
	"tslb/nat"
)

// afpacketLink is a LinkIO over an AF_PACKET socket with PACKET_VNET_HDR and
// PACKET_IGNORE_OUTGOING set.
type afpacketLink struct {
	conn *packet.Conn
	rc   syscall.RawConn

	rbuf []byte
	st   link.Stats
	mu   sync.Mutex
	pub  link.Stats

	wfd    int
	closed atomic.Bool
}

// etherFilter admits only IPv4 and ARP frames; it is attached before bind(2)
// (mdlayher/packet Config.Filter) after a drop-all filter, so no frame is
// queued before PACKET_VNET_HDR is set (a frame queued earlier would lack
// the virtio header and be misparsed).
var etherFilter = mustAssemble([]bpf.Instruction{
	bpf.LoadAbsolute{Off: 12, Size: 2},
	bpf.JumpIf{Cond: bpf.JumpEqual, Val: nat.EtherTypeIPv4, SkipTrue: 2},
	bpf.JumpIf{Cond: bpf.JumpEqual, Val: nat.EtherTypeARP, SkipTrue: 1},
	bpf.RetConstant{Val: 0},
	bpf.RetConstant{Val: 0x40000},
})

var dropAll = mustAssemble([]bpf.Instruction{bpf.RetConstant{Val: 0}})

func mustAssemble(ins []bpf.Instruction) []bpf.RawInstruction {
	raw, err := bpf.Assemble(ins)
	if err != nil {
		panic(err)
	}
	return raw
}

// openLink opens interface name for tslb's datapath with the per-frame
// socket path; it supports one queue only (a stand-in until lb/link's
// ring and fanout are merged).
func openLink(name string, cfg link.Config) ([]link.Queue, link.Info, error) {
	if cfg.Queues > 1 {
		return nil, link.Info{}, fmt.Errorf("lb: %d workers need lb/link fanout, not built yet", cfg.Queues)
	}
	l, info, err := OpenAFPacket(name)
	if err != nil {
		return nil, link.Info{}, err
	}
	return []link.Queue{l.(*afpacketLink)}, link.Info{Name: info.Name, MAC: info.MAC, MTU: info.MTU, Index: info.Index}, nil
}

// LinkInfo describes an opened link.
type LinkInfo struct {
	Name  string
	MAC   nat.MAC
	MTU   int
	Index int
}

// OpenAFPacket opens interface name for tslb's datapath. The socket gets
// PACKET_VNET_HDR (GSO superframes and partial checksums are carried across
// tslb and segmented/completed by the kernel on transmit),
// PACKET_IGNORE_OUTGOING (tslb does not read back its own transmits) and
// large socket buffers.
func OpenAFPacket(name string) (any, LinkInfo, error) {
	ifi, err := net.InterfaceByName(name)
	if err != nil {
		return nil, LinkInfo{}, fmt.Errorf("lb: link %q: %w", name, err)
	}
	if len(ifi.HardwareAddr) != 6 {
		return nil, LinkInfo{}, fmt.Errorf("lb: link %q: not an Ethernet interface", name)
	}
	var mac nat.MAC
	copy(mac[:], ifi.HardwareAddr)
	info := LinkInfo{Name: name, MAC: mac, MTU: ifi.MTU, Index: ifi.Index}

	conn, err := packet.Listen(ifi, packet.Raw, unix.ETH_P_ALL, &packet.Config{Filter: dropAll})
	if err != nil {
		return nil, info, fmt.Errorf("lb: link %q: %w", name, err)
	}
	rc, err := conn.SyscallConn()
	if err != nil {
		conn.Close()
		return nil, info, fmt.Errorf("lb: link %q: %w", name, err)
	}
	var serr error
	wfd := -1
	cerr := rc.Control(func(fd uintptr) {
		wfd = int(fd)
		set := func(level, opt, v int, what string) {
			if serr != nil {
				return
			}
			if err := unix.SetsockoptInt(int(fd), level, opt, v); err != nil {
				serr = fmt.Errorf("%s: %w", what, err)
			}
		}
		set(unix.SOL_PACKET, unix.PACKET_VNET_HDR, 1, "PACKET_VNET_HDR")
		set(unix.SOL_PACKET, unix.PACKET_IGNORE_OUTGOING, 1, "PACKET_IGNORE_OUTGOING")
		// Best effort: SO_RCVBUFFORCE needs CAP_NET_ADMIN; fall back to SO_RCVBUF.
		if err := unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 8<<20); err != nil {
			_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, 8<<20)
		}
		if err := unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, 8<<20); err != nil {
			_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUF, 8<<20)
		}
	})
	if cerr == nil {
		cerr = serr
	}
	if cerr == nil {
		cerr = conn.SetBPF(etherFilter)
	}
	if cerr != nil {
		conn.Close()
		return nil, info, fmt.Errorf("lb: link %q: %w", name, cerr)
	}
	l := &afpacketLink{conn: conn, rc: rc, wfd: wfd, rbuf: make([]byte, frameBufSize)}
	return l, info, nil
}

// Fd implements link.Queue.
func (l *afpacketLink) Fd() int { return l.wfd }

// Recv implements link.Queue: one non-blocking read.
func (l *afpacketLink) Recv(frames [][]byte) (int, error) {
	if l.closed.Load() {
		return 0, link.ErrClosed
	}
	n, err := unix.Read(l.wfd, l.rbuf)
	if err == unix.EAGAIN || err == unix.EINTR {
		return 0, nil
	}
	if err != nil {
		if l.closed.Load() {
			return 0, link.ErrClosed
		}
		return 0, err
	}
	l.st.RxFrames++
	l.st.RxBytes += uint64(max(n-nat.VirtioNetHdrLen, 0))
	frames[0] = l.rbuf[:n]
	l.publish()
	return 1, nil
}

// Release implements link.Queue.
func (l *afpacketLink) Release() {}

// Send implements link.Queue: one write.
func (l *afpacketLink) Send(b []byte) error {
	if l.closed.Load() {
		return link.ErrClosed
	}
	for {
		_, err := unix.Write(l.wfd, b)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			l.st.TxErrors++
			return nil // counted in Stats
		}
		l.st.TxFrames++
		l.st.TxBytes += uint64(max(len(b)-nat.VirtioNetHdrLen, 0))
		return nil
	}
}

// Flush implements link.Queue.
func (l *afpacketLink) Flush() error { l.publish(); return nil }

func (l *afpacketLink) publish() {
	l.mu.Lock()
	l.pub = l.st
	l.mu.Unlock()
}

// Stats implements link.Queue.
func (l *afpacketLink) Stats() link.Stats {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.pub
}

var errLinkClosed = errors.New("lb: link closed")

// Close implements LinkIO.
func (l *afpacketLink) Close() error {
	if l.closed.Swap(true) {
		return nil
	}
	return l.conn.Close()
}
