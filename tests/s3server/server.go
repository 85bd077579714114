package s3server

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// Options configures a Server.
type Options struct {
	// Dir is where object bytes are stored, one file per object version, so
	// that multi-GiB objects do not sit in memory. Required. The index of
	// buckets and objects is kept in memory only.
	Dir string
	// AccessKey and SecretKey are the SigV4 credentials the server accepts.
	AccessKey, SecretKey string
	// Region is the region clients must sign for. Default "us-east-1".
	Region string
	// AllowAnonymous accepts unsigned requests, like a public bucket (what
	// clients reach with --no-sign-request). Signed requests are still
	// verified.
	AllowAnonymous bool
	// Versioning turns on versioning for every bucket: objects get an
	// x-amz-version-id, old versions stay readable with ?versionId=, and
	// deletes leave delete markers.
	Versioning bool
}

// Stats counts the requests the server has handled itself (not those a Hook
// answered, nor those refused by authentication).
type Stats struct {
	Gets  int64 // GetObject
	Heads int64 // HeadObject
	Lists int64 // ListObjectsV2 and ListObjects
	Puts  int64 // PutObject and UploadPart
	// BytesServed is the number of object bytes written in GetObject bodies.
	BytesServed int64
}

// Hook is called before each request is served. If it returns true it has
// written the response itself and the server does nothing more. It is the
// seam for fault injection in tests, and may be called concurrently.
type Hook func(w http.ResponseWriter, r *http.Request) bool

// Server is an S3-compatible server. Create it with New; it is safe for
// concurrent use.
type Server struct {
	opts  Options
	store *store
	now   func() time.Time // object timestamps; replaceable by tests

	hook   atomic.Pointer[Hook]
	stats  counters
	reqSeq atomic.Uint64
	hostID string

	stsMu         sync.Mutex
	webIdentities map[string]string          // trusted web identity token -> role ARN
	temporary     map[string]tempCredentials // by access key id
	assumed       int

	mu   sync.Mutex // guards srv and ln
	srv  *http.Server
	ln   net.Listener
	done chan struct{} // closed when srv.Serve returns
}

type counters struct {
	gets, heads, lists, puts, bytes atomic.Int64

	mu      sync.Mutex
	getsFor map[string]int64 // by bucket + "/" + key
}

// maxObjectSize is the largest single PUT (object or part) S3 accepts.
const maxObjectSize = 5 << 30

// New creates a server storing its objects under opts.Dir.
func New(opts Options) (*Server, error) {
	if opts.Dir == "" {
		return nil, errors.New("s3server: Options.Dir is required")
	}
	if (opts.AccessKey == "") != (opts.SecretKey == "") {
		return nil, errors.New("s3server: AccessKey and SecretKey must be set together")
	}
	if opts.AccessKey == "" && !opts.AllowAnonymous {
		return nil, errors.New("s3server: no credentials and AllowAnonymous is off: every request would be refused")
	}
	if opts.Region == "" {
		opts.Region = "us-east-1"
	}
	if err := os.MkdirAll(opts.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("s3server: %w", err)
	}
	id := make([]byte, 48)
	_, _ = rand.Read(id)
	return &Server{
		opts:   opts,
		store:  &store{dir: opts.Dir, versioning: opts.Versioning, buckets: map[string]*bucket{}},
		now:    time.Now,
		hostID: base64.StdEncoding.EncodeToString(id),
		stats:  counters{getsFor: map[string]int64{}},
	}, nil
}

// Start listens on addr (e.g. "127.0.0.1:0") and serves in the background.
func (s *Server) Start(addr string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.srv != nil {
		return errors.New("s3server: already started")
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	s.ln = ln
	s.srv = &http.Server{Handler: s.Handler(), ReadHeaderTimeout: time.Minute}
	s.done = make(chan struct{})
	go func() {
		defer close(s.done)
		_ = s.srv.Serve(ln) // returns http.ErrServerClosed after Close
	}()
	return nil
}

// URL returns the base URL of the started server, e.g.
// "http://127.0.0.1:40123", or "" before Start.
func (s *Server) URL() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln == nil {
		return ""
	}
	return "http://" + s.ln.Addr().String()
}

// Handler returns the server's HTTP handler, to mount it elsewhere (an
// httptest.Server, a TLS listener, behind a proxy) instead of calling Start.
func (s *Server) Handler() http.Handler { return http.HandlerFunc(s.serveHTTP) }

// Close stops the listener started by Start and closes open connections. The
// files under Dir are left alone.
func (s *Server) Close() error {
	s.mu.Lock()
	srv, done := s.srv, s.done
	s.mu.Unlock()
	if srv == nil {
		return nil
	}
	err := srv.Close()
	<-done
	return err
}

// SetHook installs h (nil removes it). See Hook.
func (s *Server) SetHook(h Hook) {
	if h == nil {
		s.hook.Store(nil)
		return
	}
	s.hook.Store(&h)
}

// Stats returns the request counters.
func (s *Server) Stats() Stats {
	return Stats{
		Gets:        s.stats.gets.Load(),
		Heads:       s.stats.heads.Load(),
		Lists:       s.stats.lists.Load(),
		Puts:        s.stats.puts.Load(),
		BytesServed: s.stats.bytes.Load(),
	}
}

// GetsFor returns how many GetObject requests named bucket/key.
func (s *Server) GetsFor(bucket, key string) int64 {
	s.stats.mu.Lock()
	defer s.stats.mu.Unlock()
	return s.stats.getsFor[bucket+"/"+key]
}

// ResetStats zeroes all counters.
func (s *Server) ResetStats() {
	s.stats.mu.Lock()
	defer s.stats.mu.Unlock()
	for _, c := range []*atomic.Int64{&s.stats.gets, &s.stats.heads, &s.stats.lists, &s.stats.puts, &s.stats.bytes} {
		c.Store(0)
	}
	s.stats.getsFor = map[string]int64{}
}

func (s *Server) countGet(bucket, key string) {
	s.stats.gets.Add(1)
	s.stats.mu.Lock()
	s.stats.getsFor[bucket+"/"+key]++
	s.stats.mu.Unlock()
}

// CreateBucket creates a bucket directly, bypassing HTTP.
func (s *Server) CreateBucket(name string) error {
	if err := s.store.createBucket(name, s.clock()); err != nil {
		return err
	}
	return nil
}

// PutObject stores data as bucket/key directly, bypassing HTTP, and returns
// its ETag (quoted, as S3 sends it). Like S3, it keeps a full-object
// CRC64NVME checksum.
func (s *Server) PutObject(bucket, key string, data []byte) (etag string, err error) {
	return s.putDirect(bucket, key, bytes.NewReader(data), PutOptions{})
}

// PutOptions are what a direct put stores besides the bytes.
type PutOptions struct {
	// Checksum is the additional checksum algorithm to keep (CRC64NVME,
	// CRC32C, CRC32, SHA1 or SHA256); "" means CRC64NVME, as S3 does.
	Checksum string
	// NoChecksum keeps no additional checksum, like objects written
	// before S3 kept one by default or by stores that never do.
	NoChecksum bool
	// Composite, for PutMultipartWith, keeps the Checksum algorithm's
	// composite checksum (over the parts' checksums, "...-N") instead of
	// a full-object one, as S3 does for uploads that ask for it.
	Composite bool
	// SSEKMS marks the object as encrypted with SSE-KMS: its ETag is then
	// not the MD5 of its content, as on S3.
	SSEKMS bool
}

// PutObjectWith is PutObject with the checksum and encryption of opts.
func (s *Server) PutObjectWith(bucket, key string, data []byte, opts PutOptions) (etag string, err error) {
	if opts.Checksum != "" && checksumAlgorithms[opts.Checksum] == nil {
		return "", fmt.Errorf("s3server: unknown checksum algorithm %q", opts.Checksum)
	}
	return s.putDirect(bucket, key, bytes.NewReader(data), opts)
}

// PutObjectFromFile copies the file at path into the server as bucket/key,
// bypassing HTTP, and returns its ETag. The copy is the server's own: later
// changes to path do not affect the object.
func (s *Server) PutObjectFromFile(bucket, key, path string) (etag string, err error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	return s.putDirect(bucket, key, f, PutOptions{})
}

func (s *Server) putDirect(bucket, key string, src io.Reader, opts PutOptions) (string, error) {
	return s.putDirectWith(bucket, key, src, opts, nil)
}

// putDirectWith is putDirect; shape, when set, adjusts the object before
// it is stored.
func (s *Server) putDirectWith(bucket, key string, src io.Reader, opts PutOptions, shape func(*object)) (string, error) {
	if err := validKey(key); err != nil {
		return "", err
	}
	if err := s.store.bucketExists(bucket); err != nil {
		return "", err
	}
	algorithm := opts.Checksum
	switch {
	case opts.NoChecksum:
		algorithm = ""
	case algorithm == "":
		algorithm = defaultChecksum
	}
	data, err := s.store.write(src, algorithm)
	if err != nil {
		return "", err
	}
	obj := data.object(key, s.clock())
	if shape != nil {
		shape(obj)
	}
	if opts.SSEKMS {
		obj.header = http.Header{"X-Amz-Server-Side-Encryption": {"aws:kms"}}
		// S3's ETag of an SSE-KMS object is opaque: anything but the MD5.
		sum := sha256.Sum256(data.md5)
		obj.etag = `"` + hex.EncodeToString(sum[:16]) + `"`
	}
	if err := s.store.put(bucket, obj, nil); err != nil {
		_ = os.Remove(obj.path)
		return "", err
	}
	return obj.etag, nil
}

// DamageObject overwrites the byte at off of the stored bytes of
// bucket/key with its complement, as a failing disk would, leaving the
// metadata (size, ETag, checksums) as it was.
func (s *Server) DamageObject(bucket, key string, off int64) error {
	obj, _, aerr := s.store.get(bucket, key, "", false)
	if aerr != nil {
		return aerr
	}
	if off < 0 || off >= obj.size {
		return fmt.Errorf("s3server: damage %s/%s at %d: past the end (%d bytes)", bucket, key, off, obj.size)
	}
	f, err := os.OpenFile(obj.path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, off); err != nil {
		return err
	}
	b[0] = ^b[0]
	if _, err := f.WriteAt(b, off); err != nil {
		return err
	}
	return f.Close()
}

// DeleteObject deletes bucket/key directly, bypassing HTTP. Like S3, deleting
// a key that does not exist is not an error; a missing bucket is.
func (s *Server) DeleteObject(bucket, key string) error {
	if _, err := s.store.remove(bucket, key, "", s.clock()); err != nil {
		return err
	}
	return nil
}

// clock returns the time for object and bucket timestamps, in whole seconds
// as S3 keeps them.
func (s *Server) clock() time.Time { return s.now().UTC().Truncate(time.Second) }

func (s *Server) newRequestID() string {
	return fmt.Sprintf("%016X", s.reqSeq.Add(1))
}
