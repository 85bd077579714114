package pack

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"

	"github.com/klauspost/compress/huff0"
	"github.com/klauspost/compress/zstd"
)

// A CodecSplit frame is:
//
//	uvarint   R, the number of regions (at least 1)
//	R × uvarint  len<<1 | pairs: the frame's bytes in order, each region
//	          either plain bytes or 2-byte elements (pairs=1, len even)
//	plain stream, if any region is plain: kind byte, then
//	            0 raw:   the bytes
//	            1 zstd:  uvarint length, one zstd frame
//	            2 huff0: blocks, as below
//	high stream, low stream, if any region is pairs: the second and the
//	          first byte of every element, in order, each cut into blocks
//	          of huffBlock bytes (the last one shorter); per block a kind
//	          byte, then:
//	            0 raw:   the bytes
//	            1 huff0: uvarint length, a huff0 4X stream with its table
//	            2 rle:   the one byte every position holds
//	            3 huff0: uvarint length, a huff0 1X stream with its table
//
// The payload must be consumed exactly.

// huffBlock is the unit of Huffman coding: each block carries its own
// table, so a damaged or hostile block cannot reach past itself.
// huff0 takes at most 256 KiB per block; 128 KiB cost nothing in ratio
// against that on bf16 weights.
const huffBlock = 128 << 10

// huff4XMin is the smallest block coded with 4 interleaved streams, whose
// jump table and 4 bit streams do not pay off below that.
const huff4XMin = 1 << 10

// Stream and block kinds.
const (
	plainRaw   = 0
	plainZstd  = 1
	plainHuff0 = 2

	blockRaw   = 0
	blockHuff4 = 1
	blockRLE   = 2
	blockHuff1 = 3
)

// run is a range of 16-bit elements within a frame: off and n in bytes,
// n even.
type run struct{ off, n int }

// frameEncoder encodes frames. It is not safe for concurrent use: each
// encoding goroutine has its own.
type frameEncoder struct {
	z             *zstd.Encoder
	hs            huff0.Scratch
	plain, hi, lo []byte
	hufBuf, zBuf  []byte
}

func newFrameEncoder() (*frameEncoder, error) {
	// The xxhash64 per frame protects the data; zstd's own CRC would only
	// be a second, slower check.
	z, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedDefault), zstd.WithEncoderCRC(false),
		zstd.WithEncoderConcurrency(1), zstd.WithZeroFrames(true))
	if err != nil {
		return nil, fmt.Errorf("pack: zstd encoder: %w", err)
	}
	return &frameEncoder{z: z}, nil
}

// encode appends the frame of data to dst, with runs (sorted, disjoint,
// within data) byte-grouped, and returns its codec. A frame that does not
// shrink is stored raw.
func (e *frameEncoder) encode(dst, data []byte, runs []run) (Codec, []byte) {
	start := len(dst)
	codec := CodecZstd
	if len(runs) == 0 {
		dst = e.z.EncodeAll(data, dst)
		// zstd's fast levels leave literals they judge barely compressible
		// as they are; Huffman coding alone still gains a few percent on
		// f32 or int8 tensors. Its output is a split frame of one plain
		// region.
		if n := len(dst) - start; n > len(data)*7/8 {
			e.hufBuf = e.encodeSplit(e.hufBuf[:0], data, nil)
			if len(e.hufBuf) < n {
				codec, dst = CodecSplit, append(dst[:start], e.hufBuf...)
			}
		}
	} else {
		codec = CodecSplit
		dst = e.encodeSplit(dst, data, runs)
	}
	if len(dst)-start >= len(data) {
		return CodecRaw, append(dst[:start], data...)
	}
	return codec, dst
}

func (e *frameEncoder) encodeSplit(dst, data []byte, runs []run) []byte {
	// The regions: plain gaps between the runs, and the runs.
	var regions []uint64
	e.plain, e.hi, e.lo = e.plain[:0], e.hi[:0], e.lo[:0]
	pos := 0
	for _, r := range runs {
		if r.off > pos {
			regions = append(regions, uint64(r.off-pos)<<1)
			e.plain = append(e.plain, data[pos:r.off]...)
		}
		regions = append(regions, uint64(r.n)<<1|1)
		k := len(e.lo)
		e.lo, e.hi = slices.Grow(e.lo, r.n/2)[:k+r.n/2], slices.Grow(e.hi, r.n/2)[:k+r.n/2]
		lo, hi, src := e.lo[k:], e.hi[k:], data[r.off:r.off+r.n]
		for j := range lo {
			lo[j], hi[j] = src[2*j], src[2*j+1]
		}
		pos = r.off + r.n
	}
	if pos < len(data) {
		regions = append(regions, uint64(len(data)-pos)<<1)
		e.plain = append(e.plain, data[pos:]...)
	}
	dst = binary.AppendUvarint(dst, uint64(len(regions)))
	for _, r := range regions {
		dst = binary.AppendUvarint(dst, r)
	}
	if len(e.plain) > 0 {
		dst = e.appendPlain(dst, len(runs) > 0)
	}
	if len(e.hi) > 0 {
		dst = e.appendBlocks(dst, e.hi)
		dst = e.appendBlocks(dst, e.lo)
	}
	return dst
}

// appendPlain appends the plain stream, Huffman-coded, or zstd-coded
// when tryZstd and that is smaller, or raw when neither shrinks it.
func (e *frameEncoder) appendPlain(dst []byte, tryZstd bool) []byte {
	start := len(dst)
	dst = append(dst, plainHuff0)
	dst = e.appendBlocks(dst, e.plain)
	best := len(dst) - start
	if tryZstd {
		e.zBuf = e.z.EncodeAll(e.plain, e.zBuf[:0])
		if n := 1 + uvarintLen(uint64(len(e.zBuf))) + len(e.zBuf); n < best {
			dst = append(dst[:start], plainZstd)
			dst = binary.AppendUvarint(dst, uint64(len(e.zBuf)))
			dst = append(dst, e.zBuf...)
			best = n
		}
	}
	if 1+len(e.plain) <= best {
		dst = append(dst[:start], plainRaw)
		dst = append(dst, e.plain...)
	}
	return dst
}

func uvarintLen(x uint64) int {
	n := 1
	for ; x >= 0x80; x >>= 7 {
		n++
	}
	return n
}

// appendBlocks Huffman-codes b block by block, each block raw when that
// does not shrink it.
func (e *frameEncoder) appendBlocks(dst, b []byte) []byte {
	for len(b) > 0 {
		blk := b[:min(len(b), huffBlock)]
		b = b[len(blk):]
		e.hs.Reuse = huff0.ReusePolicyNone
		kind, compress := byte(blockHuff4), huff0.Compress4X
		if len(blk) < huff4XMin {
			kind, compress = blockHuff1, huff0.Compress1X
		}
		out, _, err := compress(blk, &e.hs)
		switch {
		case errors.Is(err, huff0.ErrUseRLE):
			dst = append(dst, blockRLE, blk[0])
		case err != nil || len(out) >= len(blk):
			// ErrIncompressible, or too small to code: stored as is.
			dst = append(dst, blockRaw)
			dst = append(dst, blk...)
		default:
			dst = append(dst, kind)
			dst = binary.AppendUvarint(dst, uint64(len(out)))
			dst = append(dst, out...)
		}
	}
	return dst
}

// decodeState is one decoding goroutine's scratch space.
type decodeState struct {
	hs           huff0.Scratch
	plain        []byte // a coded plain stream, decoded
	hiBuf, loBuf []byte // one coded block of each pair stream, decoded
	packed       []byte // a frame's packed bytes, copied out of the way
	regions      []uint64
}

// ErrCorrupt marks a damaged frame: its bytes do not match the hash the
// index records for them, or (a bug, or a pack crafted to pass the hash)
// they do not decode to exactly the span the frame covers.
var ErrCorrupt = errors.New("damaged pack frame")

// decodeFrame decodes a frame's payload into dst, which is exactly the
// length of the original span it covers.
func decodeFrame(z *zstd.Decoder, st *decodeState, codec Codec, payload, dst []byte) error {
	switch codec {
	case CodecRaw:
		if len(payload) != len(dst) {
			return fmt.Errorf("%w: raw frame of %d bytes for %d", ErrCorrupt, len(payload), len(dst))
		}
		copy(dst, payload)
		return nil
	case CodecZstd:
		out, err := z.DecodeAll(payload, dst[:0])
		if err != nil {
			return fmt.Errorf("%w: zstd: %w", ErrCorrupt, err)
		}
		if len(out) != len(dst) || &out[0] != &dst[0] {
			return fmt.Errorf("%w: zstd frame decoded to %d bytes, want %d", ErrCorrupt, len(out), len(dst))
		}
		return nil
	case CodecSplit:
		return decodeSplit(z, st, payload, dst)
	}
	return fmt.Errorf("%w: unknown codec %d", ErrCorrupt, codec)
}

func decodeSplit(z *zstd.Decoder, st *decodeState, p, dst []byte) error {
	count, p, err := uvarint(p)
	if err != nil {
		return err
	}
	// Each region takes at least one byte of the payload.
	if count == 0 || count > uint64(len(p)) {
		return fmt.Errorf("%w: %d regions", ErrCorrupt, count)
	}
	st.regions = st.regions[:0]
	var plainLen, pairLen, total uint64
	for range count {
		var r uint64
		if r, p, err = uvarint(p); err != nil {
			return err
		}
		n := r >> 1
		if n == 0 || n > uint64(len(dst)) || (r&1 == 1 && n%2 != 0) {
			return fmt.Errorf("%w: region of %d bytes", ErrCorrupt, n)
		}
		if total += n; total > uint64(len(dst)) {
			return fmt.Errorf("%w: regions exceed the %d-byte frame", ErrCorrupt, len(dst))
		}
		if r&1 == 1 {
			pairLen += n / 2
		} else {
			plainLen += n
		}
		st.regions = append(st.regions, r)
	}
	if total != uint64(len(dst)) {
		return fmt.Errorf("%w: regions cover %d of %d bytes", ErrCorrupt, total, len(dst))
	}

	var plain []byte
	if plainLen > 0 {
		if len(p) == 0 {
			return fmt.Errorf("%w: no plain stream", ErrCorrupt)
		}
		kind := p[0]
		p = p[1:]
		switch kind {
		case plainRaw:
			if uint64(len(p)) < plainLen {
				return fmt.Errorf("%w: plain stream cut short", ErrCorrupt)
			}
			plain, p = p[:plainLen], p[plainLen:]
		case plainZstd:
			var n uint64
			if n, p, err = uvarint(p); err != nil {
				return err
			}
			if n > uint64(len(p)) {
				return fmt.Errorf("%w: plain stream cut short", ErrCorrupt)
			}
			st.plain = grow(st.plain, int(plainLen))
			out, err := z.DecodeAll(p[:n], st.plain[:0])
			if err != nil {
				return fmt.Errorf("%w: plain stream: %w", ErrCorrupt, err)
			}
			if uint64(len(out)) != plainLen || &out[0] != &st.plain[0] {
				return fmt.Errorf("%w: plain stream decoded to %d bytes, want %d", ErrCorrupt, len(out), plainLen)
			}
			plain, p = out, p[n:]
		case plainHuff0:
			// With no pairs the plain stream is the frame: decode it there.
			out := dst
			if pairLen > 0 {
				st.plain = grow(st.plain, int(plainLen))
				out = st.plain[:plainLen]
			}
			if p, err = decodeBlocks(&st.hs, p, out); err != nil {
				return fmt.Errorf("plain bytes: %w", err)
			}
			plain = out
		default:
			return fmt.Errorf("%w: plain stream kind %d", ErrCorrupt, kind)
		}
	}
	if pairLen == 0 {
		if len(p) != 0 {
			return fmt.Errorf("%w: %d bytes after the last stream", ErrCorrupt, len(p))
		}
		if &plain[0] != &dst[0] {
			copy(dst, plain)
		}
		return nil
	}
	// The high and low streams are read block by block, side by side, and
	// each pair of blocks interleaved while it is in cache; raw blocks
	// (most low ones) are read in place.
	loStart, err := skipBlocks(p, int(pairLen))
	if err != nil {
		return fmt.Errorf("high bytes: %w", err)
	}
	st.hiBuf, st.loBuf = grow(st.hiBuf, huffBlock), grow(st.loBuf, huffBlock)
	hi := pairStream{hs: &st.hs, p: p[:len(p)-len(loStart)], left: int(pairLen), buf: st.hiBuf}
	lo := pairStream{hs: &st.hs, p: loStart, left: int(pairLen), buf: st.loBuf}
	pos := 0
	for _, r := range st.regions {
		n := int(r >> 1)
		if r&1 == 0 {
			copy(dst[pos:pos+n], plain)
			plain = plain[n:]
			pos += n
			continue
		}
		for rem := n / 2; rem > 0; {
			hb, err := hi.avail()
			if err != nil {
				return fmt.Errorf("high bytes: %w", err)
			}
			lb, err := lo.avail()
			if err != nil {
				return fmt.Errorf("low bytes: %w", err)
			}
			k := min(rem, len(hb), len(lb))
			interleave(dst[pos:pos+2*k], lb[:k], hb[:k])
			hi.cur, lo.cur = hb[k:], lb[k:]
			pos += 2 * k
			rem -= k
		}
	}
	if len(hi.p) != 0 || len(lo.p) != 0 {
		return fmt.Errorf("%w: %d bytes after the last stream", ErrCorrupt, len(lo.p))
	}
	return nil
}

// pairStream reads the high or the low stream of a split frame a block at
// a time.
type pairStream struct {
	hs   *huff0.Scratch
	p    []byte // the stream's blocks not yet read
	left int    // bytes in them
	buf  []byte // where a coded block is decoded
	cur  []byte // the current block's bytes not yet used
}

// avail returns the current block's bytes not yet used, reading the next
// block when they are all used.
func (s *pairStream) avail() ([]byte, error) {
	if len(s.cur) > 0 {
		return s.cur, nil
	}
	n := min(s.left, huffBlock)
	if n == 0 {
		return nil, fmt.Errorf("%w: stream too short for its regions", ErrCorrupt)
	}
	var err error
	if s.cur, s.p, err = nextBlock(s.hs, s.p, s.buf, n); err != nil {
		return nil, err
	}
	s.left -= n
	return s.cur, nil
}

// skipBlocks returns what follows the n bytes of blocks at the start of p.
func skipBlocks(p []byte, n int) ([]byte, error) {
	for n > 0 {
		blk := min(n, huffBlock)
		n -= blk
		if len(p) == 0 {
			return nil, fmt.Errorf("%w: stream cut short", ErrCorrupt)
		}
		kind := p[0]
		p = p[1:]
		var skip uint64
		switch kind {
		case blockRaw:
			skip = uint64(blk)
		case blockRLE:
			skip = 1
		case blockHuff4, blockHuff1:
			var err error
			if skip, p, err = uvarint(p); err != nil {
				return nil, err
			}
		default:
			return nil, fmt.Errorf("%w: block kind %d", ErrCorrupt, kind)
		}
		if skip > uint64(len(p)) {
			return nil, fmt.Errorf("%w: block cut short", ErrCorrupt)
		}
		p = p[skip:]
	}
	return p, nil
}

// decodeBlocks fills out from the blocks at the start of p and returns
// the rest of p.
func decodeBlocks(hs *huff0.Scratch, p, out []byte) ([]byte, error) {
	for len(out) > 0 {
		n := min(len(out), huffBlock)
		blk, rest, err := nextBlock(hs, p, out[:n], n)
		if err != nil {
			return nil, err
		}
		if &blk[0] != &out[0] { // raw, read in place
			copy(out, blk)
		}
		out, p = out[n:], rest
	}
	return p, nil
}

// nextBlock decodes the block of n bytes at the start of p into buf (at
// least n long), or returns it in place when it is raw, and returns the
// rest of p.
func nextBlock(hs *huff0.Scratch, p, buf []byte, n int) (blk, rest []byte, err error) {
	if len(p) == 0 {
		return nil, nil, fmt.Errorf("%w: stream cut short", ErrCorrupt)
	}
	kind := p[0]
	p = p[1:]
	switch kind {
	case blockRaw:
		if len(p) < n {
			return nil, nil, fmt.Errorf("%w: raw block cut short", ErrCorrupt)
		}
		return p[:n], p[n:], nil
	case blockRLE:
		if len(p) < 1 {
			return nil, nil, fmt.Errorf("%w: rle block cut short", ErrCorrupt)
		}
		blk = buf[:n]
		for i := range blk {
			blk[i] = p[0]
		}
		return blk, p[1:], nil
	case blockHuff4, blockHuff1:
		size, data, err := uvarint(p)
		if err != nil {
			return nil, nil, err
		}
		if size > uint64(len(data)) {
			return nil, nil, fmt.Errorf("%w: huff0 block cut short", ErrCorrupt)
		}
		s, coded, err := huff0.ReadTable(data[:size], hs)
		if err != nil {
			return nil, nil, fmt.Errorf("%w: huff0 table: %w", ErrCorrupt, err)
		}
		// The capacity is what the block must decode to, no more.
		if kind == blockHuff4 {
			blk, err = s.Decoder().Decompress4X(buf[:0:n], coded)
		} else {
			blk, err = s.Decoder().Decompress1X(buf[:0:n], coded)
		}
		if err != nil {
			return nil, nil, fmt.Errorf("%w: huff0: %w", ErrCorrupt, err)
		}
		if len(blk) != n {
			return nil, nil, fmt.Errorf("%w: huff0 block decoded to %d bytes, want %d", ErrCorrupt, len(blk), n)
		}
		return blk, data[size:], nil
	}
	return nil, nil, fmt.Errorf("%w: block kind %d", ErrCorrupt, kind)
}

func uvarint(p []byte) (uint64, []byte, error) {
	v, n := binary.Uvarint(p)
	if n <= 0 {
		return 0, nil, fmt.Errorf("%w: bad varint", ErrCorrupt)
	}
	return v, p[n:], nil
}

// grow returns b with room for n bytes; n is bounded by the frame size.
func grow(b []byte, n int) []byte {
	if cap(b) < n {
		return make([]byte, n)
	}
	return b[:n]
}

// interleave writes lo[i], hi[i] pairs into out (2×len(hi) bytes). It
// works 8 elements at a time: byte-by-byte stores ran at half the speed,
// and this loop is a third of a split frame's decoding time.
func interleave(out, lo, hi []byte) {
	n := len(hi)
	lo = lo[:n]
	out = out[:2*n]
	i := 0
	for ; i+8 <= n; i += 8 {
		h := hi[i : i+8 : i+8]
		l := lo[i : i+8 : i+8]
		o := out[2*i : 2*i+16 : 2*i+16]
		binary.LittleEndian.PutUint64(o, uint64(l[0])|uint64(h[0])<<8|uint64(l[1])<<16|uint64(h[1])<<24|
			uint64(l[2])<<32|uint64(h[2])<<40|uint64(l[3])<<48|uint64(h[3])<<56)
		binary.LittleEndian.PutUint64(o[8:], uint64(l[4])|uint64(h[4])<<8|uint64(l[5])<<16|uint64(h[5])<<24|
			uint64(l[6])<<32|uint64(h[6])<<40|uint64(l[7])<<48|uint64(h[7])<<56)
	}
	for ; i < n; i++ {
		out[2*i] = lo[i]
		out[2*i+1] = hi[i]
	}
}
