package mount

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"

	"github.com/modelfs/modelfs/blockcache"
	"github.com/modelfs/modelfs/modelformat"
	"github.com/modelfs/modelfs/prefetch"
)

// A loader's first read of a checkpoint file is its header. Through the
// cache it waits for the file's first block: 8 MiB by default, about
// 100 ms on a 100 MB/s connection with a 20 ms round trip. A read within
// the file's first headerChunk (256 KiB, 2.6 ms at that rate) is
// answered from a ranged GET of that chunk instead, which the planner
// reads the header from too: whichever asks first fetches it, and the
// other waits for it. The bytes are then checked against the first
// block once the cache has loaded it, and the file fails as damaged if
// they differ, so every byte served still matches the bytes its store's
// checksum covers.

// maxHeadBytes bounds the header chunks held, outside the RAM budget: 64
// files' first chunks. Files past it read their headers through the cache.
const maxHeadBytes = 64 * headerChunk

// headChunks are the first chunks of big files, by path.
type headChunks struct {
	mu    sync.Mutex
	m     map[string]*headChunk
	bytes int64 // held or being fetched, counted against maxHeadBytes
	log   *slog.Logger
}

type headChunk struct {
	done chan struct{} // closed once the fetch ended
	// data is the chunk, nil if its fetch failed or it was let go; set
	// before done is closed, cleared under headChunks.mu.
	data    []byte
	checked bool // the check against the first block has started
	// ends are where the file's tensors end, when its header fits in the
	// chunk; set with data, kept after release.
	ends prefetch.Ends
}

// started reports whether path's chunk was fetched or is being fetched.
func (h *headChunks) started(path string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.m[path] != nil
}

// fetch returns f's first chunk, fetching it unless that was done or is
// under way (then it waits); false if it failed, was let go, or the bound
// leaves no room.
func (h *headChunks) fetch(ctx context.Context, f remoteFile) ([]byte, *headChunk, bool) {
	h.mu.Lock()
	if h.m == nil {
		h.m = map[string]*headChunk{}
	}
	c, mine := h.m[f.path], false
	if c == nil {
		if h.bytes+headerChunk > maxHeadBytes {
			h.mu.Unlock()
			return nil, nil, false
		}
		c, mine = &headChunk{done: make(chan struct{})}, true
		h.m[f.path] = c
		h.bytes += headerChunk
	}
	h.mu.Unlock()
	if mine {
		want := min(headerChunk, f.obj.Size)
		buf := make([]byte, want)
		n, err := f.model.src.ReadAt(ctx, f.obj, buf, 0)
		if err != nil && !(errors.Is(err, io.EOF) && int64(n) == want) {
			buf = nil // readers and the planner go their own way
		}
		ends := tensorEnds(f.path, buf, f.obj.Size)
		h.mu.Lock()
		c.data, c.ends = buf, ends
		h.bytes -= headerChunk - int64(len(buf))
		h.mu.Unlock()
		close(c.done)
	}
	select {
	case <-c.done:
	case <-ctx.Done():
		return nil, nil, false
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	return c.data, c, c.data != nil
}

// tensorEnds returns where the tensors of the weight file at path end,
// from chunk, its first bytes; nil unless its header lies within them.
func tensorEnds(path string, chunk []byte, size int64) prefetch.Ends {
	if len(chunk) == 0 || modelformat.FormatOf(path) == modelformat.Unknown {
		return nil
	}
	hd, err := modelformat.Read(path, bytes.NewReader(chunk), size, modelformat.Options{NoShapes: true})
	if err != nil {
		return nil
	}
	ends := make([]int64, 0, len(hd.Tensors))
	for _, t := range hd.Tensors {
		ends = append(ends, t.Offset+t.Length)
	}
	return prefetch.NewEnds(ends)
}

// bound returns the first tensor end at or after end in path, when its
// header was read from its chunk: see prefetch.Bounder.
func (h *headChunks) bound(path string, end int64) (int64, bool) {
	h.mu.Lock()
	var ends prefetch.Ends
	if c := h.m[path]; c != nil {
		ends = c.ends
	}
	h.mu.Unlock()
	return ends.Bound(end)
}

// check compares data, the chunk c, once, with the first bytes of obj as
// the cache loads them, lets c go (later reads of those bytes come from
// the cache, which holds them by then), and fails obj if they differ.
func (h *headChunks) check(path string, c *headChunk, data []byte, obj *blockcache.Object) {
	h.mu.Lock()
	if c.checked {
		h.mu.Unlock()
		return
	}
	c.checked = true
	h.mu.Unlock()
	go func() {
		// Bounded by the cache's life: its Close fails the loads it has.
		same, err := obj.Matches(context.Background(), data, 0)
		// Let go first: once the file has failed, no read may be
		// answered from the chunk.
		h.release(c)
		if err != nil {
			// The cache's own error reaches the reader on its next read;
			// the bytes served could not be compared.
			h.log.Warn("file's first bytes, served from a ranged read, not compared with its first block", "file", path, "err", err)
			return
		}
		if !same {
			err := obj.Fail(fmt.Errorf("the first %d bytes served from a ranged read differ from its first block", len(data)))
			h.log.Error("file's first bytes differ between two reads of the same version", "file", path, "err", err)
		}
	}()
}

// release lets c's bytes go. Its entry stays, empty, so that the file's
// later reads go to the cache, which holds the block by then, or fails
// them if the file turned out damaged.
func (h *headChunks) release(c *headChunk) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.bytes -= int64(len(c.data))
	c.data = nil
}

// headStream answers reads within a file's header chunk from it, and the
// others through its Stream.
type headStream struct {
	*prefetch.Stream
	p    *prefetcher
	path string
	obj  *blockcache.Object
}

// fromHead returns [off, off+n) from the file's first chunk, when the
// read lies within it and the chunk is held, or is fetched now for a first
// read of a big file whose first block is not cached.
func (s *headStream) fromHead(ctx context.Context, off int64, n int) ([]byte, bool) {
	p := s.p
	f, ok := p.files[s.path]
	if !ok || off < 0 || n <= 0 || off+int64(n) > min(headerChunk, f.obj.Size) {
		return nil, false
	}
	// A file of one block is checked whole as that block loads, before
	// any of it is served: its reads keep to the cache.
	if f.obj.Size <= p.blockSize {
		return nil, false
	}
	if st, _ := s.obj.Verification(); st == blockcache.VerifyFailed {
		return nil, false // the cache fails the read
	}
	if !p.heads.started(s.path) && (!p.directHeaders || f.obj.Size <= p.smallFile || p.headCached(f)) {
		return nil, false
	}
	data, c, ok := p.heads.fetch(ctx, f)
	if !ok || off+int64(n) > int64(len(data)) {
		return nil, false
	}
	if st, _ := s.obj.Verification(); st == blockcache.VerifyFailed {
		return nil, false // failed while the chunk was fetched
	}
	s.Stream.Served(off, int64(n))
	p.heads.check(s.path, c, data, s.obj)
	return data[off : off+int64(n)], true
}

func (s *headStream) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	if data, ok := s.fromHead(ctx, off, len(p)); ok {
		return copy(p, data), nil
	}
	return s.Stream.ReadAt(ctx, p, off)
}

func (s *headStream) ReadSlices(ctx context.Context, off int64, n int) ([][]byte, func(), error) {
	if data, ok := s.fromHead(ctx, off, n); ok {
		return [][]byte{data}, nil, nil
	}
	return s.Stream.ReadSlices(ctx, off, n)
}
