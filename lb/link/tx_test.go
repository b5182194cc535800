package link

import (
	"errors"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The sendmmsg batcher's error handling, on a Unix datagram socket pair
// (no root needed): sendmmsg works on any datagram socket.

func unixPair(t *testing.T, sndbuf int) (w, r int) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if sndbuf > 0 {
		if err := unix.SetsockoptInt(fds[0], unix.SOL_SOCKET, unix.SO_SNDBUF, sndbuf); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { unix.Close(fds[0]); unix.Close(fds[1]) })
	return fds[0], fds[1]
}

func payload(i, n int) []byte {
	b := make([]byte, n)
	b[0] = byte(i)
	return b
}

// TestTxBatchSendsInOrder: Send flushes a full batch by itself; Flush
// sends the rest; the peer gets every frame, in order.
func TestTxBatchSendsInOrder(t *testing.T) {
	w, r := unixPair(t, 0)
	q := newTxQueue(w, 4)
	for i := range 10 {
		if err := q.Send(payload(i, 100)); err != nil {
			t.Fatal(err)
		}
	}
	if err := q.Flush(); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 200)
	for i := range 10 {
		n, err := unix.Read(r, buf)
		if err != nil || n != 100 || buf[0] != byte(i) {
			t.Fatalf("datagram %d: %d bytes, first %d, %v", i, n, buf[0], err)
		}
	}
	if st := q.Stats(); st.TxFrames != 10 || st.TxBytes != 10*(100-vnetLen) || st.TxErrors != 0 {
		t.Errorf("stats %+v", st)
	}
}

// TestTxBatchFullBuffer: when the socket buffer fills (EAGAIN), the rest
// of the batch is dropped and counted at once; Flush does not block.
func TestTxBatchFullBuffer(t *testing.T) {
	w, r := unixPair(t, 4096)
	_ = r // nobody reads: the buffer fills
	q := newTxQueue(w, 64)
	for i := range 64 {
		q.Send(payload(i, 1000))
	}
	start := time.Now()
	if err := q.Flush(); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("Flush took %v", d)
	}
	st := q.Stats()
	if st.TxFrames == 0 || st.TxFrames >= 64 || st.TxFrames+st.TxErrors != 64 {
		t.Errorf("stats %+v: want some sent, the rest refused", st)
	}
}

// TestTxBatchPerFrameError: a frame refused on its own (EMSGSIZE: larger
// than the socket's send buffer can ever hold) is dropped; the frames
// after it are still sent.
func TestTxBatchPerFrameError(t *testing.T) {
	w, r := unixPair(t, 8192)
	q := newTxQueue(w, 8)
	q.Send(payload(0, 100))
	q.Send(payload(1, 1<<20))
	q.Send(payload(2, 100))
	if err := q.Flush(); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 200)
	for _, want := range []byte{0, 2} {
		if n, err := unix.Read(r, buf); err != nil || n != 100 || buf[0] != want {
			t.Fatalf("got %d bytes, first %d, %v; want frame %d", n, buf[0], err, want)
		}
	}
	if st := q.Stats(); st.TxFrames != 2 || st.TxErrors != 1 {
		t.Errorf("stats %+v", st)
	}
}

// TestTxBatchLinkError: a failure of the socket itself drops the batch
// and is returned.
func TestTxBatchLinkError(t *testing.T) {
	w, _ := unixPair(t, 0)
	b := newTxBatch(w, 4)
	dup, err := unix.Dup(w)
	if err != nil {
		t.Fatal(err)
	}
	unix.Close(dup)
	b.fd = dup // a closed descriptor: EBADF
	for i := range 3 {
		b.add(payload(i, 100))
	}
	var st Stats
	if err := b.flush(&st); !errors.Is(err, errLink) {
		t.Errorf("flush on a closed descriptor: %v", err)
	}
	if st.TxErrors != 3 || st.TxFrames != 0 || b.n != 0 {
		t.Errorf("stats %+v, %d queued", st, b.n)
	}
}
