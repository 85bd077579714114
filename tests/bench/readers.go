package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"github.com/modelfs/modelfs/tests/modelgen"
	"github.com/modelfs/modelfs/tests/mountproc"
)

// The readers do their I/O from this process, the way a loader would, so
// the timing is of the reads alone (no process start-up).

const (
	readSize = 1 << 20 // dd bs=1M, and what loaders' buffered reads issue
	pageSize = 4096
)

// readSeq reads each file start to end with 1 MiB ReadAt calls and returns
// the bytes read.
func readSeq(ctx context.Context, root string, names []string) (int64, error) {
	buf := make([]byte, readSize)
	var total int64
	for _, name := range names {
		n, err := readFileSeq(ctx, filepath.Join(root, name), buf)
		total += n
		if err != nil {
			return total, err
		}
	}
	return total, nil
}

func readFileSeq(ctx context.Context, path string, buf []byte) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	var off int64
	for {
		if off%(256<<20) == 0 && ctx.Err() != nil {
			return off, ctx.Err()
		}
		n, err := f.ReadAt(buf, off)
		off += int64(n)
		if errors.Is(err, io.EOF) {
			return off, nil
		}
		if err != nil {
			return off, fmt.Errorf("reading %s at %d: %w", path, off, err)
		}
	}
}

// readConcurrent runs one sequential reader per file, all at once.
func readConcurrent(ctx context.Context, root string, names []string) (int64, error) {
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		total int64
		errs  []error
	)
	for _, name := range names {
		wg.Go(func() {
			n, err := readFileSeq(ctx, filepath.Join(root, name), make([]byte, readSize))
			mu.Lock()
			defer mu.Unlock()
			total += n
			if err != nil {
				errs = append(errs, err)
			}
		})
	}
	wg.Wait()
	return total, errors.Join(errs...)
}

// span is a tensor's byte range in its file.
type span struct{ begin, end int64 }

// tensorSpans parses a mapped weight file (safetensors or GGUF) and returns
// its tensors' ranges in header order.
func tensorSpans(name string, data []byte) ([]span, error) {
	r := bytes.NewReader(data)
	if strings.HasSuffix(name, ".gguf") {
		g, err := parseGGUF(r, int64(len(data)))
		if err != nil {
			return nil, err
		}
		out := make([]span, len(g.Tensors))
		for i, t := range g.Tensors {
			b := g.DataStart + int64(t.Offset)
			out[i] = span{b, b + int64(t.Size())}
		}
		return out, nil
	}
	ts, err := modelgen.ParseSafetensors(r, int64(len(data)))
	if err != nil {
		return nil, err
	}
	out := make([]span, len(ts))
	for i, t := range ts {
		out[i] = span{t.Begin, t.End}
	}
	return out, nil
}

// sink keeps the page-touching loads from being optimised away.
var sink byte

// mmapTouch maps each file read-only, parses its header from the mapping,
// then touches one byte in each 4 KiB page of every tensor, in header order
// or (shuffle) a fixed random order: the page-fault pattern of mmap-based
// safetensors and GGUF loaders. It returns the mapped bytes.
func mmapTouch(ctx context.Context, root string, names []string, shuffle bool) (int64, error) {
	var total int64
	for i, name := range names {
		if ctx.Err() != nil {
			return total, ctx.Err()
		}
		n, err := mmapTouchFile(filepath.Join(root, name), name, shuffle, uint64(i))
		total += n
		if err != nil {
			return total, fmt.Errorf("%s: %w", name, err)
		}
	}
	return total, nil
}

// safetensorsIndex is a sharded checkpoint's index.
const safetensorsIndex = "model.safetensors.index.json"

// loadLikeTransformers loads a sharded safetensors checkpoint as
// transformers and vLLM do: config.json, then the index, which names the
// shards, then each shard mapped and its tensors touched in header order.
// It reads no other checkpoint (the GGUF copy). The JSON is parsed whole,
// as those loaders do, not with modelformat's bounded parser: the reader
// stands for code modelfs did not write.
func loadLikeTransformers(ctx context.Context, root string) (int64, error) {
	var total int64
	var config map[string]any
	data, err := os.ReadFile(filepath.Join(root, "config.json"))
	total += int64(len(data))
	if err != nil {
		return total, err
	}
	if err := json.Unmarshal(data, &config); err != nil {
		return total, fmt.Errorf("config.json: %w", err)
	}
	var index struct {
		WeightMap map[string]string `json:"weight_map"`
	}
	data, err = os.ReadFile(filepath.Join(root, safetensorsIndex))
	total += int64(len(data))
	if err != nil {
		return total, err
	}
	if err := json.Unmarshal(data, &index); err != nil {
		return total, fmt.Errorf("%s: %w", safetensorsIndex, err)
	}
	var shards []string
	for _, shard := range index.WeightMap {
		shards = append(shards, shard)
	}
	slices.Sort(shards)
	shards = slices.Compact(shards)
	if len(shards) == 0 {
		return total, fmt.Errorf("%s names no shards", safetensorsIndex)
	}
	n, err := mmapTouch(ctx, root, shards, false)
	return total + n, err
}

func mmapTouchFile(path, name string, shuffle bool, seed uint64) (int64, error) {
	return mountproc.ReadMapped(path, func(_ *os.File, data []byte) error {
		spans, err := tensorSpans(name, data)
		if err != nil {
			return err
		}
		if shuffle {
			// Fixed seed: runs are comparable, and the order has nothing to do
			// with the layout, which is what defeats readahead.
			rand.New(rand.NewPCG(seed, 0x5eed)).Shuffle(len(spans), func(i, j int) { spans[i], spans[j] = spans[j], spans[i] })
		}
		var acc byte
		for _, s := range spans {
			acc ^= mountproc.TouchPages(data, s.begin, s.end)
		}
		sink = acc
		return nil
	})
}

// tensorBuf is firstTensor's buffer, kept from call to call (and faulted
// in by an untimed first call) so that ttft times the reads, not the
// faulting-in of a fresh 98 MiB allocation, whose cost varies with what
// the Go heap happens to hold.
var tensorBuf []byte

// firstTensor is the ttft reader: open the shard, read the 8-byte length
// and the JSON header, then the bytes of the tensor stored first, as a
// loader streaming tensors to a device would. It returns the bytes in hand
// and the tensor's data (for checking, outside the timing), which is valid
// until the next call. It is not safe for concurrent use.
// If hdr is not nil, the time from the open to the first byte of the
// header and to the header parsed are stored there.
func firstTensor(path string, hdr *headerTimes) (int64, []byte, int64, error) {
	t0 := time.Now()
	f, err := os.Open(path)
	if err != nil {
		return 0, nil, 0, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return 0, nil, 0, err
	}
	cr := &countingReaderAt{r: f, t0: t0}
	ts, err := modelgen.ParseSafetensors(cr, st.Size())
	if err != nil {
		return 0, nil, 0, fmt.Errorf("parsing %s: %w", path, err)
	}
	if hdr != nil {
		hdr.FirstByte, hdr.Parsed = cr.first, time.Since(t0).Seconds()
	}
	first := ts[0]
	for _, t := range ts {
		if t.Begin < first.Begin {
			first = t
		}
	}
	if int64(cap(tensorBuf)) < first.Size() {
		tensorBuf = make([]byte, first.Size())
	}
	buf := tensorBuf[:first.Size()]
	if _, err := f.ReadAt(buf, first.Begin); err != nil {
		return 0, nil, 0, fmt.Errorf("reading tensor %s of %s: %w", first.Name, path, err)
	}
	return cr.n + first.Size(), buf, first.Begin, nil
}

// headerTimes are a loader's latencies to a shard's header, in seconds
// from opening it: to its first byte (the 8-byte length) and to the whole
// header parsed. On a fresh mount they are what prefetch must not delay.
type headerTimes struct {
	FirstByte float64 `json:"first_byte_s"`
	Parsed    float64 `json:"parsed_s"`
}

type countingReaderAt struct {
	r     io.ReaderAt
	n     int64
	t0    time.Time
	first float64 // seconds from t0 to the end of the first read
}

func (c *countingReaderAt) ReadAt(p []byte, off int64) (int, error) {
	n, err := c.r.ReadAt(p, off)
	if c.n == 0 && !c.t0.IsZero() {
		c.first = time.Since(c.t0).Seconds()
	}
	c.n += int64(n)
	return n, err
}

// spotCheck compares samples of 4 KiB at fixed pseudo-random offsets of
// each file under the mount with the generated source, so that a fast but
// wrong read path cannot post a number. It runs outside the timing, after
// the warm pass, when the pages are cached.
func spotCheck(mountRoot, srcRoot string, names []string, perFile int) error {
	rng := rand.New(rand.NewPCG(7, 11))
	a, b := make([]byte, pageSize), make([]byte, pageSize)
	for _, name := range names {
		mf, err := os.Open(filepath.Join(mountRoot, name))
		if err != nil {
			return err
		}
		sf, err := os.Open(filepath.Join(srcRoot, name))
		if err != nil {
			mf.Close()
			return err
		}
		st, err := sf.Stat()
		for i := 0; err == nil && i < perFile; i++ {
			off := int64(0)
			if i > 0 && st.Size() > pageSize {
				off = rng.Int64N(st.Size() - pageSize)
			}
			na, ea := mf.ReadAt(a, off)
			nb, eb := sf.ReadAt(b, off)
			switch {
			case ea != nil && !errors.Is(ea, io.EOF):
				err = fmt.Errorf("spot check: reading %s at %d through the mount: %w", name, off, ea)
			case eb != nil && !errors.Is(eb, io.EOF):
				err = fmt.Errorf("spot check: reading the source of %s: %w", name, eb)
			case na != nb || !bytes.Equal(a[:na], b[:nb]):
				err = fmt.Errorf("spot check: %s at %d differs between the mount and the source", name, off)
			}
		}
		mf.Close()
		sf.Close()
		if err != nil {
			return err
		}
	}
	return nil
}

// residentBytes returns the bytes the regular files under dir hold (their
// allocated blocks, not their sizes: a cache's data files are sparse until
// complete) and how many of those are in the page cache, from mincore on a
// read-only mapping of each (which faults nothing in): the condition a
// remount pass starts in.
func residentBytes(dir string) (resident, total int64, err error) {
	err = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		r, n, err := residentFile(path)
		resident, total = resident+r, total+n
		return err
	})
	return resident, total, err
}

func residentFile(path string) (resident, held int64, err error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil || st.Size == 0 {
		return 0, 0, err
	}
	size := st.Size
	held = min(size, st.Blocks*512)
	data, err := syscall.Mmap(int(f.Fd()), 0, int(size), syscall.PROT_READ, syscall.MAP_SHARED)
	if err != nil {
		return 0, held, fmt.Errorf("mmap %s: %w", path, err)
	}
	defer syscall.Munmap(data)
	page := int64(os.Getpagesize())
	vec := make([]byte, (size+page-1)/page)
	_, _, e := syscall.Syscall(syscall.SYS_MINCORE, uintptr(unsafe.Pointer(&data[0])), uintptr(len(data)), uintptr(unsafe.Pointer(&vec[0])))
	if e != 0 {
		return 0, held, fmt.Errorf("mincore %s: %w", path, e)
	}
	for i, v := range vec {
		if v&1 != 0 {
			resident += min(page, size-int64(i)*page)
		}
	}
	return min(resident, held), held, nil
}
