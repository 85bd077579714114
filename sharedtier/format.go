package sharedtier

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/cespare/xxhash/v2"

	"github.com/modelfs/modelfs/blockcache"
)

// A shared object is a fixed header, the identity it was written for,
// then the block's bytes:
//
//	magic      [8]byte  "MFSBLK01"
//	idLen      uint32   little-endian, at most maxIdentity
//	reserved   uint32   zero
//	payloadLen uint64   the block's length
//	sum        uint64   xxhash64 of identity || payload
//	identity   [idLen]byte
//	payload    [payloadLen]byte
//
// In the body rather than in user metadata: metadata is capped at 2 KiB
// (a source's key alone may be 1 KiB), is dropped by some copy and
// replication tools, and the body arrives in the same GET anyway.
const (
	magic       = "MFSBLK01"
	headerSize  = 32
	maxIdentity = 16 << 10
)

// errDamaged marks a shared object that is not a valid copy of the block
// asked for: damaged, truncated, or written for another identity.
var errDamaged = errors.New("shared block damaged or foreign")

// identity is the block's full identity: the object's source (scheme,
// endpoint or host, bucket, key), version and size, the block size and
// the block's index. Name and Group are left out: they are where a mount
// shows the object, and differ between nodes serving the same bytes.
func identity(obj blockcache.ObjectID, blockSize, index int64) string {
	var b strings.Builder
	b.WriteString("modelfs-shared-block/1\n")
	b.WriteString(strconv.Quote(obj.Source))
	b.WriteByte('\n')
	b.WriteString(strconv.Quote(obj.Version))
	fmt.Fprintf(&b, "\nsize=%d\nblock_size=%d\nindex=%d", obj.Size, blockSize, index)
	return b.String()
}

// keyHash names a block's shared objects: its identity's sha256, so a key
// never says what it holds, and no two identities share one.
func keyHash(id string) string {
	sum := sha256.Sum256([]byte(id))
	return hex.EncodeToString(sum[:])
}

func checksum(id string, payload []byte) uint64 {
	d := xxhash.New()
	d.WriteString(id)
	d.Write(payload)
	return d.Sum64()
}

// encode returns the shared object for payload, written for id.
func encode(id string, payload []byte) []byte {
	return encodeInto(make([]byte, headerSize+len(id)+len(payload)), id, payload)
}

// encodeInto writes the shared object into buf, which is exactly its size.
func encodeInto(buf []byte, id string, payload []byte) []byte {
	copy(buf, magic)
	clear(buf[8:headerSize])
	binary.LittleEndian.PutUint32(buf[8:], uint32(len(id)))
	binary.LittleEndian.PutUint64(buf[16:], uint64(len(payload)))
	binary.LittleEndian.PutUint64(buf[24:], checksum(id, payload))
	copy(buf[headerSize:], id)
	copy(buf[headerSize+len(id):], payload)
	return buf
}

// decodeInto reads a shared object of size bytes from r into p, which
// must be exactly the block's length, and checks that it was written for
// id and is whole. On an error p holds anything.
func decodeInto(r io.Reader, size int64, id string, p []byte) error {
	if want := int64(headerSize + len(id) + len(p)); size >= 0 && size != want {
		return fmt.Errorf("%w: %d bytes, want %d", errDamaged, size, want)
	}
	var h [headerSize]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return fmt.Errorf("%w: header: %v", errDamaged, err)
	}
	idLen := binary.LittleEndian.Uint32(h[8:])
	switch {
	case string(h[:8]) != magic:
		return fmt.Errorf("%w: no header", errDamaged)
	case idLen > maxIdentity || int(idLen) != len(id):
		return fmt.Errorf("%w: identity of %d bytes, want %d", errDamaged, idLen, len(id))
	case binary.LittleEndian.Uint64(h[16:]) != uint64(len(p)):
		return fmt.Errorf("%w: payload of %d bytes, want %d", errDamaged, binary.LittleEndian.Uint64(h[16:]), len(p))
	}
	got := make([]byte, idLen)
	if _, err := io.ReadFull(r, got); err != nil {
		return fmt.Errorf("%w: identity: %v", errDamaged, err)
	}
	if string(got) != id {
		return fmt.Errorf("%w: written for another block", errDamaged)
	}
	// Straight into the cache's buffer: no copy of the block.
	if _, err := io.ReadFull(r, p); err != nil {
		return fmt.Errorf("%w: payload: %v", errDamaged, err)
	}
	var extra [1]byte
	if n, _ := r.Read(extra[:]); n > 0 {
		return fmt.Errorf("%w: longer than its header says", errDamaged)
	}
	if checksum(id, p) != binary.LittleEndian.Uint64(h[24:]) {
		return fmt.Errorf("%w: checksum mismatch", errDamaged)
	}
	return nil
}

func bytesReader(b []byte) *bytes.Reader { return bytes.NewReader(b) }
