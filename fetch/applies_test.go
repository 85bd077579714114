package fetch

import (
	"strings"
	"testing"
)

// A flag a source has no use for is refused, naming the flag; one that
// fits at least one of a manifest's models is not.
func TestCheckApplies(t *testing.T) {
	loc := func(raw string) Location {
		l, err := ParseLocation(raw)
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	s3, gs, az := loc("s3://models/x"), loc("gs://models/x"), loc("az://acct1/models/x")
	hf, web, local := loc("hf://org/name"), loc("https://host/x.gguf"), loc("file:///models/x")
	for _, tc := range []struct {
		name string
		locs []Location
		opts S3Options
		want []string // substrings of the error; none: no error
	}{
		{"region on s3", []Location{s3}, S3Options{Region: "eu-west-1"}, nil},
		{"region on gs", []Location{gs}, S3Options{Region: "europe-west4"},
			[]string{"--region applies to s3:// sources, not gs://: Cloud Storage's JSON API serves buckets of every location"}},
		{"region on az", []Location{az}, S3Options{Region: "westeurope"}, []string{"--region applies to s3:// sources, not az://"}},
		{"profile on gs", []Location{gs}, S3Options{Profile: "dev"}, []string{"--aws-profile applies to s3:// sources, not gs://"}},
		{"endpoint and anonymous on gs and az", []Location{gs}, S3Options{Endpoint: "http://127.0.0.1:4443", NoSignRequest: true}, nil},
		{"endpoint on az", []Location{az}, S3Options{Endpoint: "http://127.0.0.1:10000"}, nil},
		{"endpoint on https", []Location{web}, S3Options{Endpoint: "http://127.0.0.1:9000"},
			[]string{"--endpoint applies to s3://, gs:// and az:// sources, not https://"}},
		{"endpoint on hf", []Location{hf}, S3Options{Endpoint: "http://127.0.0.1:9000"},
			[]string{"not hf://", "--hf-endpoint"}},
		{"anonymous on file", []Location{local}, S3Options{NoSignRequest: true}, []string{"--no-sign-request applies to s3://, gs:// and az:// sources, not file://"}},
		{"all on file", []Location{local}, S3Options{Region: "r", Profile: "p", Endpoint: "http://e", NoSignRequest: true},
			[]string{"--region", "--aws-profile", "--endpoint", "--no-sign-request"}},
		{"manifest: region fits the s3 model", []Location{local, gs, s3}, S3Options{Region: "eu-west-1", Endpoint: "http://e"}, nil},
		{"manifest: region fits none", []Location{local, gs}, S3Options{Region: "eu-west-1"},
			[]string{"--region applies to s3:// sources, and none of the manifest's models is one"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := CheckApplies(tc.locs, tc.opts)
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("CheckApplies: %v, want none", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("CheckApplies: no error, want %q", tc.want)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("CheckApplies: %v, want %q", err, w)
				}
			}
		})
	}
}
