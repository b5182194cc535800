package link

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"sort"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// KernelDropTable is the nftables table (family netdev) KernelDrop
// installs.
const KernelDropTable = "tslb"

// KernelDrop makes the kernel of the current network namespace discard,
// at ingress, the IPv4 and IPv6 packets addressed to tslb's own addresses
// (owned, by interface name) — after tslb's packet sockets have taken
// their copy: those are ETH_P_ALL taps, which __netif_receive_skb_core
// runs before the netdev ingress hook. Without it the kernel routes every
// such frame, finds the address is not its own and forwarding is off, and
// drops it in ip_error (about 2 % of the machine's CPU in the lab's
// request/response benchmark, charged to whoever sent the frame).
//
// It replaces the table KernelDropTable of family netdev (one base chain
// per interface, hook ingress, one rule per address) in one netlink
// transaction, so a restarted tslb replaces what a killed one left. The
// returned function deletes the table.
func KernelDrop(owned map[string][]netip.Addr) (remove func() error, err error) {
	// A lasting connection: its netlink socket stays in the namespace it
	// was opened in, for the removal too.
	c, err := nftables.New(nftables.AsLasting())
	if err != nil {
		return nil, fmt.Errorf("link: nftables: %w", err)
	}
	t := &nftables.Table{Name: KernelDropTable, Family: nftables.TableFamilyNetdev}
	// Delete what a previous run left: a separate transaction, whose
	// ENOENT (nothing to delete) is not an error.
	c.DelTable(t)
	if err := c.Flush(); err != nil && !errors.Is(err, unix.ENOENT) {
		c.CloseLasting()
		return nil, fmt.Errorf("link: nftables: delete table %s: %w", KernelDropTable, err)
	}
	c.AddTable(t)
	ifs := make([]string, 0, len(owned))
	for ifname := range owned {
		ifs = append(ifs, ifname)
	}
	sort.Strings(ifs)
	for _, ifname := range ifs {
		ch := c.AddChain(&nftables.Chain{
			Name: "in-" + ifname, Table: t, Type: nftables.ChainTypeFilter,
			Hooknum: nftables.ChainHookIngress, Priority: nftables.ChainPriorityFilter,
			Device: ifname, Policy: ptr(nftables.ChainPolicyAccept),
		})
		for _, a := range owned[ifname] {
			c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: dropTo(a)})
		}
	}
	if err := c.Flush(); err != nil {
		c.CloseLasting()
		return nil, fmt.Errorf("link: nftables: table %s: %w", KernelDropTable, err)
	}
	return func() error {
		c.DelTable(t)
		err := c.Flush()
		return errors.Join(err, c.CloseLasting())
	}, nil
}

// dropTo is "meta protocol ip|ip6, {ip,ip6} daddr a, drop".
func dropTo(a netip.Addr) []expr.Any {
	a = a.Unmap()
	proto, off := uint16(unix.ETH_P_IP), uint32(16)
	if a.Is6() {
		proto, off = unix.ETH_P_IPV6, 24
	}
	p := binary.BigEndian.AppendUint16(nil, proto)
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyPROTOCOL, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: p},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: uint32(a.BitLen() / 8)},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: a.AsSlice()},
		&expr.Verdict{Kind: expr.VerdictDrop},
	}
}

func ptr[T any](v T) *T { return &v }
