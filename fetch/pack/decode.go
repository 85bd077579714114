package pack

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"
	"sync"

	"github.com/cespare/xxhash/v2"
	"github.com/klauspost/compress/zstd"
)

// decoder decodes frames; it is safe for concurrent use.
type decoder struct {
	z      *zstd.Decoder
	states sync.Pool // *decodeState
	// sem bounds the frames decoded at once to the CPUs: more would not
	// decode faster, and each holds a frame's packed bytes and scratch.
	sem chan struct{}
}

func newDecoder() (*decoder, error) {
	// DecodeAll may write only the capacity it is given, which is the
	// frame's span: a hostile frame cannot make it allocate.
	z, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(0), zstd.WithDecodeAllCapLimit(true),
		zstd.WithDecoderMaxMemory(MaxFrameSize), zstd.WithDecoderMaxWindow(MaxFrameSize))
	if err != nil {
		return nil, fmt.Errorf("pack: zstd decoder: %w", err)
	}
	d := &decoder{z: z, sem: make(chan struct{}, runtime.GOMAXPROCS(0))}
	d.states.New = func() any { return &decodeState{} }
	return d, nil
}

// frame checks the packed bytes of frame i against the index's hash, then
// decodes them into dst. packed may overlap dst: it is copied first.
func (d *decoder) frame(ix *Index, i int, packed, dst []byte) error {
	d.sem <- struct{}{}
	defer func() { <-d.sem }()
	st := d.states.Get().(*decodeState)
	defer d.states.Put(st)
	st.packed = append(st.packed[:0], packed...)
	f := ix.Frames[i]
	if h := xxhash.Sum64(st.packed); h != f.Hash {
		return fmt.Errorf("frame %d: %w: xxhash64 %016x, index says %016x", i, ErrCorrupt, h, f.Hash)
	}
	if err := decodeFrame(d.z, st, f.Codec, st.packed, dst); err != nil {
		return fmt.Errorf("frame %d (%s): %w", i, f.Codec, err)
	}
	return nil
}

// fetchFunc reads exactly len(p) packed bytes at off of the pack object.
type fetchFunc func(p []byte, off int64) error

// readAt fills p with the original's bytes at off; [off, off+len(p)) lies
// within the original. Frames p covers whole are fetched in one read and
// decoded straight into p; a frame it covers in part goes through cache,
// keyed by obj, so that reads smaller than a frame decode it once.
func (d *decoder) readAt(ix *Index, fetch fetchFunc, cache *frameCache, obj string, p []byte, off int64) error {
	if len(p) == 0 {
		return nil
	}
	end := off + int64(len(p))
	first, last := int(off/ix.FrameSize), int((end-1)/ix.FrameSize)
	whole := func(i int) bool {
		fs, n := ix.FrameRange(i)
		return fs >= off && fs+n <= end
	}
	// Only the first and the last frame can be covered in part; the ones
	// covered whole are [wa, wb].
	var partial []int
	wa, wb := first, last
	if !whole(first) {
		partial = append(partial, first)
		wa++
	}
	if last != first && !whole(last) {
		partial = append(partial, last)
		wb--
	}
	if wa <= wb {
		// The packed bytes are read into the end of the frames' own place
		// in p, so that they need no buffer of their own. No frame packs
		// to more than it covers (ReadIndex checks it), so decoding front
		// to back never overwrites the packed bytes of a frame not yet
		// decoded; each frame's own are copied out first (decoder.frame).
		start, _ := ix.FrameRange(wa)
		ws, wn := ix.FrameRange(wb)
		q := p[start-off : ws+wn-off]
		lo, hi := ix.Frames[wa].Off, ix.Frames[wb].Off+ix.Frames[wb].Len
		packed := q[int64(len(q))-(hi-lo):]
		if err := fetch(packed, lo); err != nil {
			return err
		}
		for i := wa; i <= wb; i++ {
			f := ix.Frames[i]
			fs, n := ix.FrameRange(i)
			if err := d.frame(ix, i, packed[f.Off-lo:f.Off-lo+f.Len], q[fs-start:fs-start+n]); err != nil {
				return err
			}
		}
	}
	for _, i := range partial {
		data, err := cache.get(frameKey{obj, i}, func() ([]byte, error) {
			f := ix.Frames[i]
			packed := make([]byte, f.Len)
			if err := fetch(packed, f.Off); err != nil {
				return nil, err
			}
			_, n := ix.FrameRange(i)
			out := make([]byte, n)
			return out, d.frame(ix, i, packed, out)
		})
		if err != nil {
			return err
		}
		fs, _ := ix.FrameRange(i)
		a, b := max(off, fs), min(end, fs+int64(len(data)))
		copy(p[a-off:b-off], data[a-fs:b-fs])
	}
	return nil
}

// frameKey names a decoded frame: the pinned pack object and the frame.
type frameKey struct {
	obj   string
	frame int
}

// frameCache keeps recently decoded frames, up to a byte budget, and
// decodes each frame once however many readers want it at the same time.
// Frames are never modified once decoded, so readers share them.
type frameCache struct {
	mu       sync.Mutex
	max      int64
	used     int64
	lru      *list.List // of *cachedFrame, most recent first
	frames   map[frameKey]*list.Element
	inflight map[frameKey]*frameCall
}

type cachedFrame struct {
	key  frameKey
	data []byte
}

type frameCall struct {
	done chan struct{}
	data []byte
	err  error
}

func newFrameCache(maxBytes int64) *frameCache {
	return &frameCache{max: maxBytes, lru: list.New(), frames: map[frameKey]*list.Element{}, inflight: map[frameKey]*frameCall{}}
}

// get returns the frame for k, calling load when it is neither cached nor
// being loaded. Failures are not cached. A reader that waited on another's
// load which was cancelled loads the frame itself: the cancellation was
// the other reader's.
func (c *frameCache) get(k frameKey, load func() ([]byte, error)) ([]byte, error) {
	for {
		c.mu.Lock()
		if el, ok := c.frames[k]; ok {
			c.lru.MoveToFront(el)
			c.mu.Unlock()
			return el.Value.(*cachedFrame).data, nil
		}
		call, ok := c.inflight[k]
		if !ok {
			break // with c.mu held
		}
		c.mu.Unlock()
		<-call.done
		if !errors.Is(call.err, context.Canceled) && !errors.Is(call.err, context.DeadlineExceeded) {
			return call.data, call.err
		}
	}
	call := &frameCall{done: make(chan struct{})}
	c.inflight[k] = call
	c.mu.Unlock()

	call.data, call.err = load()

	c.mu.Lock()
	delete(c.inflight, k)
	if call.err == nil && int64(len(call.data)) <= c.max {
		c.frames[k] = c.lru.PushFront(&cachedFrame{k, call.data})
		c.used += int64(len(call.data))
		for c.used > c.max {
			old := c.lru.Remove(c.lru.Back()).(*cachedFrame)
			delete(c.frames, old.key)
			c.used -= int64(len(old.data))
		}
	}
	c.mu.Unlock()
	close(call.done)
	return call.data, call.err
}

// Reader reads the original bytes of one pack object.
type Reader struct {
	r     io.ReaderAt
	ix    *Index
	d     *decoder
	cache *frameCache
}

// NewReader reads the original through the pack object r, described by
// ix (from ReadIndex). It keeps the last few frames it decoded in part.
func NewReader(r io.ReaderAt, ix *Index) (*Reader, error) {
	d, err := newDecoder()
	if err != nil {
		return nil, err
	}
	return &Reader{r: r, ix: ix, d: d, cache: newFrameCache(4 * ix.FrameSize)}, nil
}

// Size is the original's size.
func (r *Reader) Size() int64 { return r.ix.Size }

// ReadAt reads the original's bytes at off, as io.ReaderAt does. A
// damaged frame is an error wrapping ErrCorrupt, never wrong bytes.
func (r *Reader) ReadAt(p []byte, off int64) (int, error) {
	n, atEnd, err := clip(r.ix.Size, len(p), off)
	if err != nil {
		return 0, err
	}
	fetch := func(b []byte, at int64) error { return readFull(r.r, b, at) }
	if err := r.d.readAt(r.ix, fetch, r.cache, "", p[:n], off); err != nil {
		return 0, fmt.Errorf("pack: read [%d, %d): %w", off, off+int64(n), err)
	}
	if atEnd {
		return n, io.EOF
	}
	return n, nil
}

// clip checks a read of n bytes at off of an original of the given size:
// how many of them lie within it and whether the read reaches its end, or
// io.EOF when none do.
func clip(size int64, n int, off int64) (int, bool, error) {
	if off < 0 {
		return 0, false, fmt.Errorf("pack: negative offset %d", off)
	}
	if off >= size {
		return 0, false, io.EOF
	}
	if rest := size - off; int64(n) > rest {
		return int(rest), true, nil
	}
	return n, false, nil
}
