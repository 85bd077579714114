package e2e

import (
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync/atomic"
	"testing"
)

// An HTTP(S) directory with a Hugging Face index, behind a bearer token,
// and a local directory mount the same model byte for byte.
func TestHTTPAndLocalSources(t *testing.T) {
	const token = "hf_test_token_never_logged_0123456789"
	var unauthorized atomic.Int32
	files := http.FileServer(http.Dir(modelDir))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+token {
			unauthorized.Add(1)
			http.Error(w, "no", http.StatusUnauthorized)
			return
		}
		files.ServeHTTP(w, r)
	}))
	defer srv.Close()
	t.Setenv("MODELFS_HTTP_TOKEN", token)

	for _, source := range []string{srv.URL + "/", "file://" + modelDir} {
		t.Run(strings.SplitN(source, ":", 2)[0], func(t *testing.T) {
			m := startMount(t, source)
			for _, name := range model.Files {
				if got, want := sha256File(t, m.path(name)), hexSum(sourceBytes(t, name)); got != want {
					t.Errorf("%s: sha256 %s through the mount, want %s", name, got, want)
				}
			}
			entries, err := os.ReadDir(m.dir)
			if err != nil || len(entries) != len(model.Files) {
				t.Fatalf("mount lists %d entries (%v), want %d", len(entries), err, len(model.Files))
			}
			m.stop(t)
			if strings.Contains(m.Log(), token) {
				t.Fatal("the bearer token reached the logs")
			}
		})
	}
	if n := unauthorized.Load(); n != 0 {
		t.Fatalf("%d requests reached the server without the token", n)
	}
}
