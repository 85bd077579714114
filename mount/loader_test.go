package mount

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/modelfs/modelfs/blockcache"
	"github.com/modelfs/modelfs/fetch"
)

// failingSource fails the read at one offset.
type failingSource struct {
	fetch.Source
	at int64
}

func (s failingSource) ReadAt(ctx context.Context, obj fetch.Object, p []byte, off int64) (int, error) {
	if off == s.at {
		return 0, errors.New("injected failure")
	}
	return s.Source.ReadAt(ctx, obj, p, off)
}

// loaderFor serves the one file of dir through src (wrapping dir's local
// source) and returns the loader and the file's ID.
func loaderFor(t *testing.T, dir string, wrap func(fetch.Source) fetch.Source) (*sourceLoader, blockcache.ObjectID) {
	t.Helper()
	local, err := fetch.NewLocal(fetch.LocalOptions{Root: dir})
	if err != nil {
		t.Fatal(err)
	}
	objs, err := local.List(t.Context())
	if err != nil || len(objs) != 1 {
		t.Fatalf("listing: %v, %d objects", err, len(objs))
	}
	f := remoteFile{path: objs[0].Key, obj: objs[0], model: &modelSource{src: wrap(local)}}
	return &sourceLoader{files: map[string]remoteFile{f.path: f}}, blockcache.ObjectID{Name: f.path, Version: f.obj.Version(), Size: f.obj.Size}
}

// A load in parts reads them with a request each, all at once, and puts
// the block together from them; one part failing fails the load.
func TestLoadBlockPartsReadsThePartsAtOnce(t *testing.T) {
	dir := t.TempDir()
	data := make([]byte, 3<<20+5)
	for i := range data {
		data[i] = byte(rand.Uint32())
	}
	if err := os.WriteFile(filepath.Join(dir, "w.bin"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	const parts = 4
	var mu sync.Mutex
	var offs []int64
	arrived := make(chan struct{})
	src := &hookedSource{read: func(p []byte, off int64) {
		mu.Lock()
		offs = append(offs, off)
		if len(offs) == parts {
			close(arrived)
		}
		mu.Unlock()
		// Each part waits for the others: parts read one after another
		// would never all arrive.
		select {
		case <-arrived:
		case <-time.After(10 * time.Second):
			t.Error("the parts were not read at once")
		}
	}}
	l, id := loaderFor(t, dir, func(s fetch.Source) fetch.Source { src.Source = s; return src })
	p := make([]byte, 3<<20)
	if err := l.LoadBlockParts(t.Context(), id, 5, p, parts); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(p, data[5:5+len(p)]) {
		t.Fatal("the block put together from its parts differs from the file")
	}
	slices.Sort(offs)
	if want := []int64{5, 5 + 786432, 5 + 2*786432, 5 + 3*786432}; !slices.Equal(offs, want) {
		t.Fatalf("parts read at %v, want %v", offs, want)
	}

	l, id = loaderFor(t, dir, func(s fetch.Source) fetch.Source { return failingSource{Source: s, at: 5 + 786432} })
	if err := l.LoadBlockParts(t.Context(), id, 5, p, parts); err == nil {
		t.Fatal("a load with a failing part succeeded")
	}
}
