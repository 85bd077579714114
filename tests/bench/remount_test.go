package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/modelfs/modelfs/tests/mountproc"
)

func TestParseSummary(t *testing.T) {
	log := `time=2026-11-27T16:28:27.383Z level=INFO msg=unmounting mountpoint=/tmp/mnt
time=2026-11-27T16:28:27.435Z level=INFO msg=unmounted fuse_reads=467 fuse_read_bytes=489626584 read_errors=0 remote_loads=59 disk_hits=3 path=/x
`
	m := parseSummary(log)
	for k, want := range map[string]int64{"fuse_reads": 467, "fuse_read_bytes": 489626584, "read_errors": 0, "remote_loads": 59, "disk_hits": 3} {
		if got, ok := m[k]; !ok || got != want {
			t.Errorf("%s = %d (present %v), want %d", k, got, ok, want)
		}
	}
	if _, ok := m["path"]; ok {
		t.Error("a non-integer field was kept")
	}
	if m := parseSummary("level=INFO msg=unmounting\n"); m != nil {
		t.Errorf("no summary line: got %v, want nil", m)
	}
	// "unmounted externally" is not the summary.
	if m := parseSummary(`level=INFO msg="unmounted externally" mountpoint=/m` + "\n"); m != nil {
		t.Errorf("got %v from the wrong line", m)
	}
}

// TestSummaryThroughNoise: the mount's summary line survives the log
// tail that drops go-fuse's splice noise.
func TestSummaryThroughNoise(t *testing.T) {
	log := &mountproc.Log{Max: 4096, Omit: spliceNoise}
	for range 1000 {
		fmt.Fprintln(log, "2026/11/27 16:28:25 trySplice: splice: want 1052688 bytes, max pipe size 1048576")
	}
	fmt.Fprintln(log, "level=INFO msg=unmounted fuse_reads=5 fuse_read_bytes=10")
	if m := parseSummary(log.String()); m["fuse_reads"] != 5 || m["fuse_read_bytes"] != 10 {
		t.Errorf("summary through the filter: %v\n%s", m, log)
	}
	if got := log.String(); strings.Count(got, "trySplice") != 1 {
		t.Errorf("noise kept:\n%.300s", got)
	}
}

func TestParseFlagsRemount(t *testing.T) {
	c, _, err := parseFlags(nil)
	if err != nil || !c.remount {
		t.Fatalf("defaults: remount %v, %v", c.remount, err)
	}
	for _, mf := range []string{"--cache-dir /x", "--cache-dir=/x", "-cache-dir /x"} {
		if _, _, err := parseFlags([]string{"--mount-flags", mf}); err == nil {
			t.Errorf("--mount-flags %q accepted with --remount", mf)
		}
		if _, _, err := parseFlags([]string{"--remount=false", "--mount-flags", mf}); err != nil {
			t.Errorf("--mount-flags %q refused without --remount: %v", mf, err)
		}
	}
	if _, _, err := parseFlags([]string{"--mount-flags", "--cache-size 1GiB --mem-cache 256MiB"}); err != nil {
		t.Errorf("--cache-size refused: %v", err)
	}
}

func TestResidentBytes(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "v1", "obj"), 0o755); err != nil {
		t.Fatal(err)
	}
	data := make([]byte, 1<<20+123)
	if err := os.WriteFile(filepath.Join(dir, "v1", "obj", "data"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "empty"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	// A sparse file, like a cache's data file with one block: only what
	// it holds counts.
	sp, err := os.Create(filepath.Join(dir, "v1", "obj", "sparse"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sp.WriteAt(make([]byte, 64<<10), 32<<20); err != nil {
		t.Fatal(err)
	}
	sp.Close()
	res, total, err := residentBytes(dir)
	if err != nil {
		t.Fatal(err)
	}
	// Allocation is in file-system blocks: allow one per file.
	if want := int64(len(data) + 64<<10); total < want || total > want+2*64<<10 {
		t.Errorf("total %d, want the bytes held, %d", total, want)
	}
	// Just written, so in the page cache (whatever the file system).
	if res < int64(len(data)+64<<10) {
		t.Errorf("resident %d of %d just after writing", res, total)
	}
}

// --link s3 fills in the link's figures and HTTPS, and what the command
// line says wins over the profile.
func TestParseFlagsLink(t *testing.T) {
	c, _, err := parseFlags(nil)
	if err != nil || c.link != "loopback" || c.tls || c.rateGbit != 0 || c.connMbit != 0 || c.rttMs != 0 {
		t.Fatalf("defaults: %+v, %v", c, err)
	}
	if c.peers == nil || len(c.peers) != len(allPeerTools) {
		t.Errorf("default peers %v, want %v", c.peers, allPeerTools)
	}
	c, _, err = parseFlags([]string{"--link", "s3"})
	if err != nil || !c.tls || c.rateGbit != s3LinkGbit || c.connMbit != s3LinkConnMbit || c.rttMs != s3LinkRTTMs {
		t.Fatalf("--link s3: %+v, %v", c, err)
	}
	if got := linkLabel(c); got != "s3 profile: 5 Gbit/s, 800 Mbit/s per connection, 20 ms RTT, HTTPS" {
		t.Errorf("label %q", got)
	}
	c, _, err = parseFlags([]string{"--link", "s3", "--tls=false", "--rtt-ms", "0", "--peers", ""})
	if err != nil || c.tls || c.rttMs != 0 || c.rateGbit != s3LinkGbit || len(c.peers) != 0 {
		t.Fatalf("--link s3 with overrides: %+v, %v", c, err)
	}
	for _, bad := range [][]string{{"--link", "wan"}, {"--peers", "juicefs"}, {"--conn-rate-mbit", "-1"}} {
		if _, _, err := parseFlags(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
