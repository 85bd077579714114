package loadorder

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/cespare/xxhash/v2"
	"github.com/klauspost/compress/zstd"
)

const profMiB int64 = 1 << 20

func profEntry(path string, off, n int64) Entry {
	return Entry{Path: path, Version: "v1", Off: off, Len: n}
}

func wantEntries(t *testing.T, got, want []Entry) {
	t.Helper()
	if !slices.Equal(got, want) {
		t.Fatalf("entries:\n got %v\nwant %v", got, want)
	}
}

// profRandomEntries makes n entries over a few files, some contiguous,
// some repeated ranges, some going backwards.
func profRandomEntries(n int) []Entry {
	es := make([]Entry, 0, n)
	seed := uint64(42)
	rnd := func() uint64 {
		seed ^= seed << 13
		seed ^= seed >> 7
		seed ^= seed << 17
		return seed
	}
	next := map[string]int64{}
	for i := range n {
		path := fmt.Sprintf("model-%05d-of-00008.safetensors", rnd()%8)
		off := next[path]
		switch rnd() % 4 {
		case 0:
			off = int64(rnd()%4096) * 8 * profMiB
		case 1:
			off += int64(rnd()%16) * 8 * profMiB
		}
		l := int64(1+rnd()%4) * 8 * profMiB
		if i%1000 == 999 {
			off, l = math.MaxInt64-1, 1 // extremes survive too
		}
		next[path] = (off + l) % (1 << 40)
		es = append(es, Entry{Path: path, Version: fmt.Sprintf("\"etag-%d\"", len(path)%3), Off: off, Len: l})
	}
	return es
}

func profBytes(t testing.TB, es []Entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := WriteProfile(&buf, es); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestProfileRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name       string
		entries    []Entry
		compressed bool
	}{
		{"empty", nil, false},
		{"small", []Entry{
			profEntry("config.json", 0, 8*profMiB),
			{Path: "model.safetensors", Version: "\"0123abcd\"", Off: 8 * profMiB, Len: 16 * profMiB},
			profEntry("config.json", 16*profMiB, 8*profMiB),
			{Path: "model.safetensors", Version: "\"0123abcd\"", Off: 0, Len: 8 * profMiB}, // backwards
			{Path: "", Version: "", Off: math.MaxInt64 - 1, Len: 1},
		}, false},
		{"large", profRandomEntries(100_000), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data := profBytes(t, tc.entries)
			if got := data[9]&1 != 0; got != tc.compressed {
				t.Fatalf("compressed = %v, want %v (%d bytes)", got, tc.compressed, len(data))
			}
			got, err := ReadProfile(bytes.NewReader(data))
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tc.entries) || (len(got) > 0 && !slices.Equal(got, tc.entries)) {
				t.Fatalf("round trip changed the entries (%d -> %d)", len(tc.entries), len(got))
			}
			if tc.compressed {
				t.Logf("%d entries: %d bytes (%.2f bytes/entry)", len(got), len(data), float64(len(data))/float64(len(got)))
			}
		})
	}
}

func TestWriteProfileRefusesWhatReadWouldReject(t *testing.T) {
	long := strings.Repeat("x", MaxProfileString+1)
	for _, e := range []Entry{
		{Path: "f", Off: -1, Len: 1},
		{Path: "f", Off: 0, Len: 0},
		{Path: "f", Off: 0, Len: -5},
		{Path: "f", Off: math.MaxInt64, Len: 1},
		{Path: long, Off: 0, Len: 1},
		{Path: "f", Version: long, Off: 0, Len: 1},
	} {
		if err := WriteProfile(&bytes.Buffer{}, []Entry{e}); err == nil {
			t.Errorf("WriteProfile(%.20v) = nil", e)
		}
	}
	if err := WriteProfile(&bytes.Buffer{}, make([]Entry, MaxProfileEntries+1)); err == nil {
		t.Error("WriteProfile accepted more than MaxProfileEntries")
	}
}

func TestFilterKeepsCurrentVersionsInOrder(t *testing.T) {
	es := []Entry{
		{Path: "a", Version: "1", Off: 0, Len: 1},
		{Path: "b", Version: "1", Off: 0, Len: 1},
		{Path: "c", Version: "1", Off: 0, Len: 1}, // gone
		{Path: "a", Version: "1", Off: 9, Len: 1},
		{Path: "b", Version: "0", Off: 5, Len: 1}, // older version
		{Path: "d", Version: "", Off: 0, Len: 1},  // empty version still must match
	}
	orig := slices.Clone(es)
	got := Filter(es, map[string]string{"a": "1", "b": "2", "d": ""})
	wantEntries(t, got, []Entry{es[0], es[3], es[5]})
	wantEntries(t, es, orig)
	got = Filter(es, map[string]string{"b": "1", "a": "1"})
	wantEntries(t, got, []Entry{es[0], es[1], es[3]})
	if got := Filter(es, nil); len(got) != 0 {
		t.Fatalf("Filter(nil map) = %v", got)
	}
}

// profFrame wraps a body in the header, optionally zstd-compressing it,
// and appends a valid checksum: malformed bodies get past the checksum.
func profFrame(version, flags byte, payload []byte) []byte {
	out := append([]byte("MFSPROF\n"), version, flags)
	out = append(out, payload...)
	return binary.LittleEndian.AppendUint64(out, xxhash.Sum64(out))
}

func profZstd(t testing.TB, body []byte) []byte {
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1))
	if err != nil {
		t.Fatal(err)
	}
	defer enc.Close()
	return enc.EncodeAll(body, nil)
}

// profBody builds a body from uvarints, varints (int64) and strings.
func profBody(parts ...any) []byte {
	var b []byte
	for _, p := range parts {
		switch p := p.(type) {
		case int:
			b = binary.AppendUvarint(b, uint64(p))
		case uint64:
			b = binary.AppendUvarint(b, p)
		case int64: // a signed (zigzag) varint
			b = binary.AppendVarint(b, p)
		case string:
			b = binary.AppendUvarint(b, uint64(len(p)))
			b = append(b, p...)
		case []byte:
			b = append(b, p...)
		}
	}
	return b
}

func TestReadProfileRejectsMalformedInput(t *testing.T) {
	valid := profBytes(t, []Entry{profEntry("a", 0, 1), profEntry("b", 4, 4)})
	for _, tc := range []struct {
		name, data, want string
	}{
		{"empty", "", "empty"},
		{"bad magic", "GIF89a\x00\x00" + string(valid[8:]), "bad magic"},
		{"other file", "{\"entries\": []}", "bad magic"},
		{"magic prefix only", "MFSPR", "truncated"},
		{"no version", "MFSPROF\n", "truncated"},
		{"unknown version", "MFSPROF\n\x02\x00whatever comes next", "version 2"},
		{"version 0", string(profFrame(0, 0, profBody(0, 0))), "version 0"},
		{"no checksum", "MFSPROF\n\x01\x00\x00\x00", "truncated"},
		{"checksum", string(append(valid[:len(valid)-1:len(valid)-1], valid[len(valid)-1]^1)), "checksum"},
		{"truncated file", string(valid[:len(valid)-3]), "checksum"},
		{"unknown flags", string(profFrame(1, 2, profBody(0, 0))), "flags"},
		{"empty body", string(profFrame(1, 0, nil)), "truncated body"},
		{"counts past the end", string(profFrame(1, 0, profBody(1, "a", "v", 1, 0))), "entry count 1"},
		{"truncated body", string(profFrame(1, 0, profBody(1, "a", "v", 2, 0, int64(1<<40), 1, 0))), "truncated body"},
		{"huge pair count", string(profFrame(1, 0, profBody(uint64(1)<<62))), "pair count"},
		{"pair count past the end", string(profFrame(1, 0, profBody(1000, "a", "b"))), "pair count"},
		{"huge entry count", string(profFrame(1, 0, profBody(0, uint64(1)<<40))), "entry count"},
		{"entry count past the end", string(profFrame(1, 0, profBody(1, "a", "b", 100, 0, int64(0), 1))), "entry count"},
		{"varint overflow", string(profFrame(1, 0, profBody(0, []byte("\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01")))), "overflow"},
		{"string past the end", string(profFrame(1, 0, profBody(1, []byte{0x80, 0x10}, "abc"))), "past the end"},
		{"string too long", string(profFrame(1, 0, profBody(1, strings.Repeat("p", MaxProfileString+1), "v", 0))), "length 4097"},
		{"pair out of range", string(profFrame(1, 0, profBody(1, "a", "v", 1, 1, int64(0), 1))), "out of range"},
		{"negative offset", string(profFrame(1, 0, profBody(1, "a", "v", 1, 0, int64(-1), 1))), "negative offset"},
		{"offset overflow", string(profFrame(1, 0, profBody(1, "a", "v", 2, 0, int64(math.MaxInt64-1), 1, 0, int64(1), 1))), "overflows"},
		{"length overflow", string(profFrame(1, 0, profBody(1, "a", "v", 1, 0, int64(10), uint64(math.MaxInt64)))), "overflows"},
		{"length past int64", string(profFrame(1, 0, profBody(1, "a", "v", 1, 0, int64(0), uint64(math.MaxUint64)))), "overflows"},
		{"zero length", string(profFrame(1, 0, profBody(1, "a", "v", 1, 0, int64(0), 0))), "zero length"},
		{"trailing bytes", string(profFrame(1, 0, profBody(0, 0, 0))), "trailing"},
		{"not zstd", string(profFrame(1, 1, []byte("this is not a zstd frame"))), "magic"},
		{"zstd truncated body", string(profFrame(1, 1, profZstd(t, profBody(1, "a", "v", 2, 0, int64(0))))), "truncated body"},
		{"zstd trailing bytes", string(profFrame(1, 1, profZstd(t, profBody(0, 0, 7)))), "trailing"},
		{"zstd cut frame", string(profFrame(1, 1, profZstd(t, bytes.Repeat(profBody(0, 0), 1000))[:20])), "trailing"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			es, err := ReadProfile(strings.NewReader(tc.data))
			if err == nil {
				t.Fatalf("accepted: %v", es)
			}
			if !errors.Is(err, ErrInvalidProfile) {
				t.Errorf("error does not wrap ErrInvalidProfile: %v", err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not mention %q", err, tc.want)
			}
		})
	}
}

func TestReadProfileRejectsEveryPrefixAndBitFlip(t *testing.T) {
	small := profBytes(t, []Entry{profEntry("a", 0, 8*profMiB), profEntry("b", 8*profMiB, 8*profMiB)})
	large := profBytes(t, profRandomEntries(500))
	if large[9]&1 == 0 {
		t.Fatal("500 entries were not compressed")
	}
	for _, data := range [][]byte{small, large} {
		for n := range len(data) {
			if _, err := ReadProfile(bytes.NewReader(data[:n])); err == nil {
				t.Fatalf("accepted the first %d of %d bytes", n, len(data))
			}
		}
		bad := slices.Clone(data)
		for i := range len(bad) * 8 {
			bad[i/8] ^= 1 << (i % 8)
			if _, err := ReadProfile(bytes.NewReader(bad)); err == nil {
				t.Fatalf("accepted a flip of bit %d of byte %d of %d", i%8, i/8, len(bad))
			}
			bad[i/8] ^= 1 << (i % 8)
		}
	}
}

func TestReadProfileReadsNoMoreThanTheCap(t *testing.T) {
	r := &profCountingReader{}
	_, err := ReadProfile(r)
	if err == nil || !errors.Is(err, ErrInvalidProfile) || !strings.Contains(err.Error(), "over") {
		t.Fatalf("endless input: %v", err)
	}
	if limit := int64(MaxProfileBody + 18 + 1); r.n > limit {
		t.Fatalf("read %d bytes, more than %d", r.n, limit)
	}
}

// profCountingReader is an endless profile: the magic, then zeros.
type profCountingReader struct{ n int64 }

func (r *profCountingReader) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = 0
		if at := r.n + int64(i); at < 8 {
			p[i] = "MFSPROF\n"[at]
		} else if at == 8 {
			p[i] = 1
		}
	}
	r.n += int64(len(p))
	return len(p), nil
}

// profAllocs returns the bytes allocated while running f.
func profAllocs(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// profZstdStream compresses a valid-looking prefix followed by n repeats
// of fill as a stream, so the frame does not declare its size.
func profZstdStream(t *testing.T, prefix, fill []byte, n int) []byte {
	var buf bytes.Buffer
	enc, err := zstd.NewWriter(&buf, zstd.WithEncoderConcurrency(1), zstd.WithWindowSize(1<<20))
	if err != nil {
		t.Fatal(err)
	}
	enc.Write(prefix)
	chunk := bytes.Repeat(fill, max(1, (1<<20)/len(fill)))
	for written := 0; written < n*len(fill); written += len(chunk) {
		enc.Write(chunk)
	}
	if err := enc.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestReadProfileZstdBombs(t *testing.T) {
	pair := profBody(strings.Repeat("p", MaxProfileString), strings.Repeat("v", MaxProfileString))
	for _, tc := range []struct {
		name     string
		payload  func() []byte
		want     string
		maxAlloc uint64
	}{
		// 128 MiB of zeros after an empty profile: rejected at the first
		// byte past the end, without decompressing the rest.
		{"zeros after the body", func() []byte { return profZstdStream(t, profBody(0, 0), []byte{0}, 128<<20) }, "trailing", 16 << 20},
		// The same as one frame that declares its 128 MiB size.
		{"declared size", func() []byte { return profZstd(t, make([]byte, 128<<20)) }, "trailing", 16 << 20},
		// Pairs of the longest strings, 128 MiB of them: parsed until the
		// body passes 64 MiB, holding no more than that.
		{"body past the cap", func() []byte {
			return profZstdStream(t, profBody(MaxProfileEntries), pair, (128<<20)/len(pair))
		}, "over 67108864", 96 << 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data := profFrame(1, 1, tc.payload())
			if len(data) > 1<<20 {
				t.Fatalf("bomb is %d bytes, not tiny", len(data))
			}
			var err error
			alloc := profAllocs(func() { _, err = ReadProfile(bytes.NewReader(data)) })
			if err == nil || !errors.Is(err, ErrInvalidProfile) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("%d-byte bomb: error %v, want one mentioning %q", len(data), err, tc.want)
			}
			if alloc > tc.maxAlloc {
				t.Fatalf("%d-byte bomb allocated %d MiB, more than %d MiB", len(data), alloc>>20, tc.maxAlloc>>20)
			}
			t.Logf("%d-byte bomb: %d KiB allocated: %v", len(data), alloc>>10, err)
		})
	}
}

func FuzzReadProfile(f *testing.F) {
	f.Add(profBytes(f, nil))
	f.Add(profBytes(f, []Entry{profEntry("a", 0, 1), {Path: "b", Version: "x", Off: 1 << 40, Len: 4096}, profEntry("a", 1, 7)}))
	f.Add(profBytes(f, profRandomEntries(300))) // compressed
	f.Add([]byte("MFSPROF\n\x02\x00"))
	f.Add([]byte("MFSPROF\n"))
	f.Add(profFrame(1, 0, profBody(1, "a", "v", 2, 0, int64(math.MaxInt64-1), 1, 0, int64(1), 1)))
	f.Add(profFrame(1, 0, profBody(1, "a", "v", 1, 0, int64(-1), 1)))
	f.Add(profFrame(1, 0, profBody(uint64(1)<<62)))
	f.Add(profFrame(1, 1, profZstd(f, profBody(1, "a", "v", 1, 0, int64(5), 3))))
	f.Add(profFrame(1, 1, profZstd(f, profBody(0, 0, 7))))
	f.Fuzz(func(t *testing.T, data []byte) {
		es, err := ReadProfile(bytes.NewReader(data))
		if err != nil {
			if es != nil {
				t.Fatalf("entries %v with error %v", es, err)
			}
			return
		}
		if len(es) > MaxProfileEntries {
			t.Fatalf("%d entries", len(es))
		}
		for _, e := range es {
			if e.Off < 0 || e.Len <= 0 || e.Off > math.MaxInt64-e.Len {
				t.Fatalf("accepted a bad range %+v", e)
			}
			if len(e.Path) > MaxProfileString || len(e.Version) > MaxProfileString {
				t.Fatalf("accepted a long string (%d, %d bytes)", len(e.Path), len(e.Version))
			}
		}
		// What was accepted writes and reads back the same.
		again, err := ReadProfile(bytes.NewReader(profBytes(t, es)))
		if err != nil {
			t.Fatalf("rewritten profile rejected: %v", err)
		}
		if len(again) != len(es) || (len(es) > 0 && !slices.Equal(again, es)) {
			t.Fatal("rewritten profile reads back different entries")
		}
	})
}

// BenchmarkRecorderRecordSeen is the hot path: reads of blocks already
// recorded, from parallel readers of a few files.
// BenchmarkRecorderRecordNew records a fresh sequential load.
