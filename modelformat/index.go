package modelformat

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"slices"
	"strings"
)

// IndexSuffix ends the name of a Hugging Face shard index, as in
// model.safetensors.index.json.
const IndexSuffix = ".safetensors.index.json"

// maxShards bounds the distinct shards an index may name; real
// checkpoints have at most a few hundred.
const maxShards = 1 << 16

// Index is a parsed Hugging Face shard index ({"metadata": {...},
// "weight_map": {tensor: shard file}}).
type Index struct {
	// Shards are the distinct files the weight map names, sorted, as
	// written: relative to the index's directory.
	Shards []string
	// Tensors is how many tensors the weight map lists.
	Tensors int
}

// ReadIndex parses a shard index of the given size. It is streamed like a
// safetensors header: only the distinct shard names are kept, not the
// tensor names nor anything else it holds. An index whose weight map is
// missing or empty, or names a shard that is not a plain relative path
// (empty, absolute, with "." or ".." segments, a backslash or a NUL), is
// an error.
func ReadIndex(r io.Reader, size int64, opts Options) (*Index, error) {
	if maxHeader := opts.maxHeader(); size > maxHeader {
		return nil, fmt.Errorf("safetensors index: %d-byte index exceeds the %d-byte limit", size, maxHeader)
	}
	idx, err := scanIndex(io.LimitReader(r, size), size)
	if err != nil {
		return nil, fmt.Errorf("safetensors index: %w", err)
	}
	return idx, nil
}

func scanIndex(r io.Reader, size int64) (*Index, error) {
	p := &jsonScanner{r: bufio.NewReaderSize(r, int(min(max(size, 16), 64<<10)))}
	seen := map[string]bool{}
	idx := &Index{}
	found := false
	if c, err := p.peek(); err != nil {
		return nil, err
	} else if c != '{' {
		return nil, fmt.Errorf("not a JSON object: %w", p.invalid(c, "'{'"))
	}
	err := p.object(func() error {
		key, long, err := p.str(len("weight_map"))
		if err != nil {
			return err
		}
		if err := p.expect(':'); err != nil {
			return err
		}
		if long || string(key) != "weight_map" {
			return p.skip(1)
		}
		if found {
			return errors.New("weight_map appears twice")
		}
		found = true
		if c, err := p.peek(); err != nil {
			return err
		} else if c != '{' {
			return fmt.Errorf("weight_map at offset %d is not an object", p.off)
		}
		return p.object(func() error {
			if _, _, err := p.str(0); err != nil {
				return err
			}
			if err := p.expect(':'); err != nil {
				return err
			}
			if c, err := p.peek(); err != nil {
				return err
			} else if c != '"' {
				return fmt.Errorf("weight_map value at offset %d is not a string", p.off)
			}
			shard, long, err := p.str(maxName)
			if err != nil {
				return err
			}
			if long {
				return fmt.Errorf("shard name at offset %d is longer than %d bytes", p.off, maxName)
			}
			idx.Tensors++
			if seen[string(shard)] {
				return nil
			}
			if len(seen) == maxShards {
				return fmt.Errorf("more than %d shards", maxShards)
			}
			if err := checkShard(string(shard)); err != nil {
				return fmt.Errorf("weight_map file %q: %w", shard, err)
			}
			seen[string(shard)] = true
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	if _, err := p.peek(); err != io.ErrUnexpectedEOF {
		return nil, errors.New("data after the index's JSON object")
	}
	if len(seen) == 0 {
		return nil, errors.New(`no "weight_map" entries`)
	}
	idx.Shards = make([]string, 0, len(seen))
	for s := range seen {
		idx.Shards = append(idx.Shards, s)
	}
	slices.Sort(idx.Shards)
	return idx, nil
}

// checkShard accepts only plain relative '/'-separated paths: an index
// comes from the store, and its names become paths next to it.
func checkShard(s string) error {
	switch {
	case s == "":
		return errors.New("empty path")
	case strings.ContainsAny(s, "\\\x00"):
		return errors.New("path contains a backslash or NUL")
	case !fs.ValidPath(s) || s == ".":
		return errors.New("not a plain relative path")
	}
	return nil
}
