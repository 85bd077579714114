package fetch

import (
	"bytes"
	"context"
	"errors"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/modelfs/modelfs/tests/modelgen"
)

func writeFile(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

func newTestLocal(t *testing.T, dir string) *Local {
	t.Helper()
	l, err := NewLocal(LocalOptions{Root: dir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func TestLocalList(t *testing.T) {
	base := t.TempDir()
	root := filepath.Join(base, "root")
	writeFile(t, filepath.Join(root, "z"), []byte("zz"))
	writeFile(t, filepath.Join(root, "a.txt"), []byte("a"))
	writeFile(t, filepath.Join(root, "a", "b.bin"), bytes.Repeat([]byte{7}, 1000))
	writeFile(t, filepath.Join(root, "a", "c", "d"), nil)
	writeFile(t, filepath.Join(base, "secret"), []byte("outside"))
	links := map[string]string{
		"in":      "a/b.bin",                     // inside: followed
		"out":     "../secret",                   // escapes: skipped
		"abs":     filepath.Join(base, "secret"), // escapes: skipped
		"dirlink": "a",                           // a directory: skipped
		"dangle":  "nowhere",                     // dangling: skipped
	}
	for name, target := range links {
		if err := os.Symlink(target, filepath.Join(root, name)); err != nil {
			t.Fatal(err)
		}
	}
	if err := syscall.Mkfifo(filepath.Join(root, "fifo"), 0o644); err != nil {
		t.Fatal(err)
	}

	l := newTestLocal(t, root)
	objs, err := l.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	sizes := map[string]int64{}
	for _, o := range objs {
		keys = append(keys, o.Key)
		sizes[o.Key] = o.Size
		if o.ModTime.IsZero() || o.ETag != "" {
			t.Errorf("%s: ModTime %v ETag %q; want mtime set, no ETag", o.Key, o.ModTime, o.ETag)
		}
	}
	want := []string{"a.txt", "a/b.bin", "a/c/d", "in", "z"}
	if !slices.Equal(keys, want) {
		t.Fatalf("keys = %q, want %q", keys, want)
	}
	for k, n := range map[string]int64{"a.txt": 1, "a/b.bin": 1000, "a/c/d": 0, "in": 1000, "z": 2} {
		if sizes[k] != n {
			t.Errorf("size of %s = %d, want %d", k, sizes[k], n)
		}
	}
	if got, want := l.String(), "file://"+root; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
}

func TestLocalReadAt(t *testing.T) {
	root := t.TempDir()
	data := make([]byte, 10000)
	for i := range data {
		data[i] = byte(i * 31)
	}
	writeFile(t, filepath.Join(root, "d", "w.bin"), data)
	l := newTestLocal(t, root)
	ctx := context.Background()
	obj, err := l.Stat(ctx, "d/w.bin")
	if err != nil {
		t.Fatal(err)
	}
	if obj.Size != int64(len(data)) {
		t.Fatalf("Size = %d", obj.Size)
	}
	cases := []struct {
		off, n  int64
		wantN   int
		wantEOF bool
	}{
		{0, 10000, 10000, false},
		{123, 4567, 4567, false},
		{9000, 1000, 1000, false},
		{9000, 4096, 1000, true},
		{9999, 1, 1, false},
		{10000, 10, 0, true},
		{20000, 10, 0, true},
	}
	for _, c := range cases {
		p := make([]byte, c.n)
		n, err := l.ReadAt(ctx, obj, p, c.off)
		if n != c.wantN || (err == io.EOF) != c.wantEOF || (err != nil && err != io.EOF) {
			t.Errorf("ReadAt(off %d, len %d) = %d, %v; want %d, eof=%v", c.off, c.n, n, err, c.wantN, c.wantEOF)
			continue
		}
		if n > 0 && !bytes.Equal(p[:n], data[c.off:c.off+int64(n)]) {
			t.Errorf("ReadAt(off %d, len %d): wrong bytes", c.off, c.n)
		}
	}
}

func TestLocalChanged(t *testing.T) {
	root := t.TempDir()
	path := filepath.Join(root, "f")
	writeFile(t, path, []byte("version one"))
	l := newTestLocal(t, root)
	ctx := context.Background()
	obj, err := l.Stat(ctx, "f")
	if err != nil {
		t.Fatal(err)
	}
	p := make([]byte, 4)
	if _, err := l.ReadAt(ctx, obj, p, 0); err != nil {
		t.Fatal(err)
	}

	// Same size, new mtime.
	later := obj.ModTime.Add(3 * time.Second)
	if err := os.Chtimes(path, later, later); err != nil {
		t.Fatal(err)
	}
	if _, err := l.ReadAt(ctx, obj, p, 0); !errors.Is(err, ErrChanged) {
		t.Fatalf("after Chtimes: err = %v, want ErrChanged", err)
	}

	// New size, mtime put back to the pinned one.
	writeFile(t, path, []byte("version two, longer"))
	if err := os.Chtimes(path, obj.ModTime, obj.ModTime); err != nil {
		t.Fatal(err)
	}
	_, err = l.ReadAt(ctx, obj, p, 0)
	if !errors.Is(err, ErrChanged) || !strings.Contains(err.Error(), `"f"`) {
		t.Fatalf("after rewrite: err = %v, want ErrChanged naming the key", err)
	}

	// Stat picks up the new version, which then reads fine.
	obj2, err := l.Stat(ctx, "f")
	if err != nil {
		t.Fatal(err)
	}
	if obj2.Version() == obj.Version() {
		t.Fatalf("Version unchanged after rewrite: %s", obj2.Version())
	}
	if n, err := l.ReadAt(ctx, obj2, p, 8); err != nil || string(p[:n]) != "two," {
		t.Fatalf("ReadAt new version = %q, %v", p[:n], err)
	}
}

func TestLocalStatRejects(t *testing.T) {
	base := t.TempDir()
	root := filepath.Join(base, "root")
	writeFile(t, filepath.Join(root, "a", "b"), []byte("x"))
	writeFile(t, filepath.Join(base, "x"), []byte("outside"))
	if err := os.Symlink("../x", filepath.Join(root, "esc")); err != nil {
		t.Fatal(err)
	}
	l := newTestLocal(t, root)
	ctx := context.Background()
	for _, key := range []string{"../x", "a/../../x", "/etc/passwd", "", ".", "a//b", "a/./b", "a/b/", "esc", "a", "missing", "a\x00b"} {
		if obj, err := l.Stat(ctx, key); !errors.Is(err, ErrNotFound) {
			t.Errorf("Stat(%q) = %+v, %v; want ErrNotFound", key, obj, err)
		}
	}
	// Reading with a forged object is refused the same way.
	if _, err := l.ReadAt(ctx, Object{Key: "esc", Size: 7}, make([]byte, 7), 0); !errors.Is(err, ErrNotFound) {
		t.Errorf("ReadAt(esc) err = %v, want ErrNotFound", err)
	}
	if _, err := l.Stat(ctx, "a/b"); err != nil {
		t.Errorf("Stat(a/b): %v", err)
	}
}

func TestNewLocalErrors(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "no-such-dir")
	if _, err := NewLocal(LocalOptions{Root: missing}); err == nil || !strings.Contains(err.Error(), missing) {
		t.Errorf("NewLocal(missing) err = %v, want one naming %s", err, missing)
	}
	file := filepath.Join(t.TempDir(), "plain")
	writeFile(t, file, []byte("x"))
	if _, err := NewLocal(LocalOptions{Root: file}); err == nil || !strings.Contains(err.Error(), file) {
		t.Errorf("NewLocal(file) err = %v, want one naming %s", err, file)
	}
	if _, err := NewLocal(LocalOptions{}); err == nil {
		t.Error("NewLocal(empty) succeeded")
	}
	dir := t.TempDir()
	l, err := NewLocal(LocalOptions{Root: "file://" + dir})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if l.String() != "file://"+dir {
		t.Errorf("String() = %q", l.String())
	}
}

// A Hugging Face cache snapshot is served as its files, read through the
// links into its repository's blobs/; links the model-directory rule
// refuses are neither listed nor served.
func TestLocalHFCacheSnapshot(t *testing.T) {
	c, err := modelgen.WriteHFCache(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	l := newTestLocal(t, c.Snapshot)
	objs, err := l.List(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]int64{}
	for _, o := range objs {
		got[o.Key] = o.Size
		buf := make([]byte, o.Size)
		if n, err := l.ReadAt(t.Context(), o, buf, 0); n != len(buf) || (err != nil && err != io.EOF) {
			t.Fatalf("read %s: %d, %v", o.Key, n, err)
		}
		if !bytes.Equal(buf, c.Files[o.Key]) {
			t.Errorf("%s reads %q, want %q", o.Key, buf, c.Files[o.Key])
		}
	}
	want := map[string]int64{}
	for k, v := range c.Files {
		want[k] = int64(len(v))
	}
	if !maps.Equal(got, want) {
		t.Fatalf("listed %v, want %v", got, want)
	}
	for _, key := range c.Refused {
		if _, err := l.Stat(t.Context(), key); !errors.Is(err, ErrNotFound) {
			t.Errorf("stat %s: %v, want ErrNotFound", key, err)
		}
	}
}
