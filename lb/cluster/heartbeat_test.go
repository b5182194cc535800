package cluster

import (
	"encoding/hex"
	"errors"
	"strings"
	"testing"
)

var testHB = Heartbeat{
	Src: MAC{0x02, 0x00, 0x5e, 0x10, 0x00, 0x02}, Cluster: 0x01020304, From: 0x0102,
	Generation: 0x1122334455667788, Seq: 42, Draining: true, ViewHash: 0xa1a2a3a4a5a6a7a8, ViewLen: 3,
}

// golden is testHB as a frame, field by field.
var golden = strings.Join([]string{
	"ffffffffffff", // destination: broadcast
	"02005e100002", // source: the sender's front MAC
	"88b5",         // EtherType
	"7473434c",     // magic "tsCL"
	"01",           // version 1
	"01",           // flags: draining
	"0102",         // member ID
	"01020304",     // cluster ID
	"1122334455667788",
	"000000000000002a", // sequence 42
	"a1a2a3a4a5a6a7a8", // view hash
	"0003",             // view length
	"0000",             // reserved
	"000000000000",     // padding to 46 payload bytes
}, "")

func TestHeartbeatGolden(t *testing.T) {
	want, _ := hex.DecodeString(golden)
	got := AppendHeartbeat(nil, testHB)
	if hex.EncodeToString(got) != golden {
		t.Fatalf("AppendHeartbeat:\n got %x\nwant %x", got, want)
	}
	if len(got) != HeartbeatLen || HeartbeatLen != 60 {
		t.Errorf("length %d, HeartbeatLen %d", len(got), HeartbeatLen)
	}
	hb, err := ParseHeartbeat(want)
	if err != nil || hb != testHB {
		t.Fatalf("ParseHeartbeat = %+v, %v", hb, err)
	}
	// Appends after what is there.
	pre := []byte{1, 2, 3}
	if out := AppendHeartbeat(pre, testHB); len(out) != 3+HeartbeatLen || out[0] != 1 || hex.EncodeToString(out[3:]) != golden {
		t.Errorf("append after a prefix: %x", out)
	}
	l := testHB
	l.Draining, l.Leaving = false, true
	if hb, err := ParseHeartbeat(AppendHeartbeat(nil, l)); err != nil || !hb.Leaving || hb.Draining {
		t.Errorf("leaving: %+v %v", hb, err)
	}
}

func TestParseHeartbeatHostile(t *testing.T) {
	good, _ := hex.DecodeString(golden)
	edit := func(off int, b ...byte) []byte {
		f := append([]byte(nil), good...)
		copy(f[off:], b)
		return f
	}
	for _, tt := range []struct {
		name  string
		frame []byte
		want  error
	}{
		{"empty", nil, ErrShort},
		{"header only", good[:14], ErrShort},
		{"one byte short", good[:14+39], ErrShort},
		{"ipv4", edit(12, 0x08, 0x00), ErrEtherType},
		{"vlan tagged", edit(12, 0x81, 0x00), ErrEtherType},
		{"multicast source", edit(6, 0x01), ErrSource},
		{"zero source", edit(6, 0, 0, 0, 0, 0, 0), ErrSource},
		{"magic", edit(14, 'x'), ErrMagic},
		{"version 0", edit(18, 0), ErrVersion},
		{"version 2", edit(18, 2), ErrVersion},
		{"unknown flag", edit(19, 0x04), ErrFlags},
		{"member 0", edit(20, 0, 0), ErrMemberID},
		{"generation 0", edit(26, 0, 0, 0, 0, 0, 0, 0, 0), ErrGeneration},
		{"reserved", edit(52, 0, 1), ErrReserved},
	} {
		hb, err := ParseHeartbeat(tt.frame)
		if !errors.Is(err, tt.want) {
			t.Errorf("%s: err %v, want %v", tt.name, err, tt.want)
		}
		if err != nil && hb != (Heartbeat{}) {
			t.Errorf("%s: a rejected frame returned %+v", tt.name, hb)
		}
	}
	// No padding (40 payload bytes) and extra trailing bytes are fine.
	if _, err := ParseHeartbeat(good[:14+40]); err != nil {
		t.Errorf("unpadded: %v", err)
	}
	if _, err := ParseHeartbeat(append(append([]byte(nil), good...), 0xde, 0xad)); err != nil {
		t.Errorf("trailing bytes: %v", err)
	}
}

func TestHeartbeatAllocs(t *testing.T) {
	frame := AppendHeartbeat(nil, testHB)
	buf := make([]byte, 0, HeartbeatLen)
	if n := testing.AllocsPerRun(1000, func() {
		if _, err := ParseHeartbeat(frame); err != nil {
			t.Fatal(err)
		}
		if _, err := ParseHeartbeat(frame[:20]); err == nil {
			t.Fatal("short accepted")
		}
		buf = AppendHeartbeat(buf[:0], testHB)
	}); n != 0 {
		t.Errorf("%v allocs", n)
	}
}

func TestClusterID(t *testing.T) {
	if ClusterID("a") == ClusterID("b") || ClusterID("prod") != ClusterID("prod") || ClusterID("") == 0 {
		t.Errorf("ClusterID")
	}
}

// FuzzParseHeartbeat: any input either fails with one of the Err values
// and a zero Heartbeat, or parses to a heartbeat that encodes back to the
// same first 54 bytes (header and the defined payload).
func FuzzParseHeartbeat(f *testing.F) {
	good, _ := hex.DecodeString(golden)
	f.Add(good)
	f.Add(good[:54])
	f.Add(good[:20])
	f.Add([]byte{})
	f.Add(AppendHeartbeat(nil, Heartbeat{Src: MAC{2}, From: 1, Generation: 1, Leaving: true}))
	errs := []error{ErrShort, ErrEtherType, ErrMagic, ErrVersion, ErrFlags, ErrMemberID, ErrGeneration, ErrReserved, ErrSource}
	f.Fuzz(func(t *testing.T, frame []byte) {
		hb, err := ParseHeartbeat(frame)
		if err != nil {
			known := false
			for _, e := range errs {
				known = known || err == e
			}
			if !known || hb != (Heartbeat{}) {
				t.Fatalf("err %v, hb %+v", err, hb)
			}
			return
		}
		out := AppendHeartbeat(nil, hb)
		// The destination is not checked on receive; the rest must match.
		if string(out[6:54]) != string(frame[6:54]) {
			t.Fatalf("round trip differs:\n in %x\nout %x", frame[:54], out[:54])
		}
	})
}

func BenchmarkParseHeartbeat(b *testing.B) {
	frame := AppendHeartbeat(nil, testHB)
	b.ReportAllocs()
	for range b.N {
		if _, err := ParseHeartbeat(frame); err != nil {
			b.Fatal(err)
		}
	}
}
