package loadorder

// Load profiles: the order in which a load first read a model's blocks,
// as prefetch's Recorder notes it. `modelfs mount --record-profile FILE`
// writes one with WriteProfile on unmount; `--profile FILE` reads it back
// with ReadProfile, drops with Filter what no longer matches the objects'
// versions, and prefetches the rest in order.
//
// The file format (docs/profile-format.md has the full description):
//
//	header   "MFSPROF\n", version byte (1), flags byte (bit 0: zstd payload)
//	payload  the body, raw or as zstd frames
//	trailer  XXH64 (seed 0) of header+payload, 8 bytes little-endian
//
//	body     uvarint P, P × (uvarint-prefixed path, uvarint-prefixed version)
//	         uvarint N, N × (uvarint pair, varint off-prevEnd[pair], uvarint len)
//
// ReadProfile treats its input as hostile: every count and length is
// checked against what is left and against the caps below before anything
// is allocated for it, and a zstd payload is decoded as a stream through a
// limit, so no input makes it hold much more than the caps allow.

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"

	"github.com/cespare/xxhash/v2"
	"github.com/klauspost/compress/zstd"
)

// Entry is one range first read during a load.
type Entry struct {
	Path    string // file path relative to the mount root
	Version string // the object's pinned version (opaque: ETag, VersionId, size+mtime)
	Off     int64  // first byte; >= 0
	Len     int64  // > 0, and Off+Len does not overflow int64
}

// Format constants and the caps ReadProfile and WriteProfile enforce.
const (
	// ProfileVersion is the format version WriteProfile writes and the only
	// one ReadProfile reads.
	ProfileVersion = 1
	// MaxProfileEntries is the most entries (and distinct path+version
	// pairs) a profile may hold.
	MaxProfileEntries = 1 << 20
	// MaxProfileString is the longest path or version, in bytes.
	MaxProfileString = 4 << 10
	// MaxProfileBody is the largest body, in bytes, after decompression; a
	// stored file may be at most this plus its 18 bytes of framing.
	MaxProfileBody = 64 << 20

	profileMagic      = "MFSPROF\n"
	profileHeaderLen  = len(profileMagic) + 2
	profileTrailerLen = 8
	profileFlagZstd   = 1 << 0

	// Bodies this large or larger are offered to zstd; the compressed form
	// is kept only when it is smaller.
	profileCompressMin = 1 << 10
	// zstd window WriteProfile uses, and the largest ReadProfile accepts:
	// it bounds the decoder's history buffer.
	profileZstdWindow    = 1 << 20
	profileZstdMaxWindow = 8 << 20
)

// ErrInvalidProfile is wrapped by every error ReadProfile returns for input
// that is not a well-formed profile (as opposed to an error reading it).
var ErrInvalidProfile = errors.New("invalid profile")

// Filter returns, in order, the entries whose path is in current with the
// same version (current maps path to version). entries is not modified.
func Filter(entries []Entry, current map[string]string) []Entry {
	var out []Entry
	for _, e := range entries {
		if v, ok := current[e.Path]; ok && v == e.Version {
			out = append(out, e)
		}
	}
	return out
}

// WriteProfile writes entries to w in the profile format, compressed when
// that makes it smaller. It refuses what ReadProfile would: more than
// MaxProfileEntries entries, a path or version longer than
// MaxProfileString, a negative Off, a Len <= 0, an Off+Len past int64, or
// a body over MaxProfileBody.
func WriteProfile(w io.Writer, entries []Entry) error {
	body, err := encodeProfileBody(entries)
	if err != nil {
		return fmt.Errorf("write profile: %w", err)
	}
	out := make([]byte, 0, profileHeaderLen+len(body)+profileTrailerLen)
	out = append(out, profileMagic...)
	out = append(out, ProfileVersion, 0)
	payload := body
	if len(body) >= profileCompressMin {
		enc, err := zstd.NewWriter(nil,
			zstd.WithEncoderConcurrency(1),
			zstd.WithWindowSize(profileZstdWindow),
			zstd.WithEncoderLevel(zstd.SpeedDefault))
		if err != nil {
			return fmt.Errorf("write profile: zstd: %w", err)
		}
		z := enc.EncodeAll(body, make([]byte, 0, len(body)/2))
		enc.Close()
		if len(z) < len(body) {
			payload = z
			out[profileHeaderLen-1] |= profileFlagZstd
		}
	}
	out = append(out, payload...)
	out = binary.LittleEndian.AppendUint64(out, xxhash.Sum64(out))
	if n, err := w.Write(out); err != nil {
		return fmt.Errorf("write profile: %w", err)
	} else if n < len(out) {
		return fmt.Errorf("write profile: %w", io.ErrShortWrite)
	}
	return nil
}

// pairKey is one path+version pair of a profile's table.
type pairKey struct{ path, version string }

func encodeProfileBody(entries []Entry) ([]byte, error) {
	if len(entries) > MaxProfileEntries {
		return nil, fmt.Errorf("%d entries, more than the %d a profile holds", len(entries), MaxProfileEntries)
	}
	pairs := map[pairKey]int{}
	var table []pairKey
	idx := make([]int, len(entries))
	for i, e := range entries {
		switch {
		case len(e.Path) > MaxProfileString:
			return nil, fmt.Errorf("entry %d: path is %d bytes, over %d", i, len(e.Path), MaxProfileString)
		case len(e.Version) > MaxProfileString:
			return nil, fmt.Errorf("entry %d: version is %d bytes, over %d", i, len(e.Version), MaxProfileString)
		case e.Off < 0 || e.Len <= 0 || e.Off > math.MaxInt64-e.Len:
			return nil, fmt.Errorf("entry %d (%s): bad range off=%d len=%d", i, e.Path, e.Off, e.Len)
		}
		k := pairKey{e.Path, e.Version}
		p, ok := pairs[k]
		if !ok {
			p = len(table)
			pairs[k] = p
			table = append(table, k)
		}
		idx[i] = p
	}
	var b []byte
	b = binary.AppendUvarint(b, uint64(len(table)))
	for _, k := range table {
		b = binary.AppendUvarint(b, uint64(len(k.path)))
		b = append(b, k.path...)
		b = binary.AppendUvarint(b, uint64(len(k.version)))
		b = append(b, k.version...)
		if len(b) > MaxProfileBody {
			return nil, fmt.Errorf("body over %d bytes", MaxProfileBody)
		}
	}
	b = binary.AppendUvarint(b, uint64(len(entries)))
	prevEnd := make([]int64, len(table))
	for i, e := range entries {
		p := idx[i]
		b = binary.AppendUvarint(b, uint64(p))
		b = binary.AppendVarint(b, e.Off-prevEnd[p]) // both in [0, MaxInt64]: no overflow
		b = binary.AppendUvarint(b, uint64(e.Len))
		prevEnd[p] = e.Off + e.Len
	}
	if len(b) > MaxProfileBody {
		return nil, fmt.Errorf("body over %d bytes", MaxProfileBody)
	}
	return b, nil
}

// ReadProfile reads a profile written by WriteProfile. Malformed input of
// any kind (bad magic, an unknown version, truncation, a checksum mismatch,
// counts or lengths past the caps or past the end, ranges that overflow)
// yields an error wrapping ErrInvalidProfile; it never panics, and it reads
// no more from r than the largest valid file (MaxProfileBody+18 bytes) and
// one byte.
func ReadProfile(r io.Reader) ([]Entry, error) {
	const maxFile = profileHeaderLen + MaxProfileBody + profileTrailerLen
	data, err := io.ReadAll(io.LimitReader(r, int64(maxFile)+1))
	if err != nil {
		return nil, fmt.Errorf("read profile: %w", err)
	}
	entries, err := parseProfile(data)
	if err != nil {
		return nil, fmt.Errorf("read profile: %w: %w", ErrInvalidProfile, err)
	}
	return entries, nil
}

func parseProfile(data []byte) ([]Entry, error) {
	const maxFile = profileHeaderLen + MaxProfileBody + profileTrailerLen
	if len(data) == 0 {
		return nil, errors.New("empty input")
	}
	if n := min(len(data), len(profileMagic)); string(data[:n]) != profileMagic[:n] {
		return nil, errors.New("bad magic: not a modelfs profile")
	}
	if len(data) <= len(profileMagic) {
		return nil, fmt.Errorf("truncated: %d bytes, no version", len(data))
	}
	if v := data[len(profileMagic)]; v != ProfileVersion {
		return nil, fmt.Errorf("unsupported format version %d (this modelfs reads version %d)", v, ProfileVersion)
	}
	if len(data) > maxFile {
		return nil, fmt.Errorf("over %d bytes", maxFile)
	}
	if len(data) < profileHeaderLen+profileTrailerLen {
		return nil, fmt.Errorf("truncated: %d bytes, shorter than header and checksum", len(data))
	}
	sumAt := len(data) - profileTrailerLen
	if got, want := xxhash.Sum64(data[:sumAt]), binary.LittleEndian.Uint64(data[sumAt:]); got != want {
		return nil, fmt.Errorf("checksum mismatch (stored %016x, computed %016x): corrupt or truncated", want, got)
	}
	flags := data[profileHeaderLen-1]
	if flags&^profileFlagZstd != 0 {
		return nil, fmt.Errorf("unknown flags %#02x", flags)
	}
	payload := data[profileHeaderLen:sumAt]
	if flags&profileFlagZstd == 0 {
		br := &bodyReader{r: bytes.NewReader(payload), limit: int64(len(payload)), exact: true}
		return br.parse()
	}
	dec, err := zstd.NewReader(bytes.NewReader(payload),
		zstd.WithDecoderConcurrency(1),
		zstd.WithDecoderLowmem(true),
		zstd.WithDecoderMaxWindow(profileZstdMaxWindow),
		zstd.WithDecoderMaxMemory(MaxProfileBody))
	if err != nil {
		return nil, fmt.Errorf("zstd: %w", err)
	}
	defer dec.Close()
	// One byte past the cap is let through so that a body over it is told
	// apart from one that ends exactly there.
	br := &bodyReader{r: bufio.NewReader(io.LimitReader(dec, MaxProfileBody+1)), limit: MaxProfileBody}
	return br.parse()
}

// bodyReader decodes a body from r, counting bytes against limit.
type bodyReader struct {
	r interface {
		io.Reader
		io.ByteReader
	}
	n     int64 // bytes consumed
	limit int64 // the body is at most this long
	exact bool  // the body is exactly limit long (raw payload)
	buf   [MaxProfileString]byte
}

// left bounds the bytes still to come.
func (b *bodyReader) left() int64 { return b.limit - b.n }

func (b *bodyReader) ReadByte() (byte, error) {
	if b.n >= b.limit {
		return 0, b.pastLimit()
	}
	c, err := b.r.ReadByte()
	if err != nil {
		return 0, eofIsTruncated(err)
	}
	b.n++
	return c, nil
}

// errTruncated is a body that ends before its counts say it should.
var errTruncated = errors.New("truncated body")

func (b *bodyReader) pastLimit() error {
	if b.exact {
		return errTruncated
	}
	return fmt.Errorf("decompressed body over %d bytes", int64(MaxProfileBody))
}

func eofIsTruncated(err error) error {
	if err == io.EOF || err == io.ErrUnexpectedEOF {
		return errTruncated
	}
	return err // a zstd error
}

func (b *bodyReader) uvarint() (uint64, error) { return binary.ReadUvarint(b) }
func (b *bodyReader) varint() (int64, error)   { return binary.ReadVarint(b) }

// end checks that the body ends here. For zstd, reaching the end of the
// frames is also what verifies their checksums.
func (b *bodyReader) end() error {
	_, err := b.r.ReadByte()
	switch {
	case err == io.EOF:
		return nil
	case err != nil:
		return err
	case b.n >= b.limit:
		return b.pastLimit()
	}
	return errors.New("trailing bytes after the entries")
}

// count reads a count of items each at least minSize bytes long.
func (b *bodyReader) count(what string, minSize, max int64) (int, error) {
	v, err := b.uvarint()
	if err != nil {
		return 0, fmt.Errorf("%s count: %w", what, err)
	}
	if v > uint64(max) {
		return 0, fmt.Errorf("%s count %d over the limit of %d", what, v, max)
	}
	if int64(v) > b.left()/minSize {
		return 0, fmt.Errorf("%s count %d: more than the %d bytes left can hold", what, v, b.left())
	}
	return int(v), nil
}

func (b *bodyReader) string(what string) (string, error) {
	v, err := b.uvarint()
	if err != nil {
		return "", fmt.Errorf("%s length: %w", what, err)
	}
	if v > MaxProfileString {
		return "", fmt.Errorf("%s length %d over the limit of %d", what, v, MaxProfileString)
	}
	if int64(v) > b.left() {
		if b.exact {
			return "", fmt.Errorf("%s length %d past the end of the body", what, v)
		}
		return "", fmt.Errorf("%s: %w", what, b.pastLimit())
	}
	s := b.buf[:v]
	if _, err := io.ReadFull(b.r, s); err != nil {
		return "", fmt.Errorf("%s: %w", what, eofIsTruncated(err))
	}
	b.n += int64(v)
	return string(s), nil
}

func (b *bodyReader) parse() ([]Entry, error) {
	// A pair is at least two bytes (two empty strings), an entry three.
	np, err := b.count("pair", 2, MaxProfileEntries)
	if err != nil {
		return nil, err
	}
	pairs := make([]pairKey, 0, min(np, 1<<12))
	for i := range np {
		path, err := b.string("path")
		if err != nil {
			return nil, fmt.Errorf("pair %d: %w", i, err)
		}
		version, err := b.string("version")
		if err != nil {
			return nil, fmt.Errorf("pair %d: %w", i, err)
		}
		pairs = append(pairs, pairKey{path, version})
	}
	ne, err := b.count("entry", 3, MaxProfileEntries)
	if err != nil {
		return nil, err
	}
	entries := make([]Entry, 0, min(ne, 1<<16))
	prevEnd := make([]int64, len(pairs))
	for i := range ne {
		p, err := b.uvarint()
		if err != nil {
			return nil, fmt.Errorf("entry %d: pair: %w", i, err)
		}
		if p >= uint64(len(pairs)) {
			return nil, fmt.Errorf("entry %d: pair %d out of range (%d pairs)", i, p, len(pairs))
		}
		delta, err := b.varint()
		if err != nil {
			return nil, fmt.Errorf("entry %d: offset: %w", i, err)
		}
		n, err := b.uvarint()
		if err != nil {
			return nil, fmt.Errorf("entry %d: length: %w", i, err)
		}
		base := prevEnd[p]
		if delta > 0 && base > math.MaxInt64-delta {
			return nil, fmt.Errorf("entry %d: offset overflows", i)
		}
		off := base + delta // base >= 0, so a negative delta cannot overflow
		switch {
		case off < 0:
			return nil, fmt.Errorf("entry %d: negative offset %d", i, off)
		case n == 0:
			return nil, fmt.Errorf("entry %d: zero length", i)
		case n > uint64(math.MaxInt64-off):
			return nil, fmt.Errorf("entry %d: offset %d + length %d overflows", i, off, n)
		}
		prevEnd[p] = off + int64(n)
		entries = append(entries, Entry{Path: pairs[p].path, Version: pairs[p].version, Off: off, Len: int64(n)})
	}
	if err := b.end(); err != nil {
		return nil, err
	}
	return entries, nil
}
