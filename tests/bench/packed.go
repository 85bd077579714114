package main

import (
	"context"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// The pack-* scenarios are their plain namesakes (pack-seq is seq,
// pack-mmap-header is mmap-header) through a mount of the model as
// `modelfs pack` stores it, under packedPrefix on the same server: the
// same reads, the same baselines, so that the cold rows of the two compare
// directly.

const (
	packedPrefix   = "bench-packed/"
	packedScenario = "pack-"
)

// packedModel is the model as `modelfs pack` wrote it.
type packedModel struct {
	Dir   string      `json:"dir"`
	Files []modelFile `json:"files"` // pack objects and the files copied as they are
	// Seconds is how long `modelfs pack` took, from the generated files
	// to a local directory.
	Seconds float64 `json:"pack_seconds"`
}

func (m *packedModel) total() int64 {
	var n int64
	for _, f := range m.Files {
		n += f.Size
	}
	return n
}

// wantsPacked reports whether any scenario reads the packed model.
func wantsPacked(scenarios []string) bool {
	return slices.ContainsFunc(scenarios, func(s string) bool { return strings.HasPrefix(s, packedScenario) })
}

// packAndUpload packs the model into dir with the modelfs under test and
// uploads the result under packedPrefix. It packs on every bench run
// rather than keeping packs next to the model, so that they are always
// those of the binary measured.
func packAndUpload(ctx context.Context, modelfs string, m *benchModel, dir string, r *remoteProc) (*packedModel, error) {
	if err := os.RemoveAll(dir); err != nil {
		return nil, fmt.Errorf("clearing %s: %w", dir, err)
	}
	t0 := time.Now()
	cmd := exec.CommandContext(ctx, modelfs, "pack", m.Dir, dir)
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("modelfs pack: %v\n%s", err, out)
	}
	p := &packedModel{Dir: dir, Seconds: time.Since(t0).Seconds()}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	known := map[string]bool{}
	for _, f := range m.Files {
		known[f.Name] = true
	}
	for _, e := range entries {
		// The model directory also holds the generator's stamp, which
		// is not part of the model.
		if !known[strings.TrimSuffix(e.Name(), ".mfpack")] {
			continue
		}
		path := filepath.Join(dir, e.Name())
		st, err := os.Stat(path)
		if err != nil {
			return nil, err
		}
		p.Files = append(p.Files, modelFile{Name: e.Name(), Size: st.Size()})
		if err := r.putFile(ctx, bucket, packedPrefix+e.Name(), path); err != nil {
			return nil, fmt.Errorf("uploading %s: %w", e.Name(), err)
		}
		if err := dropCache(path); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// packedRatios prints, for each pack-* scenario with a plain namesake in
// rows, the median cold time of the packed mount over the plain one's.
func packedRatios(rows []row) []string {
	cold := map[string]float64{}
	for _, r := range rows {
		if r.Phase == "cold" {
			cold[r.Name] = r.Seconds.Median
		}
	}
	var out []string
	for _, r := range rows {
		plain, ok := strings.CutPrefix(r.Name, packedScenario)
		if r.Phase != "cold" || !ok {
			continue
		}
		if base, ok := cold[plain]; ok && base > 0 && !math.IsNaN(r.Seconds.Median) {
			out = append(out, fmt.Sprintf("%s cold time ÷ %s cold time (medians): %.2f", r.Name, plain, r.Seconds.Median/base))
		}
	}
	return out
}
