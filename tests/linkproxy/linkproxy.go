package linkproxy

import (
	"fmt"
	"net"
	"sync"
	"time"
)

// Proxy is a TCP proxy that emulates a network link between the S3
// clients and the loopback S3 server: a bandwidth limit shared by every
// connection (one token bucket per direction, since links are full duplex),
// optionally a limit on each connection alone (what one TCP flow to a
// remote store gets, whatever the link), and a one-way propagation delay
// of rtt/2 per direction.
//
// The delay is applied by stamping each chunk with the time it was read and
// writing it on no earlier than stamp+rtt/2, from a queue: the link then
// holds up to a queue of bytes in flight, like a real one, so the delay
// costs each request one RTT without capping a connection's throughput the
// way sleeping before every chunk would.
type Proxy struct {
	ln     net.Listener
	target string
	delay  time.Duration // one way: rtt/2
	up     *tokenBucket  // client to server; nil means unlimited
	down   *tokenBucket  // server to client
	// perConn is each connection's own limit per direction, bytes/s; 0
	// means none.
	perConn float64

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
	wg     sync.WaitGroup
}

// Options are the emulated link's properties; zero values disable each.
type Options struct {
	RateBitsPerSec float64
	// ConnBitsPerSec caps each connection on its own, on top of the shared
	// RateBitsPerSec.
	ConnBitsPerSec float64
	RTT            time.Duration
}

func (o Options) Enabled() bool {
	return o.RateBitsPerSec > 0 || o.ConnBitsPerSec > 0 || o.RTT > 0
}

// Start listens on listen (e.g. "127.0.0.1:0") and forwards every
// connection to target through the emulated link.
func Start(listen, target string, opts Options) (*Proxy, error) {
	if opts.RateBitsPerSec < 0 || opts.ConnBitsPerSec < 0 || opts.RTT < 0 {
		return nil, fmt.Errorf("link proxy: negative rate or RTT")
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return nil, fmt.Errorf("link proxy: %w", err)
	}
	p := &Proxy{ln: ln, target: target, delay: opts.RTT / 2, perConn: opts.ConnBitsPerSec / 8, conns: map[net.Conn]struct{}{}}
	if opts.RateBitsPerSec > 0 {
		p.up = newTokenBucket(opts.RateBitsPerSec / 8)
		p.down = newTokenBucket(opts.RateBitsPerSec / 8)
	}
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// Addr is the address clients should dial.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Close stops accepting, closes every proxied connection and waits for the
// forwarding goroutines.
func (p *Proxy) Close() error {
	err := p.ln.Close()
	p.mu.Lock()
	p.closed = true
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
	return err
}

// track registers c for Close; it reports false once the proxy is closed.
func (p *Proxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *Proxy) untrack(c net.Conn) {
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		client, err := p.ln.Accept()
		if err != nil {
			return // closed
		}
		p.wg.Add(1)
		go p.serve(client)
	}
}

func (p *Proxy) serve(client net.Conn) {
	defer p.wg.Done()
	server, err := net.Dial("tcp", p.target)
	if err != nil {
		client.Close()
		return
	}
	if !p.track(client) || !p.track(server) {
		client.Close()
		server.Close()
		return
	}
	defer func() {
		client.Close()
		server.Close()
		p.untrack(client)
		p.untrack(server)
	}()
	var connUp, connDown *tokenBucket
	if p.perConn > 0 {
		connUp, connDown = newTokenBucket(p.perConn), newTokenBucket(p.perConn)
	}
	var wg sync.WaitGroup
	wg.Go(func() { p.pipe(server, client, p.up, connUp) })
	p.pipe(client, server, p.down, connDown)
	wg.Wait()
}

// linkChunk is a piece of the byte stream and when it may leave the link.
type linkChunk struct {
	buf *[]byte
	n   int
	due time.Time
}

const (
	linkChunkSize = 64 << 10
	// linkQueueLen chunks may be in flight per direction per connection
	// (8 MiB): the emulated TCP window. At 20 ms RTT that is 800 MB/s per
	// connection, above what this machine's loopback pushes through a
	// userspace proxy.
	linkQueueLen = 128
)

var chunkPool = sync.Pool{New: func() any { b := make([]byte, linkChunkSize); return &b }}

// pipe copies src to dst through the link: a reader stamps chunks into a
// queue, the writer releases each one when it is due and the rate allows.
// A chunk waits for both the shared link's bucket and the connection's
// own (conn): each reservation queues it in time, so it leaves when the
// later of the two allows. At EOF it half-closes dst so that the other
// direction can finish.
func (p *Proxy) pipe(dst, src net.Conn, bucket, conn *tokenBucket) {
	q := make(chan linkChunk, linkQueueLen)
	go func() {
		defer close(q)
		for {
			b := chunkPool.Get().(*[]byte)
			n, err := src.Read(*b)
			if n > 0 {
				q <- linkChunk{buf: b, n: n, due: time.Now().Add(p.delay)}
			} else {
				chunkPool.Put(b)
			}
			if err != nil {
				return
			}
		}
	}()
	var timer *time.Timer
	failed := false
	for c := range q {
		if failed {
			chunkPool.Put(c.buf)
			continue // drain so the reader can finish
		}
		if wait := time.Until(c.due); wait > 0 {
			timer = waitTimer(timer, wait)
		}
		if wait := max(bucket.take(c.n), conn.take(c.n)); wait > 0 {
			timer = waitTimer(timer, wait)
		}
		_, err := dst.Write((*c.buf)[:c.n])
		chunkPool.Put(c.buf)
		if err != nil {
			// The peer is gone: unblock the reader and drop the rest.
			failed = true
			src.Close()
		}
	}
	if tc, ok := dst.(*net.TCPConn); ok && !failed {
		_ = tc.CloseWrite()
	} else {
		dst.Close()
	}
}

// waitTimer blocks for d on a reused timer. This is the emulated link's
// clock, not synchronisation: the bytes really are due d from now.
func waitTimer(t *time.Timer, d time.Duration) *time.Timer {
	if t == nil {
		t = time.NewTimer(d)
	} else {
		t.Reset(d)
	}
	<-t.C
	return t
}

// tokenBucket is a rate limit shared by many writers. take reserves tokens
// first and then reports how long to wait for them, so concurrent writers
// queue up in time and the long-run rate is exact even when timers fire
// late (the lateness is absorbed by the burst allowance).
type tokenBucket struct {
	mu     sync.Mutex
	rate   float64 // bytes per second
	burst  float64
	tokens float64
	last   time.Time
}

func newTokenBucket(bytesPerSec float64) *tokenBucket {
	// 10 ms of traffic, at least two chunks: enough to absorb timer
	// lateness, small enough not to show as a burst in a measurement.
	burst := max(bytesPerSec/100, 2*linkChunkSize)
	return &tokenBucket{rate: bytesPerSec, burst: burst, tokens: burst, last: time.Now()}
}

// take reserves n bytes and returns how long the caller must wait before
// sending them. A nil bucket is unlimited.
func (b *tokenBucket) take(n int) time.Duration {
	if b == nil {
		return 0
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	now := time.Now()
	b.tokens = min(b.burst, b.tokens+now.Sub(b.last).Seconds()*b.rate)
	b.last = now
	b.tokens -= float64(n)
	if b.tokens >= 0 {
		return 0
	}
	return time.Duration(-b.tokens / b.rate * float64(time.Second))
}
