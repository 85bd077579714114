package publish

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/modelfs/modelfs/fetch"
	"github.com/modelfs/modelfs/fetch/pack"
	"github.com/modelfs/modelfs/internal/units"
)

// Verify reads every file of dest through the pack layer and checks its
// sha256 against the one its pack records and, when srcDir is not empty,
// against the original's. It prints a line per file to cfg.Out and fails
// naming every file that did not match.
func Verify(ctx context.Context, srcDir, dest string, cfg Config) error {
	log := cfg.log()
	if !strings.Contains(dest, "://") {
		abs, err := filepath.Abs(dest)
		if err != nil {
			return err
		}
		dest = "file://" + abs
	}
	loc, err := fetch.ParseLocation(dest)
	if err != nil {
		return err
	}
	inner, err := cfg.open(ctx, loc)
	if err != nil {
		return err
	}
	src, err := pack.NewSource(inner, pack.Options{Logger: log})
	if err != nil {
		return err
	}
	objs, err := src.List(ctx)
	if err != nil {
		return fmt.Errorf("pack --verify: listing %s: %w", dest, err)
	}
	var originals map[string]SrcFile
	if srcDir != "" {
		files, err := Walk(srcDir, log)
		if err != nil {
			return err
		}
		originals = map[string]SrcFile{}
		for _, f := range files {
			originals[f.Key] = f
		}
	}
	out := cfg.out()
	t0 := time.Now()
	var failed []string
	var checked, total int64
	fail := func(key, format string, args ...any) {
		msg := key + ": " + fmt.Sprintf(format, args...)
		failed = append(failed, msg)
		fmt.Fprintf(out, "FAILED %s\n", msg)
	}
	listed := map[string]bool{}
	for _, o := range objs {
		listed[o.Key] = true
		orig, haveOrig := originals[o.Key]
		if srcDir != "" && !haveOrig {
			log.Warn("not in SRC_DIR: checked against its pack only", "file", o.Key)
		}
		if haveOrig && orig.Size != o.Size {
			fail(o.Key, "%d bytes, the original has %d", o.Size, orig.Size)
			continue
		}
		var recorded []byte
		if o.Checksum.Algorithm == "SHA256" && !o.Checksum.Composite {
			recorded, _ = base64.StdEncoding.DecodeString(o.Checksum.Value)
		}
		if recorded == nil && !haveOrig {
			fmt.Fprintf(out, "unchecked %s: no recorded sha256 and no original\n", o.Key)
			continue
		}
		got, err := hashObject(ctx, src, o, min(cfg.Concurrency, 8))
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			fail(o.Key, "%v", err)
			continue
		}
		if recorded != nil && !bytes.Equal(got, recorded) {
			fail(o.Key, "sha256 %x, its pack records %x", got, recorded)
			continue
		}
		if haveOrig {
			want, err := hashFile(orig.Path)
			if err != nil {
				return fmt.Errorf("pack --verify: %w", err)
			}
			if !bytes.Equal(got, want) {
				fail(o.Key, "sha256 %x, the original's is %x", got, want)
				continue
			}
		}
		checked++
		total += o.Size
		fmt.Fprintf(out, "ok %s %x\n", o.Key, got)
	}
	for key := range originals {
		if !listed[key] {
			fail(key, "missing from %s", dest)
		}
	}
	el := time.Since(t0)
	if len(failed) > 0 {
		return fmt.Errorf("pack --verify: %d of %d files failed: %s", len(failed), len(objs), strings.Join(failed, "; "))
	}
	fmt.Fprintf(out, "verified %d files, %s, in %s, %s/s\n", checked, units.FormatSize(total), el.Round(time.Millisecond),
		units.FormatSize(int64(float64(total)/max(el.Seconds(), 1e-3))))
	return nil
}

// hashObject returns the sha256 of an object, read in chunks of which up
// to n are fetched and decoded at once while they are hashed in order.
func hashObject(ctx context.Context, src fetch.Source, o fetch.Object, n int) ([]byte, error) {
	const chunk = 8 << 20 // two frames at the default span
	type result struct {
		b   []byte
		err error
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	order := make(chan chan result, max(n, 1))
	go func() {
		defer close(order)
		for off := int64(0); off < o.Size; off += chunk {
			out := make(chan result, 1)
			select {
			case order <- out:
			case <-ctx.Done():
				return
			}
			go func() {
				b := make([]byte, min(chunk, o.Size-off))
				k, err := src.ReadAt(ctx, o, b, off)
				if err == io.EOF && k == len(b) {
					err = nil
				}
				out <- result{b, err}
			}()
		}
	}()
	h := sha256.New()
	for out := range order {
		r := <-out
		if r.err != nil {
			return nil, r.err
		}
		h.Write(r.b)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return h.Sum(nil), nil
}

func hashFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	return h.Sum(nil), nil
}
