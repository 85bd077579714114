package main

import (
	"fmt"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/modelfs/modelfs/fetch"
	"github.com/modelfs/modelfs/mount/config"
)

const sourceHelp = `SOURCE is one of
   s3://bucket/prefix       S3 or an S3-compatible store (--endpoint); credentials from
                            the AWS default chain (env, shared config, web identity, instance role)
   gs://bucket/prefix       Google Cloud Storage; Application Default Credentials
                            (GOOGLE_APPLICATION_CREDENTIALS, workload identity, metadata server)
   az://account/container/prefix
                            Azure Blob Storage (also https://ACCOUNT.blob.core.windows.net/...);
                            AZURE_STORAGE_KEY, AZURE_STORAGE_SAS_TOKEN or DefaultAzureCredential
   https://host/path/       a directory with a manifest (modelfs.json or model.safetensors.index.json)
   https://host/file        a single file
   file:///dir              a local or NFS directory
   hf://org/name[@rev]      a Hugging Face Hub model (hf://datasets/org/name for a dataset),
                            pinned to the revision's commit at mount; token from HF_TOKEN,
                            --hf-token-env, then $HF_HOME/token; HF_ENDPOINT for a mirror`

// sourceFlags are the flags of every command that reads a source.
func sourceFlags() []cli.Flag {
	env := func(name string) []string { return []string{"MODELFS_" + name} }
	return []cli.Flag{
		&cli.StringFlag{Name: "region", Usage: "S3 region (default: the AWS chain, then us-east-1)", EnvVars: env("REGION")},
		&cli.StringFlag{Name: "endpoint", Usage: "S3-compatible endpoint URL (path-style addressing), or the Cloud Storage or Azure blob service endpoint of a gs:// or az:// source (emulators, private endpoints)", EnvVars: env("ENDPOINT")},
		&cli.StringFlag{Name: "aws-profile", Usage: "AWS shared-config profile (default: AWS_PROFILE, then default)", EnvVars: env("AWS_PROFILE")},
		&cli.BoolFlag{Name: "no-sign-request", Usage: "send anonymous requests to S3, Cloud Storage or Azure (public buckets and containers)", EnvVars: env("NO_SIGN_REQUEST")},
		&cli.StringFlag{Name: "http-token-env", Value: "MODELFS_HTTP_TOKEN", Usage: "name of the environment variable holding an HTTP bearer token", EnvVars: env("HTTP_TOKEN_ENV")},
		&cli.StringFlag{Name: "hf-token-env", Usage: "name of an environment variable holding a Hugging Face token, read after HF_TOKEN", EnvVars: env("HF_TOKEN_ENV")},
		&cli.StringFlag{Name: "hf-endpoint", Value: fetch.DefaultHFEndpoint, Usage: "Hugging Face Hub endpoint (mirrors)", EnvVars: []string{"MODELFS_HF_ENDPOINT", "HF_ENDPOINT"}},
		&cli.StringFlag{Name: "block-size", Value: "8MiB", Usage: "fetch and cache unit", EnvVars: env("BLOCK_SIZE")},
		&cli.IntFlag{Name: "concurrency", Value: 16, Usage: "parallel ranged GETs", EnvVars: env("CONCURRENCY")},
		&cli.StringFlag{Name: "cache-dir", Usage: "persistent block cache directory, shareable by several mounts", EnvVars: env("CACHE_DIR")},
		&cli.StringFlag{Name: "cache-size", Value: "auto", Usage: "disk cache budget (auto: what it holds plus 80% of the free space at start)", EnvVars: env("CACHE_SIZE")},
		&cli.DurationFlag{Name: "request-timeout", Value: 60 * time.Second, Usage: "limit for one GET attempt, body included", EnvVars: env("REQUEST_TIMEOUT")},
		&cli.IntFlag{Name: "retries", Value: 6, Usage: "attempts per request before failing", EnvVars: env("RETRIES")},
		// The CSI plugin's network policy for the mounts it starts.
		&cli.StringFlag{Name: "deny-networks", Hidden: true, Usage: "refuse connections to these comma-separated CIDRs", EnvVars: env("DENY_NETWORKS")},
		&cli.StringFlag{Name: "allow-networks", Hidden: true, Usage: "exceptions to --deny-networks", EnvVars: env("ALLOW_NETWORKS")},
		// Set by the CSI plugin for volumes it does not trust: a saved
		// listing lets a mount that cannot reach its source serve the
		// cached blocks of whoever listed that source before.
		&cli.BoolFlag{Name: "no-saved-listing", Hidden: true, Usage: "never fall back to a listing saved in the cache dir", EnvVars: env("NO_SAVED_LISTING")},
		&cli.StringFlag{Name: "shared-cache", Usage: "cluster-wide block cache on an S3-compatible store, s3://bucket/prefix: blocks are read there before the origin, and written there once", EnvVars: env("SHARED_CACHE")},
		&cli.StringFlag{Name: "shared-cache-endpoint", Usage: "S3-compatible endpoint URL of the shared cache (path-style addressing)", EnvVars: env("SHARED_CACHE_ENDPOINT")},
		&cli.StringFlag{Name: "shared-cache-region", Usage: "region of the shared cache (default: the AWS chain, then us-east-1)", EnvVars: env("SHARED_CACHE_REGION")},
		&cli.StringFlag{Name: "shared-cache-profile", Usage: "AWS shared-config profile for the shared cache (default: the AWS default chain)", EnvVars: env("SHARED_CACHE_PROFILE")},
		&cli.BoolFlag{Name: "shared-cache-no-sign-request", Usage: "send anonymous requests to the shared cache", EnvVars: env("SHARED_CACHE_NO_SIGN_REQUEST")},
		&cli.StringFlag{Name: "shared-cache-credentials-file", Usage: "AWS shared credentials file holding the shared cache's own keys (profile: --shared-cache-profile or default); the store then gets no other credentials", EnvVars: env("SHARED_CACHE_CREDENTIALS_FILE")},
	}
}

// sourcesConfig reads the source flags (and their MODELFS_* twins) into
// a config.Sources; source is SOURCE, or "". Values that do not parse are
// usage errors; Validate checks the rest.
func sourcesConfig(c *cli.Context, source, manifest string) (config.Sources, error) {
	s := config.Sources{
		Source: source, Manifest: manifest,
		Region: c.String("region"), Endpoint: c.String("endpoint"), AWSProfile: c.String("aws-profile"),
		NoSignRequest: c.Bool("no-sign-request"), HTTPTokenEnv: c.String("http-token-env"),
		HFTokenEnv: c.String("hf-token-env"), HFEndpoint: c.String("hf-endpoint"),
		Concurrency: c.Int("concurrency"), CacheDir: c.String("cache-dir"),
		RequestTimeout: c.Duration("request-timeout"), Retries: c.Int("retries"),
		NoSavedListing: c.Bool("no-saved-listing"),
		SharedCache:    c.String("shared-cache"), SharedCacheEndpoint: c.String("shared-cache-endpoint"),
		SharedCacheRegion: c.String("shared-cache-region"), SharedCacheProfile: c.String("shared-cache-profile"),
		SharedCacheNoSignRequest: c.Bool("shared-cache-no-sign-request"), SharedCacheCredentialsFile: c.String("shared-cache-credentials-file"),
	}
	var err error
	if s.BlockSize, err = parseSize(c.String("block-size"), "--block-size"); err != nil {
		return s, err
	}
	if s.CacheSize, err = sizeOrAuto(c.String("cache-size"), "--cache-size"); err != nil {
		return s, err
	}
	if s.DenyNetworks, err = fetch.ParseNetworks(c.String("deny-networks")); err != nil {
		return s, usageError{fmt.Errorf("--deny-networks: %w", err)}
	}
	if s.AllowNetworks, err = fetch.ParseNetworks(c.String("allow-networks")); err != nil {
		return s, usageError{fmt.Errorf("--allow-networks: %w", err)}
	}
	return s, nil
}

// mountConfig reads the mount command's flags into a config.Config.
func mountConfig(c *cli.Context, source, manifest, mountpoint string) (config.Config, error) {
	src, err := sourcesConfig(c, source, manifest)
	cfg := config.Config{
		Sources: src, Mountpoint: mountpoint,
		Prefetch: config.Prefetch(c.String("prefetch")), Profile: c.String("profile"), RecordProfile: c.String("record-profile"),
		AllowOther: c.Bool("allow-other"), MetricsAddr: c.String("metrics-addr"), Pprof: c.Bool("pprof"), DebugFUSE: c.Bool("debug-fuse"),
	}
	if err != nil {
		return cfg, err
	}
	if cfg.MemCache, err = sizeOrAuto(c.String("mem-cache"), "--mem-cache"); err != nil {
		return cfg, err
	}
	if cfg.Readahead, err = parseSize(c.String("readahead"), "--readahead"); err != nil {
		return cfg, err
	}
	if cfg.SmallFile, err = parseSize(c.String("small-file"), "--small-file"); err != nil {
		return cfg, err
	}
	return cfg, nil
}

// validate checks cfg once; its complaints are usage errors.
func validate(v interface{ Validate() error }) error {
	if err := v.Validate(); err != nil {
		return usageError{err}
	}
	return nil
}

const manifestHelp = `With --manifest FILE, several models are served at once, each in a
subdirectory named by its key. FILE is JSON, the shape of a Kubernetes
ConfigMap's data:

   {"llama-13b": {"source": "s3://bucket/llama-13b", "size": "26GB",
                  "format": "huggingface",
                  "sha256": {"model-00001-of-00003.safetensors": "<64 hex digits>"}},
    "tinyllama": {"source": "https://host/tinyllama.Q4_K_M.gguf", "format": "gguf",
                  "sha256": "<64 hex digits>"}}

source is required; size (checked against the listing, a warning when far
off), format (huggingface, safetensors or gguf) and sha256 (one hash for a
single-file model, or file path to hash) are optional. warm --manifest
verifies the hashes. Source flags (--endpoint, --region, ...) apply to
every model they fit; one that fits none is ignored with a warning.`
