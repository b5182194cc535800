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
