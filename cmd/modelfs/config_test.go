package main

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/modelfs/modelfs/mount/config"
)

// parseMount runs args through the real mount command's flags and
// returns the Config its action would mount.
func parseMount(t *testing.T, args []string) (config.Config, error) {
	t.Helper()
	cmd := mountCommand()
	var got config.Config
	cmd.Action = func(c *cli.Context) error {
		var err error
		got, err = mountCommandConfig(c)
		return err
	}
	app := &cli.App{Name: "modelfs", Commands: []*cli.Command{cmd}, ExitErrHandler: func(*cli.Context, error) {}}
	oneLineUsageErrors(app.Commands)
	err := app.RunContext(context.Background(), append([]string{"modelfs"}, args...))
	return got, err
}

// clearEnv unsets the variables the mount flags read, for this test.
func clearEnv(t *testing.T) {
	for _, name := range []string{config.SourceEnv, "HF_ENDPOINT", "MODELFS_HF_ENDPOINT", "MODELFS_BLOCK_SIZE", "MODELFS_PREFETCH", "MODELFS_MEM_CACHE",
		"MODELFS_RETRIES", "MODELFS_HTTP_TOKEN_ENV", "MODELFS_REQUEST_TIMEOUT"} {
		t.Setenv(name, "")
		os.Unsetenv(name)
	}
}

func TestConfigArgsRoundTrip(t *testing.T) {
	clearEnv(t)
	dir := t.TempDir()
	withSource := func(f func(*config.Config)) config.Config {
		c := config.Default()
		c.Source, c.Mountpoint = "s3://bucket/llama", "/mnt/llama"
		f(&c)
		return c
	}
	deny := []netip.Prefix{netip.MustParsePrefix("169.254.0.0/16"), netip.MustParsePrefix("fd00:ec2::254/128")}
	allow := []netip.Prefix{netip.MustParsePrefix("10.1.2.3/32")}
	for name, cfg := range map[string]config.Config{
		"defaults": withSource(func(*config.Config) {}),
		"every setting": withSource(func(c *config.Config) {
			c.Region, c.Endpoint, c.AWSProfile, c.NoSignRequest = "eu-west-1", "http://127.0.0.1:9000", "prod", true
			c.HTTPTokenEnv, c.HFTokenEnv, c.HFEndpoint = "MY_TOKEN", "MY_HF_TOKEN", "https://hub.mirror.example"
			c.BlockSize, c.Concurrency = 16<<20, 64
			c.CacheDir, c.CacheSize = filepath.Join(dir, "cache"), 100<<30
			c.RequestTimeout, c.Retries = 90*time.Second, 3
			c.DenyNetworks, c.AllowNetworks, c.NoSavedListing = deny, allow, true
			c.SharedCache, c.SharedCacheEndpoint, c.SharedCacheRegion = "s3://cluster-cache/blocks", "http://127.0.0.1:9100", "eu-west-2"
			c.SharedCacheProfile, c.SharedCacheCredentialsFile = "cache", filepath.Join(dir, "cache-credentials")
			c.MemCache, c.Prefetch = 512<<20, config.PrefetchProfile
			c.Profile, c.RecordProfile = filepath.Join(dir, "p.profile"), filepath.Join(dir, "rec.profile")
			c.SmallFile, c.Readahead = 4<<20, 64<<20
			c.AllowOther, c.MetricsAddr, c.Pprof, c.DebugFUSE = true, "unix:"+filepath.Join(dir, "m.sock"), true, true
		}),
		"manifest": withSource(func(c *config.Config) {
			c.Source, c.Manifest, c.Prefetch = "", filepath.Join(dir, "models.json"), config.PrefetchOff
		}),
		"anonymous shared cache": withSource(func(c *config.Config) {
			c.SharedCache, c.SharedCacheNoSignRequest = "s3://cluster-cache", true
		}),
		"explicit zeros": withSource(func(c *config.Config) {
			c.Retries, c.SmallFile, c.Readahead, c.RequestTimeout = 0, 0, 0, 0
			c.HTTPTokenEnv, c.HFEndpoint = "", ""
		}),
		"odd source and mountpoint": withSource(func(c *config.Config) {
			c.Source, c.Mountpoint = "file:///models/-dash dir", "-mnt"
		}),
	} {
		t.Run(name, func(t *testing.T) {
			got, err := parseMount(t, cfg.Args())
			if err != nil {
				t.Fatalf("parsing %q: %v", cfg.Args(), err)
			}
			if !reflect.DeepEqual(got, cfg) {
				t.Errorf("Args %q parsed to\n%+v\nwant\n%+v", cfg.Args(), got, cfg)
			}
		})
	}
}

// The mount runs with exactly the Config rendered, whatever MODELFS_*
// variables its environment holds, and its source may come from there.
func TestConfigArgsOverrideEnvironment(t *testing.T) {
	clearEnv(t)
	t.Setenv(config.SourceEnv, "s3://bucket/secret-in-env")
	for name, val := range map[string]string{
		"MODELFS_RETRIES": "9", "MODELFS_BLOCK_SIZE": "1MiB", "MODELFS_PREFETCH": "off", "MODELFS_MEM_CACHE": "64MiB",
		"MODELFS_HTTP_TOKEN_ENV": "OTHER", "HF_ENDPOINT": "https://elsewhere.example", "MODELFS_REQUEST_TIMEOUT": "1s",
	} {
		t.Setenv(name, val)
	}
	c := config.Default()
	c.Mountpoint, c.Prefetch, c.Concurrency, c.Retries = "/t", config.PrefetchLayer, 32, 0
	got, err := parseMount(t, c.Args())
	if err != nil {
		t.Fatal(err)
	}
	c.Source = "s3://bucket/secret-in-env"
	if !reflect.DeepEqual(got, c) {
		t.Errorf("Args %q parsed to\n%+v\nwant\n%+v", c.Args(), got, c)
	}
}

func TestConfigValidate(t *testing.T) {
	clearEnv(t)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"mount", "--block-size", "32k", "s3://b/p", "/m"}, "--block-size 32.0 KiB: want 64KiB to 256MiB"},
		{[]string{"mount", "--concurrency", "0", "s3://b/p", "/m"}, "--concurrency 0: want 1 to 1024"},
		{[]string{"mount", "--prefetch", "sometimes", "s3://b/p", "/m"}, `--prefetch "sometimes": want auto`},
		{[]string{"mount", "--prefetch", "profile", "s3://b/p", "/m"}, "--prefetch profile needs --profile FILE"},
		{[]string{"mount", "--mem-cache", "8MiB", "s3://b/p", "/m"}, "--mem-cache 8.0 MiB: want at least two blocks"},
		{[]string{"mount", "--pprof", "s3://b/p", "/m"}, "--pprof needs --metrics-addr"},
		{[]string{"mount", "--record-profile", "/no/such/dir/p", "s3://b/p", "/m"}, "--record-profile /no/such/dir/p: its directory does not exist"},
		{[]string{"mount", "--shared-cache", "gs://b/p", "s3://b/p", "/m"}, "--shared-cache: want s3://bucket/prefix"},
		{[]string{"mount", "--shared-cache-endpoint", "http://h", "s3://b/p", "/m"}, "need --shared-cache"},
		{[]string{"mount", "--shared-cache", "s3://c", "--shared-cache-endpoint", "ftp://h", "s3://b/p", "/m"}, "--shared-cache-endpoint: want http(s)://host[:port]"},
		{[]string{"mount", "--shared-cache", "s3://c", "--shared-cache-endpoint", "http://AKID:SECRET@h", "s3://b/p", "/m"}, "credentials do not go in the URL"},
		{[]string{"mount", "--shared-cache", "s3://c", "--shared-cache-profile", "p", "--shared-cache-no-sign-request", "s3://b/p", "/m"}, "mutually exclusive"},
	} {
		_, err := parseMount(t, tc.args)
		if err == nil || exitCode(err) != exitUsage || !contains(err.Error(), tc.want) {
			t.Errorf("%q: error %v (exit %d), want a usage error mentioning %q", tc.args, err, exitCode(err), tc.want)
		}
	}
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }

// An endpoint given with credentials in it is refused without repeating
// them: the message goes to logs.
func TestSharedCacheEndpointSecretNotEchoed(t *testing.T) {
	clearEnv(t)
	_, err := parseMount(t, []string{"mount", "--shared-cache", "s3://c", "--shared-cache-endpoint", "https://AKID:s3cr3t@h/?X-Amz-Signature=sig", "s3://b/p", "/m"})
	if err == nil || strings.Contains(err.Error(), "s3cr3t") || strings.Contains(err.Error(), "sig") {
		t.Fatalf("error %v: want a refusal that does not repeat the URL", err)
	}
}
