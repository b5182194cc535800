package link

import (
	"encoding/binary"
	"net/netip"
	"testing"

	"golang.org/x/net/bpf"
)

// TestFilterFor runs the socket filters in x/net/bpf's VM (a socket filter
// sees the Ethernet header at offset 0, as the VM does): the plain filter
// admits IPv4, IPv6 and ARP, and the one with an extra EtherType admits
// that one too and nothing else.
func TestFilterFor(t *testing.T) {
	disasm := func(raw []bpf.RawInstruction) []bpf.Instruction {
		ins, ok := bpf.Disassemble(raw)
		if !ok {
			t.Fatal("filter does not disassemble")
		}
		return ins
	}
	for _, tc := range []struct {
		name  string
		extra uint16
		admit map[uint16]bool
	}{
		{"plain", 0, map[uint16]bool{0x0800: true, 0x86dd: true, 0x0806: true}},
		{"heartbeats", 0x88b5, map[uint16]bool{0x0800: true, 0x86dd: true, 0x0806: true, 0x88b5: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			vm, err := bpf.NewVM(disasm(filterFor(tc.extra)))
			if err != nil {
				t.Fatal(err)
			}
			for _, et := range []uint16{0x0800, 0x86dd, 0x0806, 0x88b5, 0x88b6, 0x8100, 0x88cc, 0} {
				frame := make([]byte, 60)
				binary.BigEndian.PutUint16(frame[12:], et)
				n, err := vm.Run(frame)
				if err != nil {
					t.Fatal(err)
				}
				if got := n != 0; got != tc.admit[et] {
					t.Errorf("EtherType %#04x: admitted %v, want %v", et, got, tc.admit[et])
				}
			}
		})
	}
}

// TestHeartbeatsToQueueZero: every steering program gives a heartbeat
// frame (EtherType 0x88B5, not TCP) to queue 0, whose worker handles the
// cluster's heartbeats; the VM runs the very program the kernel gets.
func TestHeartbeatsToQueueZero(t *testing.T) {
	split, err := SteerSplit([]netip.Addr{netip.MustParseAddr("198.18.1.101")})
	if err != nil {
		t.Fatal(err)
	}
	frame := make([]byte, vnetLen+60)
	binary.BigEndian.PutUint16(frame[vnetLen+12:], 0x88b5)
	for i := range frame[vnetLen+14:] {
		frame[vnetLen+14+i] = byte(i * 7) // whatever the payload, as if IP
	}
	for _, s := range []Steering{SteerFlowHash, SteerDstPort, split} {
		for _, n := range []int{2, 3, 8} {
			if q := s.Pick(frame, n); q != 0 {
				t.Errorf("%v/%d: Pick = %d, want 0", s, n, q)
			}
			vm, err := bpf.NewVM(s.instructions(n, vmLayout))
			if err != nil {
				t.Fatal(err)
			}
			q, err := vm.Run(frame[vnetLen:])
			if err != nil || q != 0 {
				t.Errorf("%v/%d: program gives queue %d (%v), want 0", s, n, q, err)
			}
		}
	}
}
