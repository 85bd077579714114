package hubserver

import (
	"bytes"
	"crypto/hmac"
	"crypto/md5"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// LFSThreshold: files this large or larger are stored in LFS and served
// through the CDN; smaller ones are served by the Hub itself.
const LFSThreshold = 1024

// Server is a Hub and its CDN on loopback.
type Server struct {
	Hub, CDN *httptest.Server

	// Counters for assertions.
	InfoRequests    atomic.Int64
	ResolveRequests atomic.Int64
	CDNRequests     atomic.Int64
	CDNWithAuth     atomic.Int64 // CDN requests that carried an Authorization header
	CDNExpired      atomic.Int64 // CDN requests refused for an expired link

	key []byte // signs CDN links

	mu     sync.Mutex
	repos  map[string]*repo // by "models/org/name" or "datasets/org/name"
	blobs  map[string][]byte
	tokens map[string]bool // tokens the Hub knows
	gen    int             // links signed under an older generation have expired
	cuts   []int64         // pending faults: cut the next CDN bodies after this many bytes
	ttl    time.Duration
}

type repo struct {
	private  bool
	gated    bool
	accepted map[string]bool // tokens whose accounts accepted the terms
	branches map[string]string
	commits  map[string]map[string]*file
	modified time.Time
}

type file struct {
	data   []byte
	lfs    bool
	sha256 string
	oid    string // git blob id
}

// New starts the Hub and its CDN; Close stops them.
func New() *Server {
	s := &Server{
		key: []byte("hubserver-signing-key"), repos: map[string]*repo{}, blobs: map[string][]byte{},
		tokens: map[string]bool{}, ttl: time.Hour,
	}
	s.Hub = httptest.NewServer(http.HandlerFunc(s.serveHub))
	s.CDN = httptest.NewServer(http.HandlerFunc(s.serveCDN))
	return s
}

// Close stops both servers.
func (s *Server) Close() {
	s.Hub.Close()
	s.CDN.Close()
}

// AddToken makes token one the Hub accepts.
func (s *Server) AddToken(token string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tokens[token] = true
}

// Repo options.
type RepoOptions struct {
	Private bool
	Gated   bool
	// Accepted are the tokens whose accounts accepted a gated repo's
	// terms, or may read a private one.
	Accepted []string
}

// CreateRepo makes an empty repo; id is "org/name" or "datasets/org/name".
func (s *Server) CreateRepo(id string, o RepoOptions) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := &repo{private: o.Private, gated: o.Gated, accepted: map[string]bool{}, branches: map[string]string{},
		commits: map[string]map[string]*file{}}
	for _, t := range o.Accepted {
		r.accepted[t] = true
	}
	s.repos[repoKey(id)] = r
}

func repoKey(id string) string {
	if strings.HasPrefix(id, "datasets/") {
		return id
	}
	return "models/" + id
}

// Push commits files as the whole tree of branch and returns the commit id.
func (s *Server) Push(id, branch string, files map[string][]byte) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.repos[repoKey(id)]
	tree := map[string]*file{}
	h := sha1.New()
	fmt.Fprintf(h, "%s %s %d\n", id, branch, len(r.commits))
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		data := files[n]
		sum := sha256.Sum256(data)
		oid := sha1.Sum(append([]byte(fmt.Sprintf("blob %d\x00", len(data))), data...))
		f := &file{data: data, lfs: len(data) >= LFSThreshold, sha256: hex.EncodeToString(sum[:]), oid: hex.EncodeToString(oid[:])}
		if f.lfs {
			s.blobs[f.sha256] = data
		}
		tree[n] = f
		fmt.Fprintf(h, "%s %s\n", n, f.oid)
	}
	commit := hex.EncodeToString(h.Sum(nil))
	r.commits[commit] = tree
	r.branches[branch] = commit
	r.modified = time.Now().UTC().Truncate(time.Second)
	return commit
}

// ExpireLinks makes every CDN link signed so far expired.
func (s *Server) ExpireLinks() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.gen++
}

// CutNext makes the next CDN body end, connection dropped, after n bytes.
func (s *Server) CutNext(n int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cuts = append(s.cuts, n)
}

// hubError answers as the Hub does: the code and message in headers, and
// the message as JSON.
func hubError(w http.ResponseWriter, status int, code, msg string) {
	if code != "" {
		w.Header().Set("X-Error-Code", code)
	}
	w.Header().Set("X-Error-Message", msg)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]string{"error": msg})
}

// auth checks the bearer token: "" for none; ok false when one was sent
// that the Hub does not know (already answered).
func (s *Server) auth(w http.ResponseWriter, r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	if h == "" {
		return "", true
	}
	tok, _ := strings.CutPrefix(h, "Bearer ")
	s.mu.Lock()
	known := s.tokens[tok]
	s.mu.Unlock()
	if !known {
		hubError(w, http.StatusUnauthorized, "", "Invalid credentials in Authorization header")
		return "", false
	}
	return tok, true
}

// lookup finds the repo; it answers and returns nil when the token cannot
// see it. Private and missing repos look alike, as on the Hub.
func (s *Server) lookup(w http.ResponseWriter, key, token string) *repo {
	r := s.repos[key]
	if r == nil || (r.private && !r.accepted[token]) {
		status := http.StatusNotFound
		if token == "" {
			status = http.StatusUnauthorized
		}
		hubError(w, status, "RepoNotFound", "Repository not found")
		return nil
	}
	return r
}

func (s *Server) serveHub(w http.ResponseWriter, r *http.Request) {
	token, ok := s.auth(w, r)
	if !ok {
		return
	}
	p := r.URL.EscapedPath()
	if rest, ok := strings.CutPrefix(p, "/api/"); ok {
		s.serveInfo(w, r, rest, token)
		return
	}
	i := strings.Index(p, "/resolve/")
	if i < 0 {
		hubError(w, http.StatusNotFound, "", "Not found")
		return
	}
	id, _ := url.PathUnescape(strings.TrimPrefix(p[:i], "/"))
	rev, path, _ := strings.Cut(p[i+len("/resolve/"):], "/")
	rev, _ = url.PathUnescape(rev)
	path, _ = url.PathUnescape(path)
	s.serveResolve(w, r, id, rev, path, token)
}

// resolveRev maps a branch or commit to a commit and its tree.
func (rp *repo) resolveRev(rev string) (string, map[string]*file) {
	if c, ok := rp.branches[rev]; ok {
		return c, rp.commits[c]
	}
	if t, ok := rp.commits[rev]; ok {
		return rev, t
	}
	return "", nil
}

func (s *Server) serveInfo(w http.ResponseWriter, r *http.Request, rest, token string) {
	s.InfoRequests.Add(1)
	kind, rest, _ := strings.Cut(rest, "/")
	i := strings.Index(rest, "/revision/")
	if (kind != "models" && kind != "datasets") || i < 0 {
		hubError(w, http.StatusNotFound, "", "Not found")
		return
	}
	id := rest[:i]
	rev, _ := url.PathUnescape(rest[i+len("/revision/"):])
	s.mu.Lock()
	defer s.mu.Unlock()
	rp := s.lookup(w, kind+"/"+id, token)
	if rp == nil {
		return
	}
	commit, tree := rp.resolveRev(rev)
	if tree == nil {
		hubError(w, http.StatusNotFound, "RevisionNotFound", "Invalid rev id: "+rev)
		return
	}
	type lfs struct {
		SHA256      string `json:"sha256"`
		Size        int    `json:"size"`
		PointerSize int    `json:"pointerSize"`
	}
	type sibling struct {
		Name   string `json:"rfilename"`
		Size   *int   `json:"size,omitempty"`
		BlobID string `json:"blobId,omitempty"`
		LFS    *lfs   `json:"lfs,omitempty"`
	}
	blobs := r.URL.Query().Get("blobs") == "true"
	var sibs []sibling
	for name, f := range tree {
		sb := sibling{Name: name}
		if blobs {
			size := len(f.data)
			sb.Size, sb.BlobID = &size, f.oid
			if f.lfs {
				sb.LFS = &lfs{SHA256: f.sha256, Size: len(f.data), PointerSize: 134}
			}
		}
		sibs = append(sibs, sb)
	}
	sort.Slice(sibs, func(i, j int) bool { return sibs[i].Name < sibs[j].Name })
	var gated any = false
	if rp.gated {
		gated = "manual"
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]any{
		"_id": commit[:24], "id": id, "sha": commit, "lastModified": rp.modified.Format(time.RFC3339),
		"private": rp.private, "gated": gated, "disabled": false, "siblings": sibs,
	})
}

func (s *Server) serveResolve(w http.ResponseWriter, r *http.Request, id, rev, path, token string) {
	s.ResolveRequests.Add(1)
	s.mu.Lock()
	rp := s.lookup(w, repoKey(id), token)
	if rp == nil {
		s.mu.Unlock()
		return
	}
	if rp.gated && !rp.accepted[token] {
		s.mu.Unlock()
		if token == "" {
			hubError(w, http.StatusUnauthorized, "GatedRepo", "Access to model "+id+" is restricted. You must have access to it and be authenticated to access it. Please log in.")
		} else {
			hubError(w, http.StatusForbidden, "GatedRepo", "Access to model "+id+" is restricted and you are not in the authorized list. Visit "+s.Hub.URL+"/"+id+" to ask for access.")
		}
		return
	}
	commit, tree := rp.resolveRev(rev)
	if tree == nil {
		s.mu.Unlock()
		hubError(w, http.StatusNotFound, "RevisionNotFound", "Invalid rev id: "+rev)
		return
	}
	f := tree[path]
	gen := s.gen
	ttl := s.ttl
	s.mu.Unlock()
	if f == nil {
		hubError(w, http.StatusNotFound, "EntryNotFound", "Entry not found")
		return
	}
	w.Header().Set("X-Repo-Commit", commit)
	if !f.lfs {
		w.Header().Set("ETag", `"`+f.oid+`"`)
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(f.data))
		return
	}
	w.Header().Set("ETag", `"`+f.sha256+`"`)
	w.Header().Set("X-Linked-Etag", `"`+f.sha256+`"`)
	w.Header().Set("X-Linked-Size", strconv.Itoa(len(f.data)))
	w.Header().Set("Location", s.sign(f.sha256, gen, time.Now().Add(ttl)))
	w.WriteHeader(http.StatusFound)
}

func (s *Server) signature(path string, gen int, expires int64) string {
	m := hmac.New(sha256.New, s.key)
	fmt.Fprintf(m, "%s\n%d\n%d", path, gen, expires)
	return hex.EncodeToString(m.Sum(nil))
}

// sign is a CloudFront-style signed link: Expires in Unix seconds.
func (s *Server) sign(sha string, gen int, expires time.Time) string {
	path := "/repos/" + sha
	e := expires.Unix()
	return fmt.Sprintf("%s%s?Expires=%d&Key-Pair-Id=K1&g=%d&Signature=%s", s.CDN.URL, path, e, gen, s.signature(path, gen, e))
}

// cutWriter drops the connection after n bytes of body.
type cutWriter struct {
	http.ResponseWriter
	left int64
}

func (c *cutWriter) Write(p []byte) (int, error) {
	if int64(len(p)) > c.left {
		c.ResponseWriter.Write(p[:c.left])
		c.ResponseWriter.(http.Flusher).Flush()
		panic(http.ErrAbortHandler)
	}
	c.left -= int64(len(p))
	return c.ResponseWriter.Write(p)
}

func (s *Server) serveCDN(w http.ResponseWriter, r *http.Request) {
	s.CDNRequests.Add(1)
	if r.Header.Get("Authorization") != "" {
		// S3 behind CloudFront refuses a second auth mechanism.
		s.CDNWithAuth.Add(1)
		http.Error(w, "Only one auth mechanism allowed", http.StatusBadRequest)
		return
	}
	q := r.URL.Query()
	gen, _ := strconv.Atoi(q.Get("g"))
	exp, _ := strconv.ParseInt(q.Get("Expires"), 10, 64)
	if !hmac.Equal([]byte(q.Get("Signature")), []byte(s.signature(r.URL.Path, gen, exp))) {
		http.Error(w, "AccessDenied", http.StatusForbidden)
		return
	}
	s.mu.Lock()
	expired := gen != s.gen || time.Now().Unix() > exp
	data := s.blobs[strings.TrimPrefix(r.URL.Path, "/repos/")]
	var cut int64 = -1
	if !expired && len(s.cuts) > 0 {
		cut, s.cuts = s.cuts[0], s.cuts[1:]
	}
	s.mu.Unlock()
	if expired {
		s.CDNExpired.Add(1)
		http.Error(w, "Request has expired", http.StatusForbidden)
		return
	}
	if data == nil {
		http.Error(w, "NoSuchKey", http.StatusNotFound)
		return
	}
	// The CDN's own tag (S3's MD5), not the Hub's sha256.
	sum := md5.Sum(data)
	w.Header().Set("ETag", `"`+hex.EncodeToString(sum[:])+`"`)
	if cut >= 0 {
		w = &cutWriter{ResponseWriter: w, left: cut}
	}
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(data))
}
