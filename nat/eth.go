package nat

import (
	"encoding/binary"
	"fmt"
)

// MAC is an Ethernet hardware address.
type MAC [6]byte

// String returns m in the usual colon-separated lower-case hex form.
func (m MAC) String() string {
	return fmt.Sprintf("%02x:%02x:%02x:%02x:%02x:%02x", m[0], m[1], m[2], m[3], m[4], m[5])
}

// Ethernet sizes and EtherTypes.
const (
	// EthernetHeaderLen is the length of an untagged Ethernet II header.
	EthernetHeaderLen = 14
	// EtherTypeIPv4 is the EtherType of IPv4.
	EtherTypeIPv4 = 0x0800
	// EtherTypeARP is the EtherType of ARP.
	EtherTypeARP = 0x0806
	// MinFrameLen is the minimum Ethernet frame length without the FCS.
	MinFrameLen = 60
)

// Ethernet is a view of an Ethernet II header. It must be at least
// EthernetHeaderLen bytes long.
type Ethernet []byte

// Dst returns the "destination address" field of the Ethernet header.
func (e Ethernet) Dst() MAC { return MAC(e[0:6]) }

// Src returns the "source address" field of the Ethernet header.
func (e Ethernet) Src() MAC { return MAC(e[6:12]) }

// SetDst sets the "destination address" field of the Ethernet header.
func (e Ethernet) SetDst(m MAC) { copy(e[0:6], m[:]) }

// SetSrc sets the "source address" field of the Ethernet header.
func (e Ethernet) SetSrc(m MAC) { copy(e[6:12], m[:]) }

// Type returns the "EtherType" field of the Ethernet header.
func (e Ethernet) Type() uint16 { return binary.BigEndian.Uint16(e[12:14]) }

// ARP operation codes (RFC 826).
const (
	// ARPRequest is the ARP "request" operation.
	ARPRequest = 1
	// ARPReply is the ARP "reply" operation.
	ARPReply = 2
	// ARPLen is the length of an Ethernet/IPv4 ARP payload.
	ARPLen = 28
)

// ARP is a view of an ARP payload (after the Ethernet header). The getters
// assume the Ethernet/IPv4 layout; check IsEthernetIPv4 first.
type ARP []byte

// IsEthernetIPv4 reports whether a is at least ARPLen bytes and describes
// Ethernet hardware addresses (htype 1, hlen 6) and IPv4 protocol addresses
// (ptype 0x0800, plen 4).
func (a ARP) IsEthernetIPv4() bool {
	return len(a) >= ARPLen &&
		binary.BigEndian.Uint16(a[0:2]) == 1 &&
		binary.BigEndian.Uint16(a[2:4]) == EtherTypeIPv4 &&
		a[4] == 6 && a[5] == 4
}

// Op returns the "operation" field of the ARP packet.
func (a ARP) Op() uint16 { return binary.BigEndian.Uint16(a[6:8]) }

// SenderMAC returns the "sender hardware address" field.
func (a ARP) SenderMAC() MAC { return MAC(a[8:14]) }

// SenderIP returns the "sender protocol address" field.
func (a ARP) SenderIP() Addr4 { return Addr4(a[14:18]) }

// TargetMAC returns the "target hardware address" field.
func (a ARP) TargetMAC() MAC { return MAC(a[18:24]) }

// TargetIP returns the "target protocol address" field.
func (a ARP) TargetIP() Addr4 { return Addr4(a[24:28]) }

// BuildARP writes a full Ethernet+ARP frame (padded with zeros to
// MinFrameLen = 60 bytes) into buf and returns its length. buf must be at
// least 60 bytes long; if it is shorter BuildARP writes nothing and
// returns 0.
func BuildARP(buf []byte, op uint16, ethSrc, ethDst MAC, senderMAC MAC, senderIP Addr4, targetMAC MAC, targetIP Addr4) int {
	if len(buf) < MinFrameLen {
		return 0
	}
	b := buf[:MinFrameLen]
	e := Ethernet(b)
	e.SetDst(ethDst)
	e.SetSrc(ethSrc)
	binary.BigEndian.PutUint16(b[12:14], EtherTypeARP)
	a := b[EthernetHeaderLen:]
	binary.BigEndian.PutUint16(a[0:2], 1)
	binary.BigEndian.PutUint16(a[2:4], EtherTypeIPv4)
	a[4], a[5] = 6, 4
	binary.BigEndian.PutUint16(a[6:8], op)
	copy(a[8:14], senderMAC[:])
	copy(a[14:18], senderIP[:])
	copy(a[18:24], targetMAC[:])
	copy(a[24:28], targetIP[:])
	clear(a[ARPLen:])
	return MinFrameLen
}
