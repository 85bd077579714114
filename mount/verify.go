package mount

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"hash"
	"strconv"
	"strings"
	"sync"

	"github.com/modelfs/modelfs/blockcache"
	"github.com/modelfs/modelfs/fetch"
	"github.com/modelfs/modelfs/internal/objsum"
)

// storeVerifier checks each object against what its store keeps: the
// full-object checksum (S3's additional checksums, CRC64NVME by default
// since December 2024; a pack's sha256), else, on S3, the MD5 that a
// single-part ETag is. The algorithm comes from the listing, so CRCs are
// summed block by block as blocks arrive; the value from one HEAD when the
// object completes, which also shows that the version is still the one
// read.
type storeVerifier struct {
	files     map[string]remoteFile // by path; read-only once the cache runs
	blockSize int64
}

func (v storeVerifier) Check(id blockcache.ObjectID) blockcache.ObjectCheck {
	f, ok := v.files[id.Name]
	if !ok || f.obj.Version() != id.Version {
		return nil
	}
	algo := f.obj.Checksum.Algorithm
	if f.obj.Checksum.Composite {
		if newPartHash(algo) == nil || f.model.parts == nil {
			return nil
		}
		return &compositeCheck{file: f, algo: algo}
	}
	if crc := objsum.LookupCRC(algo); crc != nil {
		return &crcCheck{file: f, crc: crc, bs: v.blockSize, sums: map[int64]uint64{}}
	}
	if objsum.NewOrdered(algo) != nil {
		return &orderedCheck{file: f, algo: algo}
	}
	if _, ok := f.obj.ETagMD5(); ok && f.model.etagMD5 {
		return &orderedCheck{file: f, algo: "MD5", etag: true}
	}
	if _, n, ok := f.obj.MultipartETag(); ok && f.model.etagMD5 && f.model.parts != nil {
		return &multipartCheck{file: f, parts: n}
	}
	return nil
}

// newPartHash returns the hash of a composite checksum's algorithm.
func newPartHash(algo string) hash.Hash {
	if crc := objsum.LookupCRC(algo); crc != nil && algo != "CRC64NVME" {
		return crc.New()
	}
	if algo == "SHA256" || algo == "SHA1" {
		return objsum.NewOrdered(algo)
	}
	return nil
}

// compositeCheck verifies S3's composite checksum of a multipart object:
// the checksum of the parts' checksums, each part hashed from the bytes in
// order, part sizes from the store.
type compositeCheck struct {
	file  remoteFile
	algo  string
	parts partHasher
}

func (c *compositeCheck) Ordered() bool { return true }

func (c *compositeCheck) Block(ctx context.Context, _ int64, p []byte) error {
	if c.parts.sizes == nil {
		sizes, err := partSizes(ctx, c.file, -1)
		if err != nil {
			return err
		}
		c.parts.start(sizes, func() hash.Hash { return newPartHash(c.algo) })
	}
	return c.parts.write(p)
}

func (c *compositeCheck) Finish(ctx context.Context) error {
	st, err := stat(ctx, c.file)
	if err != nil {
		return err
	}
	ck := st.Checksum
	b64, count, _ := strings.Cut(ck.Value, "-")
	want, err1 := base64.StdEncoding.DecodeString(b64)
	n, err2 := strconv.Atoi(count)
	if !ck.Composite || ck.Algorithm != c.algo || err1 != nil || err2 != nil {
		return fmt.Errorf("%w: the store's checksum is now %s %q", blockcache.ErrUnverifiable, ck.Algorithm, ck.Value)
	}
	if len(c.parts.sizes) != n {
		return fmt.Errorf("%w: the store lists %d parts for a checksum of %d", blockcache.ErrUnverifiable, len(c.parts.sizes), n)
	}
	got, err := c.parts.sum()
	if err != nil {
		return err
	}
	return compareSums(fmt.Sprintf("composite %s (%d parts)", c.algo, n), got, want)
}

// partHasher hashes an object's bytes, fed in order, part by part, and
// the parts' sums in turn: S3's composite checksums and multipart ETags.
type partHasher struct {
	sizes   []int64
	newHash func() hash.Hash
	outer   hash.Hash
	h       hash.Hash // the part being hashed
	part    int       // parts started
	left    int64     // bytes of the current part still to come
}

func (ph *partHasher) start(sizes []int64, newHash func() hash.Hash) {
	ph.sizes, ph.newHash, ph.outer = sizes, newHash, newHash()
}

func (ph *partHasher) write(p []byte) error {
	for len(p) > 0 {
		if ph.left == 0 {
			if ph.h != nil {
				ph.outer.Write(ph.h.Sum(nil))
			}
			if ph.part == len(ph.sizes) {
				return fmt.Errorf("%w: more bytes than the listed parts hold", blockcache.ErrUnverifiable)
			}
			ph.h, ph.left = ph.newHash(), ph.sizes[ph.part]
			ph.part++
		}
		n := min(int64(len(p)), ph.left)
		ph.h.Write(p[:n])
		ph.left -= n
		p = p[n:]
	}
	return nil
}

// sum ends the last part and returns the sum of the parts' sums.
func (ph *partHasher) sum() ([]byte, error) {
	// Empty parts at the end still have their sums.
	for ph.outer != nil && ph.left == 0 && ph.part < len(ph.sizes) && ph.sizes[ph.part] == 0 {
		if ph.h != nil {
			ph.outer.Write(ph.h.Sum(nil))
		}
		ph.h = ph.newHash()
		ph.part++
	}
	if ph.outer == nil || ph.left != 0 || ph.part != len(ph.sizes) {
		return nil, fmt.Errorf("%w: the bytes did not fill the listed parts", blockcache.ErrUnverifiable)
	}
	if ph.h != nil {
		ph.outer.Write(ph.h.Sum(nil))
		ph.h = nil
	}
	return ph.outer.Sum(nil), nil
}

// partSizes lists the file's parts, which must add up to its size and,
// unless n is negative, be n.
func partSizes(ctx context.Context, f remoteFile, n int) ([]int64, error) {
	sizes, err := f.model.parts.PartSizes(ctx, f.obj)
	if err != nil {
		return nil, fmt.Errorf("%w: listing its parts: %w", blockcache.ErrUnverifiable, err)
	}
	var total int64
	for _, sz := range sizes {
		if sz < 0 {
			total = -1
			break
		}
		total += sz
	}
	if (n >= 0 && len(sizes) != n) || len(sizes) == 0 || total != f.obj.Size {
		return nil, fmt.Errorf("%w: the store lists %d parts of %d bytes for %d parts of %d bytes",
			blockcache.ErrUnverifiable, len(sizes), total, n, f.obj.Size)
	}
	return sizes, nil
}

// partLister gives the part sizes of a multipart object (fetch.S3).
type partLister interface {
	PartSizes(ctx context.Context, obj fetch.Object) ([]int64, error)
}

// multipartCheck verifies a multipart ETag, the MD5 of the parts' MD5s
// and their count: the part sizes come from the store, the MD5s from the
// bytes in order.
type multipartCheck struct {
	file  remoteFile
	parts int
	ph    partHasher
}

func (c *multipartCheck) Ordered() bool { return true }

func (c *multipartCheck) Block(ctx context.Context, _ int64, p []byte) error {
	if c.ph.sizes == nil {
		sizes, err := partSizes(ctx, c.file, c.parts)
		if err != nil {
			return err
		}
		c.ph.start(sizes, func() hash.Hash { return objsum.NewOrdered("MD5") })
	}
	return c.ph.write(p)
}

func (c *multipartCheck) Finish(ctx context.Context) error {
	st, err := stat(ctx, c.file)
	if err != nil {
		return err
	}
	want, n, ok := st.MultipartETag()
	if !ok || n != c.parts {
		return fmt.Errorf("%w: the ETag is not a multipart MD5 (encrypted?)", blockcache.ErrUnverifiable)
	}
	got, err := c.ph.sum()
	if err != nil {
		return err
	}
	return compareSums(fmt.Sprintf("multipart ETag (%d parts)", n), got, want)
}

// crcCheck sums each block on its own and combines them in order.
type crcCheck struct {
	file remoteFile
	crc  *objsum.CRC
	bs   int64
	mu   sync.Mutex
	sums map[int64]uint64 // by block; sparse, for absurd sizes
}

func (c *crcCheck) Ordered() bool { return false }

func (c *crcCheck) Block(ctx context.Context, i int64, p []byte) error {
	_, _, err := c.BlockCRC64NVME(ctx, i, p)
	return err
}

// BlockCRC64NVME hands the block's sum to the disk tier when it is a
// CRC64NVME, which then records it rather than hash the block again.
func (c *crcCheck) BlockCRC64NVME(_ context.Context, i int64, p []byte) (uint64, bool, error) {
	sum := c.crc.Sum(p)
	c.mu.Lock()
	c.sums[i] = sum
	c.mu.Unlock()
	return sum, c.crc.Name == "CRC64NVME", nil
}

func (c *crcCheck) Finish(ctx context.Context) error {
	c.mu.Lock()
	var sum uint64
	for i := int64(0); i*c.bs < c.file.obj.Size; i++ {
		s, ok := c.sums[i]
		if !ok {
			c.mu.Unlock()
			return fmt.Errorf("%w: block %d was never summed", blockcache.ErrUnverifiable, i)
		}
		if i == 0 {
			sum = s
		} else {
			sum = c.crc.Combine(sum, s, min(c.bs, c.file.obj.Size-i*c.bs))
		}
	}
	c.mu.Unlock()
	want, err := storeChecksum(ctx, c.file, c.crc.Name)
	if err != nil {
		return err
	}
	return compareSums(c.crc.Name, c.crc.Bytes(sum), want)
}

// orderedCheck hashes the whole object in order (SHA256, SHA1, MD5), as
// its blocks come.
type orderedCheck struct {
	file remoteFile
	algo string
	etag bool // the MD5 is the ETag's
	h    hash.Hash
}

func (c *orderedCheck) Ordered() bool { return true }

func (c *orderedCheck) Block(_ context.Context, _ int64, p []byte) error {
	if c.h == nil {
		c.h = objsum.NewOrdered(c.algo)
	}
	c.h.Write(p)
	return nil
}

func (c *orderedCheck) Finish(ctx context.Context) error {
	if c.h == nil {
		return fmt.Errorf("%w: no byte was hashed", blockcache.ErrUnverifiable)
	}
	var want []byte
	var err error
	if c.etag {
		want, err = storeETagMD5(ctx, c.file)
	} else {
		want, err = storeChecksum(ctx, c.file, c.algo)
	}
	if err != nil {
		return err
	}
	return compareSums(c.algo, c.h.Sum(nil), want)
}

func compareSums(algo string, got, want []byte) error {
	if !bytes.Equal(got, want) {
		return fmt.Errorf("%s is %x, the store has %x", algo, got, want)
	}
	return nil
}

// storeChecksum returns the store's checksum of the file's pinned version:
// from the listing when it gave the value (packs), else from a HEAD.
func storeChecksum(ctx context.Context, f remoteFile, algo string) ([]byte, error) {
	ck := f.obj.Checksum
	if ck.Value == "" {
		st, err := stat(ctx, f)
		if err != nil {
			return nil, err
		}
		ck = st.Checksum
	}
	if ck.Algorithm != algo || ck.Value == "" || ck.Composite {
		return nil, fmt.Errorf("%w: the store's checksum is now %q, not %s", blockcache.ErrUnverifiable, ck.Algorithm, algo)
	}
	sum, err := base64.StdEncoding.DecodeString(ck.Value)
	if err != nil {
		return nil, fmt.Errorf("%w: the store's %s %q is not base64", blockcache.ErrUnverifiable, algo, ck.Value)
	}
	return sum, nil
}

// storeETagMD5 returns the MD5 a single-part ETag is, once a HEAD showed
// that the store does not mark it opaque (SSE-KMS, SSE-C).
func storeETagMD5(ctx context.Context, f remoteFile) ([]byte, error) {
	st, err := stat(ctx, f)
	if err != nil {
		return nil, err
	}
	sum, ok := st.ETagMD5()
	if !ok {
		return nil, fmt.Errorf("%w: the ETag is not an MD5 (encrypted or multipart)", blockcache.ErrUnverifiable)
	}
	return sum, nil
}

// stat HEADs the file and checks it is still the version read; anything
// else leaves it unverifiable, never failed.
func stat(ctx context.Context, f remoteFile) (fetch.Object, error) {
	st, err := f.model.src.Stat(ctx, f.obj.Key)
	if err != nil {
		return st, fmt.Errorf("%w: %w", blockcache.ErrUnverifiable, err)
	}
	if st.Version() != f.obj.Version() {
		return st, fmt.Errorf("%w: %w", blockcache.ErrUnverifiable, fetch.ErrChanged)
	}
	return st, nil
}
