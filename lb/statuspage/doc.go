// Package statuspage owns the rendering of a balancer's status for people:
// the HTML page at / of the metrics listener, the cached /status.json, the
// collision captures at /pcap/<name>, and the text tables of `tslb
// status`. It reads only lb.Status values (taken through a function it is
// given) and a bounded history of them; it may not touch the datapath or
// the Balancer's internals.
//
// The page is built with html/template from embedded files, so every
// string taken from the configuration or the network (a service name, a
// probe's error) is escaped, and it loads nothing from anywhere: the
// stylesheet is inline, allowed by its hash in a strict
// Content-Security-Policy (default-src 'none'), the charts are inline
// SVG, and it refreshes itself with a meta refresh (no script).
//
// A Server computes the status at most once per CacheTTL however many
// scrapers ask, and a sampler goroutine (Server.Run) keeps the last
// minutes in a History ring, from which the rates (new flows/s, drops/s,
// packets/s) are computed as counter deltas.
package statuspage
