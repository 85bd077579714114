package main

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"time"

	"github.com/modelfs/modelfs/tests/modelgen"
	"github.com/modelfs/modelfs/tests/mountproc"
)

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "mmapread:", err)
		os.Exit(1)
	}
}

func run(args []string, out io.Writer) error {
	fs := flag.NewFlagSet("mmapread", flag.ContinueOnError)
	fs.SetOutput(io.Discard) // errors are reported by main as one line
	order := fs.String("order", "header", "tensor touch order: header or random")
	quiet := fs.Bool("quiet", false, "print only sha256sum-style lines")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return errors.New("usage: mmapread [-order header|random] [-quiet] DIR")
	}
	if *order != "header" && *order != "random" {
		return fmt.Errorf("-order must be header or random, not %q", *order)
	}
	dir := fs.Arg(0)
	if _, err := os.Stat(dir); err != nil { // Glob would hide this
		return err
	}
	paths, err := filepath.Glob(filepath.Join(dir, "*.safetensors")) // sorted
	if err != nil {
		return err
	}
	if len(paths) == 0 {
		return fmt.Errorf("no *.safetensors files in %s", dir)
	}

	var totalBytes int64
	var totalTensors int
	start := time.Now()
	for _, p := range paths {
		t0 := time.Now()
		sum, size, n, err := readFile(p, *order == "random")
		if err != nil {
			return fmt.Errorf("%s: %w", filepath.Base(p), err)
		}
		totalBytes += size
		totalTensors += n
		if *quiet {
			fmt.Fprintf(out, "%x  %s\n", sum, filepath.Base(p))
		} else {
			fmt.Fprintf(out, "%x  %s  %d tensors  %.1f MiB/s\n", sum, filepath.Base(p), n, mibps(size, time.Since(t0)))
		}
	}
	if !*quiet {
		fmt.Fprintf(out, "total  %d files  %d tensors  %.1f MiB  %.1f MiB/s\n",
			len(paths), totalTensors, float64(totalBytes)/(1<<20), mibps(totalBytes, time.Since(start)))
	}
	return nil
}

func mibps(n int64, d time.Duration) float64 {
	return float64(n) / (1 << 20) / max(d.Seconds(), 1e-9)
}

// afterMap lets a test change the file under a live mapping.
var afterMap = func(*os.File) {}

// sink keeps the page-touching loads from being optimised away.
var sink byte

// readFile maps path and reads it like a loader: header, then tensors page
// by page, then a full hash. It returns the hash, the file size and the
// number of tensors.
func readFile(path string, shuffle bool) (sum [32]byte, size int64, tensors int, err error) {
	size, err = mountproc.ReadMapped(path, func(f *os.File, data []byte) error {
		afterMap(f)
		ts, err := modelgen.ParseSafetensors(bytes.NewReader(data), int64(len(data)))
		if err != nil {
			return err
		}
		if shuffle {
			// Fixed seed: runs are comparable, but the access order has no
			// relation to the file layout, which defeats readahead.
			rand.New(rand.NewPCG(1, 2)).Shuffle(len(ts), func(i, j int) { ts[i], ts[j] = ts[j], ts[i] })
		}
		var acc byte
		for _, t := range ts {
			acc ^= mountproc.TouchPages(data, t.Begin, t.End)
		}
		sink = acc
		sum, tensors = sha256.Sum256(data), len(ts)
		return nil
	})
	return sum, size, tensors, err
}
