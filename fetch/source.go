package fetch

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strconv"
	"time"
)

// Object is one remote file, pinned to the version seen when it was listed.
type Object struct {
	// Key is the object's path relative to the source root, '/'-separated.
	Key string
	// Size in bytes.
	Size int64
	// ModTime is the remote last-modified time (zero when unknown).
	ModTime time.Time
	// ETag is the entity tag as the server sent it, quotes included
	// (empty when the server has none).
	ETag string
	// VersionID is the S3 version id, when the bucket is versioned.
	VersionID string
	// Checksum is a whole-object checksum the store keeps, when Stat
	// found one (S3 additional checksums); zero otherwise. A listing may
	// give only its Algorithm: Stat gives the Value.
	Checksum Checksum
	// OpaqueETag is set when the store says the ETag is not the MD5 of
	// the content even though it looks like one (S3 SSE-KMS, SSE-C).
	OpaqueETag bool
}

// MultipartETag returns the MD5 of the parts' MD5s and the part count
// that an S3 multipart ETag ("<md5>-N") is, or false; like ETagMD5, not
// when the store marked the ETag opaque.
func (o Object) MultipartETag() (sum []byte, parts int, ok bool) {
	if o.OpaqueETag || len(o.ETag) < 36 || o.ETag[0] != '"' || o.ETag[len(o.ETag)-1] != '"' || o.ETag[33] != '-' {
		return nil, 0, false
	}
	sum, err := hex.DecodeString(o.ETag[1:33])
	if err != nil {
		return nil, 0, false
	}
	n, err := strconv.Atoi(o.ETag[34 : len(o.ETag)-1])
	if err != nil || n < 1 || n > 10000 {
		return nil, 0, false
	}
	return sum, n, true
}

// ETagMD5 returns the MD5 of the content that a single-part S3-style ETag
// is, or false: a multipart ETag ("...-N"), a weak one, one of another
// form, or one the store marked opaque.
func (o Object) ETagMD5() ([]byte, bool) {
	if o.OpaqueETag || len(o.ETag) != 34 || o.ETag[0] != '"' || o.ETag[33] != '"' {
		return nil, false
	}
	sum, err := hex.DecodeString(o.ETag[1:33])
	return sum, err == nil
}

// Checksum is a whole-object checksum: Algorithm is SHA256, SHA1, CRC32,
// CRC32C or CRC64NVME (S3), or MD5 (an HTTP digest), Value its base64
// encoding as S3 gives it.
type Checksum struct {
	Algorithm, Value string
	// Composite marks S3's checksum of a multipart object computed over
	// its parts' checksums: Value then ends in "-N", N the part count.
	Composite bool
}

// Version returns a string that identifies this exact content: the VersionID
// when present, else the ETag, else size and mtime. Cache keys use it.
func (o Object) Version() string {
	switch {
	case o.VersionID != "":
		return "v:" + o.VersionID
	case o.ETag != "":
		return "e:" + o.ETag
	default:
		return fmt.Sprintf("s:%d:%d", o.Size, o.ModTime.UnixNano())
	}
}

// Source is a read-only view of a tree of remote objects.
type Source interface {
	// List returns every object under the source root. Keys are relative
	// to the root and not yet sanitised: callers decide what is safe to show.
	// Sizes and versions are as the remote reported them: callers keep only
	// what Usable accepts.
	List(ctx context.Context) ([]Object, error)
	// Stat returns the current version of one object.
	Stat(ctx context.Context, key string) (Object, error)
	// ReadAt fills p with the bytes of obj at off, pinned to obj's version.
	// It returns len(p) bytes unless the range passes the end of the object,
	// in which case it returns the bytes up to the end and io.EOF.
	ReadAt(ctx context.Context, obj Object, p []byte, off int64) (int, error)
	// String describes the source for logs, without secrets.
	String() string
	// ID names the source for caches: two sources share an ID only if they
	// serve the same objects (scheme, endpoint or host, bucket, root), so
	// cached bytes never cross sources. It holds no secret: it is written
	// to cache metadata in the clear.
	ID() string
}

// Errors a Source returns, wrapped with context; test with errors.Is.
var (
	// ErrChanged: the object's version or size differs from the pinned one.
	ErrChanged = errors.New("object changed since it was listed")
	// ErrNotFound: the object or bucket does not exist.
	ErrNotFound = errors.New("not found")
	// ErrAccess: credentials were refused or lack permission.
	ErrAccess = errors.New("access denied")
	// ErrBadSize: the remote reports a size that is negative, unknown or
	// over MaxObjectSize.
	ErrBadSize = errors.New("size out of range")
	// ErrUnpinned: the remote gives nothing a read could be pinned to (no
	// VersionID, strong ETag or Last-Modified), so a change under a mount
	// could not be detected.
	ErrUnpinned = errors.New("no version to pin")
)

// clipRead checks a read of n bytes at off: it returns how many of them
// lie within the object and whether the read reaches its end, or io.EOF
// when none do. Every Source's ReadAt starts with it.
func clipRead(obj Object, n int, off int64) (int, bool, error) {
	if off < 0 {
		return 0, false, fmt.Errorf("read %s: negative offset %d", obj.Key, off)
	}
	if off >= obj.Size {
		return 0, false, io.EOF
	}
	if rest := obj.Size - off; int64(n) > rest {
		return int(rest), true, nil
	}
	return n, false, nil
}
