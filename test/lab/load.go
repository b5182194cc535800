package lab

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"time"
)

// maxFirstErrors is how many error messages a Result keeps.
const maxFirstErrors = 5

// Result summarizes a Requests run.
type Result struct {
	// OK counts requests answered with status 200 and an X-Backend header;
	// Errors counts everything else, including requests never sent because
	// the run hit maxDuration or ctx ended. OK+Errors equals n.
	OK, Errors int
	// ByBackend counts OK requests by their X-Backend header.
	ByBackend map[string]int
	// FirstErrors holds up to 5 error messages, in the order they happened.
	FirstErrors []string
	// Latencies holds the total duration of each OK request (connect,
	// request and reading the whole body), in completion order.
	Latencies []time.Duration
	// ConnectLatencies holds the duration of every successful TCP connect
	// (with keepAlive only new connections are measured).
	ConnectLatencies []time.Duration
}

// Requests sends n HTTP GETs to url from the given client namespaces
// (round-robin over them), with concurrency c, each request bounded by
// timeout and the whole run by maxDuration. keepAlive reuses connections;
// without it every request opens a new TCP connection.
func Requests(ctx context.Context, clients []*NS, url string, n, c int, timeout, maxDuration time.Duration, keepAlive bool) Result {
	res := Result{ByBackend: make(map[string]int)}
	if n <= 0 {
		return res
	}
	var mu sync.Mutex
	fail := func(msg string) {
		mu.Lock()
		res.Errors++
		if len(res.FirstErrors) < maxFirstErrors {
			res.FirstErrors = append(res.FirstErrors, msg)
		}
		mu.Unlock()
	}
	if len(clients) == 0 {
		res.Errors = n
		res.FirstErrors = []string{"lab: Requests: no client namespaces"}
		return res
	}
	c = max(1, min(c, n))
	if maxDuration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, maxDuration)
		defer cancel()
	}

	// One client (and so one connection pool) per namespace; the dial
	// wrapper records connect latencies.
	hcs := make([]*http.Client, len(clients))
	for i, ns := range clients {
		dial := ns.DialContext
		tr := &http.Transport{
			Proxy: nil,
			DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				start := time.Now()
				conn, err := dial(ctx, network, addr)
				if err == nil {
					d := time.Since(start)
					mu.Lock()
					res.ConnectLatencies = append(res.ConnectLatencies, d)
					mu.Unlock()
				}
				return conn, err
			},
			DisableKeepAlives:   !keepAlive,
			MaxIdleConnsPerHost: c,
			IdleConnTimeout:     30 * time.Second,
		}
		defer tr.CloseIdleConnections()
		hcs[i] = &http.Client{Transport: tr, Timeout: timeout}
	}

	jobs := make(chan int)
	var wg sync.WaitGroup
	for range c {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				start := time.Now()
				id, err := get(ctx, hcs[i%len(hcs)], url)
				if err != nil {
					fail(fmt.Sprintf("request %d from %s: %v", i, clients[i%len(clients)].Name, err))
					continue
				}
				d := time.Since(start)
				mu.Lock()
				res.OK++
				res.ByBackend[id]++
				res.Latencies = append(res.Latencies, d)
				mu.Unlock()
			}
		}()
	}
	sent := 0
loop:
	for ; sent < n; sent++ {
		select {
		case jobs <- sent:
		case <-ctx.Done():
			break loop
		}
	}
	close(jobs)
	wg.Wait()
	if sent < n {
		fail(fmt.Sprintf("%d requests not sent: %v", n-sent, ctx.Err()))
		mu.Lock()
		res.Errors += n - sent - 1
		mu.Unlock()
	}
	return res
}

// get performs one GET and returns the X-Backend header of a 200 answer
// after reading the whole body.
func get(ctx context.Context, hc *http.Client, url string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		return "", fmt.Errorf("read body: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("status %s", resp.Status)
	}
	id := resp.Header.Get("X-Backend")
	if id == "" {
		return "", fmt.Errorf("no X-Backend header")
	}
	return id, nil
}
