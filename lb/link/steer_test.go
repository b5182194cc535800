package link

import (
	"encoding/binary"
	"math/rand/v2"
	"net/netip"
	"reflect"
	"testing"

	"golang.org/x/net/bpf"
)

var (
	macA = [6]byte{0x02, 0, 0, 0, 0, 0xa}
	macB = [6]byte{0x02, 0, 0, 0, 0, 0xb}
)

// steerCase is a frame (Ethernet, no virtio header) and, for n = 3, the
// queue each steering must pick.
type steerCase struct {
	name       string
	frame      []byte
	flow, port int // expected owner among 3 (-1: not checked)
}

// The destinations of steerCases' frames, and addresses they do not go to.
var (
	caseDst4  = [4]byte{198, 18, 0, 100}
	caseDst6  = [16]byte{0xfd, 15: 2}
	splitHit  = mustSplit(netip.MustParseAddr("198.18.9.9"), netip.AddrFrom4(caseDst4), netip.MustParseAddr("fd00::9"), netip.AddrFrom16(caseDst6))
	splitMiss = mustSplit(netip.MustParseAddr("198.18.9.9"), netip.MustParseAddr("fd00::2:0:0:2"), netip.MustParseAddr("fd00::3"))
	// splitMax has MaxSplitAddrs of each family: the longest program.
	splitMax = func() Steering {
		var as []netip.Addr
		for i := range MaxSplitAddrs {
			as = append(as, netip.AddrFrom4([4]byte{198, 19, 1, byte(i)}), netip.AddrFrom16([16]byte{0xfd, 1, 15: byte(i)}))
		}
		as[0], as[1] = netip.AddrFrom4(caseDst4), netip.AddrFrom16(caseDst6)
		return mustSplit(as...)
	}()
)

func mustSplit(as ...netip.Addr) Steering {
	s, err := SteerSplit(as)
	if err != nil {
		panic(err)
	}
	return s
}

// testSteerings are the steerings the program tests run, with the column
// of steerCase each must agree with for the frames steerCases makes.
var testSteerings = []struct {
	s    Steering
	port bool
}{{SteerFlowHash, false}, {SteerDstPort, true}, {splitHit, true}, {splitMiss, false}, {splitMax, true}}

func TestSteerSplitLimits(t *testing.T) {
	var as []netip.Addr
	for i := range MaxSplitAddrs + 1 {
		as = append(as, netip.AddrFrom16([16]byte{0xfd, 15: byte(i)}))
	}
	if _, err := SteerSplit(as); err == nil {
		t.Errorf("SteerSplit of %d IPv6 addresses: no error", len(as))
	}
	if s, err := SteerSplit(nil); err != nil || s != SteerFlowHash {
		t.Errorf("SteerSplit(nil) = %v, %v; want SteerFlowHash", s, err)
	}
	if _, err := SteerSplit([]netip.Addr{{}}); err == nil {
		t.Error("SteerSplit of the zero Addr: no error")
	}
	// An IPv4-mapped address counts as IPv4.
	s, err := SteerSplit([]netip.Addr{netip.AddrFrom16(netip.AddrFrom4(caseDst4).As16())})
	if err != nil || len(s.dsts.v4) != 1 {
		t.Errorf("SteerSplit(::ffff:%v) = %+v, %v", caseDst4, s.dsts, err)
	}
}

func steerCases() []steerCase {
	src := [4]byte{198, 18, 0, 11}
	dst := caseDst4
	v6src := [16]byte{0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1}
	v6dst := caseDst6
	tcp := ipv4TCP(macB, macA, src, dst, 40000, 80, 5, 0, 1)
	short := func(f []byte, n int) []byte { return append([]byte(nil), f[:n]...) }
	ihl0 := append([]byte(nil), tcp...)
	ihl0[ethLen] = 0x40 // IHL 0: LoadMemShift gives X = 0, the "ports" are the IP header's first word
	return []steerCase{
		// Pinned values: (198.18.0.11 ^ (40000<<16 | 80)) * 0x9E3779B1 =
		// 0x726a5f6b (uint32); 0x726a % 3 = 1; 80 % 3 = 2.
		{"ipv4 tcp", tcp, 1, 2},
		{"ipv4 tcp with options", ipv4TCP(macB, macA, src, dst, 40000, 80, 8, 0, 1), 1, 2},
		{"ipv4 tcp DF set", ipv4TCP(macB, macA, src, dst, 40000, 80, 5, 0x4000, 1), 1, 2},
		{"ipv4 first fragment (MF)", ipv4TCP(macB, macA, src, dst, 40000, 80, 5, 0x2000, 1), 0, 0},
		{"ipv4 later fragment", ipv4TCP(macB, macA, src, dst, 40000, 80, 5, 0x0010, 1), 0, 0},
		{"ipv4 udp", ipv4UDP(macB, macA, src, dst, 40000, 80, 1), 0, 0},
		{"ipv4 ihl 0", ihl0, -1, -1},
		{"ipv4 cut in the ports", short(tcp, ethLen+20+3), 0, 0},
		{"ipv4 cut after the ports", short(tcp, ethLen+20+4), 1, 2},
		{"ipv4 cut in the header", short(tcp, ethLen+9), 0, 0},
		// Pinned: xor of fd00::1's words = 0xfd000001; with 443, 8080
		// the hash is 0x75735c41; 0x7573 % 3 = 1; 8080 % 3 = 1.
		{"ipv6 tcp", ipv6TCP(macB, macA, v6src, v6dst, 443, 8080, 0, 1), 1, 1},
		{"ipv6 extension header", ipv6TCP(macB, macA, v6src, v6dst, 443, 8080, 43, 1), 0, 0},
		{"ipv6 udp", ipv6TCP(macB, macA, v6src, v6dst, 443, 8080, 17, 1), 0, 0},
		{"ipv6 cut", short(ipv6TCP(macB, macA, v6src, v6dst, 443, 8080, 0, 1), ethLen+43), 0, 0},
		{"arp", arpFrame(macA, src, dst, 1), 0, 0},
		{"802.3 length", func() []byte { f := short(tcp, len(tcp)); binary.BigEndian.PutUint16(f[12:], 46); return f }(), 0, 0},
		{"ethernet header only", short(tcp, ethLen), 0, 0},
	}
}

func TestFlowOwnerPinned(t *testing.T) {
	// Values computed independently (Python) from the documented formula.
	for _, c := range []struct {
		src          [4]byte
		sport, dport uint16
		n, want      int
	}{
		{[4]byte{198, 18, 0, 11}, 40000, 80, 3, 1},
		{[4]byte{198, 18, 0, 11}, 40000, 80, 7, 2},
		{[4]byte{10, 0, 0, 1}, 1, 2, 5, 4},
		{[4]byte{10, 0, 0, 1}, 1, 2, 1, 0},
	} {
		if got := FlowOwner(c.src, c.sport, c.dport, c.n); got != c.want {
			t.Errorf("FlowOwner(%v, %d, %d, %d) = %d, want %d", c.src, c.sport, c.dport, c.n, got, c.want)
		}
	}
	if got := FlowOwner6([16]byte{0xfd, 15: 1}, 443, 8080, 4); got != 3 {
		t.Errorf("FlowOwner6(fd00::1, 443, 8080, 4) = %d, want 3", got)
	}
	if got := PortOwner(20001, 4); got != 1 {
		t.Errorf("PortOwner(20001, 4) = %d, want 1", got)
	}
}

// vmRun runs s's program for n queues, in its VM layout (same body, plain
// offsets), on an Ethernet frame.
func vmRun(t testing.TB, s Steering, n int, eth []byte) int {
	t.Helper()
	vm, err := bpf.NewVM(s.instructions(n, vmLayout))
	if err != nil {
		t.Fatalf("%v/%d: NewVM: %v", s, n, err)
	}
	r, err := vm.Run(eth)
	if err != nil {
		t.Fatalf("%v/%d: Run: %v", s, n, err)
	}
	return r
}

func TestSteeringProgramVM(t *testing.T) {
	for _, c := range steerCases() {
		for _, ts := range testSteerings {
			s, want := ts.s, c.flow
			if ts.port {
				want = c.port
			}
			for n := 1; n <= 5; n++ {
				vm := vmRun(t, s, n, c.frame)
				pick := s.Pick(withVnet(c.frame), n)
				if vm != pick {
					t.Errorf("%s, %v, n=%d: program %d, Pick %d", c.name, s, n, vm, pick)
				}
				if vm < 0 || vm >= n {
					t.Errorf("%s, %v, n=%d: program returned %d", c.name, s, n, vm)
				}
				if n == 3 && want >= 0 && pick != want {
					t.Errorf("%s, %v, n=3: Pick %d, want %d", c.name, s, pick, want)
				}
			}
		}
	}
}

// TestSteeringProgramRandom compares the VM and Pick on random frames:
// random header fields, random cuts, random garbage.
func TestSteeringProgramRandom(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	vms := map[[2]int]*bpf.VM{}
	for si, ts := range testSteerings {
		for n := 1; n <= 8; n++ {
			vm, err := bpf.NewVM(ts.s.instructions(n, vmLayout))
			if err != nil {
				t.Fatal(err)
			}
			vms[[2]int{si, n}] = vm
		}
	}
	counts := map[int]int{}
	for i := range 20000 {
		var f []byte
		var sip [4]byte
		binary.BigEndian.PutUint32(sip[:], r.Uint32())
		var s6 [16]byte
		for k := range s6 {
			s6[k] = byte(r.Uint32())
		}
		sp, dp := uint16(r.Uint32()), uint16(r.Uint32())
		switch i % 4 {
		case 0:
			f = ipv4TCP(macB, macA, sip, sip, sp, dp, 5+r.IntN(11), uint16(r.IntN(4))<<13, 0)
			f[ethLen] = 0x40 | byte(r.IntN(16)) // any IHL, even bogus
		case 1:
			d6 := s6
			if r.IntN(2) == 0 {
				d6 = caseDst6 // one of splitHit's and splitMax's
			}
			f = ipv6TCP(macB, macA, s6, d6, sp, dp, 0, 0)
		case 2:
			d4 := sip
			if r.IntN(2) == 0 {
				d4 = caseDst4
			}
			f = ipv4TCP(macB, macA, sip, d4, sp, dp, 5, 0, 0)
		default:
			f = make([]byte, r.IntN(100))
			for k := range f {
				f[k] = byte(r.Uint32())
			}
			if len(f) >= 14 && r.IntN(2) == 0 {
				binary.BigEndian.PutUint16(f[12:], []uint16{etherTypeIPv4, etherTypeIPv6}[r.IntN(2)])
			}
		}
		if r.IntN(3) == 0 && len(f) > 0 {
			f = f[:r.IntN(len(f))]
		}
		for key, vm := range vms {
			s, n := testSteerings[key[0]].s, key[1]
			got, err := vm.Run(f)
			if err != nil {
				t.Fatal(err)
			}
			var pick int
			if len(f) < ethLen {
				pick = 0 // Pick needs an Ethernet header; the kernel never sees less
				got = 0
			} else {
				pick = s.Pick(withVnet(f), n)
			}
			if got != pick {
				t.Fatalf("frame %x, %v, n=%d: program %d, Pick %d", f, s, n, got, pick)
			}
			if n == 4 && s == SteerFlowHash {
				counts[pick]++
			}
		}
	}
	// Every queue gets a share of the flows (the hash spreads).
	for q := range 4 {
		if counts[q] < 1000 {
			t.Errorf("queue %d got %d of the random frames: %v", q, counts[q], counts)
		}
	}
}

// TestSteeringProgramShape checks that the kernel program is the VM
// program with only the packet-access instructions changed, one for one.
func TestSteeringProgramShape(t *testing.T) {
	for _, ts := range testSteerings {
		s := ts.s
		for _, n := range []int{1, 2, 3, 16} {
			k, v := s.instructions(n, kernelLayout), s.instructions(n, vmLayout)
			if len(k) != len(v) {
				t.Fatalf("%v/%d: %d vs %d instructions", s, n, len(k), len(v))
			}
			for i := range k {
				switch ki := k[i].(type) {
				case bpf.LoadExtension:
					if ki.Num != bpf.ExtProto || v[i] != (bpf.LoadAbsolute{Off: 12, Size: 2}) {
						t.Errorf("%v/%d #%d: %v vs %v", s, n, i, k[i], v[i])
					}
				case bpf.LoadAbsolute:
					vi := v[i].(bpf.LoadAbsolute)
					if ki.Size != vi.Size || ki.Off-skfNetOff != vi.Off-ethLen {
						t.Errorf("%v/%d #%d: %v vs %v", s, n, i, k[i], v[i])
					}
				case bpf.LoadIndirect:
					vi := v[i].(bpf.LoadIndirect)
					if ki.Size != vi.Size || ki.Off-skfNetOff != vi.Off-ethLen {
						t.Errorf("%v/%d #%d: %v vs %v", s, n, i, k[i], v[i])
					}
				case bpf.LoadMemShift:
					if ki.Off != skfNetOff || v[i] != (bpf.LoadMemShift{Off: ethLen}) {
						t.Errorf("%v/%d #%d: %v vs %v", s, n, i, k[i], v[i])
					}
				default:
					if !reflect.DeepEqual(k[i], v[i]) {
						t.Errorf("%v/%d #%d: %v vs %v", s, n, i, k[i], v[i])
					}
				}
			}
			if raw := s.Program(n); len(raw) != len(k) {
				t.Errorf("%v/%d: Program has %d instructions, want %d", s, n, len(raw), len(k))
			}
		}
	}
}

func FuzzSteering(f *testing.F) {
	for _, c := range steerCases() {
		f.Add(c.frame, uint8(3))
	}
	f.Fuzz(func(t *testing.T, eth []byte, n8 uint8) {
		n := int(n8%16) + 1
		if len(eth) < ethLen {
			return
		}
		for _, ts := range testSteerings {
			if got, pick := vmRun(t, ts.s, n, eth), ts.s.Pick(withVnet(eth), n); got != pick {
				t.Fatalf("%v, n=%d: program %d, Pick %d", ts.s, n, got, pick)
			}
		}
	})
}
