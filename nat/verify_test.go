package nat_test

import (
	"encoding/binary"
	"slices"
	"testing"

	"tslb/nat"
)

// withIPOptions returns goldenSYN with opts (a multiple of 4 bytes)
// inserted as IPv4 options, lengths and header checksum fixed.
func withIPOptions(opts []byte) []byte {
	f := slices.Concat(goldenSYN[:14+20], opts, goldenSYN[14+20:])
	ip := f[14:]
	ip[0] = 0x40 | byte((20+len(opts))/4)
	binary.BigEndian.PutUint16(ip[2:], uint16(len(f)-14))
	binary.BigEndian.PutUint16(ip[10:], 0)
	binary.BigEndian.PutUint16(ip[10:], nat.IPv4(ip).ComputeChecksum())
	return f
}

func TestVerify(t *testing.T) {
	for _, tt := range []struct {
		name        string
		frame       []byte
		partial     bool
		ipOK, tcpOK bool
		optErr      error
	}{
		{"golden", goldenSYN, false, true, true, nil},
		{"ip checksum off by one", edit(goldenSYN, func(b []byte) { b[25]++ }), false, false, true, nil},
		{"ttl changed, checksum not", edit(goldenSYN, func(b []byte) { b[22]-- }), false, false, true, nil},
		{"tcp seq changed, checksum not", edit(goldenSYN, func(b []byte) { b[41]++ }), false, true, false, nil},
		{"tcp checksum zero", edit(goldenSYN, func(b []byte) { b[50], b[51] = 0, 0 }), false, true, false, nil},
		{"partial: pseudo-header sum", edit(goldenSYN, func(b []byte) {
			ps := nat.PseudoHeaderSum(nat.Addr4{192, 0, 2, 10}, nat.Addr4{198, 51, 100, 1}, nat.ProtoTCP, 24)
			binary.BigEndian.PutUint16(b[50:], nat.Fold(ps))
		}), true, true, true, nil},
		{"partial: wrong pseudo-header sum", goldenSYN, true, true, false, nil},
		{"nop nop nop eol", withIPOptions([]byte{1, 1, 1, 0}), false, true, true, nil},
		{"router alert", withIPOptions([]byte{0x94, 4, 0, 0}), false, true, true, nil},
		{"zero-length option", withIPOptions([]byte{0x44, 0, 0, 0}), false, true, true, nat.ErrBadIPOptions},
		{"length 1", withIPOptions([]byte{0x44, 1, 0, 0}), false, true, true, nat.ErrBadIPOptions},
		{"option past the header", withIPOptions([]byte{1, 0x44, 8, 0}), false, true, true, nat.ErrBadIPOptions},
		{"type without length byte", withIPOptions([]byte{1, 1, 1, 0x44}), false, true, true, nat.ErrBadIPOptions},
		{"loose source route", withIPOptions([]byte{0x83, 3, 4, 0}), false, true, true, nat.ErrSourceRoute},
		{"strict source route", withIPOptions([]byte{1, 0x89, 3, 4}), false, true, true, nat.ErrSourceRoute},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var p nat.Packet
			p.PartialCsum = tt.partial
			if err := p.Decode(tt.frame); err != nil {
				t.Fatal(err)
			}
			if got := p.IPv4ChecksumValid(); got != tt.ipOK {
				t.Errorf("IPv4ChecksumValid = %v, want %v", got, tt.ipOK)
			}
			if got := p.TCPChecksumValid(); got != tt.tcpOK {
				t.Errorf("TCPChecksumValid = %v, want %v", got, tt.tcpOK)
			}
			if err := p.CheckIPv4Options(); err != tt.optErr {
				t.Errorf("CheckIPv4Options = %v, want %v", err, tt.optErr)
			}
		})
	}
	if n := testing.AllocsPerRun(100, func() {
		var p nat.Packet
		p.Decode(goldenSYN)
		_ = p.IPv4ChecksumValid() && p.TCPChecksumValid() && p.CheckIPv4Options() == nil
	}); n != 0 {
		t.Errorf("verification allocates %v", n)
	}
}

func FuzzVerify(f *testing.F) {
	f.Add(goldenSYN, false)
	f.Add(withIPOptions([]byte{0x44, 0, 0, 0}), true)
	f.Fuzz(func(t *testing.T, frame []byte, partial bool) {
		var p nat.Packet
		p.PartialCsum = partial
		if p.Decode(frame) != nil {
			return
		}
		// Never panics, whatever the header says.
		p.IPv4ChecksumValid()
		p.TCPChecksumValid()
		p.CheckIPv4Options()
	})
}
