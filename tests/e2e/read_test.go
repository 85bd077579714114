package e2e

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

func TestSequentialReadMatchesSource(t *testing.T) {
	r := newRemote(t)
	r.uploadModel(t, "llama/")
	m := startMount(t, "s3://"+bucket+"/llama", r.mountArgs()...)
	for _, name := range model.Files {
		want := sha256.Sum256(sourceBytes(t, name))
		if got := sha256File(t, m.path(name)); got != hex.EncodeToString(want[:]) {
			t.Errorf("%s: sha256 through the mount %s, source %x", name, got, want)
		}
	}
	if gets := r.srv.Stats().Gets; gets == 0 {
		t.Fatal("the server saw no GETs: bytes did not come from S3")
	}
}

func TestRandomPreadsMatchSource(t *testing.T) {
	r := newRemote(t)
	r.uploadModel(t, "")
	m := startMount(t, "s3://"+bucket, r.mountArgs()...)
	name := biggest(t)
	want := sourceBytes(t, name)
	f, err := os.Open(m.path(name))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rng := rand.New(rand.NewPCG(7, 7))
	buf := make([]byte, 256<<10)
	for i := range 10000 {
		off := rng.Int64N(int64(len(want)))
		n := 1 + rng.IntN(len(buf))
		got, err := f.ReadAt(buf[:n], off)
		wantN := min(n, len(want)-int(off))
		if got != wantN || (err != nil && got != wantN) {
			t.Fatalf("pread %d: %d bytes at %d: got %d, %v", i, n, off, got, err)
		}
		if !bytes.Equal(buf[:got], want[off:off+int64(got)]) {
			t.Fatalf("pread %d: %d bytes at %d differ from the source", i, n, off)
		}
	}
}

// mmap faults run in a child process: a page fault on a FUSE mapping
// blocks its thread outside any syscall, and in this process, which also
// serves S3, that could stall the garbage collector and the server with it.
func TestMmapWholeFileMatchesSource(t *testing.T) {
	r := newRemote(t)
	r.uploadModel(t, "")
	for _, order := range []string{"random", "header"} {
		m := startMount(t, "s3://"+bucket, r.mountArgs()...)
		out, err := exec.Command(mmapBin, "-quiet", "-order", order, m.dir).Output()
		if err != nil {
			t.Fatalf("mmapread -order %s: %v", order, err)
		}
		checked := 0
		for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			sum, name, _ := strings.Cut(line, "  ")
			if want := hexSum(sourceBytes(t, name)); sum != want {
				t.Errorf("%s: sha256 through mmap (%s order) %s, want %s", name, order, sum, want)
			}
			checked++
		}
		if checked != 3 {
			t.Fatalf("mmapread checked %d shards, want 3:\n%s", checked, out)
		}
		m.stop(t)
	}
}

func TestConcurrentReaders(t *testing.T) {
	r := newRemote(t)
	r.uploadModel(t, "")
	m := startMount(t, "s3://"+bucket, r.mountArgs()...)
	shard := biggest(t)
	want := map[string]string{}
	for _, name := range model.Files {
		sum := sha256.Sum256(sourceBytes(t, name))
		want[name] = hex.EncodeToString(sum[:])
	}
	// 8 readers over different files (cycling through them), then 8 on one.
	var diff []string
	for i := range 8 {
		diff = append(diff, model.Files[i%len(model.Files)])
	}
	same := []string{shard, shard, shard, shard, shard, shard, shard, shard}
	for _, files := range [][]string{diff, same} {
		var wg sync.WaitGroup
		errs := make(chan string, len(files))
		for _, name := range files {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if got := sha256File(t, m.path(name)); got != want[name] {
					errs <- name
				}
			}()
		}
		wg.Wait()
		close(errs)
		for name := range errs {
			t.Errorf("concurrent reader of %s got different bytes", name)
		}
	}
}

func TestListingMatchesBucket(t *testing.T) {
	r := newRemote(t)
	r.uploadModel(t, "org/llama/")
	// Extra nested objects, and one outside the prefix that must not show.
	for key, body := range map[string]string{"org/llama/extra/notes.txt": "notes", "org/llama/extra/deep/x.json": "{}", "org/other.bin": "no"} {
		if _, err := r.srv.PutObject(bucket, key, []byte(body)); err != nil {
			t.Fatal(err)
		}
	}
	m := startMount(t, "s3://"+bucket+"/org/llama/", r.mountArgs()...)

	want := map[string]int64{}
	p := s3.NewListObjectsV2Paginator(r.client, &s3.ListObjectsV2Input{Bucket: aws.String(bucket), Prefix: aws.String("org/llama/")})
	for p.HasMorePages() {
		page, err := p.NextPage(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range page.Contents {
			want[(*o.Key)[len("org/llama/"):]] = *o.Size
		}
	}
	got := map[string]int64{}
	err := filepath.WalkDir(m.dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			info, err := d.Info()
			if err != nil {
				return err
			}
			rel, _ := filepath.Rel(m.dir, path)
			got[rel] = info.Size()
			if info.Mode().Perm() != 0o444 {
				t.Errorf("%s: mode %v, want read-only 0444", rel, info.Mode())
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Errorf("mount shows %d files, bucket has %d: %v vs %v", len(got), len(want), keys(got), keys(want))
	}
	for k, size := range want {
		if got[k] != size {
			t.Errorf("%s: size %d on the mount, %d in the bucket", k, got[k], size)
		}
	}
}

func keys(m map[string]int64) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func TestWriteOperationsFailWithEROFS(t *testing.T) {
	r := newRemote(t)
	r.uploadModel(t, "")
	m := startMount(t, "s3://"+bucket, r.mountArgs()...)
	file := m.path(model.Files[0])
	ops := map[string]func() error{
		"write": func() error {
			f, err := os.OpenFile(file, os.O_WRONLY, 0)
			if err == nil {
				f.Close()
			}
			return err
		},
		"create":   func() error { _, err := os.Create(m.path("new.bin")); return err },
		"unlink":   func() error { return os.Remove(file) },
		"rename":   func() error { return os.Rename(file, m.path("renamed")) },
		"chmod":    func() error { return os.Chmod(file, 0o644) },
		"truncate": func() error { return os.Truncate(file, 0) },
		"mkdir":    func() error { return os.Mkdir(m.path("dir"), 0o755) },
		"symlink":  func() error { return os.Symlink("x", m.path("link")) },
		"utimes":   func() error { return syscall.Utimes(file, []syscall.Timeval{{}, {}}) },
	}
	for name, op := range ops {
		if err := op(); !errors.Is(err, syscall.EROFS) {
			t.Errorf("%s: got %v, want EROFS", name, err)
		}
	}
	// Nothing changed.
	if got := sha256File(t, file); got != hexSum(sourceBytes(t, model.Files[0])) {
		t.Fatal("file content changed after write attempts")
	}
}

func hexSum(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func TestMountWithThousandsOfFiles(t *testing.T) {
	r := newRemote(t)
	r.srv.CreateBucket(bucket)
	const n = 2000
	for i := range n {
		if _, err := r.srv.PutObject(bucket, fmt.Sprintf("many/d%02d/f%04d.json", i%20, i), []byte(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	m := startMount(t, "s3://"+bucket+"/many", r.mountArgs()...)
	count := 0
	err := filepath.WalkDir(m.dir, func(path string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			count++
		}
		return err
	})
	if err != nil || count != n {
		t.Fatalf("walked %d files (%v), want %d", count, err, n)
	}
	for _, i := range []int{0, 777, n - 1} {
		got, err := os.ReadFile(m.path(fmt.Sprintf("d%02d/f%04d.json", i%20, i)))
		if err != nil || string(got) != fmt.Sprint(i) {
			t.Fatalf("file %d: %q, %v", i, got, err)
		}
	}
}
