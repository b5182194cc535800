package lab

import (
	"errors"
	"fmt"
	"net"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// RawSender writes whole Ethernet frames on one interface of a namespace
// through an AF_PACKET SOCK_RAW socket: what the frame says is what goes
// on the wire (no kernel stack, no checksum fixes), for crafted and
// spoofed frames. The socket bypasses the qdisc (PACKET_QDISC_BYPASS) and
// sends batches with one sendmmsg(2) each.
type RawSender struct {
	ns   *NS
	fd   int
	ifi  *net.Interface
	hdrs []mmsghdr
	iovs []unix.Iovec
}

// mmsghdr is struct mmsghdr of <sys/socket.h> (64-bit layout).
type mmsghdr struct {
	hdr unix.Msghdr
	len uint32
	_   [4]byte
}

// maxBatch bounds the frames of one sendmmsg call.
const maxBatch = 256

// RawSender opens a raw sender on ifname inside n. Close it when done.
func (n *NS) RawSender(ifname string) (*RawSender, error) {
	s := &RawSender{ns: n, fd: -1}
	err := n.Do(func() error {
		ifi, err := net.InterfaceByName(ifname)
		if err != nil {
			return err
		}
		s.ifi = ifi
		// Protocol 0: the socket receives nothing, it only sends.
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		s.fd = fd
		unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_QDISC_BYPASS, 1) // best effort
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, 4<<20)
		return unix.Bind(fd, &unix.SockaddrLinklayer{Ifindex: ifi.Index})
	})
	if err != nil {
		if s.fd >= 0 {
			unix.Close(s.fd)
		}
		return nil, fmt.Errorf("lab: raw sender on %s in %s: %w", ifname, n.Name, err)
	}
	s.hdrs = make([]mmsghdr, maxBatch)
	s.iovs = make([]unix.Iovec, maxBatch)
	return s, nil
}

// MAC is the hardware address of the sender's interface.
func (s *RawSender) MAC() net.HardwareAddr { return s.ifi.HardwareAddr }

// Send writes one frame.
func (s *RawSender) Send(frame []byte) error {
	_, err := s.SendBatch([][]byte{frame})
	return err
}

// maxRetries bounds the retries of SendBatch on a full socket buffer.
const maxRetries = 10000

// SendBatch writes frames with as few sendmmsg(2) calls as it takes
// (maxBatch frames each) and returns how many the kernel took. A full
// socket buffer (ENOBUFS, EAGAIN) is retried, at most maxRetries times in
// all; any other error stops it.
func (s *RawSender) SendBatch(frames [][]byte) (int, error) {
	sent, retries := 0, 0
	for sent < len(frames) {
		n := min(len(frames)-sent, maxBatch)
		for i := 0; i < n; i++ {
			f := frames[sent+i]
			s.iovs[i] = unix.Iovec{Base: &f[0]}
			s.iovs[i].SetLen(len(f))
			s.hdrs[i] = mmsghdr{}
			s.hdrs[i].hdr.Iov = &s.iovs[i]
			s.hdrs[i].hdr.SetIovlen(1)
		}
		r, _, e := unix.Syscall6(unix.SYS_SENDMMSG, uintptr(s.fd), uintptr(unsafe.Pointer(&s.hdrs[0])), uintptr(n), 0, 0, 0)
		if e != 0 {
			if (errors.Is(e, unix.ENOBUFS) || errors.Is(e, unix.EAGAIN) || errors.Is(e, unix.EINTR)) && retries < maxRetries {
				retries++
				time.Sleep(10 * time.Microsecond)
				continue
			}
			return sent, fmt.Errorf("lab: sendmmsg: %w", e)
		}
		sent += int(r)
	}
	return sent, nil
}

// Close closes the socket.
func (s *RawSender) Close() error {
	if s.fd < 0 {
		return nil
	}
	err := unix.Close(s.fd)
	s.fd = -1
	return err
}
