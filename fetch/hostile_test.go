package fetch

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// Tests of what a broken or hostile remote can send: sizes, lengths and
// versions that must not reach a mount.

func TestUsableBoundsSizes(t *testing.T) {
	mod := time.Unix(1, 0)
	objs := []Object{
		{Key: "k-empty", Size: 0, ModTime: mod},
		{Key: "k-max", Size: MaxObjectSize, ModTime: mod},
		{Key: "k-over", Size: MaxObjectSize + 1, ModTime: mod},
		{Key: "k-huge", Size: 1 << 62, ModTime: mod},
		{Key: "k-neg", Size: -1, ModTime: mod},
		{Key: "k-min", Size: -1 << 63, ModTime: mod},
	}
	kept, rejected := Usable(objs)
	if got := keysOf(kept); !slices.Equal(got, []string{"k-empty", "k-max"}) {
		t.Errorf("kept %q, want empty and max", got)
	}
	var keys []string
	for _, r := range rejected {
		keys = append(keys, r.Key)
		if !errors.Is(r.Err, ErrBadSize) || strings.Contains(r.Err.Error(), r.Key) {
			t.Errorf("%s: %v, want ErrBadSize not repeating the key", r.Key, r.Err)
		}
	}
	if !slices.Equal(keys, []string{"k-over", "k-huge", "k-neg", "k-min"}) {
		t.Errorf("rejected %q", keys)
	}
	err := UsableError(rejected)
	if !strings.Contains(err.Error(), `"k-over"`) || !strings.Contains(err.Error(), "1 more") {
		t.Errorf("UsableError = %v", err)
	}
}

// A manifest or a server can claim any size: out-of-range ones are listed
// for Usable to refuse, and never fail the listing of the other files.
func TestHTTPListingSizesOutOfRange(t *testing.T) {
	s := newMemServer(t)
	s.put("ok.bin", []byte("fine"))
	s.put("huge.bin", []byte("tiny"))
	s.put("liar.bin", []byte("tiny"))
	s.put("nolen.bin", []byte("tiny"))
	s.put("max.bin", []byte("tiny"))
	s.put("modelfs.json", fmt.Appendf(nil, `{"files": [
		{"path": "ok.bin", "size": 4},
		{"path": "huge.bin", "size": %d},
		{"path": "neg.bin", "size": -5},
		{"path": "over.bin", "size": %d},
		{"path": "overflow.bin", "size": 99999999999999999999},
		{"path": "fraction.bin", "size": 1.5},
		{"path": "max.bin"},
		{"path": "liar.bin"},
		{"path": "nolen.bin"}
	]}`, int64(1)<<62, MaxObjectSize+1))
	s.setHook(func(w http.ResponseWriter, r *http.Request) bool {
		switch {
		case r.URL.Path == "/liar.bin" && r.Method == http.MethodHead:
			w.Header().Set("ETag", `"liar"`)
			w.Header().Set("Content-Length", strconv.FormatInt(1<<62, 10))
		case r.URL.Path == "/max.bin" && r.Method == http.MethodHead:
			w.Header().Set("ETag", `"max"`)
			w.Header().Set("Content-Length", strconv.FormatInt(MaxObjectSize, 10))
		case r.URL.Path == "/nolen.bin":
			// Neither HEAD nor the one-byte GET tells a length.
			w.Header().Set("ETag", `"nolen"`)
			w.Header().Set("Transfer-Encoding", "chunked")
			w.WriteHeader(http.StatusOK)
			if r.Method == http.MethodGet {
				w.Write([]byte("tiny"))
			}
		default:
			return false
		}
		return true
	})
	objs, err := newTestHTTP(t, s.URL+"/", "").List(context.Background())
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	kept, rejected := Usable(objs)
	if got := keysOf(kept); !slices.Equal(got, []string{"max.bin", "ok.bin"}) {
		t.Errorf("usable %q, want max.bin and ok.bin", got)
	}
	var keys []string
	for _, r := range rejected {
		keys = append(keys, r.Key)
		if !errors.Is(r.Err, ErrBadSize) {
			t.Errorf("%s: %v, want ErrBadSize", r.Key, r.Err)
		}
	}
	slices.Sort(keys)
	if want := []string{"fraction.bin", "huge.bin", "liar.bin", "neg.bin", "nolen.bin", "over.bin", "overflow.bin"}; !slices.Equal(keys, want) {
		t.Errorf("rejected %q, want %q", keys, want)
	}
	for _, r := range s.requests() {
		if r == "HEAD huge.bin" || r == "HEAD neg.bin" || r == "HEAD over.bin" || r == "HEAD overflow.bin" || r == "HEAD fraction.bin" {
			t.Errorf("probed %q although the manifest's size alone refuses it", r)
		}
	}
}

// A 206 whose Content-Length is not the length of the range asked for is a
// confused server or proxy: retried, then an error, never bytes.
func TestHTTPRangeReplyLengthChecked(t *testing.T) {
	s := newMemServer(t)
	data := testData(1000)
	s.put("w.bin", data)
	h := newTestHTTP(t, s.URL+"/w.bin", "")
	obj := mustList(t, h)[0]
	var bad atomic.Int32
	s.setHook(func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method != http.MethodGet {
			return false
		}
		bad.Add(1)
		w.Header().Set("ETag", obj.ETag)
		w.Header().Set("Content-Range", "bytes 100-109/1000")
		w.Header().Set("Content-Length", "20")
		w.WriteHeader(http.StatusPartialContent)
		w.Write(data[100:120])
		return true
	})
	n, err := h.ReadAt(context.Background(), obj, make([]byte, 10), 100)
	if err == nil || n != 0 || !strings.Contains(err.Error(), "Content-Length") {
		t.Fatalf("ReadAt = %d, %v; want an error naming Content-Length", n, err)
	}
	if got := bad.Load(); got != int32(testRetry().MaxAttempts) {
		t.Errorf("%d GETs, want the retry budget (%d)", got, testRetry().MaxAttempts)
	}
}

func TestUsableRefusesUnpinned(t *testing.T) {
	mod := time.Unix(1, 0)
	for _, c := range []struct {
		obj Object
		ok  bool
	}{
		{Object{Key: "etag", ETag: `"x"`}, true},
		{Object{Key: "version", VersionID: "v1"}, true},
		{Object{Key: "mtime", ModTime: mod}, true},
		{Object{Key: "weak+mtime", ETag: `W/"x"`, ModTime: mod}, true},
		{Object{Key: "weak", ETag: `W/"x"`}, false},
		{Object{Key: "none"}, false},
	} {
		err := CheckObject(c.obj)
		if c.ok != (err == nil) || (err != nil && !errors.Is(err, ErrUnpinned)) {
			t.Errorf("%s: %v, want ok=%v or ErrUnpinned", c.obj.Key, err, c.ok)
		}
	}
}

// A server that sends neither ETag nor Last-Modified gives nothing to pin
// a read to: the file is listed for Usable to refuse, and a read of it is
// refused without a request.
func TestHTTPWithoutValidators(t *testing.T) {
	s := newMemServer(t)
	s.put("pinned.bin", []byte("fine"))
	s.put("bare.bin", []byte("no validators"))
	s.files["bare.bin"].etag, s.files["bare.bin"].mod = "", time.Time{}
	s.put("weak.bin", []byte("weak only"))
	s.files["weak.bin"].etag, s.files["weak.bin"].mod = `W/"w"`, time.Time{}
	s.put("modelfs.json", []byte(`["pinned.bin", "bare.bin", "weak.bin"]`))
	h := newTestHTTP(t, s.URL+"/", "")
	objs := mustList(t, h)
	kept, rejected := Usable(objs)
	if got := keysOf(kept); !slices.Equal(got, []string{"pinned.bin"}) {
		t.Errorf("usable %q, want pinned.bin", got)
	}
	if len(rejected) != 2 {
		t.Fatalf("rejected %+v, want bare.bin and weak.bin", rejected)
	}
	for _, r := range rejected {
		if !errors.Is(r.Err, ErrUnpinned) {
			t.Errorf("%s: %v, want ErrUnpinned", r.Key, r.Err)
		}
	}
	before := len(s.requests())
	for _, o := range objs {
		if o.Key == "pinned.bin" {
			continue
		}
		if _, err := h.ReadAt(context.Background(), o, make([]byte, 4), 0); !errors.Is(err, ErrUnpinned) {
			t.Errorf("ReadAt(%s) err = %v, want ErrUnpinned", o.Key, err)
		}
	}
	if after := len(s.requests()); after != before {
		t.Errorf("%d requests for reads that cannot be pinned", after-before)
	}
}

// Byte counts in Content-Range are digits only: strconv alone would take
// a sign, and a header is no place for one.
func TestParseHTTPContentRangeStrict(t *testing.T) {
	for _, c := range []struct {
		in                string
		start, end, total int64
	}{
		{"bytes 0-9/100", 0, 9, 100},
		{"bytes 0-9/*", 0, 9, -1},
		{"bytes */0", -1, -1, 0},
		{"bytes 007-009/010", 7, 9, 10},
		{"bytes 9223372036854775806-9223372036854775806/9223372036854775807", 1<<63 - 2, 1<<63 - 2, 1<<63 - 1},
	} {
		start, end, total, err := parseHTTPContentRange(c.in)
		if err != nil || start != c.start || end != c.end || total != c.total {
			t.Errorf("%q = %d, %d, %d, %v; want %d, %d, %d", c.in, start, end, total, err, c.start, c.end, c.total)
		}
	}
	for _, in := range []string{
		"bytes +0-9/100", "bytes 0-+9/100", "bytes 0-9/+100", "bytes -0-9/100", "bytes 0--9/100",
		"bytes 0-9/-100", "bytes */-1", "bytes */+1", "bytes 0-9/99999999999999999999",
		"bytes 0-99999999999999999999/*", "bytes 0x0-9/100", "bytes 0-9/1e3", "bytes 0-9/100/1",
		"bytes  0-9/100", "bytes 0 -9/100", "bytes 0-9 /100", "bytes 5-4/100", "bytes 0-100/100",
		"bytes 0_0-9/100", "bytes 0-9/１００", "bytes */*", "bytes 0-9", "items 0-9/100", "",
	} {
		if start, end, total, err := parseHTTPContentRange(in); err == nil {
			t.Errorf("%q accepted as %d, %d, %d", in, start, end, total)
		}
	}
}

// rawHTTPServer answers every request on a loopback connection with the
// bytes of reply, whatever they say, and closes it.
func rawHTTPServer(t *testing.T, reply string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				if _, err := http.ReadRequest(bufio.NewReader(c)); err == nil {
					io.WriteString(c, reply)
				}
			}()
		}
	}()
	return "http://" + ln.Addr().String()
}

// A HEAD reply's Content-Length is never taken with a sign, a base prefix
// or past int64: such a reply is an error, never a size. The largest
// well-formed one is a size, for Usable to refuse.
func TestHTTPContentLengthStrict(t *testing.T) {
	for _, cl := range []string{"-5", "+5", "0x10", "5e3", "99999999999999999999", "5, 6", " "} {
		t.Run(cl, func(t *testing.T) {
			u := rawHTTPServer(t, "HTTP/1.1 200 OK\r\nETag: \"x\"\r\nContent-Length: "+cl+"\r\nConnection: close\r\n\r\n")
			h := newTestHTTP(t, u+"/f.bin", "")
			if obj, err := h.Stat(context.Background(), "f.bin"); err == nil {
				t.Fatalf("Content-Length %q taken as size %d", cl, obj.Size)
			}
		})
	}
	u := rawHTTPServer(t, "HTTP/1.1 200 OK\r\nETag: \"x\"\r\nContent-Length: 9223372036854775807\r\nConnection: close\r\n\r\n")
	h := newTestHTTP(t, u+"/f.bin", "")
	obj, err := h.Stat(context.Background(), "f.bin")
	if err != nil || obj.Size != 1<<63-1 {
		t.Fatalf("Stat = %+v, %v", obj, err)
	}
	if err := CheckObject(obj); !errors.Is(err, ErrBadSize) {
		t.Fatalf("CheckObject = %v, want ErrBadSize", err)
	}
}

// Whatever a server puts in Content-Range, what is accepted is plain
// decimal counts, and a range that lies within the total.
func FuzzParseHTTPContentRange(f *testing.F) {
	for _, s := range []string{"bytes 0-9/100", "bytes */0", "bytes 0-9/*", "bytes +0-9/100", "bytes 0-9/-1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		start, end, total, err := parseHTTPContentRange(s)
		if err != nil {
			return
		}
		if rest := strings.TrimPrefix(s, "bytes "); strings.Trim(rest, "0123456789-/*") != "" {
			t.Fatalf("%q accepted with more than digits, '-', '/' and '*'", s)
		}
		switch {
		case start == -1 && end == -1:
			if total < 0 {
				t.Fatalf("%q: unsatisfied form with no total", s)
			}
		case start < 0 || end < start || (total >= 0 && end >= total):
			t.Fatalf("%q = %d, %d, %d", s, start, end, total)
		}
	})
}

// A weak ETag may stay the same while the bytes change, so a file pinned
// by Last-Modified is checked by date on every reply, even one that
// repeats the weak tag, and a reply without a date is refused.
func TestHTTPWeakETagCheckedByDate(t *testing.T) {
	for _, mode := range []string{"new date", "no date"} {
		t.Run(mode, func(t *testing.T) {
			s := newMemServer(t)
			data := testData(3000)
			s.put("w.bin", data)
			s.files["w.bin"].etag = `W/"same"`
			h := newTestHTTP(t, s.URL+"/w.bin", "")
			obj := mustList(t, h)[0]
			s.setHook(func(w http.ResponseWriter, r *http.Request) bool {
				if r.Method != http.MethodGet {
					return false
				}
				// A naive server: preconditions ignored, new bytes.
				r.Header.Del("If-Unmodified-Since")
				w.Header().Set("ETag", `W/"same"`)
				mod := testMod.Add(time.Hour)
				if mode == "no date" {
					mod = time.Time{}
				}
				http.ServeContent(w, r, "", mod, strings.NewReader(strings.Repeat("x", 3000)))
				return true
			})
			n, err := h.ReadAt(context.Background(), obj, make([]byte, 10), 100)
			if err == nil || n != 0 || !(errors.Is(err, ErrChanged) || errors.Is(err, ErrUnpinned)) {
				t.Fatalf("ReadAt = %d, %v; want ErrChanged or ErrUnpinned", n, err)
			}
		})
	}
}

// A manifest naming more files than a listing may hold is refused before
// any of them is probed.
func TestHTTPManifestTooManyFiles(t *testing.T) {
	var names []string
	weights := map[string]string{}
	for i := range MaxListedObjects + 1 {
		names = append(names, fmt.Sprintf("f%d", i))
		weights[fmt.Sprintf("t%d", i)] = fmt.Sprintf("f%d", i)
	}
	list, _ := json.Marshal(names)
	index, _ := json.Marshal(map[string]any{"weight_map": weights})
	for name, body := range map[string][]byte{httpManifest: list, httpHFIndex: index} {
		t.Run(name, func(t *testing.T) {
			s := newMemServer(t)
			s.put(name, body)
			_, err := newTestHTTP(t, s.URL+"/", "").List(context.Background())
			if err == nil || !strings.Contains(err.Error(), "more than") {
				t.Fatalf("err = %v, want one saying the manifest names too many files", err)
			}
			for _, r := range s.requests() {
				if strings.HasPrefix(r, "HEAD ") {
					t.Fatalf("probed %q", r)
				}
			}
		})
	}
}

// An ETag can be as long as a server's headers allow; one past any real
// store's is refused, and what a listing keeps of it is bounded.
func TestHTTPLongETagRefused(t *testing.T) {
	s := newMemServer(t)
	s.put("ok.bin", []byte("fine"))
	s.put("long.bin", []byte("long tag"))
	s.files["long.bin"].etag = `"` + strings.Repeat("e", 512<<10) + `"`
	s.put("modelfs.json", []byte(`["ok.bin", "long.bin"]`))
	objs := mustList(t, newTestHTTP(t, s.URL+"/", ""))
	for _, o := range objs {
		if len(o.ETag) > maxVersionLen+1 {
			t.Errorf("%s: kept a %d-byte ETag", o.Key, len(o.ETag))
		}
	}
	kept, rejected := Usable(objs)
	if len(kept) != 1 || kept[0].Key != "ok.bin" || len(rejected) != 1 || !errors.Is(rejected[0].Err, ErrUnpinned) {
		t.Fatalf("kept %q, rejected %+v; want ok.bin, and long.bin refused as unpinned", keysOf(kept), rejected)
	}
}
