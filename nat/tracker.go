package nat

// Side names one end of a tracked connection.
type Side uint8

// Sides of a connection; Tracker arrays are indexed by Side.
const (
	SideNone    Side = 0 // SideNone means no side (yet).
	SideClient  Side = 1 // SideClient is the end that sent the first SYN.
	SideBackend Side = 2 // SideBackend is the end that answered it.
)

// String returns "none", "client" or "backend".
func (s Side) String() string {
	switch s {
	case SideClient:
		return "client"
	case SideBackend:
		return "backend"
	case SideNone:
		return "none"
	}
	return "invalid"
}

// peer returns the other side.
func (s Side) peer() Side { return 3 - s }

// ConnState is the state of a tracked connection as a middlebox sees it.
type ConnState uint8

// Connection states.
const (
	StateNew         ConnState = iota // StateNew: nothing (or no SYN) seen.
	StateSynSent                      // StateSynSent: the client's SYN was seen.
	StateSynRecv                      // StateSynRecv: the backend's SYN-ACK was seen.
	StateEstablished                  // StateEstablished: the client acked the SYN-ACK.
	StateFinWait                      // StateFinWait: one side sent a FIN.
	StateClosing                      // StateClosing: both sent FINs, not both acked.
	StateTimeWait                     // StateTimeWait: both FINs sent and acked.
	StateClosed                       // StateClosed: an accepted RST was seen.
)

// States lists every ConnState, for pre-creating metrics.
var States = []ConnState{
	StateNew, StateSynSent, StateSynRecv, StateEstablished,
	StateFinWait, StateClosing, StateTimeWait, StateClosed,
}

// String returns the lower-case state name used as a metric label.
func (s ConnState) String() string {
	switch s {
	case StateNew:
		return "new"
	case StateSynSent:
		return "syn_sent"
	case StateSynRecv:
		return "syn_recv"
	case StateEstablished:
		return "established"
	case StateFinWait:
		return "fin_wait"
	case StateClosing:
		return "closing"
	case StateTimeWait:
		return "time_wait"
	case StateClosed:
		return "closed"
	}
	return "invalid"
}

// DefaultRSTWindow is the receive window the tracker assumes when checking
// an RST against a side whose window it has not been told (NoteWindow).
const DefaultRSTWindow = 65535

// SeqAfter reports whether sequence number a comes after b (the kernel's
// after(): (int32)(b-a) < 0, RFC 1982 serial arithmetic).
func SeqAfter(a, b uint32) bool { return int32(b-a) < 0 }

// SeqBefore reports whether sequence number a comes before b (the kernel's
// before(): (int32)(a-b) < 0).
func SeqBefore(a, b uint32) bool { return int32(a-b) < 0 }

// Tracker follows one TCP connection as a middlebox sees it. The zero value
// is a connection in StateNew. Not safe for concurrent use.
type Tracker struct {
	// State is the current state.
	State ConnState
	// ClosedFirst is the side whose FIN came first. That side ends in
	// TIME_WAIT on its own host: if it is SideBackend, the backend holds the
	// tuple in TIME_WAIT; if it is SideClient, the backend does not.
	ClosedFirst Side
	// ResetBy is the side that sent an accepted RST.
	ResetBy Side
	// ISN holds each side's SYN sequence number (index by Side).
	ISN [3]uint32
	// FinSeq is the sequence number of each side's FIN; FinSent says
	// whether it was sent and FinAcked whether the peer acked it.
	FinSeq [3]uint32
	// FinSent says whether each side sent its FIN.
	FinSent [3]bool
	// FinAcked says whether each side's FIN was acked by the peer.
	FinAcked [3]bool
	// NextSeq is the highest seq+len(+SYN/FIN) sent by each side (its
	// snd_nxt as seen), a wrap-aware maximum.
	NextSeq [3]uint32
	// LastTSVal is the latest (wrap-aware highest) TSval sent by each side;
	// TSSeen says whether that side sent any.
	LastTSVal [3]uint32
	// TSSeen says whether each side sent any TSval.
	TSSeen [3]bool
	// AckSeq is the highest ack number sent by each side (its rcv_nxt as
	// seen); AckSeen says whether that side sent any ACK.
	AckSeq [3]uint32
	// AckSeen says whether each side sent any ACK.
	AckSeen [3]bool
	// MaxWindow is the largest scaled receive window each side advertised,
	// as reported through NoteWindow; 0 means unknown (DefaultRSTWindow is
	// then used).
	MaxWindow [3]uint32

	seqSeen [3]bool
}

// NoteWindow records that from advertised a receive window of win bytes
// (already scaled). The tracker keeps the maximum, for RST validation.
func (t *Tracker) NoteWindow(from Side, win uint32) {
	if from == SideClient || from == SideBackend {
		t.MaxWindow[from] = max(t.MaxWindow[from], win)
	}
}

// rstAcceptable checks an RST from `from` against the receiver's window
// (RFC 5961 §3 as seen by a middlebox): its seq must lie in [the
// receiver's acked point, that point + the receiver's max window], widened
// to the sender's own snd_nxt. If the receiver never acked, it is accepted,
// except that in SYN_SENT a backend RST must carry an ACK of the client's
// SYN (RFC 9293 §3.10.7.3).
func (t *Tracker) rstAcceptable(from Side, flags uint8, seq, ack uint32) bool {
	recv := from.peer()
	if t.State == StateSynSent && from == SideBackend {
		return flags&TCPFlagACK != 0 && ack == t.NextSeq[SideClient]
	}
	if !t.AckSeen[recv] {
		return true
	}
	lo := t.AckSeq[recv]
	win := t.MaxWindow[recv]
	if win == 0 {
		win = DefaultRSTWindow
	}
	hi := lo + win
	if t.seqSeen[from] && SeqAfter(t.NextSeq[from], hi) {
		hi = t.NextSeq[from]
	}
	return !SeqBefore(seq, lo) && !SeqAfter(seq, hi)
}

// Update feeds one segment sent by `from` (flags, seq, ack, payload length
// and, if hasTS, its TSval) and returns the new state. Sequence comparisons
// are wrap-aware (SeqAfter/SeqBefore). An RST is accepted only if its seq is
// within the receiver's window as far as the tracker knows (see
// rstAcceptable); otherwise it is ignored, the state is unchanged and the
// second result is true. Segments from SideNone or an unknown side are
// ignored. A connection that is StateClosed stays closed. Segments other
// than a SYN seen in StateNew (a mid-stream pickup) leave the state New.
func (t *Tracker) Update(from Side, flags uint8, seq, ack uint32, payloadLen int, tsval uint32, hasTS bool) (ConnState, bool) {
	if from != SideClient && from != SideBackend || t.State == StateClosed {
		return t.State, false
	}
	if flags&TCPFlagRST != 0 {
		if !t.rstAcceptable(from, flags, seq, ack) {
			return t.State, true
		}
		t.State = StateClosed
		t.ResetBy = from
		return t.State, false
	}
	peer := from.peer()
	syn := flags&TCPFlagSYN != 0
	fin := flags&TCPFlagFIN != 0
	hasAck := flags&TCPFlagACK != 0

	if syn {
		switch {
		case !hasAck && from == SideClient && (t.State == StateNew || t.State == StateSynSent):
			// First SYN or a retransmission (possibly with a new ISN).
			t.ISN[from] = seq
			t.NextSeq[from] = seq
			t.seqSeen[from] = true
			t.State = StateSynSent
		case hasAck && from == SideBackend && (t.State == StateSynSent || t.State == StateSynRecv):
			t.ISN[from] = seq
			t.NextSeq[from] = seq
			t.seqSeen[from] = true
			t.State = StateSynRecv
		}
	}

	end := seq + uint32(max(payloadLen, 0))
	if syn {
		end++
	}
	if fin {
		end++
	}
	if !t.seqSeen[from] || SeqAfter(end, t.NextSeq[from]) {
		t.NextSeq[from] = end
		t.seqSeen[from] = true
	}
	if hasTS && (!t.TSSeen[from] || SeqAfter(tsval, t.LastTSVal[from])) {
		t.LastTSVal[from] = tsval
		t.TSSeen[from] = true
	}

	if hasAck {
		if !t.AckSeen[from] || SeqAfter(ack, t.AckSeq[from]) {
			t.AckSeq[from] = ack
			t.AckSeen[from] = true
		}
		if t.FinSent[peer] && SeqAfter(ack, t.FinSeq[peer]) {
			t.FinAcked[peer] = true
		}
		if t.State == StateSynRecv && from == SideClient && SeqAfter(ack, t.ISN[SideBackend]) {
			t.State = StateEstablished
		}
	}

	if fin && !t.FinSent[from] && t.State != StateNew {
		fs := seq + uint32(max(payloadLen, 0))
		if syn {
			fs++
		}
		t.FinSeq[from] = fs
		t.FinSent[from] = true
		if t.ClosedFirst == SideNone {
			t.ClosedFirst = from
		}
	}

	switch {
	case t.FinSent[SideClient] && t.FinSent[SideBackend]:
		if t.FinAcked[SideClient] && t.FinAcked[SideBackend] {
			t.State = StateTimeWait
		} else {
			t.State = StateClosing
		}
	case t.FinSent[SideClient] || t.FinSent[SideBackend]:
		t.State = StateFinWait
	}
	return t.State, false
}
