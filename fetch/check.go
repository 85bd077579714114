package fetch

import (
	"fmt"
	"strings"
)

// MaxObjectSize is the largest object a mount shows: 5 TiB, S3's own limit
// for one object. A listing, a manifest or a HEAD reply can claim any size;
// block tables, cache files, prefetch plans and warm-up loops are all sized
// from it, so a larger (or negative) size is refused before anything uses it.
const MaxObjectSize int64 = 5 << 40

// MaxListedObjects bounds one source's listing. A model has at most a few
// thousand files; an endpoint that pages on without end (or a prefix that
// is not a model) would otherwise grow the listing until memory runs out.
const MaxListedObjects = 100_000

// maxVersionLen bounds an ETag or VersionID. S3's are under 100 bytes
// (VersionIDs under 1024); a longer one is a server's mistake or a way to
// make every listed object cost memory.
const maxVersionLen = 1024

// CheckObject reports why obj, as a listing returned it, cannot be served,
// or nil: its size is negative, unknown or over MaxObjectSize
// (ErrBadSize), or it carries nothing to pin its reads to: no VersionID,
// strong ETag or modification time (ErrUnpinned).
// The error does not repeat the key.
func CheckObject(obj Object) error {
	if err := checkSize(obj.Size); err != nil {
		return err
	}
	return checkPinned(obj)
}

// checkPinned refuses an object whose reads could not be pinned. A weak
// ETag alone is not enough: If-Match uses strong comparison, and a weak
// tag may stay the same while the bytes change.
func checkPinned(obj Object) error {
	switch {
	case len(obj.ETag) > maxVersionLen || len(obj.VersionID) > maxVersionLen:
		return fmt.Errorf("%w: its ETag or version id is longer than %d bytes", ErrUnpinned, maxVersionLen)
	case obj.VersionID != "", obj.ETag != "" && !strings.HasPrefix(obj.ETag, "W/"), !obj.ModTime.IsZero():
		return nil
	case obj.ETag != "":
		return fmt.Errorf("%w: a weak ETag (%s) and no Last-Modified cannot tell a changed file", ErrUnpinned, obj.ETag)
	default:
		return fmt.Errorf("%w: no ETag or Last-Modified, so a changed file could not be told", ErrUnpinned)
	}
}

func checkSize(size int64) error {
	switch {
	case size < 0:
		return fmt.Errorf("%w: the source reports no usable size (%d)", ErrBadSize, size)
	case size > MaxObjectSize:
		return fmt.Errorf("%w: %d bytes is over the limit of %d (5 TiB)", ErrBadSize, size, MaxObjectSize)
	}
	return nil
}

// Rejected is an object of a listing that CheckObject refused.
type Rejected struct {
	Key string
	Err error
}

// Usable splits a listing into the objects that can be served and those
// that cannot, with the reason, so that one bad object never hides the
// others.
func Usable(objs []Object) ([]Object, []Rejected) {
	var rejected []Rejected
	kept := objs[:0:0]
	for _, o := range objs {
		if err := CheckObject(o); err != nil {
			rejected = append(rejected, Rejected{Key: o.Key, Err: err})
			continue
		}
		kept = append(kept, o)
	}
	return kept, rejected
}

// UsableError is the error for a listing none of whose objects can be
// served: it names the first few and why.
func UsableError(rejected []Rejected) error {
	var b strings.Builder
	for i, r := range rejected {
		if i == 3 {
			fmt.Fprintf(&b, "; and %d more", len(rejected)-i)
			break
		}
		if i > 0 {
			b.WriteString("; ")
		}
		fmt.Fprintf(&b, "%q: %v", r.Key, r.Err)
	}
	return fmt.Errorf("no object can be shown: %s", b.String())
}
