package link

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"sync"
	"testing"
	"time"
	"unsafe"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// A tiny lab for this package's tests: two fresh, unnamed network
// namespaces joined by a veth pair. "a" is the peer (frame generator,
// kernel TCP sender, capture), "b" holds the queues under test. Unnamed
// namespaces leave nothing behind: they vanish with the last descriptor
// or socket in them, even if the test dies. Addresses come from
// 198.18.0.0/15 only; nothing on the host is touched.

type vlab struct {
	a, b       netns.NsHandle
	aIf, bIf   string
	aMAC, bMAC [6]byte
	aIP, bIP   net.IP
}

// requireLab skips (or, with CI=true, fails) when the lab cannot be built.
func requireLab(t testing.TB) {
	t.Helper()
	var why string
	switch {
	case os.Geteuid() != 0:
		why = "need root (CAP_SYS_ADMIN, CAP_NET_ADMIN, CAP_NET_RAW) for network namespaces and AF_PACKET"
	default:
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("lab unavailable (CI=true, not skipping): %s", why)
	}
	t.Skipf("lab unavailable: %s", why)
}

// newLab builds a lab and registers its removal with t.Cleanup.
func newLab(t testing.TB) *vlab {
	t.Helper()
	requireLab(t)
	l, err := buildLab()
	if err != nil {
		if os.Getenv("CI") != "true" && errors.Is(err, unix.EPERM) {
			t.Skipf("lab unavailable: %v", err)
		}
		t.Fatalf("lab: %v", err)
	}
	t.Cleanup(l.close)
	return l
}

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

var labSeq struct {
	sync.Mutex
	n int
}

func buildLab() (l *vlab, err error) {
	l = &vlab{a: netns.None(), b: netns.None()}
	defer func() {
		if err != nil {
			l.close()
		}
	}()
	if l.a, err = newNS(); err != nil {
		return l, err
	}
	if l.b, err = newNS(); err != nil {
		return l, err
	}
	for _, ns := range []netns.NsHandle{l.a, l.b} {
		if err := inNS(ns, func() error {
			// No IPv6 neighbour discovery or MLD chatter on the lab link.
			for _, k := range []string{"all", "default"} {
				if err := os.WriteFile("/proc/sys/net/ipv6/conf/"+k+"/disable_ipv6", []byte("1"), 0); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			return l, fmt.Errorf("sysctl: %w", err)
		}
	}
	sfx := randHex(3)
	l.aIf, l.bIf = "ta"+sfx, "tb"+sfx
	labSeq.Lock()
	labSeq.n++
	seq := labSeq.n % 250
	labSeq.Unlock()
	l.aIP = net.IPv4(198, 19, byte(seq), 1).To4()
	l.bIP = net.IPv4(198, 19, byte(seq), 2).To4()

	hb, err := netlink.NewHandleAt(l.b)
	if err != nil {
		return l, err
	}
	defer hb.Close()
	ha, err := netlink.NewHandleAt(l.a)
	if err != nil {
		return l, err
	}
	defer ha.Close()
	if err := hb.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: l.bIf}, PeerName: l.aIf}); err != nil {
		return l, fmt.Errorf("veth: %w", err)
	}
	peer, err := hb.LinkByName(l.aIf)
	if err != nil {
		return l, err
	}
	if err := hb.LinkSetNsFd(peer, int(l.a)); err != nil {
		return l, fmt.Errorf("move peer: %w", err)
	}
	for _, x := range []struct {
		h    *netlink.Handle
		name string
		ip   net.IP
		mac  *[6]byte
	}{{ha, l.aIf, l.aIP, &l.aMAC}, {hb, l.bIf, l.bIP, &l.bMAC}} {
		lk, err := x.h.LinkByName(x.name)
		if err != nil {
			return l, err
		}
		if err := x.h.AddrAdd(lk, &netlink.Addr{IPNet: &net.IPNet{IP: x.ip, Mask: net.CIDRMask(24, 32)}}); err != nil {
			return l, fmt.Errorf("addr: %w", err)
		}
		if err := x.h.LinkSetUp(lk); err != nil {
			return l, err
		}
		lo, err := x.h.LinkByName("lo")
		if err == nil {
			x.h.LinkSetUp(lo)
		}
		*x.mac = [6]byte(lk.Attrs().HardwareAddr)
	}
	return l, l.waitReady()
}

// waitReady returns once frames cross the veth both ways. A device that
// has just come up transmits through noop_qdisc, which drops everything
// (and write(2) still succeeds), until linkwatch activates its real qdisc
// (linkwatch_do_dev → dev_activate), asynchronously.
func (l *vlab) waitReady() error {
	probe := func(from, to netns.NsHandle, fromIf, toIf string, src [6]byte) error {
		var tx, rx int = -1, -1
		defer func() {
			for _, fd := range []int{tx, rx} {
				if fd >= 0 {
					unix.Close(fd)
				}
			}
		}()
		open := func(ns netns.NsHandle, ifname string, proto uint16, fd *int) error {
			return inNS(ns, func() error {
				ifi, err := net.InterfaceByName(ifname)
				if err != nil {
					return err
				}
				if *fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, int(proto)); err != nil {
					return err
				}
				return unix.Bind(*fd, &unix.SockaddrLinklayer{Protocol: proto, Ifindex: ifi.Index})
			})
		}
		if err := open(from, fromIf, 0, &tx); err != nil {
			return err
		}
		const probeType = 0x88b5 // IEEE 802 local experimental EtherType
		if err := open(to, toIf, htons(probeType), &rx); err != nil {
			return err
		}
		f := make([]byte, 60)
		for i := range 6 {
			f[i] = 0xff
		}
		copy(f[6:], src[:])
		binary.BigEndian.PutUint16(f[12:], probeType)
		buf := make([]byte, 128)
		for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); {
			unix.Write(tx, f)
			time.Sleep(5 * time.Millisecond)
			if n, err := unix.Read(rx, buf); err == nil && n >= 14 {
				return nil
			}
		}
		return fmt.Errorf("no frame crossed %s -> %s in 5 s", fromIf, toIf)
	}
	if err := probe(l.a, l.b, l.aIf, l.bIf, l.aMAC); err != nil {
		return err
	}
	return probe(l.b, l.a, l.bIf, l.aIf, l.bMAC)
}

func (l *vlab) close() {
	if l.a.IsOpen() {
		l.a.Close()
	}
	if l.b.IsOpen() {
		l.b.Close()
	}
}

// newNS creates an unnamed network namespace without leaving the calling
// goroutine's thread in it.
func newNS() (ns netns.NsHandle, err error) {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			errc <- err
			return
		}
		defer orig.Close()
		ns, err = netns.New() // unshare(CLONE_NEWNET): this thread only
		if err != nil {
			errc <- err
			return
		}
		if err := netns.Set(orig); err != nil {
			errc <- err // the thread stays locked and dies with the goroutine
			return
		}
		runtime.UnlockOSThread()
		errc <- nil
	}()
	err = <-errc
	return ns, err
}

// inNS runs fn on a locked thread inside ns. Sockets fn creates stay in
// ns and may be used from any goroutine.
func inNS(ns netns.NsHandle, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			errc <- err
			return
		}
		defer orig.Close()
		if err := netns.Set(ns); err != nil {
			errc <- err
			return
		}
		ferr := fn()
		if err := netns.Set(orig); err != nil {
			errc <- errors.Join(ferr, err)
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// openB opens queues on the b end.
func (l *vlab) openB(t testing.TB, cfg Config) ([]Queue, Info) {
	t.Helper()
	var qs []Queue
	var info Info
	if err := inNS(l.b, func() (err error) {
		qs, info, err = Open(l.bIf, cfg)
		return err
	}); err != nil {
		t.Fatalf("Open(%+v): %v", cfg, err)
	}
	t.Cleanup(func() {
		for _, q := range qs {
			q.Close()
		}
	})
	return qs, info
}

// openA opens queues on the a end (the peer), for tests that use this
// package on both ends.
func (l *vlab) openA(t testing.TB, cfg Config) []Queue {
	t.Helper()
	var qs []Queue
	if err := inNS(l.a, func() (err error) {
		qs, _, err = Open(l.aIf, cfg)
		return err
	}); err != nil {
		t.Fatalf("Open(a, %+v): %v", cfg, err)
	}
	t.Cleanup(func() {
		for _, q := range qs {
			q.Close()
		}
	})
	return qs
}

// rawSock is an independent AF_PACKET socket on ns's ifname, written and
// read with plain system calls (no ring, no fanout: not the code under
// test). With vnet it carries virtio_net_hdrs like the queues. It
// receives (ETH_P_ALL, not its own transmissions) only if rx is set.
type rawSock struct {
	fd   int
	vnet bool
}

func (l *vlab) raw(t testing.TB, ns netns.NsHandle, ifname string, vnet, rx bool) *rawSock {
	t.Helper()
	s := &rawSock{fd: -1, vnet: vnet}
	err := inNS(ns, func() error {
		ifi, err := net.InterfaceByName(ifname)
		if err != nil {
			return err
		}
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		s.fd = fd
		if vnet {
			if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_VNET_HDR, 1); err != nil {
				return err
			}
		}
		if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_IGNORE_OUTGOING, 1); err != nil {
			return err
		}
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 16<<20)
		unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, 16<<20)
		proto := uint16(0)
		if rx {
			proto = htons(unix.ETH_P_ALL)
		}
		return unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: proto, Ifindex: ifi.Index})
	})
	if err != nil {
		if s.fd >= 0 {
			unix.Close(s.fd)
		}
		t.Fatalf("raw socket on %s: %v", ifname, err)
	}
	t.Cleanup(func() { unix.Close(s.fd) })
	return s
}

// write sends one frame (with a virtio_net_hdr first if the socket has
// PACKET_VNET_HDR).
func (s *rawSock) write(t testing.TB, frame []byte) {
	t.Helper()
	for {
		_, err := unix.Write(s.fd, frame)
		if err == unix.ENOBUFS || err == unix.EAGAIN {
			time.Sleep(100 * time.Microsecond)
			continue
		}
		if err != nil {
			t.Fatalf("raw write: %v", err)
		}
		return
	}
}

// read returns the next frame, or nil after timeout.
func (s *rawSock) read(timeout time.Duration) []byte {
	fds := []unix.PollFd{{Fd: int32(s.fd), Events: unix.POLLIN}}
	deadline := time.Now().Add(timeout)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return nil
		}
		n, err := unix.Poll(fds, int(left/time.Millisecond)+1)
		if err == unix.EINTR {
			continue
		}
		if err != nil || n == 0 {
			return nil
		}
		buf := make([]byte, MemFrameCap)
		r, _, e := unix.Syscall6(unix.SYS_RECVFROM, uintptr(s.fd), uintptr(unsafe.Pointer(&buf[0])),
			uintptr(len(buf)), unix.MSG_DONTWAIT, 0, 0)
		if e == unix.EAGAIN || e == unix.EINTR {
			continue
		}
		if e != 0 {
			return nil
		}
		return buf[:r]
	}
}

// drain collects frames from qs until want test markers arrived or
// timeout; it returns, per queue, the markers in arrival order (noise
// without a marker is skipped) and the frames, copied.
func drain(t testing.TB, qs []Queue, want int, timeout time.Duration) ([][]uint32, [][][]byte) {
	t.Helper()
	p, err := NewPoller(qs)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	got := make([][]uint32, len(qs))
	frames := make([][][]byte, len(qs))
	buf := make([][]byte, 64)
	total := 0
	deadline := time.Now().Add(timeout)
	for total < want && time.Now().Before(deadline) {
		any := false
		for i, q := range qs {
			n, err := q.Recv(buf)
			if err != nil {
				t.Fatalf("queue %d: Recv: %v", i, err)
			}
			for _, f := range buf[:n] {
				if m, ok := markerOf(f[vnetLen:]); ok {
					got[i] = append(got[i], m)
					frames[i] = append(frames[i], append([]byte(nil), f...))
					total++
				}
			}
			q.Release()
			any = any || n > 0
		}
		if !any {
			if _, err := p.Wait(20 * time.Millisecond); err != nil {
				t.Fatal(err)
			}
		}
	}
	return got, frames
}

// setTSO switches TCP segmentation offload of ifname in ns with the
// legacy ETHTOOL_STSO ioctl (no ethtool binary needed).
func setTSO(ns netns.NsHandle, ifname string, on bool) error {
	return inNS(ns, func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		const ethtoolSTSO = 0x1f
		val := struct{ cmd, data uint32 }{ethtoolSTSO, 0}
		if on {
			val.data = 1
		}
		var ifr struct {
			name [unix.IFNAMSIZ]byte
			data unsafe.Pointer
			_    [16]byte
		}
		copy(ifr.name[:], ifname)
		ifr.data = unsafe.Pointer(&val)
		_, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCETHTOOL, uintptr(unsafe.Pointer(&ifr)))
		runtime.KeepAlive(&val)
		if e != 0 {
			return fmt.Errorf("ETHTOOL_STSO %s: %w", ifname, e)
		}
		return nil
	})
}
