package link

import (
	"encoding/binary"
	"fmt"

	"golang.org/x/net/bpf"
)

// Steering programs and their Go mirrors.
//
// Where the program runs. A fanout group's hook is an ordinary packet_type
// on ptype_all, so __netif_receive_skb_core (net/core/dev.c) calls
// packet_rcv_fanout for an ingress frame after "skb_reset_network_header(
// skb)", with skb->data at the network header: the driver's
// eth_type_trans pulled the Ethernet header. packet_rcv_fanout →
// fanout_demux_bpf runs the program ("bpf_prog_run_clear_cb(prog, skb) %
// num") before the member's tpacket_rcv/packet_rcv does "skb_push(skb,
// skb->data - skb_mac_header(skb))", which is why a socket filter sees the
// MAC header at offset 0 and a fanout program does not. On egress
// (dev_queue_xmit_nit, if PACKET_FANOUT_FLAG_IGNORE_OUTGOING were not set)
// skb->data is at the MAC header instead. So the programs never use plain
// offsets: they load relative to the network header (SKF_NET_OFF, resolved
// by bpf_internal_load_pointer_neg_helper as "skb_network_header(skb) + k
// - SKF_NET_OFF") and take the EtherType from skb->protocol (the
// SKF_AD_PROTOCOL ancillary load, in host order), which are right
// whatever skb->data is. A load outside the packet ends the program with
// 0 (the converted LD_ABS returns 0 on a failed load), as the Go mirror
// does. Known limit: on kernels without the 2025 fix for cBPF
// negative-offset loads beyond the linear part ("bpf: fix classic bpf
// reads from negative offset outside of linear skb portion"), headers
// that a driver leaves in page fragments read as out of range, and such
// frames go to queue 0. On a veth, and for GSO superframes, the headers
// are linear (the lab test sends both through the kernel).
//
// The kernel takes the result modulo the number of members; the programs
// compute "% n" themselves, so with exactly n members (Open's group) the
// two agree, and the Go mirror can use the same formula.

// Offsets relative to the network header.
const (
	ipv4Proto    = 9  // IPv4 protocol
	ipv4FragOff  = 6  // IPv4 flags + fragment offset
	ipv4Src      = 12 // IPv4 source address
	ipv4Dst      = 16 // IPv4 destination address
	ipv6Next     = 6  // IPv6 next header
	ipv6Src      = 8  // IPv6 source address (16 bytes)
	ipv6Dst      = 24 // IPv6 destination address (16 bytes)
	ipv6Payload  = 40 // the transport header, with no extension header
	ipProtoTCP   = 6
	ipv4FragMask = 0x3fff // MF and the fragment offset: any fragment

	flowMul = 0x9E3779B1 // 2^32 / golden ratio (Knuth's multiplicative hash)

	// skfNetOff is SKF_NET_OFF (-0x100000, linux/filter.h) as a 32-bit
	// offset: loads at skfNetOff+k read the byte k of the network header.
	skfNetOff = 1<<32 - 0x100000
)

// layout says how a program reaches the packet: the kernel's (loads
// relative to the network header, EtherType from skb->protocol) or the
// x/net/bpf VM's (a plain Ethernet frame: it implements neither negative
// offsets nor SKF_AD_PROTOCOL). Both produce programs of the same shape,
// so the VM runs the very program body the kernel gets.
type layout struct {
	net   uint32          // offset of the network header
	proto bpf.Instruction // A = EtherType
}

var (
	kernelLayout = layout{net: skfNetOff, proto: bpf.LoadExtension{Num: bpf.ExtProto}}
	vmLayout     = layout{net: ethLen, proto: bpf.LoadAbsolute{Off: 12, Size: 2}}
)

// Program returns the classic-BPF fanout program (PACKET_FANOUT_CBPF) of
// s for a group of n queues: it returns the queue index that Pick gives
// for the same frame. For n <= 1 it returns 0 for every frame.
func (s Steering) Program(n int) []bpf.RawInstruction {
	raw, err := bpf.Assemble(s.instructions(n, kernelLayout))
	if err != nil {
		panic(fmt.Sprintf("link: steering program: %v", err)) // a bug in instructions
	}
	return raw
}

// instructions is the program of s for n queues in layout l.
//
// Its shape: the EtherType picks the IPv4 or the IPv6 part; each checks
// for TCP (and, IPv4, no fragment), then SteerSplit compares the
// destination with each of its addresses, and the part ends in the flow
// hash or the port rule. Anything else returns 0.
func (s Steering) instructions(n int, l layout) []bpf.Instruction {
	if n <= 1 {
		return []bpf.Instruction{bpf.RetConstant{Val: 0}}
	}
	mod := uint32(n)
	ld := func(off uint32, size int) bpf.Instruction { return bpf.LoadAbsolute{Off: l.net + off, Size: size} }
	var a asm
	const (
		lRet0 = iota
		lV6
		lV4Hash
		lV4Port
		lV6Hash
		lV6Port
		lNext // lNext+i: after the comparison with IPv6 address i
	)
	// hash is A = ((A ^ X) * flowMul >> 16) % n; return A.
	hash := func() {
		a.op(bpf.ALUOpX{Op: bpf.ALUOpXor})
		a.op(bpf.ALUOpConstant{Op: bpf.ALUOpMul, Val: flowMul})
		a.op(bpf.ALUOpConstant{Op: bpf.ALUOpShiftRight, Val: 16})
		a.op(bpf.ALUOpConstant{Op: bpf.ALUOpMod, Val: mod})
		a.op(bpf.RetA{})
	}
	port := func(load bpf.Instruction) {
		a.op(load)
		a.op(bpf.ALUOpConstant{Op: bpf.ALUOpMod, Val: mod})
		a.op(bpf.RetA{})
	}
	flow, byPort := s.kind != steerPort, s.kind != steerFlow

	a.op(l.proto)
	a.jump(bpf.JumpNotEqual, etherTypeIPv4, lV6, -1)
	// IPv4: TCP, not a fragment; X = IHL*4.
	a.op(ld(ipv4Proto, 1))
	a.jump(bpf.JumpNotEqual, ipProtoTCP, lRet0, -1)
	a.op(ld(ipv4FragOff, 2))
	a.jump(bpf.JumpBitsSet, ipv4FragMask, lRet0, -1)
	a.op(bpf.LoadMemShift{Off: l.net})
	if s.kind == steerSplit {
		a.op(ld(ipv4Dst, 4))
		for _, d := range s.dsts.v4 {
			a.jump(bpf.JumpEqual, binary.BigEndian.Uint32(d[:]), lV4Port, -1)
		}
	}
	if flow {
		a.label(lV4Hash)
		a.op(bpf.LoadIndirect{Off: l.net, Size: 4}) // sport<<16 | dport
		a.op(bpf.StoreScratch{Src: bpf.RegA, N: 0})
		a.op(ld(ipv4Src, 4))
		a.op(bpf.LoadScratch{Dst: bpf.RegX, N: 0})
		hash()
	}
	if byPort {
		a.label(lV4Port)
		port(bpf.LoadIndirect{Off: l.net + 2, Size: 2}) // dport
	}
	// IPv6: TCP with no extension header.
	a.label(lV6)
	a.jump(bpf.JumpNotEqual, etherTypeIPv6, lRet0, -1)
	a.op(ld(ipv6Next, 1))
	a.jump(bpf.JumpNotEqual, ipProtoTCP, lRet0, -1)
	if s.kind == steerSplit {
		for i, d := range s.dsts.v6 {
			for w := range 4 {
				a.op(ld(ipv6Dst+uint32(4*w), 4))
				v := binary.BigEndian.Uint32(d[4*w:])
				if w < 3 {
					a.jump(bpf.JumpNotEqual, v, lNext+i, -1)
				} else {
					a.jump(bpf.JumpEqual, v, lV6Port, -1)
				}
			}
			a.label(lNext + i)
		}
	}
	if flow {
		a.label(lV6Hash)
		a.op(ld(ipv6Src, 4))
		a.op(bpf.TAX{})
		for k := uint32(4); k < 16; k += 4 {
			a.op(ld(ipv6Src+k, 4))
			a.op(bpf.ALUOpX{Op: bpf.ALUOpXor})
			a.op(bpf.TAX{})
		}
		a.op(ld(ipv6Payload, 4)) // sport<<16 | dport
		hash()
	}
	if byPort {
		a.label(lV6Port)
		port(ld(ipv6Payload+2, 2))
	}
	a.label(lRet0)
	a.op(bpf.RetConstant{Val: 0})
	prog, err := a.resolve()
	if err != nil {
		panic(fmt.Sprintf("link: steering program: %v", err)) // SteerSplit bounds its addresses
	}
	return prog
}

// asm assembles a classic-BPF program whose conditional jumps name labels
// (-1: the next instruction).
type asm struct {
	ins    []bpf.Instruction
	jumps  []asmJump
	labels map[int]int
}

type asmJump struct{ at, t, f int }

func (a *asm) op(i bpf.Instruction) { a.ins = append(a.ins, i) }

func (a *asm) jump(cond bpf.JumpTest, val uint32, t, f int) {
	a.jumps = append(a.jumps, asmJump{len(a.ins), t, f})
	a.ins = append(a.ins, bpf.JumpIf{Cond: cond, Val: val})
}

func (a *asm) label(l int) {
	if a.labels == nil {
		a.labels = map[int]int{}
	}
	a.labels[l] = len(a.ins)
}

func (a *asm) resolve() ([]bpf.Instruction, error) {
	skip := func(at, l int) (uint8, error) {
		if l < 0 {
			return 0, nil
		}
		to, ok := a.labels[l]
		if !ok {
			return 0, fmt.Errorf("jump at %d to undefined label %d", at, l)
		}
		d := to - at - 1
		if d < 0 || d > 255 {
			return 0, fmt.Errorf("jump at %d to label %d: %d instructions", at, l, d)
		}
		return uint8(d), nil
	}
	for _, j := range a.jumps {
		ji := a.ins[j.at].(bpf.JumpIf)
		var err error
		if ji.SkipTrue, err = skip(j.at, j.t); err != nil {
			return nil, err
		}
		if ji.SkipFalse, err = skip(j.at, j.f); err != nil {
			return nil, err
		}
		a.ins[j.at] = ji
	}
	return a.ins, nil
}

// Pick returns the queue, among n, that the fanout program of s sends
// frame to; frame is what Recv returns (a virtio_net_hdr, then the
// Ethernet frame). It is the Go mirror of Program: the same loads, the
// same arithmetic, 0 whenever a load would fall outside the frame.
func (s Steering) Pick(frame []byte, n int) int {
	if n <= 1 || len(frame) < vnetLen+ethLen {
		return 0
	}
	eth := frame[vnetLen:]
	ip := eth[ethLen:]
	switch binary.BigEndian.Uint16(eth[12:]) {
	case etherTypeIPv4:
		if len(ip) < ipv4Proto+1 || ip[ipv4Proto] != ipProtoTCP ||
			binary.BigEndian.Uint16(ip[ipv4FragOff:])&ipv4FragMask != 0 {
			return 0
		}
		l4 := int(ip[0]&0x0f) * 4 // what LoadMemShift computes, even if < 20
		if len(ip) < l4+4 {
			return 0
		}
		sport, dport := binary.BigEndian.Uint16(ip[l4:]), binary.BigEndian.Uint16(ip[l4+2:])
		if s.kind == steerSplit {
			if len(ip) < ipv4Dst+4 {
				return 0 // the destination load fails
			}
			if s.dsts.has4([4]byte(ip[ipv4Dst:])) {
				return PortOwner(dport, n)
			}
		}
		if s.kind == steerPort {
			return PortOwner(dport, n)
		}
		if len(ip) < ipv4Src+4 {
			return 0
		}
		return FlowOwner([4]byte(ip[ipv4Src:]), sport, dport, n)
	case etherTypeIPv6:
		if len(ip) < ipv6Payload+4 || ip[ipv6Next] != ipProtoTCP {
			return 0
		}
		sport, dport := binary.BigEndian.Uint16(ip[ipv6Payload:]), binary.BigEndian.Uint16(ip[ipv6Payload+2:])
		if s.kind == steerPort || (s.kind == steerSplit && s.dsts.has6([16]byte(ip[ipv6Dst:]))) {
			return PortOwner(dport, n)
		}
		return FlowOwner6([16]byte(ip[ipv6Src:]), sport, dport, n)
	}
	return 0
}

// FlowOwner returns the queue, among n, that SteerFlowHash gives an IPv4
// TCP segment from src:sport to port dport:
//
//	h = (src ^ (sport<<16 | dport)) * 0x9E3779B1   (uint32, src big-endian)
//	owner = (h >> 16) % n
func FlowOwner(src [4]byte, sport, dport uint16, n int) int {
	return flowOwner(binary.BigEndian.Uint32(src[:]), sport, dport, n)
}

// FlowOwner6 is FlowOwner for IPv6, with the XOR of the four 32-bit words
// of src in place of the IPv4 address. Segments with extension headers
// are not hashed (they go to queue 0).
func FlowOwner6(src [16]byte, sport, dport uint16, n int) int {
	w := binary.BigEndian.Uint32(src[0:]) ^ binary.BigEndian.Uint32(src[4:]) ^
		binary.BigEndian.Uint32(src[8:]) ^ binary.BigEndian.Uint32(src[12:])
	return flowOwner(w, sport, dport, n)
}

func flowOwner(src uint32, sport, dport uint16, n int) int {
	if n <= 1 {
		return 0
	}
	h := (src ^ (uint32(sport)<<16 | uint32(dport))) * flowMul
	return int((h >> 16) % uint32(n))
}

// PortOwner returns the queue, among n, that SteerDstPort gives a TCP
// segment to port: port % n.
func PortOwner(port uint16, n int) int {
	if n <= 1 {
		return 0
	}
	return int(uint32(port) % uint32(n))
}

func (d *portDsts) has4(a [4]byte) bool {
	for _, x := range d.v4 {
		if x == a {
			return true
		}
	}
	return false
}

func (d *portDsts) has6(a [16]byte) bool {
	for _, x := range d.v6 {
		if x == a {
			return true
		}
	}
	return false
}

// String returns the name of s.
func (s Steering) String() string {
	switch s.kind {
	case steerFlow:
		return "flow-hash"
	case steerPort:
		return "dst-port"
	case steerSplit:
		if s.dsts != nil {
			return fmt.Sprintf("split(%d dst-port addresses)", len(s.dsts.v4)+len(s.dsts.v6))
		}
	}
	return fmt.Sprintf("Steering(%d)", s.kind)
}
