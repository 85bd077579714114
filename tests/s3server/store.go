package s3server

import (
	"crypto/md5"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"hash"
	"io"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"time"
)

// object is one version of an object. Once committed to the index it is
// never modified, so handlers may keep using it after releasing the lock.
type object struct {
	key          string
	versionID    string // "" unless versioning is on
	deleteMarker bool
	size         int64
	etag         string    // quoted, as in the ETag header
	modTime      time.Time // whole seconds, as S3 keeps it
	path         string    // data file; "" for delete markers
	header       http.Header
	checksum     checksumSpec // algorithm "" when the client sent none
	partSizes    []int64      // parts of a multipart object, for GET ?partNumber=
	// partChecksums are the parts' checksums of a composite checksum.
	partChecksums []string
}

type bucket struct {
	name    string
	created time.Time
	// objects holds every version of each key, oldest first. Without
	// versioning there is exactly one.
	objects map[string][]*object
	// keys is the sorted set of keys whose newest version is not a delete
	// marker, i.e. what listings show.
	keys    []string
	uploads map[string]*upload
}

// current returns the newest version of key, which may be a delete marker.
func (b *bucket) current(key string) *object {
	if vs := b.objects[key]; len(vs) > 0 {
		return vs[len(vs)-1]
	}
	return nil
}

// updateListing keeps b.keys in step with the newest version of key.
func (b *bucket) updateListing(key string) {
	cur := b.current(key)
	live := cur != nil && !cur.deleteMarker
	i, listed := slices.BinarySearch(b.keys, key)
	switch {
	case live && !listed:
		b.keys = slices.Insert(b.keys, i, key)
	case !live && listed:
		b.keys = slices.Delete(b.keys, i, i+1)
	}
}

// store is the in-memory index of buckets and objects. Object bytes live in
// files under dir; the index only points at them.
//
// Replacing or deleting an object swaps the index entry under the write lock
// and removes the old file afterwards. Readers open the data file while
// holding the read lock, so anyone who saw the old entry already has it open
// and keeps reading the old bytes (an unlinked file stays readable).
type store struct {
	dir        string
	versioning bool

	mu      sync.RWMutex
	buckets map[string]*bucket
}

func (st *store) createBucket(name string, now time.Time) *apiError {
	if !validBucketName(name) {
		return errInvalidBucketName.with("BucketName", name)
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.buckets[name] != nil {
		return errBucketExists.with("BucketName", name)
	}
	st.buckets[name] = &bucket{
		name:    name,
		created: now,
		objects: map[string][]*object{},
		uploads: map[string]*upload{},
	}
	return nil
}

func (st *store) deleteBucket(name string) *apiError {
	st.mu.Lock()
	defer st.mu.Unlock()
	b := st.buckets[name]
	if b == nil {
		return errNoSuchBucket.with("BucketName", name)
	}
	if len(b.objects) > 0 {
		return errBucketNotEmpty.with("BucketName", name)
	}
	for _, u := range b.uploads {
		defer u.removeFiles()
	}
	delete(st.buckets, name)
	return nil
}

type bucketInfo struct {
	name    string
	created time.Time
}

func (st *store) listBuckets() []bucketInfo {
	st.mu.RLock()
	defer st.mu.RUnlock()
	out := make([]bucketInfo, 0, len(st.buckets))
	for _, b := range st.buckets {
		out = append(out, bucketInfo{b.name, b.created})
	}
	slices.SortFunc(out, func(a, b bucketInfo) int { return strings.Compare(a.name, b.name) })
	return out
}

func (st *store) bucketExists(name string) *apiError {
	st.mu.RLock()
	defer st.mu.RUnlock()
	if st.buckets[name] == nil {
		return errNoSuchBucket.with("BucketName", name)
	}
	return nil
}

// newFile creates a fresh data file. Every write goes to a new file, which
// is what lets readers of the previous version carry on undisturbed.
func (st *store) newFile() (*os.File, error) {
	return os.CreateTemp(st.dir, "obj-")
}

// precondition vets the current version of a key (nil if there is none)
// before a write replaces it; it runs under the store lock, so the check and
// the write are atomic, as S3's conditional writes are.
type precondition func(cur *object) *apiError

// put commits obj (whose data file is already written) as the newest version
// of its key. On error the caller still owns obj's file.
func (st *store) put(bucketName string, obj *object, check precondition) *apiError {
	var obsolete []*object
	defer func() { removeFiles(obsolete) }()

	st.mu.Lock()
	defer st.mu.Unlock()
	b := st.buckets[bucketName]
	if b == nil {
		return errNoSuchBucket.with("BucketName", bucketName)
	}
	var err *apiError
	obsolete, err = st.commit(b, obj, check)
	return err
}

// commit makes obj the newest version of its key, returning the versions it
// replaced (whose files the caller removes once the lock is released).
// st.mu must be held for writing.
func (st *store) commit(b *bucket, obj *object, check precondition) ([]*object, *apiError) {
	if check != nil {
		cur := b.current(obj.key)
		if cur != nil && cur.deleteMarker {
			cur = nil
		}
		if err := check(cur); err != nil {
			return nil, err
		}
	}
	var obsolete []*object
	if st.versioning {
		obj.versionID = newVersionID()
		b.objects[obj.key] = append(b.objects[obj.key], obj)
	} else {
		obsolete = b.objects[obj.key]
		b.objects[obj.key] = []*object{obj}
	}
	b.updateListing(obj.key)
	return obsolete, nil
}

// get looks up a version of an object ("" for the newest) and, if open is
// set, opens its data file. The object is returned along with NoSuchKey or
// MethodNotAllowed when it is a delete marker, since S3 then describes the
// marker in the response headers.
func (st *store) get(bucketName, key, versionID string, open bool) (*object, *os.File, *apiError) {
	st.mu.RLock()
	defer st.mu.RUnlock()
	b := st.buckets[bucketName]
	if b == nil {
		return nil, nil, errNoSuchBucket.with("BucketName", bucketName)
	}
	var obj *object
	switch {
	case versionID == "" || (!st.versioning && versionID == "null"):
		obj = b.current(key)
		if obj == nil {
			return nil, nil, errNoSuchKey.with("Key", key)
		}
		if obj.deleteMarker {
			return obj, nil, errNoSuchKey.with("Key", key)
		}
	case !st.versioning:
		return nil, nil, errInvalidArgument.withMessage("Invalid version id specified").with("ArgumentName", "versionId").with("ArgumentValue", versionID)
	default:
		i := slices.IndexFunc(b.objects[key], func(o *object) bool { return o.versionID == versionID })
		if i < 0 {
			return nil, nil, errNoSuchVersion.with("Key", key).with("VersionId", versionID)
		}
		obj = b.objects[key][i]
		if obj.deleteMarker {
			return obj, nil, errMethodNotAllowed.with("Method", "GET").with("ResourceType", "DeleteMarker")
		}
	}
	if !open {
		return obj, nil, nil
	}
	f, err := os.Open(obj.path)
	if err != nil {
		return nil, nil, errInternal
	}
	return obj, f, nil
}

// remove deletes an object as DeleteObject does. Without versioning the key
// simply goes away. With versioning, deleting without a version ID adds a
// delete marker, and deleting a version removes it for good. It returns the
// version that was removed or the marker that was added (nil if none).
func (st *store) remove(bucketName, key, versionID string, now time.Time) (*object, *apiError) {
	var obsolete []*object
	defer func() { removeFiles(obsolete) }()

	st.mu.Lock()
	defer st.mu.Unlock()
	b := st.buckets[bucketName]
	if b == nil {
		return nil, errNoSuchBucket.with("BucketName", bucketName)
	}
	versions := b.objects[key]
	switch {
	case !st.versioning:
		if versionID != "" && versionID != "null" {
			return nil, errInvalidArgument.withMessage("Invalid version id specified").with("ArgumentName", "versionId").with("ArgumentValue", versionID)
		}
		obsolete = versions
		delete(b.objects, key)
	case versionID == "":
		marker := &object{key: key, versionID: newVersionID(), deleteMarker: true, modTime: now}
		b.objects[key] = append(versions, marker)
		b.updateListing(key)
		return marker, nil
	default:
		i := slices.IndexFunc(versions, func(o *object) bool { return o.versionID == versionID })
		if i < 0 {
			return nil, nil // S3 answers 204 for versions that do not exist
		}
		obsolete = versions[i : i+1 : i+1]
		b.objects[key] = slices.Delete(slices.Clone(versions), i, i+1)
		if len(b.objects[key]) == 0 {
			delete(b.objects, key)
		}
	}
	b.updateListing(key)
	if len(obsolete) > 0 {
		return obsolete[0], nil
	}
	return nil, nil
}

// removeFiles deletes the data files of objects no longer in the index.
func removeFiles(objs []*object) {
	for _, o := range objs {
		if o.path != "" {
			_ = os.Remove(o.path)
		}
	}
}

// newVersionID returns an opaque, unique version ID.
func newVersionID() string { return rand.Text() }

// validBucketName applies S3's naming rules for general purpose buckets.
func validBucketName(name string) bool {
	if len(name) < 3 || len(name) > 63 || strings.Contains(name, "..") {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '.' || c == '-') {
			return false
		}
	}
	first, last := name[0], name[len(name)-1]
	return first != '.' && first != '-' && last != '.' && last != '-'
}

// written describes object data just streamed into a new file.
type written struct {
	path     string
	size     int64
	md5      []byte
	checksum checksumSpec // of the algorithm asked for, if any
}

// write streams src into a new data file, computing its MD5 (the ETag) and,
// if algorithm is set, that additional checksum. On error no file is left.
func (st *store) write(src io.Reader, algorithm string) (written, error) {
	f, err := st.newFile()
	if err != nil {
		return written{}, err
	}
	md5sum := md5.New()
	sinks := []io.Writer{f, md5sum}
	var sum hash.Hash
	if algorithm != "" {
		sum = checksumAlgorithms[algorithm]()
		sinks = append(sinks, sum)
	}
	n, err := io.CopyBuffer(io.MultiWriter(sinks...), src, make([]byte, 256<<10))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = os.Remove(f.Name())
		return written{}, err
	}
	w := written{path: f.Name(), size: n, md5: md5sum.Sum(nil)}
	if sum != nil {
		w.checksum = checksumSpec{algorithm: algorithm, value: base64.StdEncoding.EncodeToString(sum.Sum(nil))}
	}
	return w, nil
}

// object makes a version of key from the written data.
func (w written) object(key string, modTime time.Time) *object {
	return &object{
		key:      key,
		size:     w.size,
		etag:     `"` + hex.EncodeToString(w.md5) + `"`,
		modTime:  modTime,
		path:     w.path,
		checksum: w.checksum,
	}
}
