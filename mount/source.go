package mount

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/modelfs/modelfs/blockcache"
	"github.com/modelfs/modelfs/fetch"
	"github.com/modelfs/modelfs/fetch/pack"
	"github.com/modelfs/modelfs/mount/config"
	"github.com/modelfs/modelfs/sharedtier"
)

// remote is the listed sources of a command, with the block cache they
// share.
type remote struct {
	models []*modelSource
	files  []remoteFile // every listed file, model by model
	loader *sourceLoader
	cache  *blockcache.Cache
	// shared is the cluster-wide tier between the cache and the
	// sources; nil without --shared-cache.
	shared      *sharedtier.Tier
	sharedCache string // its location, for the stats
	// manifest is the --manifest file, "" for a single SOURCE.
	manifest string
}

// modelSource is one listed source: a manifest's model, or the SOURCE
// argument (spec.Name "").
type modelSource struct {
	spec modelSpec
	src  fetch.Source
	objs []fetch.Object
	// etagMD5: a single-part ETag is the content's MD5 (S3); elsewhere an
	// ETag that looks like one may be anything.
	etagMD5 bool
	// parts lists a multipart object's parts, for its ETag; nil when the
	// source cannot.
	parts partLister
	// local: the source is a directory of this node (file://).
	local bool
}

// path is where an object of the model is in the mount, which is also its
// name in the cache: each model has a directory of its own, so no two
// models' objects share a cache id.
func (m *modelSource) path(key string) string {
	if m.spec.Name == "" {
		return key
	}
	return m.spec.Name + "/" + key
}

// remoteFile is one listed object and its path in the mount.
type remoteFile struct {
	path  string
	obj   fetch.Object
	model *modelSource
}

// cacheID names the file's blocks in the cache. Source is the object's
// full remote identity (the source's ID and the key), so that a file of
// the same path, version and size from another source, another scheme or
// another tenant's bucket never reads these blocks.
func (f remoteFile) cacheID() blockcache.ObjectID {
	return blockcache.ObjectID{
		Source: f.model.src.ID() + "\x00" + f.obj.Key, Name: f.path, Version: f.obj.Version(), Size: f.obj.Size,
		Group: f.model.spec.Name,
	}
}

// String describes what is served, for messages.
func (r *remote) String() string {
	if r.manifest == "" {
		return r.models[0].src.String()
	}
	return fmt.Sprintf("%d models of manifest %s", len(r.models), r.manifest)
}

// specsFor returns the models a command serves: the --manifest's, or the
// one source.
func specsFor(manifest, source string) ([]modelSpec, error) {
	if manifest != "" {
		return readManifest(manifest)
	}
	return []modelSpec{{Source: source}}, nil
}

// checkApplies reports the source flags that fit none of the models.
func checkApplies(cfg config.Sources, specs []modelSpec) error {
	locs := make([]fetch.Location, 0, len(specs))
	for _, spec := range specs {
		loc, err := fetch.ParseLocation(spec.Source)
		if err != nil {
			continue // openModel reports it, naming the model
		}
		locs = append(locs, loc)
	}
	return fetch.CheckApplies(locs, fetch.S3Options{
		Region: cfg.Region, Endpoint: cfg.Endpoint, Profile: cfg.AWSProfile, NoSignRequest: cfg.NoSignRequest,
	})
}

// openOptions are what openRemote needs besides the settings.
type openOptions struct {
	log *slog.Logger
	// memBytes is the RAM tier's budget.
	memBytes int64
	// warm: fill the caches, with no reader to hold up.
	warm    bool
	metrics *metrics // nil: no metrics
	wrap    WrapFunc // nil: sources as they are
}

// openRemote opens and lists every model's source, and builds the one
// cache in front of them all. cfg has been validated.
func openRemote(ctx context.Context, cfg config.Sources, o openOptions, specs []modelSpec, manifest string) (*remote, error) {
	log := o.log
	var disk *blockcache.DiskOptions
	if dir := cfg.CacheDir; dir != "" {
		size := cfg.CacheSize
		if size == 0 {
			size = defaultDiskCache(dir, log)
		}
		disk = &blockcache.DiskOptions{Dir: dir, MaxBytes: size}
	}
	if err := checkApplies(cfg, specs); err != nil {
		if manifest == "" {
			return nil, err
		}
		// A manifest's models change while the flags stay: each model
		// takes the flags that fit it, and one that fits none is said.
		log.Warn("source flags that fit none of the manifest's models are ignored", "err", err)
	}
	// Models are listed at once, each listing being a round trip or more;
	// the first to fail stops the others' listings and is the error.
	listCtx, failed := context.WithCancelCause(ctx)
	defer failed(nil)
	models := make([]*modelSource, len(specs))
	var wg sync.WaitGroup
	for i, spec := range specs {
		wg.Go(func() {
			ms, err := openModel(ctx, listCtx, cfg, o, spec)
			if err != nil && spec.Name != "" {
				err = fmt.Errorf("model %q: %w", spec.Name, err)
			}
			if err != nil {
				failed(err)
			}
			models[i] = ms
		})
	}
	wg.Wait()
	if err := context.Cause(listCtx); err != nil {
		return nil, err
	}
	r := &remote{models: models, manifest: manifest}
	loader := &sourceLoader{files: map[string]remoteFile{}}
	for _, ms := range models {
		if ms.spec.Name != "" {
			checkListing(ms, log)
		}
		for _, o := range ms.objs {
			f := remoteFile{path: ms.path(o.Key), obj: o, model: ms}
			r.files = append(r.files, f)
			loader.files[f.path] = f
		}
	}
	r.loader = loader
	var load blockcache.Loader = loader
	if cfg.SharedCache != "" {
		shared, err := openShared(ctx, cfg, o, loader)
		if err != nil {
			return nil, err
		}
		r.shared, r.sharedCache, load = shared, cfg.SharedCache, shared
	}
	groups := make([]string, len(models))
	for i, ms := range models {
		groups[i] = ms.spec.Name // cacheID's Group
	}
	r.cache = blockcache.New(blockcache.Options{
		BlockSize: cfg.BlockSize, MemBytes: o.memBytes, Workers: cfg.Concurrency, Groups: groups, Disk: disk, Logger: log,
		Verifier: storeVerifier{files: loader.files, blockSize: cfg.BlockSize},
	}, load)
	return r, nil
}

// WrapFunc puts layers in front of an opened source that change how its
// objects read (packs shown as the files they hold).
type WrapFunc func(ctx context.Context, src fetch.Source, log *slog.Logger) (fetch.Source, error)

// connWarmer opens connections to its store ahead of the reads that will
// need them (fetch.S3).
type connWarmer interface {
	WarmConns(ctx context.Context, n int)
}

// warmConnsTimeout bounds the connection warm-up: past it a store that is
// slow or unreachable is left to the reads themselves.
const warmConnsTimeout = 10 * time.Second

// openModel opens one source, with the layers o.wrap adds, and lists it
// under listCtx. The source itself gets ctx, which outlives the listing.
func openModel(ctx, listCtx context.Context, cfg config.Sources, o openOptions, spec modelSpec) (*modelSource, error) {
	log := o.log
	loc, err := fetch.ParseLocation(spec.Source)
	if err != nil {
		return nil, err
	}
	var hfToken string
	if loc.Scheme == "hf" {
		if hfToken, err = fetch.HFToken(os.Getenv, cfg.HFTokenEnv); err != nil {
			return nil, err
		}
	}
	var httpToken string
	if cfg.HTTPTokenEnv != "" {
		httpToken = os.Getenv(cfg.HTTPTokenEnv)
	}
	src, err := fetch.Open(ctx, loc, fetch.OpenOptions{
		Net: netPolicy(cfg), Logger: log,
		S3: fetch.S3Options{
			Region: cfg.Region, Endpoint: cfg.Endpoint, Profile: cfg.AWSProfile,
			NoSignRequest: cfg.NoSignRequest, MaxConns: cfg.Concurrency * 2, Logger: log,
		},
		HTTP: fetch.HTTPOptions{Token: httpToken},
		HF:   fetch.HFOptions{Token: hfToken, Endpoint: cfg.HFEndpoint},
		Retry: fetch.RetryOptions{
			MaxAttempts: cfg.Retries, AttemptTimeout: cfg.RequestTimeout,
			Observer: o.metrics.observer(sourceKind(loc.Scheme), spec.Name),
		},
	})
	if err != nil {
		return nil, err
	}
	parts, _ := src.(partLister)
	if w, ok := src.(connWarmer); ok {
		// Beside the listing, which takes a connection of its own: both
		// are round trips the mount waits for anyway.
		go func() {
			warmCtx, cancel := context.WithTimeout(ctx, warmConnsTimeout)
			defer cancel()
			w.WarmConns(warmCtx, cfg.Concurrency)
		}()
	}
	if o.wrap != nil {
		if src, err = o.wrap(ctx, src, log); err != nil {
			return nil, err
		}
	}
	listingDir := cfg.CacheDir
	if cfg.NoSavedListing {
		listingDir = "" // neither saved nor used
	}
	objs, err := list(listCtx, src, listingDir, log)
	if err != nil {
		return nil, err
	}
	return &modelSource{spec: spec, src: src, objs: objs, etagMD5: loc.Scheme == "s3", parts: parts, local: loc.Scheme == "file"}, nil
}

// netPolicy is the network policy of cfg, or nil for none.
func netPolicy(cfg config.Sources) *fetch.NetPolicy {
	if len(cfg.DenyNetworks) == 0 {
		return nil
	}
	return &fetch.NetPolicy{Deny: cfg.DenyNetworks, Allow: cfg.AllowNetworks}
}

// checkListing warns when a manifest model's listing does not look like
// its entry: a size far off, or no file of its format.
func checkListing(ms *modelSource, log *slog.Logger) {
	var total int64
	for _, o := range ms.objs {
		total += o.Size
	}
	if want := ms.spec.Size; want > 0 && (total < want-want/10 || total > want+want/10) {
		log.Warn("model size differs from the manifest by more than 10%", "model", ms.spec.Name,
			"manifest", formatSize(want), "listed", formatSize(total))
	}
	if f, ok := modelFormats[ms.spec.Format]; ok && !slices.ContainsFunc(ms.objs, func(o fetch.Object) bool { return f.has(o.Key) }) {
		log.Warn("model has no file of its format", "model", ms.spec.Name, "format", ms.spec.Format, "want", f.what)
	}
}

// list lists the source. Listing is the first remote call, so a bad bucket
// or refused credentials fail here. With a cache dir the listing is saved,
// and when the source cannot be reached the saved one is used, so that
// cached blocks stay readable through an outage.
func list(ctx context.Context, src fetch.Source, cacheDir string, log *slog.Logger) ([]fetch.Object, error) {
	listCtx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	objs, err := src.List(listCtx)
	cancel()
	if err == nil {
		// An answer, not an outage: no fallback to the saved listing.
		if objs, err = usable(objs, log); err != nil {
			return nil, fmt.Errorf("listing %s: %w", src, err)
		}
	}
	if cacheDir == "" {
		if err != nil {
			return nil, fmt.Errorf("listing %s: %w", src, err)
		}
		return objs, nil
	}
	// Keyed by ID, not String: two sources that print alike (an endpoint
	// left out of String) must not share a listing.
	id := src.ID()
	sum := sha256.Sum256([]byte(id))
	saved := filepath.Join(cacheDir, "listings", hex.EncodeToString(sum[:8])+".json")
	if err == nil {
		if err := fetch.SaveListing(saved, id, objs); err != nil {
			log.Warn("could not save the listing for offline use", "err", err)
		}
		return objs, nil
	}
	// Only an unreachable source falls back. Refused or missing
	// credentials, a missing bucket or a damaged pack index are answers,
	// not outages: a mount serves cached bytes only once its own
	// credentials listed the source, or when nothing could be asked.
	if !fetch.Unreachable(err) || errors.Is(err, pack.ErrFormat) || ctx.Err() != nil {
		return nil, fmt.Errorf("listing %s: %w", src, err)
	}
	old, at, lerr := fetch.LoadListing(saved, id)
	if lerr != nil {
		return nil, fmt.Errorf("listing %s: %w", src, err)
	}
	log.Warn("source unreachable: using the saved listing; only cached blocks can be read", "source", src.String(), "saved_at", at, "err", err)
	// The file is ours, but checked like a listing all the same.
	if old, err = usable(old, log); err != nil {
		return nil, fmt.Errorf("saved listing of %s: %w", src, err)
	}
	return old, nil
}

// usable drops, with a warning naming each, the objects of a listing that
// cannot be served (a size out of range, no version to pin), before
// anything is sized from them: the rest of the model stays readable.
func usable(objs []fetch.Object, log *slog.Logger) ([]fetch.Object, error) {
	kept, rejected := fetch.Usable(objs)
	for _, r := range rejected {
		log.Warn("object not shown", "key", fmt.Sprintf("%q", r.Key), "reason", r.Err.Error())
	}
	if len(kept) == 0 && len(rejected) > 0 {
		return nil, fetch.UsableError(rejected)
	}
	return kept, nil
}
