package sharedtier

import (
	"context"
	"sync"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/modelfs/modelfs/blockcache"
)

// purgeConns bounds the deletes one purge has in flight, so that a purge
// of a large object does not take every connection to the store.
const purgeConns = 4

// PurgeObject deletes the shared copies of every block of obj, in the
// background: the cache calls it when obj failed its whole-object check,
// and its blocks, which may have come from any node, would fail every
// other node's check too. Close waits for purges as for write-backs.
func (t *Tier) PurgeObject(obj blockcache.ObjectID) {
	if t.opts.Shareable != nil && !t.opts.Shareable(obj) {
		return
	}
	t.mu.RLock()
	defer t.mu.RUnlock()
	if t.closed {
		return
	}
	t.st.purges.Add(1)
	t.opts.Logger.Warn("shared cache: purging the blocks of an object that failed its check", "file", obj.Name)
	// Added under the read lock, so Close's Wait comes after.
	t.wg.Go(func() { t.purge(obj) })
}

func (t *Tier) purge(obj blockcache.ObjectID) {
	bs := t.opts.BlockSize
	n := (obj.Size + bs - 1) / bs
	keys := make(chan string)
	var wg sync.WaitGroup
	for range min(int64(purgeConns), max(n, 1)) {
		wg.Go(func() {
			for key := range keys {
				ctx, cancel := context.WithTimeout(t.ctx, t.opts.RequestTimeout)
				_, err := t.opts.Client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(t.opts.Bucket), Key: aws.String(key)})
				cancel()
				if err != nil {
					t.st.purgeErrors.Add(1)
					continue
				}
				t.st.purgedBlocks.Add(1)
			}
		})
	}
	// Bounded by the object's block count; stops when Close gives up.
	for i := range n {
		select {
		case keys <- t.opts.Prefix + "blocks/" + keyHash(identity(obj, bs, i)):
		case <-t.ctx.Done():
			i = n
		}
	}
	close(keys)
	wg.Wait()
}
