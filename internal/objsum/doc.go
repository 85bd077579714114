// Package objsum computes the whole-object checksums stores keep (S3's
// CRC64NVME, CRC32C, CRC32, SHA1, SHA256, and the MD5 of a single-part
// ETag) from an object's blocks.
//
// The CRCs are computed per block, in any order and in parallel, and
// combined (a multiplication by x^(8n) modulo the polynomial, as zlib's
// crc32_combine), so a cache checks an object without reading it twice.
// SHA and MD5 need the bytes in order.
package objsum
