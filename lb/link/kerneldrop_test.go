package link

import (
	"bufio"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netns"
)

// ipInAddrErrors reads Ip: InAddrErrors of ns's /proc/net/snmp: what
// ip_error counts for a packet to an address the kernel neither owns nor
// may forward to.
func ipInAddrErrors(t *testing.T, ns netns.NsHandle) int64 {
	t.Helper()
	var v int64 = -1
	err := inNS(ns, func() error {
		f, err := os.Open("/proc/thread-self/net/snmp") // /proc/net is the thread group leader's namespace
		if err != nil {
			return err
		}
		defer f.Close()
		var names []string
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			fs := strings.Fields(sc.Text())
			if len(fs) == 0 || fs[0] != "Ip:" {
				continue
			}
			if names == nil {
				names = fs
				continue
			}
			for i, n := range names {
				if n == "InAddrErrors" && i < len(fs) {
					v, err = strconv.ParseInt(fs[i], 10, 64)
					return err
				}
			}
		}
		return fmt.Errorf("no Ip: InAddrErrors")
	})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// TestKernelDrop: frames to an address tslb owns reach its queue whether
// or not KernelDrop is installed, but with it the namespace's kernel no
// longer routes them to ip_error (InAddrErrors stays put); removing the
// table brings the old behaviour back.
func TestKernelDrop(t *testing.T) {
	l := newLab(t)
	tx := l.raw(t, l.a, l.aIf, false, false)
	qs, _ := l.openB(t, Config{Mode: ModeRing, Queues: 1})
	const n = 100
	round := func(base uint32) (received int, addrErrors int64) {
		before := ipInAddrErrors(t, l.b)
		for i := range uint32(n) {
			tx.write(t, ipv4TCP(l.bMAC, l.aMAC, [4]byte{198, 18, 0, 1}, farIP, 40000, 80, 5, 0x4000, base+i))
		}
		buf := make([][]byte, 16)
		for deadline := time.Now().Add(3 * time.Second); received < n && time.Now().Before(deadline); {
			k, err := qs[0].Recv(buf)
			if err != nil {
				t.Fatal(err)
			}
			for _, f := range buf[:k] {
				if m, ok := markerOf(f[vnetLen:]); ok && m >= base && m < base+n {
					received++
				}
			}
			qs[0].Release()
			if k == 0 {
				time.Sleep(time.Millisecond)
			}
		}
		time.Sleep(50 * time.Millisecond)
		return received, ipInAddrErrors(t, l.b) - before
	}
	if got, errs := round(0); got != n || errs < n {
		t.Fatalf("without KernelDrop: queue got %d of %d, kernel InAddrErrors +%d (want >= %d)", got, n, errs, n)
	}
	var remove func() error
	if err := inNS(l.b, func() (err error) {
		remove, err = KernelDrop(map[string][]netip.Addr{l.bIf: {netip.AddrFrom4(farIP), netip.MustParseAddr("fd00:5e18::1")}})
		return err
	}); err != nil {
		t.Fatalf("KernelDrop: %v", err)
	}
	if got, errs := round(1000); got != n || errs != 0 {
		t.Errorf("with KernelDrop: queue got %d of %d, kernel InAddrErrors +%d (want 0)", got, n, errs)
	}
	// Installing again replaces the table (a restarted tslb).
	if err := inNS(l.b, func() (err error) {
		remove, err = KernelDrop(map[string][]netip.Addr{l.bIf: {netip.AddrFrom4(farIP)}})
		return err
	}); err != nil {
		t.Fatalf("KernelDrop again: %v", err)
	}
	if got, errs := round(2000); got != n || errs != 0 {
		t.Errorf("after a second KernelDrop: queue got %d of %d, kernel InAddrErrors +%d (want 0)", got, n, errs)
	}
	if err := remove(); err != nil {
		t.Fatalf("remove: %v", err)
	}
	if got, errs := round(3000); got != n || errs < n {
		t.Errorf("after remove: queue got %d of %d, kernel InAddrErrors +%d (want >= %d)", got, n, errs, n)
	}
}
