package e2e

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/modelfs/modelfs/fetch/pack"
)

// packToRemote runs `modelfs pack` of the model to s3://models/packed and
// returns the store's keys under it, with their sizes.
func packToRemote(t *testing.T, r *remote) (string, map[string]int64) {
	t.Helper()
	if err := r.srv.CreateBucket(bucket); err != nil {
		t.Fatal(err)
	}
	dest := "s3://" + bucket + "/packed"
	if code, stderr := runCLI(t, testEnv(), append(append([]string{"pack"}, r.mountArgs()...), modelDir, dest)...); code != 0 {
		t.Fatalf("modelfs pack: exit %d: %s", code, stderr)
	}
	keys := map[string]int64{}
	out, err := r.client.ListObjectsV2(context.Background(), &s3.ListObjectsV2Input{Bucket: aws.String(bucket), Prefix: aws.String("packed/")})
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range out.Contents {
		keys[strings.TrimPrefix(aws.ToString(o.Key), "packed/")] = aws.ToInt64(o.Size)
	}
	return dest, keys
}

func TestPackMountServesTheOriginals(t *testing.T) {
	r := newRemote(t)
	dest, keys := packToRemote(t, r)
	// The shards are stored packed, and smaller; the small files as they
	// are.
	for _, name := range model.Files {
		size := int64(len(sourceBytes(t, name)))
		if strings.HasSuffix(name, ".safetensors") {
			packed, ok := keys[name+pack.Suffix]
			if !ok || keys[name] != 0 {
				t.Fatalf("%s: store holds %v, want only its pack", name, keys)
			}
			if packed > size*3/4 {
				t.Errorf("%s: pack of %d bytes for %d, want at most 3/4 for bf16 weights", name, packed, size)
			}
		} else if size < 64<<10 && keys[name] != size {
			t.Errorf("%s (%d bytes): stored as %d bytes, want it copied", name, size, keys[name])
		}
	}

	m := startMount(t, dest, r.mountArgs()...)
	// The prefetch plan is made from the headers, read through the packs.
	waitForCondition(t, "the prefetch plan", func() bool { return strings.Contains(m.Log(), "prefetch plan") })
	if ranges := regexp.MustCompile(`prefetch plan.*ranges=(\d+)`).FindStringSubmatch(m.Log()); ranges == nil || ranges[1] == "0" {
		t.Errorf("no prefetch plan from the packed headers:\n%s", m.Log())
	}
	names := dirNames(t, m.dir)
	if !slices.Equal(names, model.Files) {
		t.Fatalf("the mount shows %v, want %v", names, model.Files)
	}
	for _, name := range model.Files {
		want := sourceBytes(t, name)
		st, err := os.Stat(m.path(name))
		if err != nil {
			t.Fatal(err)
		}
		if st.Size() != int64(len(want)) {
			t.Errorf("%s: size %d, want %d", name, st.Size(), len(want))
		}
		if got := sha256File(t, m.path(name)); got != hexSum(want) {
			t.Errorf("%s: sha256 through the mount %s, want %s", name, got, hexSum(want))
		}
	}
	m.stop(t)

	// mmap faults run in a child process (see TestMmapWholeFileMatchesSource).
	m = startMount(t, dest, r.mountArgs()...)
	out, err := exec.Command(mmapBin, "-quiet", "-order", "random", m.dir).Output()
	if err != nil {
		t.Fatalf("mmapread: %v", err)
	}
	checked := 0
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		sum, name, _ := strings.Cut(line, "  ")
		if want := hexSum(sourceBytes(t, name)); sum != want {
			t.Errorf("%s: sha256 through mmap %s, want %s", name, sum, want)
		}
		checked++
	}
	if checked != 3 {
		t.Fatalf("mmapread checked %d shards, want 3:\n%s", checked, out)
	}
}

func TestPackDamagedFrame(t *testing.T) {
	r := newRemote(t)
	dest, _ := packToRemote(t, r)
	verify := func(args ...string) (int, string) {
		return runCLI(t, testEnv(), append(append([]string{"pack", "--verify"}, r.mountArgs()...), args...)...)
	}
	if code, stderr := verify(modelDir, dest); code != 0 {
		t.Fatalf("pack --verify of a fresh pack: exit %d: %s", code, stderr)
	}

	// Flip one byte in the middle frame of the biggest shard's pack.
	shard := biggest(t)
	key := "packed/" + shard + pack.Suffix
	obj, err := r.client.GetObject(context.Background(), &s3.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String(key)})
	if err != nil {
		t.Fatal(err)
	}
	data, err := io.ReadAll(obj.Body)
	obj.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	ix, err := pack.ReadIndex(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	if len(ix.Frames) < 4 {
		t.Fatalf("%s has %d frames; the test needs a damaged one with intact ones far from it", shard, len(ix.Frames))
	}
	bad := len(ix.Frames) / 2
	f := ix.Frames[bad]
	data[f.Off+f.Len/2] ^= 0x40
	if _, err := r.srv.PutObject(bucket, key, data); err != nil {
		t.Fatal(err)
	}

	for _, args := range [][]string{{modelDir, dest}, {dest}} {
		code, stderr := verify(args...)
		if code == 0 || !strings.Contains(stderr, shard) || !strings.Contains(stderr, "damaged pack frame") {
			t.Errorf("pack --verify %v of a damaged pack: exit %d: %s", args, code, stderr)
		}
	}

	// Blocks of one frame each: the damaged frame fails its reads alone.
	m := startMount(t, dest, append(r.mountArgs(), "--block-size", "4MiB")...)
	file, err := os.Open(m.path(shard))
	if err != nil {
		t.Fatal(err)
	}
	want := sourceBytes(t, shard)
	fs, n := ix.FrameRange(bad)
	buf := make([]byte, 4096)
	if _, err := file.ReadAt(buf, fs+n/2); !errors.Is(err, syscall.EIO) {
		t.Errorf("reading the damaged frame: %v, want EIO", err)
	}
	// Frames far from it (kernel readahead must not reach the bad one).
	for _, i := range []int{0, len(ix.Frames) - 1} {
		fs, n := ix.FrameRange(i)
		off := fs + n/2
		k, err := file.ReadAt(buf, off)
		if err != nil && err != io.EOF {
			t.Errorf("reading intact frame %d at %d: %v", i, off, err)
			continue
		}
		if !bytes.Equal(buf[:k], want[off:off+int64(k)]) {
			t.Errorf("intact frame %d: bytes at %d differ from the source", i, off)
		}
	}
	if _, err := io.Copy(io.Discard, file); err == nil {
		t.Error("reading the whole damaged file succeeded")
	}
	file.Close()
	m.stop(t)
	if logs := m.Log(); !strings.Contains(logs, "damaged pack frame") || !strings.Contains(logs, shard) {
		t.Errorf("the mount's log does not name the damage:\n%s", logs)
	}
}

// TestPackLocalDirAndWarm packs to a directory and warms a cache from it:
// warm checks each file against the sha256 its pack records.
func TestPackLocalDirAndWarm(t *testing.T) {
	dest := filepath.Join(t.TempDir(), "packed")
	if code, stderr := runCLI(t, testEnv(), "pack", "--frame-size", "1MiB", modelDir, dest); code != 0 {
		t.Fatalf("modelfs pack: exit %d: %s", code, stderr)
	}
	if code, stderr := runCLI(t, testEnv(), "pack", "--verify", dest); code != 0 {
		t.Fatalf("pack --verify: exit %d: %s", code, stderr)
	}
	warm := func() (int, string) {
		return runCLI(t, testEnv(), "warm", "--cache-dir", t.TempDir(), "--block-size", "1MiB", "file://"+dest)
	}
	if code, stderr := warm(); code != 0 {
		t.Fatalf("warm from the packs: exit %d: %s", code, stderr)
	}

	// A pack whose frames are intact but whose recorded sha256 is not
	// the original's: warm must catch it, as pack --verify does.
	shard := biggest(t)
	path := filepath.Join(dest, shard+pack.Suffix)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	ix, err := pack.ReadIndex(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	frames := data[:len(data)-len(ix.AppendTail(nil))]
	ix.SHA256[0] ^= 1
	if err := os.WriteFile(path, ix.AppendTail(bytes.Clone(frames)), 0o644); err != nil {
		t.Fatal(err)
	}
	code, stderr := warm()
	if code == 0 || !strings.Contains(stderr, "checksum mismatch") || !strings.Contains(stderr, shard) {
		t.Errorf("warm with a wrong recorded sha256: exit %d: %s", code, stderr)
	}
	code, stderr = runCLI(t, testEnv(), "pack", "--verify", dest)
	if code == 0 || !strings.Contains(stderr, shard) {
		t.Errorf("pack --verify with a wrong recorded sha256: exit %d: %s", code, stderr)
	}
	if n := strings.Count(stderr, "failed"); n != 1 {
		t.Errorf("pack --verify: %s mentions %s failures, want 1", stderr, strconv.Itoa(n))
	}
}

// TestPackMultipartUpload packs a file whose pack is several upload parts
// (16 MiB each): incompressible bytes, stored as raw frames.
func TestPackMultipartUpload(t *testing.T) {
	r := newRemote(t)
	if err := r.srv.CreateBucket(bucket); err != nil {
		t.Fatal(err)
	}
	src := t.TempDir()
	big := make([]byte, 36<<20)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := 0; i+8 <= len(big); i += 8 {
		binary.LittleEndian.PutUint64(big[i:], rng.Uint64())
	}
	if err := os.WriteFile(filepath.Join(src, "weights.bin"), big, 0o644); err != nil {
		t.Fatal(err)
	}
	dest := "s3://" + bucket + "/multi/"
	if code, stderr := runCLI(t, testEnv(), append(append([]string{"pack"}, r.mountArgs()...), src, dest)...); code != 0 {
		t.Fatalf("modelfs pack: exit %d: %s", code, stderr)
	}
	head, err := r.client.HeadObject(context.Background(), &s3.HeadObjectInput{Bucket: aws.String(bucket), Key: aws.String("multi/weights.bin" + pack.Suffix)})
	if err != nil {
		t.Fatal(err)
	}
	// A multipart upload's ETag ends in -<parts>.
	if etag := aws.ToString(head.ETag); !strings.HasSuffix(strings.Trim(etag, `"`), "-3") {
		t.Errorf("pack uploaded with ETag %s, want 3 parts", etag)
	}
	if size := aws.ToInt64(head.ContentLength); size <= int64(len(big)) || size > int64(len(big))+1<<20 {
		t.Errorf("pack of %d random bytes is %d bytes", len(big), size)
	}
	if code, stderr := runCLI(t, testEnv(), append(append([]string{"pack", "--verify"}, r.mountArgs()...), src, dest)...); code != 0 {
		t.Fatalf("pack --verify: exit %d: %s", code, stderr)
	}
	m := startMount(t, dest, r.mountArgs()...)
	if got := sha256File(t, m.path("weights.bin")); got != hexSum(big) {
		t.Errorf("weights.bin through the mount: sha256 %s, want %s", got, hexSum(big))
	}
}
