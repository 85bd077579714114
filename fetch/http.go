package fetch

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/modelfs/modelfs/modelformat"
)

// HTTPOptions configure an HTTP source.
type HTTPOptions struct {
	// URL names one file, or, ending in '/', a directory whose file list
	// comes from a manifest (modelfs.json or model.safetensors.index.json).
	// A query string is sent with every request (so a token in it works),
	// but never shown.
	URL string
	// Token, when set, is sent as "Authorization: Bearer <Token>". It never
	// appears in errors or String.
	Token string
	// Client defaults to one with many idle connections per host and no
	// overall timeout: each try is bounded by Retry.AttemptTimeout instead.
	Client *http.Client
	// Net bounds where the default client connects; nil allows all.
	Net   *NetPolicy
	Retry RetryOptions
}

// HTTP is a Source over plain HTTP(S) GETs with Range requests. Objects are
// pinned to the ETag (If-Match) or, lacking one, Last-Modified
// (If-Unmodified-Since) seen when they were listed.
type HTTP struct {
	base   *url.URL // as given, query and userinfo included
	dir    bool     // base ends in '/'
	file   string   // the key of a single-file URL
	token  string
	client *http.Client
	retry  RetryOptions
	name   string // base without userinfo, query or fragment
}

var _ Source = (*HTTP)(nil)

const (
	httpManifest     = "modelfs.json"
	httpHFIndex      = "model.safetensors.index.json"
	httpMaxManifest  = 16 << 20 // bytes; real manifests are far smaller
	httpHeadParallel = 16
	httpDrainMax     = 64 << 10 // past this, dropping the connection is cheaper
)

// httpHFOptional are the files of a Hugging Face model directory that the
// index does not name but loaders want; each is listed only if it exists.
var httpHFOptional = []string{
	"config.json", "generation_config.json", "tokenizer.json",
	"tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
}

// NewHTTP checks opts and builds the source; it makes no request.
func NewHTTP(opts HTTPOptions) (*HTTP, error) {
	if opts.URL == "" {
		return nil, errors.New("fetch: HTTP source: no URL given")
	}
	u, err := url.Parse(opts.URL)
	if err != nil {
		// url.Error repeats the whole URL, which may hold a signature.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, fmt.Errorf("fetch: HTTP source: invalid URL: %w", err)
	}
	u.Scheme = strings.ToLower(u.Scheme)
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("fetch: HTTP source: scheme %q is not http or https", u.Scheme)
	}
	if u.Host == "" {
		return nil, errors.New("fetch: HTTP source: URL has no host")
	}
	for i := 0; i < len(opts.Token); i++ {
		if c := opts.Token[i]; c < 0x20 || c == 0x7f {
			return nil, errors.New("fetch: HTTP source: token contains control characters")
		}
	}
	if u.Path == "" {
		u.Path = "/"
	}
	u.Fragment, u.RawFragment = "", "" // never sent; keep it out of request URLs
	h := &HTTP{base: u, token: opts.Token, client: opts.Client, retry: opts.Retry}
	if h.client == nil {
		h.client = defaultHTTPClient(opts.Net)
	}
	shown := *u
	shown.User, shown.RawQuery, shown.ForceQuery, shown.Fragment, shown.RawFragment = nil, "", false, "", ""
	h.name = shown.String()

	esc := u.EscapedPath()
	h.dir = strings.HasSuffix(esc, "/")
	if !h.dir {
		last := esc[strings.LastIndexByte(esc, '/')+1:]
		key, err := url.PathUnescape(last)
		if err == nil {
			err = checkHTTPPath(key)
		}
		if err != nil || strings.Contains(key, "/") {
			return nil, fmt.Errorf("fetch: HTTP source %s: last path segment is not a usable file name", h.name)
		}
		h.file = key
	}
	return h, nil
}

func defaultHTTPClient(policy *NetPolicy) *http.Client {
	t, ok := http.DefaultTransport.(*http.Transport)
	if ok {
		t = t.Clone()
	} else {
		t = &http.Transport{Proxy: http.ProxyFromEnvironment, ForceAttemptHTTP2: true}
	}
	// Many block reads run in parallel against one host; the default of
	// 2 idle connections per host would re-handshake constantly.
	t.MaxIdleConns = 256
	t.MaxIdleConnsPerHost = 64
	t.IdleConnTimeout = 90 * time.Second
	policy.applyTransport(t)
	return &http.Client{Transport: t, CheckRedirect: policy.checkRedirect}
}

// String returns the URL without userinfo, query string or fragment.
func (h *HTTP) String() string { return h.name }

// ID is the scheme, host and path, never the userinfo; a query string,
// which may carry a signature, only as a hash, since it can still select
// different content.
func (h *HTTP) ID() string {
	u := *h.base
	u.User, u.Fragment, u.RawFragment = nil, "", ""
	q := u.RawQuery
	u.RawQuery, u.ForceQuery = "", false
	id := u.String()
	if q != "" {
		sum := sha256.Sum256([]byte(q))
		id += "?sha256=" + hex.EncodeToString(sum[:])
	}
	return id
}

// List returns the single file, or the files the directory's manifest
// names, each HEADed for its size and version.
func (h *HTTP) List(ctx context.Context) ([]Object, error) {
	if !h.dir {
		obj, err := h.Stat(ctx, h.file)
		if err != nil {
			return nil, err
		}
		return []Object{obj}, nil
	}
	entries, err := h.manifest(ctx)
	if err != nil {
		return nil, err
	}
	objs, err := h.probeAll(ctx, entries)
	if err != nil {
		return nil, err
	}
	slices.SortFunc(objs, func(a, b Object) int { return strings.Compare(a.Key, b.Key) })
	return objs, nil
}

// Stat HEADs one object.
func (h *HTTP) Stat(ctx context.Context, key string) (Object, error) {
	if err := h.checkKey(key); err != nil {
		return Object{}, fmt.Errorf("HEAD %q: %w", key, err)
	}
	obj, err := h.probe(ctx, key)
	if err != nil {
		return Object{}, err
	}
	if obj.Size < 0 {
		return Object{}, fmt.Errorf("HEAD %s: server reports no size", key)
	}
	return obj, nil
}

// ReadAt GETs the range [off, off+len(p)) clipped to obj.Size, on condition
// that the object is still the pinned version.
func (h *HTTP) ReadAt(ctx context.Context, obj Object, p []byte, off int64) (int, error) {
	n, atEnd, err := clipRead(obj, len(p), off)
	if err != nil {
		return 0, err
	}
	if n == 0 {
		return 0, nil
	}
	if err := h.checkKey(obj.Key); err != nil {
		return 0, fmt.Errorf("GET %q: %w", obj.Key, err)
	}
	if err := checkPinned(obj); err != nil {
		return 0, fmt.Errorf("GET %s: %w", obj.Key, err)
	}
	u := h.objectURL(obj.Key)
	what := fmt.Sprintf("GET %s [%d, %d)", obj.Key, off, off+int64(n))
	return readRetried(ctx, h.retry, what, n, atEnd, func(ctx context.Context) error {
		return h.readRange(ctx, u, obj, p[:n], off)
	})
}

// readRetried is how every source's ReadAt ends: fn reads the n bytes
// asked for (already clipped to the object) in one request, retried
// within r's budget; a read that fails reports no bytes, since p may hold
// some of a failed try, and one that reaches the object's end returns
// io.EOF with them.
func readRetried(ctx context.Context, r RetryOptions, what string, n int, atEnd bool, fn func(context.Context) error) (int, error) {
	if err := r.do(ctx, OpGet, int64(n), what, fn); err != nil {
		return 0, err
	}
	if atEnd {
		return n, io.EOF
	}
	return n, nil
}

func (h *HTTP) readRange(ctx context.Context, u string, obj Object, p []byte, off int64) error {
	req, err := h.newRequest(ctx, http.MethodGet, u)
	if err != nil {
		return err
	}
	last := off + int64(len(p)) - 1
	req.Header.Set("Range", fmt.Sprintf("bytes=%d-%d", off, last))
	// Offsets must count the stored bytes, not a compressed form.
	req.Header.Set("Accept-Encoding", "identity")
	switch {
	case obj.ETag != "" && !strings.HasPrefix(obj.ETag, "W/"):
		req.Header.Set("If-Match", obj.ETag)
	case !obj.ModTime.IsZero():
		// A weak ETag never passes If-Match (strong comparison), so
		// fall back to the date; the ETag is still compared below.
		req.Header.Set("If-Unmodified-Since", obj.ModTime.UTC().Format(http.TimeFormat))
	default:
		// Nothing would stop bytes of two versions from mixing.
		return fmt.Errorf("%w: no strong ETag or Last-Modified to send as a precondition", ErrUnpinned)
	}
	resp, err := h.send(req)
	if err != nil {
		return err
	}
	defer drainHTTP(resp.Body)

	if resp.StatusCode != http.StatusPartialContent && resp.StatusCode != http.StatusOK {
		if resp.StatusCode/100 == 2 {
			return fmt.Errorf("unexpected HTTP %d to a range request", resp.StatusCode)
		}
		return statusError(resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	if err := checkHTTPVersion(obj, resp.Header); err != nil {
		return err
	}
	if ce := resp.Header.Get("Content-Encoding"); ce != "" && !strings.EqualFold(ce, "identity") {
		return fmt.Errorf("server sent %q-encoded bytes to a range request", ce)
	}
	if resp.StatusCode == http.StatusPartialContent {
		start, end, total, err := parseHTTPContentRange(resp.Header.Get("Content-Range"))
		if err != nil {
			return transient(err, 0)
		}
		if total >= 0 && total != obj.Size {
			return fmt.Errorf("%w (size now %d, was %d)", ErrChanged, total, obj.Size)
		}
		if start != off || end != last {
			// A confused cache or proxy; the origin may do better.
			return transient(fmt.Errorf("asked for bytes %d-%d, got %d-%d", off, last, start, end), 0)
		}
		if resp.ContentLength >= 0 && resp.ContentLength != int64(len(p)) {
			// The headers disagree on what the body is; trust neither.
			return transient(fmt.Errorf("Content-Length %d for the %d bytes of %s", resp.ContentLength, len(p), resp.Header.Get("Content-Range")), 0)
		}
	} else {
		// The server ignored Range: skip to off, which is bounded by
		// obj.Size, but only if the whole body is the pinned size.
		if resp.ContentLength < 0 {
			return errors.New("server ignored Range and sent no Content-Length")
		}
		if resp.ContentLength != obj.Size {
			return fmt.Errorf("%w (size now %d, was %d)", ErrChanged, resp.ContentLength, obj.Size)
		}
		if _, err := io.CopyN(io.Discard, resp.Body, off); err != nil {
			return transient(fmt.Errorf("skipping to offset %d: %w", off, shortBody(err)), 0)
		}
	}
	if _, err := io.ReadFull(resp.Body, p); err != nil {
		return transient(fmt.Errorf("reading body: %w", shortBody(err)), 0)
	}
	return nil
}

// shortBody reports a body that ended early as io.ErrUnexpectedEOF.
func shortBody(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// checkHTTPVersion fails with ErrChanged when the response names a version
// other than the pinned one. W/ prefixes are ignored in comparing tags.
// A strong ETag was also sent as If-Match; an object pinned by date
// (no ETag, or a weak one, which may stay while the bytes change) must
// get its Last-Modified back on every reply, since a server that ignores
// If-Unmodified-Since would otherwise send new bytes unnoticed.
func checkHTTPVersion(obj Object, hdr http.Header) error {
	if etag := hdr.Get("ETag"); etag != "" && obj.ETag != "" &&
		strings.TrimPrefix(etag, "W/") != strings.TrimPrefix(obj.ETag, "W/") {
		return fmt.Errorf("%w (ETag now %s, was %s)", ErrChanged, etag, obj.ETag)
	}
	if obj.ETag != "" && !strings.HasPrefix(obj.ETag, "W/") {
		return nil
	}
	lm, err := http.ParseTime(hdr.Get("Last-Modified"))
	if err != nil {
		return fmt.Errorf("%w: the reply has no Last-Modified to compare with the pinned one", ErrUnpinned)
	}
	if !lm.Equal(obj.ModTime) {
		return fmt.Errorf("%w (modified %s, was %s)", ErrChanged,
			lm.UTC().Format(time.RFC3339), obj.ModTime.UTC().Format(time.RFC3339))
	}
	return nil
}

// parseHTTPContentRange parses "bytes start-end/total". total is -1 for
// "*"; start and end are -1 for the unsatisfied form "bytes */total".
func parseHTTPContentRange(s string) (start, end, total int64, err error) {
	bad := fmt.Errorf("malformed Content-Range %q", s)
	rest, ok := strings.CutPrefix(s, "bytes ")
	if !ok {
		return 0, 0, 0, bad
	}
	rng, tot, ok := strings.Cut(rest, "/")
	if !ok {
		return 0, 0, 0, bad
	}
	total = -1
	if tot != "*" {
		if total, ok = parseDecimal(tot); !ok {
			return 0, 0, 0, bad
		}
	}
	if rng == "*" {
		if total < 0 {
			return 0, 0, 0, bad
		}
		return -1, -1, total, nil
	}
	a, b, ok := strings.Cut(rng, "-")
	if !ok {
		return 0, 0, 0, bad
	}
	start, ok1 := parseDecimal(a)
	end, ok2 := parseDecimal(b)
	if !ok1 || !ok2 || end < start || (total >= 0 && end >= total) {
		return 0, 0, 0, bad
	}
	return start, end, total, nil
}

// parseDecimal parses a header's byte count: ASCII digits only, so no
// sign, space or base prefix that strconv would take, and no overflow.
func parseDecimal(s string) (int64, bool) {
	if s == "" || strings.TrimLeft(s, "0123456789") != "" {
		return 0, false
	}
	n, err := strconv.ParseInt(s, 10, 64)
	return n, err == nil
}

// probe HEADs key for its size and version, falling back to a one-byte
// range GET where HEAD is refused (presigned GET URLs answer it with 403)
// or carries no length. Size is -1 when neither tells it.
func (h *HTTP) probe(ctx context.Context, key string) (Object, error) {
	u := h.objectURL(key)
	var obj Object
	var fallback bool
	err := h.retry.do(ctx, OpStat, 0, "HEAD "+key, func(ctx context.Context) error {
		obj, fallback = Object{}, false
		req, err := h.newRequest(ctx, http.MethodHead, u)
		if err != nil {
			return err
		}
		req.Header.Set("Accept-Encoding", "identity")
		resp, err := h.send(req)
		if err != nil {
			return err
		}
		drainHTTP(resp.Body)
		switch {
		case resp.StatusCode == http.StatusMethodNotAllowed || resp.StatusCode == http.StatusForbidden ||
			resp.StatusCode == http.StatusNotImplemented:
			fallback = true
		case resp.StatusCode/100 == 2:
			obj = httpObject(key, resp.Header)
			obj.Checksum = httpChecksum(resp)
			obj.Size = resp.ContentLength
			fallback = obj.Size < 0
		default:
			return statusError(resp.StatusCode, resp.Header.Get("Retry-After"))
		}
		return nil
	})
	if err != nil || !fallback {
		return obj, err
	}
	err = h.retry.do(ctx, OpStat, 0, "GET "+key+" [0, 1)", func(ctx context.Context) error {
		obj = Object{}
		req, err := h.newRequest(ctx, http.MethodGet, u)
		if err != nil {
			return err
		}
		req.Header.Set("Range", "bytes=0-0")
		req.Header.Set("Accept-Encoding", "identity")
		resp, err := h.send(req)
		if err != nil {
			return err
		}
		defer drainHTTP(resp.Body)
		obj = httpObject(key, resp.Header)
		// Digests describe the whole representation, even on a 206.
		obj.Checksum = httpChecksum(resp)
		switch resp.StatusCode {
		case http.StatusPartialContent, http.StatusRequestedRangeNotSatisfiable:
			// 416 "bytes */0" is how an empty file answers.
			_, _, total, err := parseHTTPContentRange(resp.Header.Get("Content-Range"))
			if err != nil {
				if resp.StatusCode != http.StatusPartialContent {
					return statusError(resp.StatusCode, "")
				}
				return err
			}
			obj.Size = total
		case http.StatusOK:
			obj.Size = resp.ContentLength
		default:
			return statusError(resp.StatusCode, resp.Header.Get("Retry-After"))
		}
		return nil
	})
	return obj, err
}

// httpChecksum is the whole-file digest a HEAD reply gives: Repr-Digest
// (RFC 9530), else Digest (RFC 3230), else, on a redirect on the way,
// Hugging Face's X-Linked-Etag, which is the sha256 of an LFS file. A
// digest of a content-coded reply covers the coded bytes, not the file:
// it is not used.
func httpChecksum(resp *http.Response) Checksum {
	if ce := resp.Header.Get("Content-Encoding"); ce != "" && !strings.EqualFold(ce, "identity") {
		return Checksum{}
	}
	for _, h := range []struct {
		name       string
		structured bool
	}{{"Repr-Digest", true}, {"Digest", false}} {
		if c := parseDigest(resp.Header.Values(h.name), h.structured); c.Value != "" {
			return c
		}
	}
	// The Hub answers for an LFS file with a redirect to its CDN, which
	// sends the file; the redirect carries the hash.
	for r := resp.Request; r != nil && r.Response != nil; r = r.Response.Request {
		v := strings.Trim(r.Response.Header.Get("X-Linked-Etag"), `"`)
		if sum, err := hex.DecodeString(v); err == nil && len(sum) == sha256.Size {
			return Checksum{Algorithm: "SHA256", Value: base64.StdEncoding.EncodeToString(sum)}
		}
	}
	return Checksum{}
}

// digestAlgorithms maps the HTTP digest names to S3's algorithm names and
// digest sizes, strongest first.
var digestAlgorithms = []struct {
	http, algo string
	size       int
}{{"sha-256", "SHA256", 32}, {"sha", "SHA1", 20}, {"md5", "MD5", 16}}

// parseDigest reads a Repr-Digest (structured: sha-256=:B64:) or Digest
// (sha-256=B64) field and returns its strongest known digest.
func parseDigest(values []string, structured bool) Checksum {
	got := map[string]string{}
	for _, v := range values {
		for _, item := range strings.Split(v, ",") {
			name, val, ok := strings.Cut(strings.TrimSpace(item), "=")
			if !ok {
				continue
			}
			if structured {
				if len(val) < 2 || val[0] != ':' || val[len(val)-1] != ':' {
					continue
				}
				val = val[1 : len(val)-1]
			}
			got[strings.ToLower(strings.TrimSpace(name))] = val
		}
	}
	for _, a := range digestAlgorithms {
		if sum, err := base64.StdEncoding.DecodeString(got[a.http]); err == nil && len(sum) == a.size {
			return Checksum{Algorithm: a.algo, Value: got[a.http]}
		}
	}
	return Checksum{}
}

func httpObject(key string, hdr http.Header) Object {
	obj := Object{Key: key, Size: -1, ETag: hdr.Get("ETag")}
	if len(obj.ETag) > maxVersionLen {
		// Still too long for Usable to take, but no longer a copy of
		// whatever the server sent.
		obj.ETag = strings.Clone(obj.ETag[:maxVersionLen+1])
	}
	if t, err := http.ParseTime(hdr.Get("Last-Modified")); err == nil {
		obj.ModTime = t
	}
	return obj
}

// httpEntry is one file named by a manifest.
type httpEntry struct {
	key      string
	size     int64 // from the manifest, unchecked; meaningful when sized
	sized    bool  // the manifest gives a size
	optional bool  // skip rather than fail when missing
}

// manifest fetches and parses the directory's file list.
func (h *HTTP) manifest(ctx context.Context) ([]httpEntry, error) {
	body, status1, err := h.getManifest(ctx, httpManifest)
	if err != nil {
		return nil, err
	}
	if body != nil {
		entries, err := parseModelfsManifest(body)
		if err != nil {
			return nil, fmt.Errorf("%s%s: %w", h.name, httpManifest, err)
		}
		return entries, nil
	}
	body, status2, err := h.getManifest(ctx, httpHFIndex)
	if err != nil {
		return nil, err
	}
	if body != nil {
		entries, err := parseHFIndex(body)
		if err != nil {
			return nil, fmt.Errorf("%s%s: %w", h.name, httpHFIndex, err)
		}
		return entries, nil
	}
	// Stores that hide which keys exist answer 403 for a missing one, so
	// 403 means "absent" here; still, say access when that is all we got.
	sentinel := ErrNotFound
	if status1 == http.StatusForbidden || status2 == http.StatusForbidden {
		sentinel = ErrAccess
	}
	return nil, fmt.Errorf("no manifest found at %s: tried %s (HTTP %d) and %s (HTTP %d): %w",
		h.name, httpManifest, status1, httpHFIndex, status2, sentinel)
}

// getManifest GETs name under the base. A nil body with a nil error means
// the file is absent (404, 410 or 403), with status saying which.
func (h *HTTP) getManifest(ctx context.Context, name string) (body []byte, status int, err error) {
	u := h.objectURL(name)
	err = h.retry.do(ctx, OpList, 0, "GET "+name, func(ctx context.Context) error {
		body, status = nil, 0
		req, err := h.newRequest(ctx, http.MethodGet, u)
		if err != nil {
			return err
		}
		resp, err := h.send(req)
		if err != nil {
			return err
		}
		defer drainHTTP(resp.Body)
		status = resp.StatusCode
		switch {
		case status == http.StatusOK:
		case status == http.StatusNotFound || status == http.StatusGone || status == http.StatusForbidden:
			return nil
		case status/100 == 2:
			return fmt.Errorf("unexpected HTTP %d", status)
		default:
			return statusError(status, resp.Header.Get("Retry-After"))
		}
		b, err := io.ReadAll(io.LimitReader(resp.Body, httpMaxManifest+1))
		if err != nil {
			return transient(fmt.Errorf("reading body: %w", err), 0)
		}
		if len(b) > httpMaxManifest {
			return fmt.Errorf("manifest is larger than %d bytes", httpMaxManifest)
		}
		body = b
		return nil
	})
	return body, status, err
}

// parseModelfsManifest accepts ["path", ...] or
// {"files": [{"path": "...", "size": N}, ...]} and nothing else.
func parseModelfsManifest(b []byte) ([]httpEntry, error) {
	var entries []httpEntry
	if t := bytes.TrimLeft(b, " \t\r\n"); len(t) > 0 && t[0] == '[' {
		var paths []*string
		if err := decodeStrictJSON(b, &paths, true); err != nil {
			return nil, err
		}
		for i, p := range paths {
			if p == nil {
				return nil, fmt.Errorf("entry %d is null", i)
			}
			entries = append(entries, httpEntry{key: *p})
		}
	} else {
		var m struct {
			Files []*struct {
				Path *string `json:"path"`
				// A number, taken as such: an overflow or a
				// fraction is the entry's problem, not the manifest's.
				Size json.RawMessage `json:"size"`
			} `json:"files"`
		}
		if err := decodeStrictJSON(b, &m, true); err != nil {
			return nil, err
		}
		if m.Files == nil {
			return nil, errors.New(`no "files" array`)
		}
		for i, f := range m.Files {
			if f == nil || f.Path == nil {
				return nil, fmt.Errorf("entry %d has no path", i)
			}
			e := httpEntry{key: *f.Path}
			if f.Size != nil {
				size, err := manifestSize(f.Size)
				if err != nil {
					return nil, fmt.Errorf("entry %q: %w", *f.Path, err)
				}
				// Out of range is the entry's problem, not the
				// manifest's: Usable refuses it alone.
				e.size, e.sized = size, true
			}
			entries = append(entries, e)
		}
	}
	if len(entries) == 0 {
		return nil, errors.New("manifest lists no files")
	}
	if len(entries) > MaxListedObjects {
		// Each would be HEADed.
		return nil, fmt.Errorf("manifest lists more than %d files", MaxListedObjects)
	}
	seen := make(map[string]bool, len(entries))
	for _, e := range entries {
		if err := checkHTTPPath(e.key); err != nil {
			return nil, fmt.Errorf("entry %q: %w", e.key, err)
		}
		if seen[e.key] {
			return nil, fmt.Errorf("entry %q is listed twice", e.key)
		}
		seen[e.key] = true
	}
	return entries, nil
}

// manifestSize reads a manifest's "size": a JSON number (not a string or
// null), and -1 for one that is not a whole number of bytes fitting an
// int64, for Usable to refuse.
func manifestSize(raw json.RawMessage) (int64, error) {
	if len(raw) == 0 || raw[0] != '-' && (raw[0] < '0' || raw[0] > '9') {
		return 0, fmt.Errorf("size %s is not a number", raw)
	}
	if v, err := strconv.ParseInt(string(raw), 10, 64); err == nil {
		return v, nil
	}
	return -1, nil
}

// parseHFIndex lists a Hugging Face sharded checkpoint: the index, every
// shard it maps to, and the usual side files if present.
func parseHFIndex(b []byte) ([]httpEntry, error) {
	idx, err := modelformat.ReadIndex(bytes.NewReader(b), int64(len(b)), modelformat.Options{MaxHeader: httpMaxManifest})
	if err != nil {
		return nil, err
	}
	if len(idx.Shards) > MaxListedObjects {
		return nil, fmt.Errorf("weight_map names more than %d files", MaxListedObjects)
	}
	seen := map[string]bool{httpHFIndex: true}
	entries := []httpEntry{{key: httpHFIndex}}
	for _, f := range idx.Shards {
		// Stricter than the index's own rules: keys become file names.
		if err := checkHTTPPath(f); err != nil {
			return nil, fmt.Errorf("weight_map file %q: %w", f, err)
		}
		if !seen[f] {
			seen[f] = true
			entries = append(entries, httpEntry{key: f})
		}
	}
	for _, f := range httpHFOptional {
		if !seen[f] {
			entries = append(entries, httpEntry{key: f, optional: true})
		}
	}
	return entries, nil
}

// decodeStrictJSON decodes exactly one JSON value and rejects trailing data
// and, when strict, unknown object fields.
func decodeStrictJSON(b []byte, v any, strict bool) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	if strict {
		dec.DisallowUnknownFields()
	}
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("invalid JSON: %w", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("invalid JSON: data after the top-level value")
	}
	return nil
}

// checkHTTPPath accepts only plain relative '/'-separated paths, since
// manifests are untrusted and keys become file names: no absolute paths,
// empty, "." or ".." segments, backslashes, control characters or invalid
// UTF-8.
func checkHTTPPath(p string) error {
	switch {
	case p == "":
		return errors.New("empty path")
	case !utf8.ValidString(p):
		return errors.New("path is not valid UTF-8")
	case strings.HasPrefix(p, "/"):
		return errors.New("absolute path")
	case strings.ContainsRune(p, '\\'):
		return errors.New("path contains a backslash")
	}
	for _, r := range p {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return errors.New("path contains a control character")
		}
	}
	for seg := range strings.SplitSeq(p, "/") {
		switch seg {
		case "":
			return errors.New("path has an empty segment")
		case ".", "..":
			return fmt.Errorf("path has a %q segment", seg)
		}
	}
	return nil
}

// checkKey rejects keys this source cannot have listed.
func (h *HTTP) checkKey(key string) error {
	if !h.dir {
		if key != h.file {
			return fmt.Errorf("%w (this source holds only %q)", ErrNotFound, h.file)
		}
		return nil
	}
	if err := checkHTTPPath(key); err != nil {
		return fmt.Errorf("%w (%w)", ErrNotFound, err)
	}
	return nil
}

// probeAll HEADs every entry, a bounded number at a time. Optional entries
// that are missing are left out; any other failure fails the listing.
// Sizes out of range or unknown are left for Usable to refuse, so that one
// such file does not hide the others.
func (h *HTTP) probeAll(ctx context.Context, entries []httpEntry) ([]Object, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	objs := make([]Object, len(entries))
	found := make([]bool, len(entries))
	var (
		next     atomic.Int64
		wg       sync.WaitGroup
		errOnce  sync.Once
		firstErr error
	)
	fail := func(err error) {
		errOnce.Do(func() { firstErr = err; cancel() })
	}
	for range min(httpHeadParallel, len(entries)) {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= len(entries) || ctx.Err() != nil {
					return
				}
				e := entries[i]
				if e.sized && checkSize(e.size) != nil {
					// Refused whatever the server says: no request.
					objs[i], found[i] = Object{Key: e.key, Size: e.size}, true
					continue
				}
				obj, err := h.probe(ctx, e.key)
				if err != nil {
					if e.optional && (errors.Is(err, ErrNotFound) || errors.Is(err, ErrAccess)) {
						continue
					}
					fail(err)
					return
				}
				switch {
				case obj.Size < 0 && e.sized:
					obj.Size = e.size
				case e.sized && obj.Size != e.size:
					fail(fmt.Errorf("HEAD %s: %w (manifest says %d bytes, server %d)", e.key, ErrChanged, e.size, obj.Size))
					return
				}
				objs[i], found[i] = obj, true
			}
		})
	}
	wg.Wait()
	if firstErr != nil {
		return nil, firstErr
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	out := objs[:0]
	for i, obj := range objs {
		if found[i] {
			out = append(out, obj)
		}
	}
	return out, nil
}

// objectURL is the request URL for key: the base URL itself for a
// single-file source, else the base with key's segments escaped onto it.
func (h *HTTP) objectURL(key string) string {
	if !h.dir {
		return h.base.String()
	}
	u := *h.base
	segs := strings.Split(key, "/")
	for i, s := range segs {
		segs[i] = url.PathEscape(s)
	}
	u.Path = h.base.Path + key
	u.RawPath = h.base.EscapedPath() + strings.Join(segs, "/")
	return u.String()
}

func (h *HTTP) newRequest(ctx context.Context, method, u string) (*http.Request, error) {
	req, err := http.NewRequestWithContext(ctx, method, u, nil)
	if err != nil {
		// Cannot happen for a URL that parsed in NewHTTP; do not echo it.
		return nil, fmt.Errorf("building %s request: invalid URL", method)
	}
	if h.token != "" {
		req.Header.Set("Authorization", "Bearer "+h.token)
	}
	return req, nil
}

// send runs req, stripping the url.Error wrapper, whose message holds the
// full URL and so possibly a signature.
func (h *HTTP) send(req *http.Request) (*http.Response, error) {
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

// drainHTTP reads a little of what is left so the connection can be reused,
// then closes the body.
func drainHTTP(body io.ReadCloser) {
	_, _ = io.CopyN(io.Discard, body, httpDrainMax)
	_ = body.Close()
}
