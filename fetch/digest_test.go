package fetch

import (
	"context"
	"crypto/md5"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"net/http"
	"testing"
)

// HEAD replies give the file's digest: Repr-Digest, else Digest, else the
// X-Linked-Etag of a redirect on the way (the Hub's LFS files); a digest of
// a content-coded reply is not the file's.
func TestHTTPDigests(t *testing.T) {
	s := newMemServer(t)
	data := testData(10_000)
	s.put("f.bin", data)
	sha := sha256.Sum256(data)
	md := md5.Sum(data)
	b64 := func(b []byte) string { return base64.StdEncoding.EncodeToString(b) }
	cases := []struct {
		name   string
		header http.Header
		want   Checksum
	}{
		{"repr-digest", http.Header{"Repr-Digest": {"sha-512=:AAAA:, sha-256=:" + b64(sha[:]) + ":"}}, Checksum{Algorithm: "SHA256", Value: b64(sha[:])}},
		{"digest", http.Header{"Digest": {"MD5=" + b64(md[:]) + ",SHA-256=" + b64(sha[:])}}, Checksum{Algorithm: "SHA256", Value: b64(sha[:])}},
		{"digest-md5", http.Header{"Digest": {"md5=" + b64(md[:])}}, Checksum{Algorithm: "MD5", Value: b64(md[:])}},
		{"malformed", http.Header{"Repr-Digest": {"sha-256=" + b64(sha[:])}, "Digest": {"sha-256=:x:"}}, Checksum{}},
		{"coded", http.Header{"Repr-Digest": {"sha-256=:" + b64(sha[:]) + ":"}, "Content-Encoding": {"gzip"}}, Checksum{}},
		{"none", nil, Checksum{}},
	}
	for _, c := range cases {
		s.setHook(func(w http.ResponseWriter, r *http.Request) bool {
			for k, v := range c.header {
				w.Header()[k] = v
			}
			return false
		})
		obj, err := newTestHTTP(t, s.URL+"/f.bin", "").Stat(context.Background(), "f.bin")
		if err != nil {
			t.Fatal(err)
		}
		if obj.Checksum != c.want {
			t.Errorf("%s: checksum %+v, want %+v", c.name, obj.Checksum, c.want)
		}
	}

	// The Hub: /resolve/ redirects to the CDN with the LFS sha256.
	s.setHook(func(w http.ResponseWriter, r *http.Request) bool {
		if r.URL.Path != "/resolve/f.bin" {
			return false
		}
		w.Header().Set("X-Linked-Etag", `"`+hex.EncodeToString(sha[:])+`"`)
		http.Redirect(w, r, "/f.bin", http.StatusFound)
		return true
	})
	obj, err := newTestHTTP(t, s.URL+"/resolve/f.bin", "").Stat(context.Background(), "f.bin")
	if err != nil {
		t.Fatal(err)
	}
	if want := (Checksum{Algorithm: "SHA256", Value: b64(sha[:])}); obj.Checksum != want {
		t.Errorf("X-Linked-Etag: checksum %+v, want %+v", obj.Checksum, want)
	}
}

// Only a single-part ETag the store did not mark opaque is an MD5.
func TestETagMD5(t *testing.T) {
	md := md5.Sum([]byte("x"))
	etag := `"` + hex.EncodeToString(md[:]) + `"`
	for _, c := range []struct {
		obj Object
		ok  bool
	}{
		{Object{ETag: etag}, true},
		{Object{ETag: etag, OpaqueETag: true}, false},
		{Object{ETag: `"` + hex.EncodeToString(md[:]) + `-3"`}, false},
		{Object{ETag: "W/" + etag}, false},
		{Object{ETag: `"` + hex.EncodeToString(md[:15]) + `zz"`}, false},
	} {
		if sum, ok := c.obj.ETagMD5(); ok != c.ok || ok && string(sum) != string(md[:]) {
			t.Errorf("ETagMD5(%s, opaque %v) = %x, %v; want %v", c.obj.ETag, c.obj.OpaqueETag, sum, ok, c.ok)
		}
	}
}

// A multipart ETag is the MD5 of the parts' MD5s and their count.
func TestMultipartETag(t *testing.T) {
	md := md5.Sum([]byte("x"))
	h := hex.EncodeToString(md[:])
	for _, c := range []struct {
		etag   string
		opaque bool
		parts  int
	}{
		{`"` + h + `-3"`, false, 3},
		{`"` + h + `-10000"`, false, 10000},
		{`"` + h + `-3"`, true, 0},
		{`"` + h + `-0"`, false, 0},
		{`"` + h + `-10001"`, false, 0},
		{`"` + h + `"`, false, 0},
		{`"` + h + `-x"`, false, 0},
	} {
		sum, n, ok := Object{ETag: c.etag, OpaqueETag: c.opaque}.MultipartETag()
		if n != c.parts || ok != (c.parts > 0) || ok && string(sum) != string(md[:]) {
			t.Errorf("MultipartETag(%s, opaque %v) = %x, %d, %v; want %d parts", c.etag, c.opaque, sum, n, ok, c.parts)
		}
	}
}
