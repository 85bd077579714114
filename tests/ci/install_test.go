package ci

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// commandOf is the command each package provides, as the fake apt-get
// installs it.
var commandOf = map[string]string{
	"make": "make", "gcc": "gcc", "fuse3": "fusermount3", "git": "git", "ca-certificates": "update-ca-certificates",
}

// fakeSystem is a PATH holding only stubs: id (prints uid), apt-get
// (records its arguments and, on install, adds the packages' commands),
// and the commands named in present.
type fakeSystem struct {
	bin, log string
}

func newFakeSystem(t *testing.T, uid string, present ...string) fakeSystem {
	t.Helper()
	dir := t.TempDir()
	fs := fakeSystem{bin: filepath.Join(dir, "bin"), log: filepath.Join(dir, "apt-get.log")}
	if err := os.Mkdir(fs.bin, 0o755); err != nil {
		t.Fatal(err)
	}
	stub(t, fs.bin, "id", "echo "+uid)
	chmod, err := exec.LookPath("chmod")
	if err != nil {
		t.Skip("chmod is not installed")
	}
	var install strings.Builder
	for pkg, cmd := range commandOf {
		// libc6-dev has no command: it comes with gcc.
		install.WriteString("    " + pkg + `) printf '#!/bin/sh\n' >"$bin/` + cmd + `"; ` + chmod + ` +x "$bin/` + cmd + "\";;\n")
	}
	stub(t, fs.bin, "apt-get", `echo "$*" >>`+fs.log+`
[ -t 0 ] && { echo "apt-get: stdin is a terminal" >&2; exit 1; }
[ "$DEBIAN_FRONTEND" = noninteractive ] || { echo "apt-get: interactive" >&2; exit 1; }
bin=`+fs.bin+`
if [ "$1" = install ]; then
  for p in "$@"; do
    case "$p" in
`+install.String()+`    esac
  done
fi`)
	for _, cmd := range present {
		stub(t, fs.bin, cmd, "exit 0")
	}
	return fs
}

func stub(t *testing.T, dir, name, body string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, name), []byte("#!/bin/bash\n"+body+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
}

// run runs .ci/install-deps with only the stubs on PATH.
func (fs fakeSystem) run(t *testing.T) (calls []string, stderr string, err error) {
	t.Helper()
	script := filepath.Join(repoRoot(t), ".ci", "install-deps")
	bash, lerr := exec.LookPath("bash")
	if lerr != nil {
		t.Skip("bash is not installed")
	}
	cmd := exec.Command(bash, script)
	cmd.Env = []string{"PATH=" + fs.bin}
	out, err := cmd.CombinedOutput()
	log, rerr := os.ReadFile(fs.log)
	if rerr != nil && !os.IsNotExist(rerr) {
		t.Fatal(rerr)
	}
	if s := strings.TrimSpace(string(log)); s != "" {
		calls = strings.Split(s, "\n")
	}
	return calls, string(out), err
}

func installed(call string) []string {
	f := strings.Fields(call)
	return slices.DeleteFunc(f, func(s string) bool { return s == "install" || strings.HasPrefix(s, "-") })
}

func TestInstallDepsBareSystem(t *testing.T) {
	fs := newFakeSystem(t, "0")
	calls, out, err := fs.run(t)
	if err != nil {
		t.Fatalf("install-deps: %v\n%s", err, out)
	}
	if len(calls) != 2 || calls[0] != "update -qq" || !strings.HasPrefix(calls[1], "install -y ") {
		t.Fatalf("apt-get calls %q, want update then install -y", calls)
	}
	got := installed(calls[1])
	slices.Sort(got)
	want := []string{"ca-certificates", "fuse3", "gcc", "git", "libc6-dev", "make"}
	if !slices.Equal(got, want) {
		t.Errorf("installed %q, want %q", got, want)
	}

	// Everything is there now: a second run changes nothing.
	if err := os.Remove(fs.log); err != nil {
		t.Fatal(err)
	}
	calls, out, err = fs.run(t)
	if err != nil || len(calls) != 0 {
		t.Errorf("second run: err %v, apt-get calls %q\n%s", err, calls, out)
	}
}

func TestInstallDepsNothingMissing(t *testing.T) {
	fs := newFakeSystem(t, "0", "make", "gcc", "fusermount3", "git", "update-ca-certificates", "azurite-blob")
	calls, out, err := fs.run(t)
	if err != nil || len(calls) != 0 || out != "" {
		t.Errorf("err %v, apt-get calls %q, output %q; want no calls, no output", err, calls, out)
	}
}

func TestInstallDepsOnlyFuseMissing(t *testing.T) {
	fs := newFakeSystem(t, "0", "make", "gcc", "git", "update-ca-certificates")
	calls, out, err := fs.run(t)
	if err != nil {
		t.Fatalf("install-deps: %v\n%s", err, out)
	}
	if len(calls) != 2 || calls[0] != "update -qq" || !slices.Equal(installed(calls[1]), []string{"fuse3"}) {
		t.Errorf("apt-get calls %q, want update, then install of fuse3 alone", calls)
	}
}

func TestInstallDepsNotRoot(t *testing.T) {
	fs := newFakeSystem(t, "1000", "fusermount3", "git", "update-ca-certificates")
	calls, out, err := fs.run(t)
	if err == nil {
		t.Fatal("install-deps succeeded without root and without make or gcc")
	}
	if len(calls) != 0 {
		t.Errorf("apt-get called without root: %q", calls)
	}
	if !strings.Contains(out, "apt-get install -y make gcc libc6-dev") {
		t.Errorf("output %q does not name the command to run", out)
	}

	// A user without fusermount3 can still build and run most tests.
	fs = newFakeSystem(t, "1000", "make", "gcc", "git", "update-ca-certificates")
	calls, out, err = fs.run(t)
	if err != nil || len(calls) != 0 || !strings.Contains(out, "fuse3") {
		t.Errorf("without fusermount3, not root: err %v, calls %q, output %q; want a warning naming fuse3", err, calls, out)
	}
}

func TestInstallDepsPackageLacksCommand(t *testing.T) {
	fs := newFakeSystem(t, "0", "make", "fusermount3", "git", "update-ca-certificates")
	// An apt-get that installs nothing: the script must notice.
	stub(t, fs.bin, "apt-get", `echo "$*" >>`+fs.log)
	_, out, err := fs.run(t)
	if err == nil || !strings.Contains(out, "still missing after apt-get install: gcc") {
		t.Errorf("err %v, output %q; want a failure naming gcc", err, out)
	}
}

// npmStub is an npm that records its arguments in log and, on install,
// adds azurite-blob, unless broken.
func npmStub(t *testing.T, fs fakeSystem, log string, broken bool) {
	t.Helper()
	body := `echo "$*" >>` + log + `
[ -t 0 ] && { echo "npm: stdin is a terminal" >&2; exit 1; }
`
	if !broken {
		chmod, err := exec.LookPath("chmod")
		if err != nil {
			t.Skip("chmod is not installed")
		}
		body += `[ "$1" = install ] && { printf '#!/bin/sh\n' >"` + fs.bin + `/azurite-blob"; ` + chmod + ` +x "` + fs.bin + `/azurite-blob"; }`
	}
	stub(t, fs.bin, "npm", body+"\nexit 0")
}

func TestInstallDepsAzurite(t *testing.T) {
	tools := []string{"make", "gcc", "fusermount3", "git", "update-ca-certificates"}
	readLog := func(path string) string {
		b, err := os.ReadFile(path)
		if err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
		return strings.TrimSpace(string(b))
	}

	// Root with npm: installed, pinned, once.
	fs := newFakeSystem(t, "0", tools...)
	npmLog := filepath.Join(t.TempDir(), "npm.log")
	npmStub(t, fs, npmLog, false)
	if _, out, err := fs.run(t); err != nil {
		t.Fatalf("install-deps: %v\n%s", err, out)
	}
	if got := readLog(npmLog); !strings.HasPrefix(got, "install -g ") || !strings.HasSuffix(got, " azurite@3.37.0") || strings.Contains(got, "\n") {
		t.Fatalf("npm calls %q; want one install -g of azurite@3.37.0", got)
	}
	os.Remove(npmLog)
	if _, out, err := fs.run(t); err != nil || readLog(npmLog) != "" || out != "" {
		t.Errorf("second run: err %v, npm calls %q, output %q; want nothing done", err, readLog(npmLog), out)
	}

	// npm that installs nothing: noticed.
	fs = newFakeSystem(t, "0", tools...)
	npmStub(t, fs, filepath.Join(t.TempDir(), "npm.log"), true)
	if _, out, err := fs.run(t); err == nil || !strings.Contains(out, "still missing after npm install: azurite-blob") {
		t.Errorf("err %v, output %q; want a failure naming azurite-blob", err, out)
	}

	// Not root: the command to run, and no failure (the tests skip).
	fs = newFakeSystem(t, "1000", tools...)
	npmLog = filepath.Join(t.TempDir(), "npm.log")
	npmStub(t, fs, npmLog, false)
	if _, out, err := fs.run(t); err != nil || readLog(npmLog) != "" || !strings.Contains(out, "npm install -g azurite@3.37.0") {
		t.Errorf("not root: err %v, npm calls %q, output %q; want a warning naming the command", err, readLog(npmLog), out)
	}

	// No npm: a warning, no failure.
	fs = newFakeSystem(t, "0", tools...)
	if _, out, err := fs.run(t); err != nil || !strings.Contains(out, "azurite-blob is missing") {
		t.Errorf("without npm: err %v, output %q; want a warning", err, out)
	}
}
