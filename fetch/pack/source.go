package pack

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"

	"github.com/modelfs/modelfs/fetch"
)

// Options tune a Source; zero values take the defaults.
type Options struct {
	// Logger receives the warning about a file present both plain and
	// packed (default: none).
	Logger *slog.Logger
	// Parallel is how many pack indexes List reads at once (default 16):
	// each is a ranged GET, and a checkpoint has dozens of shards.
	Parallel int
	// CacheBytes bounds the decoded frames kept for reads that cover part
	// of a frame (default 32 MiB, 8 frames at the default span; negative:
	// none). Reads of whole frames, which block-aligned reads are, do not
	// use it.
	CacheBytes int64
}

// Source shows a source holding packs as the original files: List and
// Stat give each pack object's original name, size and sha256, and ReadAt
// decodes. Objects that are not packs pass through unchanged.
type Source struct {
	inner fetch.Source
	log   *slog.Logger
	par   int
	dec   *decoder
	cache *frameCache

	mu     sync.Mutex
	packs  map[string]*packed // by original key and version
	listed map[string]*packed // by original key, as List last saw it
	warned map[string]bool
}

// packed is one pack object as read: pinned, with its index.
type packed struct {
	inner fetch.Object // the pack object
	outer fetch.Object // the original it shows
	ix    *Index
}

var _ fetch.Source = (*Source)(nil)

// tagPrefix starts the ETag of every original a pack shows; no store
// sends one like it.
const tagPrefix = "mfpack:"

// NewSource wraps inner.
func NewSource(inner fetch.Source, opts Options) (*Source, error) {
	d, err := newDecoder()
	if err != nil {
		return nil, err
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Parallel <= 0 {
		opts.Parallel = 16
	}
	switch {
	case opts.CacheBytes == 0:
		opts.CacheBytes = 8 * DefaultFrameSize
	case opts.CacheBytes < 0:
		opts.CacheBytes = 0
	}
	return &Source{
		inner: inner, log: opts.Logger, par: opts.Parallel, dec: d, cache: newFrameCache(opts.CacheBytes),
		packs: map[string]*packed{}, listed: map[string]*packed{}, warned: map[string]bool{},
	}, nil
}

// String is the inner source's: the objects are the same.
func (s *Source) String() string { return s.inner.String() }

// ID is the inner source's, marked: an original decoded from a pack is
// not the plain object of the inner source, whatever its name and size.
func (s *Source) ID() string { return "pack+" + s.inner.ID() }

// List lists the inner source and replaces each pack object by the
// original it holds, reading the packs' indexes. A file present both
// plain and packed is shown plain, with a warning. A pack whose index
// cannot be read fails the listing: a mount without one of its files
// would fail later, and less clearly.
func (s *Source) List(ctx context.Context) ([]fetch.Object, error) {
	objs, err := s.inner.List(ctx)
	if err != nil {
		return nil, err
	}
	plain := map[string]bool{}
	for _, o := range objs {
		plain[o.Key] = true
	}
	var out, packObjs []fetch.Object
	for _, o := range objs {
		base, isPack := strings.CutSuffix(o.Key, Suffix)
		switch {
		case !isPack || base == "" || strings.HasSuffix(base, "/"):
			out = append(out, o)
		case plain[base]:
			s.warnOnce(base)
		default:
			packObjs = append(packObjs, o)
		}
	}
	entries := make([]*packed, len(packObjs))
	errs := make([]error, len(packObjs))
	sem := make(chan struct{}, s.par)
	var wg sync.WaitGroup
	for i, o := range packObjs {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			entries[i], errs[i] = s.load(ctx, o)
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.listed = map[string]*packed{}
	for _, e := range entries {
		s.listed[e.outer.Key] = e
		out = append(out, e.outer)
	}
	s.mu.Unlock()
	slices.SortFunc(out, func(a, b fetch.Object) int { return strings.Compare(a.Key, b.Key) })
	return out, nil
}

func (s *Source) warnOnce(key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.warned[key] {
		s.warned[key] = true
		s.log.Warn("a file is both plain and packed: showing the plain one", "file", key, "pack", key+Suffix)
	}
}

// load reads the index of the pack object o and registers it.
func (s *Source) load(ctx context.Context, o fetch.Object) (*packed, error) {
	ix, err := ReadIndex(objectReader{ctx, s.inner, o}, o.Size)
	if err != nil {
		return nil, fmt.Errorf("pack %s: %w", o.Key, err)
	}
	e := &packed{inner: o, ix: ix, outer: fetch.Object{
		Key:     strings.TrimSuffix(o.Key, Suffix),
		Size:    ix.Size,
		ModTime: o.ModTime,
		// The pack's own version, so that the original's version changes
		// with it. The ETag rather than the VersionID: S3 lists only
		// ETags, and Stat must give the version List gave.
		ETag:     tagPrefix + pin(o),
		Checksum: fetch.Checksum{Algorithm: "SHA256", Value: base64.StdEncoding.EncodeToString(ix.SHA256[:])},
	}}
	s.mu.Lock()
	s.packs[e.outer.Key+"\x00"+e.outer.Version()] = e
	s.mu.Unlock()
	return e, nil
}

// pin is what identifies a pack object's content.
func pin(o fetch.Object) string {
	if o.ETag != "" {
		return o.ETag
	}
	return o.Version()
}

// Stat returns the current version of key: the original a pack holds when
// the last List showed key packed, or when key is not there plain.
func (s *Source) Stat(ctx context.Context, key string) (fetch.Object, error) {
	s.mu.Lock()
	e := s.listed[key]
	s.mu.Unlock()
	if e != nil {
		st, err := s.inner.Stat(ctx, key+Suffix)
		if err != nil {
			return fetch.Object{}, err
		}
		if pin(st) == pin(e.inner) {
			return e.outer, nil
		}
		st.Key = key + Suffix
		e, err = s.load(ctx, st)
		if err != nil {
			return fetch.Object{}, err
		}
		return e.outer, nil
	}
	st, err := s.inner.Stat(ctx, key)
	if err == nil || !errors.Is(err, fetch.ErrNotFound) || strings.HasSuffix(key, Suffix) {
		return st, err
	}
	pst, perr := s.inner.Stat(ctx, key+Suffix)
	if perr != nil {
		return fetch.Object{}, err // the plain file's "not found"
	}
	pst.Key = key + Suffix
	if e, err = s.load(ctx, pst); err != nil {
		return fetch.Object{}, err
	}
	return e.outer, nil
}

// ReadAt reads an original from its pack: one read of the inner source
// (a ranged GET, pinned to the pack's version) for the frames the range
// covers, each frame's xxhash64 checked before it is decoded. Objects
// that are not packs are read from the inner source.
func (s *Source) ReadAt(ctx context.Context, obj fetch.Object, p []byte, off int64) (int, error) {
	s.mu.Lock()
	e := s.packs[obj.Key+"\x00"+obj.Version()]
	s.mu.Unlock()
	if e == nil {
		if strings.HasPrefix(obj.ETag, tagPrefix) {
			return 0, fmt.Errorf("read %s: %w: its pack was not listed by this source", obj.Key, fetch.ErrChanged)
		}
		return s.inner.ReadAt(ctx, obj, p, off)
	}
	n, atEnd, err := clip(e.ix.Size, len(p), off)
	if err != nil {
		return 0, fmt.Errorf("read %s: %w", obj.Key, err)
	}
	r := objectReader{ctx, s.inner, e.inner}
	fetch := func(b []byte, at int64) error { return readFull(r, b, at) }
	if err := s.dec.readAt(e.ix, fetch, s.cache, e.inner.Key+"\x00"+pin(e.inner), p[:n], off); err != nil {
		return 0, fmt.Errorf("read %s [%d, %d) from %s: %w", obj.Key, off, off+int64(n), e.inner.Key, err)
	}
	if atEnd {
		return n, io.EOF
	}
	return n, nil
}

// objectReader reads one pinned object of a source as an io.ReaderAt.
type objectReader struct {
	ctx context.Context
	src fetch.Source
	obj fetch.Object
}

func (r objectReader) ReadAt(p []byte, off int64) (int, error) {
	return r.src.ReadAt(r.ctx, r.obj, p, off)
}
