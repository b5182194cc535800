package nat_test

import (
	"errors"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"reflect"
	"slices"
	"strings"
	"testing"

	"tslb/nat"
)

// goldenSYN is 192.0.2.10:40000 -> 198.51.100.1:80, SYN, MSS 1460.
var goldenSYN = []byte{
	// Ethernet
	0x02, 0, 0, 0, 0, 0x0b, // dst
	0x02, 0, 0, 0, 0, 0x0a, // src
	0x08, 0x00, // IPv4
	// IPv4
	0x45, 0x00, // version 4, IHL 5, TOS 0
	0x00, 0x2c, // total length 44
	0x12, 0x34, // id
	0x40, 0x00, // DF, offset 0
	0x40, 0x06, // TTL 64, TCP
	0x3c, 0x59, // header checksum
	192, 0, 2, 10, // src
	198, 51, 100, 1, // dst
	// TCP
	0x9c, 0x40, // sport 40000
	0x00, 0x50, // dport 80
	0x01, 0x02, 0x03, 0x04, // seq
	0x00, 0x00, 0x00, 0x00, // ack
	0x60, 0x02, // data offset 6 (24 bytes), SYN
	0xfa, 0xf0, // window 64240
	0x10, 0x60, // checksum
	0x00, 0x00, // urgent
	0x02, 0x04, 0x05, 0xb4, // MSS 1460
}

// goldenARP is a who-has 198.51.100.1 tell 192.0.2.10.
var goldenARP = []byte{
	0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // dst broadcast
	0x02, 0, 0, 0, 0, 0x0a, // src
	0x08, 0x06, // ARP
	0x00, 0x01, 0x08, 0x00, 6, 4, // Ethernet, IPv4, hlen 6, plen 4
	0x00, 0x01, // request
	0x02, 0, 0, 0, 0, 0x0a, 192, 0, 2, 10, // sender
	0, 0, 0, 0, 0, 0, 198, 51, 100, 1, // target
	0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // padding to 60
}

// goldenPing is an ICMP echo request 192.0.2.10 -> 198.51.100.1, id 1 seq 2,
// payload "hi".
var goldenPing = []byte{
	0x02, 0, 0, 0, 0, 0x0b, 0x02, 0, 0, 0, 0, 0x0a, 0x08, 0x00,
	0x45, 0x00, 0x00, 0x1e, // total length 30
	0x00, 0x01, 0x00, 0x00, // id 1, no flags
	0x40, 0x01, 0x00, 0x00, // TTL 64, ICMP, checksum (not checked by Decode)
	192, 0, 2, 10, 198, 51, 100, 1,
	0x08, 0x00, // echo request, code 0
	0x8f, 0x93, // ICMP checksum
	0x00, 0x01, 0x00, 0x02, // id 1, seq 2
	'h', 'i',
}

// edit returns a copy of b with f applied.
func edit(b []byte, f func([]byte)) []byte {
	c := slices.Clone(b)
	f(c)
	return c
}

func TestDecode(t *testing.T) {
	tests := []struct {
		name  string
		frame []byte
		err   error
		want  nat.Packet // Frame is filled in by the test
	}{
		{
			name:  "tcp_syn_mss",
			frame: goldenSYN,
			want: nat.Packet{
				EtherType: nat.EtherTypeIPv4, L3: 14, L4: 34, L4Len: 24, Proto: nat.ProtoTCP,
				Src: nat.Addr4{192, 0, 2, 10}, Dst: nat.Addr4{198, 51, 100, 1},
				SrcPort: 40000, DstPort: 80, TCPFlags: nat.TCPFlagSYN, Seq: 0x01020304,
				TCPHdrLen: 24,
			},
		},
		{
			name:  "ethernet_padding_ignored",
			frame: append(slices.Clone(goldenSYN), 0, 0, 0, 0, 0, 0),
			want: nat.Packet{
				EtherType: nat.EtherTypeIPv4, L3: 14, L4: 34, L4Len: 24, Proto: nat.ProtoTCP,
				Src: nat.Addr4{192, 0, 2, 10}, Dst: nat.Addr4{198, 51, 100, 1},
				SrcPort: 40000, DstPort: 80, TCPFlags: nat.TCPFlagSYN, Seq: 0x01020304,
				TCPHdrLen: 24,
			},
		},
		{
			name:  "tcp_payload",
			frame: edit(append(slices.Clone(goldenSYN), 'a', 'b', 'c'), func(b []byte) { b[17] = 47 }),
			want: nat.Packet{
				EtherType: nat.EtherTypeIPv4, L3: 14, L4: 34, L4Len: 27, Proto: nat.ProtoTCP,
				Src: nat.Addr4{192, 0, 2, 10}, Dst: nat.Addr4{198, 51, 100, 1},
				SrcPort: 40000, DstPort: 80, TCPFlags: nat.TCPFlagSYN, Seq: 0x01020304,
				TCPHdrLen: 24, Payload: 3,
			},
		},
		{
			name:  "arp_request",
			frame: goldenARP,
			want:  nat.Packet{EtherType: nat.EtherTypeARP, L3: 14},
		},
		{
			name:  "icmp_echo",
			frame: goldenPing,
			want: nat.Packet{
				EtherType: nat.EtherTypeIPv4, L3: 14, L4: 34, L4Len: 10, Proto: nat.ProtoICMP,
				Src: nat.Addr4{192, 0, 2, 10}, Dst: nat.Addr4{198, 51, 100, 1},
			},
		},
		{
			name:  "bogus_proto_ff",
			frame: edit(goldenSYN, func(b []byte) { b[23] = 0xff }),
			want: nat.Packet{
				EtherType: nat.EtherTypeIPv4, L3: 14, L4: 34, L4Len: 24, Proto: 0xff,
				Src: nat.Addr4{192, 0, 2, 10}, Dst: nat.Addr4{198, 51, 100, 1},
			},
		},
		// Hostile rows.
		{name: "empty", frame: nil, err: nat.ErrShortFrame},
		{name: "truncated_ethernet", frame: goldenSYN[:13], err: nat.ErrShortFrame},
		{name: "truncated_ipv4", frame: goldenSYN[:14+19], err: nat.ErrShortFrame},
		{name: "truncated_tcp", frame: goldenSYN[:len(goldenSYN)-1], err: nat.ErrBadTotalLength},
		{name: "vlan_ethertype", frame: edit(goldenSYN, func(b []byte) { b[12], b[13] = 0x81, 0x00 }), err: nat.ErrUnsupportedEtherType},
		{name: "ipv4_under_ipv6_ethertype", frame: edit(goldenSYN, func(b []byte) { b[12], b[13] = 0x86, 0xdd }), err: nat.ErrNotIPv6},
		{name: "short_arp", frame: goldenARP[:14+27], err: nat.ErrShortARP},
		{name: "version_6", frame: edit(goldenSYN, func(b []byte) { b[14] = 0x65 }), err: nat.ErrNotIPv4},
		{name: "ihl_4", frame: edit(goldenSYN, func(b []byte) { b[14] = 0x44 }), err: nat.ErrBadIHL},
		{name: "ihl_past_end", frame: edit(goldenSYN, func(b []byte) { b[14] = 0x4f }), err: nat.ErrBadIHL},
		{name: "total_length_below_ihl", frame: edit(goldenSYN, func(b []byte) { b[16], b[17] = 0, 19 }), err: nat.ErrBadTotalLength},
		{name: "total_length_past_frame", frame: edit(goldenSYN, func(b []byte) { b[17] = 45 }), err: nat.ErrBadTotalLength},
		{name: "fragment_mf", frame: edit(goldenSYN, func(b []byte) { b[20] = 0x20 }), err: nat.ErrFragment},
		{name: "fragment_offset", frame: edit(goldenSYN, func(b []byte) { b[21] = 1 }), err: nat.ErrFragment},
		{name: "short_tcp", frame: edit(goldenSYN[:14+20+19], func(b []byte) { b[17] = 39 }), err: nat.ErrShortTCP},
		{name: "data_offset_4", frame: edit(goldenSYN, func(b []byte) { b[46] = 0x40 }), err: nat.ErrBadDataOffset},
		{name: "data_offset_past_end", frame: edit(goldenSYN, func(b []byte) { b[46] = 0x70 }), err: nat.ErrBadDataOffset},
		{name: "short_icmp", frame: edit(goldenPing[:14+20+7], func(b []byte) { b[17] = 27 }), err: nat.ErrShortICMP},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var p nat.Packet
			err := p.Decode(tt.frame)
			if !errors.Is(err, tt.err) {
				t.Fatalf("Decode error = %v, want %v", err, tt.err)
			}
			if err != nil {
				return
			}
			tt.want.Frame = tt.frame
			if !samePacket(p, tt.want) {
				t.Errorf("Decode =\n%+v\nwant\n%+v", p, tt.want)
			}
			if n := testing.AllocsPerRun(100, func() { _ = p.Decode(tt.frame) }); n != 0 {
				t.Errorf("Decode allocs = %v, want 0", n)
			}
		})
	}
}

// samePacket compares two Packets, Frame by identity of contents.
func samePacket(a, b nat.Packet) bool {
	fa, fb := a.Frame, b.Frame
	a.Frame, b.Frame = nil, nil
	return reflect.DeepEqual(a, b) && slices.Equal(fa, fb)
}

func TestDecodeErrorsNoAllocs(t *testing.T) {
	bad := edit(goldenSYN, func(b []byte) { b[14] = 0x44 })
	var p nat.Packet
	if n := testing.AllocsPerRun(100, func() { _ = p.Decode(bad) }); n != 0 {
		t.Errorf("Decode error path allocs = %v, want 0", n)
	}
}

func TestDecodeKeepsPartialCsum(t *testing.T) {
	p := nat.Packet{PartialCsum: true}
	if err := p.Decode(goldenSYN); err != nil {
		t.Fatal(err)
	}
	if !p.PartialCsum {
		t.Error("Decode cleared PartialCsum")
	}
}

func TestFragmentKeepsAddresses(t *testing.T) {
	var p nat.Packet
	frag := edit(goldenSYN, func(b []byte) { b[20] = 0x20 })
	if err := p.Decode(frag); err != nat.ErrFragment {
		t.Fatalf("Decode = %v", err)
	}
	if p.Src != ipC || p.Dst != ipV || p.L4 != 0 {
		t.Errorf("fragment: Src %v Dst %v L4 %d", p.Src, p.Dst, p.L4)
	}
	// Port rewrites must be no-ops on a fragment.
	before := slices.Clone(frag)
	p.SetSrcPort(1)
	p.SetSeq(1)
	if !slices.Equal(before, frag) {
		t.Error("port/seq rewrite changed a fragment")
	}
}

func TestReason(t *testing.T) {
	errs := []error{
		nat.ErrShortFrame, nat.ErrNotIPv4, nat.ErrBadIHL, nat.ErrBadTotalLength,
		nat.ErrFragment, nat.ErrShortTCP, nat.ErrBadDataOffset, nat.ErrBadOptions,
		nat.ErrShortICMP, nat.ErrShortARP, nat.ErrUnsupportedEtherType,
		nat.ErrBadIPChecksum, nat.ErrBadTCPChecksum, nat.ErrBadIPOptions, nat.ErrSourceRoute,
		nat.ErrNotIPv6, nat.ErrBadPayloadLength, nat.ErrJumbogram, nat.ErrFragment6,
		nat.ErrShortExtHeader, nat.ErrBadExtHeader, nat.ErrExtHeaderLimit, nat.ErrRoutingHeader,
		nat.ErrUnsupportedNextHeader, nat.ErrBadNDP, nat.ErrNotNDP,
		nat.ErrNotICMPError, nat.ErrNoRoom, nat.ErrNotTCP, errors.New("x"),
	}
	if len(errs) != len(nat.Reasons) {
		t.Fatalf("len(Reasons) = %d, want %d", len(nat.Reasons), len(errs))
	}
	seen := map[string]bool{}
	for i, err := range errs {
		got := nat.Reason(err)
		if got != nat.Reasons[i] {
			t.Errorf("Reason(%v) = %q, want %q", err, got, nat.Reasons[i])
		}
		if seen[got] {
			t.Errorf("duplicate label %q", got)
		}
		seen[got] = true
	}
	if got := nat.Reason(nil); got != "other" {
		t.Errorf("Reason(nil) = %q", got)
	}
	// Every error the package declares has a label of its own: a drop
	// counted as "other" tells an operator nothing.
	declared := map[string]bool{}
	fset := token.NewFileSet()
	pkgs, err := parser.ParseDir(fset, ".", func(fi fs.FileInfo) bool { return !strings.HasSuffix(fi.Name(), "_test.go") }, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, pkg := range pkgs {
		for _, f := range pkg.Files {
			for _, d := range f.Decls {
				g, ok := d.(*ast.GenDecl)
				if !ok || g.Tok != token.VAR {
					continue
				}
				for _, sp := range g.Specs {
					for _, n := range sp.(*ast.ValueSpec).Names {
						if strings.HasPrefix(n.Name, "Err") {
							declared[n.Name] = true
						}
					}
				}
			}
		}
	}
	if len(declared) != len(errs)-1 {
		t.Errorf("the package declares %d Err variables, the table above lists %d: %v", len(declared), len(errs)-1, declared)
	}
}

func TestViews(t *testing.T) {
	f := slices.Clone(goldenSYN)
	e := nat.Ethernet(f)
	if e.Dst() != macB || e.Src() != macA || e.Type() != nat.EtherTypeIPv4 {
		t.Errorf("Ethernet = %v %v %#x", e.Dst(), e.Src(), e.Type())
	}
	e.SetDst(macA)
	e.SetSrc(macB)
	if e.Dst() != macA || e.Src() != macB {
		t.Error("Ethernet setters")
	}
	if got := macA.String(); got != "02:00:00:00:00:0a" {
		t.Errorf("MAC.String = %q", got)
	}
	ip := nat.IPv4(f[14:])
	if ip.HeaderLen() != 20 || ip.TotalLen() != 44 || ip.Protocol() != 6 || ip.TTL() != 64 ||
		ip.Src() != ipC || ip.Dst() != ipV || ip.Checksum() != 0x3c59 || ip.ComputeChecksum() != 0x3c59 ||
		ip.MoreFragments() || ip.FragmentOffset() != 0 {
		t.Error("IPv4 getters disagree with the golden bytes")
	}
	ip[6], ip[7] = 0x20, 0x02
	if !ip.MoreFragments() || ip.FragmentOffset() != 16 {
		t.Errorf("MF %v offset %d", ip.MoreFragments(), ip.FragmentOffset())
	}
	tcp := nat.TCP(f[34:])
	if tcp.SrcPort() != 40000 || tcp.DstPort() != 80 || tcp.Seq() != 0x01020304 || tcp.Ack() != 0 ||
		tcp.DataOffset() != 24 || tcp.Flags() != nat.TCPFlagSYN || tcp.Window() != 64240 ||
		tcp.Checksum() != 0x1060 || !slices.Equal(tcp.Options(), []byte{2, 4, 5, 0xb4}) {
		t.Error("TCP getters disagree with the golden bytes")
	}
	if got := ipC.String(); got != "192.0.2.10" {
		t.Errorf("Addr4.String = %q", got)
	}
	if nat.Addr4From(ipC.Netip()) != ipC || nat.Addr4From(ipC.Netip().Unmap()) != ipC {
		t.Error("Addr4 netip round trip")
	}
	m := nat.ICMP(goldenPing[34:])
	if m.Type() != 8 || m.Code() != 0 || m.Checksum() != 0x8f93 {
		t.Errorf("ICMP = %d %d %#x", m.Type(), m.Code(), m.Checksum())
	}
}

func TestARP(t *testing.T) {
	var p nat.Packet
	if err := p.Decode(goldenARP); err != nil {
		t.Fatal(err)
	}
	a := p.ARP()
	if !a.IsEthernetIPv4() || a.Op() != nat.ARPRequest || a.SenderMAC() != macA ||
		a.SenderIP() != ipC || a.TargetMAC() != (nat.MAC{}) || a.TargetIP() != ipV {
		t.Errorf("ARP getters disagree with the golden bytes")
	}
	buf := make([]byte, 64)
	n := nat.BuildARP(buf, nat.ARPRequest, macA, nat.MAC{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, macA, ipC, nat.MAC{}, ipV)
	if n != 60 || !slices.Equal(buf[:n], goldenARP) {
		t.Errorf("BuildARP = %d, % x", n, buf[:n])
	}
	if n := nat.BuildARP(buf[:59], nat.ARPReply, macA, macB, macA, ipC, macB, ipV); n != 0 {
		t.Errorf("BuildARP short buffer = %d", n)
	}
	bad := edit(goldenARP, func(b []byte) { b[19] = 16 }) // plen 16
	if nat.ARP(bad[14:]).IsEthernetIPv4() {
		t.Error("IsEthernetIPv4 accepted plen 16")
	}
	if nat.ARP(goldenARP[14:41]).IsEthernetIPv4() {
		t.Error("IsEthernetIPv4 accepted 27 bytes")
	}
}
