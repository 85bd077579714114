package fetch

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// A saved listing lets a mount start while its source is unreachable, to
// serve what the block cache already holds. It records the pinned
// versions, so cached blocks still match and nothing newer is guessed at.
type savedListing struct {
	Source  string    `json:"source"`
	SavedAt time.Time `json:"saved_at"`
	Objects []Object  `json:"objects"`
}

// SaveListing writes objs for source to path, atomically.
func SaveListing(path, source string, objs []Object) error {
	b, err := json.Marshal(savedListing{Source: source, SavedAt: time.Now().UTC(), Objects: objs})
	if err != nil {
		return err
	}
	// Private: a listing names a tenant's objects. CreateTemp makes 0600.
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("saving listing: %w", err)
	}
	os.Chmod(filepath.Dir(path), 0o700) // best effort, for one made open by an older version
	tmp, err := os.CreateTemp(filepath.Dir(path), ".listing-*")
	if err != nil {
		return fmt.Errorf("saving listing: %w", err)
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.Write(b)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		return fmt.Errorf("saving listing: %w", err)
	}
	return nil
}

// LoadListing reads the listing saved for source, and when it was saved.
func LoadListing(path, source string) ([]Object, time.Time, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("no saved listing: %w", err)
	}
	var l savedListing
	if err := json.Unmarshal(b, &l); err != nil {
		return nil, time.Time{}, fmt.Errorf("saved listing %s is damaged: %w", path, err)
	}
	if l.Source != source || len(l.Objects) == 0 {
		return nil, time.Time{}, fmt.Errorf("saved listing %s is for another source", path)
	}
	return l.Objects, l.SavedAt, nil
}
