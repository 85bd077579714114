package pack

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"runtime"
	"sync"

	"github.com/cespare/xxhash/v2"
)

// EncodeOptions tune Encode; zero values take the defaults.
type EncodeOptions struct {
	// FrameSize is the span of the original each frame covers (default
	// DefaultFrameSize; MinFrameSize to MaxFrameSize).
	FrameSize int64
	// Layout says which bytes are 16-bit floats, to byte-group them.
	Layout Layout
	// Workers encode frames in parallel (default GOMAXPROCS).
	Workers int
}

// Encode writes the pack of the size bytes of src to w, frames in order,
// and returns its index. src is read once, front to back; w is written
// sequentially, so it may be an upload stream.
func Encode(ctx context.Context, w io.Writer, src io.ReaderAt, size int64, opts EncodeOptions) (*Index, error) {
	span := opts.FrameSize
	if span == 0 {
		span = DefaultFrameSize
	}
	if span < MinFrameSize || span > MaxFrameSize {
		return nil, fmt.Errorf("pack: frame size %d: want %d to %d", span, MinFrameSize, MaxFrameSize)
	}
	if size < 0 {
		return nil, fmt.Errorf("pack: negative size %d", size)
	}
	n := frameCount(size, span)
	if n > (MaxIndexLen-indexFixedLen)/entryLen {
		return nil, fmt.Errorf("pack: %d frames make an index over %d bytes: use a larger frame size", n, MaxIndexLen)
	}
	workers := opts.Workers
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	encs := make(chan *frameEncoder, workers)
	for range workers {
		e, err := newFrameEncoder()
		if err != nil {
			return nil, err
		}
		encs <- e
	}
	defer func() {
		close(encs)
		for e := range encs {
			e.z.Close()
		}
	}()

	ix := &Index{FrameSize: span, Size: size, Frames: make([]Frame, 0, n)}
	if _, err := w.Write(appendHeader(nil)); err != nil {
		return nil, fmt.Errorf("pack: writing: %w", err)
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)

	// The reader reads frames in order (hashing the original as it goes)
	// and hands each to an encoding goroutine; order keeps their results
	// in file order for the writer below, and its capacity bounds how many
	// frames are in memory.
	type result struct {
		codec Codec
		data  []byte
	}
	order := make(chan chan result, 2*workers)
	bufs := sync.Pool{New: func() any { return make([]byte, 0, span+span/8) }}
	hash := sha256.New()
	var readErr error
	go func() {
		defer close(order)
		var wg sync.WaitGroup
		defer wg.Wait()
		for i := range n {
			if ctx.Err() != nil {
				return
			}
			off := i * span
			data := bufs.Get().([]byte)[:min(span, size-off)]
			if err := readFull(src, data, off); err != nil {
				readErr = fmt.Errorf("pack: reading [%d, %d): %w", off, off+int64(len(data)), err)
				cancel(readErr)
				return
			}
			hash.Write(data)
			out := make(chan result, 1)
			select {
			case order <- out:
			case <-ctx.Done():
				return
			}
			runs := opts.Layout.runsIn(off, off+int64(len(data)))
			e := <-encs
			wg.Go(func() {
				codec, packed := e.encode(bufs.Get().([]byte)[:0], data, runs)
				encs <- e
				bufs.Put(data[:0])
				out <- result{codec, packed}
			})
		}
	}()

	off := int64(HeaderLen)
	var werr error
	for out := range order {
		r := <-out
		if werr == nil {
			if _, err := w.Write(r.data); err != nil {
				werr = fmt.Errorf("pack: writing: %w", err)
				cancel(werr)
			}
		}
		ix.Frames = append(ix.Frames, Frame{Off: off, Len: int64(len(r.data)), Codec: r.codec, Hash: xxhash.Sum64(r.data)})
		off += int64(len(r.data))
		bufs.Put(r.data[:0])
	}
	// order is closed once the reader has returned and every encoding
	// goroutine it started is done.
	switch {
	case werr != nil:
		return nil, werr
	case readErr != nil:
		return nil, readErr
	case ctx.Err() != nil:
		return nil, context.Cause(ctx)
	}
	copy(ix.SHA256[:], hash.Sum(nil))
	if _, err := w.Write(ix.AppendTail(nil)); err != nil {
		return nil, fmt.Errorf("pack: writing: %w", err)
	}
	return ix, nil
}
