package nat

import "encoding/binary"

// VirtioNetHdrLen is the length of struct virtio_net_hdr (without the
// num_buffers field of the mergeable-buffers variant), which AF_PACKET
// prepends to every frame when PACKET_VNET_HDR is enabled.
const VirtioNetHdrLen = 10

// virtio_net_hdr flags.
const (
	// VirtioNetHdrFNeedsCsum (VIRTIO_NET_HDR_F_NEEDS_CSUM) means the L4
	// checksum is partial: complete it from CsumStart/CsumOffset.
	VirtioNetHdrFNeedsCsum = 1
	// VirtioNetHdrFDataValid (VIRTIO_NET_HDR_F_DATA_VALID) means the
	// checksum has been validated.
	VirtioNetHdrFDataValid = 2
)

// virtio_net_hdr GSO types.
const (
	GSONone  = 0    // GSONone means no segmentation offload.
	GSOTCPv4 = 1    // GSOTCPv4 is TSO for IPv4.
	GSOUDP   = 3    // GSOUDP is UFO.
	GSOTCPv6 = 4    // GSOTCPv6 is TSO for IPv6.
	GSOECN   = 0x80 // GSOECN is the ECN bit ORed into the GSO type.
)

// VirtioNetHdr is struct virtio_net_hdr. On the wire its 16-bit fields are
// in the host's byte order; with AF_PACKET (legacy virtio, no
// VIRTIO_F_VERSION_1) that is little-endian on the hosts tslb supports
// (x86-64, arm64), so Decode and Encode use little-endian.
type VirtioNetHdr struct {
	// Flags holds VirtioNetHdrF* bits; GSOType a GSO* value.
	Flags, GSOType uint8
	// HdrLen is the length of the headers to replicate per segment; GSOSize
	// the segment payload size; CsumStart and CsumOffset locate the
	// checksum to complete (from the start of the frame, and from
	// CsumStart).
	HdrLen, GSOSize, CsumStart, CsumOffset uint16
}

// Decode reads h from the first VirtioNetHdrLen bytes of b. It returns
// ErrShortFrame if b is shorter.
func (h *VirtioNetHdr) Decode(b []byte) error {
	if len(b) < VirtioNetHdrLen {
		return ErrShortFrame
	}
	h.Flags = b[0]
	h.GSOType = b[1]
	h.HdrLen = binary.LittleEndian.Uint16(b[2:])
	h.GSOSize = binary.LittleEndian.Uint16(b[4:])
	h.CsumStart = binary.LittleEndian.Uint16(b[6:])
	h.CsumOffset = binary.LittleEndian.Uint16(b[8:])
	return nil
}

// Encode writes h into the first VirtioNetHdrLen bytes of b; it writes
// nothing if b is shorter.
func (h *VirtioNetHdr) Encode(b []byte) {
	if len(b) < VirtioNetHdrLen {
		return
	}
	b[0] = h.Flags
	b[1] = h.GSOType
	binary.LittleEndian.PutUint16(b[2:], h.HdrLen)
	binary.LittleEndian.PutUint16(b[4:], h.GSOSize)
	binary.LittleEndian.PutUint16(b[6:], h.CsumStart)
	binary.LittleEndian.PutUint16(b[8:], h.CsumOffset)
}
