package pack

import (
	"cmp"
	"fmt"
	"io"
	"path"
	"slices"

	"github.com/modelfs/modelfs/modelformat"
)

// Span is a byte range of a file.
type Span struct{ Off, Len int64 }

// Layout is what the encoder knows of a file's content.
type Layout struct {
	// Float16 are the ranges holding 16-bit floats (bf16, fp16), sorted
	// and disjoint; elements start at each range's Off.
	Float16 []Span
}

// DetectLayout finds the 16-bit float (F16, BF16) tensors of a
// safetensors or GGUF file (by its name's extension), whose parsers check
// every offset against the file; other files have an empty layout. An
// error means the layout is unknown: the file can still be packed, only
// without byte grouping.
func DetectLayout(name string, r io.ReaderAt, size int64) (Layout, error) {
	if modelformat.FormatOf(path.Base(name)) == modelformat.Unknown {
		return Layout{}, nil
	}
	h, err := modelformat.Read(path.Base(name), r, size, modelformat.Options{NoShapes: true})
	if err != nil {
		return Layout{}, fmt.Errorf("pack: layout of %s: %w", name, err)
	}
	var l Layout
	for _, t := range h.Tensors {
		if (t.DType == "F16" || t.DType == "BF16") && t.Length > 0 {
			l.Float16 = append(l.Float16, Span{t.Offset, t.Length})
		}
	}
	slices.SortFunc(l.Float16, func(a, b Span) int { return cmp.Compare(a.Off, b.Off) })
	return l, nil
}

// runsIn returns the 16-bit element runs of l within [fs, fe), relative
// to fs: each starts on an element boundary of its span and holds whole
// elements; adjacent runs are merged.
func (l Layout) runsIn(fs, fe int64) []run {
	i, _ := slices.BinarySearchFunc(l.Float16, fs, func(s Span, off int64) int {
		return cmp.Compare(s.Off+s.Len, off+1)
	})
	var runs []run
	for ; i < len(l.Float16) && l.Float16[i].Off < fe; i++ {
		s := l.Float16[i]
		a, b := max(s.Off, fs), min(s.Off+s.Len, fe)
		if (a-s.Off)%2 == 1 {
			a++
		}
		b = a + (b-a)&^1
		if b <= a {
			continue
		}
		if n := len(runs); n > 0 && int64(runs[n-1].off+runs[n-1].n) == a-fs {
			runs[n-1].n += int(b - a)
			continue
		}
		runs = append(runs, run{int(a - fs), int(b - a)})
	}
	return runs
}
