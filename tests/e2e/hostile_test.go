package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/modelfs/modelfs/fetch"
)

// What a broken or hostile remote sends must not reach a mount: sizes out
// of range are refused object by object, replies that disagree with the
// range asked for are errors.

// An S3 listing can claim any <Size>: the objects out of range are
// listed as the store said, and Usable refuses them alone.
func TestS3ListingSizesOutOfRange(t *testing.T) {
	r := newRemote(t)
	r.uploadModel(t, "")
	src := newS3Source(t, r, "", nil)
	r.srv.SetHook(func(w http.ResponseWriter, req *http.Request) bool {
		if req.Method != http.MethodGet || req.URL.Query().Get("list-type") != "2" {
			return false
		}
		w.Header().Set("Content-Type", "application/xml")
		fmt.Fprintf(w, `<?xml version="1.0" encoding="UTF-8"?>
<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>%s</Name><Prefix></Prefix><KeyCount>4</KeyCount><MaxKeys>1000</MaxKeys><IsTruncated>false</IsTruncated>
<Contents><Key>ok.bin</Key><LastModified>2024-05-01T12:00:00.000Z</LastModified><ETag>"a"</ETag><Size>4</Size></Contents>
<Contents><Key>huge.bin</Key><LastModified>2024-05-01T12:00:00.000Z</LastModified><ETag>"b"</ETag><Size>%d</Size></Contents>
<Contents><Key>neg.bin</Key><LastModified>2024-05-01T12:00:00.000Z</LastModified><ETag>"c"</ETag><Size>-5</Size></Contents>
<Contents><Key>nosize.bin</Key><LastModified>2024-05-01T12:00:00.000Z</LastModified><ETag>"e"</ETag></Contents>
<Contents><Key>over.bin</Key><LastModified>2024-05-01T12:00:00.000Z</LastModified><ETag>"d"</ETag><Size>%d</Size></Contents>
</ListBucketResult>`, bucket, int64(1)<<62, fetch.MaxObjectSize+1)
		return true
	})
	defer r.srv.SetHook(nil)
	objs, err := src.List(context.Background())
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	kept, rejected := fetch.Usable(objs)
	if len(kept) != 1 || kept[0].Key != "ok.bin" {
		t.Errorf("usable %+v, want ok.bin alone", kept)
	}
	var keys []string
	for _, rj := range rejected {
		keys = append(keys, rj.Key)
		if !errors.Is(rj.Err, fetch.ErrBadSize) {
			t.Errorf("%s: %v, want ErrBadSize", rj.Key, rj.Err)
		}
	}
	if !slices.Equal(keys, []string{"huge.bin", "neg.bin", "nosize.bin", "over.bin"}) {
		t.Errorf("rejected %q", keys)
	}
}

// A ranged GET whose Content-Length is not the range's length is retried,
// then an error: never bytes.
func TestS3RangeReplyLengthChecked(t *testing.T) {
	r := newRemote(t)
	r.uploadModel(t, "")
	src := newS3Source(t, r, "", nil)
	objs, err := src.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	obj := objs[0]
	data := sourceBytes(t, obj.Key)
	var gets atomic.Int32
	r.srv.SetHook(func(w http.ResponseWriter, req *http.Request) bool {
		if req.Method != http.MethodGet {
			return false
		}
		gets.Add(1)
		w.Header().Set("ETag", obj.ETag)
		w.Header().Set("Content-Range", fmt.Sprintf("bytes 0-9/%d", obj.Size))
		w.Header().Set("Content-Length", "20")
		w.WriteHeader(http.StatusPartialContent)
		w.Write(data[:20])
		return true
	})
	defer r.srv.SetHook(nil)
	n, err := src.ReadAt(context.Background(), obj, make([]byte, 10), 0)
	if err == nil || n != 0 || !strings.Contains(err.Error(), "Content-Length") {
		t.Fatalf("ReadAt = %d, %v; want an error naming Content-Length", n, err)
	}
	if gets.Load() != 4 {
		t.Errorf("%d GETs, want the retry budget (4)", gets.Load())
	}
}

// A listing with sizes out of range and misleading names mounts the rest:
// each bad object is left out with a warning naming it, escaped.
func TestHostileListingShowsTheRest(t *testing.T) {
	const rtl = "rtl\u202egnp.bin"
	good := map[string][]byte{"config.json": []byte(`{"a":1}`), "ok.bin": []byte("fine bytes")}

	t.Run("http", func(t *testing.T) {
		dir := t.TempDir()
		for name, b := range good {
			writeFile(t, filepath.Join(dir, name), b)
		}
		writeFile(t, filepath.Join(dir, rtl), []byte("misleading"))
		writeFile(t, filepath.Join(dir, "huge.bin"), []byte("tiny"))
		writeFile(t, filepath.Join(dir, "modelfs.json"), fmt.Appendf(nil, `{"files": [
			{"path": "config.json"}, {"path": "ok.bin"}, {"path": %q},
			{"path": "huge.bin", "size": %d}, {"path": "neg.bin", "size": -5}
		]}`, rtl, int64(1)<<62))
		srv := httptest.NewServer(http.FileServer(http.Dir(dir)))
		defer srv.Close()
		m := startMount(t, srv.URL+"/")
		checkShown(t, m, good, "huge.bin", "neg.bin", rtl)
	})

	t.Run("local", func(t *testing.T) {
		dir := t.TempDir()
		for name, b := range good {
			writeFile(t, filepath.Join(dir, name), b)
		}
		for _, name := range []string{rtl, "bad\xffutf8.bin", "c1\u009b31m.bin"} {
			writeFile(t, filepath.Join(dir, name), []byte("misleading"))
		}
		// Sparse: 6 TiB of size, no blocks.
		huge := filepath.Join(dir, "huge.bin")
		writeFile(t, huge, nil)
		if err := os.Truncate(huge, 6<<40); err != nil {
			t.Skipf("no sparse 6 TiB file here: %v", err)
		}
		m := startMount(t, "file://"+dir)
		checkShown(t, m, good, "huge.bin", rtl, "bad\xffutf8.bin", "c1\u009b31m.bin")
	})
}

// checkShown checks that the mount shows exactly good, byte for byte, and
// that a warning names each of hidden, %q-escaped, on a line of its own.
func checkShown(t *testing.T, m *mount, good map[string][]byte, hidden ...string) {
	t.Helper()
	var want []string
	for name, b := range good {
		want = append(want, name)
		if got, err := os.ReadFile(m.path(name)); err != nil || !bytes.Equal(got, b) {
			t.Errorf("%s: %q, %v; want %q", name, got, err, b)
		}
	}
	slices.Sort(want)
	if got := dirNames(t, m.dir); !slices.Equal(got, want) {
		t.Errorf("mount shows %q, want %q", got, want)
	}
	m.stop(t)
	logs := m.Log()
	for _, name := range hidden {
		// The key is %q-quoted, then quoted again by the log's text format.
		key := "key=" + strconv.Quote(strconv.Quote(name))
		found := false
		for line := range strings.Lines(logs) {
			found = found || strings.Contains(line, "object not shown") && strings.Contains(line, key)
		}
		if !found {
			t.Errorf("no warning with %s:\n%s", key, logs)
		}
	}
	if strings.ContainsAny(logs, "\u202e\u009b\xff") {
		t.Errorf("a raw misleading character reached the logs:\n%q", logs)
	}
}

func writeFile(t *testing.T, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// A HEAD reply without Content-Length is an unknown size, refused, not an
// empty file.
func TestS3HeadWithoutContentLength(t *testing.T) {
	r := newRemote(t)
	r.uploadModel(t, "")
	name := model.Files[0]
	src := newS3Source(t, r, name, nil)
	r.srv.SetHook(func(w http.ResponseWriter, req *http.Request) bool {
		if req.Method != http.MethodHead {
			return false
		}
		w.Header().Set("ETag", `"e"`)
		w.Header().Set("Last-Modified", "Wed, 01 May 2024 12:00:00 GMT")
		w.WriteHeader(http.StatusOK)
		return true
	})
	defer r.srv.SetHook(nil)
	objs, err := src.List(context.Background())
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	if len(objs) != 1 {
		t.Fatalf("List = %+v, want the one object", objs)
	}
	if err := fetch.CheckObject(objs[0]); !errors.Is(err, fetch.ErrBadSize) {
		t.Fatalf("object %+v: CheckObject = %v, want ErrBadSize", objs[0], err)
	}
}

// The SDK copies an error reply's whole body into memory to find the
// error code; an endpoint sending an endless one must not fill memory.
func TestS3ErrorBodyBounded(t *testing.T) {
	r := newRemote(t)
	r.uploadModel(t, "")
	src := newS3Source(t, r, "", nil)
	objs, err := src.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	const perReply = 128 << 20 // the most one reply writes
	var written atomic.Int64
	r.srv.SetHook(func(w http.ResponseWriter, req *http.Request) bool {
		if req.Method != http.MethodGet {
			return false
		}
		w.Header().Set("Content-Type", "application/xml")
		w.WriteHeader(http.StatusInternalServerError)
		chunk := []byte("<Error><Code>InternalError</Code><Message>" + strings.Repeat("x", 64<<10) + "</Message></Error>")
		for n := 0; n < perReply; n += len(chunk) {
			if _, err := w.Write(chunk); err != nil {
				return true // the client hung up
			}
			written.Add(int64(len(chunk)))
		}
		return true
	})
	defer r.srv.SetHook(nil)
	_, err = src.ReadAt(context.Background(), objs[0], make([]byte, 10), 0)
	if err == nil || !strings.Contains(err.Error(), "longer than") {
		t.Fatalf("ReadAt err = %v, want one saying the error reply is too long", err)
	}
	// Four tries; each may fill socket buffers past what the client read.
	if got := written.Load(); got > 4*16<<20 {
		t.Fatalf("the store wrote %d MiB of error bodies before the client gave up, want under 64 MiB", got>>20)
	}
}

// An endpoint can send listing pages without end, or one page without
// end: the listing stops at fetch.MaxListedObjects objects, or at the
// page-size cap, with an error saying which.
func TestS3ListingBounded(t *testing.T) {
	page := func(w io.Writer, from, n int, truncated bool, pad string) {
		fmt.Fprintf(w, `<?xml version="1.0" encoding="UTF-8"?><ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>%s</Name><Prefix></Prefix><MaxKeys>1000</MaxKeys><IsTruncated>%v</IsTruncated>`, bucket, truncated)
		if truncated {
			fmt.Fprintf(w, "<NextContinuationToken>t%d</NextContinuationToken>", from+n)
		}
		for i := from; i < from+n; i++ {
			fmt.Fprintf(w, `<Contents><Key>k/%07d%s</Key><ETag>"e"</ETag><Size>1</Size></Contents>`, i, pad)
		}
		io.WriteString(w, "</ListBucketResult>")
	}
	for _, c := range []struct {
		name, want string
		serve      func(w http.ResponseWriter, from int)
	}{
		{"endless pages", "more than", func(w http.ResponseWriter, from int) {
			page(w, from, 10_000, true, "")
		}},
		{"endless page", "longer than", func(w http.ResponseWriter, from int) {
			// 13 MiB in one page, in long keys: few entries to decode
			// before the cap; the client may stop reading early.
			page(w, from, 12_000, false, "-"+strings.Repeat("x", 1000))
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := newRemote(t)
			r.uploadModel(t, "")
			// Decoding megabytes of XML under -race on a busy machine is slow;
			// only the caps should end these listings.
			src := newS3Source(t, r, "", func(o *fetch.S3Options) { o.Retry.AttemptTimeout = time.Minute })
			var pages atomic.Int32
			r.srv.SetHook(func(w http.ResponseWriter, req *http.Request) bool {
				if req.Method != http.MethodGet || req.URL.Query().Get("list-type") != "2" {
					return false
				}
				pages.Add(1)
				from := 0
				fmt.Sscanf(req.URL.Query().Get("continuation-token"), "t%d", &from)
				w.Header().Set("Content-Type", "application/xml")
				c.serve(w, from)
				return true
			})
			defer r.srv.SetHook(nil)
			objs, err := src.List(context.Background())
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("List = %d objects, %v; want an error saying %q", len(objs), err, c.want)
			}
			if n := pages.Load(); n > int32(fetch.MaxListedObjects/10_000+2)*4 {
				t.Errorf("%d listing requests", n)
			}
		})
	}
}

// A store whose listing gives no ETag pins objects by date: every GET
// carries If-Unmodified-Since, so an object modified after the listed
// date is refused, never read.
func TestS3ObjectWithoutETagPinnedByDate(t *testing.T) {
	r := newRemote(t)
	r.uploadModel(t, "")
	name := model.Files[0]
	src := newS3Source(t, r, "", nil)
	r.srv.SetHook(func(w http.ResponseWriter, req *http.Request) bool {
		if req.Method != http.MethodGet || req.URL.Query().Get("list-type") != "2" {
			return false
		}
		w.Header().Set("Content-Type", "application/xml")
		fmt.Fprintf(w, `<?xml version="1.0" encoding="UTF-8"?>
<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>%s</Name><Prefix></Prefix><MaxKeys>1000</MaxKeys><IsTruncated>false</IsTruncated>
<Contents><Key>%s</Key><LastModified>2020-01-01T00:00:00.000Z</LastModified><Size>%d</Size></Contents>
</ListBucketResult>`, bucket, name, len(sourceBytes(t, name)))
		return true
	})
	objs, err := src.List(context.Background())
	r.srv.SetHook(nil)
	if err != nil || len(objs) != 1 || objs[0].ETag != "" {
		t.Fatalf("List = %+v, %v", objs, err)
	}
	if err := fetch.CheckObject(objs[0]); err != nil {
		t.Fatalf("CheckObject = %v; a date is enough to pin by", err)
	}
	// The stored object was written after 2020: it is not the listed one.
	n, err := src.ReadAt(context.Background(), objs[0], make([]byte, 10), 0)
	if !errors.Is(err, fetch.ErrChanged) || n != 0 {
		t.Fatalf("ReadAt = %d, %v; want ErrChanged", n, err)
	}
	// Nothing at all to pin by: refused without a request.
	bare := objs[0]
	bare.ModTime = time.Time{}
	if _, err := src.ReadAt(context.Background(), bare, make([]byte, 10), 0); !errors.Is(err, fetch.ErrUnpinned) {
		t.Fatalf("ReadAt of an object with no ETag or date: %v, want ErrUnpinned", err)
	}
}
