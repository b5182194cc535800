package nat_test

import (
	"testing"

	"tslb/nat"
)

const (
	cli = nat.SideClient
	be  = nat.SideBackend
	syn = nat.TCPFlagSYN
	ack = nat.TCPFlagACK
	fin = nat.TCPFlagFIN | nat.TCPFlagACK
	rst = nat.TCPFlagRST
)

// step is one segment fed to a Tracker and the expected outcome.
type step struct {
	from     nat.Side
	flags    uint8
	seq, ack uint32
	n        int
	want     nat.ConnState
	ignored  bool
}

// handshake returns the steps of a three-way handshake for ISNs c and b.
func handshake(c, b uint32) []step {
	return []step{
		{cli, syn, c, 0, 0, nat.StateSynSent, false},
		{be, syn | ack, b, c + 1, 0, nat.StateSynRecv, false},
		{cli, ack, c + 1, b + 1, 0, nat.StateEstablished, false},
	}
}

func TestTrackerLifecycle(t *testing.T) {
	tests := []struct {
		name        string
		c, b        uint32
		steps       []step
		closedFirst nat.Side
		resetBy     nat.Side
		window      uint32 // NoteWindow(backend, window) before the steps, if set
	}{
		{
			name: "client_closes_first",
			c:    1000, b: 5000,
			steps: []step{
				{cli, ack | nat.TCPFlagPSH, 1001, 5001, 100, nat.StateEstablished, false},
				{be, ack, 5001, 1101, 0, nat.StateEstablished, false},
				{cli, fin, 1101, 5001, 0, nat.StateFinWait, false},
				{be, ack, 5001, 1102, 0, nat.StateFinWait, false},
				{be, fin, 5001, 1102, 0, nat.StateClosing, false},
				{cli, ack, 1102, 5002, 0, nat.StateTimeWait, false},
				{cli, ack, 1102, 5002, 0, nat.StateTimeWait, false}, // duplicate last ACK
			},
			closedFirst: cli,
		},
		{
			name: "backend_closes_first_fin_with_data",
			c:    1000, b: 5000,
			steps: []step{
				{be, fin, 5001, 1001, 10, nat.StateFinWait, false},
				{cli, ack, 1001, 5012, 0, nat.StateFinWait, false},
				{cli, fin, 1001, 5012, 0, nat.StateClosing, false},
				{be, ack, 5012, 1002, 0, nat.StateTimeWait, false},
			},
			closedFirst: be,
		},
		{
			name: "fin_retransmit_keeps_first_fin_seq",
			c:    1000, b: 5000,
			steps: []step{
				{be, fin, 5001, 1001, 0, nat.StateFinWait, false},
				{be, fin, 5001, 1001, 0, nat.StateFinWait, false},
				{cli, fin, 1001, 5002, 0, nat.StateClosing, false},
				{be, ack, 5002, 1002, 0, nat.StateTimeWait, false},
			},
			closedFirst: be,
		},
		{
			name: "simultaneous_close",
			c:    1000, b: 5000,
			steps: []step{
				{cli, fin, 1001, 5001, 0, nat.StateFinWait, false},
				{be, fin, 5001, 1001, 0, nat.StateClosing, false}, // does not ack the client's FIN
				{cli, ack, 1002, 5002, 0, nat.StateClosing, false},
				{be, ack, 5002, 1002, 0, nat.StateTimeWait, false},
			},
			closedFirst: cli,
		},
		{
			name: "client_rst_in_window",
			c:    1000, b: 5000,
			steps: []step{
				{cli, rst, 1001, 0, 0, nat.StateClosed, false},
				{be, ack, 5001, 1001, 0, nat.StateClosed, false}, // closed stays closed
			},
			resetBy: cli,
		},
		{
			name: "client_rst_out_of_window",
			c:    1000, b: 5000,
			steps: []step{
				{cli, rst, 1001 + 70000, 0, 0, nat.StateEstablished, true},
				{cli, rst, 1000, 0, 0, nat.StateEstablished, true}, // before the acked point
				{cli, rst | ack, 1001 + 65535, 5001, 0, nat.StateClosed, false},
			},
			resetBy: cli,
		},
		{
			name: "client_rst_in_large_window",
			c:    1000, b: 5000,
			window: 1 << 20,
			steps: []step{
				{cli, rst, 1001 + 70000, 0, 0, nat.StateClosed, false},
			},
			resetBy: cli,
		},
		{
			name: "backend_rst_in_window",
			c:    1000, b: 5000,
			steps: []step{
				{be, rst, 5001 + 10, 0, 0, nat.StateClosed, false},
			},
			resetBy: be,
		},
		{
			name: "backend_rst_out_of_window",
			c:    1000, b: 5000,
			steps: []step{
				{be, rst, 4000, 0, 0, nat.StateEstablished, true},
				{be, rst, 5001 + 65536, 0, 0, nat.StateEstablished, true},
			},
		},
		{
			name: "rst_at_sender_snd_nxt_beyond_window",
			c:    1000, b: 5000,
			steps: []step{
				{cli, ack, 1001, 5001, 100000, nat.StateEstablished, false}, // in flight (a GSO burst)
				{cli, rst, 101001, 0, 0, nat.StateClosed, false},
			},
			resetBy: cli,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var tr nat.Tracker
			if tt.window != 0 {
				tr.NoteWindow(be, tt.window)
			}
			all := append(handshake(tt.c, tt.b), tt.steps...)
			for i, s := range all {
				got, ign := tr.Update(s.from, s.flags, s.seq, s.ack, s.n, 0, false)
				if got != s.want || ign != s.ignored || tr.State != got {
					t.Fatalf("step %d %+v: got %v ignored=%v, want %v ignored=%v", i, s, got, ign, s.want, s.ignored)
				}
			}
			if tr.ClosedFirst != tt.closedFirst || tr.ResetBy != tt.resetBy {
				t.Errorf("ClosedFirst %v ResetBy %v, want %v %v", tr.ClosedFirst, tr.ResetBy, tt.closedFirst, tt.resetBy)
			}
			if tr.ISN[cli] != tt.c || tr.ISN[be] != tt.b {
				t.Errorf("ISN = %v", tr.ISN)
			}
		})
	}
}

func TestTrackerSynPhase(t *testing.T) {
	tests := []struct {
		name  string
		steps []step
	}{
		{
			name: "syn_retransmit",
			steps: []step{
				{cli, syn, 100, 0, 0, nat.StateSynSent, false},
				{cli, syn, 100, 0, 0, nat.StateSynSent, false},
				{be, syn | ack, 900, 101, 0, nat.StateSynRecv, false},
				{be, syn | ack, 900, 101, 0, nat.StateSynRecv, false},
				{cli, ack, 101, 901, 0, nat.StateEstablished, false},
			},
		},
		{
			name: "backend_refuses_syn",
			steps: []step{
				{cli, syn, 100, 0, 0, nat.StateSynSent, false},
				{be, rst | ack, 0, 99, 0, nat.StateSynSent, true}, // does not ack the SYN
				{be, rst, 0, 101, 0, nat.StateSynSent, true},      // no ACK flag
				{be, rst | ack, 0, 101, 0, nat.StateClosed, false},
			},
		},
		{
			name: "ack_without_syn_ack_is_not_established",
			steps: []step{
				{cli, syn, 100, 0, 0, nat.StateSynSent, false},
				{cli, ack, 101, 901, 0, nat.StateSynSent, false},
			},
		},
		{
			name: "midstream_stays_new",
			steps: []step{
				{cli, ack, 100, 900, 10, nat.StateNew, false},
				{be, fin, 900, 110, 0, nat.StateNew, false},
			},
		},
		{
			name: "none_side_ignored",
			steps: []step{
				{nat.SideNone, syn, 1, 0, 0, nat.StateNew, false},
				{nat.Side(7), syn, 1, 0, 0, nat.StateNew, false},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var tr nat.Tracker
			for i, s := range tt.steps {
				got, ign := tr.Update(s.from, s.flags, s.seq, s.ack, s.n, 0, false)
				if got != s.want || ign != s.ignored {
					t.Fatalf("step %d %+v: got %v ignored=%v, want %v ignored=%v", i, s, got, ign, s.want, s.ignored)
				}
			}
		})
	}
}

func TestTrackerWrap(t *testing.T) {
	// Both ISNs sit just below 2^32; data and FINs cross the wrap.
	c, b := uint32(0xffffff00), uint32(0xfffffffe)
	var tr nat.Tracker
	steps := append(handshake(c, b),
		step{cli, ack, c + 1, b + 1, 0x200, nat.StateEstablished, false}, // ends at 0x101
		step{be, ack, b + 1, c + 1 + 0x200, 0, nat.StateEstablished, false},
		step{cli, rst, 0xfffffff0, 0, 0, nat.StateEstablished, true}, // before acked point across the wrap
		step{be, fin, b + 1, c + 0x201, 0, nat.StateFinWait, false},  // FIN seq 0xffffffff
		step{cli, fin, c + 0x201, 0, 0, nat.StateClosing, false},     // acks 0: after 0xffffffff
		step{be, ack, 0, c + 0x202, 0, nat.StateTimeWait, false},
	)
	// Fix the client's FIN ack: b+2 wraps to 0.
	steps[len(steps)-2].ack = b + 2
	for i, s := range steps {
		got, ign := tr.Update(s.from, s.flags, s.seq, s.ack, s.n, 0, false)
		if got != s.want || ign != s.ignored {
			t.Fatalf("step %d %+v: got %v ignored=%v", i, s, got, ign)
		}
	}
	if tr.NextSeq[cli] != 0x102 || tr.NextSeq[be] != 0 || tr.FinSeq[be] != 0xffffffff || !tr.FinAcked[be] || !tr.FinAcked[cli] {
		t.Errorf("NextSeq %#x FinSeq %#x FinAcked %v", tr.NextSeq, tr.FinSeq, tr.FinAcked)
	}
	// An old retransmission does not move NextSeq back.
	tr.Update(cli, ack, c+1, b+2, 10, 0, false)
	if tr.NextSeq[cli] != 0x102 {
		t.Errorf("NextSeq moved back to %#x", tr.NextSeq[cli])
	}
}

func TestTrackerTimestamps(t *testing.T) {
	var tr nat.Tracker
	tr.Update(cli, syn, 1, 0, 0, 0xfffffff0, true)
	tr.Update(cli, ack, 2, 0, 0, 5, true) // wrapped: after 0xfffffff0
	tr.Update(cli, ack, 2, 0, 0, 0xfffffff8, true)
	tr.Update(cli, ack, 2, 0, 0, 0, false)
	if !tr.TSSeen[cli] || tr.LastTSVal[cli] != 5 || tr.TSSeen[be] {
		t.Errorf("LastTSVal %v TSSeen %v", tr.LastTSVal, tr.TSSeen)
	}
}

func TestSeqCompare(t *testing.T) {
	for _, tt := range []struct {
		a, b          uint32
		after, before bool
	}{
		{1, 0, true, false},
		{0, 1, false, true},
		{5, 5, false, false},
		{0, 0xffffffff, true, false},
		{0x7fffffff, 0, true, false},
		{0x80000000, 0, true, true}, // exactly half way: both hold, as in the kernel
	} {
		if got := nat.SeqAfter(tt.a, tt.b); got != tt.after {
			t.Errorf("SeqAfter(%#x, %#x) = %v", tt.a, tt.b, got)
		}
		if got := nat.SeqBefore(tt.a, tt.b); got != tt.before {
			t.Errorf("SeqBefore(%#x, %#x) = %v", tt.a, tt.b, got)
		}
	}
}

func TestStateAndSideStrings(t *testing.T) {
	want := []string{"new", "syn_sent", "syn_recv", "established", "fin_wait", "closing", "time_wait", "closed"}
	if len(nat.States) != len(want) {
		t.Fatalf("len(States) = %d", len(nat.States))
	}
	for i, s := range nat.States {
		if s.String() != want[i] {
			t.Errorf("States[%d] = %q, want %q", i, s, want[i])
		}
	}
	if nat.SideClient.String() != "client" || nat.SideBackend.String() != "backend" || nat.SideNone.String() != "none" {
		t.Error("Side.String")
	}
}

func TestTrackerNoAllocs(t *testing.T) {
	var tr nat.Tracker
	n := testing.AllocsPerRun(100, func() {
		tr = nat.Tracker{}
		for _, s := range handshake(1, 2) {
			tr.Update(s.from, s.flags, s.seq, s.ack, s.n, 1, true)
		}
	})
	if n != 0 {
		t.Errorf("allocs = %v", n)
	}
}
