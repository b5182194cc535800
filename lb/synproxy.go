package lb

import (
	"tslb/config"
	"tslb/nat"
)

// The SYN proxy (services[].syn_proxy). Under pressure (auto: the
// service has syn_proxy_threshold half-open flows, and for 10 s after) or
// always (on), tslb answers a client's SYN itself with a SYN-ACK whose ISN
// is a SYN cookie (nat.CookieKey, as Linux makes them) and keeps nothing:
// a spoofed SYN costs one SYN-ACK, no flow, no tuple, no SYN toward a
// backend. Only the client's ACK that returns a valid cookie makes a flow:
// tslb rebuilds the client's SYN from it (the MSS from the cookie; window
// scale and SACK-permitted from the TSecr's low bits, when the client
// uses timestamps), opens the backend connection with it through the
// ordinary path (scheduler, TIME_WAIT-aware tuple, translation), and
// holds the client's segments until the backend's SYN-ACK. Then the
// backend's sequence space, timestamp clock and window scale are joined to
// the ones the client got from the cookie SYN-ACK (nat.Proxy), and the
// held segments go on — the client's ACK first, which completes the
// backend's handshake.
//
// Where tslb differs from DPVS's synproxy (src/ipvs/ip_vs_synproxy.c):
// DPVS encodes options the same Linux way but always proxies once
// enabled; tslb engages on pressure only (auto), so a quiet service keeps
// the backend's own SYN-ACK options end to end. DPVS can defer the
// backend SYN to the first data (defer_rs_syn); tslb opens it at the ACK.
// DPVS retransmits the backend SYN itself (rs_syn_max_retry); tslb leaves
// that to health.passive's re-dispatch and the client's own retransmits
// of its data.

// proxyWScale is the window scale tslb announces in a cookie SYN-ACK (the
// value Linux picks for default buffers); the backend's real one is
// rescaled to it (nat.Proxy.WShift).
const proxyWScale = 7

// proxyHold is how long the auto mode stays on after the pressure that
// turned it on (ns).
const proxyHold = 10e9

// proxyPendingMax bounds the client segments a proxied flow holds until
// the backend answers (the client retransmits the rest).
const proxyPendingMax = 4

// proxyState is what a proxied flow keeps until its backend answers.
type proxyState struct {
	cookie  uint32 // tslb's ISN toward the client
	tsEcho  uint32 // the TSval of the cookie SYN-ACK (the client's TSecr)
	hasTS   bool   // timestamps are on with the client
	tws     int8   // window scale announced to the client, -1 for none
	pending [][]byte
}

// cookieMinute is the cookie counter: minutes of tslb's clock.
func (w *worker) cookieMinute() uint32 { return uint32(w.now / 60e9) }

// shouldProxy says whether a new SYN of svc is answered with a cookie.
func (w *worker) shouldProxy(svc *service) bool {
	switch svc.synProxy {
	case config.SYNProxyOn:
		return true
	case config.SYNProxyAuto:
		if svc.halfOpen.Load() >= svc.proxyAbove {
			svc.proxyUntil.Store(w.now + proxyHold)
			return true
		}
		return w.now < svc.proxyUntil.Load()
	}
	return false
}

// sendCookie answers the client SYN in w.pkt with a cookie SYN-ACK.
func (w *worker) sendCookie(svc *service) {
	p := &w.pkt
	if p.TCPOptions(&w.opts) != nil {
		w.c.dropErr(nat.ErrBadOptions)
		return
	}
	src, dst := p.SrcAddr(), p.DstAddr()
	l, hop := w.sh.route(src)
	if l == nil {
		w.c.drop(dropNoRoute)
		return
	}
	mss := uint16(nat.MinMSS)
	if w.opts.HasMSS {
		mss = w.opts.MSS
	}
	// The backend's own SYN-ACK never reaches the client, so the cookie's
	// MSS must fit every link a segment may cross (the backend is not
	// chosen yet) and, when tslb will insert timestamps toward the backend
	// (rewrite, a client without them), leave room for their 12 bytes, as
	// the SYN-ACK clamp of the ordinary path does.
	mtu := l.mtu
	for _, n := range w.sh.nics {
		mtu = min(mtu, n.mtu)
	}
	mss = min(mss, uint16(max(nat.MaxMSS(mtu, p.IsIPv6()), nat.MinMSS)))
	if svc.ts == nat.TSRewrite && !w.opts.HasTS {
		mss = nat.ClampMSSForSynth(mss)
	}
	idx := nat.CookieMSSIndex(mss)
	cookie := w.sh.cookies.Cookie(src, dst, p.SrcPort, p.DstPort, p.Seq, w.cookieMinute(), idx)
	o := nat.TCPOptions{HasMSS: true, MSS: nat.CookieMSS[idx]}
	if w.opts.HasTS && svc.ts != nat.TSStrip {
		// Window scale and SACK-permitted can only be remembered in the
		// TSval; without timestamps the connection goes without them.
		o.HasTS, o.TSEcr = true, w.opts.TSVal
		o.TSVal = nat.CookieTSVal(uint32(w.now/1e6), w.opts.HasWScale, w.opts.WScale, w.opts.SACKPermitted)
		o.SACKPermitted = w.opts.SACKPermitted
		if w.opts.HasWScale {
			o.HasWScale, o.WScale = true, proxyWScale
		}
	}
	buf := w.scratch()
	n := nat.BuildTCPOptionsAny(buf[nat.VirtioNetHdrLen:], l.mac, nat.MAC{}, dst, src, p.DstPort, p.SrcPort,
		cookie, p.Seq+1, nat.TCPFlagSYN|nat.TCPFlagACK, 65535, &o)
	if n == 0 {
		return
	}
	w.transmit(l, hop, buf[:nat.VirtioNetHdrLen+n])
	svc.cookies[cookieSent].Inc()
	if until := w.now + nat.MaxCookieAge*60e9; svc.cookieUntil.Load() < until {
		svc.cookieUntil.Store(until)
	}
}

// acceptCookie handles a client ACK that matches no flow for a service
// with the SYN proxy: if it returns a valid cookie, the flow is made and
// the backend connection opened. It reports whether the ACK was taken
// (made a flow, or was counted as an invalid cookie).
func (w *worker) acceptCookie(svc *service, frame []byte) bool {
	if w.now >= svc.cookieUntil.Load() {
		return false // no cookie of this service is valid: an ACK without a flow
	}
	p := &w.pkt
	if p.TCPFlags&(nat.TCPFlagSYN|nat.TCPFlagRST|nat.TCPFlagFIN|nat.TCPFlagACK) != nat.TCPFlagACK {
		return false
	}
	cookie, isn := p.Ack-1, p.Seq-1
	src, dst := p.SrcAddr(), p.DstAddr()
	idx, ok := w.sh.cookies.CheckCookie(cookie, src, dst, p.SrcPort, p.DstPort, isn, w.cookieMinute())
	if !ok {
		svc.cookies[cookieInvalid].Inc()
		w.c.drop(dropBadCookie)
		return true
	}
	if w.sh.stopping.Load() {
		w.c.drop(dropShuttingDown)
		return true
	}
	if r := w.admitSYN(); r != -1 {
		if r != dropCounted {
			w.c.drop(r)
		}
		return true
	}
	if p.TCPOptions(&w.opts) != nil {
		w.c.dropErr(nat.ErrBadOptions)
		return true
	}
	svc.cookies[cookieValid].Inc()
	st := &proxyState{cookie: cookie, tws: -1}
	// The client's SYN, rebuilt: what the cookie remembers of it.
	o := nat.TCPOptions{HasMSS: true, MSS: nat.CookieMSS[idx]}
	if w.opts.HasTS {
		st.hasTS, st.tsEcho = true, w.opts.TSEcr
		hasWS, ws, sack := nat.CookieTSOptions(w.opts.TSEcr)
		o.HasTS, o.TSVal = true, w.opts.TSVal
		o.SACKPermitted = sack
		if hasWS {
			o.HasWScale, o.WScale = true, ws
			st.tws = proxyWScale
		}
	}
	eth := p.Ethernet()
	held := append(make([]byte, 0, len(frame)+64), frame...)
	// An arena slot: Send may reference the SYN until the next flush, so
	// it must not share a buffer with the next cookie ACK of the batch.
	syn := w.scratch()
	n := nat.BuildTCPOptionsAny(syn[nat.VirtioNetHdrLen:], eth.Src(), eth.Dst(), src, dst, p.SrcPort, p.DstPort,
		isn, 0, nat.TCPFlagSYN, 65535, &o)
	if n == 0 {
		return true
	}
	if p.IsIPv6() {
		nat.IPv6(syn[nat.VirtioNetHdrLen+nat.EthernetHeaderLen:]).SetHopLimit(p.TTL())
	} else {
		ip := nat.IPv4(syn[nat.VirtioNetHdrLen+nat.EthernetHeaderLen:])
		ip.SetTTL(p.TTL())
		ip.SetChecksum(0)
		ip.SetChecksum(ip.ComputeChecksum())
	}
	w.synth, w.synthFlow = st, nil
	w.handle(syn[:nat.VirtioNetHdrLen+n]) // decoded again: the ordinary path from here
	f := w.synthFlow
	w.synth, w.synthFlow = nil, nil
	if f == nil {
		// Refused (full table, no backend, no tuple): the client believes
		// it is connected; reset it in its window.
		l, hop := w.sh.route(src)
		if l != nil {
			w.sendTCP(l, hop, dst, src, p.DstPort, p.SrcPort, cookie+1, 0, nat.TCPFlagRST)
		}
		return true
	}
	st.pending = append(st.pending, held)
	return true
}

// holdForProxy keeps a client segment of a proxied flow whose backend has
// not answered yet.
func (w *worker) holdForProxy(f *flow, frame []byte) {
	if len(f.pxs.pending) >= proxyPendingMax {
		w.c.drop(dropProxyPending)
		return
	}
	f.pxs.pending = append(f.pxs.pending, append(make([]byte, 0, len(frame)+64), frame...))
}

// proxyEstablished joins a proxied flow to its backend's SYN-ACK (in w.pkt,
// backend space) and sends on the held client segments.
func (w *worker) proxyEstablished(f *flow) {
	p := &w.pkt
	st := f.pxs
	var o nat.TCPOptions
	if p.TCPOptions(&o) != nil {
		w.c.dropErr(nat.ErrBadOptions)
		return
	}
	px := &nat.Proxy{SeqDelta: st.cookie - p.Seq}
	if st.hasTS && o.HasTS {
		px.TS, px.TSOff = true, st.tsEcho-o.TSVal
	}
	if st.tws >= 0 {
		bws := int8(0)
		if o.HasWScale {
			bws = int8(min(o.WScale, 14))
		}
		px.WShift = bws - st.tws
	}
	f.px = px
	if px.ToClient(p) != nil {
		return
	}
	// The tracker and the translation see the SYN-ACK as the client would
	// have (it is not sent: the client has tslb's).
	f.tr.Update(nat.SideBackend, p.TCPFlags, p.Seq, p.Ack-f.x.SeqDelta, p.Payload, 0, false)
	f.x.BackendToClient(p)
	f.state = f.tr.State
	f.last = w.now
	w.passiveSuccess(f)
	f.pxs = nil
	in := w.in
	w.in = f.clientNIC // the held segments came from the client's link
	for _, fr := range st.pending {
		w.keep(fr)
		w.handle(fr)
	}
	w.in = in
}
