package csi

import (
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

func TestParseVolume(t *testing.T) {
	v, err := parseVolume(map[string]string{
		"source": "s3://models/llama-3-8b", "endpoint": "http://127.0.0.1:9000", "region": "eu-west-1",
		"prefetch": "layer", "memCache": "512MiB", "blockSize": "8MiB", "concurrency": "32",
		"csi.storage.k8s.io/pod.name": "server-0", "csi.storage.k8s.io/ephemeral": "true",
		"csi.storage.k8s.io/serviceAccount.tokens": `{"sts.amazonaws.com":{"token":"secret-token"}}`,
	})
	if err != nil {
		t.Fatal(err)
	}
	if !v.ephemeral || v.scheme != "s3" || v.concurrency != 32 {
		t.Fatalf("parsed %+v", v)
	}
	args := v.mountArgs("/var/lib/kubelet/pods/x/volumes/m", "/state/v.sock", &Options{CacheDir: "/var/cache/modelfs", ProfileDir: t.TempDir(), CacheSize: 100 << 30,
		AllowedNetworks: []netip.Prefix{netip.MustParsePrefix("10.1.2.3/32")}})
	want := []string{"mount", "--prefetch", "layer",
		"--deny-networks", "169.254.0.0/16,fe80::/10,fd00:ec2::254/128,127.0.0.0/8,::1/128,0.0.0.0/8,::/128",
		"--allow-networks", "10.1.2.3/32", "--hf-endpoint", "https://huggingface.co", "--endpoint", "http://127.0.0.1:9000", "--region", "eu-west-1",
		"--http-token-env", "MODELFS_HTTP_TOKEN",
		"--cache-dir", "/var/cache/modelfs", "--no-saved-listing", "--cache-size", "107374182400", "--mem-cache", "536870912", "--block-size", "8388608",
		"--small-file", "1048576", "--readahead", "134217728", "--concurrency", "32", "--request-timeout", "1m0s", "--retries", "6",
		"--metrics-addr", "unix:/state/v.sock", "--allow-other", "--", "/var/lib/kubelet/pods/x/volumes/m"}
	if !slices.Equal(args, want) {
		t.Fatalf("mount args\n got %q\nwant %q", args, want)
	}
	if strings.Contains(strings.Join(args, " "), "secret-token") {
		t.Fatal("a service account token reached the mount arguments")
	}
}

func TestParseVolumeRejects(t *testing.T) {
	cases := []struct {
		attrs map[string]string
		attr  string // the attribute the error must name
	}{
		{map[string]string{}, "source"},
		{map[string]string{"source": "s3://bkt/p", "color": "blue"}, "color"},
		{map[string]string{"source": "file:///etc"}, "source"},
		{map[string]string{"source": "ftp://host/x"}, "source"},
		{map[string]string{"source": "https://user:pw@host/m"}, "source"},
		{map[string]string{"source": "s3://bkt/p", "prefetch": "eager"}, "prefetch"},
		{map[string]string{"source": "s3://bkt/p", "memCache": "lots"}, "memCache"},
		{map[string]string{"source": "s3://bkt/p", "cacheSize": "1MiB"}, "cacheSize"},
		{map[string]string{"source": "s3://bkt/p", "cacheSize": "auto"}, "cacheSize"},
		{map[string]string{"source": "s3://bkt/p", "blockSize": "auto"}, "blockSize"},
		{map[string]string{"source": "s3://bkt/p", "blockSize": "1Ki"}, "blockSize"},
		{map[string]string{"source": "s3://bkt/p", "blockSize": "1Gi"}, "blockSize"},
		{map[string]string{"source": "s3://bkt/p", "memCache": "-1Gi"}, "memCache"},
		{map[string]string{"source": "s3://bkt/p", "memCache": "1e30"}, "memCache"},
		{map[string]string{"source": "s3://bkt/p", "concurrency": "0"}, "concurrency"},
		{map[string]string{"source": "s3://bkt/p", "concurrency": "2000"}, "concurrency"},
		{map[string]string{"source": "s3://bkt/p", "memCache": "8Mi"}, "memCache"},     // under two 8 MiB blocks
		{map[string]string{"source": "s3://bkt/p", "prefetch": "profile"}, "prefetch"}, // with no profile to replay
		{map[string]string{"source": "s3://bkt/p", "noSignRequest": "yes please"}, "noSignRequest"},
		{map[string]string{"source": "s3://bkt/p", "region": "us east"}, "region"},
		{map[string]string{"source": "gs://models/llama", "region": "us-east-1"}, "region"},
		{map[string]string{"source": "https://h/m", "noSignRequest": "true"}, "noSignRequest"},
		{map[string]string{"source": "s3://bkt/p", "endpoint": "minio:9000"}, "endpoint"},
		{map[string]string{"source": "https://h/m", "endpoint": "http://minio:9000"}, "endpoint"},
		{map[string]string{"source": "s3://bkt/p", "profile": "../../etc/shadow"}, "profile"},
		{map[string]string{"source": "s3://bkt/p", "recordProfile": "true"}, "recordProfile"},
		{map[string]string{"source": "s3://bkt/p", "profile": "p", "recordProfile": "true", "csi.storage.k8s.io/ephemeral": "true"}, "recordProfile"},
	}
	for _, c := range cases {
		_, err := parseVolume(c.attrs)
		var ae *attributeError
		if !errors.As(err, &ae) || ae.name != c.attr || !strings.Contains(err.Error(), `"`+c.attr+`"`) {
			t.Errorf("parseVolume(%v) = %v; want an error naming %q", c.attrs, err, c.attr)
		}
	}
	// The userinfo must not be echoed back.
	_, err := parseVolume(map[string]string{"source": "https://user:hunter2@host/m"})
	if err == nil || strings.Contains(err.Error(), "hunter2") {
		t.Fatalf("error %v quotes the URL's password", err)
	}
}

// TestSizeAttributes: Kubernetes quantities read as Kubernetes reads them,
// modelfs sizes as modelfs reads them.
func TestSizeAttributes(t *testing.T) {
	for in, want := range map[string]int64{
		"1Gi": 1 << 30, "512Mi": 512 << 20, "2G": 2e9, "1e9": 1e9, "4096": 4096, "64k": 64e3,
		"512MiB": 512 << 20, "1.5GiB": 3 << 29, "2GB": 2e9, "8m": 8 << 20, "100M": 100e6, "1Ti": 1 << 40, "1Pi": 1 << 50,
	} {
		if got, ok := ParseSize(in); !ok || got != want {
			t.Errorf("size %q = %d, %v; want %d", in, got, ok, want)
		}
		if want < 16<<20 {
			continue // under the two blocks a RAM cache must hold
		}
		v, err := parseVolume(map[string]string{"source": "s3://bkt/p", "memCache": in})
		if err != nil || v.memCache != want {
			t.Errorf("memCache %q = %v, %v; want %d", in, v, err, want)
		}
	}
	v, err := parseVolume(map[string]string{"source": "s3://bkt/p", "blockSize": "16Mi"})
	if err != nil || v.blockSize != 16<<20 {
		t.Fatalf("blockSize 16Mi: %+v, %v", v, err)
	}
}

// TestMountOptions: options every mount already has are accepted,
// readahead reaches the mount, and anything else is refused by name.
func TestMountOptions(t *testing.T) {
	v := &volume{source: "s3://bkt/p", scheme: "s3", prefetch: "auto"}
	if err := v.setMountOptions([]string{"ro", "nosuid", "nodev", "allow_other", "readahead=64Mi"}); err != nil {
		t.Fatal(err)
	}
	args := v.mountArgs("/t", "", &Options{})
	if i := slices.Index(args, "--readahead"); i < 0 || args[i+1] != "67108864" {
		t.Fatalf("readahead not passed on: %q", args)
	}
	for _, bad := range [][]string{{"rw"}, {"ro", "exec", "suid"}, {"readahead=lots"}, {"readahead=1Ti"}, {"readahead"}, {"uid=0"}} {
		err := (&volume{}).setMountOptions(bad)
		if err == nil {
			t.Errorf("mount options %q accepted", bad)
			continue
		}
		for _, f := range bad {
			if f != "ro" && !strings.Contains(err.Error(), `"`+f+`"`) {
				t.Errorf("error %q does not name %q", err, f)
			}
		}
	}
}

func TestCredentials(t *testing.T) {
	env, err := credentials(map[string]string{"awsAccessKeyID": "AKIA1", "awsSecretAccessKey": "s3cr3t", "awsSessionToken": "tok"})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"AWS_ACCESS_KEY_ID=AKIA1", "AWS_SECRET_ACCESS_KEY=s3cr3t", "AWS_SESSION_TOKEN=tok"}
	if !slices.Equal(env, want) {
		t.Fatalf("env %q, want %q", env, want)
	}
	for _, bad := range []map[string]string{
		{"awsAccessKeyID": "AKIA1"},
		{"awsSecretAccessKey": "s3cr3t"},
		{"awsSessionToken": "s3cr3t"},
		{"password": "s3cr3t"},
		{"awsAccessKeyID": "", "awsSecretAccessKey": "s3cr3t"},
	} {
		_, err := credentials(bad)
		if err == nil {
			t.Errorf("credentials(%v): want an error", bad)
		} else if strings.Contains(err.Error(), "s3cr3t") {
			t.Errorf("error %q quotes a secret value", err)
		}
	}
	if env, err := credentials(map[string]string{"httpToken": "hf_x"}); err != nil || !slices.Equal(env, []string{"MODELFS_HTTP_TOKEN=hf_x"}) {
		t.Fatalf("http token: %q, %v", env, err)
	}
}

// FuzzVolumeAttributes feeds attribute sets, one key=value per line, to the
// parser: no panic, and whatever it accepts yields a mount command line
// that ends with the source and the target, so no value can smuggle in an
// extra argument in their place.
func FuzzVolumeAttributes(f *testing.F) {
	for _, seed := range []string{
		"source=s3://models/llama\nprefetch=layer",
		"source=https://huggingface.co/org/model/resolve/main/model.safetensors\nconcurrency=8",
		"source=s3://bkt\nendpoint=http://127.0.0.1:9000\nregion=us-east-1\nnoSignRequest=true",
		"source=s3://bkt/p\nprofile=llama.prof\nrecordProfile=true\nmemCache=1GiB\ncacheSize=auto",
		"source=--allow-other\nprefetch=--debug-fuse",
		"source=s3://b/../../x\nblockSize=1e400",
		"csi.storage.k8s.io/ephemeral=true\nsource=s3://bkt/p",
		"source=file:///\x00",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, in string) {
		attrs := map[string]string{}
		for line := range strings.SplitSeq(in, "\n") {
			k, v, _ := strings.Cut(line, "=")
			attrs[k] = v
		}
		v, err := parseVolume(attrs)
		if err != nil {
			return
		}
		args := v.mountArgs("/target", "", &Options{CacheDir: "/cache", ProfileDir: "/profiles"})
		if len(args) < 2 || args[len(args)-2] != "--" || args[len(args)-1] != "/target" || slices.Contains(args, v.source) {
			t.Fatalf("mount args %q do not end with -- TARGET, or hold the source", args)
		}
		if v.source == "" || strings.HasPrefix(v.source, "-") {
			t.Fatalf("accepted source %q", v.source)
		}
	})
}
