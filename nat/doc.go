// Package nat holds the pure packet logic of tslb: typed views over
// Ethernet, ARP, IPv4, IPv6, TCP, ICMP and ICMPv6 headers, an
// allocation-free decoder for both IP families (IPv6 extension headers
// included), RFC 1071/1624 checksum helpers, checksum-preserving rewrites
// for SNAT, TCP option parsing and rewriting, ICMP and ICMPv6 error
// translation, IPv6 neighbour discovery (RFC 4861) views and builders,
// the virtio-net header used with PACKET_VNET_HDR, a middlebox TCP state
// tracker and a SNAT port pool.
//
// Nothing here opens sockets, starts goroutines or reads a clock: time and
// all other context are passed in by the caller (package lb).
//
// # Views and decoding
//
// The header types (Ethernet, ARP, IPv4, IPv6, TCP, ICMP, ICMPv6) are byte
// slices with getters and setters in the style of gVisor's
// pkg/tcpip/header. They do no bounds checking of their own:
// (*Packet).Decode validates a frame once (lengths, IHL, total length,
// IPv6 payload length and extension headers, TCP data offset) and the
// views are only used on the ranges it has checked. Decode returns
// package-level sentinel errors, so a drop never allocates; Reason maps
// them to stable metric labels.
//
// # Two families
//
// A Packet holds IPv4 addresses in Src/Dst and IPv6 addresses in
// Src6/Dst6 (see Packet). Everything from the TCP header on is shared;
// the functions that touch the IP header come in pairs (SetTuple and
// SetTuple6, EchoReply and EchoReply6, ParseICMPError and
// ParseICMPv6Error, BuildTCP and BuildTCP6) or dispatch on the EtherType
// in one place (DecTTL, TTL, and the IP length field when the
// translation grows TCP options). The IPv4 code paths are the ones that
// existed before IPv6 and cost the same.
//
// # Checksums and the partial-checksum rule
//
// Every rewrite method on *Packet (SetSrc, SetDst, SetSrc6, SetDst6,
// SetTuple, SetTuple6, SetSrcPort, SetDstPort, SetSeq, SetAck, DecTTL,
// SetTimestamps, SetSACKBlock, SetMSS, StripTimestamps) keeps the IPv4
// header checksum and the L4 checksum correct with an incremental update
// (RFC 1624 eqn. 3). IPv6 has no header checksum; its L4 checksums (TCP,
// UDP, and ICMPv6 unlike ICMPv4) cover the RFC 8200 §8.1 pseudo header.
//
// When Packet.PartialCsum is set, the sender offloaded the L4 checksum
// (Linux CHECKSUM_PARTIAL, virtio VIRTIO_NET_HDR_F_NEEDS_CSUM): the TCP
// checksum field then holds only the folded, non-complemented sum of the
// pseudo header, and whoever transmits the frame sums the segment later.
// In that mode only changes to pseudo-header fields (addresses, length)
// touch the field, and the update is not complemented; changes to ports,
// sequence numbers or options leave it alone. In full mode every change
// updates it. CompletePartial finishes such a checksum in software.
//
// # No allocation
//
// Decode, the rewrites, option parsing and writing, the tracker and the
// port pool never allocate; the tests assert this with testing.AllocsPerRun
// and the benchmarks report allocations.
package nat
