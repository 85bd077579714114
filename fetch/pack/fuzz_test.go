package pack

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"math/rand/v2"
	"runtime"
	"testing"

	"github.com/cespare/xxhash/v2"
)

// fuzzSeeds are small packs: empty, one byte, frames of every codec.
func fuzzSeeds(t testing.TB) [][]byte {
	rng := rand.New(rand.NewPCG(1, 2))
	mixed := make([]byte, 2*MinFrameSize+777)
	normalBF16(rng, mixed[100:])
	for i := range 50 {
		mixed[i] = byte(rng.Uint32())
	}
	l := Layout{Float16: []Span{{100, int64(len(mixed) - 100)}}}
	var seeds [][]byte
	for _, c := range []struct {
		data []byte
		l    Layout
	}{{nil, Layout{}}, {[]byte{7}, Layout{}}, {make([]byte, 5000), Layout{}}, {mixed, l}, {mixed, Layout{}}} {
		p, _ := encodeBytes(t, c.data, EncodeOptions{FrameSize: MinFrameSize, Layout: c.l})
		seeds = append(seeds, p)
	}
	return seeds
}

// FuzzReadIndex: whatever the bytes, ReadIndex returns an index that
// describes them exactly or an ErrFormat, and reading through an index it
// accepted gives the original or an ErrCorrupt.
func FuzzReadIndex(f *testing.F) {
	for _, s := range fuzzSeeds(f) {
		f.Add(s)
		f.Add(s[:len(s)-1])
		f.Add(s[1:])
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		ix, err := ReadIndex(bytes.NewReader(data), int64(len(data)))
		if err != nil {
			if !errors.Is(err, ErrFormat) {
				t.Fatalf("error without ErrFormat: %v", err)
			}
			return
		}
		if ix.PackedSize() != int64(len(data)) {
			t.Fatalf("index describes %d bytes, the pack has %d", ix.PackedSize(), len(data))
		}
		if tail := ix.AppendTail(nil); !bytes.Equal(tail, data[len(data)-len(tail):]) {
			t.Fatal("the index does not encode back to the bytes it was read from")
		}
		if ix.Size > 1<<20 {
			return // decoding it would only test allocation
		}
		r, err := NewReader(bytes.NewReader(data), ix)
		if err != nil {
			t.Fatal(err)
		}
		p := make([]byte, ix.Size)
		if _, err := r.ReadAt(p, 0); err != nil && err != io.EOF && !errors.Is(err, ErrCorrupt) {
			t.Fatalf("reading: %v, want success or ErrCorrupt", err)
		}
	})
}

// FuzzDecodeFrame: any payload, hash check aside, decodes to exactly the
// frame's span or fails with ErrCorrupt.
func FuzzDecodeFrame(f *testing.F) {
	for _, s := range fuzzSeeds(f) {
		ix, err := ReadIndex(bytes.NewReader(s), int64(len(s)))
		if err != nil {
			f.Fatal(err)
		}
		for i, fr := range ix.Frames {
			_, n := ix.FrameRange(i)
			f.Add(uint8(fr.Codec), uint32(n), s[fr.Off:fr.Off+fr.Len])
		}
	}
	d, err := newDecoder()
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, codec uint8, n uint32, payload []byte) {
		dst := make([]byte, 1+n%MinFrameSize)
		err := decodeFrame(d.z, &decodeState{}, Codec(codec), payload, dst)
		if err != nil && !errors.Is(err, ErrCorrupt) {
			t.Fatalf("error without ErrCorrupt: %v", err)
		}
	})
}

// tailReader is an object of any claimed size: zeros, then tail.
type tailReader struct {
	size int64
	tail []byte
}

func (r tailReader) ReadAt(p []byte, off int64) (int, error) {
	for i := range p {
		at := off + int64(i)
		if at >= r.size {
			return i, io.EOF
		}
		p[i] = 0
		if k := at - (r.size - int64(len(r.tail))); k >= 0 {
			p[i] = r.tail[k]
		}
	}
	return len(p), nil
}

// TestReadIndexBoundsAllocation: lengths and counts a pack states are
// checked before anything is allocated for them.
func TestReadIndexBoundsAllocation(t *testing.T) {
	trailer := func(idxLen uint64, idx []byte) []byte {
		b := append([]byte(nil), idx...)
		b = binary.LittleEndian.AppendUint64(b, idxLen)
		b = binary.LittleEndian.AppendUint64(b, xxhash.Sum64(idx))
		b = binary.LittleEndian.AppendUint32(b, Version)
		b = binary.LittleEndian.AppendUint32(b, 0)
		return append(b, magic[:]...)
	}
	// An index that states 2^32-1 frames in 61 bytes.
	lying := binary.LittleEndian.AppendUint32(nil, DefaultFrameSize)
	lying = binary.LittleEndian.AppendUint64(lying, 1<<50)
	lying = append(lying, make([]byte, 32)...)
	lying = binary.LittleEndian.AppendUint32(lying, 1<<32-1)
	lying = append(lying, make([]byte, entryLen)...)
	for name, r := range map[string]tailReader{
		"index longer than the object": {1 << 20, trailer(1<<40, nil)},
		"index longer than the limit":  {1 << 50, trailer(MaxIndexLen+entryLen, nil)},
		"frame count beyond the index": {1 << 50, trailer(uint64(len(lying)), lying)},
	} {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		_, err := ReadIndex(r, r.size)
		runtime.ReadMemStats(&after)
		if !errors.Is(err, ErrFormat) {
			t.Errorf("%s: %v, want ErrFormat", name, err)
		}
		if n := after.TotalAlloc - before.TotalAlloc; n > 1<<20 {
			t.Errorf("%s: allocated %d bytes", name, n)
		}
	}
}

func TestReadIndexRejectsOtherVersions(t *testing.T) {
	p, _ := encodeBytes(t, []byte("hello"), EncodeOptions{})
	v2 := bytes.Clone(p)
	binary.LittleEndian.PutUint32(v2[len(v2)-16:], Version+1)
	_, err := ReadIndex(bytes.NewReader(v2), int64(len(v2)))
	if !errors.Is(err, ErrFormat) || !bytes.Contains([]byte(err.Error()), []byte("version 2")) {
		t.Errorf("a version %d pack: %v, want an ErrFormat naming the version", Version+1, err)
	}
	if _, err := ReadIndex(bytes.NewReader(p), int64(len(p))); err != nil {
		t.Fatal(err)
	}
}
