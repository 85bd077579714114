package csi

import (
	"slices"
	"strings"
	"testing"
)

// The plugin's shared cache reaches the mounts of volumes that run with
// the node's identity, whose credentials it is read with, and no other.
func TestSharedCacheOnlyWithTheNodeIdentity(t *testing.T) {
	o := &Options{SharedCache: "s3://cluster-cache/blocks", SharedCacheEndpoint: "http://10.0.0.5:9000",
		SharedCacheRegion: "eu-west-1", SharedCacheProfile: "cache"}
	v := &volume{source: "s3://bkt/p", scheme: "s3", prefetch: "auto", nodeIdentity: true}
	args := v.mountArgs("/target", "", o)
	for flag, want := range map[string]string{"--shared-cache": o.SharedCache, "--shared-cache-endpoint": o.SharedCacheEndpoint,
		"--shared-cache-region": o.SharedCacheRegion, "--shared-cache-profile": o.SharedCacheProfile} {
		if i := slices.Index(args, flag); i < 0 || args[i+1] != want {
			t.Fatalf("%s not %q in %q", flag, want, args)
		}
	}
	if args[len(args)-1] != "/target" {
		t.Fatalf("target not last: %q", args)
	}
	v.nodeIdentity = false
	for _, a := range v.mountArgs("/target", "", o) {
		if strings.HasPrefix(a, "--shared-cache") {
			t.Fatalf("a volume without the node's identity got %s: %q", a, v.mountArgs("/target", "", o))
		}
	}
}

// With keys of its own, the store is every volume's: a tenant's mount
// reads it with those keys alone, never the plugin's.
func TestSharedCacheWithItsOwnKeysForEveryVolume(t *testing.T) {
	o := &Options{SharedCache: "s3://cluster-cache/blocks", SharedCacheCredentialsFile: "/etc/modelfs/shared-cache/credentials"}
	v := &volume{source: "s3://bkt/p", scheme: "s3", prefetch: "auto", nodeIdentity: false}
	args := v.mountArgs("/target", "", o)
	for flag, want := range map[string]string{"--shared-cache": o.SharedCache, "--shared-cache-credentials-file": o.SharedCacheCredentialsFile} {
		if i := slices.Index(args, flag); i < 0 || args[i+1] != want {
			t.Fatalf("a tenant's volume: %s not %q in %q", flag, want, args)
		}
	}
}

func TestSharedCacheValidated(t *testing.T) {
	for _, o := range []Options{
		{SharedCache: "gs://bucket/p"},
		{SharedCache: "not a location"},
		{SharedCacheEndpoint: "http://10.0.0.5:9000"},
		{SharedCacheProfile: "cache"},
		{SharedCacheCredentialsFile: "/dev/null"},
		{SharedCache: "s3://cluster-cache/blocks", SharedCacheCredentialsFile: "/nonexistent/credentials"},
	} {
		if validateSharedCache(o) == nil {
			t.Errorf("%+v accepted", o)
		}
	}
	if err := validateSharedCache(Options{SharedCache: "s3://cluster-cache/blocks", SharedCacheProfile: "cache"}); err != nil {
		t.Fatal(err)
	}
	if err := validateSharedCache(Options{}); err != nil {
		t.Fatal(err)
	}
}
