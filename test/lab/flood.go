package lab

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"time"
)

// FloodConfig describes a bounded spoofed-SYN flood. Every flood is
// bounded twice: by Duration and by Count (Rate × Duration when Count is
// 0).
type FloodConfig struct {
	// Interface is the interface of the namespace the frames leave on
	// ("" means the namespace's own, eth0).
	Interface string
	// Rate is the target in SYNs per second; 0 sends as fast as the
	// machine allows (then Count or Duration bounds the flood).
	Rate int
	// Duration bounds the flood's length (required, at most 5 minutes).
	Duration time.Duration
	// Count bounds the SYNs sent; 0 means Rate × Duration (required if
	// Rate is 0: at most 100 million).
	Count int
	// Sources is the prefix the spoofed source addresses are drawn from,
	// uniformly; its network and broadcast addresses and Exclude are never
	// used. It must lie inside the lab's 198.18.0.0/15.
	Sources netip.Prefix
	// Exclude lists addresses inside Sources that a host owns.
	Exclude []netip.Addr
	// Dst is the address and port the SYNs go to (inside 198.18.0.0/15).
	Dst netip.AddrPort
	// DstMAC is the destination MAC of every frame (the balancer's).
	DstMAC net.HardwareAddr
	// Seed makes the addresses, ports and sequence numbers reproducible
	// (0 means a random seed).
	Seed uint64
	// Record keeps every sequence number sent in FloodResult.Seqs, to tell
	// the flood's SYNs from real clients' in a capture.
	Record bool
}

// FloodResult is what SYNFlood sent.
type FloodResult struct {
	Sent    int           // SYNs the kernel took
	Elapsed time.Duration // from the first to the last send
	Calls   int           // sendmmsg calls
	// Seqs holds every sequence number sent (FloodConfig.Record).
	Seqs map[uint32]struct{}
}

// Rate is the achieved rate in SYNs per second.
func (r FloodResult) Rate() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Sent) / r.Elapsed.Seconds()
}

// labNet is the RFC 2544 range the lab keeps to.
var labNet = netip.MustParsePrefix("198.18.0.0/15")

// Limits of a flood.
const (
	maxFloodDuration = 5 * time.Minute
	maxFloodCount    = 100_000_000
)

// SynFrameLen is the length of a flood frame: Ethernet, IPv4 (20 bytes),
// TCP with one option (MSS 1460, 24 bytes).
const SynFrameLen = 14 + 20 + 24

// SYNFlood sends spoofed SYNs from n: raw frames (RawSender) from random
// source addresses of cfg.Sources, random source ports (1024-65535) and
// random ISNs, with a valid IPv4 header checksum and TCP checksum and one
// MSS option (as scanners send: no timestamps, so a capture tells them
// from Linux clients' SYNs), paced to cfg.Rate in batches of one
// sendmmsg(2). It returns when the count is sent, the duration is over or
// ctx ends.
func SYNFlood(ctx context.Context, n *NS, cfg FloodConfig) (FloodResult, error) {
	var res FloodResult
	if cfg.Duration <= 0 || cfg.Duration > maxFloodDuration {
		return res, fmt.Errorf("lab: flood duration %v out of (0, %v]", cfg.Duration, maxFloodDuration)
	}
	if cfg.Rate < 0 || cfg.Count < 0 {
		return res, errors.New("lab: flood rate and count must not be negative")
	}
	total := cfg.Count
	if total == 0 {
		total = int(float64(cfg.Rate) * cfg.Duration.Seconds())
	}
	if total <= 0 || total > maxFloodCount {
		return res, fmt.Errorf("lab: flood of %d SYNs out of 1..%d (set Rate or Count)", total, maxFloodCount)
	}
	if cfg.Rate > 0 {
		total = min(total, int(float64(cfg.Rate)*cfg.Duration.Seconds())+1)
	}
	if !cfg.Sources.IsValid() || !cfg.Sources.Addr().Is4() || cfg.Sources.Bits() < labNet.Bits() ||
		!labNet.Contains(cfg.Sources.Addr()) || cfg.Sources.Bits() > 30 {
		return res, fmt.Errorf("lab: flood sources %v: want an IPv4 prefix of 4+ addresses inside %v", cfg.Sources, labNet)
	}
	if !cfg.Dst.Addr().Is4() || !labNet.Contains(cfg.Dst.Addr()) || cfg.Dst.Port() == 0 {
		return res, fmt.Errorf("lab: flood destination %v must be inside %v with a port", cfg.Dst, labNet)
	}
	if len(cfg.DstMAC) != 6 {
		return res, errors.New("lab: flood needs the destination MAC")
	}
	ifname := cfg.Interface
	if ifname == "" {
		ifname = n.If
	}
	s, err := n.RawSender(ifname)
	if err != nil {
		return res, err
	}
	defer s.Close()
	g := newSYNGen(cfg, s.MAC())
	if cfg.Record {
		res.Seqs = make(map[uint32]struct{}, total)
	}
	arena := make([]byte, maxBatch*SynFrameLen)
	frames := make([][]byte, 0, maxBatch)
	start := time.Now()
	deadline := start.Add(cfg.Duration)
	var last time.Time
	for res.Sent < total {
		now := time.Now()
		if ctx.Err() != nil || now.After(deadline) {
			break
		}
		k := min(total-res.Sent, maxBatch)
		if cfg.Rate > 0 {
			due := int(now.Sub(start).Seconds()*float64(cfg.Rate)) + 1
			if due <= res.Sent {
				// Sleep until the next frame is due (timer granularity
				// makes the batches bigger, not the rate higher).
				next := start.Add(time.Duration(float64(res.Sent) / float64(cfg.Rate) * float64(time.Second)))
				time.Sleep(max(time.Until(next), 50*time.Microsecond))
				continue
			}
			k = min(k, due-res.Sent)
		}
		frames = frames[:0]
		for i := 0; i < k; i++ {
			f := arena[i*SynFrameLen : (i+1)*SynFrameLen]
			seq := g.fill(f)
			if res.Seqs != nil {
				res.Seqs[seq] = struct{}{}
			}
			frames = append(frames, f)
		}
		sent, err := s.SendBatch(frames)
		res.Sent += sent
		res.Calls++
		last = time.Now()
		if err != nil {
			res.Elapsed = last.Sub(start)
			return res, err
		}
	}
	if !last.IsZero() {
		res.Elapsed = last.Sub(start)
	}
	return res, nil
}

// synGen fills flood frames.
type synGen struct {
	rng      *rand.Rand
	tmpl     [SynFrameLen]byte
	base     uint32 // the prefix's first address
	hosts    uint32 // addresses in the prefix
	exclude  map[uint32]bool
	dst      uint32
	dstPort  uint16
	ipID     uint16
	pseudoHi uint32 // partial pseudo-header sum: dst, protocol, TCP length
}

func newSYNGen(cfg FloodConfig, srcMAC net.HardwareAddr) *synGen {
	seed := cfg.Seed
	if seed == 0 {
		seed = rand.Uint64()
	}
	g := &synGen{rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)), exclude: map[uint32]bool{}}
	p := cfg.Sources.Masked()
	b := p.Addr().As4()
	g.base = binary.BigEndian.Uint32(b[:])
	g.hosts = 1 << (32 - p.Bits())
	for _, a := range cfg.Exclude {
		if a.Is4() {
			x := a.As4()
			g.exclude[binary.BigEndian.Uint32(x[:])] = true
		}
	}
	d := cfg.Dst.Addr().As4()
	g.dst = binary.BigEndian.Uint32(d[:])
	g.dstPort = cfg.Dst.Port()
	t := g.tmpl[:]
	copy(t[0:6], cfg.DstMAC)
	copy(t[6:12], srcMAC)
	binary.BigEndian.PutUint16(t[12:], 0x0800)
	ip := t[14:34]
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], 20+24)
	binary.BigEndian.PutUint16(ip[6:], 0x4000) // DF
	ip[8] = 64
	ip[9] = 6
	copy(ip[16:20], d[:])
	tcp := t[34:]
	binary.BigEndian.PutUint16(tcp[2:], g.dstPort)
	tcp[12] = 6 << 4 // data offset: 24 bytes
	tcp[13] = 0x02   // SYN
	binary.BigEndian.PutUint16(tcp[14:], 64240)
	copy(tcp[20:], []byte{2, 4, 0x05, 0xb4}) // MSS 1460
	g.pseudoHi = g.dst>>16 + g.dst&0xffff + 6 + 24
	return g
}

// src draws a spoofed source address.
func (g *synGen) src() uint32 {
	for {
		a := g.base + 1 + g.rng.Uint32N(g.hosts-2) // neither network nor broadcast
		if !g.exclude[a] {
			return a
		}
	}
}

// fill writes one SYN into f (SynFrameLen bytes) and returns its ISN.
func (g *synGen) fill(f []byte) uint32 {
	copy(f, g.tmpl[:])
	ip, tcp := f[14:34], f[34:SynFrameLen]
	src := g.src()
	g.ipID++
	binary.BigEndian.PutUint16(ip[4:], g.ipID)
	binary.BigEndian.PutUint32(ip[12:], src)
	binary.BigEndian.PutUint16(ip[10:], Checksum(ip, 0))
	sport := uint16(1024 + g.rng.Uint32N(65536-1024))
	seq := g.rng.Uint32()
	binary.BigEndian.PutUint16(tcp[0:], sport)
	binary.BigEndian.PutUint32(tcp[4:], seq)
	binary.BigEndian.PutUint16(tcp[16:], Checksum(tcp, g.pseudoHi+src>>16+src&0xffff))
	return seq
}

// Checksum is the Internet checksum (RFC 1071) of b with initial sum
// (e.g. a pseudo-header's), ready to store.
func Checksum(b []byte, sum uint32) uint16 {
	s := uint64(sum)
	for len(b) >= 2 {
		s += uint64(b[0])<<8 | uint64(b[1])
		b = b[2:]
	}
	if len(b) == 1 {
		s += uint64(b[0]) << 8
	}
	for s>>16 != 0 {
		s = s&0xffff + s>>16
	}
	return ^uint16(s)
}
