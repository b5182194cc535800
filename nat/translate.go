package nat

import (
	"encoding/binary"
	"errors"
)

// Translation errors. Like the decode errors they are package-level
// values, so returning one never allocates.
var (
	// ErrNoRoom means a TCP option could not be inserted: the frame has no
	// capacity left for the larger header, or the IPv4 total length (IPv6
	// payload length) would pass 65535.
	ErrNoRoom = errors.New("nat: no room for TCP options")
	// ErrNotTCP means a translation was asked for a packet that did not
	// decode as a TCP segment, or a SYN was expected and p is not one.
	ErrNotTCP = errors.New("nat: not a decoded TCP segment")
)

// TSMode is what tslb does with the TCP timestamps of a service's flows
// (services[].timestamps). It is the one vocabulary of the idea: config
// parses it, the SNAT tuple choice (lb/snat) and SetupSYN act on it.
type TSMode string

// Timestamp modes.
const (
	// TSPassthrough leaves timestamp options untouched both ways.
	TSPassthrough TSMode = "passthrough"
	// TSStrip overwrites the timestamp option with NOPs both ways, so it
	// is never negotiated (what DPVS and `nft ... reset tcp option
	// timestamp` do).
	TSStrip TSMode = "strip"
	// TSRewrite makes tslb own the clock toward the backend: TSval is
	// shifted by a per-flow offset (TSActOffset), or synthesised for
	// clients without timestamps (TSActSynth); TSecr is shifted back
	// exactly.
	TSRewrite TSMode = "rewrite"
)

// Valid reports whether m is one of the three modes.
func (m TSMode) Valid() bool { return m == TSPassthrough || m == TSStrip || m == TSRewrite }

// TSAction is the state of one flow's timestamp translation, chosen by
// SetupSYN from the service's TSMode and the client's SYN: TSRewrite
// becomes TSActOffset, or TSActSynth for a client without timestamps.
type TSAction uint8

// Timestamp actions.
const (
	TSActPass   TSAction = iota // TSActPass leaves TS options as they are (timestamps: passthrough).
	TSActStrip                  // TSActStrip overwrites TS options with NOPs both ways (timestamps: strip).
	TSActOffset                 // TSActOffset: client->backend TSval += TSOff; backend->client TSecr -= TSOff (exact inverse).
	TSActSynth                  // TSActSynth: the client has no TS; tslb inserts its own toward the backend and NOPs out the backend's.
)

// String returns "pass", "strip", "offset", "synth" or "unknown".
func (a TSAction) String() string {
	switch a {
	case TSActPass:
		return "pass"
	case TSActStrip:
		return "strip"
	case TSActOffset:
		return "offset"
	case TSActSynth:
		return "synth"
	}
	return "unknown"
}

// MaxSeqAdvance bounds how far past the backend's latest ack (BackendAck)
// a client segment may end and still advance Translation.NextSeq. It is
// the largest receive window RFC 7323 §2.3 allows (2^30): a backend drops
// anything further, so such a segment cannot move its rcv_nxt, and a
// client must not be able to push the ledger's NextSeq so far that the
// next ISN chosen from it (NextSeq + 65537) would wrap behind the
// backend's real rcv_nxt.
const MaxSeqAdvance = 1 << 30

// MinMSS is the smallest MSS the SYN-ACK clamp of TSActSynth and the MTU
// clamp produce (RFC 9293 §3.7.1 default send MSS for IPv4); an advertised
// MSS at or below it is left alone. It is the floor for IPv6 too: IPv6's
// default of 1220 (1280 − 60) would stop the TSActSynth clamp from making
// room for its 12 bytes on a 1280-byte link, where 1208 is right.
const MinMSS = 536

// MaxMSS returns the largest MSS that fits a link MTU (RFC 6691 §2: the
// MSS counts neither IP nor TCP options): mtu − 40 for IPv4 (20-byte IPv4
// and TCP headers) and mtu − 60 for IPv6 (RFC 8200 §8.3: "the MSS must be
// computed as the maximum packet size minus 60 octets"). It returns 0 if
// mtu is not larger than that.
func MaxMSS(mtu int, ipv6 bool) int {
	h := IPv4MinimumSize + TCPMinimumSize
	if ipv6 {
		h = IPv6HeaderLen + TCPMinimumSize
	}
	return max(mtu-h, 0)
}

// tsOptLen is the aligned length of NOP NOP TS (TCPOLEN_TSTAMP_ALIGNED):
// what TSActSynth adds to every client->backend segment.
const tsOptLen = 12

// Translation is one flow's sequence and timestamp translation. The zero
// value translates nothing (TSActPass, delta 0). It is not safe for
// concurrent use; lb keeps it in the flow entry under the flow's lock.
//
// Sequence numbers: the backend sees the client's byte stream shifted by
// SeqDelta (Strategy B of the TIME_WAIT notes); the backend's own stream
// is not translated, so client acks and client SACK blocks pass as they
// are, while the backend's acks and SACK blocks are shifted back.
//
// Timestamps: see TSAction. In TSActSynth the TSval sent toward the backend
// is max(tsNow + TSBase, LastTS): tsNow is the caller's TSClock value at
// the time of the segment and TSBase lets a caller that chose a SYN TSval
// above its clock (to be newer than a TIME_WAIT record) continue from it;
// with TSBase 0 the value is held at LastTS until the clock catches up, so
// TSvals toward the backend never go backwards either way.
type Translation struct {
	// SeqDelta maps client sequence space to backend space: backend seq =
	// client seq + SeqDelta; backend->client ack and SACK blocks get
	// -SeqDelta.
	SeqDelta uint32
	// TS is the timestamp action.
	TS TSAction
	// TSOff is the TSActOffset shift: backend TSval = client TSval + TSOff.
	TSOff uint32
	// TSBase is added to the caller's clock value in TSActSynth (see the type
	// comment). SetupSYN leaves it as the caller set it.
	TSBase uint32
	// MTU, if not 0, is the smallest link MTU on the flow's path through
	// tslb. SetupSYN then clamps the SYN's MSS option and BackendToClient
	// the SYN-ACK's to MaxMSS(MTU) of the packet's family (MTU − 40 for
	// IPv4, MTU − 60 for IPv6), and in TSActSynth the SYN-ACK's to 12 less,
	// never below MinMSS and never raising an MSS. 0 (the zero value)
	// clamps nothing beyond TSActSynth's 12 bytes. SetupSYN leaves it as the
	// caller set it.
	MTU uint16

	// NextSeq is the highest seq+len(+SYN/FIN) sent toward the backend,
	// in backend space (wrap-aware maximum, RSTs excluded, bounded by
	// MaxSeqAdvance past BackendAck): the backend's rcv_nxt when the flow
	// ends. HaveSeq says whether it is set.
	NextSeq uint32
	HaveSeq bool
	// LastTS is the highest (wrap-aware) TSval sent toward the backend,
	// valid if SentTS.
	LastTS uint32
	SentTS bool
	// BackendTS is the latest (wrap-aware highest) TSval received from the
	// backend, echoed as TSecr in TSActSynth; valid if HaveBackendTS.
	BackendTS     uint32
	HaveBackendTS bool
	// BackendUsedTS is set from the backend's SYN-ACK: it carried a TS
	// option, so the connection uses timestamps and the backend's
	// TIME_WAIT will keep ts_recent (PAWS applies to the next SYN).
	BackendUsedTS bool
	// BackendAck is the highest ack number the backend sent (backend
	// space); SetupSYN starts it at the ISN. HaveBackendAck says whether it
	// is set.
	BackendAck     uint32
	HaveBackendAck bool
	// Fallback means TSActSynth was turned off because the backend's SYN-ACK
	// carried no TS (backend tcp_timestamps=0), or because a Packet Too
	// Big left no room for the option (PacketTooBigToClient): from then on
	// nothing is inserted toward the backend. A TS from the backend is
	// still NOPed out, so its clock never reaches the client.
	Fallback bool

	// Counters of bad or unusual input, exported by lb.

	// BadOptions counts segments refused with ErrBadOptions.
	BadOptions uint32
	// NoRoom counts segments refused with ErrNoRoom.
	NoRoom uint32
	// UnexpectedTS counts TS options that were not expected: from a
	// TSActSynth client (replaced by tslb's values) or from the backend after
	// Fallback (NOPed out).
	UnexpectedTS uint32
	// MissingTS counts TSActOffset client segments without a TS option
	// (passed on as they are).
	MissingTS uint32
	// SACKTrimmed counts SACK blocks dropped to make room for an inserted
	// TS option.
	SACKTrimmed uint32
	// DroppedOpts counts segments whose unknown options were dropped when
	// the option list had to be re-encoded to make room.
	DroppedOpts uint32
	// SeqJumps counts client segments ending more than MaxSeqAdvance past
	// BackendAck (not counted in NextSeq).
	SeqJumps uint32
	// Stripped counts TS options overwritten with NOPs (both directions).
	Stripped uint32
}

// isTCP reports whether p holds a decoded TCP segment the translation can
// work on.
func (p *Packet) isTCP() bool {
	return p.L4 != 0 && p.Proto == ProtoTCP && p.TCPHdrLen >= TCPMinimumSize &&
		p.L4+p.L4Len <= len(p.Frame) && p.TCPHdrLen <= p.L4Len
}

// linuxTSHead is NOP NOP kind=8 len=10 as a big-endian word.
const linuxTSHead = OptNOP<<24 | OptNOP<<16 | OptTimestamps<<8 | optLenTS

// linuxTSLayout reports whether the options are exactly NOP NOP TS, the
// layout Linux puts on every established segment (the fast path).
func (p *Packet) linuxTSLayout() bool {
	if p.TCPHdrLen != TCPMinimumSize+tsOptLen {
		return false
	}
	o := p.Frame[p.L4+TCPMinimumSize : p.L4+TCPMinimumSize+4]
	return o[0] == OptNOP && o[1] == OptNOP && o[2] == OptTimestamps && o[3] == optLenTS
}

// sum32 returns the one's-complement sum of the two 16-bit halves of v.
func sum32(v uint32) uint32 { return v>>16 + v&0xffff }

// nsum32 returns the sum of the complemented 16-bit halves of v.
func nsum32(v uint32) uint32 { return uint32(^uint16(v>>16)) + uint32(^uint16(v)) }

// setTwo32 writes two 32-bit TCP fields at segment offsets offA and offB
// (both even) and, in full mode, updates the checksum once for both.
func (p *Packet) setTwo32(offA int, a uint32, offB int, b uint32) {
	t := p.Frame[p.L4 : p.L4+p.TCPHdrLen]
	oldA := binary.BigEndian.Uint32(t[offA:])
	oldB := binary.BigEndian.Uint32(t[offB:])
	binary.BigEndian.PutUint32(t[offA:], a)
	binary.BigEndian.PutUint32(t[offB:], b)
	if p.PartialCsum {
		return
	}
	cs := TCP(t).Checksum()
	TCP(t).SetChecksum(^Fold(uint32(^cs) + nsum32(oldA) + sum32(a) + nsum32(oldB) + sum32(b)))
}

// set32 writes a 32-bit TCP field at segment offset off (even, within the
// header) and, in full mode, updates the checksum.
func (p *Packet) set32(off int, v uint32) {
	t := p.Frame[p.L4 : p.L4+p.TCPHdrLen]
	old := binary.BigEndian.Uint32(t[off:])
	binary.BigEndian.PutUint32(t[off:], v)
	if !p.PartialCsum {
		TCP(t).SetChecksum(update32(TCP(t).Checksum(), old, v))
	}
}

// setTSAt overwrites TSval and TSecr of the TS option whose kind byte is
// at options offset off.
func (p *Packet) setTSAt(off int, tsval, tsecr uint32) {
	var v [8]byte
	binary.BigEndian.PutUint32(v[0:], tsval)
	binary.BigEndian.PutUint32(v[4:], tsecr)
	p.rewriteOpt(off+2, v[:])
}

// nopTSAt overwrites the TS option at options offset off with NOPs.
func (p *Packet) nopTSAt(off int) {
	nops := [optLenTS]byte{1, 1, 1, 1, 1, 1, 1, 1, 1, 1}
	p.rewriteOpt(off, nops[:])
}

// shiftSACK subtracts delta from every SACK block edge of o (parsed from
// p) in the packet.
func (p *Packet) shiftSACK(o *TCPOptions, delta uint32) {
	var v [8]byte
	for i := 0; i < o.NumSACK; i++ {
		binary.BigEndian.PutUint32(v[0:], o.SACK[i].Start-delta)
		binary.BigEndian.PutUint32(v[4:], o.SACK[i].End-delta)
		p.rewriteOpt(o.SACKOff+2+8*i, v[:])
	}
}

// insertTS adds a TS option (tsval, tsecr) to the segment, whose options
// o was parsed from and carries none. If the options have room it puts
// NOP NOP TS in front of them (12 bytes, 4-byte alignment kept); if not it
// re-encodes the list with WriteTCPOptions, which keeps MSS, WScale and
// SACK-permitted and drops the last SACK blocks (and unknown options),
// padding with NOPs so the header never shrinks. It returns the growth
// (0..12) and the number of SACK blocks dropped; on error nothing changed.
func (p *Packet) insertTS(o *TCPOptions, tsval, tsecr uint32) (grow, trimmed int, dropped bool, err error) {
	old := p.tcpOptions()
	var buf [MaxOptionsLen]byte
	n := 0
	if len(old)+tsOptLen <= MaxOptionsLen {
		buf[0], buf[1], buf[2], buf[3] = OptNOP, OptNOP, OptTimestamps, optLenTS
		binary.BigEndian.PutUint32(buf[4:], tsval)
		binary.BigEndian.PutUint32(buf[8:], tsecr)
		n = tsOptLen + copy(buf[tsOptLen:], old)
	} else {
		w := *o
		w.HasTS, w.TSVal, w.TSEcr = true, tsval, tsecr
		n = WriteTCPOptions(buf[:], &w)
		if n < 0 { // cannot happen: MSS+SACKperm+TS+WS is 24 bytes
			return 0, 0, false, ErrNoRoom
		}
		if fl := fixedLen(&w); n > fl {
			trimmed = o.NumSACK - (n-fl-4)/8
		} else {
			trimmed = o.NumSACK
		}
		dropped = o.Unknown > 0
		for n < len(old) {
			buf[n] = OptNOP
			n++
		}
	}
	g, err := p.replaceOptions(buf[:n])
	if err != nil {
		return 0, 0, false, err
	}
	return g, trimmed, dropped, nil
}

// fixedLen is the length WriteTCPOptions gives o without SACK blocks
// (WriteTCPOptions uses it too).
func fixedLen(o *TCPOptions) int {
	n := 0
	if o.HasMSS {
		n += 4
	}
	if o.HasTS || o.SACKPermitted {
		n += 4
	}
	if o.HasTS {
		n += 8
	}
	if o.HasWScale {
		n += 4
	}
	return n
}

// replaceOptions replaces the TCP options with opts (a multiple of 4
// bytes, at least as long as the current options, at most 40), moving the
// payload, and updates the IP length field (setIPLen: IPv4 total length
// and header checksum, or IPv6 payload length), the TCP data offset and
// checksum (full mode: incrementally over the changed words and the
// pseudo-header length; partial mode: the pseudo-header length only) and
// p. The pseudo-header length is 16 bits in IPv4 and 32 in IPv6 (RFC 8200
// §8.1), but below 65536 its high half is 0, so one update serves both.
// The frame is resliced to the end of the datagram (Ethernet padding is
// dropped when it grows) within cap(p.Frame).
func (p *Packet) replaceOptions(opts []byte) (int, error) {
	oldHL := p.TCPHdrLen
	newHL := TCPMinimumSize + len(opts)
	g := newHL - oldHL
	end := p.L4 + p.L4Len
	newEnd := end + g
	tl := p.ipLen()
	if g < 0 || newHL > TCPMaximumSize || tl+g > 0xffff || newEnd > cap(p.Frame) {
		return 0, ErrNoRoom
	}
	f := p.Frame[:newEnd]
	t := f[p.L4:newEnd]
	var oldSum uint32
	if !p.PartialCsum {
		oldSum = Checksum(t[TCPMinimumSize:oldHL], uint32(binary.BigEndian.Uint16(t[tcpDataOffset:]))+uint32(p.L4Len))
	}
	copy(t[newHL:], f[p.L4+oldHL:end])
	copy(t[TCPMinimumSize:newHL], opts)
	t[tcpDataOffset] = byte(newHL/4)<<4 | t[tcpDataOffset]&0x0f
	newL4Len := p.L4Len + g
	cs := TCP(t).Checksum()
	if p.PartialCsum {
		cs = Fold(uint32(cs) + uint32(^uint16(p.L4Len)) + uint32(newL4Len))
	} else {
		newSum := Checksum(t[TCPMinimumSize:newHL], uint32(binary.BigEndian.Uint16(t[tcpDataOffset:]))+uint32(newL4Len))
		cs = updateRange(cs, oldSum, newSum)
	}
	TCP(t).SetChecksum(cs)
	p.setIPLen(tl, tl+g)
	p.Frame = f
	p.TCPHdrLen = newHL
	p.L4Len = newL4Len
	return g, nil
}

// ipLen returns the IP length field L4Len is counted in: the IPv4 total
// length, or the IPv6 payload length (RFC 8200 §3: extension headers
// included). Both are 16 bits. This and setIPLen are the only places the
// translation looks at the IP header.
func (p *Packet) ipLen() int {
	if p.EtherType == EtherTypeIPv6 {
		return int(binary.BigEndian.Uint16(p.Frame[p.L3+ipv6PayloadLenOffset:]))
	}
	return int(binary.BigEndian.Uint16(p.Frame[p.L3+ipv4TotalLenOffset:]))
}

// setIPLen changes the IP length field from old to n, updating the IPv4
// header checksum (RFC 1624 eqn. 3); IPv6 has no header checksum.
func (p *Packet) setIPLen(old, n int) {
	if p.EtherType == EtherTypeIPv6 {
		binary.BigEndian.PutUint16(p.Frame[p.L3+ipv6PayloadLenOffset:], uint16(n))
		return
	}
	ip := IPv4(p.Frame[p.L3 : p.L3+IPv4MinimumSize])
	binary.BigEndian.PutUint16(ip[ipv4TotalLenOffset:], uint16(n))
	ip.SetChecksum(update16(ip.Checksum(), uint16(old), uint16(n)))
}

// noteSeq records the end of a segment sent toward the backend with
// backend-space sequence number seq.
func (x *Translation) noteSeq(p *Packet, seq uint32) {
	if p.TCPFlags&TCPFlagRST != 0 {
		return
	}
	end := seq + uint32(p.Payload)
	if p.TCPFlags&TCPFlagSYN != 0 {
		end++
	}
	if p.TCPFlags&TCPFlagFIN != 0 {
		end++
	}
	if !x.HaveSeq {
		x.NextSeq, x.HaveSeq = end, true
		return
	}
	if !SeqAfter(end, x.NextSeq) {
		return
	}
	if x.HaveBackendAck && end-x.BackendAck > MaxSeqAdvance {
		x.SeqJumps++
		return
	}
	x.NextSeq = end
}

// noteTS records a TSval sent toward the backend.
func (x *Translation) noteTS(v uint32) {
	if !x.SentTS || SeqAfter(v, x.LastTS) {
		x.LastTS, x.SentTS = v, true
	}
}

// action returns the effective timestamp action for client->backend
// segments: unknown values act as TSActPass, and so does TSActSynth after
// Fallback.
func (x *Translation) action() TSAction {
	if x.TS > TSActSynth || (x.TS == TSActSynth && x.Fallback) {
		return TSActPass
	}
	return x.TS
}

// SetupSYN prepares the translation from the client's SYN (already decoded
// in p, not yet rewritten) and rewrites the SYN.
//
// mode is the service's TSMode; in TSRewrite SetupSYN chooses TSActOffset,
// or TSActSynth when the SYN carries no TS option. Other values act as
// TSPassthrough. isn is the seq the SYN must carry toward the backend (SeqDelta =
// isn - client ISN; pass p.Seq for no ISN translation). tsval is the TSval
// the SYN must carry toward the backend in rewrite mode (TSOff = tsval -
// client TSval; in TSActSynth the inserted option carries tsval and TSecr 0).
// The SYN's TSecr is sent as 0 in rewrite mode (RFC 7323 §3.2: it is only
// meaningful with ACK).
//
// With x.MTU set, the SYN's MSS option is clamped to MaxMSS(x.MTU).
//
// In TSActSynth the TCP header grows by 12 bytes (NOP NOP TS in front of the
// options) or, if that would pass 40 bytes of options, by less, the list
// being re-encoded with WriteTCPOptions (SACK blocks and unknown options
// dropped, never MSS, WScale or SACK-permitted). The frame is p.Frame and
// may grow up to cap(p.Frame); see replaceOptions for what is updated,
// and ClientToBackend for GSO. It returns the growth in bytes (0 or
// positive). SetupSYN resets every translation and state field except
// TSBase and the counters.
//
// Errors: ErrNotTCP (p is not a TCP segment with SYN and without ACK),
// ErrBadOptions (malformed options), ErrNoRoom; on error p is unchanged.
// Retransmitted SYNs go through ClientToBackend.
func (x *Translation) SetupSYN(p *Packet, mode TSMode, isn, tsval uint32) (grow int, err error) {
	if !p.isTCP() || p.TCPFlags&(TCPFlagSYN|TCPFlagACK) != TCPFlagSYN {
		return 0, ErrNotTCP
	}
	var o TCPOptions
	if p.TCPOptions(&o) != nil {
		x.BadOptions++
		return 0, ErrBadOptions
	}
	act := TSActPass
	switch mode {
	case TSStrip:
		act = TSActStrip
	case TSRewrite:
		act = TSActOffset
		if !o.HasTS {
			act = TSActSynth
			g, trimmed, dropped, err := p.insertTS(&o, tsval, 0)
			if err != nil {
				x.NoRoom++
				return 0, err
			}
			grow = g
			x.SACKTrimmed += uint32(trimmed)
			if dropped {
				x.DroppedOpts++
			}
		}
	}
	*x = Translation{
		SeqDelta: isn - p.Seq, TS: act, TSBase: x.TSBase, MTU: x.MTU,
		BackendAck: isn, HaveBackendAck: true,
		BadOptions: x.BadOptions, NoRoom: x.NoRoom, UnexpectedTS: x.UnexpectedTS,
		MissingTS: x.MissingTS, SACKTrimmed: x.SACKTrimmed, DroppedOpts: x.DroppedOpts,
		SeqJumps: x.SeqJumps, Stripped: x.Stripped,
	}
	switch act {
	case TSActPass:
		if o.HasTS {
			x.noteTS(o.TSVal)
		}
	case TSActStrip:
		if o.HasTS {
			p.nopTSAt(o.TSOff)
			x.Stripped++
		}
	case TSActOffset:
		x.TSOff = tsval - o.TSVal
		p.setTSAt(o.TSOff, tsval, 0)
		x.noteTS(tsval)
	case TSActSynth:
		x.noteTS(tsval)
	}
	x.clampMSSOption(p, &o, 0)
	if isn != p.Seq {
		p.SetSeq(isn)
	}
	x.noteSeq(p, isn)
	return grow, nil
}

// ClientToBackend translates a later client->backend segment in place
// (RSTs and retransmitted SYNs included): seq += SeqDelta, then by TS:
//   - TSActPass: nothing (LastTS still tracks the client's TSval);
//   - TSActOffset: TSval += TSOff; TSecr is untouched (it echoes the
//     backend's own clock); a segment without TS is passed on and counted
//     (MissingTS);
//   - TSActStrip: the TS option is NOPed out;
//   - TSActSynth: a TS option is inserted with TSval = max(tsNow+TSBase,
//     LastTS) and TSecr = BackendTS (0 if the segment has no ACK or no
//     backend TSval is known yet), growing the header by 12 bytes (the
//     payload is moved; cap(p.Frame) must allow it, else ErrNoRoom) and
//     dropping the last SACK blocks if the options would pass 40 bytes (a
//     4-block SACK keeps 3). A TS option from a client that had none at
//     the SYN is overwritten with tslb's values instead (UnexpectedTS).
//     After Fallback nothing is inserted.
//
// It updates NextSeq and LastTS and returns the growth (0..12).
//
// GSO: if p is a GSO superframe (virtio GSOType other than GSONone) the
// TCP header is replicated into every segment, so the caller must add the
// growth to VirtioNetHdr.HdrLen. CsumStart and CsumOffset do not change
// (the TCP header does not move) and GSOSize (payload per segment) stays;
// each segment then carries 12 more bytes, which the SYN-ACK MSS clamp
// leaves room for. In partial-checksum mode the field's pseudo-header sum
// is updated for the superframe's new length, which is what Linux's TSO
// expects. Malformed options give ErrBadOptions; on any error p is
// unchanged.
func (x *Translation) ClientToBackend(p *Packet, tsNow uint32) (grow int, err error) {
	if !p.isTCP() {
		return 0, ErrNotTCP
	}
	act := x.action()
	seq := p.Seq + x.SeqDelta
	if act == TSActOffset && p.TCPHdrLen == TCPMinimumSize+tsOptLen {
		// Fast path: NOP NOP TS, one checksum update for seq and TSval.
		t := p.Frame[p.L4 : p.L4+TCPMinimumSize+tsOptLen]
		if binary.BigEndian.Uint32(t[20:]) == linuxTSHead {
			old := binary.BigEndian.Uint32(t[24:])
			tsval := old + x.TSOff
			binary.BigEndian.PutUint32(t[tcpSeqOffset:], seq)
			binary.BigEndian.PutUint32(t[24:], tsval)
			if !p.PartialCsum {
				cs := binary.BigEndian.Uint16(t[tcpChecksumOffset:])
				binary.BigEndian.PutUint16(t[tcpChecksumOffset:], ^Fold(uint32(^cs)+nsum32(p.Seq)+sum32(seq)+nsum32(old)+sum32(tsval)))
			}
			p.Seq = seq
			x.noteSeq(p, seq)
			x.noteTS(tsval)
			return 0, nil
		}
	}
	if act == TSActPass {
		if x.SeqDelta != 0 {
			p.SetSeq(seq)
		}
		if p.linuxTSLayout() {
			x.noteTS(binary.BigEndian.Uint32(p.Frame[p.L4+24:]))
		} else if p.TCPHdrLen > TCPMinimumSize {
			opts := p.tcpOptions()
			if off, l := findOption(opts, OptTimestamps); off >= 0 && l == optLenTS {
				x.noteTS(binary.BigEndian.Uint32(opts[off+2:]))
			}
		}
		x.noteSeq(p, seq)
		return 0, nil
	}
	var o TCPOptions
	if p.TCPOptions(&o) != nil {
		x.BadOptions++
		return 0, ErrBadOptions
	}
	switch act {
	case TSActOffset:
		if o.HasTS {
			tsval := o.TSVal + x.TSOff
			p.setTSAt(o.TSOff, tsval, o.TSEcr)
			x.noteTS(tsval)
		} else {
			x.MissingTS++
		}
	case TSActStrip:
		if o.HasTS {
			p.nopTSAt(o.TSOff)
			x.Stripped++
		}
	case TSActSynth:
		tsval := tsNow + x.TSBase
		if x.SentTS && SeqBefore(tsval, x.LastTS) {
			tsval = x.LastTS
		}
		var tsecr uint32
		if x.HaveBackendTS && p.TCPFlags&TCPFlagACK != 0 {
			tsecr = x.BackendTS
		}
		if o.HasTS {
			x.UnexpectedTS++
			p.setTSAt(o.TSOff, tsval, tsecr)
		} else {
			g, trimmed, dropped, err := p.insertTS(&o, tsval, tsecr)
			if err != nil {
				x.NoRoom++
				return 0, err
			}
			grow = g
			x.SACKTrimmed += uint32(trimmed)
			if dropped {
				x.DroppedOpts++
			}
		}
		x.noteTS(tsval)
	}
	if x.SeqDelta != 0 {
		p.SetSeq(seq)
	}
	x.noteSeq(p, seq)
	return grow, nil
}

// BackendToClient translates a backend->client segment in place: ack -=
// SeqDelta (only if the ACK flag is set) and every SACK block -= SeqDelta;
// then by TS:
//   - TSActOffset: TSecr -= TSOff (the exact inverse, whatever the value);
//   - TSActStrip: the TS option is NOPed out;
//   - TSActSynth: BackendTS records the backend's TSval, then the option is
//     NOPed out. On the SYN-ACK, if it has no TS option Fallback is set
//     (nothing is inserted from then on); otherwise its MSS option is
//     clamped by 12 (to no less than MinMSS, and never raised) so that
//     full-size client segments still fit the path with the inserted TS.
//
// With x.MTU set, the SYN-ACK's MSS is also clamped to MaxMSS(x.MTU) of
// the family (less 12 where TSActSynth inserts). The 12-byte clamp itself is
// the same for IPv4 and IPv6: it makes room for a TCP option.
//
// It also records BackendAck. It never grows the frame. Malformed options
// in a segment that must be translated give ErrBadOptions with p
// unchanged; lb drops the segment.
func (x *Translation) BackendToClient(p *Packet) error {
	if !p.isTCP() {
		return ErrNotTCP
	}
	hasAck := p.TCPFlags&TCPFlagACK != 0
	if hasAck && (!x.HaveBackendAck || SeqAfter(p.Ack, x.BackendAck)) {
		x.BackendAck, x.HaveBackendAck = p.Ack, true
	}
	ack := p.Ack - x.SeqDelta
	fixAck := hasAck && x.SeqDelta != 0
	act := x.TS
	if act > TSActSynth {
		act = TSActPass
	}
	if act == TSActPass && x.SeqDelta == 0 && p.TCPFlags&TCPFlagSYN == 0 {
		return nil // nothing to translate, malformed options or not
	}
	if p.TCPFlags&TCPFlagSYN == 0 {
		if act == TSActOffset && p.linuxTSLayout() {
			tsecr := binary.BigEndian.Uint32(p.Frame[p.L4+28:]) - x.TSOff
			if fixAck {
				p.setTwo32(tcpAckOffset, ack, 28, tsecr)
				p.Ack = ack
			} else {
				p.set32(28, tsecr)
			}
			return nil
		}
		if p.TCPHdrLen == TCPMinimumSize {
			if fixAck {
				p.SetAck(ack)
			}
			return nil
		}
	}
	var o TCPOptions
	if p.TCPOptions(&o) != nil {
		x.BadOptions++
		return ErrBadOptions
	}
	if p.TCPFlags&(TCPFlagSYN|TCPFlagACK) == TCPFlagSYN|TCPFlagACK {
		// Timestamps are in use on the connection iff the SYN-ACK carries
		// them (RFC 7323 §3.2); the TIME_WAIT ledger needs to know.
		x.BackendUsedTS = o.HasTS
	}
	if fixAck {
		p.SetAck(ack)
	}
	if x.SeqDelta != 0 {
		p.shiftSACK(&o, x.SeqDelta)
	}
	switch act {
	case TSActOffset:
		if o.HasTS {
			p.setTSAt(o.TSOff, o.TSVal, o.TSEcr-x.TSOff)
		}
	case TSActStrip:
		if o.HasTS {
			p.nopTSAt(o.TSOff)
			x.Stripped++
		}
	case TSActSynth:
		synAck := p.TCPFlags&(TCPFlagSYN|TCPFlagACK) == TCPFlagSYN|TCPFlagACK
		if x.Fallback || (synAck && !o.HasTS) {
			if synAck && !o.HasTS {
				x.Fallback = true
			}
			if o.HasTS {
				if !x.BackendUsedTS {
					// A backend that fell back at the SYN-ACK sends
					// none; after a Packet Too Big fallback
					// (PacketTooBigToClient) they are expected.
					x.UnexpectedTS++
				}
				p.nopTSAt(o.TSOff)
				x.Stripped++
			}
			if synAck {
				x.clampMSSOption(p, &o, 0)
			}
			return nil
		}
		if o.HasTS {
			if !x.HaveBackendTS || !SeqBefore(o.TSVal, x.BackendTS) {
				x.BackendTS, x.HaveBackendTS = o.TSVal, true
			}
			p.nopTSAt(o.TSOff)
			x.Stripped++
		}
		if synAck {
			x.clampMSSOption(p, &o, tsOptLen)
		}
		return nil
	}
	if p.TCPFlags&(TCPFlagSYN|TCPFlagACK) == TCPFlagSYN|TCPFlagACK {
		x.clampMSSOption(p, &o, 0)
	}
	return nil
}

// clampMSSOption applies the MSS clamps to the SYN or SYN-ACK p, whose
// options o were parsed before any rewrite: by grow bytes (TSActSynth's 12,
// or 0) and, with x.MTU set, to MaxMSS(x.MTU) − grow of p's family; never
// below MinMSS, never raising the MSS.
func (x *Translation) clampMSSOption(p *Packet, o *TCPOptions, grow int) {
	if !o.HasMSS {
		return
	}
	m := o.MSS
	if grow > 0 {
		m = clampMSS(m)
	}
	if x.MTU != 0 {
		lim := max(MaxMSS(int(x.MTU), p.EtherType == EtherTypeIPv6)-grow, MinMSS)
		m = min(m, uint16(min(lim, 0xffff)))
	}
	if m != o.MSS {
		p.SetMSS(m)
	}
}

// ClampMSSForSynth is the MSS a client without timestamps may be told
// when tslb inserts them toward the backend (TSActSynth): 12 bytes less,
// no less than MinMSS, an MSS at or below MinMSS unchanged. The SYN-ACK
// clamp of BackendToClient applies it; lb's SYN proxy applies it to its
// cookie SYN-ACKs.
func ClampMSSForSynth(m uint16) uint16 { return clampMSS(m) }

// clampMSS lowers an MSS by the 12 bytes TSActSynth adds, to no less than
// MinMSS; an MSS at or below MinMSS is returned as it is.
func clampMSS(m uint16) uint16 {
	switch {
	case m >= MinMSS+tsOptLen:
		return m - tsOptLen
	case m > MinMSS:
		return MinMSS
	}
	return m
}

// QuotedSeqToClient translates the seq quoted in an ICMP error about a
// client->backend segment (backend space, as the backend or a router saw
// it) back to client space.
func (x *Translation) QuotedSeqToClient(seqBackendSpace uint32) uint32 {
	return seqBackendSpace - x.SeqDelta
}

// QuotedSeqToBackend translates a client-space sequence number quoted in
// an ICMP error (e.g. the ack of a backend->client segment as the client's
// side saw it) into backend space. It is the inverse of QuotedSeqToClient.
func (x *Translation) QuotedSeqToBackend(seqClientSpace uint32) uint32 {
	return seqClientSpace + x.SeqDelta
}
