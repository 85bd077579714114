package blockcache

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Tests of a disk cache that outlives what it is given: absurd sizes,
// damaged entries, failing or vanishing directories, slow verifications.

// logBuf collects a cache's log lines.
type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func (l *logBuf) logger() *slog.Logger { return slog.New(slog.NewTextHandler(l, nil)) }

// patternLoader serves any object, however large: byte i is a function of i.
type patternLoader struct{}

func (patternLoader) LoadBlock(_ context.Context, _ ObjectID, off int64, p []byte) error {
	for i := range p {
		p[i] = patternByte(off + int64(i))
	}
	return nil
}

func patternByte(off int64) byte { return byte(off*31 + off>>17) }

func newLoggedDiskCache(t *testing.T, dir string, l Loader, diskMax int64, logs *logBuf) *Cache {
	t.Helper()
	c := New(Options{BlockSize: testBS, MemBytes: 1 << 20, Workers: 2, Logger: logs.logger(),
		Disk: &DiskOptions{Dir: dir, MaxBytes: diskMax}}, l)
	if c.disk == nil {
		t.Fatalf("disk tier did not open:\n%s", logs)
	}
	return c
}

func checkPattern(t *testing.T, c *Cache, id ObjectID, off int64, n int) {
	t.Helper()
	p := make([]byte, n)
	if _, err := c.Object(id).ReadAt(context.Background(), p, off); err != nil {
		t.Fatalf("read %s at %d: %v", id.Name, off, err)
	}
	for i := range p {
		if p[i] != patternByte(off+int64(i)) {
			t.Fatalf("%s: wrong byte at %d", id.Name, off+int64(i))
		}
	}
}

// A 2^62-byte object is read at both ends, opened again, listed in stats
// and prefetched whole: nothing allocates from its size, the disk tier
// declines it with a log line, and goes on caching other objects.
func TestHugeObjectNeitherCrashesNorDisablesDisk(t *testing.T) {
	dir := t.TempDir()
	logs := &logBuf{}
	c := newLoggedDiskCache(t, dir, patternLoader{}, 1<<30, logs)
	defer c.Close()
	huge := ObjectID{Source: "s", Name: "huge.bin", Version: "e:1", Size: 1 << 62}
	for range 2 {
		checkPattern(t, c, huge, 0, 100)
		checkPattern(t, c, huge, huge.Size-100, 100)
		if b, ok := c.Object(huge).Backing(); ok {
			b.Close()
			t.Fatal("a Backing for an object never cached whole")
		}
		if c.Object(huge).CompleteOnDisk() {
			t.Fatal("the huge object claims to be complete on disk")
		}
	}
	if st := c.ObjectStats([]ObjectID{huge}); st[0].CachedBytes == 0 || st[0].CachedBytes > 4*testBS {
		t.Fatalf("stats of the huge object: %d bytes cached", st[0].CachedBytes)
	}
	c.Object(huge).Prefetch(0, huge.Size)
	if !strings.Contains(logs.String(), "not caching this object on disk") {
		t.Fatalf("no log line for the object the disk tier declined:\n%s", logs)
	}

	small := ObjectID{Source: "s", Name: "small.bin", Version: "e:1", Size: 3 * testBS}
	checkPattern(t, c, small, 0, int(small.Size))
	waitFor(t, "the small object's write-backs", func() bool { return c.Object(small).CompleteOnDisk() })
	if strings.Contains(logs.String(), "RAM only") {
		t.Fatalf("one huge object switched disk caching off:\n%s", logs)
	}
}

// writeMeta plants an object whose meta header says hdr, with a meta file
// of metaSize bytes (sparse), as a damaged or hostile cache entry would.
func writeMeta(t *testing.T, dir, name string, hdr metaHeader, metaSize int64) {
	t.Helper()
	obj := filepath.Join(dir, diskVersionDir, name)
	if err := os.MkdirAll(obj, 0o700); err != nil {
		t.Fatal(err)
	}
	js, _ := json.Marshal(hdr)
	header := append([]byte(metaMagic), js...)
	header = append(header, '\n')
	if err := os.WriteFile(filepath.Join(obj, "meta"), header, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(filepath.Join(obj, "meta"), metaSize); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(obj, "data"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
}

// Hand-damaged entries: a header with an absurd size, one with an absurd
// block size, and a large sparse meta file. Opening the cache, listing,
// measuring and collecting it drop the absurd ones with a log line and
// never crash; the sound one stays.
func TestAbsurdCacheEntriesAreDroppedNotFatal(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, diskVersionDir), 0o700); err != nil {
		t.Fatal(err)
	}
	writeMeta(t, dir, "absurd-size", metaHeader{Name: "a", Version: "1", Size: 1 << 62, BlockSize: testBS}, metaHeaderSize)
	writeMeta(t, dir, "absurd-block", metaHeader{Name: "b", Version: "1", Size: 1 << 40, BlockSize: 1}, metaHeaderSize)
	// 2^25 blocks (2 TiB at 64 KiB): within bounds, its meta file 512 MiB
	// of holes that a scan must not read, nor hold in memory.
	sparse := metaHeader{Name: "c", Version: "1", Size: 1 << 41, BlockSize: testBS}
	writeMeta(t, dir, "sparse", sparse, metaHeaderSize+(1<<25)*recordSize)

	logs := &logBuf{}
	for _, step := range []func() error{
		func() error { _, err := ListDisk(dir, logs.logger()); return err },
		func() error { _, err := HeldBytes(dir, logs.logger()); return err },
		func() error { _, err := GC(dir, logs.logger(), 1<<30); return err },
		func() error {
			c := newLoggedDiskCache(t, dir, patternLoader{}, 1<<30, logs)
			c.Close()
			return nil
		},
	} {
		if err := step(); err != nil {
			t.Fatal(err)
		}
	}
	if got := strings.Count(logs.String(), "dropping object with bad metadata"); got != 2 {
		t.Fatalf("%d log lines about dropped entries, want 2 (one per absurd entry):\n%s", got, logs)
	}
	objs, err := ListDisk(dir, nil)
	if err != nil || len(objs) != 1 || objs[0].Name != "c" || objs[0].CachedBytes != 0 {
		t.Fatalf("cache ls after the damage: %+v, %v; want the sparse object alone, empty", objs, err)
	}
}

// A write failure of one object (EFBIG past the file size limit) stops
// disk caching of that object only.
func TestObjectWriteFailureDisablesOnlyThatObject(t *testing.T) {
	const limit = 4 << 20
	var old syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_FSIZE, &old); err != nil {
		t.Skipf("skipping: %v", err)
	}
	dir := t.TempDir()
	logs := &logBuf{}
	c := newLoggedDiskCache(t, dir, patternLoader{}, 1<<30, logs)
	defer c.Close()
	// Go ignores SIGXFSZ, so writes past the limit fail with EFBIG.
	if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &syscall.Rlimit{Cur: limit, Max: old.Max}); err != nil {
		t.Skipf("skipping: cannot limit file sizes: %v", err)
	}
	t.Cleanup(func() { syscall.Setrlimit(syscall.RLIMIT_FSIZE, &old) })
	big := ObjectID{Source: "s", Name: "big.bin", Version: "1", Size: 2 * limit}
	checkPattern(t, c, big, big.Size-testBS, testBS)
	small := ObjectID{Source: "s", Name: "small.bin", Version: "1", Size: 2 * testBS}
	checkPattern(t, c, small, 0, int(small.Size))
	done := func() bool { return c.Object(small).CompleteOnDisk() }
	// Write-backs run in the background, in any order: wait for both the
	// big object's failure and the small object's completion (or the
	// whole tier giving up, which is the failure this test looks for).
	failed := func() bool {
		return strings.Contains(logs.String(), "not caching this object on disk") && strings.Contains(logs.String(), "big.bin")
	}
	waitFor(t, "the big object's write failure", func() bool { return failed() || strings.Contains(logs.String(), "RAM only") })
	waitFor(t, "the small object on disk", func() bool { return done() || strings.Contains(logs.String(), "RAM only") })
	syscall.Setrlimit(syscall.RLIMIT_FSIZE, &old)
	if !done() {
		t.Fatalf("after one object's EFBIG, another object was not cached on disk:\n%s", logs)
	}
	if !failed() {
		t.Fatalf("no log line naming the object that failed:\n%s", logs)
	}
}

// A full directory pauses write-back; it resumes when eviction frees room,
// and, when something else filled the disk, after the backoff.
func TestFullDirPausesWriteBackAndRecovers(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("skipping: mounting a small tmpfs needs root")
	}
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size=1m"); err != nil {
		t.Skipf("skipping: cannot mount a tmpfs here: %v", err)
	}
	t.Cleanup(func() { syscall.Unmount(dir, syscall.MNT_DETACH) })
	logs := &logBuf{}
	// The budget claims more than the tmpfs holds: writes hit ENOSPC.
	c := newLoggedDiskCache(t, dir, patternLoader{}, 1<<30, logs)
	defer c.Close()
	now := time.Unix(1e9, 0)
	c.disk.mu.Lock()
	c.disk.now = func() time.Time { return now }
	c.disk.mu.Unlock()
	fill := func(id ObjectID) (stored int) {
		for i := range id.Size / testBS {
			if _, err := c.Fill(context.Background(), id, i); err == nil {
				stored++
			}
		}
		return stored
	}
	a := ObjectID{Source: "s", Name: "a", Version: "1", Size: 32 * testBS} // 2 MiB: does not fit
	if n := fill(a); n == 0 || n == 32 {
		t.Fatalf("%d of 32 blocks stored in a 1 MiB tmpfs", n)
	}
	if !strings.Contains(logs.String(), "caching in RAM only") {
		t.Fatalf("no log line about the full directory:\n%s", logs)
	}
	b := ObjectID{Source: "s", Name: "b", Version: "1", Size: testBS}
	if fill(b) != 0 {
		t.Fatal("a write went on while paused")
	}
	// Eviction frees room: write-back resumes at once.
	if err := c.DropObject(a); err != nil {
		t.Fatal(err)
	}
	if fill(b) != 1 {
		t.Fatalf("write-back did not resume after eviction freed room:\n%s", logs)
	}
	if !strings.Contains(logs.String(), "write-back resumed") {
		t.Fatalf("no log line about write-back resuming:\n%s", logs)
	}
	// Space taken by something else: a pause, then the retry after the
	// backoff succeeds once the space is back.
	filler := filepath.Join(dir, "filler")
	f, err := os.Create(filler)
	if err != nil {
		t.Fatal(err)
	}
	f.Write(make([]byte, 1<<20)) // fills the tmpfs; ENOSPC is the point
	f.Close()
	d := ObjectID{Source: "s", Name: "d", Version: "1", Size: 2 * testBS}
	if fill(d) != 0 {
		t.Fatal("a write succeeded on a full tmpfs")
	}
	os.Remove(filler)
	if fill(d) != 0 {
		t.Fatal("a write went on before the backoff passed")
	}
	c.disk.mu.Lock()
	now = now.Add(maxWriteBackoff)
	c.disk.mu.Unlock()
	if fill(d) != 2 {
		t.Fatalf("write-back did not resume after the backoff:\n%s", logs)
	}
}

// The cache directory deleted under a running cache (rm -rf), or one
// object dropped by another process (modelfs cache drop): later blocks
// are written to files in the directory, not into deleted ones, with a
// log line.
func TestDeletedCacheDirIsRecreated(t *testing.T) {
	dir := t.TempDir()
	logs := &logBuf{}
	c := newLoggedDiskCache(t, dir, patternLoader{}, 1<<30, logs)
	defer c.Close()
	id := ObjectID{Source: "s", Name: "w.bin", Version: "1", Size: 8 * testBS}
	fill := func(i int64) {
		t.Helper()
		if _, err := c.Fill(context.Background(), id, i); err != nil {
			t.Fatal(err)
		}
	}
	cached := func() int64 {
		t.Helper()
		objs, err := ListDisk(dir, nil)
		if err != nil || len(objs) != 1 {
			t.Fatalf("cache ls: %+v, %v; want one object", objs, err)
		}
		return objs[0].CachedBytes
	}
	fill(0)
	if err := os.RemoveAll(filepath.Join(dir, diskVersionDir)); err != nil {
		t.Fatal(err)
	}
	fill(1)
	if got := cached(); got != testBS {
		t.Fatalf("after the directory was deleted, %d bytes are on disk, want the one block written since", got)
	}
	if !strings.Contains(logs.String(), "deleted or replaced") {
		t.Fatalf("no log line about the deleted directory:\n%s", logs)
	}
	dropped, err := Drop(dir, nil, func(CachedObject) bool { return true })
	if err != nil || len(dropped) != 1 {
		t.Fatalf("cache drop: %v, %v", dropped, err)
	}
	fill(2)
	if got := cached(); got != testBS {
		t.Fatalf("after the object was dropped, %d bytes are on disk, want the one block written since", got)
	}
	if !strings.Contains(logs.String(), "object was removed") {
		t.Fatalf("no log line about the dropped object:\n%s", logs)
	}
}

// Close cancels a background verification: a shutdown must not wait for
// a whole object to be read (the CSI plugin kills after 10 s).
func TestCloseCancelsVerification(t *testing.T) {
	dir := t.TempDir()
	c := newLoggedDiskCache(t, dir, patternLoader{}, 1<<30, &logBuf{})
	started := make(chan struct{})
	var mu sync.Mutex
	calls := 0
	c.disk.verifyHook = func(ctx context.Context, index int64) {
		mu.Lock()
		calls++
		first := calls == 1
		mu.Unlock()
		if first {
			close(started)
			<-ctx.Done() // a slow disk: the first block takes until Close
		}
	}
	id := ObjectID{Source: "s", Name: "w.bin", Version: "1", Size: 16 * testBS}
	for i := range int64(16) {
		if _, err := c.Fill(context.Background(), id, i); err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			// Another process writes over the first block: the object
			// is no longer this process's own work alone, so its
			// completion reads it all back.
			data, _ := objectFiles(t, dir)
			f, err := os.OpenFile(data, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			p := make([]byte, testBS)
			patternLoader{}.LoadBlock(context.Background(), id, 0, p)
			f.WriteAt(p, 0)
			f.Close()
		}
	}
	<-started // the last block's write started the verification
	closed := make(chan struct{})
	go func() {
		c.Close()
		close(closed)
	}()
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("Close is still waiting for the verification after 10 s")
	}
	mu.Lock()
	defer mu.Unlock()
	if calls != 1 {
		t.Fatalf("the verification went on for %d blocks after Close", calls-1)
	}
	if _, err := os.Stat(filepath.Join(dir, diskVersionDir, objectDirID(id, testBS), "verified")); err == nil {
		t.Fatal("a cancelled verification stamped the object as verified")
	}
}
