package fetch

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// DefaultHFEndpoint is the Hugging Face Hub.
const DefaultHFEndpoint = "https://huggingface.co"

const (
	hfMaxInfo     = 64 << 20 // bytes of repo info JSON; large repos list ~100k files
	hfMaxRedirect = 5
	// hfLinkMargin re-resolves a signed link this long before it expires,
	// so a read never starts on a link that dies mid-transfer.
	hfLinkMargin = 30 * time.Second
	// hfLinkDefaultTTL bounds how long a link without a readable expiry is
	// reused; a 403 from the CDN also re-resolves it.
	hfLinkDefaultTTL = 10 * time.Minute
)

// HFOptions configure a Hugging Face Hub source.
type HFOptions struct {
	// Repo is "org/name" (or a legacy "name").
	Repo string
	// Dataset selects a dataset repository rather than a model.
	Dataset bool
	// Revision is a branch, tag or commit; "" is "main".
	Revision string
	// Endpoint is the Hub's base URL (mirrors); "" is DefaultHFEndpoint.
	Endpoint string
	// Token is sent to the Hub, never to the CDN it redirects to, and never
	// appears in errors, String or ID.
	Token  string
	Client *http.Client
	Net    *NetPolicy
	Retry  RetryOptions
}

// HF is a Source over a Hugging Face Hub repository. List resolves the
// revision to its commit and every later request names that commit, so a
// push to the branch after the mount never mixes versions. Files are
// pinned to their LFS sha256 (or git blob id) and read with ranged GETs
// on the signed CDN links that /resolve redirects to.
type HF struct {
	endpoint *url.URL
	repo     string
	dataset  bool
	rev      string
	token    string
	client   *http.Client
	net      *NetPolicy
	retry    RetryOptions
	now      func() time.Time

	mu        sync.Mutex
	commit    string                   // pinned at the first List or read
	links     map[string]hfLink        // signed CDN links by key
	resolving map[string]chan struct{} // closed when the key's resolve ends
}

// hfLink is a signed, short-lived CDN URL for one file, and the CDN's own
// ETag for it once seen (the CDN's tag need not be the Hub's sha256).
type hfLink struct {
	url     string
	expires time.Time
	etag    string
}

var _ Source = (*HF)(nil)

// NewHF checks opts and builds the source; it makes no request.
func NewHF(opts HFOptions) (*HF, error) {
	if err := checkHFRepo(opts.Repo); err != nil {
		return nil, fmt.Errorf("fetch: Hugging Face source: %w", err)
	}
	if opts.Revision == "" {
		opts.Revision = "main"
	}
	if err := checkHFRevision(opts.Revision); err != nil {
		return nil, fmt.Errorf("fetch: Hugging Face source: %w", err)
	}
	if opts.Endpoint == "" {
		opts.Endpoint = DefaultHFEndpoint
	}
	u, err := url.Parse(strings.TrimRight(opts.Endpoint, "/"))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil || u.RawQuery != "" {
		return nil, errors.New("fetch: Hugging Face source: endpoint must be an http(s) URL without credentials or query")
	}
	for i := 0; i < len(opts.Token); i++ {
		if c := opts.Token[i]; c < 0x20 || c == 0x7f {
			return nil, errors.New("fetch: Hugging Face source: token contains control characters")
		}
	}
	h := &HF{
		endpoint: u, repo: opts.Repo, dataset: opts.Dataset, rev: opts.Revision, token: opts.Token,
		client: opts.Client, net: opts.Net, retry: opts.Retry, now: time.Now, links: map[string]hfLink{},
		resolving: map[string]chan struct{}{},
	}
	if h.client == nil {
		h.client = defaultHTTPClient(opts.Net)
	}
	// Redirects are followed by hand: the token must not reach the CDN,
	// and the signed link is kept for later reads.
	c := *h.client
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	h.client = &c
	return h, nil
}

// checkHFRepo applies the Hub's repo id rules: one or two segments of
// letters, digits, '-', '_' and '.', at most 96 characters.
func checkHFRepo(repo string) error {
	if repo == "" {
		return errors.New("repository is empty")
	}
	if len(repo) > 96 {
		return fmt.Errorf("repository %q is longer than 96 characters", repo)
	}
	segs := strings.Split(repo, "/")
	if len(segs) > 2 {
		return fmt.Errorf("repository %q: want org/name", repo)
	}
	for _, s := range segs {
		if s == "" || s == "." || s == ".." || strings.HasPrefix(s, "-") || strings.HasPrefix(s, ".") ||
			strings.Contains(s, "--") || strings.Contains(s, "..") {
			return fmt.Errorf("repository %q is not a valid Hub repository id", repo)
		}
		for _, r := range s {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.') {
				return fmt.Errorf("repository %q contains %q", repo, r)
			}
		}
	}
	return nil
}

func checkHFRevision(rev string) error {
	if len(rev) > 256 {
		return errors.New("revision is longer than 256 characters")
	}
	for _, r := range rev {
		if r < 0x20 || r == 0x7f || r == ' ' || r == '\\' {
			return fmt.Errorf("revision %q contains %q", rev, r)
		}
	}
	for seg := range strings.SplitSeq(rev, "/") {
		if seg == "" || seg == "." || seg == ".." {
			return fmt.Errorf("revision %q is not a valid git ref", rev)
		}
	}
	return nil
}

// String is hf://[datasets/]org/name@revision, and the endpoint when it is
// not the Hub's.
func (h *HF) String() string {
	s := "hf://" + h.repoPath() + "@" + h.rev
	if h.endpoint.String() != DefaultHFEndpoint {
		s += " (" + h.endpoint.String() + ")"
	}
	return s
}

// ID names the endpoint, repo and revision as asked. Objects are pinned by
// content hash, so cached bytes stay right when the branch moves.
func (h *HF) ID() string {
	return "hf:" + h.endpoint.String() + "/" + h.repoPath() + "@" + h.rev
}

func (h *HF) repoPath() string {
	if h.dataset {
		return "datasets/" + h.repo
	}
	return h.repo
}

// Commit is the commit the source is pinned to, "" before the first List.
func (h *HF) Commit() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.commit
}

// hfInfo is the part of GET /api/models/{repo}/revision/{rev}?blobs=true
// the source uses.
type hfInfo struct {
	SHA          string `json:"sha"`
	LastModified string `json:"lastModified"`
	// Gated is false, or how access is granted ("auto", "manual").
	Gated    any `json:"gated"`
	Siblings []struct {
		Name   string `json:"rfilename"`
		Size   *int64 `json:"size"`
		BlobID string `json:"blobId"`
		LFS    *struct {
			SHA256 string `json:"sha256"`
			Size   *int64 `json:"size"`
		} `json:"lfs"`
	} `json:"siblings"`
}

// List asks the Hub for the revision's files with their sizes and hashes,
// and pins the source to the revision's commit on the first call.
func (h *HF) List(ctx context.Context) ([]Object, error) {
	rev := h.Commit()
	if rev == "" {
		rev = h.rev
	}
	api := "models"
	if h.dataset {
		api = "datasets"
	}
	u := h.endpoint.String() + "/api/" + api + "/" + h.repo + "/revision/" + url.PathEscape(rev) + "?blobs=true"
	var info hfInfo
	err := h.retry.do(ctx, OpList, 0, "GET repo info of "+h.String(), func(ctx context.Context) error {
		info = hfInfo{}
		resp, err := h.hubGet(ctx, http.MethodGet, u, "")
		if err != nil {
			return err
		}
		defer drainHTTP(resp.Body)
		if resp.StatusCode != http.StatusOK {
			return h.hubError(resp, "")
		}
		b, err := io.ReadAll(io.LimitReader(resp.Body, hfMaxInfo+1))
		if err != nil {
			return transient(fmt.Errorf("reading body: %w", err), 0)
		}
		if len(b) > hfMaxInfo {
			return fmt.Errorf("repo info is larger than %d bytes", hfMaxInfo)
		}
		if err := json.Unmarshal(b, &info); err != nil {
			return fmt.Errorf("repo info: invalid JSON: %w", err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if !isHex(info.SHA, 40) {
		return nil, fmt.Errorf("%s: the Hub gave no commit id for the revision", h)
	}
	if len(info.Siblings) > MaxListedObjects {
		return nil, fmt.Errorf("%s: more than %d files", h, MaxListedObjects)
	}
	h.mu.Lock()
	if h.commit == "" {
		h.commit = info.SHA
	} else if h.commit != info.SHA {
		h.mu.Unlock()
		return nil, fmt.Errorf("%s: %w (commit now %s, pinned %s)", h, ErrChanged, info.SHA, h.commit)
	}
	h.mu.Unlock()
	mtime, _ := time.Parse(time.RFC3339, info.LastModified)
	objs := make([]Object, 0, len(info.Siblings))
	seen := make(map[string]bool, len(info.Siblings))
	for _, s := range info.Siblings {
		if checkHTTPPath(s.Name) != nil || seen[s.Name] {
			// Unusable as a file name; Usable would not know why.
			continue
		}
		seen[s.Name] = true
		obj := Object{Key: s.Name, Size: -1, ModTime: mtime}
		switch {
		case s.LFS != nil && isHex(s.LFS.SHA256, 64):
			obj.ETag = `"` + s.LFS.SHA256 + `"`
			if s.LFS.Size != nil {
				obj.Size = *s.LFS.Size
			}
			sum, _ := hex.DecodeString(s.LFS.SHA256)
			obj.Checksum = Checksum{Algorithm: "SHA256", Value: base64.StdEncoding.EncodeToString(sum)}
		case s.LFS == nil && isHex(s.BlobID, 40):
			obj.ETag = `"` + s.BlobID + `"`
			if s.Size != nil {
				obj.Size = *s.Size
			}
		}
		if obj.ETag == "" {
			// The modification time alone would pin nothing here:
			// leave the file for Usable to refuse.
			obj.ModTime = time.Time{}
		}
		objs = append(objs, obj)
	}
	slices.SortFunc(objs, func(a, b Object) int { return strings.Compare(a.Key, b.Key) })
	if gated, isBool := info.Gated.(bool); info.Gated != nil && (!isBool || gated) && len(objs) > 0 {
		// A gated repo lists for anyone but serves only accounts that
		// accepted its terms: ask now, so the mount fails with the
		// reason rather than every read later.
		if _, err := h.Stat(ctx, objs[0].Key); err != nil {
			return nil, err
		}
	}
	return objs, nil
}

func isHex(s string, n int) bool {
	if len(s) != n {
		return false
	}
	_, err := hex.DecodeString(s)
	return err == nil && strings.ToLower(s) == s
}

// Stat asks /resolve at the pinned commit for the file's hash and size.
func (h *HF) Stat(ctx context.Context, key string) (Object, error) {
	if err := checkHTTPPath(key); err != nil {
		return Object{}, fmt.Errorf("HEAD %q: %w (%w)", key, ErrNotFound, err)
	}
	commit, err := h.pinned(ctx)
	if err != nil {
		return Object{}, err
	}
	var obj Object
	err = h.retry.do(ctx, OpStat, 0, "HEAD "+key, func(ctx context.Context) error {
		resp, err := h.hubGet(ctx, http.MethodHead, h.resolveURL(commit, key), "")
		if err != nil {
			return err
		}
		drainHTTP(resp.Body)
		if resp.StatusCode/100 != 2 && resp.StatusCode/100 != 3 {
			return h.hubError(resp, key)
		}
		obj = Object{Key: key, Size: -1, ETag: hfETag(resp.Header)}
		if s, ok := parseDecimal(resp.Header.Get("X-Linked-Size")); ok {
			obj.Size = s
		} else if resp.StatusCode == http.StatusOK {
			obj.Size = resp.ContentLength
		}
		return nil
	})
	if err != nil {
		return Object{}, err
	}
	if obj.Size < 0 {
		return Object{}, fmt.Errorf("HEAD %s: the Hub reports no size", key)
	}
	return obj, nil
}

// hfETag is the file's hash as the Hub names it: X-Linked-Etag for LFS
// files (their sha256), else the ETag (the git blob id).
func hfETag(hdr http.Header) string {
	e := hdr.Get("X-Linked-Etag")
	if e == "" {
		e = hdr.Get("ETag")
	}
	return strings.TrimPrefix(e, "W/")
}

func sameTag(a, b string) bool {
	return strings.Trim(strings.TrimPrefix(a, "W/"), `"`) == strings.Trim(strings.TrimPrefix(b, "W/"), `"`)
}

// pinned returns the pinned commit, resolving the revision first when a
// saved listing stood in for List.
func (h *HF) pinned(ctx context.Context) (string, error) {
	if c := h.Commit(); c != "" {
		return c, nil
	}
	if _, err := h.List(ctx); err != nil {
		return "", err
	}
	return h.Commit(), nil
}

// ReadAt GETs the range from the file's CDN link, resolving it at the
// pinned commit when there is none or it has expired.
func (h *HF) ReadAt(ctx context.Context, obj Object, p []byte, off int64) (int, error) {
	n, atEnd, err := clipRead(obj, len(p), off)
	if err != nil || n == 0 {
		return 0, err
	}
	if err := checkHTTPPath(obj.Key); err != nil {
		return 0, fmt.Errorf("GET %q: %w (%w)", obj.Key, ErrNotFound, err)
	}
	if err := checkPinned(obj); err != nil || obj.ETag == "" {
		return 0, fmt.Errorf("GET %s: %w", obj.Key, ErrUnpinned)
	}
	commit, err := h.pinned(ctx)
	if err != nil {
		return 0, err
	}
	what := fmt.Sprintf("GET %s [%d, %d)", obj.Key, off, off+int64(n))
	return readRetried(ctx, h.retry, what, n, atEnd, func(ctx context.Context) error {
		return h.readRange(ctx, commit, obj, p[:n], off)
	})
}

// readRange is one try: from the file's link, or else the resolve URL,
// whose redirect gives the link. A link the CDN refuses (expired, or
// revoked early) is dropped and the file resolved again, once.
func (h *HF) readRange(ctx context.Context, commit string, obj Object, p []byte, off int64) error {
	for retried := false; ; retried = true {
		link, cached, release, err := h.awaitLink(ctx, obj.Key)
		if err != nil {
			return err
		}
		if !cached {
			link, err = h.resolve(ctx, commit, obj, p, off)
			release()
			if err != nil || link.url == "" {
				// Failed, or served by the Hub itself.
				return err
			}
		}
		status, err := h.cdnRange(ctx, &link, obj, p, off)
		if err == nil {
			h.mu.Lock()
			if cur, ok := h.links[obj.Key]; ok && cur.url == link.url {
				h.links[obj.Key] = link // keeps the CDN's ETag
			}
			h.mu.Unlock()
			return nil
		}
		if status == http.StatusForbidden || status == http.StatusUnauthorized || status == http.StatusGone {
			h.dropLink(obj.Key, link.url)
			if cached && !retried {
				continue
			}
			// Refused straight after the Hub issued it: let the retry
			// budget decide.
			return transient(err, 0)
		}
		return err
	}
}

// awaitLink returns the file's unexpired link. Without one, the first
// caller gets release, to call once it has resolved the file; callers
// meanwhile wait for it, so that the many block reads that start on a
// file at once cost the Hub one resolve, not one each.
func (h *HF) awaitLink(ctx context.Context, key string) (link hfLink, ok bool, release func(), err error) {
	h.mu.Lock()
	if l, ok := h.linkLocked(key); ok {
		h.mu.Unlock()
		return l, true, nil, nil
	}
	wait, busy := h.resolving[key]
	if !busy {
		done := make(chan struct{})
		h.resolving[key] = done
		h.mu.Unlock()
		return hfLink{}, false, func() {
			h.mu.Lock()
			delete(h.resolving, key)
			h.mu.Unlock()
			close(done)
		}, nil
	}
	h.mu.Unlock()
	select {
	case <-wait:
	case <-ctx.Done():
		return hfLink{}, false, nil, ctx.Err()
	}
	// No link still (the file is served by the Hub, or the resolve
	// failed): resolve on our own.
	h.mu.Lock()
	defer h.mu.Unlock()
	l, ok := h.linkLocked(key)
	return l, ok, func() {}, nil
}

// linkLocked returns key's link unless it is about to expire; h.mu held.
func (h *HF) linkLocked(key string) (hfLink, bool) {
	l, ok := h.links[key]
	if ok && !h.now().Before(l.expires.Add(-hfLinkMargin)) {
		delete(h.links, key)
		return hfLink{}, false
	}
	return l, ok
}

func (h *HF) dropLink(key, u string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if l, ok := h.links[key]; ok && l.url == u {
		delete(h.links, key)
	}
}

// resolve GETs the range from /resolve at the pinned commit. The Hub
// either serves it (small non-LFS files) or redirects to a signed CDN
// link, which it returns and keeps; relative redirects (renamed repos)
// stay on the Hub and carry the token.
func (h *HF) resolve(ctx context.Context, commit string, obj Object, p []byte, off int64) (hfLink, error) {
	u := h.resolveURL(commit, obj.Key)
	for range hfMaxRedirect {
		resp, err := h.hubGet(ctx, http.MethodGet, u, fmt.Sprintf("bytes=%d-%d", off, off+int64(len(p))-1))
		if err != nil {
			return hfLink{}, err
		}
		if resp.StatusCode/100 == 2 {
			defer drainHTTP(resp.Body)
			if c := resp.Header.Get("X-Repo-Commit"); c != "" && c != commit {
				return hfLink{}, fmt.Errorf("%w (the Hub served commit %s, pinned %s)", ErrChanged, c, commit)
			}
			if e := hfETag(resp.Header); e != "" && !sameTag(e, obj.ETag) {
				return hfLink{}, fmt.Errorf("%w (hash now %s, was %s)", ErrChanged, e, obj.ETag)
			}
			return hfLink{}, readRangeBody(resp, obj, p, off)
		}
		drainHTTP(resp.Body)
		if resp.StatusCode/100 != 3 {
			return hfLink{}, h.hubError(resp, obj.Key)
		}
		if c := resp.Header.Get("X-Repo-Commit"); c != "" && c != commit {
			return hfLink{}, fmt.Errorf("%w (the Hub resolved commit %s, pinned %s)", ErrChanged, c, commit)
		}
		if e := hfETag(resp.Header); e != "" && !sameTag(e, obj.ETag) {
			return hfLink{}, fmt.Errorf("%w (hash now %s, was %s)", ErrChanged, e, obj.ETag)
		}
		if s := resp.Header.Get("X-Linked-Size"); s != "" && s != strconv.FormatInt(obj.Size, 10) {
			return hfLink{}, fmt.Errorf("%w (size now %s, was %d)", ErrChanged, s, obj.Size)
		}
		loc, err := resp.Request.URL.Parse(resp.Header.Get("Location"))
		if err != nil || (loc.Scheme != "http" && loc.Scheme != "https") || loc.Host == "" {
			return hfLink{}, errors.New("the Hub redirected to an unusable location")
		}
		if loc.Host == h.endpoint.Host && loc.Scheme == h.endpoint.Scheme {
			u = loc.String()
			continue
		}
		if h.net != nil {
			if err := h.net.CheckHost(loc.Host); err != nil {
				return hfLink{}, err
			}
		}
		link := hfLink{url: loc.String(), expires: linkExpiry(loc.Query(), h.now())}
		h.mu.Lock()
		h.links[obj.Key] = link
		h.mu.Unlock()
		return link, nil
	}
	return hfLink{}, fmt.Errorf("more than %d redirects on the Hub", hfMaxRedirect)
}

// linkExpiry reads a signed URL's expiry: CloudFront's Expires (Unix
// seconds) or S3's X-Amz-Date plus X-Amz-Expires.
func linkExpiry(q url.Values, now time.Time) time.Time {
	if s, ok := parseDecimal(q.Get("Expires")); ok {
		return time.Unix(s, 0)
	}
	if d, err := time.Parse("20060102T150405Z", q.Get("X-Amz-Date")); err == nil {
		if s, ok := parseDecimal(q.Get("X-Amz-Expires")); ok {
			return d.Add(time.Duration(s) * time.Second)
		}
	}
	return now.Add(hfLinkDefaultTTL)
}

// cdnRange GETs the range from a signed link, without the token. The
// link is content-addressed; its ETag, once seen, is sent as If-Match and
// must not change. It returns the HTTP status of a refusal.
func (h *HF) cdnRange(ctx context.Context, link *hfLink, obj Object, p []byte, off int64) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, link.url, nil)
	if err != nil {
		return 0, errors.New("building GET request: invalid CDN link")
	}
	req.Header.Set("Range", fmt.Sprintf("bytes=%d-%d", off, off+int64(len(p))-1))
	req.Header.Set("Accept-Encoding", "identity")
	if link.etag != "" {
		req.Header.Set("If-Match", link.etag)
	}
	resp, err := h.send(req)
	if err != nil {
		return 0, err
	}
	defer drainHTTP(resp.Body)
	if resp.StatusCode/100 != 2 {
		return resp.StatusCode, statusError(resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	if e := resp.Header.Get("X-Linked-Etag"); e != "" && !sameTag(e, obj.ETag) {
		return 0, fmt.Errorf("%w (CDN sent hash %s, pinned %s)", ErrChanged, e, obj.ETag)
	}
	if e := resp.Header.Get("ETag"); e != "" {
		switch {
		case link.etag != "" && !sameTag(e, link.etag):
			return 0, fmt.Errorf("%w (CDN ETag now %s, was %s)", ErrChanged, e, link.etag)
		case link.etag == "" && !strings.HasPrefix(e, "W/"):
			link.etag = e
		}
	}
	return 0, readRangeBody(resp, obj, p, off)
}

// readRangeBody checks a 200 or 206 reply to a range request against the
// pinned size and the range asked for, and reads it into p.
func readRangeBody(resp *http.Response, obj Object, p []byte, off int64) error {
	last := off + int64(len(p)) - 1
	if ce := resp.Header.Get("Content-Encoding"); ce != "" && !strings.EqualFold(ce, "identity") {
		return fmt.Errorf("server sent %q-encoded bytes to a range request", ce)
	}
	switch resp.StatusCode {
	case http.StatusPartialContent:
		start, end, total, err := parseHTTPContentRange(resp.Header.Get("Content-Range"))
		if err != nil {
			return transient(err, 0)
		}
		if total >= 0 && total != obj.Size {
			return fmt.Errorf("%w (size now %d, was %d)", ErrChanged, total, obj.Size)
		}
		if start != off || end != last {
			return transient(fmt.Errorf("asked for bytes %d-%d, got %d-%d", off, last, start, end), 0)
		}
		if resp.ContentLength >= 0 && resp.ContentLength != int64(len(p)) {
			return transient(fmt.Errorf("Content-Length %d for %d bytes", resp.ContentLength, len(p)), 0)
		}
	case http.StatusOK:
		if resp.ContentLength != obj.Size {
			return fmt.Errorf("%w (size now %d, was %d)", ErrChanged, resp.ContentLength, obj.Size)
		}
		if _, err := io.CopyN(io.Discard, resp.Body, off); err != nil {
			return transient(fmt.Errorf("skipping to offset %d: %w", off, shortBody(err)), 0)
		}
	default:
		return fmt.Errorf("unexpected HTTP %d to a range request", resp.StatusCode)
	}
	if _, err := io.ReadFull(resp.Body, p); err != nil {
		return transient(fmt.Errorf("reading body: %w", shortBody(err)), 0)
	}
	return nil
}

// resolveURL is {endpoint}/[datasets/]{repo}/resolve/{commit}/{key}.
func (h *HF) resolveURL(commit, key string) string {
	segs := strings.Split(key, "/")
	for i, s := range segs {
		segs[i] = url.PathEscape(s)
	}
	return h.endpoint.String() + "/" + h.repoPath() + "/resolve/" + url.PathEscape(commit) + "/" + strings.Join(segs, "/")
}

// hubGet sends a request to the Hub, with the token.
func (h *HF) hubGet(ctx context.Context, method, u, rng string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, u, nil)
	if err != nil {
		return nil, fmt.Errorf("building %s request: invalid URL", method)
	}
	if h.token != "" {
		req.Header.Set("Authorization", "Bearer "+h.token)
	}
	req.Header.Set("Accept-Encoding", "identity")
	if rng != "" {
		req.Header.Set("Range", rng)
	}
	return h.send(req)
}

// send runs req, dropping the url.Error wrapper that quotes the URL (a
// CDN link carries its signature).
func (h *HF) send(req *http.Request) (*http.Response, error) {
	resp, err := h.client.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, err
	}
	return resp, nil
}

// hubError turns a Hub refusal into one line that says what is missing,
// using the Hub's X-Error-Code. key is the file, "" for the repo.
func (h *HF) hubError(resp *http.Response, key string) error {
	code := resp.Header.Get("X-Error-Code")
	page := h.endpoint.String() + "/" + h.repoPath()
	switch {
	case code == "GatedRepo":
		if h.token == "" {
			return fmt.Errorf("%w: %s is gated: set HF_TOKEN to a token of an account that accepted its terms at %s", ErrAccess, h, page)
		}
		return fmt.Errorf("%w: %s is gated and the token's account has not accepted its terms: accept them at %s", ErrAccess, h, page)
	case resp.Header.Get("X-Error-Message") == "Access to this resource is disabled.":
		return fmt.Errorf("%w: %s has been disabled on the Hub", ErrAccess, h.repoPath())
	case code == "RepoNotFound" || (key == "" && resp.StatusCode == http.StatusNotFound && code == ""):
		if h.token == "" && resp.StatusCode == http.StatusUnauthorized {
			return fmt.Errorf("%w: repository %s does not exist, or is private and needs a token (set HF_TOKEN)", ErrNotFound, h.repoPath())
		}
		return fmt.Errorf("%w: repository %s does not exist or the token cannot see it", ErrNotFound, h.repoPath())
	case code == "RevisionNotFound":
		return fmt.Errorf("%w: revision %q of %s does not exist", ErrNotFound, h.rev, h.repoPath())
	case code == "EntryNotFound" || resp.StatusCode == http.StatusNotFound:
		return fmt.Errorf("%w: %s has no file %q at the pinned commit", ErrNotFound, h.repoPath(), key)
	case resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden:
		if h.token == "" {
			return fmt.Errorf("%w: %s needs a token (set HF_TOKEN) (HTTP %d)", ErrAccess, h, resp.StatusCode)
		}
		return fmt.Errorf("%w: the Hub refused the token for %s (HTTP %d)", ErrAccess, h, resp.StatusCode)
	}
	return statusError(resp.StatusCode, resp.Header.Get("Retry-After"))
}

// HFToken finds the Hub token as huggingface_hub does: HF_TOKEN, then the
// variable named by envName, then the token file ($HF_TOKEN_PATH, else
// $HF_HOME/token, else ~/.cache/huggingface/token). None is "".
func HFToken(getenv func(string) string, envName string) (string, error) {
	if t := strings.TrimSpace(getenv("HF_TOKEN")); t != "" {
		return t, nil
	}
	if envName != "" {
		if t := strings.TrimSpace(getenv(envName)); t != "" {
			return t, nil
		}
	}
	path := getenv("HF_TOKEN_PATH")
	if path == "" {
		home := getenv("HF_HOME")
		if home == "" {
			base := getenv("XDG_CACHE_HOME")
			if base == "" {
				if h := getenv("HOME"); h != "" {
					base = filepath.Join(h, ".cache")
				}
			}
			if base == "" {
				return "", nil
			}
			home = filepath.Join(base, "huggingface")
		}
		path = filepath.Join(home, "token")
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("reading the Hugging Face token file: %w", err)
	}
	if len(b) > 4096 {
		return "", fmt.Errorf("the Hugging Face token file %s is larger than 4096 bytes", path)
	}
	return strings.TrimSpace(string(b)), nil
}

// parseHFLocation parses what follows hf://: [datasets/|models/]org/name,
// then optionally @revision (which may hold '/', as refs/pr/1 does).
func parseHFLocation(rest string) (Location, error) {
	repo, rev, hasRev := strings.Cut(rest, "@")
	if hasRev && rev == "" {
		return Location{}, errors.New("empty revision after '@'")
	}
	loc := Location{Scheme: "hf", Revision: rev}
	if r, ok := strings.CutPrefix(repo, "datasets/"); ok {
		repo, loc.Dataset = r, true
	} else if r, ok := strings.CutPrefix(repo, "models/"); ok {
		repo = r
	}
	repo = strings.TrimSuffix(repo, "/")
	if err := checkHFRepo(repo); err != nil {
		return Location{}, fmt.Errorf("%w: want hf://org/name[@revision] or hf://datasets/org/name[@revision]", err)
	}
	if hasRev {
		if err := checkHFRevision(rev); err != nil {
			return Location{}, err
		}
	}
	loc.Repo = repo
	return loc, nil
}
