package lab

import (
	"errors"
	"fmt"
	"os"
)

// The br_netfilter trap. When the host has the br_netfilter module loaded,
// every new network namespace starts with net.bridge.bridge-nf-call-iptables
// (and -ip6tables, -arptables) = 1: IPv4 frames crossing a bridge are run
// through the IP layer's sanity checks (br_validate_ipv4: header length,
// version, header checksum, total length, options) and silently dropped if
// they fail, before they reach the far port. The lab's bridges would then
// drop the malformed frames the edge tests send before tslb sees them, and
// a test would pass for the wrong reason. The switch namespace turns the
// hooks off, so its bridges forward whatever they are given, as a plain
// switch does.

// bridgeNFKeys are the per-namespace br_netfilter switches.
var bridgeNFKeys = []string{
	"net.bridge.bridge-nf-call-iptables",
	"net.bridge.bridge-nf-call-ip6tables",
	"net.bridge.bridge-nf-call-arptables",
}

// bridgeNetfilterOff sets every br_netfilter hook of n to 0 if the module
// is loaded (its sysctls exist in n); without the module there is nothing
// to turn off.
func (n *NS) bridgeNetfilterOff() error {
	for _, k := range bridgeNFKeys {
		p, err := sysctlPath(k)
		if err != nil {
			return err
		}
		err = n.Do(func() error {
			if _, err := os.Stat(p); errors.Is(err, os.ErrNotExist) {
				return nil // module not loaded
			}
			return os.WriteFile(p, []byte("0"), 0)
		})
		if err != nil {
			return fmt.Errorf("lab: %s=0 in %s: %w", k, n.Name, err)
		}
	}
	return nil
}

// BridgeNetfilter reports the br_netfilter hooks of the switch namespace,
// key -> value; empty if the module is not loaded.
func (l *Lab) BridgeNetfilter() (map[string]string, error) {
	out := map[string]string{}
	for _, k := range bridgeNFKeys {
		p, _ := sysctlPath(k)
		var have bool
		if err := l.Switch.Do(func() error {
			_, err := os.Stat(p)
			have = err == nil
			return nil
		}); err != nil {
			return nil, err
		}
		if !have {
			continue
		}
		v, err := l.Switch.ReadSysctl(k)
		if err != nil {
			return nil, err
		}
		out[k] = v
	}
	return out, nil
}
