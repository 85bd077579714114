package pack

import (
	"testing"

	"github.com/modelfs/modelfs/fetch"
)

// Originals decoded from packs must never share cache entries with the
// inner source's plain objects.
func TestSourceIDDiffersFromInner(t *testing.T) {
	inner, err := fetch.NewLocal(fetch.LocalOptions{Root: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer inner.Close()
	s, err := NewSource(inner, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if s.ID() == inner.ID() || s.ID() == "" {
		t.Fatalf("pack source ID %q, inner %q: want distinct", s.ID(), inner.ID())
	}
}
