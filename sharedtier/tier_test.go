package sharedtier

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/modelfs/modelfs/blockcache"
	"github.com/modelfs/modelfs/fetch"
	"github.com/modelfs/modelfs/tests/s3server"
)

const (
	testBS           = 64 << 10
	testKey, testSec = "AKIDSHAREDTIER", "shared-tier-secret"
)

// store is a shared store on loopback, reached through the real SDK.
type store struct {
	srv    *s3server.Server
	client *s3.Client
}

func newStore(t *testing.T) *store {
	t.Helper()
	srv := s3server.StartTest(t, s3server.Options{AccessKey: testKey, SecretKey: testSec}, "shared")
	return &store{srv: srv, client: newClient(t, srv.URL(), testKey, testSec)}
}

func newClient(t *testing.T, endpoint, key, secret string) *s3.Client {
	t.Helper()
	t.Setenv("AWS_ACCESS_KEY_ID", key)
	t.Setenv("AWS_SECRET_ACCESS_KEY", secret)
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(t.TempDir(), "none"))
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(t.TempDir(), "none"))
	t.Setenv("AWS_PROFILE", "")
	t.Setenv("AWS_REGION", "")
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	c, err := fetch.NewS3Client(context.Background(), fetch.S3ClientOptions{Endpoint: endpoint, MaxConns: 8})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// origin stands in for the source's Loader: deterministic bytes per
// object and offset, counted; with gate set, each load waits for it.
type origin struct {
	loads   atomic.Int64
	started chan struct{} // one value per load started, if set
	gate    chan struct{}
	fail    error // returned after the gate, if set
}

func blockBytes(obj blockcache.ObjectID, off int64, n int) []byte {
	p := make([]byte, n)
	seed := fmt.Sprintf("%s|%s|%d|", obj.Source, obj.Version, off)
	for i := range p {
		p[i] = seed[i%len(seed)] ^ byte(i>>8)
	}
	return p
}

func (o *origin) LoadBlock(ctx context.Context, obj blockcache.ObjectID, off int64, p []byte) error {
	o.loads.Add(1)
	if o.started != nil {
		o.started <- struct{}{}
	}
	if o.gate != nil {
		select {
		case <-o.gate:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if o.fail != nil {
		return o.fail
	}
	copy(p, blockBytes(obj, off, len(p)))
	return nil
}

var model = blockcache.ObjectID{Source: "s3+http://origin.example/models/\x00llama/model.safetensors", Name: "model.safetensors", Version: `"etag-1"`, Size: 3 * testBS}

func (s *store) tier(t *testing.T, o blockcache.Loader, set func(*Options)) *Tier {
	t.Helper()
	opts := Options{Client: s.client, Bucket: "shared", Prefix: "cluster-a", BlockSize: testBS, RequestTimeout: 5 * time.Second}
	if set != nil {
		set(&opts)
	}
	tr, err := New(opts, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tr.Close)
	return tr
}

func load(t *testing.T, tr *Tier, obj blockcache.ObjectID, index int64) {
	t.Helper()
	p := make([]byte, testBS)
	if err := tr.LoadBlock(context.Background(), obj, index*testBS, p); err != nil {
		t.Fatalf("block %d: %v", index, err)
	}
	if !bytes.Equal(p, blockBytes(obj, index*testBS, testBS)) {
		t.Fatalf("block %d: wrong bytes", index)
	}
}

func (s *store) keys(t *testing.T, prefix string) []string {
	t.Helper()
	out, err := s.client.ListObjectsV2(context.Background(), &s3.ListObjectsV2Input{Bucket: aws.String("shared"), Prefix: aws.String(prefix)})
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, o := range out.Contents {
		keys = append(keys, *o.Key)
	}
	return keys
}

func blockKey(obj blockcache.ObjectID, index int64) string {
	return "cluster-a/blocks/" + keyHash(identity(obj, testBS, index))
}

// A miss loads from the origin and writes the block back; the next node
// reads it from the shared store and never asks the origin.
func TestMissWritesBackThenHits(t *testing.T) {
	s := newStore(t)
	o1 := &origin{}
	a := s.tier(t, o1, nil)
	load(t, a, model, 1)
	a.Close()
	st := a.Stats()
	if o1.loads.Load() != 1 || st.Misses != 1 || st.ClaimsWon != 1 || st.Writes != 1 || st.WriteBytes != testBS {
		t.Fatalf("first node: origin loads %d, stats %+v; want one miss, one claim won, one write", o1.loads.Load(), st)
	}
	if got := s.keys(t, "cluster-a/"); len(got) != 1 || got[0] != blockKey(model, 1) {
		t.Fatalf("shared store holds %q, want only the block (claim released)", got)
	}
	o2 := &origin{}
	b := s.tier(t, o2, nil)
	load(t, b, model, 1)
	if st := b.Stats(); o2.loads.Load() != 0 || st.Hits != 1 || st.HitBytes != testBS {
		t.Fatalf("second node: origin loads %d, stats %+v; want one hit and no origin load", o2.loads.Load(), st)
	}
	// Another version of the same object is another block.
	v2 := model
	v2.Version = `"etag-2"`
	load(t, b, v2, 1)
	if o2.loads.Load() != 1 {
		t.Fatalf("a new version was served from the old version's shared block")
	}
}

// A shared object that is damaged, truncated, or a valid block of another
// identity is a miss, counted, and overwritten with the right block.
func TestDamagedOrForeignBlockIsAMiss(t *testing.T) {
	other := model
	other.Source = "s3+http://other.example/models/\x00llama/model.safetensors"
	good := encode(identity(model, testBS, 0), blockBytes(model, 0, testBS))
	for name, body := range map[string][]byte{
		"foreign":   encode(identity(other, testBS, 0), blockBytes(other, 0, testBS)),
		"truncated": good[:len(good)-100],
		"flipped": func() []byte {
			b := bytes.Clone(good)
			b[len(b)-1] ^= 1
			return b
		}(),
		"garbage": []byte("not a block at all"),
	} {
		t.Run(name, func(t *testing.T) {
			s := newStore(t)
			if _, err := s.srv.PutObject("shared", blockKey(model, 0), body); err != nil {
				t.Fatal(err)
			}
			o := &origin{}
			a := s.tier(t, o, nil)
			load(t, a, model, 0)
			a.Close()
			if st := a.Stats(); o.loads.Load() != 1 || st.Damaged != 1 || st.Hits != 0 || st.Writes != 1 {
				t.Fatalf("origin loads %d, stats %+v; want the origin, one damaged, one write", o.loads.Load(), st)
			}
			o2 := &origin{}
			b := s.tier(t, o2, nil)
			load(t, b, model, 0)
			if st := b.Stats(); o2.loads.Load() != 0 || st.Hits != 1 {
				t.Fatalf("after overwrite: origin loads %d, stats %+v; want a hit", o2.loads.Load(), st)
			}
		})
	}
}

// Two nodes miss the same block at once: the one holding the claim reads
// the origin, the other waits for its copy.
func TestClaimLostWaitsForTheWinner(t *testing.T) {
	s := newStore(t)
	oa := &origin{started: make(chan struct{}, 1), gate: make(chan struct{})}
	a := s.tier(t, oa, nil)
	ob := &origin{}
	b := s.tier(t, ob, func(o *Options) { o.ClaimWait = time.Minute })
	aDone := make(chan struct{})
	go func() {
		defer close(aDone)
		load(t, a, model, 2)
	}()
	<-oa.started // a holds the claim and is reading the origin
	bDone := make(chan struct{})
	go func() {
		defer close(bDone)
		load(t, b, model, 2)
	}()
	waitFor(t, "b to lose the claim", func() bool { return b.Stats().ClaimsLost == 1 })
	close(oa.gate)
	<-aDone
	<-bDone
	if st := b.Stats(); ob.loads.Load() != 0 || st.Hits != 1 || st.ClaimTimeouts != 0 {
		t.Fatalf("loser: origin loads %d, stats %+v; want the winner's copy", ob.loads.Load(), st)
	}
	if oa.loads.Load() != 1 || a.Stats().ClaimsWon != 1 {
		t.Fatalf("winner: origin loads %d, stats %+v", oa.loads.Load(), a.Stats())
	}
}

// A loser whose winner does not deliver reads the origin once ClaimTTL,
// the bound of its wait, passes, though the winner keeps its claim fresh.
func TestClaimWaitTimesOut(t *testing.T) {
	s := newStore(t)
	oa := &origin{started: make(chan struct{}, 1), gate: make(chan struct{})}
	a := s.tier(t, oa, func(o *Options) { o.ClaimRefresh = 100 * time.Millisecond })
	ob := &origin{}
	// A TTL of 2s: the claim, refreshed each 100ms, is never 2s old by the
	// store's whole-second clock, so it is waited on, not taken over.
	b := s.tier(t, ob, func(o *Options) { o.ClaimWait = 300 * time.Millisecond; o.ClaimTTL = 2 * time.Second })
	aDone := make(chan struct{})
	go func() {
		defer close(aDone)
		load(t, a, model, 0)
	}()
	<-oa.started
	start := time.Now()
	load(t, b, model, 0) // the winner is held until b is done
	waited := time.Since(start)
	close(oa.gate)
	<-aDone
	if st := b.Stats(); ob.loads.Load() != 1 || st.ClaimsLost != 1 || st.ClaimTimeouts != 1 || st.ClaimsStale != 0 {
		t.Fatalf("loser: origin loads %d, stats %+v; want a timeout, then the origin", ob.loads.Load(), st)
	}
	if waited < 2*time.Second-100*time.Millisecond {
		t.Fatalf("loser gave up after %v, before ClaimTTL, while the winner's claim was fresh", waited)
	}
}

// A loser waits past ClaimWait while the winner refreshes its claim, and
// gets the winner's copy.
func TestLoserWaitsWhileTheClaimIsFresh(t *testing.T) {
	s := newStore(t)
	oa := &origin{started: make(chan struct{}, 1), gate: make(chan struct{})}
	a := s.tier(t, oa, func(o *Options) { o.ClaimRefresh = 100 * time.Millisecond })
	ob := &origin{}
	b := s.tier(t, ob, func(o *Options) { o.ClaimWait = 200 * time.Millisecond; o.ClaimRefresh = 100 * time.Millisecond })
	aDone := make(chan struct{})
	go func() {
		defer close(aDone)
		load(t, a, model, 1)
	}()
	<-oa.started
	bDone := make(chan struct{})
	start := time.Now()
	go func() {
		defer close(bDone)
		load(t, b, model, 1)
	}()
	waitFor(t, "b to lose the claim", func() bool { return b.Stats().ClaimsLost == 1 })
	// Five refreshes: the winner has held the block past b's ClaimWait.
	waitFor(t, "the winner to refresh its claim", func() bool { return a.Stats().ClaimRefreshes >= 5 })
	if time.Since(start) < 200*time.Millisecond {
		t.Fatal("refreshes came faster than their interval")
	}
	select {
	case <-bDone:
		t.Fatalf("loser stopped waiting for a live winner: stats %+v", b.Stats())
	default:
	}
	close(oa.gate)
	<-aDone
	<-bDone
	if st := b.Stats(); ob.loads.Load() != 0 || st.Hits != 1 || st.ClaimTimeouts != 0 {
		t.Fatalf("loser: origin loads %d, stats %+v; want the winner's copy", ob.loads.Load(), st)
	}
	a.Close()
	if got := s.keys(t, "cluster-a/claims/"); len(got) != 0 {
		t.Fatalf("claims left after the release (a refresh wrote one back?): %q", got)
	}
}

// A claim older than ClaimTTL by the store's clock is taken over.
func TestStaleClaimIsTakenOver(t *testing.T) {
	s := newStore(t)
	claim := "cluster-a/claims/" + keyHash(identity(model, testBS, 0))
	if _, err := s.srv.PutObject("shared", claim, []byte("claimed by a node that died")); err != nil {
		t.Fatal(err)
	}
	// The claim was written two hours ago, by the store's clock.
	s.srv.SetHook(func(w http.ResponseWriter, r *http.Request) bool {
		if _, again := w.(backdated); again || r.Method != http.MethodHead || !strings.Contains(r.URL.Path, "/claims/") {
			return false
		}
		s.srv.Handler().ServeHTTP(backdated{w}, r)
		return true
	})
	o := &origin{}
	a := s.tier(t, o, func(o *Options) { o.ClaimTTL = time.Hour })
	load(t, a, model, 0)
	a.Close()
	if st := a.Stats(); o.loads.Load() != 1 || st.ClaimsStale != 1 || st.ClaimsWon != 1 || st.Writes != 1 {
		t.Fatalf("origin loads %d, stats %+v; want the stale claim taken and the block written", o.loads.Load(), st)
	}
	if got := s.keys(t, "cluster-a/claims/"); len(got) != 0 {
		t.Fatalf("claims left: %q", got)
	}
}

// backdated moves a response's Last-Modified two hours back.
type backdated struct{ http.ResponseWriter }

func (b backdated) WriteHeader(code int) {
	if lm, err := http.ParseTime(b.Header().Get("Last-Modified")); err == nil {
		b.Header().Set("Last-Modified", lm.Add(-2*time.Hour).UTC().Format(http.TimeFormat))
	}
	b.ResponseWriter.WriteHeader(code)
}

// A fresh claim (the store's clock agrees with ours) is not taken over.
func TestFreshClaimIsNotTakenOver(t *testing.T) {
	s := newStore(t)
	claim := "cluster-a/claims/" + keyHash(identity(model, testBS, 0))
	if _, err := s.srv.PutObject("shared", claim, []byte("claimed")); err != nil {
		t.Fatal(err)
	}
	o := &origin{}
	a := s.tier(t, o, func(o *Options) {
		o.ClaimTTL, o.ClaimWait, o.ClaimRefresh = time.Hour, 200*time.Millisecond, 100*time.Millisecond
	})
	load(t, a, model, 0)
	if st := a.Stats(); st.ClaimsLost != 1 || st.ClaimsStale != 0 || st.ClaimTimeouts != 1 || o.loads.Load() != 1 {
		t.Fatalf("origin loads %d, stats %+v; want the claim respected, then a timeout", o.loads.Load(), st)
	}
}

// Whatever the shared store does wrong, reads get the origin's bytes and
// no error, and the store is left alone for a while after.
func TestStoreFailuresFallBackToOrigin(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(t *testing.T, s *store) *s3.Client
	}{
		{"down", func(t *testing.T, s *store) *s3.Client {
			s.srv.Close()
			return s.client
		}},
		{"refused credentials", func(t *testing.T, s *store) *s3.Client {
			return newClient(t, s.srv.URL(), testKey, "wrong-secret")
		}},
		{"server errors", func(t *testing.T, s *store) *s3.Client {
			s.srv.SetHook(func(w http.ResponseWriter, r *http.Request) bool {
				s.srv.ServeFault(w, r, s3server.Fault{Kind: s3server.FaultInternalError})
				return true
			})
			return s.client
		}},
		{"stalled", func(t *testing.T, s *store) *s3.Client {
			s.srv.SetHook(func(w http.ResponseWriter, r *http.Request) bool {
				s.srv.ServeFault(w, r, s3server.Fault{Kind: s3server.FaultLatency, Delay: time.Hour})
				return true
			})
			return s.client
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newStore(t)
			c := tc.setup(t, s)
			o := &origin{}
			tr, err := New(Options{Client: c, Bucket: "shared", BlockSize: testBS, RequestTimeout: 300 * time.Millisecond, DrainTimeout: time.Second}, o)
			if err != nil {
				t.Fatal(err)
			}
			defer tr.Close()
			load(t, tr, model, 0)
			load(t, tr, model, 1)
			if st := tr.Stats(); o.loads.Load() != 2 || st.Errors != 1 || st.Bypassed != 1 || st.Hits != 0 {
				t.Fatalf("origin loads %d, stats %+v; want both from the origin, one error, then the store left alone", o.loads.Load(), st)
			}
		})
	}
}

// A full write queue drops write-backs, counted, and never holds a reader.
func TestFullWriteQueueDrops(t *testing.T) {
	s := newStore(t)
	release := make(chan struct{})
	var releaseOnce sync.Once
	unblock := func() { releaseOnce.Do(func() { close(release) }) }
	t.Cleanup(unblock)
	s.srv.SetHook(func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method == http.MethodPut && strings.Contains(r.URL.Path, "/blocks/") {
			select {
			case <-release:
			case <-r.Context().Done():
			}
		}
		return false
	})
	o := &origin{}
	tr := s.tier(t, o, func(o *Options) { o.QueueBytes = testBS + 1024; o.Writers = 1 })
	for i := range int64(3) {
		load(t, tr, model, i) // returns with the first write stalled
	}
	if st := tr.Stats(); st.WriteDrops != 2 || o.loads.Load() != 3 {
		t.Fatalf("origin loads %d, stats %+v; want two writes dropped", o.loads.Load(), st)
	}
	unblock()
	tr.Close()
	if st := tr.Stats(); st.Writes != 1 {
		t.Fatalf("stats %+v; want the queued write done at Close", st)
	}
	if got := s.keys(t, "cluster-a/claims/"); len(got) != 0 {
		t.Fatalf("claims of dropped writes left: %q", got)
	}
}

// waitFor waits, bounded, for cond.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestDecodeRejectsOversizedIdentity(t *testing.T) {
	id := identity(model, testBS, 0)
	b := encode(id, make([]byte, 10))
	b[8], b[9], b[10], b[11] = 0xff, 0xff, 0xff, 0x7f
	if err := decodeInto(bytes.NewReader(b), -1, id, make([]byte, 10)); err == nil {
		t.Fatal("a header claiming a 2 GiB identity was accepted")
	}
}

// With WaitForRoom (warm), a full queue holds the load until there is
// room, and no write is dropped.
func TestWaitForRoomDropsNothing(t *testing.T) {
	s := newStore(t)
	release := make(chan struct{})
	s.srv.SetHook(func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method == http.MethodPut && strings.Contains(r.URL.Path, "/blocks/") {
			select {
			case <-release:
			case <-r.Context().Done():
			}
		}
		return false
	})
	o := &origin{}
	tr := s.tier(t, o, func(o *Options) { o.QueueBytes = testBS + 1024; o.Writers = 1; o.WaitForRoom = true })
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range int64(3) {
			load(t, tr, model, i)
		}
	}()
	waitFor(t, "the first write to stall and the second load to reach the origin", func() bool { return o.loads.Load() >= 2 })
	close(release)
	<-done
	tr.Close()
	if st := tr.Stats(); st.Writes != 3 || st.WriteDrops != 0 {
		t.Fatalf("stats %+v; want all three written, none dropped", st)
	}
}

// A winner that fails releases its claim; a waiting node then takes the
// claim itself rather than every waiting node reading the origin.
func TestReleasedClaimIsTakenByAWaiter(t *testing.T) {
	s := newStore(t)
	oa := &origin{started: make(chan struct{}, 1), gate: make(chan struct{}), fail: errors.New("origin refused")}
	a := s.tier(t, oa, nil)
	ob := &origin{}
	b := s.tier(t, ob, func(o *Options) { o.ClaimWait = time.Minute })
	aDone := make(chan error, 1)
	go func() { aDone <- a.LoadBlock(context.Background(), model, 0, make([]byte, testBS)) }()
	<-oa.started
	bDone := make(chan struct{})
	go func() {
		defer close(bDone)
		load(t, b, model, 0)
	}()
	waitFor(t, "b to lose the claim", func() bool { return b.Stats().ClaimsLost == 1 })
	close(oa.gate)
	if err := <-aDone; err == nil {
		t.Fatal("the winner's origin failed, and its load did not")
	}
	<-bDone
	b.Close()
	if st := b.Stats(); ob.loads.Load() != 1 || st.ClaimsWon != 1 || st.ClaimTimeouts != 0 || st.Writes != 1 {
		t.Fatalf("waiter: origin loads %d, stats %+v; want the claim taken over and the block written", ob.loads.Load(), st)
	}
}

// A loser waits at least ClaimWait, three times this node's average
// origin load when that is longer, and never past ClaimTTL.
func TestClaimWaitFollowsOriginLoads(t *testing.T) {
	s := newStore(t)
	tr := s.tier(t, &origin{}, func(o *Options) { o.ClaimWait = 5 * time.Second; o.ClaimTTL = time.Minute })
	for _, tc := range []struct{ avg, want time.Duration }{
		{0, 5 * time.Second},
		{time.Second, 5 * time.Second},
		{4 * time.Second, 12 * time.Second},
		{30 * time.Second, time.Minute},
	} {
		tr.originAvg.Store(int64(tc.avg))
		if got := tr.claimWait(); got != tc.want {
			t.Errorf("origin loads of %s on average: wait %s, want %s", tc.avg, got, tc.want)
		}
	}
}

// PurgeObject deletes the shared copy of every block of the object, and
// only of that object; Close waits for it.
func TestPurgeObjectDeletesItsBlocks(t *testing.T) {
	s := newStore(t)
	o := &origin{}
	a := s.tier(t, o, nil)
	other := model
	other.Version = `"etag-2"`
	for i := range int64(3) {
		load(t, a, model, i)
	}
	load(t, a, other, 0)
	a.Close()
	if got := s.keys(t, "cluster-a/blocks/"); len(got) != 4 {
		t.Fatalf("blocks written: %q, want 4", got)
	}
	b := s.tier(t, o, nil)
	b.PurgeObject(model)
	b.Close()
	if got := s.keys(t, "cluster-a/blocks/"); len(got) != 1 || got[0] != blockKey(other, 0) {
		t.Fatalf("blocks left after the purge: %q, want only the other version's", got)
	}
	if st := b.Stats(); st.Purges != 1 || st.PurgedBlocks != 3 || st.PurgeErrors != 0 {
		t.Fatalf("stats %+v; want one purge of 3 blocks", st)
	}
}
