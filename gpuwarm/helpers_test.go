package gpuwarm

import (
	"encoding/binary"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/modelfs/modelfs/tests/mountproc"
)

// tensor is one tensor of a generated safetensors file.
type tensor struct {
	name  string
	pages int
}

// testModel writes dir/config.json and dir/model.safetensors holding
// tensors, in the given file order, each a whole number of pages, with the
// header padded to a page so that every tensor starts on a page. It
// returns each tensor's offset and the file's size.
func testModel(t *testing.T, dir string, tensors []tensor) (offsets map[string]int64, size int64) {
	t.Helper()
	ps := int64(os.Getpagesize())
	if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte(`{"architectures":["LlamaForCausalLM"]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	hdr := map[string]any{}
	var off int64
	for _, tn := range tensors {
		n := int64(tn.pages) * ps
		hdr[tn.name] = map[string]any{"dtype": "U8", "shape": []int64{n}, "data_offsets": []int64{off, off + n}}
		off += n
	}
	js, err := json.Marshal(hdr)
	if err != nil {
		t.Fatal(err)
	}
	hlen := alignUp(int64(8+len(js)), ps) - 8
	js = append(js, strings.Repeat(" ", int(hlen)-len(js))...)
	data := binary.LittleEndian.AppendUint64(nil, uint64(hlen))
	data = append(data, js...)
	offsets = map[string]int64{}
	for _, tn := range tensors {
		offsets[tn.name] = int64(len(data))
		for range int64(tn.pages) * ps {
			data = append(data, byte(len(data)))
		}
	}
	p := filepath.Join(dir, "model.safetensors")
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	mountproc.DropCache(t, p)
	return offsets, int64(len(data))
}

// evictable reports whether dropCache really evicts pages in dir (not on
// tmpfs, whose pages are the file).
func evictable(t *testing.T, dir string) bool {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	return st.Type != unix.TMPFS_MAGIC
}

var discard = slog.New(slog.DiscardHandler)

func scrape(t *testing.T, w *Warmer) string {
	t.Helper()
	rec := httptest.NewRecorder()
	w.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("/metrics: %d", rec.Code)
	}
	return rec.Body.String()
}
