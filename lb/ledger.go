package lb

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"golang.org/x/sys/unix"

	"tslb/lb/snat"
	"tslb/nat"
)

// The crash-safe ledger. With state_file set, every pool keeps its
// per-port state (busy, TIME_WAIT, the ledger records) in a file of
// <state_file>.live/ mapped MAP_SHARED into tslb's memory: each Alloc and
// Release is a store into that mapping, which the kernel keeps when the
// process dies, however it dies (kill -9 included). No system call, no
// copy, nothing lost; the kernel writes the dirty pages back to disk on
// its own schedule (vm.dirty_writeback_centisecs, 5 s by default), which
// only matters if the whole host goes down.
//
// On start, tslb reads every file left there (whatever worker count wrote
// it), removes them, and gives each tuple to the pool that owns its port
// now: TIME_WAIT records as they are; tuples that were live (held by a
// flow tslb never saw end) as Unknown for the backend's time_wait, since
// the backend may hold them ESTABLISHED or in TIME_WAIT with any sequence
// numbers — and the workers then probe each such tuple (probe.go) to
// free it early once the backend proves it holds nothing.

// ledgerMagic opens every ledger file; ledgerHeaderLen keeps the pool's
// memory 8-byte aligned.
const (
	ledgerMagic     = "TSLBLDG2"
	ledgerHeaderLen = 64
)

// ledgerHeader is the fixed part of a ledger file.
type ledgerHeader struct {
	size    int
	first   uint16
	stride  int
	snat    nat.Addr16
	backend netip.AddrPort
}

// The header: magic (8 bytes), size (4), first port (2), stride (2), the
// SNAT address (16, IPv4 mapped), the backend address (16, IPv4 mapped)
// and port (2), the backend's family (1: 4 or 6).
func (h *ledgerHeader) encode(b []byte) {
	copy(b, ledgerMagic)
	binary.LittleEndian.PutUint32(b[8:], uint32(h.size))
	binary.LittleEndian.PutUint16(b[12:], h.first)
	binary.LittleEndian.PutUint16(b[14:], uint16(h.stride))
	copy(b[16:32], h.snat[:])
	a := h.backend.Addr().As16()
	copy(b[32:48], a[:])
	binary.LittleEndian.PutUint16(b[48:], h.backend.Port())
	if h.backend.Addr().Is4() {
		b[50] = 4
	} else {
		b[50] = 6
	}
}

func (h *ledgerHeader) decode(b []byte) error {
	if len(b) < ledgerHeaderLen || string(b[:8]) != ledgerMagic {
		return errors.New("not a tslb ledger file")
	}
	h.size = int(binary.LittleEndian.Uint32(b[8:]))
	h.first = binary.LittleEndian.Uint16(b[12:])
	h.stride = int(binary.LittleEndian.Uint16(b[14:]))
	copy(h.snat[:], b[16:32])
	a := netip.AddrFrom16([16]byte(b[32:48]))
	if b[50] == 4 {
		a = a.Unmap()
	}
	h.backend = netip.AddrPortFrom(a, binary.LittleEndian.Uint16(b[48:]))
	if h.stride < 1 || h.size < 0 || len(b) < ledgerHeaderLen+snat.MemSize(h.size) {
		return errors.New("ledger file truncated or inconsistent")
	}
	return nil
}

// ledgerDir maps the pools' memory from files in dir.
type ledgerDir struct {
	dir string

	mu    sync.Mutex
	maps  [][]byte
	files []string
}

// ledgerTuple is one tuple read back from the files of a previous run.
type ledgerTuple struct {
	snat    nat.Addr16
	backend netip.AddrPort
	port    uint16
	live    bool
	rec     snat.Record
}

// openLedgerDir reads and removes what a previous run left in dir and
// returns the directory, ready for new files, and the tuples found.
func openLedgerDir(dir string) (*ledgerDir, []ledgerTuple, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, nil, fmt.Errorf("lb: ledger directory: %w", err)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, nil, fmt.Errorf("lb: ledger directory: %w", err)
	}
	var found []ledgerTuple
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ".pool") {
			continue
		}
		path := filepath.Join(dir, e.Name())
		data, err := os.ReadFile(path)
		if err == nil {
			var h ledgerHeader
			if err = h.decode(data); err == nil {
				mem := data[ledgerHeaderLen:]
				snat.ScanMem(mem, h.size, func(i int, st snat.PortState, rec snat.Record) {
					found = append(found, ledgerTuple{snat: h.snat, backend: h.backend,
						port: h.first + uint16(i*h.stride), live: st == snat.PortLive, rec: rec})
				})
			}
		}
		if err != nil {
			return nil, nil, fmt.Errorf("lb: ledger file %s: %w", path, err)
		}
		if err := os.Remove(path); err != nil {
			return nil, nil, fmt.Errorf("lb: ledger file: %w", err)
		}
	}
	return &ledgerDir{dir: dir}, found, nil
}

// poolMem creates the file of a new pool and maps it: the memory for
// snat.NewPoolIn.
func (d *ledgerDir) poolMem(h ledgerHeader) ([]byte, error) {
	name := fmt.Sprintf("%s_%s_%d_%d_%d.pool", strings.ReplaceAll(h.snat.Text(), ":", "-"), strings.ReplaceAll(h.backend.Addr().String(), ":", "-"),
		h.backend.Port(), h.first, h.stride)
	path := filepath.Join(d.dir, name)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lb: ledger file: %w", err)
	}
	defer f.Close()
	n := ledgerHeaderLen + snat.MemSize(h.size)
	if err := f.Truncate(int64(n)); err != nil {
		return nil, fmt.Errorf("lb: ledger file %s: %w", path, err)
	}
	m, err := unix.Mmap(int(f.Fd()), 0, n, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("lb: ledger file %s: mmap: %w", path, err)
	}
	h.encode(m[:ledgerHeaderLen])
	d.mu.Lock()
	d.maps = append(d.maps, m)
	d.files = append(d.files, path)
	d.mu.Unlock()
	return m[ledgerHeaderLen:], nil
}

// close unmaps every file (they stay on disk for the next start). Only
// after the workers have stopped.
func (d *ledgerDir) close() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, m := range d.maps {
		unix.Munmap(m)
	}
	d.maps = nil
}
