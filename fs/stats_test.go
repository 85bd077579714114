package fs

import (
	"context"
	"strings"
	"testing"
)

func TestStatsNameIsReservedAtTheRootOnly(t *testing.T) {
	files := []File{{Path: StatsName}, {Path: "sub/" + StatsName}, {Path: "config.json"}}
	kept, skipped := withoutReserved(files)
	if len(kept) != 2 || kept[0].Path != "sub/"+StatsName || kept[1].Path != "config.json" {
		t.Fatalf("kept %+v", kept)
	}
	if len(skipped) != 1 || skipped[0].Path != StatsName || !strings.Contains(skipped[0].Reason, "reserved") {
		t.Fatalf("skipped %+v", skipped)
	}
	if len(files) != 3 || files[0].Path != StatsName {
		t.Fatal("withoutReserved changed its input")
	}
}

func TestCheckName(t *testing.T) {
	for _, ok := range []string{"llama-13b", "a.b", ".hidden", strings.Repeat("x", 255)} {
		if err := CheckName(ok); err != nil {
			t.Errorf("CheckName(%q) = %v", ok, err)
		}
	}
	for _, bad := range []string{"", ".", "..", "a/b", "/a", "a/", "x\x00", "x\n", strings.Repeat("x", 256)} {
		if CheckName(bad) == nil {
			t.Errorf("CheckName(%q) accepted", bad)
		}
	}
}

func TestStatsHandleServesItsSnapshot(t *testing.T) {
	h := &statsHandle{data: []byte("0123456789")}
	for _, tc := range []struct {
		off  int64
		size int
		want string
	}{{0, 4, "0123"}, {8, 4, "89"}, {10, 4, ""}, {20, 4, ""}, {0, 100, "0123456789"}} {
		r, errno := h.Read(context.Background(), make([]byte, tc.size), tc.off)
		if errno != 0 {
			t.Fatalf("read %d at %d: %v", tc.size, tc.off, errno)
		}
		got, _ := r.Bytes(nil)
		if string(got) != tc.want {
			t.Errorf("read %d at %d: %q, want %q", tc.size, tc.off, got, tc.want)
		}
	}
}
