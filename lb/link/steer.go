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
	ipv6Next     = 6  // IPv6 next header
	ipv6Src      = 8  // IPv6 source address (16 bytes)
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
func (s Steering) instructions(n int, l layout) []bpf.Instruction {
	if n <= 1 {
		return []bpf.Instruction{bpf.RetConstant{Val: 0}}
	}
	mod := uint32(n)
	ld := func(off uint32, size int) bpf.Instruction { return bpf.LoadAbsolute{Off: l.net + off, Size: size} }
	// hash is A = ((A ^ X) * flowMul >> 16) % n; return A.
	hash := []bpf.Instruction{
		bpf.ALUOpX{Op: bpf.ALUOpXor},
		bpf.ALUOpConstant{Op: bpf.ALUOpMul, Val: flowMul},
		bpf.ALUOpConstant{Op: bpf.ALUOpShiftRight, Val: 16},
		bpf.ALUOpConstant{Op: bpf.ALUOpMod, Val: mod},
		bpf.RetA{},
	}
	var v4, v6 []bpf.Instruction
	// Common IPv4 prefix: TCP, not a fragment; X = IHL*4.
	v4 = []bpf.Instruction{
		ld(ipv4Proto, 1),
		bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: ipProtoTCP, SkipTrue: 0xff}, // → ret 0
		ld(ipv4FragOff, 2),
		bpf.JumpIf{Cond: bpf.JumpBitsSet, Val: ipv4FragMask, SkipTrue: 0xff}, // → ret 0
		bpf.LoadMemShift{Off: l.net},
	}
	v6 = []bpf.Instruction{
		ld(ipv6Next, 1),
		bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: ipProtoTCP, SkipTrue: 0xff}, // → ret 0
	}
	switch s {
	case SteerFlowHash:
		v4 = append(v4,
			bpf.LoadIndirect{Off: l.net, Size: 4}, // sport<<16 | dport
			bpf.StoreScratch{Src: bpf.RegA, N: 0},
			ld(ipv4Src, 4),
			bpf.LoadScratch{Dst: bpf.RegX, N: 0},
		)
		v4 = append(v4, hash...)
		v6 = append(v6,
			ld(ipv6Src, 4), bpf.TAX{},
			ld(ipv6Src+4, 4), bpf.ALUOpX{Op: bpf.ALUOpXor}, bpf.TAX{},
			ld(ipv6Src+8, 4), bpf.ALUOpX{Op: bpf.ALUOpXor}, bpf.TAX{},
			ld(ipv6Src+12, 4), bpf.ALUOpX{Op: bpf.ALUOpXor}, bpf.TAX{},
			ld(ipv6Payload, 4), // sport<<16 | dport
		)
		v6 = append(v6, hash...)
	case SteerDstPort:
		v4 = append(v4,
			bpf.LoadIndirect{Off: l.net + 2, Size: 2}, // dport
			bpf.ALUOpConstant{Op: bpf.ALUOpMod, Val: mod},
			bpf.RetA{},
		)
		v6 = append(v6,
			ld(ipv6Payload+2, 2),
			bpf.ALUOpConstant{Op: bpf.ALUOpMod, Val: mod},
			bpf.RetA{},
		)
	default:
		panic(fmt.Sprintf("link: unknown Steering %d", s))
	}
	prog := []bpf.Instruction{
		l.proto,
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: etherTypeIPv4, SkipTrue: 1},
		bpf.Jump{Skip: uint32(len(v4))}, // not IPv4: to the IPv6 check
	}
	prog = append(prog, v4...)
	prog = append(prog, bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: etherTypeIPv6, SkipTrue: 0xff}) // → ret 0
	prog = append(prog, v6...)
	prog = append(prog, bpf.RetConstant{Val: 0})
	// Resolve the "→ ret 0" jumps (SkipTrue 0xff) to the final instruction.
	last := len(prog) - 1
	for i, ins := range prog {
		if j, ok := ins.(bpf.JumpIf); ok && j.SkipTrue == 0xff {
			j.SkipTrue = uint8(last - i - 1)
			prog[i] = j
		}
	}
	return prog
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
		if s == SteerDstPort {
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
		if s == SteerDstPort {
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

// String returns the name of s.
func (s Steering) String() string {
	switch s {
	case SteerFlowHash:
		return "flow-hash"
	case SteerDstPort:
		return "dst-port"
	}
	return fmt.Sprintf("Steering(%d)", uint8(s))
}
