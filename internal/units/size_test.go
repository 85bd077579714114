package units

import "testing"

func TestParseSize(t *testing.T) {
	good := map[string]int64{
		"4096": 4096, "64k": 64 << 10, "8MiB": 8 << 20, "1.5GB": 1500000000,
		" 2 gib ": 2 << 30, "0": 0, "1b": 1,
	}
	for in, want := range good {
		got, err := ParseSize(in, "--x")
		if err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "-1", "1x", "NaN", "MiB", "1e30", "inf"} {
		if _, err := ParseSize(in, "--x"); err == nil {
			t.Errorf("ParseSize(%q): want an error", in)
		}
	}
}

func TestFormatSize(t *testing.T) {
	for n, want := range map[int64]string{0: "0 B", 1023: "1023 B", 1024: "1.0 KiB", 3 << 29: "1.5 GiB", 8 << 20: "8.0 MiB"} {
		if got := FormatSize(n); got != want {
			t.Errorf("FormatSize(%d) = %q, want %q", n, got, want)
		}
	}
}
