package loadorder

import (
	"errors"
	"fmt"
	"io"
	"path"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/modelfs/modelfs/modelformat"
)

// File is one file of the model as the planner sees it.
type File struct {
	Path string // '/'-separated, relative to the model root
	Size int64
	// Open returns a reader of the file (through the cache in production).
	// Plan calls it only for the headers it needs, possibly from several
	// goroutines at once; a reader that is also an io.Closer is closed
	// when Plan is done with it.
	Open func() (io.ReaderAt, error)
}

// Range is a byte range of one file, in the order it should be fetched.
type Range struct {
	Path     string
	Off, Len int64
	// Tensor names the tensor the range holds: "" for a header or a whole
	// file.
	Tensor string
	// Header marks a checkpoint file's header (from offset 0).
	Header bool
	// Group numbers the checkpoint the range belongs to, from 1; 0 for
	// small files read whole. A Follower starts a reader's window at the
	// beginning of the checkpoint it first touches.
	Group int
	// Indexes is, on a safetensors index, the Group of the checkpoint it
	// lists (0: none, or not an index). Loaders read the index to find
	// the shards they will load, all of them.
	Indexes int
}

// PlanOptions tune Plan; zero values take the defaults.
type PlanOptions struct {
	// SmallFile: files at most this size are fetched whole and first
	// (default 1 MiB).
	SmallFile int64
	// MaxHeader is the largest safetensors or GGUF header (and safetensors
	// index) accepted (default DefaultMaxHeader).
	MaxHeader int64
	// Parallel is how many headers are read at once (default 8): each is
	// a round trip to the store, and checkpoints have dozens of shards.
	Parallel int
	// Budget bounds the header bytes parsed at once, shared by every Plan
	// given the same one (a mount's models); nil: a budget of MaxHeader
	// for this Plan alone.
	Budget *HeaderBudget
	// MaxKept bounds what the Plan keeps of all its files' tensors: their
	// names plus 256 bytes each for the ranges, keys and indices planning
	// builds (default 128 MiB; real checkpoints keep under 10 MiB, the
	// 91,000 tensors of DeepSeek-V3 about 8 MiB).
	MaxKept int64
}

// DefaultMaxHeader is the largest header planned by default: the limit of
// the safetensors reference implementation (100 MB), so that any file it
// loads is planned. Real headers are well under 10 MB; what a larger one
// may cost is bounded by HeaderBudget and the per-part limits of the
// parsers, not by this.
const DefaultMaxHeader = modelformat.DefaultMaxHeader

// planTensorCost is what Plan counts against MaxKept per tensor, besides
// its name.
const planTensorCost = 256

// HeaderBudget bounds the bytes of the headers being parsed at once.
// Parsing holds memory in proportion to a header's size (a small multiple
// of it), so this bounds what all parses sharing it hold together.
type HeaderBudget struct {
	mu        sync.Mutex
	freed     *sync.Cond
	max, used int64
}

// NewHeaderBudget returns a budget of max bytes (at least DefaultMaxHeader
// is sensible: one header is always let through alone).
func NewHeaderBudget(max int64) *HeaderBudget {
	b := &HeaderBudget{max: max}
	b.freed = sync.NewCond(&b.mu)
	return b
}

// acquire waits until n bytes are free and takes them; a header bigger
// than the whole budget waits for it all. It returns the release.
func (b *HeaderBudget) acquire(n int64) func() {
	n = max(min(n, b.max), 0)
	b.mu.Lock()
	for b.used+n > b.max {
		b.freed.Wait()
	}
	b.used += n
	b.mu.Unlock()
	return func() {
		b.mu.Lock()
		b.used -= n
		b.mu.Unlock()
		b.freed.Broadcast()
	}
}

func (o PlanOptions) withDefaults() PlanOptions {
	if o.SmallFile <= 0 {
		o.SmallFile = 1 << 20
	}
	if o.MaxHeader <= 0 {
		o.MaxHeader = DefaultMaxHeader
	}
	if o.Parallel <= 0 {
		o.Parallel = 8
	}
	if o.MaxKept <= 0 {
		o.MaxKept = 128 << 20
	}
	if o.Budget == nil {
		o.Budget = NewHeaderBudget(o.MaxHeader)
	}
	return o
}

// Plan reads the headers it needs and returns the ranges in the order an
// inference loader reads them:
//
//  1. every file of at most SmallFile bytes (config.json first, then by
//     path), and every safetensors index, whole;
//  2. each checkpoint, in path order of its first file: the header of each
//     of its files, then its tensors in Order across all of its files.
//     A checkpoint is the shard set a *.safetensors.index.json names, or
//     files named <prefix>-NNNNN-of-MMMMM.safetensors (or .gguf), or
//     else a single .safetensors or .gguf file;
//
// Other big files are not planned: readahead covers them. Zero-length
// tensors and files get no range.
//
// A file whose header (or index) cannot be read or is invalid is left out,
// and the error, naming it, is joined into the returned error; the ranges
// returned alongside are still a valid plan for the other files.
func Plan(files []File, opts PlanOptions) ([]Range, error) {
	opts = opts.withDefaults()
	var errs []error
	fail := func(f File, err error) { errs = append(errs, fmt.Errorf("plan %s: %w", f.Path, err)) }

	var indexes, whole, big []File
	for _, f := range files {
		switch {
		case f.Size <= 0:
		case strings.HasSuffix(f.Path, ".safetensors.index.json"):
			indexes = append(indexes, f)
		case f.Size <= opts.SmallFile:
			whole = append(whole, f)
		case strings.HasSuffix(f.Path, ".safetensors") || strings.HasSuffix(f.Path, ".gguf"):
			big = append(big, f)
		}
	}
	slices.SortStableFunc(big, func(a, b File) int { return strings.Compare(a.Path, b.Path) })
	// The headers do not depend on the indexes, and each is a round trip
	// to the store: read them while the indexes are read, so that the
	// plan, and a loader's first header read, wait for neither in turn.
	read := make(chan []header, 1)
	go func() { read <- readHeaders(big, opts) }()

	shardOf := map[string]string{} // shard path → its checkpoint's index path
	for _, f := range indexes {
		shards, err := readIndex(f, opts)
		if err != nil {
			fail(f, err)
			if f.Size > opts.SmallFile {
				continue
			}
		}
		whole = append(whole, f)
		for _, s := range shards {
			shardOf[s] = f.Path
		}
	}

	// Loaders read config.json before anything else.
	slices.SortStableFunc(whole, func(a, b File) int {
		ac, bc := path.Base(a.Path) == "config.json", path.Base(b.Path) == "config.json"
		if ac != bc {
			if ac {
				return -1
			}
			return 1
		}
		return strings.Compare(a.Path, b.Path)
	})
	var out []Range
	for _, f := range whole {
		out = append(out, Range{Path: f.Path, Off: 0, Len: f.Size})
	}

	// Group the big files into checkpoints, each in path order (which is
	// shard order), checkpoints ordered by their first file.
	var groups [][]int // indices into big
	groupOf := map[string]int{}
	for i, f := range big {
		key := checkpointKey(f.Path, shardOf)
		g, ok := groupOf[key]
		if !ok {
			g = len(groups)
			groupOf[key] = g
			groups = append(groups, nil)
		}
		groups[g] = append(groups[g], i)
	}

	for i := range out {
		if g, ok := groupOf["index:"+out[i].Path]; ok {
			out[i].Indexes = g + 1
		}
	}

	headers := <-read
	for gi, g := range groups {
		var names []string
		var tensors []Range
		for _, i := range g {
			h := headers[i]
			if h.err != nil {
				fail(big[i], h.err)
				continue
			}
			out = append(out, Range{Path: big[i].Path, Off: 0, Len: h.len, Group: gi + 1, Header: true})
			for _, t := range h.tensors {
				names = append(names, t.Name)
				tensors = append(tensors, Range{Path: big[i].Path, Off: t.Offset, Len: t.Length, Tensor: t.Name, Group: gi + 1})
			}
		}
		for _, k := range Order(names) {
			if tensors[k].Len > 0 {
				out = append(out, tensors[k])
			}
		}
	}
	return out, errors.Join(errs...)
}

// shardName matches a shard of a checkpoint split by the usual writers:
// Hugging Face's model-00001-of-00003.safetensors and llama.cpp's
// gguf-split model-00001-of-00003.gguf.
var shardName = regexp.MustCompile(`^(.*)-[0-9]+-of-([0-9]+)\.(safetensors|gguf)$`)

// checkpointKey names the checkpoint the file at p belongs to.
func checkpointKey(p string, shardOf map[string]string) string {
	if idx, ok := shardOf[p]; ok {
		return "index:" + idx
	}
	if m := shardName.FindStringSubmatch(p); m != nil {
		return "shards:" + m[1] + "-of-" + m[2] + "." + m[3]
	}
	return "file:" + p
}

// header is one big file's parsed header.
type header struct {
	len     int64 // the header's length: where the data starts
	tensors []modelformat.Tensor
	err     error
}

// readHeaders parses the headers of files, opts.Parallel at a time and
// within opts.Budget. What the parsed headers keep together is bounded by
// opts.MaxKept: a file that would go over it is left out with an error
// (which one, when headers are parsed in parallel, depends on timing).
func readHeaders(files []File, opts PlanOptions) []header {
	out := make([]header, len(files))
	sem := make(chan struct{}, opts.Parallel)
	var kept atomic.Int64
	var wg sync.WaitGroup
	for i, f := range files {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			h := &out[i]
			if kept.Load() >= opts.MaxKept {
				// Parsing could only end in the error below.
				h.err = fmt.Errorf("the model's tensors would take more than the %d bytes a plan may keep", opts.MaxKept)
				return
			}
			h.err = withReader(f, func(r io.ReaderAt) error {
				// Only names and ranges are kept: shapes would cost
				// memory across all of a mount's models for nothing.
				mo := modelformat.Options{MaxHeader: opts.MaxHeader, NoShapes: true}
				gguf := strings.HasSuffix(f.Path, ".gguf")
				var weight int64
				if gguf {
					weight = modelformat.GGUFWeight(r, f.Size, mo)
				} else {
					weight, _ = modelformat.SafetensorsHeaderLen(r, f.Size, mo) // its error comes again below
				}
				release := opts.Budget.acquire(weight)
				defer release()
				var hd *modelformat.Header
				var err error
				if gguf {
					hd, err = modelformat.ReadGGUF(r, f.Size, mo)
				} else {
					hd, err = modelformat.ReadSafetensors(r, f.Size, mo)
				}
				if err != nil {
					return err
				}
				h.len, h.tensors = hd.DataStart, hd.Tensors
				cost := int64(0)
				for _, t := range h.tensors {
					cost += int64(len(t.Name)) + planTensorCost
				}
				if kept.Add(cost) > opts.MaxKept {
					kept.Add(-cost)
					h.tensors = nil
					return fmt.Errorf("the model's tensors would take more than the %d bytes a plan may keep", opts.MaxKept)
				}
				return nil
			})
		})
	}
	wg.Wait()
	return out
}

// readIndex returns the paths of the shards a safetensors index names,
// relative to the model root like the index's own path.
func readIndex(f File, opts PlanOptions) ([]string, error) {
	if f.Size > opts.MaxHeader { // not even opened
		return nil, fmt.Errorf("safetensors index: %d-byte index exceeds the %d-byte limit", f.Size, opts.MaxHeader)
	}
	var idx *modelformat.Index
	err := withReader(f, func(r io.ReaderAt) error {
		var err error
		idx, err = modelformat.ReadIndex(io.NewSectionReader(r, 0, f.Size), f.Size, modelformat.Options{MaxHeader: opts.MaxHeader})
		return err
	})
	if err != nil {
		return nil, err
	}
	// Shard names are relative to the index's directory.
	dir := path.Dir(f.Path)
	shards := make([]string, 0, len(idx.Shards))
	for _, s := range idx.Shards {
		shards = append(shards, path.Join(dir, s))
	}
	slices.Sort(shards)
	return slices.Compact(shards), nil
}

func withReader(f File, fn func(io.ReaderAt) error) error {
	if f.Open == nil {
		return errors.New("file has no Open")
	}
	r, err := f.Open()
	if err != nil {
		return fmt.Errorf("open: %w", err)
	}
	if c, ok := r.(io.Closer); ok {
		defer c.Close()
	}
	return fn(r)
}
