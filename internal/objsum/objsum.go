package objsum

import (
	"crypto/md5"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/binary"
	"hash"
	"hash/crc32"

	"github.com/minio/crc64nvme"
)

// CRC is a reflected CRC with the usual inverted start and end (CRC32,
// CRC32C, CRC64NVME), whose sums of consecutive pieces combine.
type CRC struct {
	Name   string
	width  uint
	poly   uint64 // reflected
	update func(crc uint64, p []byte) uint64
	// x2n[k] is x^(2^k) modulo poly; enough entries for any int64 length.
	x2n [67]uint64
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

var crcs = map[string]*CRC{
	"CRC32": newCRC("CRC32", 32, 0xedb88320, func(c uint64, p []byte) uint64 {
		return uint64(crc32.Update(uint32(c), crc32.IEEETable, p))
	}),
	"CRC32C": newCRC("CRC32C", 32, 0x82f63b78, func(c uint64, p []byte) uint64 {
		return uint64(crc32.Update(uint32(c), castagnoli, p))
	}),
	// crc64nvme is assembly-backed (PCLMULQDQ, PMULL), as the SDK uses it.
	"CRC64NVME": newCRC("CRC64NVME", 64, 0x9a6c9329ac4bc9b5, crc64nvme.Update),
}

func newCRC(name string, width uint, poly uint64, update func(uint64, []byte) uint64) *CRC {
	c := &CRC{Name: name, width: width, poly: poly, update: update}
	c.x2n[0] = 1 << (width - 2) // x^1
	for k := 1; k < len(c.x2n); k++ {
		c.x2n[k] = c.mult(c.x2n[k-1], c.x2n[k-1])
	}
	return c
}

// LookupCRC returns the CRC S3 names so, or nil.
func LookupCRC(name string) *CRC { return crcs[name] }

// Sum is the CRC of p alone.
func (c *CRC) Sum(p []byte) uint64 { return c.update(0, p) }

// Combine returns the CRC of A followed by B from the CRC of each and B's
// length.
func (c *CRC) Combine(crcA, crcB uint64, lenB int64) uint64 {
	p := uint64(1) << (c.width - 1) // x^0
	for n, k := uint64(lenB), 3; n != 0; n, k = n>>1, k+1 {
		if n&1 != 0 {
			p = c.mult(c.x2n[k], p)
		}
	}
	return c.mult(p, crcA) ^ crcB
}

// Bytes is the sum as S3 encodes it (big-endian, width/8 bytes).
func (c *CRC) Bytes(sum uint64) []byte {
	if c.width == 32 {
		return binary.BigEndian.AppendUint32(nil, uint32(sum))
	}
	return binary.BigEndian.AppendUint64(nil, sum)
}

// mult multiplies a and b modulo the polynomial, in the reflected
// representation; a must not be zero.
func (c *CRC) mult(a, b uint64) uint64 {
	m := uint64(1) << (c.width - 1)
	var p uint64
	for {
		if a&m != 0 {
			p ^= b
			if a&(m-1) == 0 {
				return p
			}
		}
		m >>= 1
		if b&1 != 0 {
			b = b>>1 ^ c.poly
		} else {
			b >>= 1
		}
	}
}

// NewOrdered returns the hash of an ordered checksum (SHA256, SHA1, MD5),
// or nil.
func NewOrdered(name string) hash.Hash {
	switch name {
	case "SHA256":
		return sha256.New()
	case "SHA1":
		return sha1.New()
	case "MD5":
		return md5.New()
	}
	return nil
}

// New returns a streaming hash of the CRC, whose Sum is the bytes S3
// encodes (big-endian).
func (c *CRC) New() hash.Hash { return &crcHash{c: c} }

type crcHash struct {
	c   *CRC
	crc uint64
}

func (h *crcHash) Write(p []byte) (int, error) {
	h.crc = h.c.update(h.crc, p)
	return len(p), nil
}

func (h *crcHash) Sum(b []byte) []byte { return append(b, h.c.Bytes(h.crc)...) }
func (h *crcHash) Reset()              { h.crc = 0 }
func (h *crcHash) Size() int           { return int(h.c.width / 8) }
func (h *crcHash) BlockSize() int      { return 1 }
