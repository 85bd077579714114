package e2e

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/modelfs/modelfs/csi"
)

// TestCSISharedCache: the plugin's shared cache reaches the mount of a
// volume with the node's identity, which reads the model through it
// (its blocks land in the shared store); a volume with secrets of its
// own mounts without it, and reads the model from the origin.
func TestCSISharedCache(t *testing.T) {
	r, stateDir := csiRemote(t)
	shared := newSharedStore(t)
	// The plugin's identity: the origin's keys in its environment, the
	// shared store's in a profile of its shared credentials file.
	for _, kv := range shared.env {
		if k, v, _ := strings.Cut(kv, "="); k == "AWS_SHARED_CREDENTIALS_FILE" {
			t.Setenv(k, v)
		}
	}
	t.Setenv("AWS_ACCESS_KEY_ID", accessKey)
	t.Setenv("AWS_SECRET_ACCESS_KEY", secretKey)
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	location := "s3://" + sharedBucket + "/blocks"
	p := startCSIWith(t, stateDir, func(o *csi.Options) {
		o.SharedCache, o.SharedCacheEndpoint, o.SharedCacheRegion, o.SharedCacheProfile = location, shared.srv.URL(), region, "cache"
	})
	ctx := context.Background()

	pv := filepath.Join(t.TempDir(), "pv")
	detachLater(t, pv)
	if err := p.publish(ctx, "pv", pv, r.volumeContext("llama/"), nil); err != nil {
		t.Fatalf("a PersistentVolume without secrets: %v", err)
	}
	if cmdline := procCmdline(t, recordPID(t, stateDir, pv)); !strings.Contains(cmdline, "--shared-cache "+location) ||
		!strings.Contains(cmdline, "--shared-cache-profile cache") {
		t.Fatalf("mount command line %q lacks the shared cache", cmdline)
	}
	checkModel(t, pv)
	unpublish(t, p, "pv", pv) // unmounting finishes the write-backs
	if n, err := shared.blockCount(ctx); err != nil || n == 0 {
		t.Fatalf("blocks in the shared store after the volume read the model: %d, %v", n, err)
	}

	own := filepath.Join(t.TempDir(), "own")
	detachLater(t, own)
	if err := p.publish(ctx, "own", own, r.volumeContext("llama/"), testSecrets()); err != nil {
		t.Fatalf("a volume with its own keys: %v", err)
	}
	if cmdline := procCmdline(t, recordPID(t, stateDir, own)); strings.Contains(cmdline, "--shared-cache") {
		t.Fatalf("a volume without the node's identity got the shared cache: %q", cmdline)
	}
	checkModel(t, own)
	unpublish(t, p, "own", own)
}

// blockCount is how many blocks the shared store holds.
func (s *sharedStore) blockCount(ctx context.Context) (int, error) {
	client := s3.New(s3.Options{Region: region, BaseEndpoint: aws.String(s.srv.URL()), UsePathStyle: true,
		Credentials: credentials.NewStaticCredentialsProvider(sharedKey, sharedSecret, "")})
	list, err := client.ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: aws.String(sharedBucket), Prefix: aws.String("blocks/blocks/")})
	if err != nil {
		return 0, err
	}
	return len(list.Contents), nil
}

// TestCSISharedCacheWithItsOwnKeys: with the store's keys in a file of
// their own, a tenant's volume (secrets of its own, no node identity)
// reads through the shared cache too, and writes its blocks there with
// those keys alone: the plugin's environment holds no key the store
// accepts, and the volume's own keys are the origin's.
func TestCSISharedCacheWithItsOwnKeys(t *testing.T) {
	r, stateDir := csiRemote(t)
	shared := newSharedStore(t)
	var keys string
	for _, kv := range shared.env {
		if k, v, _ := strings.Cut(kv, "="); k == "AWS_SHARED_CREDENTIALS_FILE" {
			keys = v
		}
	}
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(t.TempDir(), "none"))
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	location := "s3://" + sharedBucket + "/blocks"
	p := startCSIWith(t, stateDir, func(o *csi.Options) {
		o.SharedCache, o.SharedCacheEndpoint, o.SharedCacheRegion = location, shared.srv.URL(), region
		o.SharedCacheProfile, o.SharedCacheCredentialsFile = "cache", keys
	})
	ctx := context.Background()
	tenant := filepath.Join(t.TempDir(), "tenant")
	detachLater(t, tenant)
	if err := p.publish(ctx, "tenant", tenant, r.volumeContext("llama/"), testSecrets()); err != nil {
		t.Fatalf("a volume with its own keys: %v", err)
	}
	if cmdline := procCmdline(t, recordPID(t, stateDir, tenant)); !strings.Contains(cmdline, "--shared-cache "+location) ||
		!strings.Contains(cmdline, "--shared-cache-credentials-file "+keys) {
		t.Fatalf("mount command line %q lacks the shared cache and its keys", cmdline)
	}
	checkModel(t, tenant)
	unpublish(t, p, "tenant", tenant) // unmounting finishes the write-backs
	if n, err := shared.blockCount(ctx); err != nil || n == 0 {
		t.Fatalf("blocks in the shared store after a tenant's volume read the model: %d, %v", n, err)
	}
}
