package e2e

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/cespare/xxhash/v2"

	"github.com/modelfs/modelfs/tests/s3server"
)

// The shared store has credentials of its own, given to the mounts by
// a profile, so the origin's never reach it.
const (
	sharedKey    = "AKIAMODELFSSHARED001"
	sharedSecret = "modelfs-shared-secret-do-not-leak-0001"
	sharedBucket = "cluster-cache"
)

// sharedStore is a second S3 server on loopback: the cluster's cache.
type sharedStore struct {
	srv *s3server.Server
	env []string // the mounts' environment, with the store's profile
}

func newSharedStore(t *testing.T) *sharedStore {
	t.Helper()
	srv := s3server.StartTest(t, s3server.Options{AccessKey: sharedKey, SecretKey: sharedSecret, Region: region}, sharedBucket)
	creds := filepath.Join(t.TempDir(), "credentials")
	body := fmt.Sprintf("[cache]\naws_access_key_id = %s\naws_secret_access_key = %s\n", sharedKey, sharedSecret)
	if err := os.WriteFile(creds, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return &sharedStore{srv: srv, env: append(testEnv(), "AWS_SHARED_CREDENTIALS_FILE="+creds)}
}

func (s *sharedStore) args(url string) []string {
	return []string{"--shared-cache", "s3://" + sharedBucket + "/blocks", "--shared-cache-endpoint", url,
		"--shared-cache-region", region, "--shared-cache-profile", "cache"}
}

func modelSize(t *testing.T) int64 {
	t.Helper()
	var total int64
	for _, name := range model.Files {
		st, err := os.Stat(filepath.Join(modelDir, name))
		if err != nil {
			t.Fatal(err)
		}
		total += st.Size()
	}
	return total
}

// Three nodes, each with its own local cache, load the same model one
// after another: the first fetches it from the origin and fills the
// shared store, the others read it from there. The origin sends the
// model about once, not three times.
func TestSharedCacheNodesOneAfterAnother(t *testing.T) {
	needFuse(t)
	origin := newRemote(t)
	origin.uploadModel(t, "llama/")
	shared := newSharedStore(t)
	size := modelSize(t)
	const nodes = 3
	var perNode [nodes]int64
	for i := range nodes {
		before := origin.srv.Stats().BytesServed
		args := append(origin.mountArgs(), "--cache-dir", t.TempDir(), "--block-size", "1MiB")
		m := startMountEnv(t, shared.env, "s3://"+bucket+"/llama", append(args, shared.args(shared.srv.URL())...)...)
		readModel(t, m)
		if code, out, errOut := runCLIOutput(t, "stats", m.dir); code != 0 || !strings.Contains(out, "shared s3://"+sharedBucket+"/blocks: hits") {
			t.Fatalf("modelfs stats: exit %d, no shared cache line:\n%s%s", code, out, errOut)
		}
		m.stop(t) // waits for the shared store's write-backs
		perNode[i] = origin.srv.Stats().BytesServed - before
		logs := m.Log()
		if i == 0 {
			if w := summaryCount(t, logs, "shared_writes"); w == 0 || summaryCount(t, logs, "shared_write_drops") != 0 {
				t.Fatalf("first node wrote %d blocks to the shared store, dropped %d", w, summaryCount(t, logs, "shared_write_drops"))
			}
		} else if h := summaryCount(t, logs, "shared_hits"); h == 0 || summaryCount(t, logs, "shared_claims_won") != 0 {
			t.Fatalf("node %d: %d shared hits, %d claims won; want every block from the shared store", i+1, h, summaryCount(t, logs, "shared_claims_won"))
		}
		assertNoSecret(t, "mount log", logs)
		if strings.Contains(logs, sharedSecret) {
			t.Fatalf("the shared store's secret appears in the mount log:\n%s", logs)
		}
	}
	var total int64
	for _, n := range perNode {
		total += n
	}
	t.Logf("model %d bytes; origin sent %v per node, %.2fx the model in all", size, perNode, float64(total)/float64(size))
	if float64(total) > 1.2*float64(size) {
		t.Fatalf("origin sent %d bytes for %d nodes, want at most 1.2x the model's %d", total, nodes, size)
	}
	if shared.srv.Stats().BytesServed < 2*size*9/10 {
		t.Fatalf("shared store sent %d bytes, want about the model twice (%d)", shared.srv.Stats().BytesServed, 2*size)
	}
}

// Three nodes load the same model at once: the claims send most blocks
// to the origin once; however the race goes, never once per node.
func TestSharedCacheNodesAtOnce(t *testing.T) {
	needFuse(t)
	origin := newRemote(t)
	origin.uploadModel(t, "llama/")
	shared := newSharedStore(t)
	size := modelSize(t)
	const nodes = 3
	var ms [nodes]*mount
	for i := range nodes {
		// No prefetch: every node starts loading when the readers do.
		args := append(origin.mountArgs(), "--cache-dir", t.TempDir(), "--block-size", "1MiB", "--prefetch", "off")
		ms[i] = startMountEnv(t, shared.env, "s3://"+bucket+"/llama", append(args, shared.args(shared.srv.URL())...)...)
	}
	before := origin.srv.Stats().BytesServed
	var wg sync.WaitGroup
	for _, m := range ms {
		wg.Go(func() { readModel(t, m) })
	}
	wg.Wait()
	total := origin.srv.Stats().BytesServed - before
	var won, lost int
	for _, m := range ms {
		m.stop(t)
		won += summaryCount(t, m.Log(), "shared_claims_won")
		lost += summaryCount(t, m.Log(), "shared_claims_lost")
	}
	t.Logf("model %d bytes; origin sent %.2fx the model to %d nodes at once; claims won %d, lost %d", size, float64(total)/float64(size), nodes, won, lost)
	if total >= nodes*size {
		t.Fatalf("origin sent %d bytes, want less than once per node (%d)", total, nodes*size)
	}
}

// A shared store that cannot be reached costs nothing but its timeout:
// the node reads the origin, byte for byte.
func TestSharedCacheDownReadsOrigin(t *testing.T) {
	needFuse(t)
	origin := newRemote(t)
	origin.uploadModel(t, "llama/")
	shared := newSharedStore(t)
	url := shared.srv.URL()
	shared.srv.Close()
	args := append(origin.mountArgs(), "--block-size", "1MiB")
	m := startMountEnv(t, shared.env, "s3://"+bucket+"/llama", append(args, shared.args(url)...)...)
	readModel(t, m)
	m.stop(t)
	if n := summaryCount(t, m.Log(), "shared_errors"); n == 0 {
		t.Fatalf("no shared-store errors counted with the store down")
	}
	if n := summaryCount(t, m.Log(), "shared_hits"); n != 0 {
		t.Fatalf("%d shared hits from a store that is down", n)
	}
}

// warm fills the shared store as it fills the node's disk cache, and a
// second node's warm then takes every block from it: the origin sends
// the model once, and both warms verify every file against the origin's
// checksums.
func TestSharedCacheWarm(t *testing.T) {
	origin := newRemote(t)
	origin.uploadModel(t, "llama/")
	shared := newSharedStore(t)
	size := modelSize(t)
	for i, want := range []string{"fills the shared store", "reads it"} {
		before := origin.srv.Stats().BytesServed
		args := append([]string{"warm"}, origin.mountArgs()...)
		args = append(append(args, "--cache-dir", t.TempDir(), "--block-size", "1MiB"), shared.args(shared.srv.URL())...)
		code, stdout, stderr := runCLIEnv(t, shared.env, append(args, "s3://"+bucket+"/llama")...)
		if code != 0 {
			t.Fatalf("warm %d (%s): exit %d\n%s%s", i+1, want, code, stdout, stderr)
		}
		got := origin.srv.Stats().BytesServed - before
		switch {
		case i == 0 && (got < size || float64(got) > 1.05*float64(size)):
			t.Fatalf("first warm: origin sent %d bytes for a model of %d", got, size)
		case i == 1 && got != 0:
			t.Fatalf("second warm: origin sent %d bytes, want every block from the shared store", got)
		}
	}
}

// Whoever can write the shared store can forge a block that passes the
// tier's own check: such blocks are trusted no more than the origin's,
// so the whole-object check against the origin's checksum still fails
// them, and no forged byte is served as the model's.
func TestSharedCacheForgedBlocksFailVerification(t *testing.T) {
	needFuse(t)
	origin := newRemote(t)
	origin.uploadModel(t, "llama/")
	shared := newSharedStore(t)
	args := append(origin.mountArgs(), "--block-size", "1MiB", "--prefetch", "off")
	args = append(args, shared.args(shared.srv.URL())...)
	first := startMountEnv(t, shared.env, "s3://"+bucket+"/llama", append(args, "--cache-dir", t.TempDir())...)
	readModel(t, first)
	first.stop(t)

	// Rewrite every shared block with one payload byte changed and the
	// header's checksum recomputed, as a forger would.
	ctx := context.Background()
	client := s3.New(s3.Options{Region: region, BaseEndpoint: aws.String(shared.srv.URL()), UsePathStyle: true,
		Credentials: credentials.NewStaticCredentialsProvider(sharedKey, sharedSecret, "")})
	list, err := client.ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: aws.String(sharedBucket), Prefix: aws.String("blocks/blocks/")})
	if err != nil || len(list.Contents) == 0 {
		t.Fatalf("listing the shared blocks: %d, %v", len(list.Contents), err)
	}
	for _, o := range list.Contents {
		out, err := client.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(sharedBucket), Key: o.Key})
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(out.Body)
		out.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		// The layout of docs/shared-cache.md: 32-byte header, identity, payload.
		idLen := int(binary.LittleEndian.Uint32(b[8:]))
		b[len(b)-1] ^= 0xff
		d := xxhash.New()
		d.Write(b[32 : 32+idLen])
		d.Write(b[32+idLen:])
		binary.LittleEndian.PutUint64(b[24:], d.Sum64())
		if _, err := client.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(sharedBucket), Key: o.Key, Body: bytes.NewReader(b)}); err != nil {
			t.Fatal(err)
		}
	}

	second := startMountEnv(t, shared.env, "s3://"+bucket+"/llama", append(args, "--cache-dir", t.TempDir())...)
	failed := 0
	for _, name := range model.Files {
		got, err := os.ReadFile(second.path(name))
		switch {
		case err == nil && !bytes.Equal(got, sourceBytes(t, name)):
			t.Fatalf("%s: forged bytes served as the model's", name)
		case err != nil && !errors.Is(err, syscall.EIO):
			t.Fatalf("%s: %v, want EIO", name, err)
		case err != nil:
			failed++
		}
	}
	second.stop(t)
	logs := second.Log()
	if hits := summaryCount(t, logs, "shared_hits"); hits == 0 || failed == 0 || summaryCount(t, logs, "verify_failures") != failed {
		t.Fatalf("%d forged shared hits, %d files failed their reads, verify_failures %d; want every file read from forged blocks to fail its check",
			hits, failed, summaryCount(t, logs, "verify_failures"))
	}
	// The failing node deleted the forged blocks of every file that
	// failed (its stop waits for the deletes): a later node reads the
	// model clean, from the origin, and writes good blocks back.
	if purges := summaryCount(t, logs, "shared_purges"); purges != failed || summaryCount(t, logs, "shared_purged_blocks") == 0 {
		t.Fatalf("%d objects purged (%d blocks), want the %d that failed", purges, summaryCount(t, logs, "shared_purged_blocks"), failed)
	}
	third := startMountEnv(t, shared.env, "s3://"+bucket+"/llama", append(args, "--cache-dir", t.TempDir())...)
	readModel(t, third)
	third.stop(t)
	if logs := third.Log(); summaryCount(t, logs, "verify_failures") != 0 || summaryCount(t, logs, "shared_writes") == 0 {
		t.Fatalf("after the purge: verify_failures %d, shared_writes %d; want a clean read that refills the tier",
			summaryCount(t, logs, "verify_failures"), summaryCount(t, logs, "shared_writes"))
	}
}
