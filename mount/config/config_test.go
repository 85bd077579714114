package config

import (
	"errors"
	"testing"
)

// Validate reports every bad setting, each a SettingError naming its
// flag, in the order the settings are checked.
func TestValidateNamesEachFlag(t *testing.T) {
	c := Default()
	c.Source, c.Mountpoint = "s3://b/p", "/m"
	if err := c.Validate(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	c.BlockSize, c.Concurrency, c.Prefetch, c.Retries = 1<<10, 0, "eager", -1
	err := c.Validate()
	var flags []string
	for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
		var se *SettingError
		if !errors.As(e, &se) {
			t.Fatalf("%v is not a SettingError", e)
		}
		flags = append(flags, se.Flag)
	}
	want := []string{"--block-size", "--concurrency", "--retries", "--prefetch"}
	if len(flags) != len(want) {
		t.Fatalf("flags %q, want %q (%v)", flags, want, err)
	}
	for i := range want {
		if flags[i] != want[i] {
			t.Errorf("flags %q, want %q", flags, want)
		}
	}
	var first *SettingError
	if !errors.As(err, &first) || first.Flag != "--block-size" {
		t.Errorf("errors.As finds %+v, want the first", first)
	}
}

// MemCacheBytes is the one auto rule: a set budget as it is, else an
// eighth of memory within [256 MiB, 1 GiB].
func TestMemCacheBytes(t *testing.T) {
	c := Default()
	if got := c.MemCacheBytes(); got < 256<<20 || got > 1<<30 || got != DefaultMemCache() {
		t.Errorf("auto = %d", got)
	}
	c.MemCache = 64 << 20
	if got := c.MemCacheBytes(); got != 64<<20 {
		t.Errorf("set = %d", got)
	}
}

// TestValidateRefusesFlagsTheSourceIgnores: an S3 flag on a gs:// source
// would be dropped in silence; Validate names it before anything starts.
func TestValidateRefusesFlagsTheSourceIgnores(t *testing.T) {
	c := Default()
	c.Source, c.Mountpoint, c.Region = "gs://models/llama", "/m", "us-east-1"
	var se *SettingError
	if err := c.Validate(); !errors.As(err, &se) || se.Flag != "--region" {
		t.Fatalf("gs:// with --region: %v, want a SettingError naming --region", err)
	}
	c.Source = "s3://models/llama"
	if err := c.Validate(); err != nil {
		t.Fatalf("s3:// with --region: %v", err)
	}
}
