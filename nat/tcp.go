package nat

import "encoding/binary"

// TCP flags.
const (
	TCPFlagFIN = 0x01 // TCPFlagFIN is the FIN flag.
	TCPFlagSYN = 0x02 // TCPFlagSYN is the SYN flag.
	TCPFlagRST = 0x04 // TCPFlagRST is the RST flag.
	TCPFlagPSH = 0x08 // TCPFlagPSH is the PSH flag.
	TCPFlagACK = 0x10 // TCPFlagACK is the ACK flag.
	TCPFlagURG = 0x20 // TCPFlagURG is the URG flag.
	TCPFlagECE = 0x40 // TCPFlagECE is the ECE flag (RFC 3168).
	TCPFlagCWR = 0x80 // TCPFlagCWR is the CWR flag (RFC 3168).
)

// TCP header sizes and offsets.
const (
	// TCPMinimumSize is the length of a TCP header without options.
	TCPMinimumSize = 20
	// TCPMaximumSize is the length of a TCP header with 40 bytes of options.
	TCPMaximumSize = 60

	tcpSrcPortOffset  = 0
	tcpDstPortOffset  = 2
	tcpSeqOffset      = 4
	tcpAckOffset      = 8
	tcpDataOffset     = 12
	tcpFlagsOffset    = 13
	tcpWindowOffset   = 14
	tcpChecksumOffset = 16
)

// TCP is a view of a TCP header (and payload). Decode checks its length
// before the view is used; the getters do not.
type TCP []byte

// SrcPort returns the "source port" field.
func (b TCP) SrcPort() uint16 { return binary.BigEndian.Uint16(b[tcpSrcPortOffset:]) }

// DstPort returns the "destination port" field.
func (b TCP) DstPort() uint16 { return binary.BigEndian.Uint16(b[tcpDstPortOffset:]) }

// Seq returns the "sequence number" field.
func (b TCP) Seq() uint32 { return binary.BigEndian.Uint32(b[tcpSeqOffset:]) }

// Ack returns the "acknowledgement number" field.
func (b TCP) Ack() uint32 { return binary.BigEndian.Uint32(b[tcpAckOffset:]) }

// DataOffset returns the header length in bytes ("data offset" * 4).
func (b TCP) DataOffset() int { return int(b[tcpDataOffset]>>4) * 4 }

// Flags returns the flags byte (CWR..FIN).
func (b TCP) Flags() uint8 { return b[tcpFlagsOffset] }

// Window returns the "window" field (unscaled).
func (b TCP) Window() uint16 { return binary.BigEndian.Uint16(b[tcpWindowOffset:]) }

// Checksum returns the "checksum" field.
func (b TCP) Checksum() uint16 { return binary.BigEndian.Uint16(b[tcpChecksumOffset:]) }

// SetChecksum sets the "checksum" field.
func (b TCP) SetChecksum(v uint16) { binary.BigEndian.PutUint16(b[tcpChecksumOffset:], v) }

// Options returns the options part of the header, b[20:DataOffset()].
func (b TCP) Options() []byte { return b[TCPMinimumSize:b.DataOffset()] }

// ICMP sizes and types.
const (
	// ICMPMinimumSize is the length of the fixed ICMP header.
	ICMPMinimumSize = 8
	// ICMPTypeEchoReply is the ICMP echo reply type.
	ICMPTypeEchoReply = 0
	// ICMPTypeDestUnreachable is the ICMP destination unreachable type.
	ICMPTypeDestUnreachable = 3
	// ICMPTypeEcho is the ICMP echo request type.
	ICMPTypeEcho = 8
	// ICMPTypeTimeExceeded is the ICMP time exceeded type.
	ICMPTypeTimeExceeded = 11
	// ICMPTypeParamProblem is the ICMP parameter problem type.
	ICMPTypeParamProblem = 12
)

// ICMP is a view of an ICMPv4 message.
type ICMP []byte

// Type returns the "type" field.
func (b ICMP) Type() uint8 { return b[0] }

// Code returns the "code" field.
func (b ICMP) Code() uint8 { return b[1] }

// Checksum returns the "checksum" field.
func (b ICMP) Checksum() uint16 { return binary.BigEndian.Uint16(b[2:]) }

// SetChecksum sets the "checksum" field.
func (b ICMP) SetChecksum(v uint16) { binary.BigEndian.PutUint16(b[2:], v) }
