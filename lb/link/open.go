package link

// Config configures Open. The zero value means: ModeRing, one queue.
type Config struct {
	// Mode selects ring or per-frame socket I/O ("" means ModeRing).
	Mode Mode
	// Queues is the number of queues (datapath workers); each is its own
	// socket in one PACKET_FANOUT group of the link (0 means 1: no
	// fanout).
	Queues int
	// Steering is the fanout program that picks the queue of each
	// received frame (ignored with one queue).
	Steering Steering
	// RingFrames is the number of slots of each queue's receive ring (0
	// means DefaultRingFrames).
	RingFrames int
	// SendBatch bounds the frames of one sendmmsg(2) (0 means
	// DefaultSendBatch).
	SendBatch int
}

// Defaults of Config.
const (
	DefaultRingFrames = 1024
	DefaultSendBatch  = 64
)

// Steering is how a link's fanout group picks the queue (worker) of a
// received frame. Each value is a classic-BPF fanout program
// (PACKET_FANOUT_CBPF) with a Go mirror (Pick, FlowOwner, PortOwner) that
// gives the same answer, so the datapath knows which worker owns a tuple.
// Frames that are not IPv4 TCP go to queue 0.
type Steering uint8

// Steerings.
const (
	// SteerFlowHash picks by a hash of the IPv4 source address and the TCP
	// ports (FlowOwner): client links, where a flow is known by its
	// client tuple.
	SteerFlowHash Steering = iota
	// SteerDstPort picks by the TCP destination port modulo the number of
	// queues (PortOwner): backend links, where each worker owns the SNAT
	// ports p with p % n == worker.
	SteerDstPort
)
