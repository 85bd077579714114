package pack

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/modelfs/modelfs/fetch"
	"github.com/modelfs/modelfs/modelformat/loadorder"
)

// countingSource counts the reads that reach the inner source.
type countingSource struct {
	fetch.Source
	reads atomic.Int64
}

func (c *countingSource) ReadAt(ctx context.Context, o fetch.Object, p []byte, off int64) (int, error) {
	c.reads.Add(1)
	return c.Source.ReadAt(ctx, o, p, off)
}

// packTo packs data into dir/name.mfpack at the given frame size.
func packTo(t *testing.T, dir, name string, data []byte, frameSize int64) {
	t.Helper()
	l, err := DetectLayout(name, bytes.NewReader(data), int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	p, _ := encodeBytes(t, data, EncodeOptions{FrameSize: frameSize, Layout: l})
	path := filepath.Join(dir, name+Suffix)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, p, 0o644); err != nil {
		t.Fatal(err)
	}
}

// packedDir is a local source with two packs, a plain file, and a file
// that is there both plain and packed.
type packedDir struct {
	dir   string
	files map[string][]byte // what the source should show
	logs  *bytes.Buffer
	inner *countingSource
	src   *Source
}

func newPackedDir(t *testing.T) *packedDir {
	t.Helper()
	dir := t.TempDir()
	st, _ := dtypeFile(t, "BF16")
	rng := rand.New(rand.NewPCG(5, 5))
	gguf, _ := writeGGUF([]ggufTensor{{"token_embd.weight", 30, []uint64{1000, 300}}}, func(_ int, p []byte) { normalBF16(rng, p) })
	d := &packedDir{dir: dir, logs: &bytes.Buffer{}, files: map[string][]byte{
		"model.safetensors": st,
		"sub/model.gguf":    gguf,
		"config.json":       []byte(`{"architectures": ["LlamaForCausalLM"]}`),
		"dup.bin":           []byte("the plain one"),
	}}
	packTo(t, dir, "model.safetensors", st, MinFrameSize)
	packTo(t, dir, "sub/model.gguf", gguf, MinFrameSize)
	packTo(t, dir, "dup.bin", []byte("the packed one"), MinFrameSize)
	for _, name := range []string{"config.json", "dup.bin"} {
		if err := os.WriteFile(filepath.Join(dir, name), d.files[name], 0o644); err != nil {
			t.Fatal(err)
		}
	}
	local, err := fetch.NewLocal(fetch.LocalOptions{Root: dir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { local.Close() })
	d.inner = &countingSource{Source: local}
	d.src, err = NewSource(d.inner, Options{Logger: slog.New(slog.NewTextHandler(d.logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func (d *packedDir) list(t *testing.T) map[string]fetch.Object {
	t.Helper()
	objs, err := d.src.List(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if !slices.IsSortedFunc(objs, func(a, b fetch.Object) int { return strings.Compare(a.Key, b.Key) }) {
		t.Error("List is not sorted by key")
	}
	m := map[string]fetch.Object{}
	for _, o := range objs {
		m[o.Key] = o
	}
	return m
}

func TestSourceShowsOriginals(t *testing.T) {
	d := newPackedDir(t)
	objs := d.list(t)
	if len(objs) != len(d.files) {
		t.Fatalf("listed %v, want the %d originals", slices.Collect(mapKeys(objs)), len(d.files))
	}
	for name, want := range d.files {
		o, ok := objs[name]
		if !ok {
			t.Fatalf("%s is not listed", name)
		}
		if o.Size != int64(len(want)) {
			t.Errorf("%s: size %d, want %d", name, o.Size, len(want))
		}
		got := make([]byte, o.Size)
		if n, err := d.src.ReadAt(t.Context(), o, got, 0); n != len(got) || (err != nil && err != io.EOF) {
			t.Fatalf("%s: ReadAt: %d, %v", name, n, err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s: content differs from the original", name)
		}
		sum := sha256.Sum256(want)
		packed := name != "config.json" && name != "dup.bin"
		if wantSum := base64.StdEncoding.EncodeToString(sum[:]); packed != (o.Checksum == fetch.Checksum{Algorithm: "SHA256", Value: wantSum}) {
			t.Errorf("%s: checksum %+v", name, o.Checksum)
		}
		// Stat agrees with List, so that warm verifies the checksum.
		st, err := d.src.Stat(t.Context(), name)
		if err != nil {
			t.Fatal(err)
		}
		if st.Version() != o.Version() || st.Checksum != o.Checksum || st.Size != o.Size {
			t.Errorf("%s: Stat gives %+v, List gave %+v", name, st, o)
		}
	}
	if _, err := d.src.Stat(t.Context(), "missing"); !errors.Is(err, fetch.ErrNotFound) {
		t.Errorf("Stat of a missing file: %v, want ErrNotFound", err)
	}
	d.list(t)
	if n := strings.Count(d.logs.String(), "both plain and packed"); n != 1 {
		t.Errorf("%d warnings about dup.bin over two listings, want 1:\n%s", n, d.logs)
	}
}

func mapKeys(m map[string]fetch.Object) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// TestSourceConcurrentRanges reads random ranges from several goroutines
// (run with -race): partial frames go through the shared frame cache.
func TestSourceConcurrentRanges(t *testing.T) {
	d := newPackedDir(t)
	objs := d.list(t)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(g), 7))
			for range 40 {
				name := []string{"model.safetensors", "sub/model.gguf"}[rng.IntN(2)]
				want := d.files[name]
				off := rng.IntN(len(want))
				n := 1 + rng.IntN(min(len(want)-off, 3*MinFrameSize))
				p := make([]byte, n)
				if k, err := d.src.ReadAt(context.Background(), objs[name], p, int64(off)); k != n || (err != nil && err != io.EOF) {
					t.Errorf("%s: ReadAt %d at %d: %d, %v", name, n, off, k, err)
					return
				}
				if !bytes.Equal(p, want[off:off+n]) {
					t.Errorf("%s: %d bytes at %d differ", name, n, off)
					return
				}
			}
		})
	}
	wg.Wait()
}

// TestSourceSmallReadsDecodeAFrameOnce: reads smaller than a frame, as
// with a block size below the frame size, fetch and decode it once.
func TestSourceSmallReadsDecodeAFrameOnce(t *testing.T) {
	d := newPackedDir(t)
	o := d.list(t)["model.safetensors"]
	before := d.inner.reads.Load()
	var wg sync.WaitGroup
	for i := range 16 {
		wg.Go(func() {
			p := make([]byte, MinFrameSize/16)
			off := int64(MinFrameSize + i*len(p))
			if _, err := d.src.ReadAt(t.Context(), o, p, off); err != nil {
				t.Error(err)
			}
			if !bytes.Equal(p, d.files["model.safetensors"][off:off+int64(len(p))]) {
				t.Errorf("bytes at %d differ", off)
			}
		})
	}
	wg.Wait()
	if n := d.inner.reads.Load() - before; n != 1 {
		t.Errorf("16 reads within one frame made %d reads of the pack, want 1", n)
	}
	// A read of whole frames is one read of the pack, whatever the count.
	before = d.inner.reads.Load()
	p := make([]byte, 4*MinFrameSize)
	if _, err := d.src.ReadAt(t.Context(), o, p, 4*MinFrameSize); err != nil {
		t.Fatal(err)
	}
	if n := d.inner.reads.Load() - before; n != 1 {
		t.Errorf("a 4-frame read made %d reads of the pack, want 1", n)
	}
}

func TestSourceChangedAndDamagedPacks(t *testing.T) {
	d := newPackedDir(t)
	old := d.list(t)["model.safetensors"]
	path := filepath.Join(d.dir, "model.safetensors"+Suffix)
	data := readFile(t, path)
	ix, err := ReadIndex(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	bad := ix.Frames[3]
	data[bad.Off+bad.Len/2] ^= 1
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	later := time.Now().Add(time.Minute)
	if err := os.Chtimes(path, later, later); err != nil {
		t.Fatal(err)
	}
	// The listed version is gone: reads of it fail, never mixing versions.
	if _, err := d.src.ReadAt(t.Context(), old, make([]byte, 10), 0); !errors.Is(err, fetch.ErrChanged) {
		t.Errorf("reading the replaced pack: %v, want ErrChanged", err)
	}
	cur := d.list(t)["model.safetensors"]
	if cur.Version() == old.Version() {
		t.Fatalf("version %s did not change with the pack", cur.Version())
	}
	fs, n := ix.FrameRange(3)
	if _, err := d.src.ReadAt(t.Context(), cur, make([]byte, 10), fs+n/2); !errors.Is(err, ErrCorrupt) {
		t.Errorf("reading the damaged frame: %v, want ErrCorrupt", err)
	}
	want := d.files["model.safetensors"]
	p := make([]byte, 3*MinFrameSize)
	if _, err := d.src.ReadAt(t.Context(), cur, p, 0); err != nil || !bytes.Equal(p, want[:len(p)]) {
		t.Errorf("reading frames 0-2, intact: %v", err)
	}
	// A damaged index fails the listing, naming the pack.
	data[len(data)-TrailerLen-3] ^= 1
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := d.src.List(t.Context()); !errors.Is(err, ErrFormat) || !strings.Contains(err.Error(), "model.safetensors"+Suffix) {
		t.Errorf("listing with a damaged index: %v, want ErrFormat naming the pack", err)
	}
}

// TestSourcePlansLikeThePlainFiles: the prefetch planner reads headers
// through the source, and must see what it sees in the originals.
func TestSourcePlansLikeThePlainFiles(t *testing.T) {
	d := newPackedDir(t)
	objs := d.list(t)
	var packed, plain []loadorder.File
	for name, o := range objs {
		packed = append(packed, loadorder.File{Path: name, Size: o.Size, Open: func() (io.ReaderAt, error) {
			return objectReader{t.Context(), d.src, o}, nil
		}})
		data := d.files[name]
		plain = append(plain, loadorder.File{Path: name, Size: int64(len(data)), Open: func() (io.ReaderAt, error) {
			return bytes.NewReader(data), nil
		}})
	}
	got, err := loadorder.Plan(packed, loadorder.PlanOptions{SmallFile: 1 << 10})
	if err != nil {
		t.Fatal(err)
	}
	want, err := loadorder.Plan(plain, loadorder.PlanOptions{SmallFile: 1 << 10})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, want) || len(got) < 5 {
		t.Errorf("plan through the packs:\n%v\nplan of the originals:\n%v", got, want)
	}
}

// TestFrameCacheCancelledLoad: a load that fails because its reader gave
// up is not cached, and a reader waiting on it loads the frame itself.
func TestFrameCacheCancelledLoad(t *testing.T) {
	c := newFrameCache(1 << 20)
	k := frameKey{"obj", 3}
	started, release := make(chan struct{}), make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		_, err := c.get(k, func() ([]byte, error) {
			close(started)
			<-release
			return nil, context.Canceled
		})
		if !errors.Is(err, context.Canceled) {
			t.Errorf("the cancelled load: %v", err)
		}
	})
	<-started
	var got []byte
	var err error
	wg.Go(func() {
		got, err = c.get(k, func() ([]byte, error) { return []byte("frame"), nil })
	})
	close(release)
	wg.Wait()
	if err != nil || string(got) != "frame" {
		t.Fatalf("the second reader got %q, %v", got, err)
	}
	// Now cached: a load that would fail is not called.
	if got, err := c.get(k, func() ([]byte, error) { return nil, errors.New("loaded twice") }); err != nil || string(got) != "frame" {
		t.Errorf("cached frame: %q, %v", got, err)
	}
}
