package nat

import "encoding/binary"

// TCP option kinds (RFC 9293, RFC 7323, RFC 2018).
const (
	OptEOL           = 0 // OptEOL is the end-of-option-list kind.
	OptNOP           = 1 // OptNOP is the no-operation kind.
	OptMSS           = 2 // OptMSS is the maximum segment size kind.
	OptWScale        = 3 // OptWScale is the window scale kind (RFC 7323).
	OptSACKPermitted = 4 // OptSACKPermitted is the SACK-permitted kind (RFC 2018).
	OptSACK          = 5 // OptSACK is the SACK kind (RFC 2018).
	OptTimestamps    = 8 // OptTimestamps is the timestamps kind (RFC 7323).
)

// Option lengths.
const (
	optLenMSS      = 4
	optLenWScale   = 3
	optLenSACKPerm = 2
	optLenTS       = 10
	// MaxOptionsLen is the most option bytes a TCP header can carry.
	MaxOptionsLen = 40
	// MaxSACKBlocks is the most SACK blocks an option list can carry.
	MaxSACKBlocks = 4
)

// SACKBlock is one SACK block: the left edge Start and the right edge End
// (the sequence number just past the block).
type SACKBlock struct {
	// Start is the left edge: the first sequence number of the block.
	Start uint32
	// End is the right edge: the sequence number just past the block.
	End uint32
}

// TCPOptions is the parsed form of a TCP option list. It has no pointers
// and fixed-size arrays only, so parsing into it never allocates.
type TCPOptions struct {
	// MSS is the maximum segment size.
	MSS uint16
	// HasMSS says whether the MSS option was present.
	HasMSS bool
	// WScale is the window scale shift count.
	WScale uint8
	// HasWScale says whether the window scale option was present.
	HasWScale bool
	// SACKPermitted says whether the SACK-permitted option was present.
	SACKPermitted bool
	// HasTS says whether the timestamps option was present.
	HasTS bool
	// TSVal is the timestamp value of the TS option.
	TSVal uint32
	// TSEcr is the timestamp echo reply of the TS option.
	TSEcr uint32
	// TSOff is the offset of the TS option's kind byte within the options
	// slice, -1 if none.
	TSOff int
	// SACK holds the first NumSACK SACK blocks.
	SACK [MaxSACKBlocks]SACKBlock
	// NumSACK is the number of valid blocks in SACK.
	NumSACK int
	// SACKOff is the offset of the SACK option's kind byte within the
	// options slice, -1 if none.
	SACKOff int
	// Unknown counts options of unknown kinds (they are kept as they are).
	Unknown int
}

// ParseTCPOptions walks opts (one gVisor-style switch loop) and fills o,
// which it resets first. It stops at EOL. Malformed lists return
// ErrBadOptions (o then holds what was parsed before the fault): a length
// byte < 2 or missing, an option running past the end, a wrong fixed length
// for MSS, WScale, TS or SACK-permitted, a SACK length that is not 2+8n,
// and, as a stricter rule for a rewriting middlebox, a repeated TS or SACK
// option (a second copy would escape SetTimestamps/SetSACKBlock). It never
// allocates.
func ParseTCPOptions(opts []byte, o *TCPOptions) error {
	*o = TCPOptions{TSOff: -1, SACKOff: -1}
	for i := 0; i < len(opts); {
		kind := opts[i]
		switch kind {
		case OptEOL:
			return nil
		case OptNOP:
			i++
			continue
		}
		if len(opts)-i < 2 {
			return ErrBadOptions
		}
		l := int(opts[i+1])
		if l < 2 || l > len(opts)-i {
			return ErrBadOptions
		}
		b := opts[i : i+l]
		switch kind {
		case OptMSS:
			if l != optLenMSS {
				return ErrBadOptions
			}
			o.MSS = binary.BigEndian.Uint16(b[2:])
			o.HasMSS = true
		case OptWScale:
			if l != optLenWScale {
				return ErrBadOptions
			}
			o.WScale = b[2]
			o.HasWScale = true
		case OptSACKPermitted:
			if l != optLenSACKPerm {
				return ErrBadOptions
			}
			o.SACKPermitted = true
		case OptTimestamps:
			if l != optLenTS || o.HasTS {
				return ErrBadOptions
			}
			o.HasTS = true
			o.TSVal = binary.BigEndian.Uint32(b[2:])
			o.TSEcr = binary.BigEndian.Uint32(b[6:])
			o.TSOff = i
		case OptSACK:
			if (l-2)%8 != 0 || o.SACKOff >= 0 {
				return ErrBadOptions
			}
			o.SACKOff = i
			n := (l - 2) / 8 // at most 4: l <= 40 in a real header
			for j := 0; j < n && j < MaxSACKBlocks; j++ {
				o.SACK[j] = SACKBlock{
					Start: binary.BigEndian.Uint32(b[2+8*j:]),
					End:   binary.BigEndian.Uint32(b[6+8*j:]),
				}
			}
			o.NumSACK = min(n, MaxSACKBlocks)
		default:
			o.Unknown++
		}
		i += l
	}
	return nil
}

// tcpOptions returns the options bytes of the decoded TCP segment, or nil.
func (p *Packet) tcpOptions() []byte {
	if p.L4 == 0 || p.Proto != ProtoTCP {
		return nil
	}
	return p.Frame[p.L4+TCPMinimumSize : p.L4+p.TCPHdrLen]
}

// TCPOptions parses the options of the decoded TCP segment into o. A
// packet that is not TCP has no options (o is reset, nil is returned).
func (p *Packet) TCPOptions(o *TCPOptions) error {
	return ParseTCPOptions(p.tcpOptions(), o)
}

// rewriteOpt overwrites len(v) bytes at options offset off with v and, in
// full checksum mode, updates the TCP checksum over the changed range.
// Option bytes are not in the pseudo header, so a partial checksum is not
// touched (the NIC or kernel sums them later).
func (p *Packet) rewriteOpt(off int, v []byte) {
	seg := p.Frame[p.L4 : p.L4+p.TCPHdrLen]
	start := TCPMinimumSize + off
	end := start + len(v)
	if p.PartialCsum {
		copy(seg[start:end], v)
		return
	}
	old := sumAligned(seg, start, end)
	copy(seg[start:end], v)
	TCP(seg).SetChecksum(updateRange(TCP(seg).Checksum(), old, sumAligned(seg, start, end)))
}

// findOption returns the options offset of the first option of kind in a
// well-formed prefix of opts and its length, or -1. It is the cheap scan
// used by the in-place setters.
func findOption(opts []byte, kind uint8) (int, int) {
	for i := 0; i < len(opts); {
		switch opts[i] {
		case OptEOL:
			return -1, 0
		case OptNOP:
			i++
			continue
		}
		if len(opts)-i < 2 {
			return -1, 0
		}
		l := int(opts[i+1])
		if l < 2 || l > len(opts)-i {
			return -1, 0
		}
		if opts[i] == kind {
			return i, l
		}
		i += l
	}
	return -1, 0
}

// StripTimestamps replaces the TS option in the segment with NOPs (10 bytes
// of kind 1), keeping the header length, and updates the checksum (full
// mode only; in partial mode the option bytes are summed by the NIC or
// kernel). It returns whether one was removed. Only the first TS option is
// considered; a list that ParseTCPOptions rejects is left alone.
func (p *Packet) StripTimestamps() bool {
	opts := p.tcpOptions()
	off, l := findOption(opts, OptTimestamps)
	if off < 0 || l != optLenTS {
		return false
	}
	nops := [optLenTS]byte{1, 1, 1, 1, 1, 1, 1, 1, 1, 1}
	p.rewriteOpt(off, nops[:])
	return true
}

// SetTimestamps overwrites TSval and TSecr of an existing TS option in
// place, with a checksum update in full mode. It returns false if the
// segment has no well-formed TS option.
func (p *Packet) SetTimestamps(tsval, tsecr uint32) bool {
	opts := p.tcpOptions()
	var off, l int
	// Fast path: the NOP NOP TS layout Linux uses on every segment.
	if len(opts) >= 12 && opts[0] == OptNOP && opts[1] == OptNOP && opts[2] == OptTimestamps && opts[3] == optLenTS {
		off, l = 2, optLenTS
	} else {
		off, l = findOption(opts, OptTimestamps)
	}
	if off < 0 || l != optLenTS {
		return false
	}
	if off&1 == 0 {
		// TSval and TSecr are 16-bit aligned in the segment (the options
		// start at offset 20): patch the checksum word by word.
		f := p.Frame[p.L4+TCPMinimumSize+off+2 : p.L4+TCPMinimumSize+off+10]
		oldVal, oldEcr := binary.BigEndian.Uint32(f[0:4]), binary.BigEndian.Uint32(f[4:8])
		binary.BigEndian.PutUint32(f[0:4], tsval)
		binary.BigEndian.PutUint32(f[4:8], tsecr)
		if !p.PartialCsum {
			c := p.Frame[p.L4+tcpChecksumOffset : p.L4+tcpChecksumOffset+2]
			binary.BigEndian.PutUint16(c, update64(binary.BigEndian.Uint16(c), oldVal, oldEcr, tsval, tsecr))
		}
		return true
	}
	var v [8]byte
	binary.BigEndian.PutUint32(v[0:], tsval)
	binary.BigEndian.PutUint32(v[4:], tsecr)
	p.rewriteOpt(off+2, v[:])
	return true
}

// SetSACKBlock overwrites block i of an existing SACK option, with a
// checksum update in full mode (used by sequence translation). It returns
// false if there is no SACK option or it has no block i.
func (p *Packet) SetSACKBlock(i int, b SACKBlock) bool {
	opts := p.tcpOptions()
	off, l := findOption(opts, OptSACK)
	if off < 0 || i < 0 || (l-2)%8 != 0 || i >= (l-2)/8 {
		return false
	}
	var v [8]byte
	binary.BigEndian.PutUint32(v[0:], b.Start)
	binary.BigEndian.PutUint32(v[4:], b.End)
	p.rewriteOpt(off+2+8*i, v[:])
	return true
}

// SetMSS overwrites the MSS option value in place (for clamping), with a
// checksum update in full mode. It returns false if there is no MSS option.
func (p *Packet) SetMSS(v uint16) bool {
	opts := p.tcpOptions()
	off, l := findOption(opts, OptMSS)
	if off < 0 || l != optLenMSS {
		return false
	}
	var b [2]byte
	binary.BigEndian.PutUint16(b[:], v)
	p.rewriteOpt(off+2, b[:])
	return true
}

// WriteTCPOptions encodes o into dst in the order Linux's tcp_options_write
// uses: MSS; SACK-permitted+TS (or NOP NOP TS, or NOP NOP SACK-permitted);
// NOP WScale; NOP NOP SACK blocks. Every piece is a multiple of 4 bytes, so
// the result needs no further padding. It returns the bytes written, or -1
// if MSS, SACK-permitted, TS and WScale alone would exceed 40 bytes or
// len(dst). SACK blocks that do not fit in what is left (of 40 bytes and of
// dst) are dropped, the later ones first, and a SACK option with no block
// is not written. TSOff, SACKOff and Unknown are ignored.
func WriteTCPOptions(dst []byte, o *TCPOptions) int {
	limit := min(len(dst), MaxOptionsLen)
	n := fixedLen(o)
	if n > limit {
		return -1
	}
	i := 0
	if o.HasMSS {
		dst[0], dst[1] = OptMSS, optLenMSS
		binary.BigEndian.PutUint16(dst[2:], o.MSS)
		i = 4
	}
	if o.HasTS {
		if o.SACKPermitted {
			dst[i], dst[i+1] = OptSACKPermitted, optLenSACKPerm
		} else {
			dst[i], dst[i+1] = OptNOP, OptNOP
		}
		dst[i+2], dst[i+3] = OptTimestamps, optLenTS
		binary.BigEndian.PutUint32(dst[i+4:], o.TSVal)
		binary.BigEndian.PutUint32(dst[i+8:], o.TSEcr)
		i += 12
	} else if o.SACKPermitted {
		dst[i], dst[i+1], dst[i+2], dst[i+3] = OptNOP, OptNOP, OptSACKPermitted, optLenSACKPerm
		i += 4
	}
	if o.HasWScale {
		dst[i], dst[i+1], dst[i+2], dst[i+3] = OptNOP, OptWScale, optLenWScale, o.WScale
		i += 4
	}
	blocks := min(max(o.NumSACK, 0), MaxSACKBlocks, (limit-i-4)/8)
	if blocks > 0 {
		dst[i], dst[i+1], dst[i+2], dst[i+3] = OptNOP, OptNOP, OptSACK, byte(2+8*blocks)
		i += 4
		for j := 0; j < blocks; j++ {
			binary.BigEndian.PutUint32(dst[i:], o.SACK[j].Start)
			binary.BigEndian.PutUint32(dst[i+4:], o.SACK[j].End)
			i += 8
		}
	}
	return i
}
