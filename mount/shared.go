package mount

import (
	"context"
	"fmt"

	"github.com/modelfs/modelfs/blockcache"
	"github.com/modelfs/modelfs/fetch"
	"github.com/modelfs/modelfs/mount/config"
	"github.com/modelfs/modelfs/sharedtier"
)

// openShared puts the cluster-wide shared tier of cfg.SharedCache in
// front of origin. Its store is reached with its own settings and
// credentials, under the same network policy as the sources; only a
// configuration that cannot load fails here: an unreachable or refusing
// store is the tier's to survive.
func openShared(ctx context.Context, cfg config.Sources, o openOptions, origin *sourceLoader) (*sharedtier.Tier, error) {
	loc, err := fetch.ParseLocation(cfg.SharedCache)
	if err != nil {
		return nil, fmt.Errorf("--shared-cache: %w", err)
	}
	client, err := fetch.NewS3Client(ctx, fetch.S3ClientOptions{
		Region: cfg.SharedCacheRegion, Endpoint: cfg.SharedCacheEndpoint, Profile: cfg.SharedCacheProfile,
		NoSignRequest: cfg.SharedCacheNoSignRequest, CredentialsFile: cfg.SharedCacheCredentialsFile, Logger: o.log, MaxConns: cfg.Concurrency * 2, Net: netPolicy(cfg),
	})
	if err != nil {
		return nil, fmt.Errorf("shared cache: %w", err)
	}
	// Past its queue's bound, writes are dropped, except by warm, which
	// waits.
	queue := cfg.SharedCacheQueueBytes(o.memBytes)
	return sharedtier.New(sharedtier.Options{
		Client: client, Bucket: loc.Bucket, Prefix: loc.Prefix, BlockSize: cfg.BlockSize,
		QueueBytes: queue, Writers: cfg.Concurrency, WaitForRoom: o.warm,
		Shareable: origin.shareable, Observer: o.metrics.sharedObserver(), Logger: o.log,
	}, origin)
}

// shareable: a local directory's files are the node's own, whatever
// their path and version say, so they never go through the shared tier.
func (l *sourceLoader) shareable(id blockcache.ObjectID) bool {
	f, ok := l.files[id.Name]
	return ok && !f.model.local
}

// close finishes the cache's write-backs, then the shared tier's.
func (r *remote) close() {
	r.cache.Close()
	if r.shared != nil {
		r.shared.Close()
	}
}

// totals are the cache's counters, and the shared tier's if any.
func (r *remote) totals() CacheTotals {
	t := cacheTotals(r.cache.Stats())
	if r.shared != nil {
		t.addShared(r.shared.Stats())
	}
	return t
}
