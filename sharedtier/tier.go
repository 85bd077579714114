package sharedtier

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsmiddleware "github.com/aws/aws-sdk-go-v2/aws/middleware"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/modelfs/modelfs/blockcache"
)

// Client is the part of the S3 API the tier uses; *s3.Client has it.
type Client interface {
	GetObject(ctx context.Context, in *s3.GetObjectInput, opts ...func(*s3.Options)) (*s3.GetObjectOutput, error)
	PutObject(ctx context.Context, in *s3.PutObjectInput, opts ...func(*s3.Options)) (*s3.PutObjectOutput, error)
	HeadObject(ctx context.Context, in *s3.HeadObjectInput, opts ...func(*s3.Options)) (*s3.HeadObjectOutput, error)
	DeleteObject(ctx context.Context, in *s3.DeleteObjectInput, opts ...func(*s3.Options)) (*s3.DeleteObjectOutput, error)
}

// Observer sees each GET of a shared block: its outcome ("hit", "miss",
// "damaged" or "error") and how long it took, body included.
type Observer interface {
	SharedGet(outcome string, d time.Duration)
}

// Options configure a Tier. Zero durations and sizes take the defaults
// named on each.
type Options struct {
	Client Client
	// Bucket and Prefix locate the tier in the shared store.
	Bucket, Prefix string
	// BlockSize is the cache's block size, part of every block's identity.
	BlockSize int64
	// RequestTimeout bounds each request to the shared store, body
	// included (default 10s): past it, the read goes to the origin.
	RequestTimeout time.Duration
	// ClaimWait is the least a node that lost a block's claim waits for
	// the winner's copy before it reads the origin itself (default 5s).
	// It waits longer when this node's own origin loads are slow: three
	// times their moving average, as the winner's load is likely as slow
	// and its write comes after; never past ClaimTTL.
	ClaimWait time.Duration
	// ClaimTTL is the age, by the store's clock, past which a claim is
	// taken to belong to a node that died (default 60s). It also bounds
	// a loser's whole wait, however long the winner keeps its claim
	// fresh.
	ClaimTTL time.Duration
	// ClaimRefresh is how often a winner rewrites its claim while it
	// fetches and writes the block (default 1s). A loser keeps waiting
	// past ClaimWait while the claim is younger than three refreshes and
	// a second (Last-Modified has whole seconds), so a winner that is
	// slow but alive is waited for, and one that died is not.
	ClaimRefresh time.Duration
	// DownFor is how long the store is left alone after a request to it
	// failed (default 10s), so an unreachable store costs one timeout,
	// not one per block.
	DownFor time.Duration
	// QueueBytes bounds the bytes waiting to be written (default 16
	// blocks); Writers, the writes under way (default 4).
	QueueBytes int64
	Writers    int
	// WaitForRoom makes a load that finds the queue full wait for room
	// instead of dropping the write: for warm, which has no reader to
	// hold up and exists to fill caches.
	WaitForRoom bool
	// DrainTimeout bounds how long Close lets queued writes finish
	// (default 30s).
	DrainTimeout time.Duration
	// Shareable says whether an object's blocks may go through the tier;
	// nil means all. Objects whose identity is local to a node (a local
	// directory) must not.
	Shareable func(blockcache.ObjectID) bool
	Observer  Observer
	Logger    *slog.Logger
}

func (o Options) withDefaults() Options {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&o.RequestTimeout, 10*time.Second)
	def(&o.ClaimWait, 5*time.Second)
	def(&o.ClaimTTL, time.Minute)
	def(&o.ClaimRefresh, time.Second)
	def(&o.DownFor, 10*time.Second)
	def(&o.DrainTimeout, 30*time.Second)
	if o.QueueBytes <= 0 {
		o.QueueBytes = 16 * o.BlockSize
	}
	if o.Writers <= 0 {
		o.Writers = 4
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Prefix != "" && !strings.HasSuffix(o.Prefix, "/") {
		o.Prefix += "/"
	}
	return o
}

// Stats are the tier's cumulative counters.
type Stats struct {
	// Hits are blocks served from the shared store (HitBytes their
	// bytes); Misses, blocks it did not have or had damaged; Damaged,
	// the objects that failed their check (counted in Misses too).
	Hits, HitBytes, Misses, Damaged int64
	// Errors are failed requests to the store (timeouts, refusals,
	// server errors); Bypassed, reads sent straight to the origin while
	// the store was left alone after one.
	Errors, Bypassed int64
	// Writes are blocks written back (WriteBytes their bytes);
	// WriteDrops, write-backs dropped because the queue was full;
	// WriteErrors, write-backs the store refused or that timed out.
	Writes, WriteBytes, WriteDrops, WriteErrors int64
	// Claims: won (this node fetched from the origin for the cluster),
	// lost (another node was fetching it), timed out (the winner's copy
	// did not come in time, or the claim was released without one, and
	// this node read the origin), stale (taken over from a dead node).
	ClaimsWon, ClaimsLost, ClaimTimeouts, ClaimsStale int64
	// ClaimRefreshes are rewrites of claims this node held while it
	// fetched, which keep their losers waiting.
	ClaimRefreshes int64
	// Purges are objects whose shared blocks were deleted after they
	// failed their whole-object check; PurgedBlocks, the blocks deleted
	// (a delete of a block not there counts: S3 does not tell);
	// PurgeErrors, the deletes that failed.
	Purges, PurgedBlocks, PurgeErrors int64
}

type counters struct {
	hits, hitBytes, misses, damaged, errors, bypassed atomic.Int64
	writes, writeBytes, writeDrops, writeErrors       atomic.Int64
	claimsWon, claimsLost, claimTimeouts, claimsStale atomic.Int64
	purges, purgedBlocks, purgeErrors                 atomic.Int64
	claimRefreshes                                    atomic.Int64
}

// Tier is a blockcache.Loader that serves blocks from a shared S3 store
// and fills it from the origin Loader it wraps. Close it to finish its
// write-backs.
type Tier struct {
	opts   Options
	origin blockcache.Loader
	node   string // written in claims, for whoever inspects the store
	st     counters

	downUntil atomic.Int64 // unix nanoseconds
	// originAvg is the moving average of this node's origin loads, in
	// nanoseconds, for ClaimWait.
	originAvg atomic.Int64

	mu     sync.RWMutex // guards closed against sends on jobs
	closed bool
	jobs   chan writeJob
	queued atomic.Int64  // bytes in jobs
	room   chan struct{} // signalled as writes finish, for WaitForRoom
	// bufs recycles write-back buffers: fresh block-sized allocations
	// at the origin's pace would keep the collector busy.
	bufs   sync.Pool
	wg     sync.WaitGroup
	ctx    context.Context // the writers'; cancelled past DrainTimeout
	cancel context.CancelFunc
}

type writeJob struct {
	key, claim string
	hold       *heldClaim // the claim's refresher, stopped before its release
	body       []byte     // nil: only release the claim
	payload    int64
}

// New returns a Tier in front of origin. opts.Client, Bucket and
// BlockSize are required.
func New(opts Options, origin blockcache.Loader) (*Tier, error) {
	if opts.Client == nil || opts.Bucket == "" || opts.BlockSize <= 0 {
		return nil, errors.New("shared tier: a client, a bucket and a block size are required")
	}
	opts = opts.withDefaults()
	var id [8]byte
	_, _ = rand.Read(id[:])
	ctx, cancel := context.WithCancel(context.Background())
	t := &Tier{
		opts: opts, origin: origin, node: hex.EncodeToString(id[:]), ctx: ctx, cancel: cancel,
		// Room for every block the byte budget allows, plus claim
		// releases, so a send only fails when the budget does.
		jobs: make(chan writeJob, int(opts.QueueBytes/opts.BlockSize)+2*opts.Writers+64),
		room: make(chan struct{}, 1),
	}
	for range opts.Writers {
		t.wg.Go(t.writer)
	}
	return t, nil
}

// Stats returns the counters.
func (t *Tier) Stats() Stats {
	s := &t.st
	return Stats{
		Hits: s.hits.Load(), HitBytes: s.hitBytes.Load(), Misses: s.misses.Load(), Damaged: s.damaged.Load(),
		Errors: s.errors.Load(), Bypassed: s.bypassed.Load(),
		Writes: s.writes.Load(), WriteBytes: s.writeBytes.Load(), WriteDrops: s.writeDrops.Load(), WriteErrors: s.writeErrors.Load(),
		ClaimsWon: s.claimsWon.Load(), ClaimsLost: s.claimsLost.Load(), ClaimTimeouts: s.claimTimeouts.Load(), ClaimsStale: s.claimsStale.Load(),
		ClaimRefreshes: s.claimRefreshes.Load(),
		Purges:         s.purges.Load(), PurgedBlocks: s.purgedBlocks.Load(), PurgeErrors: s.purgeErrors.Load(),
	}
}

// Close stops taking write-backs and waits for those queued, at most
// DrainTimeout; then it abandons the rest. It does not close the origin.
func (t *Tier) Close() {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return
	}
	t.closed = true
	close(t.jobs)
	t.mu.Unlock()
	done := make(chan struct{})
	go func() { t.wg.Wait(); close(done) }()
	timer := time.NewTimer(t.opts.DrainTimeout)
	defer timer.Stop()
	select {
	case <-done:
	case <-timer.C:
		t.opts.Logger.Warn("shared cache: write-backs abandoned at close", "queued_bytes", t.queued.Load())
		t.cancel()
		<-done
	}
	t.cancel()
}

// LoadBlock fills p with the block at off of obj: from the shared store
// if it holds a valid copy, else from the origin, writing the block back
// when this node holds the block's claim. It fails only when the origin
// does: the shared store's failures are misses.
func (t *Tier) LoadBlock(ctx context.Context, obj blockcache.ObjectID, off int64, p []byte) error {
	bs := t.opts.BlockSize
	if off%bs != 0 || (t.opts.Shareable != nil && !t.opts.Shareable(obj)) {
		return t.loadOrigin(ctx, obj, off, p)
	}
	if t.down() {
		t.st.bypassed.Add(1)
		return t.loadOrigin(ctx, obj, off, p)
	}
	id := identity(obj, bs, off/bs)
	h := keyHash(id)
	blockKey, claimKey := t.opts.Prefix+"blocks/"+h, t.opts.Prefix+"claims/"+h
	switch err := t.get(ctx, blockKey, id, p, false); {
	case err == nil:
		return nil
	case errors.Is(err, errNotFound), errors.Is(err, errDamaged):
		// A miss: claim the block below, and overwrite a damaged copy.
	default:
		t.failUnlessCancelled(ctx, err)
		return t.loadOrigin(ctx, obj, off, p)
	}
	// Waits for other nodes' copies share one wait, however many rounds
	// it takes.
	w := t.newWait()
	for range maxClaimRounds {
		hold, err := t.claim(ctx, claimKey)
		if err != nil {
			t.failUnlessCancelled(ctx, err)
			return t.loadOrigin(ctx, obj, off, p)
		}
		if hold != nil {
			return t.fetchAsWinner(ctx, obj, off, p, blockKey, claimKey, id, hold)
		}
		switch t.await(ctx, blockKey, claimKey, id, p, w) {
		case gotBlock:
			return nil
		case released:
			// The winner failed or dropped its write: take the claim, so
			// one node, not every waiting one, reads the origin again.
			continue
		}
		break
	}
	t.st.claimTimeouts.Add(1)
	return t.loadOrigin(ctx, obj, off, p)
}

// loadOrigin loads from the origin, timing successful loads for
// claimWait.
func (t *Tier) loadOrigin(ctx context.Context, obj blockcache.ObjectID, off int64, p []byte) error {
	start := time.Now()
	err := t.origin.LoadBlock(ctx, obj, off, p)
	if err == nil {
		d := int64(time.Since(start))
		// An exponential moving average, 1/8 weight to the new load;
		// racing updates may lose one, which an average can afford.
		old := t.originAvg.Load()
		if old == 0 {
			t.originAvg.Store(d)
		} else {
			t.originAvg.Store(old + (d-old)/8)
		}
	}
	return err
}

// claimWait is how long a loser waits for the winner's copy in all.
func (t *Tier) claimWait() time.Duration {
	return min(max(t.opts.ClaimWait, 3*time.Duration(t.originAvg.Load())), t.opts.ClaimTTL)
}

// maxClaimRounds bounds how often a node whose winner released its claim
// without the block tries to claim it in turn.
const maxClaimRounds = 3

// fetchAsWinner loads a block whose claim this node holds, and queues it
// for the shared store.
func (t *Tier) fetchAsWinner(ctx context.Context, obj blockcache.ObjectID, off int64, p []byte, blockKey, claimKey, id string, hold *heldClaim) error {
	// A node whose miss came just before another's write-back, and whose
	// claim just after that node released its own, would fetch the block
	// again: look once more before reading the origin.
	if err := t.get(ctx, blockKey, id, p, true); err == nil {
		t.release(claimKey, hold)
		return nil
	}
	if err := t.loadOrigin(ctx, obj, off, p); err != nil {
		t.release(claimKey, hold)
		return err
	}
	t.writeBack(ctx, blockKey, claimKey, id, p, hold)
	return nil
}

var errNotFound = errors.New("shared block not found")

// get reads the shared object key into p, checked against id. A recheck
// counts only a hit: its miss was counted already.
func (t *Tier) get(ctx context.Context, key, id string, p []byte, recheck bool) error {
	ctx, cancel := context.WithTimeout(ctx, t.opts.RequestTimeout)
	defer cancel()
	start := time.Now()
	outcome := "error"
	defer func() {
		if o := t.opts.Observer; o != nil {
			o.SharedGet(outcome, time.Since(start))
		}
	}()
	out, err := t.opts.Client.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(t.opts.Bucket), Key: aws.String(key)})
	if err != nil {
		if httpStatus(err) == http.StatusNotFound {
			outcome = "miss"
			if !recheck {
				t.st.misses.Add(1)
			}
			return errNotFound
		}
		return fmt.Errorf("shared cache: get: %w", err)
	}
	defer out.Body.Close()
	size := int64(-1)
	if out.ContentLength != nil {
		size = *out.ContentLength
	}
	err = decodeInto(out.Body, size, id, p)
	switch {
	case err == nil:
		outcome = "hit"
		t.st.hits.Add(1)
		t.st.hitBytes.Add(int64(len(p)))
		return nil
	case ctx.Err() != nil:
		// The body was cut short by the timeout: the store is slow, the
		// object may be fine.
		return fmt.Errorf("shared cache: get: %w", ctx.Err())
	default:
		outcome = "damaged"
		if recheck {
			return err
		}
		t.st.misses.Add(1)
		t.st.damaged.Add(1)
		t.opts.Logger.Warn("shared cache: block damaged or foreign, overwriting", "key", key, "err", err)
		return err
	}
}

// claim tries to take the block's claim: a new claim object, or one
// older than ClaimTTL by the store's clock. It reports whether this node
// holds it.
func (t *Tier) claim(ctx context.Context, key string) (*heldClaim, error) {
	// Twice at most: a claim released between the PUT and the HEAD is
	// tried once more, then taken as lost.
	for range 2 {
		etag, err := t.put(ctx, key, []byte("claimed by modelfs node "+t.node+"\n"), func(in *s3.PutObjectInput) { in.IfNoneMatch = aws.String("*") })
		if err == nil {
			t.st.claimsWon.Add(1)
			return t.holdClaim(key, etag), nil
		}
		if !conflict(err) {
			return nil, err
		}
		hctx, cancel := context.WithTimeout(ctx, t.opts.RequestTimeout)
		head, err := t.opts.Client.HeadObject(hctx, &s3.HeadObjectInput{Bucket: aws.String(t.opts.Bucket), Key: aws.String(key)})
		cancel()
		if httpStatus(err) == http.StatusNotFound {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("shared cache: head claim: %w", err)
		}
		now, ok := awsmiddleware.GetServerTime(head.ResultMetadata)
		if !ok {
			now = time.Now()
		}
		if head.LastModified == nil || now.Sub(*head.LastModified) < t.opts.ClaimTTL || head.ETag == nil {
			t.st.claimsLost.Add(1)
			return nil, nil
		}
		// Stale: its node died or gave up. Take it over only as it is, so
		// of several nodes that saw it stale one wins.
		etag, err = t.put(ctx, key, []byte("claimed by modelfs node "+t.node+" (stale claim taken over)\n"), func(in *s3.PutObjectInput) { in.IfMatch = head.ETag })
		switch {
		case err == nil:
			t.st.claimsWon.Add(1)
			t.st.claimsStale.Add(1)
			return t.holdClaim(key, etag), nil
		case conflict(err) || httpStatus(err) == http.StatusNotFound:
			t.st.claimsLost.Add(1)
			return nil, nil
		default:
			return nil, err
		}
	}
	t.st.claimsLost.Add(1)
	return nil, nil
}

// awaitResult is how a wait for another node's copy ended.
type awaitResult int

const (
	gotBlock awaitResult = iota // p holds the block
	released                    // the claim is gone and the block is not there
	gaveUp                      // past the deadline, or the store failed
)

// await polls for the block another node is fetching, with bounded
// backoff, until w's deadline.
func (t *Tier) await(ctx context.Context, blockKey, claimKey, id string, p []byte, w *wait) awaitResult {
	delay := min(20*time.Millisecond, max(w.left(), time.Millisecond))
	timer := time.NewTimer(delay)
	defer timer.Stop()
	// 160 polls outlast ClaimTTL's default, a loser's longest wait, at
	// the longest delay.
	for range 160 {
		select {
		case <-ctx.Done():
			return gaveUp
		case <-timer.C:
		}
		switch err := t.get(ctx, blockKey, id, p, true); {
		case err == nil:
			return gotBlock
		case errors.Is(err, errDamaged):
			// Left from before; the winner overwrites it.
		case errors.Is(err, errNotFound):
			hctx, cancel := context.WithTimeout(ctx, t.opts.RequestTimeout)
			head, herr := t.opts.Client.HeadObject(hctx, &s3.HeadObjectInput{Bucket: aws.String(t.opts.Bucket), Key: aws.String(claimKey)})
			cancel()
			if httpStatus(herr) == http.StatusNotFound {
				// Released with no block: the winner failed or dropped it.
				return released
			}
			if herr == nil {
				w.seen(head)
			}
		default:
			t.failUnlessCancelled(ctx, err)
			return gaveUp
		}
		left := w.left()
		if left <= 0 {
			return gaveUp
		}
		delay = min(2*delay, 500*time.Millisecond, left)
		timer.Reset(delay)
	}
	return gaveUp
}

// writeBack queues p for writing, or drops it (counted) when the queue is
// full: a reader never waits for the shared store's writes. With
// WaitForRoom it waits for room, as long as ctx allows.
func (t *Tier) writeBack(ctx context.Context, key, claim, id string, p []byte, hold *heldClaim) {
	n := int64(headerSize + len(id) + len(p))
	for t.queued.Add(n) > t.opts.QueueBytes {
		t.queued.Add(-n)
		if t.opts.WaitForRoom && !t.isClosed() {
			select {
			case <-t.room:
				continue
			case <-ctx.Done():
			case <-t.ctx.Done():
			}
		}
		t.st.writeDrops.Add(1)
		t.release(claim, hold)
		return
	}
	body := t.encode(id, p)
	if !t.enqueue(writeJob{key: key, claim: claim, hold: hold, body: body, payload: int64(len(p))}) {
		t.queued.Add(-n)
		t.st.writeDrops.Add(1)
		t.bufs.Put(&body)
		hold.stop()
	}
}

func (t *Tier) isClosed() bool {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.closed
}

// encode is the shared object for p, in a recycled buffer.
func (t *Tier) encode(id string, p []byte) []byte {
	n := headerSize + len(id) + len(p)
	if b, ok := t.bufs.Get().(*[]byte); ok && cap(*b) >= n {
		return encodeInto((*b)[:n], id, p)
	}
	return encodeInto(make([]byte, n), id, p)
}

// enqueue hands j to the writers unless the queue is full or closed.
func (t *Tier) enqueue(j writeJob) bool {
	t.mu.RLock()
	defer t.mu.RUnlock()
	if t.closed {
		return false
	}
	select {
	case t.jobs <- j:
		return true
	default:
		return false
	}
}

func (t *Tier) writer() {
	for j := range t.jobs {
		if j.body != nil {
			if _, err := t.put(t.ctx, j.key, j.body, nil); err != nil {
				t.st.writeErrors.Add(1)
				t.opts.Logger.Warn("shared cache: write-back failed", "key", j.key, "err", err)
			} else {
				t.st.writes.Add(1)
				t.st.writeBytes.Add(j.payload)
			}
			t.queued.Add(-int64(len(j.body)))
			t.bufs.Put(&j.body)
			select {
			case t.room <- struct{}{}:
			default:
			}
		}
		// Released after the block is there (or will not be), so a
		// waiting node finds one or the other; the refresher stops
		// first, so that it cannot write the claim again after.
		j.hold.stop()
		ctx, cancel := context.WithTimeout(t.ctx, t.opts.RequestTimeout)
		_, _ = t.opts.Client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(t.opts.Bucket), Key: aws.String(j.claim)})
		cancel()
	}
}

// put writes key and returns the new object's ETag.
func (t *Tier) put(ctx context.Context, key string, body []byte, set func(*s3.PutObjectInput)) (*string, error) {
	ctx, cancel := context.WithTimeout(ctx, t.opts.RequestTimeout)
	defer cancel()
	in := &s3.PutObjectInput{
		Bucket: aws.String(t.opts.Bucket), Key: aws.String(key),
		Body: bytesReader(body), ContentLength: aws.Int64(int64(len(body))),
	}
	if set != nil {
		set(in)
	}
	out, err := t.opts.Client.PutObject(ctx, in)
	if err != nil {
		return nil, fmt.Errorf("shared cache: put: %w", err)
	}
	return out.ETag, nil
}

// down reports whether the store is being left alone after a failure.
func (t *Tier) down() bool { return time.Now().UnixNano() < t.downUntil.Load() }

// fail counts a failed request and leaves the store alone for DownFor;
// it logs once per outage.
func (t *Tier) fail(err error) {
	t.st.errors.Add(1)
	until := time.Now().Add(t.opts.DownFor).UnixNano()
	if prev := t.downUntil.Swap(until); prev < time.Now().UnixNano() {
		t.opts.Logger.Warn("shared cache unavailable: reading the origin", "for", t.opts.DownFor, "err", err)
	}
}

// failUnlessCancelled is fail, unless the load itself was cancelled: the
// store is not at fault then.
func (t *Tier) failUnlessCancelled(ctx context.Context, err error) {
	if ctx.Err() == nil {
		t.fail(err)
	}
}

// httpStatus is the HTTP status of a failed request, 0 if none came.
func httpStatus(err error) int {
	var re *awshttp.ResponseError
	if errors.As(err, &re) {
		return re.HTTPStatusCode()
	}
	return 0
}

// conflict: a conditional write lost (412), or raced another (409).
func conflict(err error) bool {
	s := httpStatus(err)
	return s == http.StatusPreconditionFailed || s == http.StatusConflict
}
