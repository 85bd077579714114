package gpuwarm

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
)

// The command, end to end: `modelfs gpuwarm` as built from cmd/modelfs.
// Without an NVIDIA driver (as in CI) the GPU checks are skipped; with one,
// the tiny test model fits any GPU, so each test holds either way.

var (
	buildOnce sync.Once
	buildDir  string // holds the built binary; TestMain removes it
	modelfs   string // the binary, or "" when it has no gpuwarm command
	buildErr  error
)

// TestMain removes the built binary (~40 MB) once every test has used it:
// t.TempDir would remove it after the first test that built it.
func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

func modelfsBin(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds the modelfs binary")
	}
	buildOnce.Do(func() {
		var err error
		if buildDir, err = os.MkdirTemp("", "gpuwarm-cmd-test-"); err != nil {
			buildErr = err
			return
		}
		bin := filepath.Join(buildDir, "modelfs")
		out, err := exec.Command("go", "build", "-o", bin, "github.com/modelfs/modelfs/cmd/modelfs").CombinedOutput()
		if err != nil {
			buildErr = errors.New("go build: " + err.Error() + "\n" + string(out))
			return
		}
		if out, err := exec.Command(bin, "gpuwarm", "--help").CombinedOutput(); err == nil && bytes.Contains(out, []byte("--pin-bytes")) {
			modelfs = bin
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	if modelfs == "" {
		t.Skip("cmd/modelfs does not register the gpuwarm command (main.go: gpuwarmCommand())")
	}
	return modelfs
}

// cmdReport is the command's JSON: the Report and where it listened.
type cmdReport struct {
	Report
	Listen string `json:"listen"`
}

func runCmd(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(modelfsBin(t), append([]string{"--log-level", "debug", "gpuwarm"}, args...)...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exit):
		code = exit.ExitCode()
	default:
		t.Fatal(err)
	}
	return o.String(), e.String(), code
}

func TestCmdOnce(t *testing.T) {
	dir := t.TempDir()
	_, size := testModel(t, dir, layeredModel)
	ready := filepath.Join(t.TempDir(), "ready.json")
	out, errOut, code := runCmd(t, "--once", "--model", dir, "--pin-bytes", "all", "--ready-file", ready, "--listen", "127.0.0.1:0")
	if code != 0 {
		t.Fatalf("exit %d\n%s", code, errOut)
	}
	if strings.Count(out, "\n") != 1 {
		t.Errorf("stdout is not one JSON line: %q", out)
	}
	var rep cmdReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("stdout %q: %v", out, err)
	}
	ps := int64(os.Getpagesize())
	if !rep.Ready || rep.Pin == nil || rep.Pin.Bytes != size+ps || rep.TensorBytes != 5*tensorPages*ps || rep.Listen == "" {
		t.Errorf("report %s", out)
	}
	for _, phase := range []string{"nvml_init", "plan", "pin"} {
		if _, ok := rep.PhasesMS[phase]; !ok {
			t.Errorf("no %s phase in %s", phase, out)
		}
	}
	if rep.NoGPU != "" && !strings.Contains(errOut, rep.NoGPU+": skipping the GPU checks") {
		t.Errorf("no one-line notice of %q on stderr:\n%s", rep.NoGPU, errOut)
	}
	if rep.NoGPU == "" && (rep.GPU == nil || rep.Fit == nil || !rep.Fit.Fits) {
		t.Errorf("GPU checks missing: %s", out)
	}
	if _, err := os.Stat(ready); err != nil {
		t.Errorf("ready file: %v", err)
	}

	// --require-gpu: fatal exactly when there is no driver.
	ready2 := filepath.Join(t.TempDir(), "ready.json")
	_, errOut, code = runCmd(t, "--once", "--require-gpu", "--model", dir, "--ready-file", ready2)
	if rep.NoGPU != "" {
		if code != 1 || !strings.Contains(errOut, "a GPU is required") {
			t.Errorf("--require-gpu without a driver: exit %d\n%s", code, errOut)
		}
		if _, err := os.Stat(ready2); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("ready file after a failure: %v", err)
		}
	} else if code != 0 {
		t.Errorf("--require-gpu with a driver: exit %d\n%s", code, errOut)
	}
}

// Mistakes on the command line exit 2, failures at run time 1.
func TestCmdErrors(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"--once"}, 2, "--model DIR is required"},
		{[]string{"--once", "--model", filepath.Join(dir, "nope")}, 1, "model directory"},
		{[]string{"--once", "--model", dir, "--pin-bytes", "lots"}, 2, `--pin-bytes "lots"`},
		{[]string{"--once", "--model", dir, "--tensor-parallel", "0"}, 2, "--tensor-parallel 0"},
		{[]string{"--once", "--model", dir, "--gpu-mem-fraction", "1.5"}, 2, "--gpu-mem-fraction 1.5"},
		{[]string{"--once", "--model", dir, "--keep-warm", "1m"}, 2, "--keep-warm needs --warmup-url"},
		{[]string{"--once", "--model", dir, "--warmup-url", "http://127.0.0.1:1/v1/completions", "--keep-warm", "1m"}, 2, "drop --once"},
		{[]string{"--once", "--model", dir, "--warmup-url", "http://127.0.0.1:1/v1/completions", "--warmup-shapes", "4"}, 2, "want BATCHxTOKENS"},
		{[]string{"--print-env", "json"}, 2, "--print-env=json"},
		{[]string{"--print-env=yaml"}, 2, "want shell or json"},
	} {
		_, errOut, code := runCmd(t, c.args...)
		if code != c.code || !strings.Contains(errOut, c.want) {
			t.Errorf("%v: exit %d, stderr %q; want %d and %q", c.args, code, errOut, c.code, c.want)
		}
	}
}

func TestCmdPrintEnv(t *testing.T) {
	out, errOut, code := runCmd(t, "--print-env")
	if code != 0 || !strings.Contains(out, "\nexport CUDA_MODULE_LOADING=LAZY\n") || !strings.HasPrefix(out, "# ") {
		t.Errorf("--print-env: exit %d, %q %q", code, out, errOut)
	}
	out, _, code = runCmd(t, "--print-env=json")
	var vars []EnvVar
	if err := json.Unmarshal([]byte(out), &vars); code != 0 || err != nil || vars[0].Name != "CUDA_MODULE_LOADING" || vars[0].Value != "LAZY" {
		t.Errorf("--print-env=json: exit %d, %q: %v", code, out, err)
	}
}

// TestCmdHold: without --once it holds the pins, ready, until SIGTERM;
// then it says not ready, removes the ready file and exits 0.
func TestCmdHold(t *testing.T) {
	dir := t.TempDir()
	testModel(t, dir, layeredModel)
	ready := filepath.Join(t.TempDir(), "ready.json")
	cmd := exec.Command(modelfsBin(t), "gpuwarm", "--model", dir, "--pin-bytes", "all", "--ready-file", ready, "--listen", "127.0.0.1:0")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	// The report is printed once ready.
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		t.Fatalf("no report: %v\n%s", err, stderr.String())
	}
	var rep cmdReport
	if err := json.Unmarshal([]byte(line), &rep); err != nil || !rep.Ready || rep.Listen == "" {
		t.Fatalf("report %q: %v", line, err)
	}
	if _, err := os.Stat(ready); err != nil {
		t.Errorf("ready file while holding: %v", err)
	}
	for path, want := range map[string]int{"/readyz": 200, "/livez": 200, "/metrics": 200} {
		resp, err := http.Get("http://" + rep.Listen + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("%s: %d, want %d", path, resp.StatusCode, want)
		}
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("exit after SIGTERM: %v\n%s", err, stderr.String())
	}
	if _, err := os.Stat(ready); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("ready file after shutdown: %v", err)
	}
	if !strings.Contains(stderr.String(), "pins released") {
		t.Errorf("stderr:\n%s", stderr.String())
	}
}
