package gpuwarm

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// statsFileName is the file at the root of a modelfs mount that holds its
// stats as JSON (fs.StatsName; named here so that gpuwarm does not link
// the filesystem).
const statsFileName = ".modelfs-stats"

// maxStatsBytes bounds the stats file read.
const maxStatsBytes = 64 << 20

// Verification states of a file in a modelfs mount's stats.
const (
	verifyFailed     = "failed"
	verifyUnverified = "unverified"
	verifyPending    = "pending"
	verifyVerified   = "verified"
)

// VerifyReport is where the model's files stand against their store's
// checksums, as the modelfs mount serving them says.
type VerifyReport struct {
	// Verifiable is false when the model directory is not in a modelfs
	// mount: nothing vouches for its bytes.
	Verifiable bool   `json:"verifiable"`
	Note       string `json:"note,omitempty"`
	Verified   int    `json:"verified"`
	// Failed files read with EIO: their bytes do not match the store's.
	Failed []string `json:"failed,omitempty"`
	// Unverified files have no usable checksum in their store; pending
	// ones were not read whole yet.
	Unverified []string `json:"unverified,omitempty"`
	Pending    []string `json:"pending,omitempty"`
}

// mountStats is what gpuwarm reads of a modelfs mount's stats file.
type mountStats struct {
	Format string `json:"format"`
	Files  []struct {
		Path   string `json:"path"`
		Verify string `json:"verify"`
	} `json:"files"`
}

// checkVerified reads the verification state of the model's files from
// the stats of the modelfs mount holding model (its root or a directory
// in it). Any failed file is an error naming the files; with
// requireVerified so are unverified and pending ones, and a model
// directory that is not in a modelfs mount.
func checkVerified(model string, requireVerified bool) (*VerifyReport, error) {
	root, st, err := findMountStats(model)
	if err != nil {
		return nil, err
	}
	if st == nil {
		rep := &VerifyReport{Note: "not verifiable: " + model + " is not in a modelfs mount"}
		if requireVerified {
			return rep, fmt.Errorf("--require-verified: %s is not in a modelfs mount, so its files cannot be verified", model)
		}
		return rep, nil
	}
	rel, err := filepath.Rel(root, model)
	if err != nil {
		return nil, fmt.Errorf("model directory %s in mount %s: %w", model, root, err)
	}
	rep := &VerifyReport{Verifiable: true}
	for _, f := range st.Files {
		if rel != "." && f.Path != rel && !strings.HasPrefix(f.Path, rel+"/") {
			continue // another model of the same mount
		}
		switch f.Verify {
		case verifyVerified:
			rep.Verified++
		case verifyFailed:
			rep.Failed = append(rep.Failed, f.Path)
		case verifyUnverified:
			rep.Unverified = append(rep.Unverified, f.Path)
		default:
			rep.Pending = append(rep.Pending, f.Path)
		}
	}
	if len(rep.Failed) > 0 {
		return rep, fmt.Errorf("%d model file(s) do not match their store's checksum (reads of them fail): %s",
			len(rep.Failed), strings.Join(rep.Failed, ", "))
	}
	if requireVerified && len(rep.Unverified)+len(rep.Pending) > 0 {
		var parts []string
		if len(rep.Unverified) > 0 {
			parts = append(parts, "unverified (no usable checksum): "+strings.Join(rep.Unverified, ", "))
		}
		if len(rep.Pending) > 0 {
			parts = append(parts, "pending (not read whole yet): "+strings.Join(rep.Pending, ", "))
		}
		return rep, fmt.Errorf("--require-verified: %s", strings.Join(parts, "; "))
	}
	return rep, nil
}

// findMountStats looks for a modelfs mount's stats file in model and the
// directories above it, returning the mount's root and its stats, or nil
// stats when there is none.
func findMountStats(model string) (string, *mountStats, error) {
	dir, err := filepath.Abs(model)
	if err != nil {
		return "", nil, fmt.Errorf("model directory: %w", err)
	}
	for {
		f, err := os.Open(filepath.Join(dir, statsFileName))
		if err == nil {
			var st mountStats
			derr := json.NewDecoder(io.LimitReader(f, maxStatsBytes)).Decode(&st)
			f.Close()
			if derr != nil || !strings.HasPrefix(st.Format, "modelfs-stats/") {
				return "", nil, fmt.Errorf("%s is not a modelfs stats file: %v", filepath.Join(dir, statsFileName), derr)
			}
			return dir, &st, nil
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return "", nil, fmt.Errorf("reading the modelfs stats: %w", err)
		}
		up := filepath.Dir(dir)
		if up == dir {
			return "", nil, nil
		}
		dir = up
	}
}
