package cluster

import (
	"fmt"
	"slices"
)

// Snapshot is what one instance knows of its cluster at one moment: the
// current and previous views, which members are live, draining, and agree
// with its current view, and their MACs. It is immutable; Members
// publishes a new one on every change.
type Snapshot struct {
	// Self is this instance's ID.
	Self MemberID
	// Current is the view of the live, non-draining members: it decides
	// the owner of a new flow.
	Current *View
	// Previous is the current view before the last change, with the live
	// draining members added: it gives a frame a second chance.
	Previous *View

	live     []MemberID // ascending, this instance included
	draining []MemberID // live and draining, ascending
	agree    []MemberID // live members whose last view hash is Current's, ascending
	macs     []memberMAC
}

type memberMAC struct {
	id  MemberID
	mac MAC
}

func contains(ids []MemberID, id MemberID) bool {
	_, ok := slices.BinarySearch(ids, id)
	return ok
}

// Live reports whether member id is live (draining or not).
func (s *Snapshot) Live(id MemberID) bool { return contains(s.live, id) }

// Draining reports whether member id is live and draining.
func (s *Snapshot) Draining(id MemberID) bool { return contains(s.draining, id) }

// Agrees reports whether live member id's last heartbeat carried the hash
// of this instance's current view (true for Self).
func (s *Snapshot) Agrees(id MemberID) bool { return contains(s.agree, id) }

// LiveMembers returns the live members, ascending (a copy).
func (s *Snapshot) LiveMembers() []MemberID { return slices.Clone(s.live) }

// MAC returns member id's front MAC.
func (s *Snapshot) MAC(id MemberID) (MAC, bool) {
	i, ok := slices.BinarySearchFunc(s.macs, id, func(m memberMAC, id MemberID) int { return int(m.id) - int(id) })
	if !ok {
		return MAC{}, false
	}
	return s.macs[i].mac, true
}

// MemberByMAC returns the ID of the member whose front MAC is mac, or 0:
// the datapath calls it on a client frame's source MAC to tell a frame
// another member forwarded from one the router sent.
func (s *Snapshot) MemberByMAC(mac MAC) MemberID {
	for _, m := range s.macs {
		if m.mac == mac {
			return m.id
		}
	}
	return 0
}

// Verdict is what the datapath does with one client frame.
type Verdict uint8

// Verdicts of Decide. The Drop ones are counted by the datapath, by
// Verdict.String.
const (
	// Local: the frame is this instance's: the flow is held here, or it
	// is a SYN this instance owns or was forwarded.
	Local Verdict = iota
	// ForwardOwner: send the frame unchanged to the current owner's MAC.
	ForwardOwner
	// ForwardPrevious: second chance: this instance owns the flow in the
	// current view but does not hold it; send it to the previous owner.
	ForwardPrevious
	// DropNotHeld: a non-SYN frame that no live instance holds as far as
	// this one can tell (the previous owner is this one, dead, or the
	// member that forwarded the frame).
	DropNotHeld
	// DropDisagree: a forwarded non-SYN frame not held here, from a member
	// whose view differs from ours: forwarding it again might loop.
	DropDisagree
	// DropNoOwner: the current view is empty (every member drains).
	DropNoOwner
	numVerdicts
)

var verdictNames = [numVerdicts]string{"local", "forward_owner", "forward_previous", "not_held", "views_disagree", "no_owner"}

// String returns the verdict as a metric label.
func (v Verdict) String() string {
	if v < numVerdicts {
		return verdictNames[v]
	}
	return fmt.Sprintf("Verdict(%d)", v)
}

// NumVerdicts is the number of Verdict values.
const NumVerdicts = int(numVerdicts)

// Decide says what to do with a client frame (client to VIP) whose tuple
// hashes to hash (TupleHash): syn is a SYN without ACK, held says the
// local flow table holds the flow, from is the member whose MAC the frame
// came from (MemberByMAC), 0 if it came from the router.
//
// Rules:
//   - a held flow is Local;
//   - from the router: the current owner takes it (ForwardOwner when that
//     is another member); if this instance is the owner, a SYN is Local and
//     any other frame gets a second chance at the previous owner;
//   - forwarded by a member: a SYN is Local (the sender thinks this
//     instance owns it; a SYN is never bounced); another frame is dropped
//     unless this instance is its current owner, then it gets the second
//     chance, only if the sender's view agrees with ours.
//
// So a frame crosses the front segment at most twice while views agree: to
// the current owner, then to the previous owner, which does not forward
// it again (in its own view it is not the current owner), and never back
// to the member it came from. Decide allocates nothing.
func (s *Snapshot) Decide(hash uint64, syn, held bool, from MemberID) (Verdict, MemberID) {
	if held {
		return Local, s.Self
	}
	owner := s.Current.Owner(hash)
	if from == 0 {
		switch {
		case owner == 0:
			return DropNoOwner, 0
		case owner != s.Self:
			return ForwardOwner, owner
		case syn:
			return Local, s.Self
		}
		return s.second(hash, 0)
	}
	switch {
	case syn:
		return Local, s.Self
	case owner != s.Self:
		return DropNotHeld, 0
	case !s.Agrees(from):
		return DropDisagree, 0
	}
	return s.second(hash, from)
}

// second is the second chance of a frame this instance owns and does not
// hold.
func (s *Snapshot) second(hash uint64, from MemberID) (Verdict, MemberID) {
	p := s.Previous.Owner(hash)
	if p == 0 || p == s.Self || p == from || !s.Live(p) {
		return DropNotHeld, 0
	}
	return ForwardPrevious, p
}
