package sharedtier

import (
	"net/http"
	"time"

	awsmiddleware "github.com/aws/aws-sdk-go-v2/aws/middleware"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// heldClaim is a claim this node won, kept fresh in the store until it
// is released, so that losers wait for this node's copy as long as it
// is alive rather than for a fixed time.
type heldClaim struct {
	quit, done chan struct{}
}

// holdClaim starts refreshing key every ClaimRefresh, each write
// conditional on the last one's ETag: a node that took the claim over
// (this one stalled past ClaimTTL) keeps it. It refreshes for ClaimTTL
// at most, after which the claim ages into staleness like a dead
// node's.
func (t *Tier) holdClaim(key string, etag *string) *heldClaim {
	h := &heldClaim{quit: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(h.done)
		if etag == nil {
			return // without one a refresh could overwrite a taker's claim
		}
		tick := time.NewTicker(t.opts.ClaimRefresh)
		defer tick.Stop()
		for range int(t.opts.ClaimTTL/t.opts.ClaimRefresh) + 1 {
			select {
			case <-h.quit:
				return
			case <-t.ctx.Done():
				return
			case <-tick.C:
			}
			next, err := t.put(t.ctx, key, []byte("claimed by modelfs node "+t.node+" (refreshed)\n"), func(in *s3.PutObjectInput) { in.IfMatch = etag })
			switch {
			case err == nil:
				etag = next
				t.st.claimRefreshes.Add(1)
			case conflict(err) || httpStatus(err) == http.StatusNotFound:
				return // taken over or released: not ours to refresh
			}
			// Any other failure: try again at the next tick; losers see
			// the claim age meanwhile.
		}
	}()
	return h
}

// stop ends the refreshes and waits for one under way; nil is a no-op.
func (h *heldClaim) stop() {
	if h == nil {
		return
	}
	select {
	case <-h.quit:
	default:
		close(h.quit)
	}
	<-h.done
}

// release gives the claim up without a block: the writers delete it.
// When they cannot take it (closed), the refreshes stop and it ages out.
func (t *Tier) release(claim string, hold *heldClaim) {
	if !t.enqueue(writeJob{claim: claim, hold: hold}) {
		hold.stop()
	}
}

// wait is a loser's wait for the winner's copy, shared by its claim
// rounds: at least ClaimWait (or more, see claimWait), longer while the
// winner's claim stays fresh, and never past ClaimTTL.
type wait struct {
	soft, hard time.Time
	fresh      time.Duration // how young a claim must be to extend soft
}

func (t *Tier) newWait() *wait {
	now := time.Now()
	return &wait{
		soft:  now.Add(t.claimWait()),
		hard:  now.Add(t.opts.ClaimTTL),
		fresh: 3*t.opts.ClaimRefresh + time.Second,
	}
}

// left is how long the wait may still last.
func (w *wait) left() time.Duration {
	return time.Until(w.soft)
}

// seen extends the wait by fresh when the claim, by the store's clock,
// was written less than fresh ago: its winner is alive and at work.
func (w *wait) seen(head *s3.HeadObjectOutput) {
	now, ok := awsmiddleware.GetServerTime(head.ResultMetadata)
	if !ok || head.LastModified == nil || now.Sub(*head.LastModified) >= w.fresh {
		return
	}
	ext := time.Now().Add(w.fresh)
	if ext.After(w.hard) {
		ext = w.hard
	}
	if ext.After(w.soft) {
		w.soft = ext
	}
}
