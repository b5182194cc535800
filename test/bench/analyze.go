package bench

import (
	"net/netip"
	"time"

	"tslb/test/lab"
)

// CaptureStats counts what a capture between the balancer and the backends
// shows about connection setup. Everything is keyed by the balancer-side
// tuple (source address and port, backend address and port).
type CaptureStats struct {
	// Frames is the number of frames captured; Dropped those past the
	// capture's limit (then the counts below are lower bounds).
	Frames  int `json:"frames"`
	Dropped int `json:"dropped"`
	// SYNs counts SYNs towards the backends; SYNRetransmits those that
	// repeat the previous SYN of their tuple (same sequence number).
	SYNs           int `json:"syns"`
	SYNRetransmits int `json:"syn_retransmits"`
	// OldACKs counts SYNs answered by the backend with an ACK that does not
	// acknowledge them: the backend still holds the tuple in TIME_WAIT and
	// refused the new connection (RFC 9293 §3.10.7.4).
	OldACKs int `json:"old_acks"`
	// RSTsToBackend counts RSTs sent towards the backends (a Linux client
	// answers an old ACK with an RST, which ends the backend's TIME_WAIT);
	// RSTsFromBackend those the backends sent.
	RSTsToBackend   int `json:"rsts_to_backend"`
	RSTsFromBackend int `json:"rsts_from_backend"`
	// OldACKThenRST counts old ACKs followed by an RST towards the backend
	// on the same tuple within 100 ms: the failure signature of a stripping
	// balancer whose old ACK reaches a Linux client.
	OldACKThenRST int `json:"old_ack_then_rst"`
}

// tuple identifies a connection between balancer and backend.
type tuple struct {
	src, dst netip.AddrPort
}

// Analyze counts connection-setup events in frames captured between the
// balancer and the backends. backendPort tells the directions apart: a
// segment to backendPort goes towards a backend. collisions receives the
// index of every old-ACK frame (may be nil).
func Analyze(frames []lab.Frame, backendPort uint16, collisions *[]int) CaptureStats {
	s := CaptureStats{Frames: len(frames)}
	type synState struct {
		seq     uint32
		pending bool
	}
	last := make(map[tuple]*synState)
	oldAt := make(map[tuple]time.Time)
	for i, f := range frames {
		ip, tcp, ok := lab.DecodeTCP(f)
		if !ok {
			continue
		}
		src, dst := ip.Src(), ip.Dst()
		if uint16(tcp.DstPort) == backendPort {
			k := tuple{netip.AddrPortFrom(src, uint16(tcp.SrcPort)), netip.AddrPortFrom(dst, uint16(tcp.DstPort))}
			switch {
			case tcp.SYN && !tcp.ACK:
				s.SYNs++
				st := last[k]
				if st == nil {
					st = &synState{}
					last[k] = st
				} else if st.seq == tcp.Seq {
					s.SYNRetransmits++
				}
				st.seq, st.pending = tcp.Seq, true
			case tcp.RST:
				s.RSTsToBackend++
				if t, ok := oldAt[k]; ok {
					if f.Time.Sub(t) <= 100*time.Millisecond {
						s.OldACKThenRST++
					}
					delete(oldAt, k)
				}
			}
			continue
		}
		if uint16(tcp.SrcPort) != backendPort {
			continue
		}
		k := tuple{netip.AddrPortFrom(dst, uint16(tcp.DstPort)), netip.AddrPortFrom(src, uint16(tcp.SrcPort))}
		if tcp.RST {
			s.RSTsFromBackend++
		}
		st := last[k]
		if st == nil || !st.pending {
			continue
		}
		switch {
		case tcp.SYN && tcp.ACK && tcp.Ack == st.seq+1:
			st.pending = false
		case tcp.ACK && !tcp.SYN && !tcp.RST && tcp.Ack != st.seq+1:
			s.OldACKs++
			oldAt[k] = f.Time
			if collisions != nil {
				*collisions = append(*collisions, i)
			}
			st.pending = false
		}
	}
	return s
}

// collisionFrames returns the frames of the tuples of the first max
// collisions (old ACKs at the given frame indices), within 2 s either side
// of each, in capture order: what --keep-pcap writes.
func collisionFrames(frames []lab.Frame, idx []int, backendPort uint16, max int) []lab.Frame {
	type win struct{ from, to time.Time }
	wins := make(map[tuple][]win)
	for _, i := range idx[:min(len(idx), max)] {
		ip, tcp, ok := lab.DecodeTCP(frames[i])
		if !ok {
			continue
		}
		src, dst := ip.Src(), ip.Dst()
		k := tuple{netip.AddrPortFrom(dst, uint16(tcp.DstPort)), netip.AddrPortFrom(src, uint16(tcp.SrcPort))}
		t := frames[i].Time
		wins[k] = append(wins[k], win{t.Add(-2 * time.Second), t.Add(2 * time.Second)})
	}
	var out []lab.Frame
	for _, f := range frames {
		ip, tcp, ok := lab.DecodeTCP(f)
		if !ok {
			continue
		}
		src, dst := ip.Src(), ip.Dst()
		k := tuple{netip.AddrPortFrom(src, uint16(tcp.SrcPort)), netip.AddrPortFrom(dst, uint16(tcp.DstPort))}
		if uint16(tcp.SrcPort) == backendPort {
			k = tuple{k.dst, k.src}
		}
		for _, w := range wins[k] {
			if !f.Time.Before(w.from) && !f.Time.After(w.to) {
				out = append(out, f)
				break
			}
		}
	}
	return out
}
