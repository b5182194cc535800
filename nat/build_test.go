package nat

import (
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
)

func TestBuildTCP(t *testing.T) {
	buf := make([]byte, 64)
	if BuildTCP(buf[:53], MAC{}, MAC{}, Addr4{}, Addr4{}, 0, 0, 0, 0, 0, 0) != 0 {
		t.Fatal("BuildTCP wrote into a buffer that is too short")
	}
	src, dst := Addr4{198, 18, 1, 100}, Addr4{198, 18, 1, 11}
	n := BuildTCP(buf, MAC{2, 0, 0, 0, 0, 1}, MAC{2, 0, 0, 0, 0, 2}, src, dst, 20001, 8080, 0xfffffff0, 7, TCPFlagRST|TCPFlagACK, 0)
	pkt := gopacket.NewPacket(buf[:n], layers.LayerTypeEthernet, gopacket.Default)
	ip, _ := pkt.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
	tcp, _ := pkt.Layer(layers.LayerTypeTCP).(*layers.TCP)
	if ip == nil || tcp == nil {
		t.Fatalf("gopacket cannot decode: %v", pkt)
	}
	if ip.SrcIP.String() != "198.18.1.100" || ip.DstIP.String() != "198.18.1.11" || ip.TTL != 64 {
		t.Errorf("IP header: %+v", ip)
	}
	if tcp.SrcPort != 20001 || tcp.DstPort != 8080 || tcp.Seq != 0xfffffff0 || tcp.Ack != 7 || !tcp.RST || !tcp.ACK || tcp.SYN {
		t.Errorf("TCP header: %+v", tcp)
	}
	if Fold(Checksum(buf[EthernetHeaderLen:EthernetHeaderLen+20], 0)) != 0xffff {
		t.Error("IP checksum does not verify")
	}
	if TCPChecksum(src, dst, buf[34:n]) != uint16(buf[34+16])<<8|uint16(buf[34+17]) {
		t.Error("TCP checksum does not verify")
	}
}

func TestBuildTCP6(t *testing.T) {
	buf := make([]byte, 80)
	if BuildTCP6(buf[:73], MAC{}, MAC{}, Addr16{}, Addr16{}, 0, 0, 0, 0, 0, 0) != 0 {
		t.Fatal("BuildTCP6 wrote into a buffer that is too short")
	}
	src := Addr16{0x20, 0x01, 0x0d, 0xb8, 0, 2, 15: 1}
	dst := Addr16{0x20, 0x01, 0x0d, 0xb8, 0, 3, 15: 0x0b}
	n := BuildTCP6(buf, MAC{2, 0, 0, 0, 0, 1}, MAC{2, 0, 0, 0, 0, 2}, src, dst, 20001, 8080, 0xfffffff0, 7, TCPFlagRST|TCPFlagACK, 0)
	if n != 74 {
		t.Fatalf("length %d", n)
	}
	pkt := gopacket.NewPacket(buf[:n], layers.LayerTypeEthernet, gopacket.Default)
	ip, _ := pkt.Layer(layers.LayerTypeIPv6).(*layers.IPv6)
	tcp, _ := pkt.Layer(layers.LayerTypeTCP).(*layers.TCP)
	if ip == nil || tcp == nil {
		t.Fatalf("gopacket cannot decode: %v", pkt)
	}
	if ip.SrcIP.String() != "2001:db8:2::1" || ip.DstIP.String() != "2001:db8:3::b" || ip.HopLimit != 64 || ip.Length != 20 ||
		ip.TrafficClass != 0 || ip.FlowLabel != 0 {
		t.Errorf("IPv6 header: %+v", ip)
	}
	if tcp.SrcPort != 20001 || tcp.DstPort != 8080 || tcp.Seq != 0xfffffff0 || tcp.Ack != 7 || !tcp.RST || !tcp.ACK || tcp.SYN || tcp.DataOffset != 5 {
		t.Errorf("TCP header: %+v", tcp)
	}
	// The checksum verifies over the IPv6 pseudo header, summed by hand.
	ph := append(append(append([]byte(nil), src[:]...), dst[:]...), 0, 0, 0, 20, 0, 0, 0, ProtoTCP)
	if Fold(Checksum(buf[54:n], Checksum(ph, 0))) != 0xffff {
		t.Error("TCP checksum does not verify")
	}
	var p Packet
	if err := p.Decode(buf[:n]); err != nil || p.Src6 != src || p.Dst6 != dst || p.TCPFlags != TCPFlagRST|TCPFlagACK {
		t.Errorf("Decode: %v %+v", err, p)
	}
	if a := testing.AllocsPerRun(100, func() {
		BuildTCP6(buf, MAC{}, MAC{}, src, dst, 1, 2, 3, 4, TCPFlagACK, 5)
	}); a != 0 {
		t.Errorf("allocs %v", a)
	}
}
