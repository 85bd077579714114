package fetch

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelfs/modelfs/tests/hubserver"
)

const hfTestToken = "hf_secret_token_never_shown_0123456789"

func hfFiles() map[string][]byte {
	rng := rand.New(rand.NewPCG(7, 7))
	big := make([]byte, 3<<20+17)
	for i := range big {
		big[i] = byte(rng.UintN(256))
	}
	return map[string][]byte{
		"config.json":                    []byte(`{"model_type":"llama"}`),
		"model.safetensors":              big,
		"tokenizer/tokenizer.json":       bytes.Repeat([]byte("tok"), 1000),
		"README.md":                      []byte("# test model\n"),
		"sub dir/weights #1.safetensors": bytes.Repeat([]byte{1, 2, 3}, 700),
	}
}

func newHFTest(t *testing.T, repo string, o HFOptions) (*hubserver.Server, *HF) {
	t.Helper()
	s := hubserver.New()
	t.Cleanup(s.Close)
	s.AddToken(hfTestToken)
	o.Endpoint = s.Hub.URL
	o.Retry = RetryOptions{MaxAttempts: 3, BaseDelay: time.Millisecond, MaxDelay: time.Millisecond, AttemptTimeout: 10 * time.Second}
	if o.Repo == "" {
		o.Repo = repo
	}
	h, err := NewHF(o)
	if err != nil {
		t.Fatal(err)
	}
	return s, h
}

func readAll(t *testing.T, h *HF, obj Object, chunk int) []byte {
	t.Helper()
	var out []byte
	buf := make([]byte, chunk)
	for off := int64(0); off < obj.Size; off += int64(chunk) {
		n, err := h.ReadAt(context.Background(), obj, buf, off)
		if err != nil && !(err == io.EOF && off+int64(n) == obj.Size) {
			t.Fatalf("ReadAt %s at %d: %v", obj.Key, off, err)
		}
		out = append(out, buf[:n]...)
	}
	return out
}

func TestHFListAndRead(t *testing.T) {
	s, h := newHFTest(t, "acme/tiny", HFOptions{})
	files := hfFiles()
	s.CreateRepo("acme/tiny", hubserver.RepoOptions{})
	commit := s.Push("acme/tiny", "main", files)

	objs, err := h.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if h.Commit() != commit {
		t.Fatalf("pinned to %q, want %q", h.Commit(), commit)
	}
	if len(objs) != len(files) {
		t.Fatalf("listed %d objects, want %d", len(objs), len(files))
	}
	if _, rejected := Usable(objs); len(rejected) != 0 {
		t.Fatalf("listing has unusable objects: %+v", rejected)
	}
	for _, o := range objs {
		want := files[o.Key]
		if o.Size != int64(len(want)) {
			t.Errorf("%s: size %d, want %d", o.Key, o.Size, len(want))
		}
		if got := readAll(t, h, o, 1<<20); !bytes.Equal(got, want) {
			t.Errorf("%s: bytes differ", o.Key)
		}
		if len(want) >= hubserver.LFSThreshold && o.Checksum.Algorithm != "SHA256" {
			t.Errorf("%s: LFS file without its sha256", o.Key)
		}
	}
	if n := s.CDNWithAuth.Load(); n != 0 {
		t.Fatalf("the token was sent to the CDN %d times", n)
	}
	if s.CDNRequests.Load() == 0 {
		t.Fatal("no read went to the CDN")
	}
	st, err := h.Stat(context.Background(), "model.safetensors")
	if err != nil || st.ETag != objs[2].ETag || st.Size != int64(len(files["model.safetensors"])) {
		t.Fatalf("Stat: %+v, %v", st, err)
	}
	for _, s := range []string{h.String(), h.ID()} {
		if strings.Contains(s, hfTestToken) {
			t.Fatalf("%q holds the token", s)
		}
	}
}

// Reads keep the commit pinned at List when the branch moves on, and a
// link is resolved once and reused until it expires.
func TestHFRevisionPinnedAndLinkReused(t *testing.T) {
	s, h := newHFTest(t, "acme/tiny", HFOptions{})
	s.CreateRepo("acme/tiny", hubserver.RepoOptions{})
	old := hfFiles()
	s.Push("acme/tiny", "main", old)
	objs, err := h.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	changed := hfFiles()
	changed["model.safetensors"] = bytes.Repeat([]byte{9}, len(old["model.safetensors"]))
	changed["config.json"] = []byte(`{"model_type":"mistral"}`)
	s.Push("acme/tiny", "main", changed)
	for _, o := range objs {
		if got := readAll(t, h, o, 1<<20); !bytes.Equal(got, old[o.Key]) {
			t.Errorf("%s: bytes are not the pinned commit's", o.Key)
		}
	}
	resolves := s.ResolveRequests.Load()
	for _, o := range objs {
		if o.Key == "model.safetensors" {
			readAll(t, h, o, 1<<20)
		}
	}
	if n := s.ResolveRequests.Load() - resolves; n != 0 {
		t.Fatalf("%d more resolves for a file whose link had not expired", n)
	}
	// A second List keeps the pin.
	if _, err := h.List(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// An expired link (refused by the CDN, or past its Expires) is resolved
// again; a body cut short is retried.
func TestHFLinkExpiryAndFaults(t *testing.T) {
	s, h := newHFTest(t, "acme/tiny", HFOptions{})
	s.CreateRepo("acme/tiny", hubserver.RepoOptions{})
	files := hfFiles()
	s.Push("acme/tiny", "main", files)
	objs, err := h.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var big Object
	for _, o := range objs {
		if o.Key == "model.safetensors" {
			big = o
		}
	}
	want := files[big.Key]
	p := make([]byte, 1<<20)
	if _, err := h.ReadAt(context.Background(), big, p, 0); err != nil {
		t.Fatal(err)
	}

	s.ExpireLinks()
	resolves := s.ResolveRequests.Load()
	if _, err := h.ReadAt(context.Background(), big, p, 1<<20); err != nil || !bytes.Equal(p, want[1<<20:2<<20]) {
		t.Fatalf("read after the CDN refused the link: %v", err)
	}
	if s.CDNExpired.Load() != 1 || s.ResolveRequests.Load() != resolves+1 {
		t.Fatalf("expired link: %d refusals, %d resolves; want 1 and 1", s.CDNExpired.Load(), s.ResolveRequests.Load()-resolves)
	}

	// Past the link's Expires it is not even tried.
	h.now = func() time.Time { return time.Now().Add(2 * time.Hour) }
	cdn := s.CDNRequests.Load()
	if _, err := h.ReadAt(context.Background(), big, p, 0); err != nil || !bytes.Equal(p, want[:1<<20]) {
		t.Fatalf("read past the link's expiry: %v", err)
	}
	if s.ResolveRequests.Load() != resolves+2 || s.CDNRequests.Load() != cdn+1 {
		t.Fatal("a link past its Expires was used, or not resolved again")
	}
	h.now = time.Now

	s.CutNext(1000)
	if _, err := h.ReadAt(context.Background(), big, p, 2<<20); err != nil || !bytes.Equal(p, want[2<<20:3<<20]) {
		t.Fatalf("read after a cut body: %v", err)
	}
	s.CutNext(10)
	s.CutNext(10)
	s.CutNext(10)
	if _, err = h.ReadAt(context.Background(), big, p, 0); err == nil || !strings.Contains(err.Error(), "giving up after 3 attempts") {
		t.Fatalf("read with every try cut: %v, want a give-up", err)
	}
	if strings.Contains(err.Error(), "Signature") {
		t.Fatalf("the error quotes the signed link: %v", err)
	}
}

func TestHFAccessErrors(t *testing.T) {
	s := hubserver.New()
	defer s.Close()
	s.AddToken(hfTestToken)
	s.AddToken("hf_other_account_token")
	s.CreateRepo("acme/gated", hubserver.RepoOptions{Gated: true, Accepted: []string{hfTestToken}})
	s.Push("acme/gated", "main", hfFiles())
	s.CreateRepo("acme/private", hubserver.RepoOptions{Private: true, Accepted: []string{hfTestToken}})
	s.Push("acme/private", "main", hfFiles())
	s.CreateRepo("datasets/acme/corpus", hubserver.RepoOptions{})
	s.Push("datasets/acme/corpus", "main", hfFiles())

	for _, tc := range []struct {
		repo, rev, token string
		dataset          bool
		want             error
		msg              string
	}{
		{repo: "acme/gated", want: ErrAccess, msg: "is gated: set HF_TOKEN"},
		{repo: "acme/gated", token: "hf_other_account_token", want: ErrAccess, msg: "has not accepted its terms"},
		{repo: "acme/gated", token: hfTestToken},
		{repo: "acme/private", want: ErrNotFound, msg: "private and needs a token"},
		{repo: "acme/private", token: "hf_other_account_token", want: ErrNotFound, msg: "does not exist"},
		{repo: "acme/private", token: hfTestToken},
		{repo: "acme/private", token: "hf_refused", want: ErrAccess, msg: "refused the token"},
		{repo: "acme/nothing", token: hfTestToken, want: ErrNotFound, msg: "does not exist"},
		{repo: "acme/private", rev: "v9", token: hfTestToken, want: ErrNotFound, msg: `revision "v9"`},
		{repo: "acme/corpus", dataset: true},
		{repo: "acme/corpus", want: ErrNotFound},
	} {
		h, err := NewHF(HFOptions{Repo: tc.repo, Revision: tc.rev, Dataset: tc.dataset, Token: tc.token, Endpoint: s.Hub.URL,
			Retry: RetryOptions{MaxAttempts: 2, BaseDelay: time.Millisecond}})
		if err != nil {
			t.Fatal(err)
		}
		objs, err := h.List(context.Background())
		switch {
		case tc.want == nil && err != nil:
			t.Errorf("%s token %q: %v", tc.repo, tc.token, err)
		case tc.want == nil:
			if got := readAll(t, h, objs[0], 4096); len(got) != int(objs[0].Size) {
				t.Errorf("%s: read %d bytes", tc.repo, len(got))
			}
		case !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.msg):
			t.Errorf("%s token %q: error %v, want %v with %q", tc.repo, tc.token, err, tc.want, tc.msg)
		case strings.Contains(err.Error(), "\n") || tc.token != "" && strings.Contains(err.Error(), tc.token):
			t.Errorf("%s: error is not one line without the token: %q", tc.repo, err)
		}
	}
}

func TestParseHFLocation(t *testing.T) {
	for raw, want := range map[string]Location{
		"hf://acme/tiny":                  {Scheme: "hf", Repo: "acme/tiny"},
		"hf://acme/tiny@v1.0":             {Scheme: "hf", Repo: "acme/tiny", Revision: "v1.0"},
		"hf://gpt2":                       {Scheme: "hf", Repo: "gpt2"},
		"hf://models/acme/tiny@refs/pr/1": {Scheme: "hf", Repo: "acme/tiny", Revision: "refs/pr/1"},
		"hf://datasets/acme/corpus@main":  {Scheme: "hf", Repo: "acme/corpus", Revision: "main", Dataset: true},
	} {
		got, err := ParseLocation(raw)
		if err != nil || got != want {
			t.Errorf("ParseLocation(%q) = %+v, %v; want %+v", raw, got, err, want)
		}
	}
	for _, raw := range []string{"hf://", "hf://acme/tiny@", "hf://a/b/c", "hf://acme/../x", "hf://acme/tiny@a/../b", "hf://acme/ti ny", "hf://acme//tiny"} {
		if _, err := ParseLocation(raw); err == nil {
			t.Errorf("ParseLocation(%q) succeeded", raw)
		}
	}
}

func TestHFToken(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "token"), []byte("hf_from_file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	env := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }
	for _, tc := range []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{"HF_TOKEN": "hf_a", "MY_TOK": "hf_b", "HF_HOME": dir}, "hf_a"},
		{map[string]string{"MY_TOK": "hf_b", "HF_HOME": dir}, "hf_b"},
		{map[string]string{"HF_HOME": dir}, "hf_from_file"},
		{map[string]string{"XDG_CACHE_HOME": filepath.Dir(dir)}, ""},
		{map[string]string{"HOME": t.TempDir()}, ""},
	} {
		got, err := HFToken(env(tc.env), "MY_TOK")
		if err != nil || got != tc.want {
			t.Errorf("HFToken(%v) = %q, %v; want %q", tc.env, got, err, tc.want)
		}
	}
}

func TestHFLinkExpiry(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	q, _ := url.ParseQuery("X-Amz-Date=20260102T030405Z&X-Amz-Expires=600")
	if got := linkExpiry(q, now); !got.Equal(now.Add(10 * time.Minute)) {
		t.Errorf("S3 expiry %v", got)
	}
	q, _ = url.ParseQuery("Expires=1767323045")
	if got := linkExpiry(q, now); got.Unix() != 1767323045 {
		t.Errorf("CloudFront expiry %v", got)
	}
	if got := linkExpiry(url.Values{}, now); !got.Equal(now.Add(hfLinkDefaultTTL)) {
		t.Errorf("default expiry %v", got)
	}
}

// A Hub or CDN that answers for other bytes than the pinned file's is
// caught: a hash or size that changed fails with ErrChanged, never with
// bytes of another version.
func TestHFHostileReplies(t *testing.T) {
	const sha = "1111111111111111111111111111111111111111111111111111111111111111"
	const commit = "2222222222222222222222222222222222222222"
	data := bytes.Repeat([]byte("x"), 4096)
	for name, tc := range map[string]struct {
		resolve func(w http.ResponseWriter)
		cdn     func(w http.ResponseWriter, r *http.Request)
	}{
		"hash at resolve": {resolve: func(w http.ResponseWriter) {
			w.Header().Set("X-Linked-Etag", `"`+strings.Repeat("3", 64)+`"`)
		}},
		"commit at resolve": {resolve: func(w http.ResponseWriter) {
			w.Header().Set("X-Repo-Commit", strings.Repeat("4", 40))
		}},
		"size at resolve": {resolve: func(w http.ResponseWriter) {
			w.Header().Set("X-Linked-Size", "4097")
		}},
		"hash at the CDN": {cdn: func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("X-Linked-Etag", `"`+strings.Repeat("3", 64)+`"`)
			http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(data))
		}},
		"size at the CDN": {cdn: func(w http.ResponseWriter, r *http.Request) {
			http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(append(data, 'y')))
		}},
	} {
		t.Run(name, func(t *testing.T) {
			cdn := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if tc.cdn != nil {
					tc.cdn(w, r)
					return
				}
				http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(data))
			}))
			defer cdn.Close()
			hub := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if strings.HasPrefix(r.URL.Path, "/api/") {
					fmt.Fprintf(w, `{"sha":%q,"siblings":[{"rfilename":"m.safetensors","size":4096,"blobId":"%s","lfs":{"sha256":%q,"size":4096}}]}`,
						commit, strings.Repeat("5", 40), sha)
					return
				}
				w.Header().Set("X-Repo-Commit", commit)
				w.Header().Set("X-Linked-Etag", `"`+sha+`"`)
				w.Header().Set("X-Linked-Size", "4096")
				if tc.resolve != nil {
					tc.resolve(w)
				}
				w.Header().Set("Location", cdn.URL+"/blob?Expires=9999999999")
				w.WriteHeader(http.StatusFound)
			}))
			defer hub.Close()
			h, err := NewHF(HFOptions{Repo: "acme/m", Endpoint: hub.URL, Retry: RetryOptions{MaxAttempts: 2, BaseDelay: time.Millisecond}})
			if err != nil {
				t.Fatal(err)
			}
			objs, err := h.List(context.Background())
			if err != nil || len(objs) != 1 {
				t.Fatalf("List: %v, %v", objs, err)
			}
			p := make([]byte, 100)
			if n, err := h.ReadAt(context.Background(), objs[0], p, 10); !errors.Is(err, ErrChanged) || n != 0 {
				t.Fatalf("ReadAt: %d, %v; want ErrChanged", n, err)
			}
		})
	}
}

// Block reads that start on a file at once share one resolve.
func TestHFConcurrentReadsShareResolve(t *testing.T) {
	s, h := newHFTest(t, "acme/tiny", HFOptions{})
	s.CreateRepo("acme/tiny", hubserver.RepoOptions{})
	files := hfFiles()
	s.Push("acme/tiny", "main", files)
	objs, err := h.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	big := objs[slices.IndexFunc(objs, func(o Object) bool { return o.Key == "model.safetensors" })]
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			p := make([]byte, 256<<10)
			off := int64(i) * int64(len(p))
			if _, err := h.ReadAt(context.Background(), big, p, off); err != nil || !bytes.Equal(p, files[big.Key][off:off+int64(len(p))]) {
				t.Errorf("read at %d: %v", off, err)
			}
		})
	}
	wg.Wait()
	if n := s.ResolveRequests.Load(); n != 1 {
		t.Fatalf("%d resolves for 8 concurrent reads of one file, want 1", n)
	}
}
