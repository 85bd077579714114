package config

import (
	"encoding/hex"
	"fmt"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/modelfs/modelfs/fetch"
	"github.com/modelfs/modelfs/internal/units"
)

// Prefetch is how a mount prefetches.
type Prefetch string

// The prefetch modes.
const (
	// PrefetchAuto replays the profile when one is given and usable, else
	// follows layer order from the model's headers; readahead always.
	PrefetchAuto      Prefetch = "auto"
	PrefetchLayer     Prefetch = "layer"
	PrefetchProfile   Prefetch = "profile"
	PrefetchReadahead Prefetch = "readahead"
	PrefetchOff       Prefetch = "off"
)

// Planned reports whether the mode follows a plan (headers or profile).
func (p Prefetch) Planned() bool {
	return p == PrefetchAuto || p == PrefetchLayer || p == PrefetchProfile
}

// Sources is how to reach the models and cache their blocks: what mount
// and warm share.
type Sources struct {
	// Source is one SOURCE URL (s3://, https://, file://, hf://, ...).
	// Leave it empty and set SourceEnv in the process's environment when
	// it may carry a secret. Exclusive with Manifest.
	Source string
	// Manifest is a JSON file naming several models to serve at once.
	Manifest string

	// Region, Endpoint, AWSProfile and NoSignRequest apply to stores
	// reached through the AWS SDK; Endpoint is the store's URL for any
	// source that has one, so it is not tied to a scheme here.
	Region        string
	Endpoint      string
	AWSProfile    string
	NoSignRequest bool
	// HTTPTokenEnv and HFTokenEnv name the environment variables that
	// hold tokens; the values never pass through a Config.
	HTTPTokenEnv string
	HFTokenEnv   string
	HFEndpoint   string

	// BlockSize is the fetch and cache unit.
	BlockSize int64
	// Concurrency is how many ranged GETs run at once.
	Concurrency int
	// CacheDir is the persistent block cache; "" for RAM only.
	CacheDir string
	// CacheSize is the disk cache budget; 0 sizes it from the disk.
	CacheSize int64

	RequestTimeout time.Duration
	Retries        int
	// DenyNetworks are networks no connection may reach; AllowNetworks
	// are exceptions to them, and mean nothing without them.
	DenyNetworks  []netip.Prefix
	AllowNetworks []netip.Prefix
	// NoSavedListing never falls back to a listing saved in CacheDir: a
	// volume that is not trusted must prove access to its source itself.
	NoSavedListing bool

	// SharedCache is a cluster-wide block tier, s3://bucket/prefix, read
	// before the origin and filled from it; "" for none. Its store is
	// reached with its own endpoint, region and profile (or anonymously),
	// credentials from the environment or the profile, never a flag.
	SharedCache              string
	SharedCacheEndpoint      string
	SharedCacheRegion        string
	SharedCacheProfile       string
	SharedCacheNoSignRequest bool
	// SharedCacheCredentialsFile is an AWS shared credentials file the
	// shared cache's keys are read from, and nothing else's: the store is
	// then reached with none of the credentials of the sources or the node.
	SharedCacheCredentialsFile string
}

// Config is every setting of one mount. Build one from Default(): a zero
// field is a setting of zero (auto, where its comment says so), not a
// request for the default.
type Config struct {
	Sources
	Mountpoint string
	// MemCache is the RAM tier's budget; 0 is DefaultMemCache.
	MemCache int64
	Prefetch Prefetch
	// Profile is a recorded load profile to replay; RecordProfile, where
	// to write this mount's on unmount.
	Profile       string
	RecordProfile string
	// SmallFile: files up to this size are fetched whole on first open,
	// and with a plan as the mount starts.
	SmallFile int64
	// Readahead is the largest readahead window per open file.
	Readahead   int64
	AllowOther  bool
	MetricsAddr string
	Pprof       bool
	DebugFUSE   bool
}

// Defaults of the settings whose zero value is not what users get.
const (
	DefaultBlockSize      = 8 << 20
	DefaultConcurrency    = 16
	DefaultRequestTimeout = 60 * time.Second
	DefaultRetries        = 6
	DefaultHTTPTokenEnv   = "MODELFS_HTTP_TOKEN"
	DefaultSmallFile      = 1 << 20
	DefaultReadahead      = 128 << 20
)

// DefaultSources are the Sources of a command given no flags.
func DefaultSources() Sources {
	return Sources{
		HTTPTokenEnv: DefaultHTTPTokenEnv, HFEndpoint: fetch.DefaultHFEndpoint,
		BlockSize: DefaultBlockSize, Concurrency: DefaultConcurrency,
		RequestTimeout: DefaultRequestTimeout, Retries: DefaultRetries,
	}
}

// Default is the Config of a mount given no flags.
func Default() Config {
	return Config{
		Sources: DefaultSources(), Prefetch: PrefetchAuto,
		SmallFile: DefaultSmallFile, Readahead: DefaultReadahead,
	}
}

// Validate checks the settings shared by mount and warm.
func (s *Sources) Validate() error {
	var errs []error
	switch {
	case s.Source != "" && s.Manifest != "":
		errs = append(errs, invalid("--manifest and a SOURCE are mutually exclusive"))
	case s.Source == "" && s.Manifest == "":
		errs = append(errs, invalid("no source: give SOURCE, %s or --manifest", SourceEnv))
	case s.Source != "":
		// A manifest's schemes are known only once it is read: opening
		// the sources checks those.
		if loc, err := fetch.ParseLocation(s.Source); err == nil {
			if err := fetch.CheckApplies([]fetch.Location{loc}, fetch.S3Options{
				Region: s.Region, Endpoint: s.Endpoint, Profile: s.AWSProfile, NoSignRequest: s.NoSignRequest,
			}); err != nil {
				errs = append(errs, invalid("%v", err))
			}
		}
	}
	if s.BlockSize < 64<<10 || s.BlockSize > 256<<20 {
		errs = append(errs, invalid("--block-size %s: want 64KiB to 256MiB", units.FormatSize(s.BlockSize)))
	}
	if s.Concurrency < 1 || s.Concurrency > 1024 {
		errs = append(errs, invalid("--concurrency %d: want 1 to 1024", s.Concurrency))
	}
	if s.CacheSize < 0 {
		errs = append(errs, invalid("--cache-size %d: want a size, or auto", s.CacheSize))
	}
	if s.RequestTimeout < 0 {
		errs = append(errs, invalid("--request-timeout %s: want a positive duration", s.RequestTimeout))
	}
	if s.Retries < 0 {
		errs = append(errs, invalid("--retries %d: want 0 or more", s.Retries))
	}
	return join(append(errs, s.validateSharedCache()...))
}

// SharedCacheQueueBytes bounds the shared cache's write-backs waiting in
// the Go heap, given the RAM tier's budget; 0 without a shared cache. A
// quarter of that budget, at least 4 blocks and at most 256 MiB, lets a
// node fill the store at the pace of a fast origin without holding much;
// the process's heap limit makes room for it.
func (s *Sources) SharedCacheQueueBytes(memBytes int64) int64 {
	if s.SharedCache == "" {
		return 0
	}
	return min(max(memBytes/4, 4*s.BlockSize), max(256<<20, 4*s.BlockSize))
}

// validateSharedCache checks the shared cache's settings. Nothing they
// hold may carry a credential: they are on the command line.
func (s *Sources) validateSharedCache() []error {
	if s.SharedCache == "" {
		if s.SharedCacheEndpoint != "" || s.SharedCacheRegion != "" || s.SharedCacheProfile != "" || s.SharedCacheNoSignRequest || s.SharedCacheCredentialsFile != "" {
			return []error{invalid("--shared-cache-endpoint, -region, -profile and -no-sign-request need --shared-cache")}
		}
		return nil
	}
	var errs []error
	if loc, err := fetch.ParseLocation(s.SharedCache); err != nil || loc.Scheme != "s3" {
		errs = append(errs, invalid("--shared-cache: want s3://bucket/prefix"))
	}
	if ep := s.SharedCacheEndpoint; ep != "" {
		u, err := url.Parse(ep)
		switch {
		case err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "":
			errs = append(errs, invalid("--shared-cache-endpoint: want http(s)://host[:port]"))
		case u.User != nil || u.RawQuery != "":
			// Not echoed: it may hold a secret.
			errs = append(errs, invalid("--shared-cache-endpoint: credentials do not go in the URL; use the environment or --shared-cache-profile"))
		}
	}
	if s.SharedCacheCredentialsFile != "" && s.SharedCacheNoSignRequest {
		errs = append(errs, invalid("--shared-cache-credentials-file and --shared-cache-no-sign-request are mutually exclusive"))
	}
	if s.SharedCacheProfile != "" && s.SharedCacheNoSignRequest {
		errs = append(errs, invalid("--shared-cache-profile and --shared-cache-no-sign-request are mutually exclusive"))
	}
	return errs
}

// Validate checks every setting of the mount, once, before anything is
// opened; each error is a *SettingError naming the flag that sets it.
func (c *Config) Validate() error {
	errs := []error{c.Sources.Validate()}
	if c.Mountpoint == "" {
		errs = append(errs, invalid("no MOUNTPOINT"))
	}
	if c.MemCache < 0 {
		errs = append(errs, invalid("--mem-cache %d: want a size, or auto", c.MemCache))
	} else if mem := c.MemCacheBytes(); mem < 2*c.BlockSize {
		errs = append(errs, invalid("--mem-cache %s: want at least two blocks (%d bytes)", units.FormatSize(mem), 2*c.BlockSize))
	}
	switch c.Prefetch {
	case PrefetchAuto, PrefetchLayer, PrefetchReadahead, PrefetchOff:
	case PrefetchProfile:
		if c.Profile == "" {
			errs = append(errs, invalid("--prefetch profile needs --profile FILE"))
		}
	default:
		errs = append(errs, invalid("--prefetch %q: want auto, layer, profile, readahead or off", c.Prefetch))
	}
	if c.RecordProfile != "" {
		if st, err := os.Stat(filepath.Dir(c.RecordProfile)); err != nil || !st.IsDir() {
			errs = append(errs, invalid("--record-profile %s: its directory does not exist", c.RecordProfile))
		}
	}
	if c.SmallFile < 0 {
		errs = append(errs, invalid("--small-file %d: want 0 or more", c.SmallFile))
	}
	if c.Readahead < 0 {
		errs = append(errs, invalid("--readahead %d: want 0 or more", c.Readahead))
	}
	if c.Pprof && c.MetricsAddr == "" {
		errs = append(errs, invalid("--pprof needs --metrics-addr"))
	}
	return join(errs)
}

// MemCacheBytes is the RAM tier's budget, MemCache or its default.
func (c *Config) MemCacheBytes() int64 {
	if c.MemCache > 0 {
		return c.MemCache
	}
	return DefaultMemCache()
}

// DefaultMemCache is an eighth of physical memory, between 256 MiB and
// 1 GiB. The RAM tier is a staging area for prefetch (the kernel's page
// cache keeps what was read), and a small one reuses its buffers: a large
// one spends its first pass faulting in fresh memory.
func DefaultMemCache() int64 {
	var si syscall.Sysinfo_t
	if err := syscall.Sysinfo(&si); err != nil {
		return 1 << 30
	}
	total := int64(si.Totalram) * int64(si.Unit)
	return min(max(total/8, 256<<20), 1<<30)
}

// Args renders the config as the arguments of the modelfs binary that
// mount it: "mount", then its settings as flags, then "--", SOURCE if set,
// and MOUNTPOINT last. Every number, duration and mode is named, zero
// included, so the mount runs with exactly this Config whatever its
// environment (each flag has a MODELFS_* twin there); a zero MemCache or
// CacheSize is "auto". A string whose default is empty, and a false bool,
// are left out. Sizes are in bytes.
func (c *Config) Args() []string {
	a := []string{"mount"}
	str := func(flag, v string) {
		if v != "" {
			a = append(a, flag, v)
		}
	}
	always := func(flag, v string) { a = append(a, flag, v) }
	num := func(flag string, v int64) { always(flag, strconv.FormatInt(v, 10)) }
	sizeOrAuto := func(flag string, v int64) {
		if v == 0 {
			always(flag, "auto")
		} else {
			num(flag, v)
		}
	}
	boolean := func(flag string, v bool) {
		if v {
			a = append(a, flag)
		}
	}
	// The order is stable, for readers of process lists and for tests.
	always("--prefetch", string(c.Prefetch))
	str("--deny-networks", fetch.FormatNetworks(c.DenyNetworks))
	str("--allow-networks", fetch.FormatNetworks(c.AllowNetworks))
	always("--hf-endpoint", c.HFEndpoint)
	str("--endpoint", c.Endpoint)
	str("--region", c.Region)
	str("--aws-profile", c.AWSProfile)
	boolean("--no-sign-request", c.NoSignRequest)
	always("--http-token-env", c.HTTPTokenEnv)
	str("--hf-token-env", c.HFTokenEnv)
	str("--manifest", c.Manifest)
	str("--profile", c.Profile)
	str("--record-profile", c.RecordProfile)
	str("--cache-dir", c.CacheDir)
	boolean("--no-saved-listing", c.NoSavedListing)
	sizeOrAuto("--cache-size", c.CacheSize)
	sizeOrAuto("--mem-cache", c.MemCache)
	num("--block-size", c.BlockSize)
	num("--small-file", c.SmallFile)
	num("--readahead", c.Readahead)
	num("--concurrency", int64(c.Concurrency))
	always("--request-timeout", c.RequestTimeout.String())
	num("--retries", int64(c.Retries))
	str("--shared-cache", c.SharedCache)
	str("--shared-cache-endpoint", c.SharedCacheEndpoint)
	str("--shared-cache-region", c.SharedCacheRegion)
	str("--shared-cache-profile", c.SharedCacheProfile)
	boolean("--shared-cache-no-sign-request", c.SharedCacheNoSignRequest)
	str("--shared-cache-credentials-file", c.SharedCacheCredentialsFile)
	str("--metrics-addr", c.MetricsAddr)
	boolean("--pprof", c.Pprof)
	boolean("--debug-fuse", c.DebugFUSE)
	boolean("--allow-other", c.AllowOther)
	a = append(a, "--")
	if c.Source != "" {
		a = append(a, c.Source)
	}
	return append(a, c.Mountpoint)
}

// SettingError is a setting Validate refused. Flag is the flag that sets
// it ("--block-size"; "" for a missing SOURCE or MOUNTPOINT), so that
// whoever set it another way (the CSI plugin's volume attributes) can name
// it their way.
type SettingError struct {
	Flag string
	msg  string
}

func (e *SettingError) Error() string { return e.msg }

// invalid is a SettingError whose message starts with the flag it names.
func invalid(format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	flag, _, _ := strings.Cut(msg, " ")
	if !strings.HasPrefix(flag, "--") {
		flag = ""
	}
	return &SettingError{Flag: flag, msg: msg}
}

// join is the errors as one line, for the one-line message a command
// prints; nil if there are none.
func join(errs []error) error {
	var kept []error
	for _, err := range errs {
		if nested, ok := err.(oneLine); ok {
			// Sources.Validate's, within Validate's: one flat list.
			kept = append(kept, nested...)
		} else if err != nil {
			kept = append(kept, err)
		}
	}
	if len(kept) == 0 {
		return nil
	}
	return oneLine(kept)
}

// oneLine is several errors, "; "-separated; errors.Is and As see each.
type oneLine []error

func (e oneLine) Error() string {
	msgs := make([]string, len(e))
	for i, err := range e {
		msgs[i] = err.Error()
	}
	return strings.Join(msgs, "; ")
}

func (e oneLine) Unwrap() []error { return e }

// Warm is every setting of warm: fill the disk cache ahead of a mount.
type Warm struct {
	Sources
	// Profile is a recorded load profile whose order is fetched first.
	Profile string
	// SHA256 are expected sha256s (64 hex digits) by path in the mount
	// (MODEL/PATH with a manifest), checked once each file is cached.
	SHA256 map[string]string
	// RequireVerified fails the warm when a file's store keeps no
	// checksum to verify it against.
	RequireVerified bool
}

// Validate checks the settings of a warm.
func (w *Warm) Validate() error {
	errs := []error{w.Sources.Validate()}
	if w.CacheDir == "" {
		errs = append(errs, invalid("--cache-dir is required: warm fills a disk cache"))
	}
	for name, sum := range w.SHA256 {
		if _, err := hex.DecodeString(sum); name == "" || len(sum) != 64 || err != nil {
			errs = append(errs, invalid("--sha256 %q: want NAME=<64 hex digits>", name+"="+sum))
		}
	}
	return join(errs)
}
