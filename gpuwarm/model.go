package gpuwarm

import (
	"bufio"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/modelfs/modelfs/prefetch"
)

// modelFiles lists the regular files under dir, with '/'-separated paths
// relative to it, for prefetch.Plan. Symbolic links to files are followed
// (Hugging Face cache snapshots are links to blobs); links to directories
// are not. Hidden files and directories (.cache, .git, .gitattributes, a
// ready file) are not part of the model.
func modelFiles(dir string) ([]prefetch.File, error) {
	st, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("model directory: %w", err)
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("model directory %s: not a directory", dir)
	}
	var files []prefetch.File
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p != dir && strings.HasPrefix(d.Name(), ".") {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if d.IsDir() {
			return nil
		}
		info, err := os.Stat(p) // follows links
		if err != nil || !info.Mode().IsRegular() {
			return nil // a dangling link or a special file: not part of the model
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		files = append(files, prefetch.File{
			Path: filepath.ToSlash(rel),
			Size: info.Size(),
			Open: func() (io.ReaderAt, error) { return os.Open(p) },
		})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("listing %s: %w", dir, err)
	}
	return files, nil
}

// tensorBytes sums the plan's tensor ranges.
func tensorBytes(plan []prefetch.Range) int64 {
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
func profilePlan(path string, files []prefetch.File) (plan []prefetch.Range, dropped int, err error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, 0, fmt.Errorf("profile: %w", err)
	}
	defer f.Close()
	entries, err := prefetch.ReadProfile(bufio.NewReader(f))
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
		plan = append(plan, prefetch.Range{Path: e.Path, Off: e.Off, Len: min(e.Len, n-e.Off)})
	}
	return plan, dropped, nil
}
