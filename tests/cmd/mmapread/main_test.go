package main

import (
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/modelfs/modelfs/tests/modelgen"
)

func sha256sum(t *testing.T, dir string, names ...string) string {
	t.Helper()
	var b strings.Builder
	for _, n := range names {
		data, err := os.ReadFile(filepath.Join(dir, n))
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, "%x  %s\n", sha256.Sum256(data), n)
	}
	return b.String()
}

func TestReadModel(t *testing.T) {
	dir := t.TempDir()
	m, err := modelgen.Generate(dir, modelgen.Options{TotalBytes: 4 << 20, Shards: 2, Seed: 3})
	if err != nil {
		t.Fatal(err)
	}
	shards := []string{modelgen.ShardName(0, 2), modelgen.ShardName(1, 2)}
	want := sha256sum(t, dir, shards...)

	for _, order := range []string{"header", "random"} {
		var out strings.Builder
		if err := run([]string{"-quiet", "-order", order, dir}, &out); err != nil {
			t.Fatal(err)
		}
		if out.String() != want {
			t.Errorf("-order %s -quiet output:\n%s\nwant (sha256sum):\n%s", order, out.String(), want)
		}
	}

	var out strings.Builder
	if err := run([]string{dir}, &out); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	if len(lines) != 3 {
		t.Fatalf("output:\n%s", out.String())
	}
	perFile := regexp.MustCompile(`^[0-9a-f]{64}  (\S+)  (\d+) tensors  [0-9.]+ MiB/s$`)
	n := 0
	for i, line := range lines[:2] {
		g := perFile.FindStringSubmatch(line)
		if g == nil || g[1] != shards[i] || line[:64] != strings.Split(want, "\n")[i][:64] {
			t.Fatalf("bad line %q", line)
		}
		var k int
		fmt.Sscan(g[2], &k)
		n += k
	}
	if n != len(m.Tensors) {
		t.Errorf("touched %d tensors, model has %d", n, len(m.Tensors))
	}
	total := fmt.Sprintf("total  2 files  %d tensors  ", len(m.Tensors))
	if !strings.HasPrefix(lines[2], total) || !strings.HasSuffix(lines[2], " MiB/s") {
		t.Errorf("total line %q", lines[2])
	}
}

func TestErrors(t *testing.T) {
	empty := t.TempDir()
	corrupt := t.TempDir()
	os.WriteFile(filepath.Join(corrupt, "a.safetensors"), []byte("\x10\x00\x00\x00\x00\x00\x00\x00{not json}......"), 0o644)
	zero := t.TempDir()
	os.WriteFile(filepath.Join(zero, "a.safetensors"), nil, 0o644)

	for name, args := range map[string][]string{
		"no args":     nil,
		"two args":    {empty, empty},
		"bad order":   {"-order", "sideways", empty},
		"bad flag":    {"-nope", empty},
		"no files":    {empty},
		"missing dir": {filepath.Join(empty, "missing")},
		"corrupt":     {corrupt},
		"empty file":  {zero},
	} {
		var out strings.Builder
		err := run(args, &out)
		if err == nil {
			t.Errorf("%s: succeeded, output %q", name, out.String())
		} else if strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: multi-line error %q", name, err)
		}
	}
}

// TestFaultIsAnError shrinks a file under its mapping, so touching the
// lost pages raises SIGBUS as a failing FUSE read would; that must come
// back as an error, not a crash.
func TestFaultIsAnError(t *testing.T) {
	dir := t.TempDir()
	if _, err := modelgen.Generate(dir, modelgen.Options{TotalBytes: 1 << 20, Seed: 1}); err != nil {
		t.Fatal(err)
	}
	afterMap = func(f *os.File) {
		if err := os.Truncate(f.Name(), 8192); err != nil {
			t.Error(err)
		}
	}
	defer func() { afterMap = func(*os.File) {} }()
	err := run([]string{dir}, io.Discard)
	if err == nil {
		t.Fatal("succeeded on a truncated mapping")
	}
	g := regexp.MustCompile(`fault reading mapping at offset (\d+)$`).FindStringSubmatch(err.Error())
	var off int64
	if g != nil {
		fmt.Sscan(g[1], &off)
	}
	if off < 8192 { // the pages that were cut off
		t.Errorf("got %v, want a fault past offset 8192", err)
	}
}
