package e2e

import (
	"strconv"
	"strings"
	"testing"

	"github.com/modelfs/modelfs/fetch"
	"github.com/modelfs/modelfs/fetch/pack"
	"github.com/modelfs/modelfs/tests/azurite"
	"github.com/modelfs/modelfs/tests/gcsemu"
)

// `modelfs pack` to an Azure container writes what a mount of it shows as
// the model's files, byte for byte, and `pack --verify` passes on it.
func TestPackToAzureMountsTheOriginals(t *testing.T) {
	needFuse(t)
	srv := azurite.Start(t)
	srv.CreateContainer(t, "packs")
	t.Setenv("AZURE_STORAGE_KEY", azurite.Key)
	t.Setenv("AZURE_STORAGE_SAS_TOKEN", "")
	dest := "az://" + azurite.Account + "/packs/llama"
	args := []string{"--endpoint", srv.Endpoint()}
	packMountVerify(t, dest, args)
	// The shards are stored as packs, not as they are.
	for _, name := range filterSafetensors(model.Files) {
		if _, err := srv.Client(t).ServiceClient().NewContainerClient("packs").NewBlobClient("llama/"+name+pack.Suffix).GetProperties(t.Context(), nil); err != nil {
			t.Errorf("%s: no pack in the container: %v", name, err)
		}
	}
}

// `modelfs pack` to a Cloud Storage bucket (the emulator, reached as
// Google's tools reach one) writes what a mount of it shows as the
// model's files, and `pack --verify` passes on it. (The test model's
// packs each fit one 16 MiB chunk, so they go up as media uploads; the
// resumable path is TestGCSWriterUploads's, in package publish.)
func TestPackToGCSMountsTheOriginals(t *testing.T) {
	needFuse(t)
	emu := gcsemu.Start(t, gcsemu.Options{})
	emu.CreateBucket(t, bucket)
	t.Setenv(fetch.GCSEmulatorEnv, emu.URL)
	packMountVerify(t, "gs://"+bucket+"/llama", nil)
}

// packMountVerify packs the model to dest, mounts dest and compares
// every file with the source, then runs pack --verify.
func packMountVerify(t *testing.T, dest string, args []string) {
	t.Helper()
	code, out, stderr := runCLIEnv(t, testEnv(), append(append([]string{"pack"}, args...), modelDir, dest)...)
	if code != 0 {
		t.Fatalf("modelfs pack: exit %d: %s", code, stderr)
	}
	if !strings.Contains(out, "packed "+strconv.Itoa(len(model.Files))+" files into ") {
		t.Errorf("pack output:\n%s", out)
	}
	m := startMount(t, dest, args...)
	if got := dirNames(t, m.dir); strings.Join(got, " ") != strings.Join(model.Files, " ") {
		t.Fatalf("the mount shows %v, want %v", got, model.Files)
	}
	readModel(t, m)
	m.stop(t)
	code, out, stderr = runCLIEnv(t, testEnv(), append(append([]string{"pack", "--verify"}, args...), modelDir, dest)...)
	if code != 0 || !strings.Contains(out, "verified "+strconv.Itoa(len(model.Files))+" files") {
		t.Fatalf("pack --verify: exit %d: %s\n%s", code, stderr, out)
	}
}
