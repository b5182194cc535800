package link

import (
	"bytes"
	"fmt"
	"testing"
	"time"
)

func memFrame(i int) []byte {
	return withVnet(ipv4TCP(macB, macA, [4]byte{198, 18, 0, 1}, farIP, 40000, 80, 5, 0, uint32(i)))
}

func TestMemRecvSend(t *testing.T) {
	m, err := NewMem("m0", 8)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if m.Name() != "m0" {
		t.Errorf("Name %q", m.Name())
	}
	p, err := NewPoller([]Queue{m})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()

	// Empty: Wait times out.
	start := time.Now()
	if woken, err := p.Wait(30 * time.Millisecond); err != nil || woken {
		t.Fatalf("Wait on an empty Mem: %v, %v", woken, err)
	}
	if d := time.Since(start); d < 25*time.Millisecond {
		t.Errorf("Wait on an empty Mem returned after %v", d)
	}
	for i := range 3 {
		if err := m.Inject(memFrame(i)); err != nil {
			t.Fatal(err)
		}
	}
	if m.Pending() != 3 {
		t.Fatalf("Pending %d", m.Pending())
	}
	// Injected frames make the eventfd readable.
	start = time.Now()
	if _, err := p.Wait(time.Second); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 500*time.Millisecond {
		t.Errorf("Wait with frames pending took %v", d)
	}
	buf := make([][]byte, 2)
	n, err := m.Recv(buf)
	if err != nil || n != 2 {
		t.Fatalf("Recv = %d, %v", n, err)
	}
	for i, f := range buf[:n] {
		if !bytes.Equal(f, memFrame(i)) || cap(f) < MemFrameCap {
			t.Errorf("frame %d: %x (cap %d)", i, f, cap(f))
		}
	}
	if n, _ = m.Recv(buf); n != 1 || !bytes.Equal(buf[0], memFrame(2)) {
		t.Fatalf("second Recv = %d", n)
	}
	m.Release()
	if m.Pending() != 0 {
		t.Fatalf("Pending %d", m.Pending())
	}
	// Drained: not readable any more.
	if woken, _ := p.Wait(20 * time.Millisecond); woken {
		t.Error("Wait woken with nothing pending")
	}
	if n, _ := m.Recv(buf); n != 0 {
		t.Errorf("Recv on an empty Mem = %d", n)
	}

	// Send queues, Flush copies to Out in order.
	out := [][]byte{memFrame(10), memFrame(11)}
	for _, f := range out {
		if err := m.Send(f); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case f := <-m.Out():
		t.Fatalf("frame before Flush: %x", f)
	default:
	}
	if err := m.Flush(); err != nil {
		t.Fatal(err)
	}
	out[0][vnetLen] ^= 0xff // the flushed copies are independent
	for i := range out {
		got := <-m.Out()
		if want := memFrame(10 + i); !bytes.Equal(got, want) {
			t.Errorf("Out %d: %x, want %x", i, got, want)
		}
	}
	st := m.Stats()
	flen := uint64(len(memFrame(0)) - vnetLen)
	if st.RxFrames != 3 || st.RxBytes != 3*flen || st.TxFrames != 2 || st.TxBytes != 2*flen || st.TxErrors != 0 {
		t.Errorf("stats %+v", st)
	}

	// FailSend: refused, counted, nothing out.
	m.FailSend.Store(true)
	for i := range 3 {
		m.Send(memFrame(i))
	}
	if err := m.Flush(); err != nil {
		t.Fatal(err)
	}
	if st := m.Stats(); st.TxErrors != 3 || st.TxFrames != 2 {
		t.Errorf("after FailSend: %+v", st)
	}
	select {
	case f := <-m.Out():
		t.Errorf("refused frame reached Out: %x", f)
	default:
	}
}

func TestMemClose(t *testing.T) {
	m, err := NewMem("m1", 1)
	if err != nil {
		t.Fatal(err)
	}
	// Flush blocks while Out is full, until Close.
	m.Send(memFrame(0))
	m.Send(memFrame(1))
	done := make(chan error, 1)
	go func() { done <- m.Flush() }()
	select {
	case err := <-done:
		t.Fatalf("Flush into a full Out returned %v", err)
	case <-time.After(30 * time.Millisecond):
	}
	m.Close()
	if err := <-done; err != ErrClosed {
		t.Errorf("blocked Flush after Close: %v", err)
	}
	if !m.Closed() {
		t.Error("Closed() false after Close")
	}
	if err := m.Inject(memFrame(2)); err != ErrClosed {
		t.Errorf("Inject after Close: %v", err)
	}
	if _, err := m.Recv(make([][]byte, 1)); err != ErrClosed {
		t.Errorf("Recv after Close: %v", err)
	}
	if err := m.Send(memFrame(3)); err != ErrClosed {
		t.Errorf("Send after Close: %v", err)
	}
	m.Close() // no panic
}

func TestPollerWake(t *testing.T) {
	m, _ := NewMem("m2", 1)
	defer m.Close()
	p, err := NewPoller([]Queue{m})
	if err != nil {
		t.Fatal(err)
	}
	res := make(chan string, 1)
	go func() {
		woken, err := p.Wait(-1)
		res <- fmt.Sprint(woken, err)
	}()
	time.Sleep(20 * time.Millisecond)
	p.Wake()
	select {
	case r := <-res:
		if r != "true <nil>" {
			t.Errorf("Wait after Wake: %s", r)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("Wake did not end Wait")
	}
	// A Wake before Wait makes the next Wait return at once.
	p.Wake()
	if woken, _ := p.Wait(time.Second); !woken {
		t.Error("pending Wake lost")
	}
	p.Close()
	p.Wake() // after Close: a no-op, not a write to a stale descriptor
	p.Close()
}

// The Poller parks on the runtime's network poller (an epoll instance of
// its own), not in a blocking poll(2).
func TestPollerUsesRuntimePoller(t *testing.T) {
	m, err := NewMem("x", 4)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	p, err := NewPoller([]Queue{m})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if p.ep == nil {
		t.Fatal("the Poller fell back to poll(2)")
	}
	start := time.Now()
	if woken, err := p.Wait(30 * time.Millisecond); err != nil || woken {
		t.Fatalf("Wait on nothing = %v %v", woken, err)
	}
	if d := time.Since(start); d < 25*time.Millisecond {
		t.Errorf("Wait returned after %v, before its 30ms timeout", d)
	}
	go func() { time.Sleep(10 * time.Millisecond); m.Inject(make([]byte, 60)) }()
	if _, err := p.Wait(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	if n, _ := m.Recv(make([][]byte, 1)); n != 1 {
		t.Error("woke without a frame")
	}
}
