package fetch

import (
	"strings"
	"testing"
)

func TestParseLocation(t *testing.T) {
	good := []struct {
		in   string
		want Location
	}{
		{"s3://my-bucket", Location{Scheme: "s3", Bucket: "my-bucket"}},
		{"s3://my-bucket/llama-3-8b", Location{Scheme: "s3", Bucket: "my-bucket", Prefix: "llama-3-8b"}},
		{"S3://models.example/org/llama/", Location{Scheme: "s3", Bucket: "models.example", Prefix: "org/llama/"}},
		{"https://host.example/m/", Location{Scheme: "https", URL: "https://host.example/m/"}},
		{"http://127.0.0.1:8080/model.gguf", Location{Scheme: "http", URL: "http://127.0.0.1:8080/model.gguf"}},
		{"file:///srv/models/llama/", Location{Scheme: "file", Path: "/srv/models/llama"}},
		{"file://localhost/srv/m", Location{Scheme: "file", Path: "/srv/m"}},
	}
	for _, tc := range good {
		got, err := ParseLocation(tc.in)
		if err != nil {
			t.Errorf("ParseLocation(%q): %v", tc.in, err)
			continue
		}
		if got != tc.want {
			t.Errorf("ParseLocation(%q) = %+v, want %+v", tc.in, got, tc.want)
		}
	}
	bad := []struct{ in, mentions string }{
		{"", "empty"},
		{"/local/path", "not a URI"},
		{"ftp://host/x", "unknown scheme"},
		{"ftp://bucket/x", "unknown scheme"},
		{"s3://", "bucket name is empty"},
		{"s3:///prefix", "bucket name is empty"},
		{"s3://ab/x", "3 to 63"},
		{"s3://bad bucket/x", "contains"},
		{"s3://bucket/a/../b", `".."`},
		{"https:///nohost", "no host"},
		{"file://remote-host/x", "local"},
		{"file://relative", "local"},
		{"file:///a\x00b", "control characters"},
		{"https://user:secret@[::1/x", "malformed"},
	}
	for _, tc := range bad {
		_, err := ParseLocation(tc.in)
		if err == nil {
			t.Errorf("ParseLocation(%q) succeeded, want an error mentioning %q", tc.in, tc.mentions)
			continue
		}
		if !strings.Contains(err.Error(), tc.mentions) {
			t.Errorf("ParseLocation(%q) = %v, want it to mention %q", tc.in, err, tc.mentions)
		}
		if strings.Contains(err.Error(), "secret") {
			t.Errorf("ParseLocation(%q) error leaks the password: %v", tc.in, err)
		}
	}
}

func FuzzParseLocation(f *testing.F) {
	for _, s := range []string{"s3://bucket/prefix", "https://h/x/", "file:///d", "s3://", "file://h/x", "http://u:p@h/?sig=1", "s3://b/../x", "az://acct1/models/x", "https://acct1.blob.core.windows.net/c0n/x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		loc, err := ParseLocation(raw)
		if err != nil {
			return
		}
		switch loc.Scheme {
		case "s3":
			if checkBucket(loc.Bucket) != nil {
				t.Fatalf("accepted bad bucket %q", loc.Bucket)
			}
			for _, seg := range strings.Split(loc.Prefix, "/") {
				if seg == ".." {
					t.Fatalf("accepted prefix %q with ..", loc.Prefix)
				}
			}
		case "az":
			if checkAzureAccount(loc.Account) != nil || checkAzureContainer(loc.Bucket) != nil || strings.ContainsAny(loc.Prefix, "?#") {
				t.Fatalf("accepted az location %+v", loc)
			}
		case "file":
			if !strings.HasPrefix(loc.Path, "/") || strings.Contains(loc.Path, "/../") {
				t.Fatalf("accepted file path %q", loc.Path)
			}
		case "http", "https":
			if loc.URL == "" {
				t.Fatal("empty URL accepted")
			}
		default:
			t.Fatalf("unknown scheme %q accepted", loc.Scheme)
		}
	})
}
