package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// bigFiles returns the model's files above the mount's default
// --small-file (1 MiB): the ones the plan reads headers of.
func bigFiles(t *testing.T) (names []string, small int64) {
	t.Helper()
	for _, f := range model.Files {
		st, err := os.Stat(filepath.Join(modelDir, f))
		if err != nil {
			t.Fatal(err)
		}
		if st.Size() > 1<<20 {
			names = append(names, f)
		} else {
			small += st.Size()
		}
	}
	return names, small
}

// Reading one shard of a sharded checkpoint whole fetches that shard and
// nothing of the others, although the plan interleaves them layer by layer.
func TestPrefetchOneFileReadFetchesThatFile(t *testing.T) {
	r := newRemote(t)
	r.uploadModel(t, "")
	m := startMount(t, "s3://"+bucket, append(r.mountArgs(), "--block-size", "1MiB")...)
	waitForCondition(t, "the prefetch plan", func() bool { return strings.Contains(m.Log(), "prefetch plan") })
	r.srv.ResetStats()
	name := biggest(t)
	got, err := os.ReadFile(m.path(name))
	if err != nil {
		t.Fatal(err)
	}
	m.stop(t) // what prefetch had under way is counted too
	if sent := r.srv.Stats().BytesServed; sent*10 > int64(len(got))*11 {
		t.Errorf("reading %s (%d bytes) made the source send %d bytes (%.2f×), want at most 1.1×",
			name, len(got), sent, float64(sent)/float64(len(got)))
	}
}

// The plan reads the big files' headers in small ranges, not whole cache
// blocks: until a reader asks, a mount costs the source the headers and
// the small files, so a first read never shares the link with blocks of
// files nobody reads.
func TestPrefetchPlanReadsHeadersNotBlocks(t *testing.T) {
	r := newRemote(t)
	r.uploadModel(t, "")
	m := startMount(t, "s3://"+bucket, append(r.mountArgs(), "--block-size", "4MiB")...)
	waitForCondition(t, "the prefetch plan", func() bool { return strings.Contains(m.Log(), "prefetch plan") })
	big, small := bigFiles(t)
	const chunk = 256 << 10 // cmd/modelfs headerChunk
	if sent, limit := r.srv.Stats().BytesServed, small+int64(len(big))*chunk; sent > limit {
		t.Errorf("planning %d big files sent %d bytes, want at most %d (a %d-byte chunk each and the small files)",
			len(big), sent, limit, chunk)
	}
}

// A file read again when the RAM tier (smaller than the file, no disk
// tier) has dropped it but the page cache still holds most of it: only
// what the page cache lost reaches the mount, and the source sends only
// that. Readahead around those reads must not fetch again the blocks the
// reader was served the first time.
func TestPrefetchSecondReadCostsOnlyWhatThePageCacheLost(t *testing.T) {
	r := newRemote(t)
	r.uploadModel(t, "")
	m := startMount(t, "s3://"+bucket, append(r.mountArgs(), "--block-size", "1MiB", "--mem-cache", "8MiB")...)
	name := biggest(t)
	f, err := os.Open(m.path(name))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	pass := func() {
		t.Helper()
		buf := make([]byte, 1<<20)
		for off := int64(0); ; off += int64(len(buf)) {
			n, err := f.ReadAt(buf, off)
			if n < len(buf) || err != nil {
				return
			}
		}
	}
	pass()
	// The page cache loses 4 MiB near the start; the rest it keeps.
	var lost int64
	for _, off := range []int64{1 << 20} {
		if err := unix.Fadvise(int(f.Fd()), off, 4<<20, unix.FADV_DONTNEED); err != nil {
			t.Fatal(err)
		}
		lost += 4 << 20
	}
	r.srv.ResetStats()
	pass()
	f.Close()
	m.stop(t)
	if sent := r.srv.Stats().BytesServed; sent*100 > lost*115 {
		t.Errorf("reading %s again after the page cache lost %d bytes made the source send %d bytes, want at most 1.15× what was lost",
			name, lost, sent)
	}
}

// Replies to reads are written from the cache's blocks with writev; go-fuse
// is never asked to splice them (it could not: see fs.Mount).
func TestReadRepliesAreNeverSpliced(t *testing.T) {
	r := newRemote(t)
	r.uploadModel(t, "")
	m := startMount(t, "s3://"+bucket, r.mountArgs()...)
	name := biggest(t)
	if _, err := os.ReadFile(m.path(name)); err != nil {
		t.Fatal(err)
	}
	if _, err := os.ReadFile(m.path(".modelfs-stats")); err != nil {
		t.Fatal(err)
	}
	m.stop(t)
	if logs := m.Log(); strings.Contains(logs, "splice") {
		t.Errorf("the mount tried to splice a reply:\n%s", logs)
	}
}
