package nat

import "encoding/binary"

// Proxy is the second half of the translation of a flow whose handshake
// tslb answered itself (a SYN proxy with cookies): the client already has
// tslb's SYN-ACK — its ISN (the cookie), its TSval and its window scale —
// when the backend sends its own. The backend's sequence space and TS
// clock are shifted into the ones the client knows, and its windows
// rescaled to the scale the client was told, exactly and both ways (DPVS
// synproxy's "seq adjust"). Translation still does the client's side
// (ISN translation, TS modes); Proxy is applied on top: ToBackend after
// nothing else touched ack, SACK and TSecr of a client segment, ToClient
// on a backend segment before the tracker sees it.
//
// The zero value translates nothing. Not safe for concurrent use.
type Proxy struct {
	// SeqDelta: client-space seq = backend seq + SeqDelta (the cookie
	// minus the backend's ISN). Client acks and SACK blocks get -SeqDelta.
	SeqDelta uint32
	// TSOff: client-space TSval = backend TSval + TSOff; client TSecr gets
	// -TSOff. Only when TS is true.
	TSOff uint32
	TS    bool
	// WShift rescales the backend's windows to the client's view: the
	// window field × 2^WShift (a right shift when negative), saturating at
	// 65535. It is the backend's window scale minus the one tslb's SYN-ACK
	// announced.
	WShift int8
}

// ToBackend translates a client segment's acknowledgement side: ack and
// SACK blocks -= SeqDelta, TSecr -= TSOff. On error p is unchanged.
func (px *Proxy) ToBackend(p *Packet) error {
	if !p.isTCP() {
		return ErrNotTCP
	}
	hasAck := p.TCPFlags&TCPFlagACK != 0
	ack := p.Ack - px.SeqDelta
	if p.TCPHdrLen == TCPMinimumSize {
		if hasAck {
			p.SetAck(ack)
		}
		return nil
	}
	if p.linuxTSLayout() && px.TS {
		// Fast path: NOP NOP TS only.
		tsecr := binary.BigEndian.Uint32(p.Frame[p.L4+28:]) - px.TSOff
		if hasAck {
			p.setTwo32(tcpAckOffset, ack, 28, tsecr)
			p.Ack = ack
		} else {
			p.set32(28, tsecr)
		}
		return nil
	}
	var o TCPOptions
	if p.TCPOptions(&o) != nil {
		return ErrBadOptions
	}
	if hasAck {
		p.SetAck(ack)
	}
	p.shiftSACK(&o, px.SeqDelta)
	if o.HasTS && px.TS {
		p.setTSAt(o.TSOff, o.TSVal, o.TSEcr-px.TSOff)
	}
	return nil
}

// ToClient translates a backend segment's sending side: seq += SeqDelta,
// TSval += TSOff, the window rescaled. On error p is unchanged.
func (px *Proxy) ToClient(p *Packet) error {
	if !p.isTCP() {
		return ErrNotTCP
	}
	seq := p.Seq + px.SeqDelta
	t := p.Frame[p.L4 : p.L4+p.TCPHdrLen]
	if px.TS && p.TCPHdrLen > TCPMinimumSize {
		if p.linuxTSLayout() {
			tsval := binary.BigEndian.Uint32(t[24:]) + px.TSOff
			p.setTwo32(tcpSeqOffset, seq, 24, tsval)
		} else {
			var o TCPOptions
			if p.TCPOptions(&o) != nil {
				return ErrBadOptions
			}
			p.SetSeq(seq)
			if o.HasTS {
				p.setTSAt(o.TSOff, o.TSVal+px.TSOff, o.TSEcr)
			}
		}
	} else {
		p.SetSeq(seq)
	}
	p.Seq = seq
	if px.WShift != 0 {
		old := binary.BigEndian.Uint16(t[tcpWindowOffset:])
		w := uint32(old)
		if px.WShift > 0 {
			w <<= uint(px.WShift)
		} else {
			w >>= uint(-px.WShift)
		}
		if w > 0xffff {
			w = 0xffff
		}
		if uint16(w) != old {
			p.tcpSet16(tcpWindowOffset, uint16(w))
		}
	}
	return nil
}
