package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// The bash script, sourced in a real bash, completes commands and flags
// by asking the modelfs binary.
func TestBashCompletion(t *testing.T) {
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skip("skipping: bash is not installed")
	}
	bin := filepath.Join(t.TempDir(), "modelfs")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("building: %v\n%s", err, out)
	}
	script := filepath.Join(t.TempDir(), "completion.bash")
	if err := os.WriteFile(script, []byte(bashCompletion), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ words, want string }{
		{bin + " war", "warm"},
		{bin + " mount --cache-d", "--cache-dir"},
		{bin + " cache l", "ls"},
	} {
		words := strings.Fields(tc.words)
		prog := "source " + script + "; COMP_WORDS=(" + strings.Join(words, " ") + "); COMP_CWORD=" +
			string(rune('0'+len(words)-1)) + "; _modelfs; echo \"${COMPREPLY[@]}\""
		out, err := exec.Command(bash, "-c", prog).Output()
		if err != nil {
			t.Fatalf("%q: %v", tc.words, err)
		}
		if got := strings.TrimSpace(string(out)); got != tc.want {
			t.Errorf("completing %q: %q, want %q", tc.words, got, tc.want)
		}
	}
}
