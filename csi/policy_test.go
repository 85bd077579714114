package csi

import (
	"net/netip"
	"strings"
	"testing"
)

func TestInlineSources(t *testing.T) {
	p, err := ParseInlineSources(" s3://models, https://huggingface.co ,https://*.hf.co,http://minio.internal:9000")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		attrs map[string]string
		ok    bool
	}{
		{map[string]string{"source": "s3://models/llama"}, true},
		{map[string]string{"source": "s3://other/llama"}, false},
		{map[string]string{"source": "s3://models/llama", "endpoint": "http://minio.internal:9000"}, true},
		{map[string]string{"source": "s3://models/llama", "endpoint": "http://minio.internal:9001"}, false},
		{map[string]string{"source": "s3://models/llama", "endpoint": "https://minio.internal:9000"}, false},
		{map[string]string{"source": "https://huggingface.co/org/m/resolve/main/"}, true},
		{map[string]string{"source": "https://HuggingFace.co:443/org/m/resolve/main/"}, true},
		{map[string]string{"source": "http://huggingface.co/org/m/resolve/main/"}, false},
		{map[string]string{"source": "https://huggingface.co:8443/m/"}, false},
		{map[string]string{"source": "https://huggingface.co.evil.example/m/"}, false},
		{map[string]string{"source": "https://cdn.hf.co/m/"}, true},
		{map[string]string{"source": "https://hf.co/m/"}, false},
		{map[string]string{"source": "https://evilhf.co/m/"}, false},
	} {
		v, err := parseVolume(c.attrs)
		if err != nil {
			t.Fatal(err)
		}
		if got := p.allows(v); got != c.ok {
			t.Errorf("%v: allowed %v, want %v", c.attrs, got, c.ok)
		}
	}
	v, _ := parseVolume(map[string]string{"source": "s3://models/x"})
	if (InlineSources{}).allows(v) || !AnyInlineSource().allows(v) {
		t.Error("the zero value must allow nothing, AnyInlineSource everything")
	}
	if none, err := ParseInlineSources("none"); err != nil || none.allows(v) || none.String() != "none" {
		t.Errorf("none: %v %v", none, err)
	}
	for _, bad := range []string{"ftp://x", "s3://b/prefix", "https://h/path", "https://u:p@h", "https://a*.h", "s3://"} {
		if _, err := ParseInlineSources(bad); err == nil {
			t.Errorf("ParseInlineSources(%q) accepted", bad)
		}
	}
}

func TestCheckAddresses(t *testing.T) {
	o := &Options{AllowedNetworks: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}}
	for src, denied := range map[string]bool{
		"http://169.254.169.254/latest/meta-data": true, "http://[fe80::1]/x": true, "http://[::ffff:127.0.0.2]/x": true,
		"http://127.0.0.1:9000/x": false, "https://huggingface.co/x": false,
	} {
		v, err := parseVolume(map[string]string{"source": src})
		if err != nil {
			t.Fatal(err)
		}
		if err := checkAddresses(o.netPolicy(), v); (err != nil) != denied || (err != nil && !strings.Contains(err.Error(), "network policy")) {
			t.Errorf("%s: %v, want denied %v", src, err, denied)
		}
	}
	v, _ := parseVolume(map[string]string{"source": "s3://models/x", "endpoint": "http://169.254.169.254"})
	if checkAddresses(o.netPolicy(), v) == nil {
		t.Error("an S3 endpoint at instance metadata was not refused")
	}
}
