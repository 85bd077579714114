package fetch

import (
	"context"
	"crypto/tls"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"cloud.google.com/go/auth"
	"cloud.google.com/go/auth/credentials"
)

// GCSEmulatorEnv names the emulator that Google's own libraries and tools
// send Cloud Storage requests to, unauthenticated, when it is set.
const GCSEmulatorEnv = "STORAGE_EMULATOR_HOST"

// gcsDefaultEndpoint is Cloud Storage's JSON API, which serves listings,
// metadata and (alt=media) object bytes.
const gcsDefaultEndpoint = "https://storage.googleapis.com/storage/v1/"

// The OAuth2 scopes tokens are asked for: a source only reads; a writer
// (GCSOptions.Write) also creates and deletes objects.
const (
	gcsReadOnlyScope  = "https://www.googleapis.com/auth/devstorage.read_only"
	gcsReadWriteScope = "https://www.googleapis.com/auth/devstorage.read_write"
)

// gcsListPage is how many objects one listing request asks for, the
// most the JSON API returns.
const gcsListPageSize = 1000

// GCSOptions configures a Google Cloud Storage source.
type GCSOptions struct {
	Bucket string
	// Prefix is the object name prefix the mount shows as its root.
	Prefix string
	// Endpoint overrides the JSON API endpoint (a Private Service Connect
	// endpoint, an emulator): http(s)://host[:port], /storage/v1/ implied
	// when it has no path. "" uses GCSEmulatorEnv, unauthenticated, when
	// that is set, else Google's.
	Endpoint string
	// NoSignRequest sends anonymous requests, for public buckets.
	// Otherwise credentials come from Application Default Credentials:
	// GOOGLE_APPLICATION_CREDENTIALS (a service account key or a workload
	// identity federation file), gcloud's application default login, or
	// the metadata server (GCE, GKE Workload Identity).
	NoSignRequest bool
	// MaxConns bounds connections to the store (0 = 64).
	MaxConns int
	// Logger receives a debug line per request: method, path and status,
	// never headers (nil: none).
	Logger *slog.Logger
	// Net bounds where requests connect, the store's and the token
	// endpoint's a key file names; the metadata server, which lends the
	// node's identity, is reached only when no key file is given. nil
	// allows all.
	Net   *NetPolicy
	Retry RetryOptions
	// Write asks for tokens that may also write, for the upload methods
	// (pack publishing); a mount's are read-only.
	Write bool
}

// GCS is a Source over one Cloud Storage bucket and prefix. Objects are
// pinned to their generation; every read names it and carries it as a
// precondition, so a replaced object fails the read (ErrChanged).
type GCS struct {
	hc       *http.Client
	api      string     // JSON API base URL, ending in "/"
	upload   string     // its upload counterpart, ending in "/"
	creds    tokenGiver // nil: anonymous
	log      *slog.Logger
	name     string
	prefix   string // as the user gave it
	endpoint string // "" for Google's
	// root is what keys are relative to: the prefix as a directory, or
	// the parent of a prefix that names a single object. List settles it.
	root  string
	retry RetryOptions
}

var _ Source = (*GCS)(nil)

// tokenGiver hands out OAuth2 access tokens, cached and refreshed.
type tokenGiver interface {
	Token(context.Context) (*auth.Token, error)
}

// NewGCS builds the client and finds credentials; it sends no request to
// the store. Retries are fetch's, so that short bodies and stalls share
// one budget with 5xx replies.
func NewGCS(ctx context.Context, opts GCSOptions) (*GCS, error) {
	if err := checkGCSBucket(opts.Bucket); err != nil {
		return nil, fmt.Errorf("gs: %w", err)
	}
	endpoint, anonymous := opts.Endpoint, opts.NoSignRequest
	if endpoint == "" {
		if emu := os.Getenv(GCSEmulatorEnv); emu != "" {
			if !strings.Contains(emu, "://") {
				emu = "http://" + emu
			}
			endpoint, anonymous = emu, true
		}
	}
	apiEndpoint := gcsDefaultEndpoint
	if endpoint != "" {
		var err error
		if apiEndpoint, err = gcsAPIEndpoint(endpoint); err != nil {
			return nil, err
		}
		if opts.Net != nil {
			u, _ := url.Parse(apiEndpoint)
			if err := opts.Net.CheckHost(u.Host); err != nil {
				return nil, fmt.Errorf("gs: endpoint: %w", err)
			}
		}
	}
	maxConns := opts.MaxConns
	if maxConns <= 0 {
		maxConns = 64
	}
	hc := defaultHTTPClient(opts.Net)
	tr := hc.Transport.(*http.Transport)
	tr.MaxIdleConns, tr.MaxIdleConnsPerHost, tr.MaxConnsPerHost = maxConns, maxConns, maxConns
	// Model weights do not compress; asking for gzip only costs CPU.
	tr.DisableCompression = true
	// Over HTTP/2 every ranged GET would share one TCP flow, which caps
	// at a few Gbit/s; HTTP/1.1 gives each its own (gcsfuse's default too).
	tr.ForceAttemptHTTP2 = false
	tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
	hc.Transport = gcsBodyLimit{tr}
	var creds tokenGiver
	if !anonymous {
		scope := gcsReadOnlyScope
		if opts.Write {
			scope = gcsReadWriteScope
		}
		c, err := gcsCredentials(opts.Net, scope)
		if err != nil {
			return nil, err
		}
		creds = c
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	prefix := strings.TrimPrefix(opts.Prefix, "/")
	root := prefix
	if root != "" && !strings.HasSuffix(root, "/") {
		root += "/"
	}
	g := &GCS{
		hc: hc, api: apiEndpoint, upload: gcsUploadEndpoint(apiEndpoint), creds: creds, log: log, name: opts.Bucket, prefix: prefix, root: root, retry: opts.Retry,
	}
	if endpoint != "" {
		g.endpoint = strings.TrimSuffix(apiEndpoint, "/")
	}
	return g, nil
}

// checkGCSBucket applies Cloud Storage's bucket naming rules: 3 to 63
// characters (up to 222 with dots), lower-case letters, digits, '-', '_'
// and '.', starting and ending with a letter or digit.
func checkGCSBucket(b string) error {
	if b == "" {
		return errors.New("bucket name is empty")
	}
	if len(b) < 3 || len(b) > 222 || (len(b) > 63 && !strings.Contains(b, ".")) {
		return fmt.Errorf("bucket name %q must be 3 to 63 characters (222 with dots)", b)
	}
	for _, r := range b {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '.' || r == '-' || r == '_') {
			return fmt.Errorf("bucket name %q contains %q", b, r)
		}
	}
	alnum := func(c byte) bool { return c >= 'a' && c <= 'z' || c >= '0' && c <= '9' }
	if !alnum(b[0]) || !alnum(b[len(b)-1]) {
		return fmt.Errorf("bucket name %q must start and end with a letter or digit", b)
	}
	return nil
}

// gcsAPIEndpoint turns an endpoint as users give it (an emulator's
// host:port URL) into the JSON API's base URL.
func gcsAPIEndpoint(raw string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return "", errors.New("gs: endpoint must be an http(s)://host[:port] URL without credentials or query")
	}
	if strings.Trim(u.Path, "/") == "" {
		u.Path = "/storage/v1/"
	} else if !strings.HasSuffix(u.Path, "/") {
		u.Path += "/"
	}
	u.RawPath = ""
	return u.String(), nil
}

// gcsCredentials finds Application Default Credentials for scope.
// Token requests to the endpoints a credentials file names go through the
// network policy; the metadata server's client is the auth library's own.
func gcsCredentials(policy *NetPolicy, scope string) (tokenGiver, error) {
	creds, err := credentials.DetectDefault(&credentials.DetectOptions{
		Scopes: []string{scope},
		Client: defaultHTTPClient(policy),
		Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		if path := os.Getenv("GOOGLE_APPLICATION_CREDENTIALS"); path != "" {
			// The library's parse errors may quote the file.
			return nil, &gcsCredentialsError{err: fmt.Errorf("the credentials file %s (GOOGLE_APPLICATION_CREDENTIALS) is unusable: %s", path, credentialsFileProblem(path))}
		}
		return nil, &gcsCredentialsError{err: errors.New("no Google credentials found: set GOOGLE_APPLICATION_CREDENTIALS to a service account key file, " +
			"log in with gcloud auth application-default login, or run with Workload Identity or a service account on Google Cloud; " +
			"for a public bucket use --no-sign-request")}
	}
	return gcsTokenProbe{creds}, nil
}

// credentialsFileProblem says what is wrong with a credentials file
// without quoting any of it.
func credentialsFileProblem(path string) string {
	st, err := os.Stat(path)
	switch {
	case err != nil:
		return "it cannot be read"
	case st.IsDir():
		return "it is a directory"
	case st.Size() == 0:
		return "it is empty"
	}
	return "it is not a Google credentials JSON file that Google's auth library accepts"
}

// gcsTokenProbe marks a failure to get a token, so that it is told from
// the store's own replies: refused credentials are ErrAccess and never an
// outage (Unreachable).
type gcsTokenProbe struct{ inner *auth.Credentials }

func (p gcsTokenProbe) Token(ctx context.Context) (*auth.Token, error) {
	tok, err := p.inner.Token(ctx)
	if err == nil {
		return tok, nil
	}
	var ae *auth.Error
	if errors.As(err, &ae) && ae.Response != nil {
		if s := ae.Response.StatusCode; s == http.StatusTooManyRequests || s >= 500 {
			err = transient(err, 0)
		}
	}
	return nil, &gcsCredentialsError{err: err}
}

// gcsCredentialsError is a failure to get Google credentials or a token;
// no request reached the store. Like S3's credentialsError it counts as
// ErrAccess unless the token endpoint could not be reached or failed,
// which is retried; either way it is never an outage.
type gcsCredentialsError struct{ err error }

func (e *gcsCredentialsError) Error() string {
	return "getting Google credentials: " + e.err.Error()
}

func (e *gcsCredentialsError) Unwrap() error { return e.err }

func (e *gcsCredentialsError) Is(target error) bool {
	var netErr net.Error
	var re *retryableError
	return target == ErrAccess && !errors.As(e.err, &netErr) && !errors.As(e.err, &re)
}

func (g *GCS) String() string {
	s := "gs://" + g.name
	if g.prefix != "" {
		s += "/" + g.prefix
	}
	if g.endpoint != "" {
		s += " (" + g.endpoint + ")"
	}
	return s
}

// ID is "gs+", the endpoint ("google" for Google's, where bucket names
// are global), the bucket and the prefix as given.
func (g *GCS) ID() string {
	host := "google"
	if g.endpoint != "" {
		host = g.endpoint
	}
	return "gs+" + host + "/" + g.name + "/" + g.prefix
}

// List lists every object under the prefix, each pinned to its
// generation. A prefix that names a single object yields that object.
func (g *GCS) List(ctx context.Context) ([]Object, error) {
	return listUnder(ctx, g, &g.root, g.prefix, "objects", g.listPrefix, g.stat)
}

// gcsListFields are the fields a listing asks for.
const gcsListFields = "items(name,size,generation,updated,crc32c,md5Hash),nextPageToken"

// gcsObjectAttrs is an object's metadata as the JSON API encodes it.
type gcsObjectAttrs struct {
	Name       string    `json:"name"`
	Size       int64     `json:"size,string"`
	Generation int64     `json:"generation,string"`
	Updated    time.Time `json:"updated"`
	CRC32C     string    `json:"crc32c"`
	MD5Hash    string    `json:"md5Hash"`
}

type gcsListPage struct {
	Items         []gcsObjectAttrs `json:"items"`
	NextPageToken string           `json:"nextPageToken"`
}

func (g *GCS) listPrefix(ctx context.Context, dir string) ([]Object, error) {
	var objs []Object
	token := ""
	for {
		var page gcsListPage
		err := g.retry.do(ctx, OpList, 0, "list "+g.String(), func(ctx context.Context) error {
			q := url.Values{"prefix": {dir}, "maxResults": {strconv.Itoa(gcsListPageSize)}, "fields": {gcsListFields}, "projection": {"noAcl"}}
			if token != "" {
				q.Set("pageToken", token)
			}
			page = gcsListPage{}
			err := g.getJSON(ctx, g.bucketURL()+"/o?"+q.Encode(), &page)
			if errors.Is(err, ErrNotFound) {
				return fmt.Errorf("%w: bucket %q does not exist", ErrNotFound, g.name)
			}
			return err
		})
		if err != nil {
			return nil, err
		}
		for _, a := range page.Items {
			key := strings.TrimPrefix(a.Name, dir)
			if key == "" || strings.HasSuffix(key, "/") {
				continue // folder placeholders
			}
			obj, err := gcsObject(a)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", g, err)
			}
			obj.Key = key
			objs = append(objs, obj)
		}
		if len(objs) > MaxListedObjects {
			return nil, fmt.Errorf("%s: more than %d objects under this prefix; mount one model's prefix", g, MaxListedObjects)
		}
		next := page.NextPageToken
		if next == "" {
			return objs, nil
		}
		if next == token {
			return nil, fmt.Errorf("%s: the listing repeats its page token", g)
		}
		token = next
	}
}

// gcsObject pins an object to its generation and keeps its checksum:
// CRC32C, which Cloud Storage keeps for every object and which sums block
// by block; MD5 (absent for composite objects) only where a store left
// CRC32C out, which shows as a zero CRC of non-empty content.
func gcsObject(a gcsObjectAttrs) (Object, error) {
	obj := Object{Key: a.Name, Size: a.Size, ModTime: a.Updated}
	if a.Size < 0 {
		return Object{}, fmt.Errorf("object %q has size %d", a.Name, a.Size)
	}
	if a.Generation > 0 {
		obj.VersionID = strconv.FormatInt(a.Generation, 10)
	}
	var crc uint32
	if a.CRC32C != "" {
		b, err := base64.StdEncoding.DecodeString(a.CRC32C)
		if err != nil || len(b) != 4 {
			return Object{}, fmt.Errorf("object %q has a malformed crc32c %q", a.Name, a.CRC32C)
		}
		crc = binary.BigEndian.Uint32(b)
	}
	md5, err := base64.StdEncoding.DecodeString(a.MD5Hash)
	if err != nil {
		md5 = nil
	}
	switch {
	case crc == 0 && a.Size > 0 && len(md5) == 16:
		obj.Checksum = Checksum{Algorithm: "MD5", Value: base64.StdEncoding.EncodeToString(md5)}
	default:
		// Big-endian, as Cloud Storage encodes it and objsum reads it.
		obj.Checksum = Checksum{Algorithm: "CRC32C", Value: base64.StdEncoding.EncodeToString(binary.BigEndian.AppendUint32(nil, crc))}
	}
	return obj, nil
}

// Stat returns the current generation of key (relative to the prefix).
func (g *GCS) Stat(ctx context.Context, key string) (Object, error) {
	obj, err := g.stat(ctx, g.fullKey(key))
	obj.Key = key
	return obj, err
}

func (g *GCS) stat(ctx context.Context, full string) (Object, error) {
	var a gcsObjectAttrs
	err := g.retry.do(ctx, OpStat, 0, "stat "+full, func(ctx context.Context) error {
		a = gcsObjectAttrs{}
		return g.getJSON(ctx, g.objectURL(full)+"?projection=noAcl", &a)
	})
	if err != nil {
		return Object{}, err
	}
	return gcsObject(a)
}

func (g *GCS) fullKey(key string) string { return g.root + key }

func (g *GCS) bucketURL() string { return g.api + "b/" + url.PathEscape(g.name) }

// objectURL escapes every '/' of the name too, as the JSON API wants.
func (g *GCS) objectURL(full string) string { return g.bucketURL() + "/o/" + url.PathEscape(full) }

// ReadAt is one ranged GET of obj's pinned generation, with that
// generation as a precondition, retried within the budget.
func (g *GCS) ReadAt(ctx context.Context, obj Object, p []byte, off int64) (int, error) {
	n, atEnd, err := clipRead(obj, len(p), off)
	if err != nil {
		return 0, err
	}
	p = p[:n]
	gen, err := strconv.ParseInt(obj.VersionID, 10, 64)
	if err != nil || gen <= 0 {
		return 0, fmt.Errorf("read %s: %w: no generation", obj.Key, ErrUnpinned)
	}
	full := g.fullKey(obj.Key)
	end := off + int64(n)
	what := fmt.Sprintf("read %s [%d, %d)", full, off, end)
	g64 := strconv.FormatInt(gen, 10)
	target := g.objectURL(full) + "?" + url.Values{"alt": {"media"}, "generation": {g64}, "ifGenerationMatch": {g64}}.Encode()
	return readRetried(ctx, g.retry, what, n, atEnd, func(ctx context.Context) error {
		// A body cut short resumes where it stopped, as long as each
		// request brings bytes; the generation pins what the rest is.
		got := 0
		for resumes := 0; ; resumes++ {
			k, err := g.readRange(ctx, target, obj, p[got:], off+int64(got))
			got += k
			if err == nil || k == 0 || resumes == gcsMaxResumes || !isTransient(err) {
				return err
			}
		}
	})
}

// gcsMaxResumes bounds the requests one attempt at a read sends after
// the first, each resuming a body that was cut short.
const gcsMaxResumes = 4

// readRange is one ranged GET of target, p's length from off, into p. It
// returns how many bytes it put there, which, on an error, may be some.
func (g *GCS) readRange(ctx context.Context, target string, obj Object, p []byte, off int64) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Range", fmt.Sprintf("bytes=%d-%d", off, off+int64(len(p))-1))
	// The stored bytes, which the size and checksum describe: an object
	// stored gzip-encoded is otherwise sent decompressed.
	req.Header.Set("Accept-Encoding", "gzip")
	gen := req.URL.Query().Get("generation")
	resp, err := g.do(req)
	if err != nil {
		if errors.Is(err, ErrNotFound) {
			// The pinned generation is gone: replaced or deleted.
			return 0, fmt.Errorf("%w: generation %s no longer exists", ErrChanged, gen)
		}
		return 0, err
	}
	defer resp.Body.Close()
	start, size, err := gcsReplyRange(resp)
	switch {
	case err != nil:
		return 0, transient(err, 0)
	case resp.Header.Get("X-Goog-Stored-Content-Encoding") == "gzip" && resp.Header.Get("Content-Encoding") != "gzip":
		return 0, errors.New("the store decompressed the object's bytes")
	case size != obj.Size:
		return 0, fmt.Errorf("%w: size %d, pinned %d", ErrChanged, size, obj.Size)
	case start != off:
		return 0, transient(fmt.Errorf("reply starts at %d, asked for %d", start, off), 0)
	}
	if g := resp.Header.Get("X-Goog-Generation"); g != "" && g != gen {
		return 0, fmt.Errorf("%w: generation %s, pinned %s", ErrChanged, g, gen)
	}
	n, err := io.ReadFull(resp.Body, p)
	if err != nil {
		return n, fmt.Errorf("reading body: %w", shortBody(err))
	}
	return n, nil
}

// gcsReplyRange returns where a read's reply starts and the object's
// size: from Content-Range for a 206, from Content-Length for a 200.
func gcsReplyRange(resp *http.Response) (start, size int64, err error) {
	if resp.StatusCode == http.StatusOK {
		if resp.ContentLength < 0 {
			return 0, 0, errors.New("reply has no Content-Length")
		}
		return 0, resp.ContentLength, nil
	}
	cr := resp.Header.Get("Content-Range")
	rng, total, ok := strings.Cut(strings.TrimPrefix(cr, "bytes "), "/")
	first, _, ok2 := strings.Cut(rng, "-")
	start, err1 := strconv.ParseInt(first, 10, 64)
	size, err2 := strconv.ParseInt(total, 10, 64)
	if !strings.HasPrefix(cr, "bytes ") || !ok || !ok2 || err1 != nil || err2 != nil {
		return 0, 0, fmt.Errorf("reply has a malformed Content-Range %q", cr)
	}
	return start, size, nil
}

// getJSON GETs a JSON API resource into v.
func (g *GCS) getJSON(ctx context.Context, target string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	if err != nil {
		return err
	}
	resp, err := g.do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		return fmt.Errorf("decoding the reply: %w", shortBody(err))
	}
	return nil
}

// do sends req with a bearer token unless anonymous and turns a reply
// other than 2xx into an error.
func (g *GCS) do(req *http.Request) (*http.Response, error) {
	if g.creds != nil {
		tok, err := g.creds.Token(req.Context())
		if err != nil {
			// No request reached the store; the URL adds nothing.
			return nil, err
		}
		typ := tok.Type
		if typ == "" {
			typ = "Bearer"
		}
		req.Header.Set("Authorization", typ+" "+tok.Value)
	}
	resp, err := g.hc.Do(req)
	if err != nil {
		return nil, err
	}
	g.log.Debug("gs request", "method", req.Method, "path", req.URL.Path, "status", resp.StatusCode)
	// 308 is how a resumable upload's session answers a chunk it wants
	// more after; reads never see it.
	if resp.StatusCode/100 == 2 || resp.StatusCode == http.StatusPermanentRedirect && req.Method == http.MethodPut {
		return resp, nil
	}
	defer resp.Body.Close()
	apiErr := &gcsAPIError{Code: resp.StatusCode, Header: resp.Header}
	var body struct {
		Error struct {
			Message string `json:"message"`
		} `json:"error"`
	}
	if b, err := io.ReadAll(resp.Body); err == nil && json.Unmarshal(b, &body) == nil {
		apiErr.Message = body.Error.Message
	}
	return nil, g.mapError(apiErr)
}

// gcsAPIError is a reply other than 2xx from the store.
type gcsAPIError struct {
	Code    int
	Message string
	Header  http.Header
}

func (e *gcsAPIError) Error() string {
	s := "HTTP " + strconv.Itoa(e.Code)
	if t := http.StatusText(e.Code); t != "" {
		s += " " + t
	}
	if e.Message != "" {
		s += ": " + e.Message
	}
	return s
}

// mapError turns the store's replies into the package's sentinels and
// marks the transient ones.
func (g *GCS) mapError(err error) error {
	var ge *gcsAPIError
	if !errors.As(err, &ge) {
		return err
	}
	switch s := ge.Code; {
	case s == http.StatusNotFound:
		return fmt.Errorf("%w: %w", ErrNotFound, err)
	case s == http.StatusUnauthorized || s == http.StatusForbidden:
		return fmt.Errorf("%w: %s: check credentials and the bucket's IAM policy: %w", ErrAccess, g, err)
	case s == http.StatusPreconditionFailed || s == http.StatusRequestedRangeNotSatisfiable:
		return fmt.Errorf("%w: %w", ErrChanged, err)
	case s == http.StatusRequestTimeout || s == http.StatusTooManyRequests || s >= 500:
		var after time.Duration
		if secs, perr := strconv.Atoi(ge.Header.Get("Retry-After")); perr == nil && secs > 0 {
			after = time.Duration(secs) * time.Second
		}
		return transient(err, after)
	}
	return err
}

// Caps on what is read into memory from a reply that is parsed: an error
// reply is read whole, and a listing page or an object's metadata decoded
// whole; an endpoint can send any amount of either.
// Real error replies are under 1 KiB, pages of 1000 objects a few MiB.
const (
	gcsErrorBodyMax = 64 << 10
	gcsJSONBodyMax  = 16 << 20
)

// gcsBodyLimit caps the bodies of error replies and JSON API replies;
// object bytes (alt=media) are read to the length asked for.
type gcsBodyLimit struct{ base http.RoundTripper }

func (l gcsBodyLimit) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := l.base.RoundTrip(req)
	if err != nil || resp.Body == nil {
		return resp, err
	}
	switch {
	case resp.StatusCode < 200 || resp.StatusCode > 299:
		resp.Body = &cappedBody{r: io.LimitReader(resp.Body, gcsErrorBodyMax+1), c: resp.Body, max: gcsErrorBodyMax, what: "error reply"}
	case strings.Contains(req.URL.Path, "/storage/v1/") && req.URL.Query().Get("alt") != "media":
		resp.Body = &cappedBody{r: io.LimitReader(resp.Body, gcsJSONBodyMax+1), c: resp.Body, max: gcsJSONBodyMax, what: "JSON reply"}
	}
	return resp, nil
}

// parseGCSLocation parses what follows gs://: bucket[/prefix].
func parseGCSLocation(rest string) (Location, error) {
	bucket, prefix, _ := strings.Cut(rest, "/")
	if err := checkGCSBucket(bucket); err != nil {
		return Location{}, fmt.Errorf("%w: want gs://bucket[/prefix]", err)
	}
	for _, seg := range strings.Split(strings.TrimSuffix(prefix, "/"), "/") {
		if seg == ".." || seg == "." {
			return Location{}, fmt.Errorf("prefix contains a %q segment", seg)
		}
	}
	if strings.ContainsAny(prefix, "?#") {
		// Object names may hold them, but a URI that does is more
		// likely a pasted https:// link than a prefix.
		return Location{}, errors.New("prefix contains '?' or '#': want gs://bucket[/prefix]")
	}
	return Location{Scheme: "gs", Bucket: bucket, Prefix: prefix}, nil
}
