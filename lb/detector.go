package lb

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"github.com/gopacket/gopacket/pcapgo"

	"tslb/nat"
)

// The collision detector watches every flow's first exchange with its
// backend for the signatures of a SYN that met old state on the backend:
//
//   - old_ack: the SYN is answered by an ACK (no SYN flag) whose ack does
//     not acknowledge it — the TIME_WAIT answer of tcp_timewait_state_process
//     (or a challenge ACK from a stale ESTABLISHED socket, RFC 5961 §4);
//   - rst_on_syn: the SYN is answered by an RST;
//   - syn_retransmit: the client sent its SYN again before any answer.
//
// On old_ack tslb repairs (unless detector.repair is false): the bogus ACK
// is not forwarded, the backend gets an RST with seq = that ACK's ack
// number (its rcv_nxt: with tcp_rfc1337=0 this ends the TIME_WAIT, or the
// stale connection), and the SYN is sent again at once — what a Linux
// client does after the same ACK, minus the client seeing any of it.
// With detector.pcap_dir set, the exchange is written to a pcap file.

// Signatures, as metric labels.
const (
	sigOldACK = iota
	sigRSTOnSYN
	sigSYNRetransmit
	numSignatures
)

var signatureNames = [numSignatures]string{"old_ack", "rst_on_syn", "syn_retransmit"}

// maxRepairs bounds repairs per flow: a backend that keeps answering with
// an old ACK (rfc1337=1, FreeBSD) is left to the client's own recovery.
const maxRepairs = 3

// oldACK handles the old-ACK signature for f; the ACK is in frame.
func (w *worker) oldACK(f *flow, frame []byte) {
	p := &w.pkt
	f.be.collisions[sigOldACK].Inc()
	ack := p.Ack
	repair := !w.sh.noRepair.Load() && f.repairs < maxRepairs && f.syn != nil
	if repair {
		f.repairs++
	}
	w.sh.log.Warn("collision: SYN answered by an ACK that does not acknowledge it",
		"backend", f.be.ap.String(), "tuple", hostPort(f.snat, f.sport)+"->"+f.be.ap.String(),
		"client", hostPort(f.client, f.cport), "syn_seq", f.isn, "ack", ack, "repair", repair)
	ev := CollisionStatus{Time: time.Unix(0, w.now).UTC(), Backend: f.be.ap.String(),
		Tuple: hostPort(f.snat, f.sport) + "->" + f.be.ap.String(), Client: hostPort(f.client, f.cport),
		Signature: signatureNames[sigOldACK], Repaired: repair}
	defer func() {
		if f.capt != nil {
			ev.Pcap = pcapName(f.capt)
		}
		w.sh.collisions.add(ev)
	}()
	if w.sh.pcapDir != "" {
		if f.capt == nil {
			f.capt = &flowCapture{name: fmt.Sprintf("collision-%s-%s_%d-%s_%d", time.Now().UTC().Format("20060102T150405.000000000"),
				f.snat.Text(), f.sport, f.baddr.Text(), f.bport), remaining: 8}
			if f.syn != nil {
				f.capt.add(f.syn)
			}
		}
		w.captureFrame(f, frame)
	}
	if !repair {
		// Forward it as any balancer would: the client will reset.
		if err := f.x.BackendToClient(p); err != nil || !p.DecTTL() {
			return
		}
		p.SetTupleAny(f.vip, f.vport, f.client, f.cport)
		w.transmit(f.clientNIC, f.clientHop, outFrame(frame, p))
		return
	}
	rst := w.sendTCP(f.be.nic, f.be.hop, f.snat, f.baddr, f.sport, f.bport, ack, 0, nat.TCPFlagRST)
	if f.capt != nil {
		w.captureFrame(f, rst)
	}
	// The SYN is re-sent from a copy: f.syn may change (a client
	// retransmit) before the batch is flushed.
	var syn []byte
	if len(f.syn) <= arenaSlotLen {
		syn = append(w.scratch()[:0], f.syn...)
	} else {
		syn = append([]byte(nil), f.syn...)
		w.keep(syn)
	}
	w.transmit(f.be.nic, f.be.hop, syn)
	if f.capt != nil {
		w.captureFrame(f, syn)
	}
	f.be.repairs.Inc()
}

// flowCapture collects the frames of one collision for a pcap file.
type flowCapture struct {
	name      string
	frames    [][]byte
	times     []time.Time
	remaining int  // frames still to record after the collision
	written   bool // handed to the writer: no more frames
}

func (c *flowCapture) add(frame []byte) {
	fr := append([]byte(nil), frame...)
	// Complete an offloaded checksum so that Wireshark shows it valid.
	var vh nat.VirtioNetHdr
	if vh.Decode(fr) == nil && vh.Flags&nat.VirtioNetHdrFNeedsCsum != 0 &&
		int(vh.CsumStart)+int(vh.CsumOffset)+2 <= len(fr)-nat.VirtioNetHdrLen {
		nat.CompletePartial(fr[nat.VirtioNetHdrLen:], int(vh.CsumStart), int(vh.CsumOffset))
	}
	c.frames = append(c.frames, fr[nat.VirtioNetHdrLen:])
	c.times = append(c.times, time.Now())
}

// captureFrame records frame (virtio header + Ethernet) for f's
// collision capture and writes the file once enough was recorded.
func (w *worker) captureFrame(f *flow, frame []byte) {
	c := f.capt
	if c == nil || c.remaining <= 0 || c.written {
		return
	}
	c.add(frame)
	c.remaining--
	if c.remaining == 0 {
		w.writeCapture(c)
	}
}

// writeCapture writes c to pcap_dir in the background, once; the worker
// adds nothing to c afterwards.
func (w *worker) writeCapture(c *flowCapture) {
	if c.written {
		return
	}
	c.written = true
	dir, max, log := w.sh.pcapDir, w.sh.pcapMax, w.sh.log
	go func() {
		if err := writePcap(dir, c, max); err != nil {
			log.Error("collision pcap", "err", err)
			return
		}
		log.Info("collision pcap written", "file", filepath.Join(dir, c.name+".pcap"))
	}()
}

func writePcap(dir string, c *flowCapture, max int) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	path := filepath.Join(dir, c.name+".pcap")
	tmp := path + ".tmp"
	fh, err := os.Create(tmp)
	if err != nil {
		return err
	}
	bw := bufio.NewWriter(fh)
	pw := pcapgo.NewWriterNanos(bw)
	if err := pw.WriteFileHeader(65536, layers.LinkTypeEthernet); err != nil {
		fh.Close()
		return err
	}
	for i, fr := range c.frames {
		ci := gopacket.CaptureInfo{Timestamp: c.times[i], CaptureLength: len(fr), Length: len(fr)}
		if err := pw.WritePacket(ci, fr); err != nil {
			fh.Close()
			return err
		}
	}
	if err := bw.Flush(); err != nil {
		fh.Close()
		return err
	}
	if err := fh.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	return rotatePcaps(dir, max)
}

// rotatePcaps keeps the newest max collision files (names sort by time).
func rotatePcaps(dir string, max int) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	var names []string
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), "collision-") && strings.HasSuffix(e.Name(), ".pcap") {
			names = append(names, e.Name())
		}
	}
	sort.Strings(names)
	for len(names) > max {
		os.Remove(filepath.Join(dir, names[0]))
		names = names[1:]
	}
	return nil
}
