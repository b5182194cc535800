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
	src := p.SrcAddr()
	if o := w.s.ownedAt(src); o != nil {
		return dropSourceOwned // a VIP, SNAT or the kernel's own address
	}
	if martian(src) {
		return dropSourceMartian
	}
	// Strict reverse-path check: the source must be reachable through the
	// link the SYN arrived on (a backend or SNAT subnet does not arrive on
	// the client link).
	if l, _ := w.sh.route(src); l != w.in {
		return dropSourceWrongLink
	}
	if !p.IsIPv6() {
		// IPv6 has no header checksum; its extension headers were walked
		// by Decode, which drops what tslb does not accept.
		if err := p.CheckIPv4Options(); err != nil {
			w.c.dropErr(err)
			return dropCounted
		}
		if !p.IPv4ChecksumValid() {
			w.c.dropErr(nat.ErrBadIPChecksum)
			return dropCounted
		}
	}
	// DATA_VALID: the kernel (or the NIC) verified the TCP checksum;
	// NEEDS_CSUM: a local sender offloaded it, so only the pseudo-header
	// sum is there (TCPChecksumValidAny checks that).
	if w.vh.Flags&nat.VirtioNetHdrFDataValid == 0 && !p.TCPChecksumValidAny() {
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

// martian reports source addresses no client has. IPv4 (RFC 1122
// §3.2.1.3, RFC 5735): this network (0/8), loopback (127/8), multicast
// (224/4), reserved and limited broadcast (240/4). IPv6 (RFC 4291): the
// unspecified and loopback addresses, multicast (ff00::/8), IPv4-mapped
// inside IPv6 (it arrived as IPv6: ::ffff:0:0/96 is not a wire source,
// RFC 4291 §2.5.5.2), and link-local (fe80::/10: not routed to a VIP).
func martian(a nat.Addr16) bool {
	if a.Is4() {
		b := a[12]
		return b == 0 || b == 127 || b >= 224
	}
	loopback := a == nat.Addr16{15: 1}
	return a.IsUnspecified() || loopback || a.IsMulticast() || linkLocal(a)
}
