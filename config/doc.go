// Package config loads, validates and writes tslb's YAML configuration.
//
// A configuration names the AF_PACKET links tslb owns, the TCP services
// (VIP:port and their backends), the SNAT address pool, flow-table limits,
// the metrics, logging and collision-detector settings, the health-probe
// source address, the control socket, the graceful-shutdown timeout, the
// TIME_WAIT ledger's state file and, for an instance of a cluster behind
// ECMP, the cluster section (members, heartbeats, BGP; [CheckCluster]
// checks the files of a whole cluster together). See example.yaml
// in this directory for a complete, commented file.
//
// [Parse] reads YAML with gopkg.in/yaml.v3 into a node tree and walks it with
// a decoder that knows the schema, so every problem is reported with the
// file, the line and the key path (for example
// services[0].backends[1].address). Unknown keys, wrong types and bad values
// are all errors, and all of them are returned at once as [Errors], sorted
// by line. The same bytes are also read by a fresh viper instance
// (github.com/spf13/viper) so that further sources can be layered on later;
// today the values come from the yaml.v3 walk and viper acts as a
// cross-check of the syntax.
//
// [Config.Validate] holds the semantic checks (ranges, uniqueness, address
// overlaps, on-link reachability). Parse runs it too, and it also works on a
// Config built in Go, in which case errors carry no line.
//
// A *Config returned by Parse or Load is immutable by convention: the running
// balancer swaps whole snapshots (for example through an atomic.Pointer) on
// reload, so code must never modify a Config it did not build itself.
// [Config.RestartKeysDiffer] tells which changes a reload cannot apply
// without a restart.
package config
