package csi

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"

	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/modelfs/modelfs/fetch"
	"github.com/modelfs/modelfs/internal/units"
	"github.com/modelfs/modelfs/mount/config"
)

// Volume attributes (StorageClass parameters, PV volumeAttributes and
// inline volumeAttributes all use these names).
const (
	attrSource        = "source"
	attrEndpoint      = "endpoint"
	attrRegion        = "region"
	attrNoSignRequest = "noSignRequest"
	attrPrefetch      = "prefetch"
	attrProfile       = "profile"
	attrRecordProfile = "recordProfile"
	attrMemCache      = "memCache"
	attrCacheSize     = "cacheSize"
	attrBlockSize     = "blockSize"
	attrConcurrency   = "concurrency"
	attrRoleARN       = "roleArn"
)

// Keys of nodePublishSecretRef secrets.
const (
	secretAccessKeyID     = "awsAccessKeyID"
	secretSecretAccessKey = "awsSecretAccessKey"
	secretSessionToken    = "awsSessionToken"
	secretHTTPToken       = "httpToken"
	secretHFToken         = "hfToken"
	secretAzureKey        = "azureStorageKey"
	secretAzureSAS        = "azureStorageSASToken"
	// secretGCSKey is a service account key (JSON) for gs:// volumes.
	secretGCSKey = "gcsServiceAccountKey"
)

// kubernetesPrefix marks the attributes kubelet adds (pod info, the
// ephemeral flag, service account tokens): accepted, never logged.
const kubernetesPrefix = "csi.storage.k8s.io/"

const ephemeralKey = kubernetesPrefix + "ephemeral"

// volume is a validated volume: what to mount and how.
type volume struct {
	source        string
	scheme        string
	endpoint      string
	region        string
	noSignRequest bool
	prefetch      string
	profile       string // a single file name under the plugin's profile dir
	recordProfile bool
	memCache      int64 // bytes; 0 for the node's default
	blockSize     int64 // bytes; 0 for the mount's default
	concurrency   int
	ephemeral     bool
	// nodeIdentity: the mount runs with the plugin's identity (set at
	// publish), and so may use the plugin's shared cache.
	nodeIdentity bool
	readahead    int64  // bytes, from the readahead= mount option; 0 for the mount's default
	roleARN      string // IAM role the pod's service account token assumes (pod identity)
}

// attributeError names the attribute that is wrong; the gRPC layer turns it
// into InvalidArgument.
type attributeError struct {
	name string
	msg  string
}

func (e *attributeError) Error() string {
	return fmt.Sprintf("volume attribute %q: %s", e.name, e.msg)
}

func badAttr(name, format string, args ...any) error {
	return &attributeError{name: name, msg: fmt.Sprintf(format, args...)}
}

// parseVolume validates volume attributes. Values are quoted back in errors
// only where they cannot hold a secret.
func parseVolume(attrs map[string]string) (*volume, error) {
	v := &volume{prefetch: "auto"}
	// Sorted so that, with several bad attributes, the error is stable.
	keys := make([]string, 0, len(attrs))
	for k := range attrs {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		val := attrs[k]
		if strings.HasPrefix(k, kubernetesPrefix) {
			if k == ephemeralKey {
				v.ephemeral = val == "true"
			}
			continue
		}
		if err := v.set(k, val); err != nil {
			return nil, err
		}
	}
	if v.source == "" {
		return nil, badAttr(attrSource, "required (like s3://bucket/prefix or https://host/model)")
	}
	if v.endpoint != "" && v.scheme != "s3" && v.scheme != "hf" && v.scheme != "az" && v.scheme != "gs" {
		return nil, badAttr(attrEndpoint, "only applies to s3://, gs://, hf:// and az:// sources")
	}
	if v.roleARN != "" && (v.scheme != "s3" || v.noSignRequest) {
		return nil, badAttr(attrRoleARN, "only applies to s3:// sources that sign their requests")
	}
	if v.recordProfile && v.profile == "" {
		return nil, badAttr(attrRecordProfile, "needs %q to name the profile to write", attrProfile)
	}
	if v.recordProfile && v.ephemeral {
		// Profiles are shared by name across the node: any pod author
		// could rewrite the load order other volumes replay.
		return nil, badAttr(attrRecordProfile, "inline volumes may replay a load profile but not write one; record profiles from a PersistentVolume")
	}
	// The mount's own rules, checked once, by the Config it will run
	// with. The source travels in the environment and kubelet names the
	// target only at publish time: both stand in here.
	cfg := v.config()
	cfg.Source, cfg.Mountpoint = v.source, "/"
	if v.profile != "" {
		cfg.Profile = v.profile
	}
	if err := cfg.Validate(); err != nil {
		return nil, settingsError(err)
	}
	return v, nil
}

// attrOfFlag names, by the mount flag it sets, each attribute whose
// value reaches the mount's Config.
var attrOfFlag = map[string]string{
	"--endpoint": attrEndpoint, "--hf-endpoint": attrEndpoint, "--region": attrRegion,
	"--prefetch": attrPrefetch, "--profile": attrProfile, "--mem-cache": attrMemCache,
	"--block-size": attrBlockSize, "--concurrency": attrConcurrency, "--no-sign-request": attrNoSignRequest,
}

// settingsError is Config.Validate's complaint as an attributeError
// naming the first attribute at fault, so that kubelet's event names
// what to fix.
func settingsError(err error) error {
	var se *config.SettingError
	if errors.As(err, &se) {
		if attr, ok := attrOfFlag[se.Flag]; ok {
			return badAttr(attr, "%v", err)
		}
	}
	return fmt.Errorf("volume attributes: %w", err)
}

func (v *volume) set(k, val string) error {
	switch k {
	case attrSource:
		loc, err := fetch.ParseLocation(val)
		if err != nil {
			// ParseLocation's message quotes the URI, which may carry
			// userinfo; say what is wrong without it.
			return badAttr(k, "want s3://bucket[/prefix], gs://bucket[/prefix], https://host/path, http://host/path, hf://org/name[@revision] or az://account/container[/prefix]")
		}
		if loc.Scheme != "s3" && loc.Scheme != "http" && loc.Scheme != "https" && loc.Scheme != "hf" && loc.Scheme != "az" && loc.Scheme != "gs" {
			return badAttr(k, "%s:// sources are not available to volumes: a pod could read the node's files through them", loc.Scheme)
		}
		// hf://org/name@revision has an '@' but no credentials.
		if u, err := url.Parse(val); err == nil && u.User != nil && loc.Scheme != "hf" {
			return badAttr(k, "credentials in the URL are not allowed; use nodePublishSecretRef")
		}
		v.source, v.scheme = val, loc.Scheme
	case attrEndpoint:
		u, err := url.Parse(val)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil {
			return badAttr(k, "want an http(s)://host[:port] URL without credentials")
		}
		v.endpoint = val
	case attrRegion:
		if val == "" || len(val) > 64 || strings.ContainsFunc(val, func(r rune) bool {
			return !(r == '-' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9')
		}) {
			return badAttr(k, "%q is not a region name like us-east-1", val)
		}
		v.region = val
	case attrNoSignRequest, attrRecordProfile:
		b, err := strconv.ParseBool(val)
		if err != nil {
			return badAttr(k, "%q: want true or false", val)
		}
		if k == attrNoSignRequest {
			v.noSignRequest = b
		} else {
			v.recordProfile = b
		}
	case attrPrefetch:
		v.prefetch = val // checked with the rest of the mount's settings
	case attrProfile:
		if val == "" || val == "." || val == ".." || len(val) > 200 || strings.ContainsAny(val, "/\x00") {
			return badAttr(k, "want a file name (no slashes) in the node's profile directory")
		}
		v.profile = val
	case attrCacheSize:
		// Each mount evicts the shared cache down to the budget it is
		// given: a volume's own budget would evict its neighbours' blocks.
		return badAttr(k, "the node's disk cache is shared by every volume and its budget is the cluster admin's (modelfs csi --cache-size); remove this attribute")
	case attrMemCache:
		if val == "auto" {
			v.memCache = 0
			break
		}
		n, ok := ParseSize(val)
		if !ok || n <= 0 {
			return badAttr(k, "%q: want a size such as 512Mi, 512MiB or 1G, or auto", val)
		}
		v.memCache = n
	case attrBlockSize:
		n, ok := ParseSize(val)
		if !ok || n == 0 {
			return badAttr(k, "%q: want a size such as 8Mi or 8MiB", val)
		}
		v.blockSize = n
	case attrConcurrency:
		n, err := strconv.Atoi(val)
		if err != nil || n == 0 {
			return badAttr(k, "%q: want a number such as 16", val)
		}
		v.concurrency = n
	case attrRoleARN:
		if !roleARNPattern.MatchString(val) {
			return badAttr(k, "%q: want an IAM role ARN like arn:aws:iam::123456789012:role/model-reader", val)
		}
		v.roleARN = val
	default:
		return badAttr(k, "unknown attribute; known: %s", strings.Join([]string{
			attrSource, attrEndpoint, attrRegion, attrNoSignRequest, attrPrefetch, attrProfile,
			attrRecordProfile, attrMemCache, attrCacheSize, attrBlockSize, attrConcurrency, attrRoleARN,
		}, ", "))
	}
	return nil
}

// ParseSize reads a size attribute or plugin flag. Kubernetes quantities come first, as
// Kubernetes reads them everywhere else in the same manifest (512Mi, 1Gi,
// 2G = 2e9 bytes); what is not one (512MiB, 1.5GB, 8m) is a modelfs size.
func ParseSize(val string) (int64, bool) {
	if q, err := resource.ParseQuantity(val); err == nil {
		// A quantity that is no whole number of bytes (8m is 0.008 to
		// Kubernetes) is read as modelfs reads it: 8m is 8 MiB.
		if n := q.Value(); n >= 0 && q.Cmp(*resource.NewQuantity(n, resource.BinarySI)) == 0 {
			return n, true
		}
	}
	n, err := units.ParseSize(val, "")
	return n, err == nil
}

// Mount options (a PersistentVolume's mountOptions, a StorageClass's
// mountOptions) reach NodePublishVolume as mount flags.
var (
	// inEffectOptions are what every modelfs mount already is: read-only,
	// no setuid, no devices, readable by the pod's user whatever its uid.
	inEffectOptions = []string{"ro", "nosuid", "nodev", "allow_other"}
	// mountOptionKnown lists what setMountOptions takes, for its errors.
	mountOptionKnown = strings.Join(append(slices.Clone(inEffectOptions), "readahead=SIZE"), ", ")
)

// setMountOptions takes a volume's mount options. Those that are in
// effect anyway are accepted, readahead=SIZE sets the largest readahead
// window, and any other is refused by name: silently dropping an option an
// admin asked for (rw, exec, suid) would promise what the mount is not.
func (v *volume) setMountOptions(flags []string) error {
	var bad []string
	for _, f := range flags {
		switch name, val, hasVal := strings.Cut(strings.TrimSpace(f), "="); {
		case !hasVal && slices.Contains(inEffectOptions, name):
		case name == "readahead" && hasVal:
			n, ok := ParseSize(val)
			if !ok || n < 4<<10 || n > 1<<30 {
				return fmt.Errorf("mount option %q: want readahead=SIZE from 4Ki to 1Gi, such as readahead=64Mi", f)
			}
			v.readahead = n
		default:
			bad = append(bad, fmt.Sprintf("%q", f))
		}
	}
	if len(bad) > 0 {
		return fmt.Errorf("mount options %s are not supported by modelfs volumes; supported: %s", strings.Join(bad, ", "), mountOptionKnown)
	}
	return nil
}

// credentials turns nodePublishSecretRef secrets into environment
// variables for the mount process. Errors name keys, never values.
func credentials(secrets map[string]string) ([]string, error) {
	var env []string
	for k, val := range secrets {
		switch k {
		case secretAccessKeyID:
			env = append(env, "AWS_ACCESS_KEY_ID="+val)
		case secretSecretAccessKey:
			env = append(env, "AWS_SECRET_ACCESS_KEY="+val)
		case secretSessionToken:
			env = append(env, "AWS_SESSION_TOKEN="+val)
		case secretHTTPToken:
			env = append(env, "MODELFS_HTTP_TOKEN="+val)
		case secretHFToken:
			env = append(env, "HF_TOKEN="+val)
		case secretAzureKey:
			env = append(env, "AZURE_STORAGE_KEY="+val)
		case secretAzureSAS:
			env = append(env, "AZURE_STORAGE_SAS_TOKEN="+val)
		case secretGCSKey:
			// A file, not a variable: gcsKeyFile writes it.
		default:
			return nil, fmt.Errorf("secret key %q is unknown; known: %s, %s, %s, %s, %s, %s, %s, %s", k,
				secretAccessKeyID, secretSecretAccessKey, secretSessionToken, secretHTTPToken, secretHFToken, secretAzureKey, secretAzureSAS, secretGCSKey)
		}
		if val == "" {
			return nil, fmt.Errorf("secret key %q is empty", k)
		}
	}
	_, id := secrets[secretAccessKeyID]
	_, key := secrets[secretSecretAccessKey]
	if id != key {
		return nil, fmt.Errorf("secrets %q and %q go together; only one was given", secretAccessKeyID, secretSecretAccessKey)
	}
	if _, tok := secrets[secretSessionToken]; tok && !id {
		return nil, fmt.Errorf("secret %q needs %q and %q", secretSessionToken, secretAccessKeyID, secretSecretAccessKey)
	}
	if _, azKey := secrets[secretAzureKey]; azKey {
		if _, azSAS := secrets[secretAzureSAS]; azSAS {
			return nil, fmt.Errorf("secrets %q and %q both sign Azure requests; give one", secretAzureKey, secretAzureSAS)
		}
	}
	sort.Strings(env)
	return env, nil
}

// hasAzureKeys reports whether a volume's secrets sign Azure requests: an
// az:// volume without them would look for an identity (managed identity,
// workload identity), which is the node's.
func hasAzureKeys(secrets map[string]string) bool {
	return secrets[secretAzureKey] != "" || secrets[secretAzureSAS] != ""
}

// gcsKeyMax bounds a service account key secret; real ones are ~2.3 KiB.
const gcsKeyMax = 64 << 10

// gcsKeyFile writes the gcsServiceAccountKey secret, if there is one, to a
// 0600 file in dir for the mount process, which Google's client library
// reads from GOOGLE_APPLICATION_CREDENTIALS (never an argument). It
// returns that variable and a function that removes the file, to call once
// the mount is up: the key is read when the source is opened. Only service
// account keys are taken: other credential files can name local files and
// URLs the node's identity would be used on. Errors name the key, never
// its content.
func gcsKeyFile(dir string, secrets map[string]string) ([]string, func(), error) {
	key, ok := secrets[secretGCSKey]
	if !ok {
		return nil, func() {}, nil
	}
	var sa struct {
		Type        string `json:"type"`
		ClientEmail string `json:"client_email"`
		PrivateKey  string `json:"private_key"`
	}
	if len(key) > gcsKeyMax || json.Unmarshal([]byte(key), &sa) != nil {
		return nil, nil, fmt.Errorf("secret %q is not a service account key (JSON of at most %d bytes)", secretGCSKey, gcsKeyMax)
	}
	if sa.Type != "service_account" || sa.ClientEmail == "" || sa.PrivateKey == "" {
		return nil, nil, fmt.Errorf("secret %q must be a service account key (type service_account, with client_email and private_key)", secretGCSKey)
	}
	keys := filepath.Join(dir, "keys")
	if err := os.MkdirAll(keys, 0o700); err != nil {
		return nil, nil, fmt.Errorf("writing secret %q: %w", secretGCSKey, err)
	}
	f, err := os.CreateTemp(keys, "gcs-*.json") // 0600
	if err != nil {
		return nil, nil, fmt.Errorf("writing secret %q: %w", secretGCSKey, err)
	}
	remove := func() { os.Remove(f.Name()) }
	_, err = f.WriteString(key)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		remove()
		return nil, nil, fmt.Errorf("writing secret %q: %w", secretGCSKey, err)
	}
	return []string{"GOOGLE_APPLICATION_CREDENTIALS=" + f.Name()}, remove, nil
}

// mountEnv is what v adds to its mount process's environment. The source
// travels there, never in arguments: a source URL may hold a signature in
// its query, and arguments are readable by any user in /proc and by anyone
// who reaches pprof's cmdline.
func (v *volume) mountEnv() []string { return []string{config.SourceEnv + "=" + v.source} }

// shownSource is the source without userinfo, query or fragment, where
// credentials and signatures hide: what records and logs may hold.
func (v *volume) shownSource() string {
	if v.scheme == "hf" {
		return v.source // a repo and revision, which ParseLocation checked
	}
	u, err := url.Parse(v.source)
	if err != nil {
		return v.scheme + "://"
	}
	u.User, u.RawQuery, u.ForceQuery, u.Fragment, u.RawFragment = nil, "", false, "", ""
	return u.String()
}

// hfEndpoint is the Hub an hf:// volume reads from.
func (v *volume) hfEndpoint() string {
	if v.endpoint != "" {
		return v.endpoint
	}
	return fetch.DefaultHFEndpoint
}

// memCacheBytes is the RAM cache v's mount gets: its memCache, or the
// mount's auto rule (config.Config.MemCacheBytes) within the node's cap.
// It is always named to the mount, since the pod's memory limit is
// sized from it.
func (v *volume) memCacheBytes(node *Options) int64 {
	cfg := v.config()
	if v.memCache == 0 && node.MaxMemCache > 0 {
		return min(cfg.MemCacheBytes(), node.MaxMemCache)
	}
	return cfg.MemCacheBytes()
}

// config is the mount's Config for v's own settings, before the node's:
// built from the mount's defaults, so what a volume leaves out is what
// modelfs mount would pick.
func (v *volume) config() config.Config {
	cfg := config.Default()
	cfg.Region, cfg.NoSignRequest = v.region, v.noSignRequest
	cfg.Prefetch, cfg.MemCache = config.Prefetch(v.prefetch), v.memCache
	if v.blockSize != 0 {
		cfg.BlockSize = v.blockSize
	}
	if v.concurrency != 0 {
		cfg.Concurrency = v.concurrency
	}
	if v.readahead != 0 {
		cfg.Readahead = v.readahead
	}
	if v.scheme == "hf" {
		// Always named, so the Hub reached is the one --inline-sources
		// checked, not an HF_ENDPOINT in the plugin's environment.
		cfg.HFEndpoint = v.hfEndpoint()
	} else {
		cfg.Endpoint = v.endpoint
	}
	return cfg
}

// mountArgs is the modelfs mount command line for v. The source and
// secrets travel in the environment, never in arguments, which any user
// can read in /proc; the target stays last, where ownsTarget looks.
// metricsSock, if set, is where the mount serves its metrics.
func (v *volume) mountArgs(target, metricsSock string, node *Options) []string {
	cfg := v.config()
	cfg.Mountpoint, cfg.MemCache, cfg.AllowOther = target, v.memCacheBytes(node), true
	// The mount enforces the network policy on every connection it dials.
	policy := node.netPolicy()
	cfg.DenyNetworks, cfg.AllowNetworks = policy.Deny, policy.Allow
	if v.profile != "" {
		// A node learns a model's load order: the first volume records
		// it, later ones replay it.
		path := filepath.Join(node.ProfileDir, v.profile)
		if _, err := os.Stat(path); err == nil {
			cfg.Profile = path
		}
		if v.recordProfile {
			cfg.RecordProfile = path
		}
	}
	if node.CacheDir != "" {
		cfg.CacheDir, cfg.CacheSize = node.CacheDir, node.CacheSize
		// An inline volume must prove access to its source: the listing
		// another volume saved would serve it that volume's cached blocks
		// while its own endpoint does not answer.
		cfg.NoSavedListing = v.ephemeral
	}
	if metricsSock != "" {
		cfg.MetricsAddr = "unix:" + metricsSock
	}
	withSharedCache(&cfg, node, v.nodeIdentity)
	return cfg.Args()
}
