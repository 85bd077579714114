package main

import "testing"

func TestParseSize(t *testing.T) {
	good := map[string]int64{"8MiB": 8 << 20, "1GiB": 1 << 30, "4096": 4096, "64k": 64 << 10, "1.5GB": 1.5e9, " 2 mib ": 2 << 20, "0": 0}
	for in, want := range good {
		got, err := parseSize(in, "--x")
		if err != nil || got != want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "lots", "-1MiB", "1e30", "MiB", "1.2.3G"} {
		if _, err := parseSize(in, "--x"); err == nil {
			t.Errorf("parseSize(%q) succeeded", in)
		}
	}
}

func TestFormatSize(t *testing.T) {
	for n, want := range map[int64]string{0: "0 B", 1023: "1023 B", 1024: "1.0 KiB", 3 << 29: "1.5 GiB"} {
		if got := formatSize(n); got != want {
			t.Errorf("formatSize(%d) = %q, want %q", n, got, want)
		}
	}
}
