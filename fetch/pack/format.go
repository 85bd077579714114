package pack

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/cespare/xxhash/v2"
)

// Suffix names a pack object: the pack of "model.safetensors" is
// "model.safetensors.mfpack".
const Suffix = ".mfpack"

// Version is the format version this package writes and reads.
const Version = 1

const (
	// DefaultFrameSize is the span of the original each frame covers. It
	// divides the block cache's default 8 MiB block, so a block read
	// covers whole frames and decodes straight into the block.
	DefaultFrameSize = 4 << 20
	// MinFrameSize and MaxFrameSize bound the span: smaller frames make a
	// big index and compress worse, bigger ones make small reads decode
	// much more than they need.
	MinFrameSize = 64 << 10
	MaxFrameSize = 64 << 20
	// MaxIndexLen bounds the index a reader accepts: 64 MiB holds the
	// frames of a file of about 20 TiB at the default span.
	MaxIndexLen = 64 << 20
)

// magic opens and closes every pack object. The CR LF catches a transfer
// that rewrote line endings.
var magic = [8]byte{'M', 'F', 'P', 'A', 'C', 'K', '\r', '\n'}

const (
	// HeaderLen is the fixed header: magic, version, zero flags.
	HeaderLen = 16
	// TrailerLen is the fixed trailer: index length, index xxhash64,
	// version, zero flags, magic.
	TrailerLen = 32
	// indexFixedLen is the index before its frame entries: frame span,
	// original size, sha256, frame count.
	indexFixedLen = 4 + 8 + 32 + 4
	// entryLen is one frame entry: packed length, codec, xxhash64.
	entryLen = 4 + 1 + 8
)

// Codec says how a frame's bytes are stored.
type Codec uint8

const (
	// CodecRaw: the original bytes, as they are.
	CodecRaw Codec = 0
	// CodecZstd: one zstd frame of the original bytes.
	CodecZstd Codec = 1
	// CodecSplit: the frame's 16-bit float runs byte-grouped into a high
	// and a low stream, each Huffman-coded, the other bytes zstd-coded.
	CodecSplit Codec = 2
)

func (c Codec) String() string {
	switch c {
	case CodecRaw:
		return "raw"
	case CodecZstd:
		return "zstd"
	case CodecSplit:
		return "split"
	}
	return fmt.Sprintf("codec(%d)", uint8(c))
}

// Frame is one frame's entry in the index.
type Frame struct {
	// Off is where the frame's bytes start in the pack object (not
	// stored: the sum of the lengths before it).
	Off int64
	// Len is the frame's packed length.
	Len int64
	// Codec is how the frame is stored.
	Codec Codec
	// Hash is the xxhash64 of the frame's packed bytes, checked before
	// they are decoded.
	Hash uint64
}

// Index describes a pack object: where each frame lies, and what the
// original was.
type Index struct {
	// FrameSize is the span of the original each frame covers; the last
	// frame covers what is left.
	FrameSize int64
	// Size is the original file's size.
	Size int64
	// SHA256 is the original file's sha256.
	SHA256 [32]byte
	// Frames, in file order.
	Frames []Frame
}

// frameCount is how many frames a file of size bytes has at span.
func frameCount(size, span int64) int64 {
	return (size + span - 1) / span
}

// FrameRange returns the range of the original that frame i covers.
func (ix *Index) FrameRange(i int) (off, n int64) {
	off = int64(i) * ix.FrameSize
	return off, min(ix.FrameSize, ix.Size-off)
}

// indexOff is where the index starts in the pack object.
func (ix *Index) indexOff() int64 {
	if len(ix.Frames) == 0 {
		return HeaderLen
	}
	last := ix.Frames[len(ix.Frames)-1]
	return last.Off + last.Len
}

// PackedSize is the size of the whole pack object.
func (ix *Index) PackedSize() int64 {
	return ix.indexOff() + indexFixedLen + int64(len(ix.Frames))*entryLen + TrailerLen
}

// appendHeader appends the pack object's header.
func appendHeader(b []byte) []byte {
	b = append(b, magic[:]...)
	b = binary.LittleEndian.AppendUint32(b, Version)
	return binary.LittleEndian.AppendUint32(b, 0)
}

// AppendTail appends the index and the trailer: what follows the last
// frame in the pack object.
func (ix *Index) AppendTail(b []byte) []byte {
	start := len(b)
	b = binary.LittleEndian.AppendUint32(b, uint32(ix.FrameSize))
	b = binary.LittleEndian.AppendUint64(b, uint64(ix.Size))
	b = append(b, ix.SHA256[:]...)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(ix.Frames)))
	for _, f := range ix.Frames {
		b = binary.LittleEndian.AppendUint32(b, uint32(f.Len))
		b = append(b, byte(f.Codec))
		b = binary.LittleEndian.AppendUint64(b, f.Hash)
	}
	idx := b[start:]
	b = binary.LittleEndian.AppendUint64(b, uint64(len(idx)))
	b = binary.LittleEndian.AppendUint64(b, xxhash.Sum64(idx))
	b = binary.LittleEndian.AppendUint32(b, Version)
	b = binary.LittleEndian.AppendUint32(b, 0)
	return append(b, magic[:]...)
}

// ErrFormat marks a pack object that is not one, is damaged, or is of a
// version this package does not read.
var ErrFormat = errors.New("not a valid pack")

// tailRead is how much of a pack's end ReadIndex reads first: enough for
// the index of a file of about 20 GiB at the default span, so one read
// usually does.
const tailRead = 64 << 10

// ReadIndex reads and checks the index of the pack object of the given
// size. It reads the tail once, and a second time only when the index is
// longer than that first read. Every length is checked against size and
// MaxIndexLen before anything is allocated for it.
func ReadIndex(r io.ReaderAt, size int64) (*Index, error) {
	if size < HeaderLen+indexFixedLen+TrailerLen {
		return nil, fmt.Errorf("%w: %d bytes is shorter than an empty pack", ErrFormat, size)
	}
	n := min(size, tailRead)
	tail := make([]byte, n)
	if err := readFull(r, tail, size-n); err != nil {
		return nil, fmt.Errorf("reading the pack's tail: %w", err)
	}
	if n == size && [8]byte(tail[:8]) != magic {
		return nil, fmt.Errorf("%w: no pack header", ErrFormat)
	}
	idxLen, err := parseTrailer(tail[n-TrailerLen:], size)
	if err != nil {
		return nil, err
	}
	var idx []byte
	if idxLen+TrailerLen <= n {
		idx = tail[n-TrailerLen-idxLen : n-TrailerLen]
	} else {
		// idxLen was checked against size and MaxIndexLen.
		idx = make([]byte, idxLen)
		if err := readFull(r, idx, size-TrailerLen-idxLen); err != nil {
			return nil, fmt.Errorf("reading the pack's index: %w", err)
		}
	}
	if got, want := xxhash.Sum64(idx), binary.LittleEndian.Uint64(tail[n-TrailerLen+8:]); got != want {
		return nil, fmt.Errorf("%w: index checksum %016x, want %016x", ErrFormat, got, want)
	}
	return parseIndex(idx, size)
}

// parseTrailer checks the trailer and returns the index length.
func parseTrailer(t []byte, size int64) (int64, error) {
	if [8]byte(t[24:32]) != magic {
		return 0, fmt.Errorf("%w: no pack trailer", ErrFormat)
	}
	if v := binary.LittleEndian.Uint32(t[16:]); v != Version {
		return 0, fmt.Errorf("%w: format version %d, this modelfs reads version %d", ErrFormat, v, Version)
	}
	if flags := binary.LittleEndian.Uint32(t[20:]); flags != 0 {
		return 0, fmt.Errorf("%w: unknown flags %#x", ErrFormat, flags)
	}
	idxLen := binary.LittleEndian.Uint64(t)
	if idxLen > MaxIndexLen || idxLen > uint64(size-HeaderLen-TrailerLen) {
		return 0, fmt.Errorf("%w: %d-byte index does not fit the %d-byte pack", ErrFormat, idxLen, size)
	}
	if idxLen < indexFixedLen || (idxLen-indexFixedLen)%entryLen != 0 {
		return 0, fmt.Errorf("%w: %d-byte index has a partial entry", ErrFormat, idxLen)
	}
	return int64(idxLen), nil
}

// parseIndex decodes idx, whose length parseTrailer checked, and checks
// it describes exactly a pack of size bytes.
func parseIndex(idx []byte, size int64) (*Index, error) {
	ix := &Index{
		FrameSize: int64(binary.LittleEndian.Uint32(idx)),
		Size:      int64(binary.LittleEndian.Uint64(idx[4:])),
	}
	copy(ix.SHA256[:], idx[12:44])
	count := int64(binary.LittleEndian.Uint32(idx[44:]))
	if ix.FrameSize < MinFrameSize || ix.FrameSize > MaxFrameSize {
		return nil, fmt.Errorf("%w: frame size %d outside [%d, %d]", ErrFormat, ix.FrameSize, MinFrameSize, MaxFrameSize)
	}
	// The entries' count is what the index's length allows; the stated
	// count and the original size must agree with it.
	if entries := int64(len(idx)-indexFixedLen) / entryLen; count != entries {
		return nil, fmt.Errorf("%w: index states %d frames but holds %d", ErrFormat, count, entries)
	}
	if ix.Size < 0 || ix.Size/ix.FrameSize > count || frameCount(ix.Size, ix.FrameSize) != count {
		return nil, fmt.Errorf("%w: %d frames of %d bytes cannot hold %d bytes", ErrFormat, count, ix.FrameSize, ix.Size)
	}
	ix.Frames = make([]Frame, count)
	off := int64(HeaderLen)
	e := idx[indexFixedLen:]
	for i := range ix.Frames {
		f := Frame{
			Off:   off,
			Len:   int64(binary.LittleEndian.Uint32(e)),
			Codec: Codec(e[4]),
			Hash:  binary.LittleEndian.Uint64(e[5:]),
		}
		e = e[entryLen:]
		_, orig := ix.FrameRange(i)
		// The encoder keeps a frame compressed only if it shrank, so no
		// frame is longer than what it covers.
		switch {
		case f.Codec > CodecSplit:
			return nil, fmt.Errorf("%w: frame %d: unknown codec %d", ErrFormat, i, f.Codec)
		case f.Codec == CodecRaw && f.Len != orig:
			return nil, fmt.Errorf("%w: raw frame %d is %d bytes, covers %d", ErrFormat, i, f.Len, orig)
		case f.Len <= 0 || f.Len > orig:
			return nil, fmt.Errorf("%w: frame %d is %d bytes, covers %d", ErrFormat, i, f.Len, orig)
		}
		off += f.Len
		ix.Frames[i] = f
	}
	if want := off + int64(len(idx)) + TrailerLen; want != size {
		return nil, fmt.Errorf("%w: frames and index make %d bytes, the pack has %d", ErrFormat, want, size)
	}
	return ix, nil
}

// readFull reads len(p) bytes at off; an io.EOF with all of them is fine.
func readFull(r io.ReaderAt, p []byte, off int64) error {
	n, err := r.ReadAt(p, off)
	if n == len(p) {
		return nil
	}
	if err == nil || err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return err
}
