package main

import (
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"

	"github.com/modelfs/modelfs/tests/mountproc"
)

// The FUSE read-path microbenchmark: the real modelfs binary mounting a
// file:// source whose bytes are already in the page cache, so the source
// costs next to nothing and what is measured is the mount's own path —
// FUSE round trips, the block cache, readahead, copies.
//
//	go test -run '^$' -bench FUSERead ./tests/bench

var (
	buildOnce  sync.Once
	builtBin   string
	buildErr   error
	buildTmp   string
	fuseBenchN = 512 << 20 // source file size: remounts when read through
)

func TestMain(m *testing.M) {
	code := m.Run()
	if buildTmp != "" {
		os.RemoveAll(buildTmp)
	}
	os.Exit(code)
}

// modelfsBinary builds cmd/modelfs once per test binary, and only when a
// benchmark asks for it, so that plain `go test` stays fast.
func modelfsBinary(b *testing.B) string {
	b.Helper()
	buildOnce.Do(func() {
		if buildTmp, buildErr = os.MkdirTemp("", "modelfs-bench-"); buildErr != nil {
			return
		}
		builtBin = filepath.Join(buildTmp, "modelfs")
		out, err := exec.Command("go", "build", "-o", builtBin, "github.com/modelfs/modelfs/cmd/modelfs").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("building modelfs: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		b.Fatal(buildErr)
	}
	return builtBin
}

// BenchmarkFUSERead reads 1 MiB per iteration with ReadAt, sequentially,
// each byte for the first time through its mount (cold): when the file is
// used up, the timer stops and a fresh mount is started. It also reports
// the mount process's CPU per GiB.
func BenchmarkFUSERead(b *testing.B) {
	if why := mountproc.FuseUnavailable(); why != "" {
		fmt.Println("BenchmarkFUSERead skipped:", why)
		b.Skip(why)
	}
	bin := modelfsBinary(b)
	src := b.TempDir()
	data := make([]byte, fuseBenchN)
	rand.Read(data)
	if err := os.WriteFile(filepath.Join(src, "weights.bin"), data, 0o644); err != nil {
		b.Fatal(err)
	}
	data = nil
	// Into the page cache: the source then costs a memory copy.
	if _, err := warmDir(src); err != nil {
		b.Fatal(err)
	}
	mnt := filepath.Join(b.TempDir(), "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		b.Fatal(err)
	}

	var (
		mp      *mountProc
		f       *os.File
		off     int64
		cpu     float64
		cpuFrom float64
	)
	open := func() {
		var err error
		if mp, err = startMount(context.Background(), bin, "file://"+src, mnt, nil, os.Environ()); err != nil {
			b.Fatal(err)
		}
		if f, err = os.Open(filepath.Join(mnt, "weights.bin")); err != nil {
			b.Fatal(err)
		}
		off = 0
		if cpuFrom, err = mountproc.CPUSeconds(mp.pid()); err != nil {
			b.Fatal(err)
		}
	}
	closeMount := func() {
		c, err := mountproc.CPUSeconds(mp.pid())
		if err != nil {
			b.Fatal(err)
		}
		cpu += c - cpuFrom
		f.Close()
		if _, err := mp.stop(); err != nil {
			b.Fatal(err)
		}
	}
	defer stopAllMounts() // on a failed b.Fatal

	open()
	buf := make([]byte, 1<<20)
	b.SetBytes(int64(len(buf)))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if off+int64(len(buf)) > int64(fuseBenchN) {
			b.StopTimer()
			closeMount()
			open()
			b.StartTimer()
		}
		if _, err := f.ReadAt(buf, off); err != nil {
			b.Fatal(err)
		}
		off += int64(len(buf))
	}
	b.StopTimer()
	closeMount()
	b.ReportMetric(cpuPerGiB(cpu, int64(b.N)<<20), "mount-cpu-s/GiB")
}
