package gpuwarm

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/modelfs/modelfs/modelformat/loadorder"
	"github.com/modelfs/modelfs/modelformat/modeldir"
)

// modelFiles lists the regular files under dir, with '/'-separated paths
// relative to it, for loadorder.Plan, by modelformat's one model-directory
// walk: links are followed inside dir and, for a Hugging Face cache
// snapshot, into its repository's blobs/; other links are refused. Hidden
// files and directories (.cache, .git, .gitattributes, a ready file) are
// not part of the model.
func modelFiles(dir string) ([]loadorder.File, error) {
	d, err := modeldir.Open(dir)
	if err != nil {
		return nil, err
	}
	defer d.Close()
	found, _, err := d.Walk(context.Background())
	if err != nil {
		return nil, fmt.Errorf("listing %s: %w", dir, err)
	}
	var files []loadorder.File
	for _, f := range found {
		if hidden(f.Path) {
			continue
		}
		p := d.FilePath(f) // the link resolved, to open after d is closed
		files = append(files, loadorder.File{
			Path: f.Path,
			Size: f.Size,
			Open: func() (io.ReaderAt, error) { return os.Open(p) },
		})
	}
	return files, nil
}

// hidden reports whether a '/'-separated path has an element that starts
// with a dot.
func hidden(p string) bool {
	return strings.HasPrefix(p, ".") || strings.Contains(p, "/.")
}

// tensorBytes sums the plan's tensor ranges.
func tensorBytes(plan []loadorder.Range) int64 {
	var n int64
	for _, r := range plan {
		if r.Tensor != "" {
			n += r.Len
		}
	}
	return n
}

// profilePlan reads a recorded load profile as a plan over files: entries
// for files that are not there are dropped, and ranges are cut at the end
// of the file. Versions are not compared (a directory has none to compare
// with): a profile of an older revision still names mostly the right
// bytes, and only costs pinning the wrong ones otherwise.
func profilePlan(path string, files []loadorder.File) (plan []loadorder.Range, dropped int, err error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, 0, fmt.Errorf("profile: %w", err)
	}
	defer f.Close()
	entries, err := loadorder.ReadProfile(bufio.NewReader(f))
	if err != nil {
		return nil, 0, fmt.Errorf("profile %s: %w", path, err)
	}
	size := make(map[string]int64, len(files))
	for _, f := range files {
		size[f.Path] = f.Size
	}
	for _, e := range entries {
		n, ok := size[e.Path]
		if !ok || e.Off >= n {
			dropped++
			continue
		}
		plan = append(plan, loadorder.Range{Path: e.Path, Off: e.Off, Len: min(e.Len, n-e.Off)})
	}
	return plan, dropped, nil
}
