package bench

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// clkTck is USER_HZ, the unit of /proc tick counts (100 on Linux).
const clkTck = 100

// netnsCPU returns the user+system CPU seconds used so far by every
// process whose network namespace is the named one (/run/netns/name).
func netnsCPU(name string) (float64, int, error) {
	var want syscall.Stat_t
	if err := syscall.Stat(filepath.Join("/run/netns", name), &want); err != nil {
		return 0, 0, fmt.Errorf("bench: %w", err)
	}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return 0, 0, fmt.Errorf("bench: %w", err)
	}
	self := os.Getpid()
	var ticks uint64
	procs := 0
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		var st syscall.Stat_t
		if syscall.Stat(fmt.Sprintf("/proc/%d/ns/net", pid), &st) != nil || st.Ino != want.Ino || st.Dev != want.Dev {
			continue
		}
		t, err := procTicks(pid)
		if err != nil {
			continue // exited meanwhile
		}
		ticks += t
		procs++
	}
	return float64(ticks) / clkTck, procs, nil
}

// procTicks returns utime+stime of pid from /proc/<pid>/stat.
func procTicks(pid int) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may hold spaces: fields count from the
	// last ')'.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0, fmt.Errorf("bench: bad /proc/%d/stat", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("bench: short /proc/%d/stat", pid)
	}
	u, err1 := strconv.ParseUint(f[11], 10, 64) // field 14 utime
	s, err2 := strconv.ParseUint(f[12], 10, 64) // field 15 stime
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("bench: bad /proc/%d/stat", pid)
	}
	return u + s, nil
}

// softirqSeconds returns the system-wide softirq time from /proc/stat.
func softirqSeconds() float64 {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line) // cpu user nice system idle iowait irq softirq ...
	if len(f) < 8 || f[0] != "cpu" {
		return 0
	}
	v, _ := strconv.ParseUint(f[7], 10, 64)
	return float64(v) / clkTck
}

// cpuMeter samples the CPU figures of one cell: the processes of the lb
// namespace ns (if process), this process (the load generator and the
// in-process servers) and the system's softirq time.
type cpuMeter struct {
	ns      string
	process bool
}

// cpuSample is one reading of a cpuMeter.
type cpuSample struct {
	at     time.Time
	proc   float64 // seconds; valid if procOK
	procOK bool
	soft   float64
	self   float64 // this process's utime+stime, seconds
}

// sample reads the figures now.
func (m cpuMeter) sample() cpuSample {
	s := cpuSample{at: time.Now(), soft: softirqSeconds()}
	if t, err := procTicks(os.Getpid()); err == nil {
		s.self = float64(t) / clkTck
	}
	if m.process {
		if v, _, err := netnsCPU(m.ns); err == nil {
			s.proc, s.procOK = v, true
		}
	}
	return s
}

// since returns the CPU used from a until now.
func (m cpuMeter) since(a cpuSample) *PhaseCPU { return phaseBetween(a, m.sample()) }

// phaseBetween returns the CPU used between two samples; BalancerS is
// null unless both read the processes.
func phaseBetween(a, b cpuSample) *PhaseCPU {
	p := &PhaseCPU{SoftirqSystemS: b.soft - a.soft, GeneratorS: b.self - a.self, WallS: b.at.Sub(a.at).Seconds()}
	if a.procOK && b.procOK {
		v := b.proc - a.proc
		p.BalancerS = &v
	}
	return p
}

// machine describes this host.
func machine() Machine {
	m := Machine{CPUs: runtime.NumCPU(), Go: runtime.Version()}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		var kb int
		fmt.Sscanf(string(b), "MemTotal: %d kB", &kb)
		m.MemoryGB = (kb + 512<<10) >> 20
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	return m
}
