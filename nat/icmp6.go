package nat

import "encoding/binary"

// ICMPv6 types (RFC 4443 §2.1, RFC 4861 §4).
const (
	// ICMPv6TypeDestUnreachable is Destination Unreachable (RFC 4443 §3.1).
	ICMPv6TypeDestUnreachable = 1
	// ICMPv6TypePacketTooBig is Packet Too Big (RFC 4443 §3.2).
	ICMPv6TypePacketTooBig = 2
	// ICMPv6TypeTimeExceeded is Time Exceeded (RFC 4443 §3.3).
	ICMPv6TypeTimeExceeded = 3
	// ICMPv6TypeParamProblem is Parameter Problem (RFC 4443 §3.4).
	ICMPv6TypeParamProblem = 4
	// ICMPv6TypeEchoRequest is Echo Request (RFC 4443 §4.1).
	ICMPv6TypeEchoRequest = 128
	// ICMPv6TypeEchoReply is Echo Reply (RFC 4443 §4.2).
	ICMPv6TypeEchoReply = 129
	// ICMPv6TypeNeighborSolicitation is Neighbor Solicitation (RFC 4861 §4.3).
	ICMPv6TypeNeighborSolicitation = 135
	// ICMPv6TypeNeighborAdvertisement is Neighbor Advertisement (RFC 4861 §4.4).
	ICMPv6TypeNeighborAdvertisement = 136
)

// ICMPv6 is a view of an ICMPv6 message (RFC 4443 §2.1): type, code,
// checksum, then the message body. Decode checks that it has at least the
// 8 bytes of the fixed part every message tslb handles has.
type ICMPv6 []byte

// Type returns the "Type" field.
func (b ICMPv6) Type() uint8 { return b[0] }

// Code returns the "Code" field.
func (b ICMPv6) Code() uint8 { return b[1] }

// Checksum returns the "Checksum" field.
func (b ICMPv6) Checksum() uint16 { return binary.BigEndian.Uint16(b[2:]) }

// SetChecksum sets the "Checksum" field.
func (b ICMPv6) SetChecksum(v uint16) { binary.BigEndian.PutUint16(b[2:], v) }

// MTU returns the "MTU" field of a Packet Too Big (RFC 4443 §3.2). For
// Parameter Problem the same 32 bits are the "Pointer" (§3.4); for the
// other errors they are unused.
func (b ICMPv6) MTU() uint32 { return binary.BigEndian.Uint32(b[4:]) }
