package link

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// TestSteeringLab proves the mirror against the kernel: frames sent from
// the peer with many addresses and ports must each arrive on exactly the
// queue Pick names, with 1, 2 and 3 queues, for every steering (a split
// one whose port addresses half the frames go to), in both modes.
func TestSteeringLab(t *testing.T) {
	l := newLab(t)
	tx := l.raw(t, l.a, l.aIf, false, false)
	split := mustSplit(netip.AddrFrom4(farIP), netip.AddrFrom16(farIP6), netip.MustParseAddr("198.18.255.2"))
	for _, mode := range []Mode{ModeRing, ModeSocket} {
		for _, s := range []Steering{SteerFlowHash, SteerDstPort, split} {
			for _, n := range []int{1, 2, 3} {
				t.Run(fmt.Sprintf("%s/%v/%d", mode, s, n), func(t *testing.T) {
					qs, _ := l.openB(t, Config{Mode: mode, Queues: n, Steering: s, RingFrames: 2048})
					defer func() {
						for _, q := range qs {
							q.Close()
						}
					}()
					testSteering(t, l, tx, qs, s, mode)
				})
			}
		}
	}
}

// farIP is a destination no lab kernel owns: the b kernel drops the test
// frames quietly (no RST, no ICMP).
var farIP = [4]byte{198, 18, 255, 1}

// farIP6 is an IPv6 destination half the IPv6 test frames go to.
var farIP6 = [16]byte{0xfd, 0xff, 15: 1}

func testSteering(t *testing.T, l *vlab, tx *rawSock, qs []Queue, s Steering, mode Mode) {
	n := len(qs)
	r := rand.New(rand.NewPCG(uint64(n), uint64(s.kind)))
	var sent [][]byte
	for i := range 600 {
		m := uint32(i)
		var sip [4]byte
		binary.BigEndian.PutUint32(sip[:], 0xc6120000|r.Uint32()&0x1ffff) // 198.18.0.0/15
		var s6 [16]byte
		s6[0] = 0xfd
		for k := 1; k < 16; k++ {
			s6[k] = byte(r.Uint32())
		}
		sp, dp := uint16(1024+r.IntN(60000)), uint16(1+r.IntN(65535))
		var f []byte
		switch {
		case i%10 < 6:
			dip := farIP
			if i%2 == 0 {
				dip = [4]byte{198, 18, 255, 3}
			}
			f = ipv4TCP(l.bMAC, l.aMAC, sip, dip, sp, dp, 5+r.IntN(3), 0x4000, m)
		case i%10 < 8:
			d6 := s6
			if i%2 == 0 {
				d6 = farIP6
			}
			f = ipv6TCP(l.bMAC, l.aMAC, s6, d6, sp, dp, 0, m)
		case i%10 == 8:
			f = ipv4TCP(l.bMAC, l.aMAC, sip, farIP, sp, dp, 5, 0x2000, m) // fragment
		default:
			if i%20 == 9 {
				f = ipv4UDP(l.bMAC, l.aMAC, sip, farIP, sp, dp, m)
			} else {
				f = arpFrame(l.aMAC, sip, [4]byte{198, 19, 255, 254}, m)
			}
		}
		sent = append(sent, f)
		tx.write(t, f)
		if i%100 == 99 {
			time.Sleep(time.Millisecond) // let the receivers keep up; the rings hold 2048
		}
	}
	got, frames := drain(t, qs, len(sent), 5*time.Second)
	seen := make([]int, len(sent))
	for q := range got {
		for k, m := range got[q] {
			if int(m) >= len(sent) {
				t.Fatalf("queue %d: unknown marker %d", q, m)
			}
			seen[m]++
			want := s.Pick(withVnet(sent[m]), n)
			if pick := s.Pick(frames[q][k], n); pick != want {
				t.Errorf("frame %d: Pick of the received frame %d, of the sent one %d", m, pick, want)
			}
			if q != want {
				t.Errorf("frame %d (%x...): on queue %d, Pick says %d", m, sent[m][:min(len(sent[m]), 54)], q, want)
			}
		}
	}
	perQueue := make([]int, n)
	for m, c := range seen {
		if c != 1 {
			t.Errorf("frame %d arrived %d times", m, c)
			continue
		}
		perQueue[s.Pick(withVnet(sent[m]), n)]++
	}
	for q, c := range perQueue {
		if c < len(sent)/n/3 {
			t.Errorf("queue %d got only %d of %d frames: %v", q, c, len(sent), perQueue)
		}
	}
	for i, q := range qs {
		st := q.Stats()
		if st.Truncated != 0 || st.KernelDrops != 0 {
			t.Errorf("queue %d (%s): %+v", i, mode, st)
		}
	}
}

// TestLinkFlap: the interface goes down and up under the queues. The
// worker learns of it (Recv returns the pending ENETDOWN once, through
// the Poller for a ring), and afterwards frames flow again, still to the
// queue Pick names (packet_notifier re-registers the members in socket
// creation order, so the group keeps its numbering).
func TestLinkFlap(t *testing.T) {
	l := newLab(t)
	tx := l.raw(t, l.a, l.aIf, false, false)
	for _, mode := range []Mode{ModeRing, ModeSocket} {
		t.Run(string(mode), func(t *testing.T) {
			qs, _ := l.openB(t, Config{Mode: mode, Queues: 3, Steering: SteerDstPort})
			h, err := netlink.NewHandleAt(l.b)
			if err != nil {
				t.Fatal(err)
			}
			defer h.Close()
			lk, err := h.LinkByName(l.bIf)
			if err != nil {
				t.Fatal(err)
			}
			if err := h.LinkSetDown(lk); err != nil {
				t.Fatal(err)
			}
			p, _ := NewPoller(qs)
			defer p.Close()
			errs := 0
			buf := make([][]byte, 8)
			for deadline := time.Now().Add(2 * time.Second); errs < len(qs) && time.Now().Before(deadline); {
				p.Wait(20 * time.Millisecond)
				for _, q := range qs {
					if _, err := q.Recv(buf); err != nil {
						if !errors.Is(err, unix.ENETDOWN) {
							t.Fatalf("Recv: %v", err)
						}
						errs++
					}
					q.Release()
				}
			}
			if errs != len(qs) {
				t.Errorf("%d of %d queues reported ENETDOWN", errs, len(qs))
			}
			if err := h.LinkSetUp(lk); err != nil {
				t.Fatal(err)
			}
			if err := l.waitReady(); err != nil {
				t.Fatal(err)
			}
			var sent [][]byte
			for i := range 90 {
				f := ipv4TCP(l.bMAC, l.aMAC, [4]byte{198, 18, 0, 1}, farIP, 40000, uint16(1000+i), 5, 0x4000, uint32(i))
				sent = append(sent, f)
				tx.write(t, f)
			}
			got, _ := drain(t, qs, len(sent), 3*time.Second)
			total := 0
			for qi, ms := range got {
				for _, m := range ms {
					total++
					if want := PortOwner(uint16(1000+m), len(qs)); qi != want {
						t.Errorf("after the flap: frame %d on queue %d, want %d", m, qi, want)
					}
				}
			}
			if total != len(sent) {
				t.Errorf("after the flap: %d of %d frames", total, len(sent))
			}
		})
	}
}
