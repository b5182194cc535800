package lab

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
)

// TB is the part of testing.TB that Require and NewT use. It is an
// interface of this package so that the lab does not import testing: the
// tslb binary links the lab (tslb demo, lab, bench) and must not link the
// test framework.
type TB interface {
	Helper()
	Fatalf(format string, args ...any)
	Skipf(format string, args ...any)
	Errorf(format string, args ...any)
	Cleanup(func())
}

// requireOnce caches the environment probe: it does not change during a
// test binary's run.
var (
	requireOnce sync.Once
	requireErr  error
)

// Require checks, without building a lab, that this process can run one:
// it is root, `ip netns exec` works, and a throwaway namespace can be
// created, reached over netlink and deleted. If not, it calls t.Skip
// locally and t.Fatal when the environment variable CI is "true", so the
// lab is never silently skipped in CI.
func Require(t TB) {
	t.Helper()
	requireOnce.Do(func() { requireErr = probe() })
	if requireErr == nil {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("lab unavailable (CI=true, not skipping): %v", requireErr)
	}
	t.Skipf("lab unavailable: %v", requireErr)
}

// probe does the checks of Require.
func probe() error {
	if os.Geteuid() != 0 {
		return errors.New("need root (CAP_SYS_ADMIN and CAP_NET_ADMIN) for network namespaces")
	}
	for _, bin := range []string{"ip", "nft"} {
		if _, err := exec.LookPath(bin); err != nil {
			return fmt.Errorf("%s not found: %w", bin, err)
		}
	}
	var b [3]byte
	if _, err := rand.Read(b[:]); err != nil {
		return err
	}
	name := "tslbprobe" + hex.EncodeToString(b[:])
	h, err := createNamedNS(name)
	if err != nil {
		return err
	}
	defer func() {
		h.Close()
		removeNamedNS(name)
	}()
	nh, err := netlink.NewHandleAt(h)
	if err != nil {
		return fmt.Errorf("netlink in namespace: %w", err)
	}
	defer nh.Close()
	if _, err := nh.LinkByName("lo"); err != nil {
		return fmt.Errorf("netlink in namespace: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "ip", "netns", "exec", name, "true").CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip netns exec: %w: %s", err, strings.TrimSpace(string(out)))
	}
	return nil
}

// NewT is Require, then New, then t.Cleanup(Close) for tests. It fails the
// test if the lab cannot be built or closed.
func NewT(t TB, cfg Config) *Lab {
	t.Helper()
	Require(t)
	l, err := New(cfg)
	if err != nil {
		t.Fatalf("lab.New: %v", err)
	}
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Errorf("lab close: %v", err)
		}
	})
	return l
}
