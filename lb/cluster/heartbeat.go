package cluster

import (
	"encoding/binary"
	"errors"
)

// EtherType is the EtherType of heartbeat frames: 0x88B5, "IEEE Std 802
// - Local Experimental Ethertype 1", free for use on a local segment.
const EtherType = 0x88B5

// Heartbeat frame layout: an Ethernet header (destination broadcast,
// source the sender's front MAC, EtherType 0x88B5) and this payload, all
// integers big-endian:
//
//	offset size field
//	0      4    magic "tsCL"
//	4      1    version (1)
//	5      1    flags: bit 0 draining, bit 1 leaving; others 0
//	6      2    member ID (1..65535)
//	8      4    cluster ID (ClusterID of cluster.name)
//	12     8    generation (nonzero; larger after a restart)
//	20     8    sequence number
//	28     8    hash of the sender's current view (View.Hash)
//	36     2    members in the sender's current view
//	38     2    reserved, 0
//
// and zeros up to the Ethernet minimum of 46 payload bytes. A receiver
// accepts longer frames (padding) and ignores the bytes past offset 40; a
// new layout gets a new version number.
const (
	ethHeaderLen     = 14
	hbPayloadLen     = 40
	hbMinPayload     = 46
	HeartbeatLen     = ethHeaderLen + hbMinPayload // the frame AppendHeartbeat writes: 60 bytes
	HeartbeatVersion = 1

	flagDraining = 1 << 0
	flagLeaving  = 1 << 1
	knownFlags   = flagDraining | flagLeaving
)

var hbMagic = [4]byte{'t', 's', 'C', 'L'}

// MAC is an Ethernet address.
type MAC [6]byte

// Broadcast is the destination of every heartbeat.
var Broadcast = MAC{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}

// Heartbeat is one member's announcement that it is alive.
type Heartbeat struct {
	// Src is the sender's front MAC (the Ethernet source address).
	Src MAC
	// Cluster is the cluster's ID (ClusterID of its name); a frame of
	// another cluster on the same segment is ignored.
	Cluster uint32
	// From is the sender's member ID.
	From MemberID
	// Generation identifies one run of the sender: a member that restarts
	// sends a larger one (Members uses the start time in nanoseconds).
	Generation uint64
	// Seq counts the sender's heartbeats within a generation.
	Seq uint64
	// Draining says the sender takes no new flows: it has left the
	// current view and stays in the previous one.
	Draining bool
	// Leaving says the sender is stopping: receivers drop it at once
	// instead of waiting for it to fall silent.
	Leaving bool
	// ViewHash is View.Hash of the sender's current view.
	ViewHash uint64
	// ViewLen is the number of members in the sender's current view.
	ViewLen uint16
}

// Errors of ParseHeartbeat. They are values, so returning one allocates
// nothing.
var (
	ErrShort      = errors.New("cluster: heartbeat: short frame")
	ErrEtherType  = errors.New("cluster: heartbeat: not EtherType 0x88B5")
	ErrMagic      = errors.New("cluster: heartbeat: bad magic")
	ErrVersion    = errors.New("cluster: heartbeat: unknown version")
	ErrFlags      = errors.New("cluster: heartbeat: unknown flags")
	ErrMemberID   = errors.New("cluster: heartbeat: member ID 0")
	ErrGeneration = errors.New("cluster: heartbeat: generation 0")
	ErrReserved   = errors.New("cluster: heartbeat: reserved field not 0")
	ErrSource     = errors.New("cluster: heartbeat: source MAC is multicast or zero")
)

// ClusterID is the 32-bit ID of a cluster name carried in every heartbeat:
// FNV-1a 32 of the name, never 0.
func ClusterID(name string) uint32 {
	h := uint32(2166136261)
	for i := 0; i < len(name); i++ {
		h ^= uint32(name[i])
		h *= 16777619
	}
	if h == 0 {
		h = 1
	}
	return h
}

// AppendHeartbeat appends hb as a HeartbeatLen-byte Ethernet frame to buf
// and returns the extended buffer; with cap(buf)-len(buf) >= HeartbeatLen
// it allocates nothing.
func AppendHeartbeat(buf []byte, hb Heartbeat) []byte {
	start := len(buf)
	buf = append(buf, make([]byte, HeartbeatLen)...)
	f := buf[start:]
	copy(f[0:6], Broadcast[:])
	copy(f[6:12], hb.Src[:])
	binary.BigEndian.PutUint16(f[12:14], EtherType)
	p := f[ethHeaderLen:]
	copy(p[0:4], hbMagic[:])
	p[4] = HeartbeatVersion
	var flags byte
	if hb.Draining {
		flags |= flagDraining
	}
	if hb.Leaving {
		flags |= flagLeaving
	}
	p[5] = flags
	binary.BigEndian.PutUint16(p[6:8], uint16(hb.From))
	binary.BigEndian.PutUint32(p[8:12], hb.Cluster)
	binary.BigEndian.PutUint64(p[12:20], hb.Generation)
	binary.BigEndian.PutUint64(p[20:28], hb.Seq)
	binary.BigEndian.PutUint64(p[28:36], hb.ViewHash)
	binary.BigEndian.PutUint16(p[36:38], hb.ViewLen)
	return buf
}

// ParseHeartbeat decodes a heartbeat frame (starting at the Ethernet
// header). It checks the length, EtherType, magic, version, flags,
// reserved bits, member ID, generation and source MAC, and returns one of
// the Err values otherwise. It allocates nothing. It does not know the
// cluster's configuration: Members.Observe checks the cluster ID, the
// member and its MAC.
func ParseHeartbeat(frame []byte) (Heartbeat, error) {
	var hb Heartbeat
	if len(frame) < ethHeaderLen+hbPayloadLen {
		return hb, ErrShort
	}
	if binary.BigEndian.Uint16(frame[12:14]) != EtherType {
		return hb, ErrEtherType
	}
	copy(hb.Src[:], frame[6:12])
	if hb.Src[0]&1 != 0 || hb.Src == (MAC{}) {
		return Heartbeat{}, ErrSource
	}
	p := frame[ethHeaderLen : ethHeaderLen+hbPayloadLen]
	if [4]byte(p[0:4]) != hbMagic {
		return Heartbeat{}, ErrMagic
	}
	if p[4] != HeartbeatVersion {
		return Heartbeat{}, ErrVersion
	}
	if p[5]&^knownFlags != 0 {
		return Heartbeat{}, ErrFlags
	}
	if binary.BigEndian.Uint16(p[38:40]) != 0 {
		return Heartbeat{}, ErrReserved
	}
	hb.Draining = p[5]&flagDraining != 0
	hb.Leaving = p[5]&flagLeaving != 0
	hb.From = MemberID(binary.BigEndian.Uint16(p[6:8]))
	if hb.From == 0 {
		return Heartbeat{}, ErrMemberID
	}
	hb.Cluster = binary.BigEndian.Uint32(p[8:12])
	hb.Generation = binary.BigEndian.Uint64(p[12:20])
	if hb.Generation == 0 {
		return Heartbeat{}, ErrGeneration
	}
	hb.Seq = binary.BigEndian.Uint64(p[20:28])
	hb.ViewHash = binary.BigEndian.Uint64(p[28:36])
	hb.ViewLen = binary.BigEndian.Uint16(p[36:38])
	return hb, nil
}
