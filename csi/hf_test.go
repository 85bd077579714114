package csi

import (
	"slices"
	"strings"
	"testing"
)

// hf:// volumes: allowed inline like their Hub's origin, the endpoint
// attribute names a mirror, and the hfToken secret becomes HF_TOKEN.
func TestHFVolumes(t *testing.T) {
	p, err := ParseInlineSources("s3,https://huggingface.co,https://hub.mirror.example")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		attrs map[string]string
		ok    bool
	}{
		{map[string]string{"source": "hf://meta-llama/Llama-3.1-8B@main"}, true},
		{map[string]string{"source": "hf://gpt2@refs/pr/1"}, true},
		{map[string]string{"source": "hf://datasets/org/corpus"}, true},
		{map[string]string{"source": "hf://org/m", "endpoint": "https://hub.mirror.example"}, true},
		{map[string]string{"source": "hf://org/m", "endpoint": "https://other.example"}, false},
	} {
		v, err := parseVolume(c.attrs)
		if err != nil {
			t.Fatalf("%v: %v", c.attrs, err)
		}
		if got := p.allows(v); got != c.ok {
			t.Errorf("%v: allowed %v, want %v", c.attrs, got, c.ok)
		}
		if v.shownSource() != c.attrs["source"] {
			t.Errorf("shown as %q", v.shownSource())
		}
	}
	if none, _ := ParseInlineSources("s3"); none.allows(&volume{source: "hf://org/m", scheme: "hf"}) {
		t.Error("hf:// allowed without its Hub in the list")
	}
	v, err := parseVolume(map[string]string{"source": "hf://org/m@v1", "endpoint": "https://hub.mirror.example"})
	if err != nil {
		t.Fatal(err)
	}
	args := v.mountArgs("/t", "", &Options{ProfileDir: t.TempDir()})
	if i := slices.Index(args, "--hf-endpoint"); i < 0 || args[i+1] != "https://hub.mirror.example" || slices.Contains(args, "--endpoint") {
		t.Fatalf("mount args %q", args)
	}
	v, _ = parseVolume(map[string]string{"source": "hf://org/m"})
	if args := v.mountArgs("/t", "", &Options{ProfileDir: t.TempDir()}); !slices.Contains(args, "https://huggingface.co") {
		t.Fatalf("mount args %q do not name the Hub", args)
	}
	for _, bad := range []string{"hf://a/b/c", "hf://org/m@", "hf://../x"} {
		if _, err := parseVolume(map[string]string{"source": bad}); err == nil {
			t.Errorf("source %q accepted", bad)
		}
	}
	env, err := credentials(map[string]string{"hfToken": "hf_secret"})
	if err != nil || !slices.Equal(env, []string{"HF_TOKEN=hf_secret"}) {
		t.Fatalf("credentials: %q, %v", env, err)
	}
	if _, err := credentials(map[string]string{"hfToken": ""}); err == nil || strings.Contains(err.Error(), "hf_secret") {
		t.Fatalf("empty hfToken: %v", err)
	}
}
