package ci

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

func repoRoot(t *testing.T) string {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// go-nvml's cgo code calls NVML functions marked deprecated: the Makefile
// and the image build silence those warnings and keep Go's -O2 -g.
func TestBuildSilencesDeprecatedDeclarations(t *testing.T) {
	makeBin, err := exec.LookPath("make")
	if err != nil {
		t.Skip("make is not installed")
	}
	for _, env := range []struct{ value, want string }{
		{"", "-O2 -g -Wno-deprecated-declarations"}, // as on a fresh machine
		{"-O1", "-O1 -Wno-deprecated-declarations"},
	} {
		// What a recipe's commands see: the exported value.
		cmd := exec.Command(makeBin, "-s", "--no-print-directory",
			"--eval", "print-cgo-cflags: ; @printf '%s\\n' \"$$CGO_CFLAGS\"", "print-cgo-cflags")
		cmd.Dir = repoRoot(t)
		cmd.Env = append(os.Environ(), "CGO_CFLAGS="+env.value)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("make print-cgo-cflags: %v\n%s", err, out)
		}
		if got := strings.TrimSpace(string(out)); got != env.want {
			t.Errorf("with CGO_CFLAGS=%q, the build sees %q, want %q", env.value, got, env.want)
		}
	}

	docker, err := os.ReadFile(filepath.Join(repoRoot(t), "csi", "deploy", "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(docker), `ENV CGO_CFLAGS="-O2 -g -Wno-deprecated-declarations"`) {
		t.Error("the image build does not set CGO_CFLAGS to -O2 -g -Wno-deprecated-declarations")
	}
}
