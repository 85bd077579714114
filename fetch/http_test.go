package fetch

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// memServer serves in-memory files through http.ServeContent, which does
// Range, If-Match and If-Unmodified-Since the way real servers do.
type memServer struct {
	*httptest.Server
	token string // required as a Bearer token when set

	mu    sync.Mutex
	files map[string]*memFile // by URL path without the leading '/'
	// hook, when set, may answer a request itself (returning true).
	hook func(w http.ResponseWriter, r *http.Request) bool
	reqs []string // "METHOD path" of every request
}

type memFile struct {
	data []byte
	etag string
	mod  time.Time
}

var testMod = time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)

func newMemServer(t *testing.T) *memServer {
	t.Helper()
	s := &memServer{files: map[string]*memFile{}}
	s.Server = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.Close)
	return s
}

func (s *memServer) put(name string, data []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	etag := fmt.Sprintf(`"%x-%d"`, len(data), len(s.files)+int(time.Now().UnixNano()%1000000))
	s.files[name] = &memFile{data: data, etag: etag, mod: testMod}
}

func (s *memServer) setHook(h func(w http.ResponseWriter, r *http.Request) bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.hook = h
}

func (s *memServer) requests() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.reqs)
}

func (s *memServer) serve(w http.ResponseWriter, r *http.Request) {
	if s.token != "" && r.Header.Get("Authorization") != "Bearer "+s.token {
		http.Error(w, "bad token", http.StatusUnauthorized)
		return
	}
	name := strings.TrimPrefix(r.URL.Path, "/")
	s.mu.Lock()
	s.reqs = append(s.reqs, r.Method+" "+name)
	hook, f := s.hook, s.files[name]
	s.mu.Unlock()
	if hook != nil && hook(w, r) {
		return
	}
	if f == nil {
		http.NotFound(w, r)
		return
	}
	if f.etag != "" {
		w.Header().Set("ETag", f.etag)
	}
	http.ServeContent(w, r, name, f.mod, bytes.NewReader(f.data))
}

func testRetry() RetryOptions {
	return RetryOptions{MaxAttempts: 3, BaseDelay: time.Microsecond, MaxDelay: time.Millisecond, AttemptTimeout: 10 * time.Second}
}

func newTestHTTP(t *testing.T, u, token string) *HTTP {
	t.Helper()
	h, err := NewHTTP(HTTPOptions{URL: u, Token: token, Retry: testRetry()})
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func testData(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + i/251)
	}
	return b
}

func keysOf(objs []Object) []string {
	var ks []string
	for _, o := range objs {
		ks = append(ks, o.Key)
	}
	return ks
}

func mustList(t *testing.T, h *HTTP) []Object {
	t.Helper()
	objs, err := h.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return objs
}

// checkRead reads [off, off+n) and compares with want's bytes.
func checkRead(t *testing.T, src Source, obj Object, want []byte, off int64, n int) {
	t.Helper()
	p := make([]byte, n)
	got, err := src.ReadAt(context.Background(), obj, p, off)
	wantN := max(0, min(int64(n), int64(len(want))-off))
	wantEOF := off+int64(n) > int64(len(want))
	if int64(got) != wantN || (err == io.EOF) != wantEOF || (err != nil && err != io.EOF) {
		t.Fatalf("ReadAt(%s, off %d, len %d) = %d, %v; want %d, eof=%v", obj.Key, off, n, got, err, wantN, wantEOF)
	}
	if got > 0 && !bytes.Equal(p[:got], want[off:off+int64(got)]) {
		t.Fatalf("ReadAt(%s, off %d, len %d): wrong bytes", obj.Key, off, n)
	}
}

func TestHTTPSingleFile(t *testing.T) {
	s := newMemServer(t)
	data := testData(100_000)
	s.put("models/my model.bin", data)
	h := newTestHTTP(t, s.URL+"/models/my%20model.bin?X-Sig=SIGNATURE123", "")
	if strings.Contains(h.String(), "SIGNATURE123") || h.String() != s.URL+"/models/my%20model.bin" {
		t.Errorf("String() = %q", h.String())
	}
	objs := mustList(t, h)
	if len(objs) != 1 || objs[0].Key != "my model.bin" || objs[0].Size != int64(len(data)) ||
		objs[0].ETag == "" || !objs[0].ModTime.Equal(testMod) {
		t.Fatalf("List = %+v", objs)
	}
	obj := objs[0]
	for _, r := range [][2]int64{{0, 100_000}, {0, 1}, {99_999, 1}, {12_345, 54_321}, {99_000, 4096}, {100_000, 10}} {
		checkRead(t, h, obj, data, r[0], int(r[1]))
	}
	if _, err := h.Stat(context.Background(), "other.bin"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Stat(other key) err = %v, want ErrNotFound", err)
	}

	// A missing file: no signature in the error either.
	h2 := newTestHTTP(t, s.URL+"/models/missing.bin?X-Sig=SIGNATURE123", "")
	_, err := h2.List(context.Background())
	if !errors.Is(err, ErrNotFound) || strings.Contains(err.Error(), "SIGNATURE123") {
		t.Errorf("List(missing) err = %v", err)
	}
}

// A server that refuses HEAD (as presigned GET URLs do) or sends it without
// a length is probed with a one-byte range GET instead.
func TestHTTPHeadFallback(t *testing.T) {
	for _, mode := range []string{"405", "403", "nolength"} {
		t.Run(mode, func(t *testing.T) {
			s := newMemServer(t)
			data := testData(5000)
			s.put("f.bin", data)
			s.setHook(func(w http.ResponseWriter, r *http.Request) bool {
				if r.Method != http.MethodHead {
					return false
				}
				switch mode {
				case "405":
					w.WriteHeader(http.StatusMethodNotAllowed)
				case "403":
					w.WriteHeader(http.StatusForbidden)
				default:
					w.Header().Set("Transfer-Encoding", "chunked")
					w.WriteHeader(http.StatusOK)
				}
				return true
			})
			h := newTestHTTP(t, s.URL+"/f.bin", "")
			objs := mustList(t, h)
			if len(objs) != 1 || objs[0].Size != 5000 || objs[0].ETag == "" {
				t.Fatalf("List = %+v", objs)
			}
			if !slices.Contains(s.requests(), "GET f.bin") {
				t.Errorf("no range GET probe in %q", s.requests())
			}
			checkRead(t, h, objs[0], data, 4000, 2000)
		})
	}
}

func TestHTTPModelfsManifest(t *testing.T) {
	files := map[string][]byte{
		"config.json":           []byte(`{"a":1}`),
		"weights/part 1#?.bin":  testData(3000),
		"weights/part-2.bin":    testData(7000),
		"tokenizer/vocab%2F.tx": []byte("vocab"),
	}
	array, _ := json.Marshal([]string{"weights/part-2.bin", "config.json", "weights/part 1#?.bin", "tokenizer/vocab%2F.tx"})
	object := []byte(`{"files": [
		{"path": "weights/part-2.bin", "size": 7000},
		{"path": "config.json"},
		{"path": "weights/part 1#?.bin", "size": 3000},
		{"path": "tokenizer/vocab%2F.tx"}
	]}`)
	for name, manifest := range map[string][]byte{"array": array, "object": object} {
		t.Run(name, func(t *testing.T) {
			s := newMemServer(t)
			for k, v := range files {
				s.put("repo/"+k, v)
			}
			s.put("repo/modelfs.json", manifest)
			s.put("repo/unlisted.bin", []byte("not in the manifest"))
			h := newTestHTTP(t, s.URL+"/repo/", "")
			objs := mustList(t, h)
			want := []string{"config.json", "tokenizer/vocab%2F.tx", "weights/part 1#?.bin", "weights/part-2.bin"}
			if got := keysOf(objs); !slices.Equal(got, want) {
				t.Fatalf("keys = %q, want %q", got, want)
			}
			for _, o := range objs {
				if o.Size != int64(len(files[o.Key])) || o.ETag == "" {
					t.Errorf("%s: size %d etag %q, want size %d", o.Key, o.Size, o.ETag, len(files[o.Key]))
				}
				checkRead(t, h, o, files[o.Key], 1, 2500)
			}
		})
	}
}

func TestHTTPManifestSizeMismatch(t *testing.T) {
	s := newMemServer(t)
	s.put("modelfs.json", []byte(`{"files":[{"path":"a.bin","size":10}]}`))
	s.put("a.bin", testData(11))
	_, err := newTestHTTP(t, s.URL+"/", "").List(context.Background())
	if !errors.Is(err, ErrChanged) || !strings.Contains(err.Error(), "a.bin") {
		t.Fatalf("err = %v, want ErrChanged naming a.bin", err)
	}
}

func TestHTTPHFIndex(t *testing.T) {
	s := newMemServer(t)
	index := []byte(`{
		"metadata": {"total_size": 5000},
		"weight_map": {
			"model.embed.weight": "model-00001-of-00002.safetensors",
			"model.layer.0.weight": "model-00001-of-00002.safetensors",
			"lm_head.weight": "model-00002-of-00002.safetensors"
		}
	}`)
	s.put("hf/model.safetensors.index.json", index)
	s.put("hf/model-00001-of-00002.safetensors", testData(3000))
	s.put("hf/model-00002-of-00002.safetensors", testData(2000))
	s.put("hf/config.json", []byte("{}"))
	s.put("hf/tokenizer.json", []byte(`{"t":1}`))
	s.put("hf/README.md", []byte("not listed"))
	// generation_config.json and the others are missing (404); one more
	// is refused the way some stores refuse missing keys.
	s.setHook(func(w http.ResponseWriter, r *http.Request) bool {
		if strings.HasSuffix(r.URL.Path, "/special_tokens_map.json") {
			w.WriteHeader(http.StatusForbidden)
			return true
		}
		return false
	})
	h := newTestHTTP(t, s.URL+"/hf/", "")
	objs := mustList(t, h)
	want := []string{"config.json", "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors",
		"model.safetensors.index.json", "tokenizer.json"}
	if got := keysOf(objs); !slices.Equal(got, want) {
		t.Fatalf("keys = %q, want %q", got, want)
	}
	if objs[3].Size != int64(len(index)) {
		t.Errorf("index size = %d, want %d", objs[3].Size, len(index))
	}
	if !slices.Contains(s.requests(), "GET hf/modelfs.json") {
		t.Errorf("modelfs.json was not tried first: %q", s.requests())
	}
	checkRead(t, h, objs[2], testData(2000), 1500, 1000)
}

func TestHTTPNoManifest(t *testing.T) {
	s := newMemServer(t)
	s.put("d/weights.bin", []byte("x"))
	_, err := newTestHTTP(t, s.URL+"/d/", "").List(context.Background())
	if err == nil || !errors.Is(err, ErrNotFound) ||
		!strings.Contains(err.Error(), "modelfs.json") || !strings.Contains(err.Error(), "model.safetensors.index.json") {
		t.Fatalf("err = %v, want ErrNotFound naming both manifests", err)
	}
}

func TestHTTPHostileManifest(t *testing.T) {
	bad := []string{"../etc/passwd", "/abs", "a//b", "a\x00b", `a\b`, "a/./b", "a/..", "", "a/", "tab\tname", "a\u0085b"}
	for _, p := range bad {
		enc, _ := json.Marshal(p)
		manifests := map[string]string{
			"modelfs.json/array":           `["ok.bin", ` + string(enc) + `]`,
			"modelfs.json/object":          `{"files": [{"path": "ok.bin"}, {"path": ` + string(enc) + `}]}`,
			"model.safetensors.index.json": `{"weight_map": {"w": "ok.bin", "v": ` + string(enc) + `}}`,
		}
		for kind, body := range manifests {
			t.Run(strconv.Quote(p)+"/"+kind, func(t *testing.T) {
				s := newMemServer(t)
				s.put("ok.bin", []byte("fine"))
				s.put(strings.TrimSuffix(strings.TrimSuffix(kind, "/array"), "/object"), []byte(body))
				_, err := newTestHTTP(t, s.URL+"/", "").List(context.Background())
				if err == nil || !strings.Contains(err.Error(), strconv.Quote(p)) {
					t.Fatalf("err = %v, want an error naming %q", err, p)
				}
				for _, r := range s.requests() {
					if strings.HasPrefix(r, "HEAD ") {
						t.Errorf("probed %q despite a bad manifest", r)
					}
				}
			})
		}
	}
}

func TestHTTPMalformedManifest(t *testing.T) {
	for _, body := range []string{
		`["a.bin"] trailing`,
		`{"files": [{"path": "a.bin", "sha": "x"}]}`,
		`{"files": [{"path": "a.bin", "size": "10"}]}`,
		`{"files": [{"path": "a.bin", "size": "1"}]}`,
		`{"files": [{"path": "a.bin", "size": null}]}`,
		`{"files": [{"path": "a.bin", "size": true}]}`,
		`{"other": []}`,
		`[]`,
		`["a.bin", "a.bin"]`,
		`[null]`,
		`[1]`,
	} {
		s := newMemServer(t)
		s.put("a.bin", []byte("x"))
		s.put("modelfs.json", []byte(body))
		if objs, err := newTestHTTP(t, s.URL+"/", "").List(context.Background()); err == nil {
			t.Errorf("manifest %s: List = %+v, want an error", body, objs)
		}
	}
	s := newMemServer(t)
	s.put("modelfs.json", bytes.Repeat([]byte(" "), httpMaxManifest+1))
	if _, err := newTestHTTP(t, s.URL+"/", "").List(context.Background()); err == nil || !strings.Contains(err.Error(), "larger") {
		t.Errorf("oversized manifest: err = %v", err)
	}
}

func TestHTTPChangedAfterList(t *testing.T) {
	s := newMemServer(t)
	s.put("w.bin", testData(4000))
	h := newTestHTTP(t, s.URL+"/w.bin", "")
	obj := mustList(t, h)[0]
	checkRead(t, h, obj, testData(4000), 0, 100)

	s.put("w.bin", bytes.Repeat([]byte{1}, 4000)) // same size, new ETag
	_, err := h.ReadAt(context.Background(), obj, make([]byte, 100), 0)
	if !errors.Is(err, ErrChanged) || !strings.Contains(err.Error(), "w.bin") {
		t.Fatalf("err = %v, want ErrChanged naming the key", err)
	}
	// The server said so with 412, once: ErrChanged is not retried.
	if n := strings.Count(strings.Join(s.requests(), "\n"), "GET w.bin"); n != 2 {
		t.Errorf("%d GETs, want 2 (one read, one refused)", n)
	}
}

// A server whose ETag is weak cannot answer If-Match; the read goes ahead
// on If-Unmodified-Since and the ETag is compared on the response.
func TestHTTPWeakETag(t *testing.T) {
	s := newMemServer(t)
	data := testData(3000)
	s.put("w.bin", data)
	s.files["w.bin"].etag = `W/"weak1"`
	var sawIfMatch atomic.Bool
	s.setHook(func(w http.ResponseWriter, r *http.Request) bool {
		if r.Header.Get("If-Match") != "" {
			sawIfMatch.Store(true)
		}
		return false
	})
	h := newTestHTTP(t, s.URL+"/w.bin", "")
	obj := mustList(t, h)[0]
	checkRead(t, h, obj, data, 100, 200)
	if sawIfMatch.Load() {
		t.Error("sent If-Match with a weak ETag")
	}
	s.mu.Lock()
	s.files["w.bin"].etag = `W/"weak2"`
	s.mu.Unlock()
	if _, err := h.ReadAt(context.Background(), obj, make([]byte, 10), 0); !errors.Is(err, ErrChanged) {
		t.Errorf("err = %v, want ErrChanged", err)
	}
}

func TestHTTPRetry503(t *testing.T) {
	s := newMemServer(t)
	data := testData(9000)
	s.put("w.bin", data)
	var gets, fails atomic.Int32
	fails.Store(2)
	s.setHook(func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method != http.MethodGet {
			return false
		}
		gets.Add(1)
		if fails.Add(-1) >= 0 {
			w.WriteHeader(http.StatusServiceUnavailable)
			return true
		}
		return false
	})
	h := newTestHTTP(t, s.URL+"/w.bin", "")
	obj := mustList(t, h)[0]
	checkRead(t, h, obj, data, 1000, 5000)
	if gets.Load() != 3 {
		t.Errorf("%d GETs, want 3", gets.Load())
	}

	gets.Store(0)
	fails.Store(1 << 30)
	_, err := h.ReadAt(context.Background(), obj, make([]byte, 10), 20)
	if err == nil || !strings.Contains(err.Error(), "503") || !strings.Contains(err.Error(), "GET w.bin [20, 30)") {
		t.Fatalf("err = %v, want a 503 naming the key and range", err)
	}
	if gets.Load() != 3 {
		t.Errorf("%d GETs, want MaxAttempts = 3", gets.Load())
	}
}

// A body cut short (Content-Length promises more, then the connection
// closes) is retried.
func TestHTTPTruncatedBody(t *testing.T) {
	s := newMemServer(t)
	data := testData(50_000)
	s.put("w.bin", data)
	var gets atomic.Int32
	s.setHook(func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method != http.MethodGet || gets.Add(1) > 1 {
			return false
		}
		var a, b int
		if _, err := fmt.Sscanf(r.Header.Get("Range"), "bytes=%d-%d", &a, &b); err != nil {
			t.Errorf("Range %q: %v", r.Header.Get("Range"), err)
			return false
		}
		conn, buf, err := w.(http.Hijacker).Hijack()
		if err != nil {
			t.Error(err)
			return true
		}
		defer conn.Close()
		fmt.Fprintf(buf, "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes %d-%d/%d\r\nContent-Length: %d\r\n\r\n",
			a, b, len(data), b-a+1)
		buf.Write(data[a : a+(b-a+1)/2])
		buf.Flush()
		return true
	})
	h := newTestHTTP(t, s.URL+"/w.bin", "")
	obj := mustList(t, h)[0]
	checkRead(t, h, obj, data, 10_000, 30_000)
	if gets.Load() != 2 {
		t.Errorf("%d GETs, want 2", gets.Load())
	}
}

// A wrong Content-Range is never taken for the asked bytes: a wrong start
// is retried, a wrong total means the object changed.
func TestHTTPContentRangeChecks(t *testing.T) {
	s := newMemServer(t)
	data := testData(1000)
	s.put("w.bin", data)
	var gets atomic.Int32
	var total atomic.Int32
	s.setHook(func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method != http.MethodGet || gets.Add(1) > 1 && total.Load() == 0 {
			return false
		}
		if t := total.Load(); t != 0 {
			w.Header().Set("Content-Range", fmt.Sprintf("bytes 100-109/%d", t))
		} else {
			w.Header().Set("Content-Range", "bytes 0-9/1000") // wrong start
		}
		w.Header().Set("Content-Length", "10")
		w.WriteHeader(http.StatusPartialContent)
		w.Write(data[:10])
		return true
	})
	h := newTestHTTP(t, s.URL+"/w.bin", "")
	obj := mustList(t, h)[0]
	checkRead(t, h, obj, data, 100, 10)
	if gets.Load() != 2 {
		t.Errorf("%d GETs, want 2", gets.Load())
	}
	total.Store(2000)
	if _, err := h.ReadAt(context.Background(), obj, make([]byte, 10), 100); !errors.Is(err, ErrChanged) {
		t.Errorf("err = %v, want ErrChanged", err)
	}
}

// A server that ignores Range and sends the whole file still yields the
// right bytes.
func TestHTTPRangeIgnored(t *testing.T) {
	s := newMemServer(t)
	data := testData(20_000)
	s.put("w.bin", data)
	s.setHook(func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method != http.MethodGet {
			return false
		}
		w.Header().Set("ETag", s.files["w.bin"].etag)
		w.Header().Set("Content-Length", strconv.Itoa(len(data)))
		w.Write(data)
		return true
	})
	h := newTestHTTP(t, s.URL+"/w.bin", "")
	obj := mustList(t, h)[0]
	checkRead(t, h, obj, data, 12_345, 4000)
	checkRead(t, h, obj, data, 19_000, 4000)
}

func TestHTTPTokenAndAccess(t *testing.T) {
	const token = "tok-SUPERSECRET-42"
	s := newMemServer(t)
	s.token = token
	s.put("m/modelfs.json", []byte(`["a.bin"]`))
	s.put("m/a.bin", testData(100))

	h := newTestHTTP(t, s.URL+"/m/", token)
	objs := mustList(t, h)
	checkRead(t, h, objs[0], testData(100), 10, 20)
	if strings.Contains(h.String(), token) || h.String() != s.URL+"/m/" {
		t.Errorf("String() = %q", h.String())
	}

	var errs []error
	wrong := newTestHTTP(t, s.URL+"/m/", token+"-wrong")
	_, err := wrong.List(context.Background())
	if !errors.Is(err, ErrAccess) {
		t.Errorf("List with a wrong token: err = %v, want ErrAccess", err)
	}
	errs = append(errs, err)
	_, err = wrong.ReadAt(context.Background(), objs[0], make([]byte, 10), 0)
	if !errors.Is(err, ErrAccess) {
		t.Errorf("ReadAt with a wrong token: err = %v, want ErrAccess", err)
	}
	errs = append(errs, err)
	_, err = h.Stat(context.Background(), "missing.bin")
	errs = append(errs, err)
	_, err = h.Stat(context.Background(), "../x")
	errs = append(errs, err)
	s.setHook(func(w http.ResponseWriter, r *http.Request) bool {
		w.WriteHeader(http.StatusBadGateway)
		return true
	})
	_, err = h.ReadAt(context.Background(), objs[0], make([]byte, 10), 0)
	errs = append(errs, err)
	s.Close()
	_, err = h.ReadAt(context.Background(), objs[0], make([]byte, 10), 0)
	errs = append(errs, err)
	for i, err := range errs {
		if err == nil {
			t.Errorf("error %d is nil", i)
		} else if strings.Contains(err.Error(), "SUPERSECRET") {
			t.Errorf("error %d leaks the token: %v", i, err)
		}
	}

	// NewHTTP refuses a token that would split the header, without echoing it.
	_, err = NewHTTP(HTTPOptions{URL: s.URL + "/", Token: "SUPERSECRET\r\nX: y"})
	if err == nil || strings.Contains(err.Error(), "SUPERSECRET") {
		t.Errorf("NewHTTP(bad token) err = %v", err)
	}
}

func TestNewHTTPErrors(t *testing.T) {
	for _, u := range []string{"", "ftp://h/x", "https:///x", "http://h/a/..", "http://h/a%2Fb", "http://h/%zz?sig=SECRET"} {
		_, err := NewHTTP(HTTPOptions{URL: u})
		if err == nil {
			t.Errorf("NewHTTP(%q) succeeded", u)
		} else if strings.Contains(err.Error(), "SECRET") {
			t.Errorf("NewHTTP(%q) err leaks the query: %v", u, err)
		}
	}
	h, err := NewHTTP(HTTPOptions{URL: "https://user:pw@example.com/a/b/?token=SECRET#frag"})
	if err != nil {
		t.Fatal(err)
	}
	if h.String() != "https://example.com/a/b/" {
		t.Errorf("String() = %q", h.String())
	}
	if got := h.objectURL("x y/z#.bin"); got != "https://user:pw@example.com/a/b/x%20y/z%23.bin?token=SECRET" {
		t.Errorf("objectURL = %q", got)
	}
}
