package nat

import "errors"

// Validation errors of VerifySYN; like the decode errors they are
// package-level values, and Reason maps each to a metric label.
var (
	// ErrBadIPChecksum means the IPv4 header checksum does not verify.
	ErrBadIPChecksum = errors.New("nat: bad IPv4 header checksum")
	// ErrBadTCPChecksum means the TCP checksum does not verify.
	ErrBadTCPChecksum = errors.New("nat: bad TCP checksum")
	// ErrBadIPOptions means the IPv4 option list is malformed (RFC 791
	// §3.1: an option's length byte below 2 or past the header).
	ErrBadIPOptions = errors.New("nat: bad IPv4 options")
	// ErrSourceRoute means the datagram carries a loose or strict source
	// route option (RFC 7126 §4.3, §4.4: to be dropped by default).
	ErrSourceRoute = errors.New("nat: IPv4 source route option")
)

// IPv4 option types (RFC 791 §3.1).
const (
	ipOptEnd  = 0
	ipOptNOP  = 1
	ipOptLSRR = 0x83
	ipOptSSRR = 0x89
)

// IPv4ChecksumValid reports whether the IPv4 header checksum of the
// decoded packet verifies (RFC 791 §3.1: the complemented sum over the
// header, checksum included, is 0).
func (p *Packet) IPv4ChecksumValid() bool {
	ip := p.IPv4()
	if ip == nil {
		return false
	}
	return Fold(Checksum(ip, 0)) == 0xffff
}

// TCPChecksumValid reports whether the TCP checksum of the decoded
// segment verifies over the pseudo header and the whole segment. With
// PartialCsum the field holds only the pseudo-header sum (the sender
// offloaded the checksum, so nothing else can be checked): it verifies
// that instead. The whole segment is summed: call it only for the few
// frames that need it (a SYN that would create a flow), not per packet.
func (p *Packet) TCPChecksumValid() bool {
	t := p.TCP()
	if t == nil {
		return false
	}
	ps := PseudoHeaderSum(p.Src, p.Dst, ProtoTCP, uint16(p.L4Len))
	if p.PartialCsum {
		return t.Checksum() == Fold(ps)
	}
	return Fold(Checksum(t, ps)) == 0xffff
}

// CheckIPv4Options walks the IPv4 options of the decoded packet and
// returns ErrBadIPOptions for a malformed list (a length below 2, an
// option running past the header) and ErrSourceRoute for LSRR and SSRR;
// nil otherwise (no options included).
func (p *Packet) CheckIPv4Options() error {
	ip := p.IPv4()
	if ip == nil {
		return ErrNotIPv4
	}
	opts := ip[IPv4MinimumSize:]
	for i := 0; i < len(opts); {
		switch t := opts[i]; t {
		case ipOptEnd:
			return nil
		case ipOptNOP:
			i++
			continue
		case ipOptLSRR, ipOptSSRR:
			return ErrSourceRoute
		}
		if i+1 >= len(opts) {
			return ErrBadIPOptions
		}
		l := int(opts[i+1])
		if l < 2 || i+l > len(opts) {
			return ErrBadIPOptions
		}
		i += l
	}
	return nil
}
