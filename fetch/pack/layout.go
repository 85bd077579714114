package pack

import (
	"bufio"
	"cmp"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path"
	"slices"
	"strings"

	"github.com/modelfs/modelfs/prefetch"
)

// Span is a byte range of a file.
type Span struct{ Off, Len int64 }

// Layout is what the encoder knows of a file's content.
type Layout struct {
	// Float16 are the ranges holding 16-bit floats (bf16, fp16), sorted
	// and disjoint; elements start at each range's Off.
	Float16 []Span
}

// maxHeader bounds the safetensors or GGUF header DetectLayout reads, as
// the prefetch planner does.
const maxHeader = 100 << 20

// DetectLayout finds the 16-bit float tensors of a safetensors or GGUF
// file (by its name's extension); other files have an empty layout. The
// tensors' ranges come from the prefetch planner's parsers, which check
// every offset against the file; their dtypes are read here, as the
// planner has no use for them. An error means the layout is unknown: the
// file can still be packed, only without byte grouping.
func DetectLayout(name string, r io.ReaderAt, size int64) (Layout, error) {
	base := path.Base(name)
	gguf := strings.HasSuffix(base, ".gguf")
	if !gguf && !strings.HasSuffix(base, ".safetensors") {
		return Layout{}, nil
	}
	// Plan closes readers that are io.Closers: this one is the caller's.
	open := func() (io.ReaderAt, error) { return struct{ io.ReaderAt }{r}, nil }
	plan, err := prefetch.Plan([]prefetch.File{{Path: base, Size: size, Open: open}},
		prefetch.PlanOptions{SmallFile: 1, MaxHeader: maxHeader, Parallel: 1})
	if err != nil {
		return Layout{}, fmt.Errorf("pack: layout of %s: %w", name, err)
	}
	var hdrLen int64
	ranges := map[string]Span{}
	for _, rg := range plan {
		if rg.Tensor == "" {
			hdrLen = rg.Len
			continue
		}
		ranges[rg.Tensor] = Span{rg.Off, rg.Len}
	}
	var half map[string]bool
	if gguf {
		half, err = ggufHalfTensors(r, hdrLen)
	} else {
		half, err = safetensorsHalfTensors(r, hdrLen)
	}
	if err != nil {
		return Layout{}, fmt.Errorf("pack: layout of %s: %w", name, err)
	}
	var l Layout
	for name, sp := range ranges {
		if half[name] {
			l.Float16 = append(l.Float16, sp)
		}
	}
	slices.SortFunc(l.Float16, func(a, b Span) int { return cmp.Compare(a.Off, b.Off) })
	return l, nil
}

// safetensorsHalfTensors returns the names of the F16 and BF16 tensors of
// a safetensors file whose header (length prefix included) is hdrLen
// bytes, which the planner checked.
func safetensorsHalfTensors(r io.ReaderAt, hdrLen int64) (map[string]bool, error) {
	if hdrLen < 8 {
		return nil, errors.New("no safetensors header")
	}
	var raw map[string]json.RawMessage
	if err := json.NewDecoder(io.NewSectionReader(r, 8, hdrLen-8)).Decode(&raw); err != nil {
		return nil, fmt.Errorf("safetensors header: %w", err)
	}
	half := map[string]bool{}
	for name, v := range raw {
		var e struct {
			Dtype string `json:"dtype"`
		}
		// __metadata__ and anything else that is not a tensor entry has
		// no dtype, and is not a tensor the planner returned.
		if json.Unmarshal(v, &e) == nil && (e.Dtype == "BF16" || e.Dtype == "F16") {
			half[name] = true
		}
	}
	return half, nil
}

// GGUF value types whose size is fixed, and ggml's 16-bit float types.
var ggufScalar = map[uint32]int64{0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}

const (
	ggufString = 8
	ggufArray  = 9
	ggmlF16    = 1
	ggmlBF16   = 30
)

// ggufHalfTensors returns the names of the F16 and BF16 tensors of a GGUF
// file whose header is hdrLen bytes (the planner parsed and checked it;
// this walk only reads each tensor's type, and stays within hdrLen).
func ggufHalfTensors(r io.ReaderAt, hdrLen int64) (map[string]bool, error) {
	g := &ggufWalk{br: bufio.NewReaderSize(io.NewSectionReader(r, 0, hdrLen), 64<<10), left: hdrLen}
	g.skip(4 + 4) // magic, version
	nTensors, nKV := g.u64(), g.u64()
	for i := uint64(0); i < nKV && g.err == nil; i++ {
		g.skip(int64(g.u64())) // key
		g.value(g.u32(), 0)
	}
	half := map[string]bool{}
	for i := uint64(0); i < nTensors && g.err == nil; i++ {
		n := g.u64()
		if n > 64<<10 {
			return nil, fmt.Errorf("gguf: tensor name of %d bytes", n)
		}
		name := g.bytes(int64(n))
		dims := g.u32()
		if dims > 8 {
			return nil, fmt.Errorf("gguf: tensor %q has %d dims", name, dims)
		}
		g.skip(8 * int64(dims))
		typ := g.u32()
		g.skip(8) // offset
		if typ == ggmlF16 || typ == ggmlBF16 {
			half[string(name)] = true
		}
	}
	if g.err != nil {
		return nil, fmt.Errorf("gguf header: %w", g.err)
	}
	return half, nil
}

// ggufWalk reads a GGUF header's fields, remembering the first error.
type ggufWalk struct {
	br   *bufio.Reader
	left int64
	err  error
	buf  [8]byte
}

func (g *ggufWalk) bytes(n int64) []byte {
	if g.err == nil && (n < 0 || n > g.left) {
		g.err = io.ErrUnexpectedEOF
	}
	if g.err != nil {
		return nil
	}
	p := g.buf[:0]
	if n > int64(len(g.buf)) {
		p = make([]byte, n) // n ≤ left ≤ hdrLen, bounded by the planner
	}
	p = p[:n]
	if _, err := io.ReadFull(g.br, p); err != nil {
		g.err = err
		return nil
	}
	g.left -= n
	return p
}

func (g *ggufWalk) u32() uint32 {
	if b := g.bytes(4); b != nil {
		return binary.LittleEndian.Uint32(b)
	}
	return 0
}

func (g *ggufWalk) u64() uint64 {
	if b := g.bytes(8); b != nil {
		return binary.LittleEndian.Uint64(b)
	}
	return 0
}

func (g *ggufWalk) skip(n int64) {
	if g.err == nil && (n < 0 || n > g.left) {
		g.err = io.ErrUnexpectedEOF
	}
	if g.err != nil {
		return
	}
	if _, err := g.br.Discard(int(n)); err != nil {
		g.err = err
		return
	}
	g.left -= n
}

// value skips one metadata value of type typ.
func (g *ggufWalk) value(typ uint32, depth int) {
	if sz, ok := ggufScalar[typ]; ok {
		g.skip(sz)
		return
	}
	switch typ {
	case ggufString:
		g.skip(int64(g.u64()))
	case ggufArray:
		elem, count := g.u32(), g.u64()
		if g.err != nil {
			return
		}
		if sz, ok := ggufScalar[elem]; ok {
			if count > uint64(g.left) {
				g.err = io.ErrUnexpectedEOF
				return
			}
			g.skip(int64(count) * sz)
			return
		}
		if depth > 2 {
			g.err = errors.New("arrays nested too deep")
			return
		}
		for i := uint64(0); i < count && g.err == nil; i++ {
			g.value(elem, depth+1)
		}
	default:
		if g.err == nil {
			g.err = fmt.Errorf("unknown value type %d", typ)
		}
	}
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
