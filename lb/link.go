package lb

import (
	"errors"
	"fmt"
	"net"
	"sync/atomic"
	"syscall"

	"github.com/mdlayher/packet"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"

	"tslb/nat"
)

// LinkIO is the frame I/O of one link. Every frame read or written starts
// with a virtio_net_hdr (nat.VirtioNetHdrLen bytes) followed by the Ethernet
// frame, as with PACKET_VNET_HDR. It is an interface so that tests can drive
// the datapath with fake links (see mdlayher/arp's injected net.PacketConn).
type LinkIO interface {
	// ReadFrame reads one frame into b and returns its length. It is called
	// by a single goroutine per link.
	ReadFrame(b []byte) (int, error)
	// WriteFrame writes one frame. It may be called from several goroutines.
	WriteFrame(b []byte) error
	// Close unblocks ReadFrame and releases the link.
	Close() error
}

// LinkInfo describes an opened link.
type LinkInfo struct {
	Name  string  // interface name
	MAC   nat.MAC // hardware address tslb uses as source and in ARP replies
	MTU   int
	Index int
}

// afpacketLink is a LinkIO over an AF_PACKET socket with PACKET_VNET_HDR and
// PACKET_IGNORE_OUTGOING set.
type afpacketLink struct {
	conn *packet.Conn
	rc   syscall.RawConn

	// Read state: one reader goroutine per link, so the closure and its
	// fields are reused without allocation.
	rbuf []byte
	rn   int
	rerr error
	rfn  func(fd uintptr) bool

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

// OpenAFPacket opens interface name for tslb's datapath. The socket gets
// PACKET_VNET_HDR (GSO superframes and partial checksums are carried across
// tslb and segmented/completed by the kernel on transmit),
// PACKET_IGNORE_OUTGOING (tslb does not read back its own transmits) and
// large socket buffers.
func OpenAFPacket(name string) (LinkIO, LinkInfo, error) {
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
	l := &afpacketLink{conn: conn, rc: rc, wfd: wfd}
	l.rfn = l.doRead
	return l, info, nil
}

func (l *afpacketLink) doRead(fd uintptr) bool {
	l.rn, l.rerr = unix.Read(int(fd), l.rbuf)
	return l.rerr != unix.EAGAIN
}

// ReadFrame implements LinkIO.
func (l *afpacketLink) ReadFrame(b []byte) (int, error) {
	l.rbuf = b
	if err := l.rc.Read(l.rfn); err != nil {
		return 0, err
	}
	if l.rerr != nil {
		return 0, l.rerr
	}
	return l.rn, nil
}

// WriteFrame implements LinkIO. The socket is non-blocking; a full send
// buffer is reported as an error (the frame is dropped and counted), as a
// NIC queue overflow would drop it. The descriptor is cached at open: the
// datapath stops writing before it closes the link.
func (l *afpacketLink) WriteFrame(b []byte) error {
	if l.closed.Load() {
		return errLinkClosed
	}
	for {
		_, err := unix.Write(l.wfd, b)
		if err != unix.EINTR {
			return err
		}
	}
}

var errLinkClosed = errors.New("lb: link closed")

// Close implements LinkIO.
func (l *afpacketLink) Close() error {
	if l.closed.Swap(true) {
		return nil
	}
	return l.conn.Close()
}
