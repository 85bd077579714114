package e2e

import (
	"encoding/json"
	"errors"
	"os"
	"strings"
	"syscall"
	"testing"
)

// gpuwarm's readiness follows the verification of the model's files in
// the modelfs mount serving them: a damaged file read once makes it not
// ready, naming the file; --require-verified also refuses files pending or
// without a checksum, and a directory that is not a modelfs mount.
func TestGPUWarmReadinessFollowsVerification(t *testing.T) {
	r := newRemote(t)
	putVerifyObjects(t, r)
	type report struct {
		Ready  bool `json:"ready"`
		Verify *struct {
			Verifiable bool     `json:"verifiable"`
			Verified   int      `json:"verified"`
			Failed     []string `json:"failed"`
			Unverified []string `json:"unverified"`
			Pending    []string `json:"pending"`
		} `json:"verify"`
	}
	gpuwarm := func(dir string, extra ...string) (int, report, string) {
		t.Helper()
		code, out, stderr := runCLIOutput(t, append([]string{"gpuwarm", "--once", "--model", dir}, extra...)...)
		var rep report
		if code == 0 {
			if err := json.Unmarshal([]byte(out), &rep); err != nil || rep.Verify == nil {
				t.Fatalf("gpuwarm report %q: %v", out, err)
			}
		}
		return code, rep, stderr
	}

	m := startMount(t, "s3://"+bucket+"/intact", append(r.mountArgs(), "--block-size", "1MiB", "--prefetch", "off")...)
	// Nothing read yet: ready, every file pending; not with
	// --require-verified.
	code, rep, stderr := gpuwarm(m.dir)
	if code != 0 || !rep.Ready || !rep.Verify.Verifiable || len(rep.Verify.Pending) != len(verifyKinds)+1 {
		t.Fatalf("gpuwarm before any read: exit %d, %+v\n%s", code, rep.Verify, stderr)
	}
	if code, _, stderr := gpuwarm(m.dir, "--require-verified"); code == 0 || !strings.Contains(stderr, "pending") || !strings.Contains(stderr, "sha256.bin") {
		t.Fatalf("gpuwarm --require-verified before any read: exit %d\n%s", code, stderr)
	}
	names := []string{"bare.bin"}
	for _, k := range verifyKinds {
		names = append(names, k.name+".bin")
	}
	for _, name := range names {
		if _, err := os.ReadFile(m.path(name)); err != nil {
			t.Fatal(err)
		}
	}
	// All read: verified but bare.bin, which has no checksum.
	code, rep, stderr = gpuwarm(m.dir)
	if code != 0 || rep.Verify.Verified != len(verifyKinds) || len(rep.Verify.Unverified) != 1 || len(rep.Verify.Pending) != 0 {
		t.Fatalf("gpuwarm after reading every file: exit %d, %+v\n%s", code, rep.Verify, stderr)
	}
	if code, _, stderr := gpuwarm(m.dir, "--require-verified"); code == 0 || !strings.Contains(stderr, "unverified (no usable checksum): bare.bin") {
		t.Fatalf("gpuwarm --require-verified with bare.bin unverified: exit %d\n%s", code, stderr)
	}
	m.stop(t)

	// A damaged file, once read, makes the model not ready.
	m = startMount(t, "s3://"+bucket+"/damaged", append(r.mountArgs(), "--block-size", "1MiB", "--prefetch", "off")...)
	if _, err := os.ReadFile(m.path("sha1.bin")); !errors.Is(err, syscall.EIO) {
		t.Fatalf("damaged sha1.bin: %v, want EIO", err)
	}
	code, _, stderr = gpuwarm(m.dir)
	if code == 0 || !strings.Contains(stderr, "do not match their store's checksum") || !strings.Contains(stderr, "sha1.bin") ||
		strings.Contains(stderr, "sha256.bin") {
		t.Fatalf("gpuwarm with a damaged file read: exit %d\n%s", code, stderr)
	}
	m.stop(t)

	// A plain directory: not verifiable, which only --require-verified
	// refuses.
	plain := t.TempDir()
	code, rep, stderr = gpuwarm(plain)
	if code != 0 || rep.Verify.Verifiable || !strings.Contains(stderr, "not verifiable") {
		t.Fatalf("gpuwarm on a plain directory: exit %d, %+v\n%s", code, rep.Verify, stderr)
	}
	if code, _, stderr := gpuwarm(plain, "--require-verified"); code == 0 || !strings.Contains(stderr, "not in a modelfs mount") {
		t.Fatalf("gpuwarm --require-verified on a plain directory: exit %d\n%s", code, stderr)
	}
}
