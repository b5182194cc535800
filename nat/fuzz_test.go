package nat_test

import (
	"encoding/binary"
	"slices"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"tslb/nat"
)

// FuzzDecode runs Decode and every parser and rewrite, IPv4 and IPv6, on
// arbitrary frames: nothing may panic, and no call may grow the frame.
func FuzzDecode(f *testing.F) {
	f.Add(goldenSYN, false)
	f.Add(goldenARP, false)
	f.Add(goldenPing, false)
	f.Add(icmpErrorFrame(60), false)
	f.Add(icmpErrorFrame(28), true)
	f.Add(buildTCP(tcpSpec{src: ipC, dst: ipV, opts: tsOpts(1, 2), payload: []byte("x")}), true)
	f.Add(buildTCP(tcpSpec{src: ipC, dst: ipV, opts: []byte{1, 1, 5, 10, 0, 0, 0, 1, 0, 0, 0, 2}}), false)
	// VLAN tag, IHL 15 past the end, data offset 15 past the end.
	f.Add(edit(goldenSYN, func(b []byte) { b[12], b[13] = 0x81, 0 }), false)
	f.Add(edit(goldenSYN, func(b []byte) { b[14] = 0x4f }), false)
	f.Add(edit(goldenSYN, func(b []byte) { b[46] = 0xf0 }), false)
	// IPv6: TCP, extension headers, echo, an error quoting TCP, ND.
	f.Add(goldenSYN6, false)
	f.Add(goldenExt6, true)
	f.Add(goldenPing6, false)
	f.Add(goldenNS, false)
	f.Add(goldenNA, false)
	f.Add(icmp6ErrorFrame(2, 0, 1500, icmp6Inner([]extHdr{hbh()}, false), 56, false), false)
	f.Add(with(routing(0), fragment(0, false), destOpts()), true)
	f.Add(buildTCP6(tcp6Spec{src: ip6C, dst: ip6V, opts: tsOpts(1, 2), payload: []byte("x"), ext: []extHdr{destOpts()}}), true)
	// Hostile IPv6: fragment, routing with segments left, jumbogram, HBH
	// length past the end, a Destination Options chain past the limit.
	f.Add(with(fragment(1, true)), false)
	f.Add(with(routing(1)), false)
	f.Add(edit(with(hbh()), func(b []byte) { b[18], b[19] = 0, 0 }), false)
	f.Add(edit(goldenExt6, func(b []byte) { b[55] = 0xff }), false)
	f.Add(with(destOpts(), destOpts(), destOpts(), destOpts(), destOpts(), destOpts(), destOpts(), destOpts(), destOpts()), false)
	f.Fuzz(func(t *testing.T, frame []byte, partial bool) {
		n := len(frame)
		p := nat.Packet{PartialCsum: partial}
		if err := p.Decode(frame); err != nil {
			_ = nat.Reason(err)
		}
		var o nat.TCPOptions
		_ = p.TCPOptions(&o)
		p.SetSrc(nat.Addr4{1, 2, 3, 4})
		p.SetDst(nat.Addr4{5, 6, 7, 8})
		p.SetSrcPort(1)
		p.SetDstPort(2)
		p.SetSeq(3)
		p.SetAck(4)
		p.DecTTL()
		p.SetTimestamps(5, 6)
		p.SetSACKBlock(0, nat.SACKBlock{Start: 7, End: 8})
		p.SetMSS(1400)
		p.StripTimestamps()
		var e nat.ICMPError
		if p.ParseICMPError(&e) == nil {
			p.RewriteICMPError(&e, nat.Addr4{9, 9, 9, 9}, 10, nat.Addr4{11, 11, 11, 11}, 12, e.InnerSeq+1)
		}
		p.EchoReply()
		// IPv6.
		_ = p.IsIPv6()
		_ = p.TTL()
		_ = p.IPv6()
		p.SetSrc6(ip6LL)
		p.SetDst6(ip6Rtr)
		p.SetTuple6(ip6C, 3, ip6V, 4)
		var e6 nat.ICMPv6Error
		if p.ParseICMPv6Error(&e6) == nil {
			p.RewriteICMPv6Error(&e6, ip6V, 10, ip6C, 12, e6.InnerSeq+1)
		}
		p.LowerPacketTooBigMTU(12)
		x := nat.Translation{TS: nat.TSActSynth}
		x.PacketTooBigToClient(&p)
		var nd nat.NDP
		if p.ParseNDP(&nd) == nil {
			p.NDPReply(&nd)
		}
		p.EchoReply6()
		p.DecTTL()
		if len(p.Frame) > n || len(frame) != n {
			t.Fatalf("frame grew from %d to %d", n, len(p.Frame))
		}
		nat.CompletePartial(frame, p.L4, 16)
	})
}

// FuzzParseTCPOptions checks that what parses also round-trips through
// WriteTCPOptions with the same known fields, when it fits.
func FuzzParseTCPOptions(f *testing.F) {
	f.Add([]byte{2, 4, 5, 0xb4, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 7})
	f.Add([]byte{1, 1, 8, 10, 1, 2, 3, 4, 5, 6, 7, 8})
	f.Add([]byte{1, 1, 5, 18, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 4})
	f.Add([]byte{30, 1})
	f.Add([]byte{0})
	f.Fuzz(func(t *testing.T, opts []byte) {
		var o nat.TCPOptions
		if err := nat.ParseTCPOptions(opts, &o); err != nil {
			return
		}
		var buf [nat.MaxOptionsLen]byte
		n := nat.WriteTCPOptions(buf[:], &o)
		if n < 0 {
			return // MSS+SACK-permitted+TS+WScale always fit, but be lenient
		}
		if n > nat.MaxOptionsLen || n%4 != 0 {
			t.Fatalf("WriteTCPOptions wrote %d bytes", n)
		}
		var o2 nat.TCPOptions
		if err := nat.ParseTCPOptions(buf[:n], &o2); err != nil {
			t.Fatalf("reparse of % x: %v", buf[:n], err)
		}
		if o.HasMSS != o2.HasMSS || o.MSS != o2.MSS || o.HasWScale != o2.HasWScale || o.WScale != o2.WScale ||
			o.SACKPermitted != o2.SACKPermitted || o.HasTS != o2.HasTS || o.TSVal != o2.TSVal || o.TSEcr != o2.TSEcr {
			t.Fatalf("round trip changed fields:\n%+v\n%+v", o, o2)
		}
		if o2.NumSACK > o.NumSACK || !slices.Equal(o2.SACK[:o2.NumSACK], o.SACK[:o2.NumSACK]) {
			t.Fatalf("SACK blocks: %v -> %v", o.SACK[:o.NumSACK], o2.SACK[:o2.NumSACK])
		}
		if o.NumSACK > 0 && o2.NumSACK == 0 && !o.HasTS && !o.HasMSS {
			t.Fatalf("SACK blocks dropped although they fit")
		}
	})
}

// FuzzChecksumIncremental applies random edits in full mode to a valid
// segment and compares the checksums with a full recompute.
func FuzzChecksumIncremental(f *testing.F) {
	f.Add([]byte("payload"), uint32(1), uint32(2), uint16(3), uint16(4), uint32(5), uint32(6), uint32(7), uint8(0xff))
	f.Add([]byte{}, uint32(0), uint32(0xffffffff), uint16(0), uint16(0xffff), uint32(0), uint32(0xffffffff), uint32(0), uint8(1))
	f.Fuzz(func(t *testing.T, payload []byte, src, dst uint32, sport, dport uint16, seq, ack, ts uint32, which uint8) {
		if len(payload) > 9000 {
			payload = payload[:9000]
		}
		frame := buildTCP(tcpSpec{src: ipC, dst: ipV, sport: 1, dport: 2, seq: 3, ack: 4,
			opts: []byte{1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2, 1, 2, 4, 5, 0xb4}, payload: payload})
		var p nat.Packet
		if err := p.Decode(frame); err != nil {
			t.Fatal(err)
		}
		var a, b nat.Addr4
		binary.BigEndian.PutUint32(a[:], src)
		binary.BigEndian.PutUint32(b[:], dst)
		edits := []func(){
			func() { p.SetSrc(a) }, func() { p.SetDst(b) }, func() { p.SetSrcPort(sport) },
			func() { p.SetDstPort(dport) }, func() { p.SetSeq(seq) }, func() { p.SetAck(ack) },
			func() { p.SetTimestamps(ts, ^ts) }, func() { p.SetMSS(uint16(ts)) },
		}
		for i, e := range edits {
			if which&(1<<i) != 0 {
				e()
			}
		}
		if which&1 == 0 {
			p.StripTimestamps()
		}
		checkFull(t, frame)
	})
}

// FuzzICMPv6Error wraps arbitrary quoted bytes in an ICMPv6 message of an
// arbitrary type with a valid checksum, then parses and rewrites it:
// nothing may panic, the frame keeps its length, the ICMPv6 checksum stays
// valid (full mode) or untouched by the quote (partial mode), a re-parse
// sees the new values, and a quoted TCP or UDP packet that was whole and
// valid keeps a valid checksum under its new addresses. Lowering a Packet
// Too Big's MTU and rewriting the outer addresses keep the checksum valid.
func FuzzICMPv6Error(f *testing.F) {
	seeds := [][]byte{
		icmp6Inner(nil, false), icmp6Inner([]extHdr{hbh(), destOpts()}, false), icmp6Inner([]extHdr{destOpts()}, true),
		icmp6Inner([]extHdr{routing(0), fragment(0, false)}, false), icmp6Inner(nil, false)[:48], icmp6Inner(nil, false)[:58],
		icmp6Inner([]extHdr{fragment(3, true)}, false), goldenSYN[14:],
	}
	for i, s := range seeds {
		f.Add(s, uint8(1+i%4), i%3 == 0, ip6C[:], ip6V[:], uint16(5555), uint16(443), uint32(i), uint32(12))
	}
	f.Add([]byte{0x60}, uint8(2), false, []byte{}, []byte{}, uint16(0), uint16(0), uint32(0), uint32(0))
	f.Fuzz(func(t *testing.T, quote []byte, typ uint8, partial bool, nsrc, ndst []byte, sport, dport uint16, seq, by uint32) {
		if len(quote) > 1232 {
			quote = quote[:1232]
		}
		if typ&0x80 == 0 {
			typ = 1 + typ%4 // mostly errors
		}
		var src, dst nat.Addr16
		copy(src[:], nsrc)
		copy(dst[:], ndst)
		// Is the quote a whole, valid TCP or UDP packet?
		whole := false
		var q nat.Packet
		qf := append(make([]byte, 14), quote...)
		binary.BigEndian.PutUint16(qf[12:], nat.EtherTypeIPv6)
		if q.Decode(qf) == nil && q.L4+q.L4Len == len(qf) && (q.Proto == nat.ProtoTCP || q.Proto == nat.ProtoUDP) &&
			refL4Sum6(q.Src6, q.Dst6, q.Proto, qf[q.L4:]) == 0xffff {
			whole = !(q.Proto == nat.ProtoUDP && qf[q.L4+6] == 0 && qf[q.L4+7] == 0)
		}
		frame := icmp6ErrorFrame(typ, 0, 1500, quote, len(quote), partial)
		n := len(frame)
		p := nat.Packet{PartialCsum: partial}
		if err := p.Decode(frame); err != nil {
			t.Fatalf("Decode: %v", err)
		}
		field := nat.ICMPv6(frame[54:]).Checksum()
		var e nat.ICMPv6Error
		err := p.ParseICMPv6Error(&e)
		if whole && typ <= 4 && err != nil {
			t.Fatalf("whole quote refused: %v", err)
		}
		if err == nil {
			p.RewriteICMPv6Error(&e, src, sport, dst, dport, seq)
			var e2 nat.ICMPv6Error
			if err := p.ParseICMPv6Error(&e2); err != nil || e2 != e || e2.InnerSrc != src || e2.InnerDst != dst ||
				e2.InnerSrcPort != sport || e2.InnerDstPort != dport || (e2.HasSeq && e2.InnerSeq != seq) {
				t.Fatalf("re-parse: %v %+v, want %+v", err, e2, e)
			}
			if whole {
				if s := refL4Sum6(src, dst, e.InnerProto, frame[62+q.L4-14:]); s != 0xffff {
					t.Fatalf("quoted checksum no longer valid (sum %#x)", s)
				}
			}
		}
		if _, ok := p.LowerPacketTooBigMTU(by); ok != (typ == nat.ICMPv6TypePacketTooBig) {
			t.Fatalf("LowerPacketTooBigMTU ok = %v for type %d", ok, typ)
		}
		if partial {
			if got := nat.ICMPv6(frame[54:]).Checksum(); got != field {
				t.Fatalf("partial field changed %#x -> %#x", field, got)
			}
		} else {
			checkFull6(t, frame)
		}
		p.SetTuple6(src, 1, dst, 2)
		if partial {
			nat.CompletePartial(frame, 54, 2)
		}
		checkFull6(t, frame)
		if len(frame) != n || len(p.Frame) != n {
			t.Fatalf("frame length changed")
		}
	})
}

// ndAddrs are the addresses FuzzNDP picks sources and destinations from.
var ndAddrs = []nat.Addr16{{}, ip6LL, ip6V, ip6C, addr16("ff02::1"), addr16("ff02::1:ff00:1"), addr16("ff02::1:ff00:10"), addr16("ff05::2")}

// FuzzNDP has two halves. Parse: an arbitrary ICMPv6 message (its type
// mostly forced to NS or NA) with a valid or broken checksum, an arbitrary
// hop limit and chosen addresses goes through ParseNDP; nothing may panic,
// and what it accepts must satisfy RFC 4861 §7.1 and decode in gopacket
// as an NS or NA with the same target, flags and link-layer address; an
// accepted NS's reply (NDPReply, BuildNA) must parse too. Build: BuildNS
// and BuildNA with fuzzed addresses and flags either refuse or write a
// frame ParseNDP accepts with the same fields.
func FuzzNDP(f *testing.F) {
	f.Add(goldenNS[54:], uint8(255), uint8(1), uint8(5), false, uint8(0), []byte{}, []byte{}, uint8(0))
	f.Add(goldenNA[54:], uint8(255), uint8(2), uint8(1), false, uint8(1), ip6V[:], ip6C[:], uint8(0x60))
	f.Add(nsMsg(ip6V), uint8(255), uint8(0), uint8(5), false, uint8(0), []byte{}, ip6V[:], uint8(0x20))
	f.Add(naMsg(0x60, ip6V), uint8(255), uint8(2), uint8(4), false, uint8(2), ip6LL[:], []byte{0xff, 2}, uint8(0x40))
	f.Add(nsMsg(ip6V, 1, 0, 0, 0), uint8(64), uint8(1), uint8(5), true, uint8(3), []byte{}, []byte{}, uint8(0xff))
	f.Fuzz(func(t *testing.T, msg []byte, hl, srcSel, dstSel uint8, badCsum bool, typSel uint8, a, b []byte, flags uint8) {
		if len(msg) > 1400 {
			msg = msg[:1400]
		}
		msg = slices.Clone(msg)
		for len(msg) < 4 { // room for the checksum ndFrame fills in
			msg = append(msg, 0)
		}
		if typSel&0x80 == 0 {
			msg[0] = []uint8{135, 136}[typSel&1]
		}
		src, dst := ndAddrs[int(srcSel)%len(ndAddrs)], ndAddrs[int(dstSel)%len(ndAddrs)]
		var bad uint16
		if badCsum {
			bad = 1
		}
		frame := ndFrame(src, dst, hl, msg, bad)
		var p nat.Packet
		if err := p.Decode(frame); err != nil {
			if len(msg) >= 8 {
				t.Fatalf("Decode: %v", err)
			}
			return
		}
		var nd nat.NDP
		if err := p.ParseNDP(&nd); err != nil {
			if nd != (nat.NDP{}) || (err != nat.ErrBadNDP && err != nat.ErrNotNDP) {
				t.Fatalf("ParseNDP error %v left %+v", err, nd)
			}
		} else {
			if hl != 255 || badCsum || msg[1] != 0 || len(msg) < 24 || nd.Target.IsMulticast() || nd.Type != msg[0] {
				t.Fatalf("accepted an invalid message: hl %d bad %v % x", hl, badCsum, msg)
			}
			pkt := gopacket.NewPacket(frame, layers.LayerTypeEthernet, gopacket.Default)
			var target []byte
			var opts layers.ICMPv6Options
			var gflags uint8
			if ns, ok := pkt.Layer(layers.LayerTypeICMPv6NeighborSolicitation).(*layers.ICMPv6NeighborSolicitation); ok {
				target, opts = ns.TargetAddress, ns.Options
			} else if na, ok := pkt.Layer(layers.LayerTypeICMPv6NeighborAdvertisement).(*layers.ICMPv6NeighborAdvertisement); ok {
				target, opts, gflags = na.TargetAddress, na.Options, na.Flags&0xe0
			} else {
				t.Fatalf("gopacket sees no NS/NA: %v", pkt)
			}
			if nat.Addr16(target) != nd.Target || gflags != nd.Flags {
				t.Fatalf("gopacket: target %v flags %#x; ParseNDP %+v", target, gflags, nd)
			}
			want := layers.ICMPv6Opt(1 + msg[0] - 135)
			i := slices.IndexFunc(opts, func(o layers.ICMPv6Option) bool { return o.Type == want })
			if nd.HasLinkAddr != (i >= 0 && len(opts[i].Data) == 6) || nd.HasLinkAddr && nat.MAC(opts[i].Data) != nd.LinkAddr {
				t.Fatalf("link-layer address: ParseNDP %+v, gopacket %v", nd, opts)
			}
			if nd.Type == nat.ICMPv6TypeNeighborSolicitation && !nd.Target.IsUnspecified() {
				rdst, reth, rflags := p.NDPReply(&nd)
				buf := make([]byte, nat.NDPFrameLen)
				n := nat.BuildNA(buf, macB, reth, nd.Target, rdst, nd.Target, rflags)
				var q nat.Packet
				var na nat.NDP
				if n == 0 || q.Decode(buf[:n]) != nil || q.ParseNDP(&na) != nil || na.Target != nd.Target || na.Flags != rflags {
					t.Fatalf("reply to %+v (from %v) does not parse: %d", nd, src, n)
				}
			}
		}
		// Build half.
		var sa, da nat.Addr16
		copy(sa[:], a)
		copy(da[:], b)
		buf := make([]byte, nat.NDPFrameLen)
		want := nat.NDP{Target: da, Type: nat.ICMPv6TypeNeighborSolicitation}
		var n int
		if typSel&2 == 0 {
			n = nat.BuildNS(buf, macA, sa, da)
			if (n == 0) != (da.IsMulticast() || sa.IsMulticast()) {
				t.Fatalf("BuildNS(%v, %v) = %d", sa, da, n)
			}
			if !sa.IsUnspecified() {
				want.LinkAddr, want.HasLinkAddr = macA, true
			}
		} else {
			n = nat.BuildNA(buf, macA, macB, da, sa, da, flags)
			refuse := da.IsMulticast() || da.IsUnspecified() || (sa.IsMulticast() && flags&nat.NAFlagSolicited != 0)
			if (n == 0) != refuse {
				t.Fatalf("BuildNA(src %v, dst %v, flags %#x) = %d", da, sa, flags, n)
			}
			want = nat.NDP{Type: nat.ICMPv6TypeNeighborAdvertisement, Target: da, Flags: flags & 0xe0, LinkAddr: macA, HasLinkAddr: true}
		}
		if n == 0 {
			return
		}
		var q nat.Packet
		var got nat.NDP
		if err := q.Decode(buf[:n]); err != nil {
			t.Fatal(err)
		}
		if err := q.ParseNDP(&got); err != nil || got != want {
			t.Fatalf("built frame parses to %v %+v, want %+v\n% x", err, got, want, buf[:n])
		}
	})
}

// FuzzChecksumIncremental6 is FuzzChecksumIncremental for IPv6: random
// edits (addresses, SetTuple6, ports, seq, ack, TS, MSS, strip, hop limit)
// on a valid segment with or without extension headers, in full or
// partial mode, compared with the slow reference after every edit.
func FuzzChecksumIncremental6(f *testing.F) {
	f.Add([]byte("payload"), ip6LL[:], ip6Rtr[:], uint16(3), uint16(4), uint32(5), uint32(6), uint32(7), uint16(0xffff), false)
	f.Add([]byte{}, make([]byte, 16), slices.Repeat([]byte{0xff}, 16), uint16(0), uint16(0xffff), uint32(0), uint32(0xffffffff), uint32(0), uint16(0x1ff), true)
	f.Add([]byte("o"), ip6C[:], ip6V[:], uint16(1), uint16(2), uint32(3), uint32(4), uint32(0), uint16(0x8400), false)
	f.Fuzz(func(t *testing.T, payload []byte, src, dst []byte, sport, dport uint16, seq, ack, ts uint32, which uint16, partial bool) {
		if len(payload) > 9000 {
			payload = payload[:9000]
		}
		var ext []extHdr
		if which&0x8000 != 0 {
			ext = []extHdr{hbh(), destOpts(), routing(0)}
		}
		frame := buildTCP6(tcp6Spec{src: ip6C, dst: ip6V, sport: 1, dport: 2, seq: 3, ack: 4, ext: ext, partial: partial,
			opts: []byte{1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2, 1, 2, 4, 5, 0xa0}, payload: payload})
		p := nat.Packet{PartialCsum: partial}
		if err := p.Decode(frame); err != nil {
			t.Fatal(err)
		}
		var a, b nat.Addr16
		copy(a[:], src)
		copy(b[:], dst)
		edits := []func(){
			func() { p.SetSrc6(a) }, func() { p.SetDst6(b) }, func() { p.SetSrcPort(sport) },
			func() { p.SetDstPort(dport) }, func() { p.SetSeq(seq) }, func() { p.SetAck(ack) },
			func() { p.SetTimestamps(ts, ^ts) }, func() { p.SetMSS(uint16(ts)) },
			func() { p.SetTuple6(b, dport, a, sport) }, func() { p.DecTTL() },
			func() { p.StripTimestamps() },
		}
		for i, e := range edits {
			if which&(1<<i) != 0 {
				e()
				if partial {
					checkPartial6(t, frame)
				} else {
					checkFull6(t, frame)
				}
			}
		}
	})
}
