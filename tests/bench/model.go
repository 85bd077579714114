package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/modelfs/modelfs/tests/modelgen"
)

// modelVersion changes whenever what generateModel writes changes, so that
// a cached model of an older layout is regenerated rather than measured.
const modelVersion = "bench-model-v1"

const ggufName = "model-bf16.gguf"

// modelFile is one file of the benchmark model.
type modelFile struct {
	Name string `json:"name"`
	Size int64  `json:"size"`
}

// benchModel is the generated model: sharded safetensors with index.json
// and config/tokenizer files (from modelgen) plus one GGUF file.
type benchModel struct {
	Dir    string
	Files  []modelFile // sorted by name
	Shards []string    // the safetensors shards, in order
	GGUF   string
}

func (m *benchModel) total() int64 {
	var n int64
	for _, f := range m.Files {
		n += f.Size
	}
	return n
}

func (m *benchModel) size(name string) int64 {
	for _, f := range m.Files {
		if f.Name == name {
			return f.Size
		}
	}
	return 0
}

// largest returns the biggest file (the first by name among equals).
func (m *benchModel) largest() modelFile {
	var best modelFile
	for _, f := range m.Files {
		if f.Size > best.Size {
			best = f
		}
	}
	return best
}

// weightFiles are the files a loader maps: the shards and the GGUF.
func (m *benchModel) weightFiles() []string {
	return append(slices.Clone(m.Shards), m.GGUF)
}

// modelStamp is written last into the model directory; a directory whose
// stamp matches the request is reused as it is.
type modelStamp struct {
	Version string      `json:"version"`
	Size    int64       `json:"size"`
	Shards  int         `json:"shards"`
	Seed    int64       `json:"seed"`
	Files   []modelFile `json:"files"`
}

const stampName = ".stamp.json"

// shardCount gives at least four shards (for concurrent-4) and about 2 GiB
// each beyond that, so that large models have shards of a realistic size.
func shardCount(size int64) int {
	return max(4, int((size*7/8+(1<<30))/(2<<30)))
}

// loadOrGenerateModel reuses dir if its stamp says it holds this model, and
// otherwise generates it there: 7/8 of size as safetensors, 1/8 as GGUF.
func loadOrGenerateModel(dir string, size int64, logf func(string, ...any)) (*benchModel, error) {
	want := modelStamp{Version: modelVersion, Size: size, Shards: shardCount(size), Seed: 1}
	if m, ok := reuseModel(dir, want); ok {
		logf("reusing the model in %s (%s)", dir, fmtBytes(m.total()))
		return m, nil
	}
	t0 := time.Now()
	if err := os.RemoveAll(dir); err != nil {
		return nil, fmt.Errorf("clearing %s: %w", dir, err)
	}
	logf("generating a %s Llama-style model in %s (%d safetensors shards + GGUF)", fmtBytes(size), dir, want.Shards)
	gen, err := modelgen.Generate(dir, modelgen.Options{TotalBytes: size * 7 / 8, Shards: want.Shards, Seed: want.Seed})
	if err != nil {
		return nil, fmt.Errorf("generating the safetensors model: %w", err)
	}
	if _, err := writeLlamaGGUF(filepath.Join(dir, ggufName), size/8, uint64(want.Seed)); err != nil {
		return nil, fmt.Errorf("generating the GGUF model: %w", err)
	}
	names := append(slices.Clone(gen.Files), ggufName)
	sort.Strings(names)
	for _, n := range names {
		st, err := os.Stat(filepath.Join(dir, n))
		if err != nil {
			return nil, fmt.Errorf("generated model: %w", err)
		}
		want.Files = append(want.Files, modelFile{Name: n, Size: st.Size()})
	}
	b, err := json.MarshalIndent(want, "", "  ")
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, stampName), b, 0o644); err != nil {
		return nil, fmt.Errorf("writing the model stamp: %w", err)
	}
	m := newBenchModel(dir, want.Files)
	logf("generated %s in %.1fs", fmtBytes(m.total()), time.Since(t0).Seconds())
	return m, nil
}

func reuseModel(dir string, want modelStamp) (*benchModel, bool) {
	b, err := os.ReadFile(filepath.Join(dir, stampName))
	if err != nil {
		return nil, false
	}
	var got modelStamp
	if json.Unmarshal(b, &got) != nil || got.Version != want.Version || got.Size != want.Size ||
		got.Shards != want.Shards || got.Seed != want.Seed || len(got.Files) == 0 {
		return nil, false
	}
	for _, f := range got.Files {
		st, err := os.Stat(filepath.Join(dir, f.Name))
		if err != nil || st.Size() != f.Size {
			return nil, false
		}
	}
	return newBenchModel(dir, got.Files), true
}

func newBenchModel(dir string, files []modelFile) *benchModel {
	m := &benchModel{Dir: dir, Files: files}
	for _, f := range files {
		switch {
		case strings.HasSuffix(f.Name, ".safetensors"):
			m.Shards = append(m.Shards, f.Name)
		case f.Name == ggufName:
			m.GGUF = f.Name
		}
	}
	return m
}

// uploadModel copies every file into the server as bucket/prefix+name.
// The server keeps its own copy in its directory, so afterwards the
// generated files are dropped from the page cache (they are only read again
// by spot checks): with large models, three copies (generated, server,
// downloaded) would not all stay cached, and the server's is the one the
// benchmark's conditions are about.
func uploadModel(ctx context.Context, r *remoteProc, m *benchModel, bucket, prefix string) error {
	if err := r.createBucket(ctx, bucket); err != nil {
		return fmt.Errorf("creating bucket %s: %w", bucket, err)
	}
	for _, f := range m.Files {
		path := filepath.Join(m.Dir, f.Name)
		if err := r.putFile(ctx, bucket, prefix+f.Name, path); err != nil {
			return fmt.Errorf("uploading %s: %w", f.Name, err)
		}
		if err := dropCache(path); err != nil {
			return err
		}
	}
	return nil
}

// dropCache asks the kernel to evict path's clean pages.
func dropCache(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
		return fmt.Errorf("dropping %s from the page cache: %w", path, err)
	}
	return nil
}

// warmDir reads every file under dir once, which leaves it in the page
// cache: the S3 server's objects, as the numbers are for "the remote has
// the data in memory", isolating modelfs from a disk; and a scenario's
// cache files before its remount pass.
func warmDir(dir string) (int64, error) {
	var total int64
	buf := make([]byte, 1<<20)
	err := filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		defer f.Close()
		n, err := io.CopyBuffer(io.Discard, struct{ io.Reader }{f}, buf)
		total += n
		if err != nil {
			return fmt.Errorf("reading %s: %w", path, err)
		}
		return nil
	})
	return total, err
}

func fmtBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.2f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.0f MiB", float64(n)/(1<<20))
	default:
		return fmt.Sprintf("%d B", n)
	}
}
