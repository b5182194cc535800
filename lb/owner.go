package lb

import (
	"encoding/binary"

	"tslb/nat"
)

// flowOwner returns the worker, of workers, that owns the flow of a
// client tuple: the worker the client link's fanout program
// (link.SteerFlowHash) delivers the client's frames to.
func flowOwner(client nat.Addr4, cport, vport uint16, workers int) int {
	if workers <= 1 {
		return 0
	}
	h := (binary.BigEndian.Uint32(client[:]) ^ (uint32(cport)<<16 | uint32(vport))) * 0x9E3779B1
	return int(h>>16) % workers
}
