package lb

import "tslb/nat"

// Validation at the edge. A client SYN that would create a flow takes a
// SNAT tuple and a flow-table entry (and, until the backend answers, a
// half-open slot): before it gets any, it must be a SYN a real client on
// that link could send. Each refusal is a drop with its own reason.

// admitSYN checks the SYN in w.pkt (no flow yet) and returns the reason
// to drop it, or -1 to admit it.
func (w *worker) admitSYN() dropReason {
	p := &w.pkt
	if p.SrcPort == 0 || p.DstPort == 0 {
		return dropPortZero
	}
	if src := w.s.owned[p.Src]; src != nil {
		return dropSourceOwned // a VIP, SNAT or the kernel's own address
	}
	if martian(p.Src) {
		return dropSourceMartian
	}
	// Strict reverse-path check: the source must be reachable through the
	// link the SYN arrived on (a backend or SNAT subnet does not arrive on
	// the client link).
	if l, _ := w.sh.route(p.Src); l != w.in {
		return dropSourceWrongLink
	}
	if err := p.CheckIPv4Options(); err != nil {
		w.c.dropErr(err)
		return dropCounted
	}
	if !p.IPv4ChecksumValid() {
		w.c.dropErr(nat.ErrBadIPChecksum)
		return dropCounted
	}
	// DATA_VALID: the kernel (or the NIC) verified the TCP checksum;
	// NEEDS_CSUM: a local sender offloaded it, so only the pseudo-header
	// sum is there (TCPChecksumValid checks that).
	if w.vh.Flags&nat.VirtioNetHdrFDataValid == 0 && !p.TCPChecksumValid() {
		w.c.dropErr(nat.ErrBadTCPChecksum)
		return dropCounted
	}
	return -1
}

// badFlags reports a segment whose flags no TCP sends: SYN with FIN or RST
// (RFC 9293 §3.10.7; scanners and floods use them).
func badFlags(flags uint8) bool {
	return flags&nat.TCPFlagSYN != 0 && flags&(nat.TCPFlagFIN|nat.TCPFlagRST) != 0
}

// martian reports source addresses no client has (RFC 1122 §3.2.1.3,
// RFC 5735): this network (0/8), loopback (127/8), multicast (224/4),
// reserved and limited broadcast (240/4).
func martian(a nat.Addr4) bool {
	return a[0] == 0 || a[0] == 127 || a[0] >= 224
}
