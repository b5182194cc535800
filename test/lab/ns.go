package lab

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// NS is one network namespace created by a Lab.
type NS struct {
	// Name is the namespace name as shown by `ip netns list`.
	Name string
	// Addr is the namespace's address on If of the lab's primary family
	// (Addr6 in a dual-stack lab, else Addr4); it is the zero (invalid)
	// Addr for the lb and switch namespaces.
	Addr netip.Addr
	// Addr4 and Addr6 are its IPv4 and IPv6 addresses on If (Addr6 only
	// in a dual-stack lab).
	Addr4, Addr6 netip.Addr
	// If is the name of the namespace's lab interface: "eth0" for clients
	// and backends, "" for the lb and switch namespaces.
	If string

	handle netns.NsHandle  // open fd of the namespace, closed by Lab.Close
	nl     *netlink.Handle // netlink socket inside the namespace

	mu       sync.Mutex
	captures map[*Capture]struct{} // running captures, stopped on Close
}

// errClosed is returned by NS methods after the owning Lab was closed.
var errClosed = errors.New("lab: namespace closed")

// Do runs fn on a locked OS thread inside the namespace and returns its
// error. Sockets created by fn stay in the namespace and may be used from
// any goroutine afterwards. fn must not start goroutines that expect to
// inherit the namespace: only the calling thread is switched.
//
// If switching back to the original namespace fails, the helper goroutine
// exits with its thread still locked so the Go runtime destroys the thread
// instead of reusing it in the wrong namespace.
//
// Do must not be called concurrently with Lab.Close.
func (n *NS) Do(fn func() error) error {
	if n == nil {
		return errClosed
	}
	n.mu.Lock()
	h := n.handle
	n.mu.Unlock()
	if !h.IsOpen() {
		return errClosed
	}
	return doIn(h, fn)
}

// doIn runs fn on a fresh, locked goroutine switched into ns.
func doIn(ns netns.NsHandle, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("lab: get current netns: %w", err)
			return
		}
		defer orig.Close()
		if err := netns.Set(ns); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("lab: enter netns: %w", err)
			return
		}
		ferr := fn()
		if err := netns.Set(orig); err != nil {
			// Leave the goroutine locked: the thread dies with it.
			errc <- errors.Join(ferr, fmt.Errorf("lab: restore netns: %w", err))
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// Listen announces on the local network address inside the namespace, like
// net.Listen.
func (n *NS) Listen(network, addr string) (net.Listener, error) {
	var l net.Listener
	err := n.Do(func() error {
		var err error
		l, err = net.Listen(network, addr)
		return err
	})
	if err != nil {
		return nil, err
	}
	return l, nil
}

// DialContext connects to addr from inside the namespace, like
// net.Dialer.DialContext. Only the socket creation and connect happen on a
// namespace thread; the returned conn is usable from any goroutine.
func (n *NS) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	var c net.Conn
	err := n.Do(func() error {
		var d net.Dialer
		var err error
		c, err = d.DialContext(ctx, network, addr)
		return err
	})
	if err != nil {
		return nil, err
	}
	return c, nil
}

// HTTPClient returns an HTTP client whose connections are dialed inside
// the namespace. keepAlive=false disables connection reuse so every
// request opens a new TCP connection; timeout bounds each request (0 means
// none). Proxy settings from the environment are ignored.
func (n *NS) HTTPClient(keepAlive bool, timeout time.Duration) *http.Client {
	tr := &http.Transport{
		Proxy:               nil,
		DialContext:         n.DialContext,
		DisableKeepAlives:   !keepAlive,
		MaxIdleConns:        256,
		MaxIdleConnsPerHost: 256,
		IdleConnTimeout:     30 * time.Second,
		ForceAttemptHTTP2:   false,
	}
	return &http.Client{Transport: tr, Timeout: timeout}
}

// Command returns a command that runs name with args inside the namespace
// through `ip netns exec`.
func (n *NS) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	a := append([]string{"netns", "exec", n.Name, name}, args...)
	return exec.CommandContext(ctx, "ip", a...)
}

// Sysctl sets the sysctl key (dotted, e.g. "net.ipv4.ip_forward") to value
// inside the namespace only. Keys outside net.* are refused because they are
// not per network namespace and would change the host.
func (n *NS) Sysctl(key, value string) error {
	p, err := sysctlPath(key)
	if err != nil {
		return err
	}
	return n.Do(func() error {
		if err := os.WriteFile(p, []byte(value), 0); err != nil {
			return fmt.Errorf("lab: sysctl %s=%s in %s: %w", key, value, n.Name, err)
		}
		return nil
	})
}

// ReadSysctl returns the value of the sysctl key inside the namespace,
// without the trailing newline. Like Sysctl it only accepts net.* keys.
func (n *NS) ReadSysctl(key string) (string, error) {
	p, err := sysctlPath(key)
	if err != nil {
		return "", err
	}
	var v string
	err = n.Do(func() error {
		b, err := os.ReadFile(p)
		if err != nil {
			return fmt.Errorf("lab: read sysctl %s in %s: %w", key, n.Name, err)
		}
		v = strings.TrimSpace(string(b))
		return nil
	})
	return v, err
}

// sysctlPath maps a dotted net.* sysctl key to its /proc/sys path.
func sysctlPath(key string) (string, error) {
	if !strings.HasPrefix(key, "net.") || strings.Contains(key, "..") || strings.ContainsAny(key, "/ ") {
		return "", fmt.Errorf("lab: refusing sysctl key %q: only net.* keys are per namespace", key)
	}
	return filepath.Join("/proc/sys", strings.ReplaceAll(key, ".", "/")), nil
}

// SetOffloads switches TSO, GSO, GRO and tx/rx checksum offload on ifname
// inside the namespace with ethtool. The lab leaves offloads at the kernel
// defaults (on) because the balancer must cope with them; this is only a
// documented fallback for debugging.
func (n *NS) SetOffloads(ifname string, on bool) error {
	v := "off"
	if on {
		v = "on"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := n.Command(ctx, "ethtool", "-K", ifname,
		"tso", v, "gso", v, "gro", v, "tx", v, "rx", v).CombinedOutput()
	if err != nil {
		return fmt.Errorf("lab: ethtool -K %s in %s: %w: %s", ifname, n.Name, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// Netlink returns the namespace's netlink handle, or nil after Lab.Close.
func (n *NS) Netlink() *netlink.Handle {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.nl
}

// Link returns the netlink link ifname inside the namespace.
func (n *NS) Link(ifname string) (netlink.Link, error) {
	h := n.Netlink()
	if h == nil {
		return nil, errClosed
	}
	l, err := h.LinkByName(ifname)
	if err != nil {
		return nil, fmt.Errorf("lab: link %s in %s: %w", ifname, n.Name, err)
	}
	return l, nil
}

// Addrs returns the IPv4 addresses configured on ifname inside the
// namespace.
func (n *NS) Addrs(ifname string) ([]netip.Prefix, error) {
	return n.addrs(ifname, netlink.FAMILY_V4)
}

// Addrs6 returns the IPv6 addresses configured on ifname inside the
// namespace, link-local ones included.
func (n *NS) Addrs6(ifname string) ([]netip.Prefix, error) {
	return n.addrs(ifname, netlink.FAMILY_V6)
}

func (n *NS) addrs(ifname string, family int) ([]netip.Prefix, error) {
	l, err := n.Link(ifname)
	if err != nil {
		return nil, err
	}
	h := n.Netlink()
	if h == nil {
		return nil, errClosed
	}
	as, err := h.AddrList(l, family)
	if err != nil {
		return nil, fmt.Errorf("lab: addresses of %s in %s: %w", ifname, n.Name, err)
	}
	var out []netip.Prefix
	for _, a := range as {
		ip, ok := netip.AddrFromSlice(a.IP)
		if !ok {
			continue
		}
		ip = ip.Unmap()
		if (family == netlink.FAMILY_V4) != ip.Is4() {
			continue
		}
		ones, _ := a.Mask.Size()
		out = append(out, netip.PrefixFrom(ip, ones))
	}
	return out, nil
}

// close releases the namespace's fd and netlink socket. It does not delete
// the named namespace.
func (n *NS) close() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.nl != nil {
		n.nl.Close()
		n.nl = nil
	}
	if n.handle.IsOpen() {
		n.handle.Close()
		n.handle = netns.None()
	}
}
