package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func writeSys(t *testing.T, dir, name, v string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, name), []byte(v+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestReadPageReporting(t *testing.T) {
	if p, err := readPageReporting(t.TempDir()); p != nil || err != nil {
		t.Errorf("a kernel without page reporting: %v, %v", p, err)
	}
	dir := t.TempDir()
	writeSys(t, dir, "page_reporting_order", "9")
	writeSys(t, dir, "min_free_ms", "0")
	p, err := readPageReporting(dir)
	if err != nil || p == nil || p.Order != 9 || p.Delay != 0 {
		t.Fatalf("order 9, no delay: %+v, %v", p, err)
	}
	if got := p.String(); got != "blocks of 2048 KiB, 0s after they are freed" {
		t.Errorf("String: %q", got)
	}
	writeSys(t, dir, "min_free_ms", "bogus")
	if _, err := readPageReporting(dir); err == nil || !strings.Contains(err.Error(), "min_free_ms") {
		t.Errorf("a delay that is not a number: %v", err)
	}
}

func TestHoldFreedPagesRestores(t *testing.T) {
	dir := t.TempDir()
	writeSys(t, dir, "page_reporting_order", "9")
	writeSys(t, dir, "min_free_ms", "0")
	restore, err := holdFreedPages(dir, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if p, _ := readPageReporting(dir); p == nil || p.Delay != time.Minute {
		t.Errorf("held: %+v", p)
	}
	if err := restore(); err != nil {
		t.Fatal(err)
	}
	if p, _ := readPageReporting(dir); p == nil || p.Delay != 0 {
		t.Errorf("restored: %+v", p)
	}
	// Nothing to hold where nothing is reported.
	restore, err = holdFreedPages(t.TempDir(), time.Minute)
	if err != nil || restore() != nil {
		t.Errorf("without page reporting: %v", err)
	}
}

func TestHoldFreedPagesMustNotBeNegative(t *testing.T) {
	if _, _, err := parseFlags([]string{"--hold-freed-pages", "-1s"}); err == nil {
		t.Error("a negative hold was accepted")
	}
}
