package publish

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"

	"github.com/modelfs/modelfs/fetch"
	"github.com/modelfs/modelfs/fetch/pack"
	"github.com/modelfs/modelfs/tests/azurite"
	"github.com/modelfs/modelfs/tests/gcsemu"
)

// remoteConfig is a pack Config for a store reached at endpoint.
func remoteConfig(endpoint string, out io.Writer, log *slog.Logger) Config {
	return Config{
		S3:          fetch.S3ClientOptions{Endpoint: endpoint, Logger: log},
		Retry:       fetch.RetryOptions{MaxAttempts: 2, BaseDelay: time.Millisecond, AttemptTimeout: 10 * time.Second},
		Concurrency: 4,
		FrameSize:   pack.MinFrameSize,
		CopyBelow:   64 << 10,
		Logger:      log,
		Out:         out,
	}
}

// readBack reads every file of src through the pack layer, as a mount
// does, and compares it with files.
func readBack(t *testing.T, inner fetch.Source, files map[string][]byte) {
	t.Helper()
	ctx := context.Background()
	ps, err := pack.NewSource(inner, pack.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	objs, err := ps.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(objs) != len(files) {
		t.Fatalf("listed %v, want %d files", objs, len(files))
	}
	for _, o := range objs {
		b := make([]byte, o.Size)
		if _, err := ps.ReadAt(ctx, o, b, 0); err != nil && err != io.EOF {
			t.Fatalf("reading %s: %v", o.Key, err)
		}
		if !bytes.Equal(b, files[o.Key]) {
			t.Errorf("%s reads back different", o.Key)
		}
	}
}

// checkVerify runs Verify on a fresh pack, then after damaging the
// model's first frame with damage, and wants the damaged file named.
func checkVerify(t *testing.T, src, dest string, cfg Config, out *bytes.Buffer, damage func([]byte)) {
	t.Helper()
	ctx := context.Background()
	out.Reset()
	if err := Verify(ctx, src, dest, cfg); err != nil {
		t.Fatalf("Verify: %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "ok model.safetensors ") || !strings.Contains(out.String(), "verified 2 files") {
		t.Errorf("Verify output:\n%s", out.String())
	}
	damage(nil)
	out.Reset()
	err := Verify(ctx, "", dest, cfg)
	if err == nil || !strings.Contains(err.Error(), "1 of 2 files failed: model.safetensors: ") {
		t.Errorf("Verify of a damaged pack: %v", err)
	}
	if !strings.Contains(out.String(), "FAILED model.safetensors: ") {
		t.Errorf("Verify output names no failure:\n%s", out.String())
	}
}

// flip returns b with the byte at off changed.
func flip(b []byte, off int) []byte {
	c := bytes.Clone(b)
	c[off] ^= 0x40
	return c
}

// Pack writes to an Azure container what a mount of the prefix shows as
// the original files, and Verify catches a damaged frame.
func TestPackAndVerifyAzure(t *testing.T) {
	srv := azurite.Start(t)
	srv.CreateContainer(t, "models")
	t.Setenv("AZURE_STORAGE_KEY", azurite.Key)
	t.Setenv("AZURE_STORAGE_SAS_TOKEN", "")
	ctx := context.Background()
	src, files := writeModel(t)
	var logs, out bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	cfg := remoteConfig(srv.Endpoint(), &out, log)
	dest := "az://" + azurite.Account + "/models/m"

	if err := Pack(ctx, src, dest, cfg); err != nil {
		t.Fatalf("Pack: %v\n%s", err, logs.String())
	}
	if !strings.Contains(out.String(), "packed 2 files into az://"+azurite.Account+"/models/m/: ") {
		t.Errorf("output:\n%s", out.String())
	}
	inner, err := fetch.NewAzure(fetch.AzureOptions{Account: azurite.Account, Container: "models", Prefix: "m", Endpoint: srv.Endpoint()})
	if err != nil {
		t.Fatal(err)
	}
	readBack(t, inner, files)
	// Each blob keeps the MD5 of its content, as a mount verifies it.
	objs, err := inner.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range objs {
		if o.Checksum.Algorithm != "MD5" {
			t.Errorf("%s: stored checksum %+v, want its Content-MD5", o.Key, o.Checksum)
		}
	}

	packed := downloadAzure(t, srv, "models", "m/model.safetensors"+pack.Suffix)
	checkVerify(t, src, dest, cfg, &out, func([]byte) {
		srv.Put(t, "models", "m/model.safetensors"+pack.Suffix, flip(packed, 100))
	})
}

func downloadAzure(t *testing.T, srv *azurite.Server, containerName, name string) []byte {
	t.Helper()
	resp, err := srv.Client(t).DownloadStream(context.Background(), containerName, name, nil)
	if err != nil {
		t.Fatalf("downloading %s: %v", name, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func azureBlobExists(t *testing.T, srv *azurite.Server, containerName, name string) bool {
	t.Helper()
	_, err := srv.Client(t).ServiceClient().NewContainerClient(containerName).NewBlobClient(name).GetProperties(context.Background(), nil)
	var re *azcore.ResponseError
	if errors.As(err, &re) && re.ErrorCode == "BlobNotFound" {
		return false
	}
	if err != nil {
		t.Fatal(err)
	}
	return true
}

// A blob bigger than a block is staged block by block, the blocks sent
// while later ones are written, and committed in order; one that fits
// is one Put Blob.
func TestAzureWriterUploads(t *testing.T) {
	srv := azurite.Start(t)
	srv.CreateContainer(t, "models")
	t.Setenv("AZURE_STORAGE_KEY", azurite.Key)
	client, err := fetch.NewAzureClient(fetch.AzureOptions{Account: azurite.Account, Container: "models", Endpoint: srv.Endpoint()})
	if err != nil {
		t.Fatal(err)
	}
	d := NewAzureDest(client, azurite.Account, "models", "p", nil, 2)
	for _, tc := range []struct {
		name   string
		size   int
		blocks int
	}{
		{"small", 1000, 0},
		{"empty", 0, 0},
		{"three-blocks", 2*(1<<20) + 12345, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want := pattern(tc.size)
			wr, err := d.Create(context.Background(), tc.name, int64(tc.size))
			if err != nil {
				t.Fatal(err)
			}
			w := wr.(*azureWriter)
			w.p.size = 1 << 20
			for b := want; len(b) > 0; {
				n := min(len(b), 777777)
				if _, err := w.Write(b[:n]); err != nil {
					t.Fatal(err)
				}
				b = b[n:]
			}
			if err := w.Commit(); err != nil {
				t.Fatal(err)
			}
			if len(w.ids) != tc.blocks {
				t.Errorf("%d blocks staged, want %d", len(w.ids), tc.blocks)
			}
			if got := downloadAzure(t, srv, "models", "p/"+tc.name); !bytes.Equal(got, want) {
				t.Errorf("blob holds %d bytes, not the %d written", len(got), len(want))
			}
		})
	}
}

// A block that fails fails Commit, naming the block, and nothing is
// committed: no blob appears at the key.
func TestAzureWriterFailedBlockCommitsNothing(t *testing.T) {
	srv := azurite.Start(t)
	srv.CreateContainer(t, "models")
	proxy := azurite.NewProxy(t, srv)
	proxy.SetChoose(func(r *http.Request) azurite.Fault {
		if r.URL.Query().Get("comp") == "block" && strings.HasSuffix(decodeBlockID(r.URL.Query().Get("blockid")), "\x00\x00\x00\x01") {
			return azurite.FaultDenied
		}
		return azurite.FaultNone
	})
	t.Setenv("AZURE_STORAGE_KEY", azurite.Key)
	client, err := fetch.NewAzureClient(fetch.AzureOptions{Account: azurite.Account, Container: "models", Endpoint: proxy.Endpoint(),
		Retry: fetch.RetryOptions{MaxAttempts: 2, BaseDelay: time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	d := NewAzureDest(client, azurite.Account, "models", "p", nil, 2)
	wr, err := d.Create(context.Background(), "failed", 3<<20)
	if err != nil {
		t.Fatal(err)
	}
	w := wr.(*azureWriter)
	w.p.size = 1 << 20
	if _, err := w.Write(pattern(3 << 20)); err != nil && !strings.Contains(err.Error(), "block 2") {
		t.Fatal(err)
	}
	err = w.Commit()
	if err == nil || !strings.Contains(err.Error(), "staging block 2 of failed: HTTP 403") {
		t.Fatalf("Commit: %v, want the failed block named", err)
	}
	if proxy.Faults() == 0 {
		t.Fatal("no fault was injected")
	}
	if azureBlobExists(t, srv, "models", "p/failed") {
		t.Error("a blob is at the key after a failed upload")
	}
}

// decodeBlockID is a block ID's bytes, or "" if it is not base64.
func decodeBlockID(id string) string {
	b, err := base64.StdEncoding.DecodeString(id)
	if err != nil {
		return ""
	}
	return string(b)
}

// startGCS starts the Cloud Storage emulator with a bucket and points
// Google's emulator variable at its proxy, as a user of an emulator
// would: requests go there unauthenticated.
func startGCS(t *testing.T) *gcsemu.Emulator {
	t.Helper()
	emu := gcsemu.Start(t, gcsemu.Options{})
	emu.CreateBucket(t, testBucket)
	t.Setenv(fetch.GCSEmulatorEnv, emu.URL)
	return emu
}

func getGCS(t *testing.T, emu *gcsemu.Emulator, name string) ([]byte, bool) {
	t.Helper()
	resp, err := http.Get(emu.Direct + "/storage/v1/b/" + testBucket + "/o/" + strings.ReplaceAll(name, "/", "%2F") + "?alt=media")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound {
		return nil, false
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("getting %s: %s %v", name, resp.Status, err)
	}
	return b, true
}

// Pack writes to a Cloud Storage prefix what a mount of it shows as the
// original files, and Verify catches a damaged frame.
func TestPackAndVerifyGCS(t *testing.T) {
	emu := startGCS(t)
	ctx := context.Background()
	src, files := writeModel(t)
	var logs, out bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	cfg := remoteConfig("", &out, log)
	dest := "gs://" + testBucket + "/m"

	if err := Pack(ctx, src, dest, cfg); err != nil {
		t.Fatalf("Pack: %v\n%s", err, logs.String())
	}
	if !strings.Contains(out.String(), "packed 2 files into gs://"+testBucket+"/m/ ") {
		t.Errorf("output:\n%s", out.String())
	}
	inner, err := fetch.NewGCS(ctx, fetch.GCSOptions{Bucket: testBucket, Prefix: "m"})
	if err != nil {
		t.Fatal(err)
	}
	readBack(t, inner, files)

	packed, _ := getGCS(t, emu, "m/model.safetensors"+pack.Suffix)
	checkVerify(t, src, dest, cfg, &out, func([]byte) {
		emu.Put(t, testBucket, "m/model.safetensors"+pack.Suffix, flip(packed, 100))
	})
}

// An object bigger than a chunk goes up as a resumable upload, chunk by
// chunk; one that fits in one is a single media upload.
func TestGCSWriterUploads(t *testing.T) {
	emu := startGCS(t)
	ctx := context.Background()
	d, err := openGCSDest(ctx, fetch.Location{Scheme: "gs", Bucket: testBucket, Prefix: "p"}, remoteConfig("", io.Discard, nil))
	if err != nil {
		t.Fatal(err)
	}
	d.(*GCSDest).chunk = 2 * fetch.GCSChunkAlign
	for _, tc := range []struct {
		name   string
		size   int
		chunks int
	}{
		{"small", 1000, 0},
		{"empty", 0, 0},
		{"whole-chunks", 4 * fetch.GCSChunkAlign, 2}, // the last PUT carries no bytes
		{"three-chunks", 5*fetch.GCSChunkAlign + 12345, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := emu.UploadChunks()
			want := pattern(tc.size)
			w, err := d.Create(ctx, tc.name, int64(tc.size))
			if err != nil {
				t.Fatal(err)
			}
			for b := want; len(b) > 0; {
				n := min(len(b), 77777)
				if _, err := w.Write(b[:n]); err != nil {
					t.Fatal(err)
				}
				b = b[n:]
			}
			if err := w.Commit(); err != nil {
				t.Fatal(err)
			}
			chunks := emu.UploadChunks() - before
			if tc.chunks == 0 && chunks != 0 || tc.chunks > 0 && chunks != tc.chunks && chunks != tc.chunks+1 {
				t.Errorf("%d chunk PUTs, want %d", chunks, tc.chunks)
			}
			got, ok := getGCS(t, emu, "p/"+tc.name)
			if !ok || !bytes.Equal(got, want) {
				t.Errorf("object holds %d bytes (found %v), not the %d written", len(got), ok, len(want))
			}
		})
	}
}

// A chunk the store refuses fails Commit; the session is cancelled and
// nothing is stored at the name.
func TestGCSWriterFailedChunkStoresNothing(t *testing.T) {
	emu := startGCS(t)
	ctx := context.Background()
	d, err := openGCSDest(ctx, fetch.Location{Scheme: "gs", Bucket: testBucket, Prefix: "p"}, remoteConfig("", io.Discard, nil))
	if err != nil {
		t.Fatal(err)
	}
	d.(*GCSDest).chunk = fetch.GCSChunkAlign
	emu.FailUploads("", gcsemu.Fault403) // the second chunk
	w, err := d.Create(ctx, "failed", 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(pattern(5 * fetch.GCSChunkAlign)); err != nil && !strings.Contains(err.Error(), "403") {
		t.Fatal(err)
	}
	err = w.Commit()
	if err == nil || !strings.Contains(err.Error(), "uploading failed: ") || !strings.Contains(err.Error(), "403") {
		t.Fatalf("Commit: %v, want the refused chunk's error", err)
	}
	if n := emu.UploadChunks(); n < 2 {
		t.Fatalf("%d chunks reached the store: the fault on the second was not hit", n)
	}
	if _, ok := getGCS(t, emu, "p/failed"); ok {
		t.Error("an object is at the name after a failed upload")
	}
}

// The Azure writers' client retries a block the store was too busy for,
// within the attempts the budget allows; with one attempt, it does not.
func TestAzureWriterRetriesWithinBudget(t *testing.T) {
	srv := azurite.Start(t)
	srv.CreateContainer(t, "models")
	proxy := azurite.NewProxy(t, srv)
	t.Setenv("AZURE_STORAGE_KEY", azurite.Key)
	for _, tc := range []struct {
		attempts, busy int
		ok             bool
	}{
		{attempts: 3, busy: 2, ok: true},
		{attempts: 1, busy: 1, ok: false},
	} {
		t.Run(fmt.Sprintf("attempts=%d", tc.attempts), func(t *testing.T) {
			var mu sync.Mutex
			left := tc.busy
			proxy.SetChoose(func(r *http.Request) azurite.Fault {
				mu.Lock()
				defer mu.Unlock()
				if r.URL.Query().Get("comp") == "block" && left > 0 {
					left--
					return azurite.FaultBusy
				}
				return azurite.FaultNone
			})
			before := proxy.Faults()
			client, err := fetch.NewAzureClient(fetch.AzureOptions{Account: azurite.Account, Container: "models", Endpoint: proxy.Endpoint(),
				Retry: fetch.RetryOptions{MaxAttempts: tc.attempts, BaseDelay: time.Millisecond, MaxDelay: time.Millisecond}})
			if err != nil {
				t.Fatal(err)
			}
			d := NewAzureDest(client, azurite.Account, "models", "r", nil, 1)
			name := fmt.Sprintf("busy%d", tc.attempts)
			wr, err := d.Create(context.Background(), name, 2<<20)
			if err != nil {
				t.Fatal(err)
			}
			w := wr.(*azureWriter)
			w.p.size = 1 << 20
			want := pattern(2 << 20)
			// A failed block may surface in Write, once the next one is
			// due, or in Commit.
			if _, err = w.Write(want); err == nil {
				err = w.Commit()
			} else {
				w.Abort()
			}
			if got := proxy.Faults() - before; got != tc.busy {
				t.Errorf("%d busy replies, want %d", got, tc.busy)
			}
			if tc.ok {
				if err != nil {
					t.Fatalf("Commit after %d busy replies with %d attempts: %v", tc.busy, tc.attempts, err)
				}
				if got := downloadAzure(t, srv, "models", "r/"+name); !bytes.Equal(got, want) {
					t.Error("the blob differs from what was written")
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), "HTTP 503") {
				t.Fatalf("Commit with one attempt and a busy store: %v, want the 503", err)
			}
			if azureBlobExists(t, srv, "models", "r/"+name) {
				t.Error("a blob is at the key after a failed upload")
			}
		})
	}
}
