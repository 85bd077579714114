package csi

import (
	"slices"
	"strings"
	"testing"
)

func TestAzureVolume(t *testing.T) {
	for _, attrs := range []map[string]string{
		{"source": "az://acct1/models/llama"},
		{"source": "https://acct1.blob.core.windows.net/models/llama"},
		{"source": "az://devstoreaccount1/models", "endpoint": "http://10.0.0.5:10000/devstoreaccount1"},
		{"source": "az://acct1/models", "noSignRequest": "true"},
	} {
		v, err := parseVolume(attrs)
		if err != nil {
			t.Errorf("%v: %v", attrs, err)
			continue
		}
		if v.scheme != "az" {
			t.Errorf("%v: scheme %q, want az", attrs, v.scheme)
		}
	}
	for attrs, want := range map[string]string{
		"az://acct1":                   `"source"`,
		"az://acct1/models?sig=SECRET": `"source"`,
		"az://ACCT/models":             `"source"`,
	} {
		_, err := parseVolume(map[string]string{"source": attrs})
		if err == nil || !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), "SECRET") {
			t.Errorf("%s: %v; want an error naming %s", attrs, err, want)
		}
	}
}

func TestAzureCredentials(t *testing.T) {
	env, err := credentials(map[string]string{"azureStorageKey": "a2V5"})
	if err != nil || !slices.Equal(env, []string{"AZURE_STORAGE_KEY=a2V5"}) {
		t.Errorf("key: %q, %v", env, err)
	}
	env, err = credentials(map[string]string{"azureStorageSASToken": "sv=1&sig=s"})
	if err != nil || !slices.Equal(env, []string{"AZURE_STORAGE_SAS_TOKEN=sv=1&sig=s"}) {
		t.Errorf("SAS: %q, %v", env, err)
	}
	if !hasAzureKeys(map[string]string{"azureStorageSASToken": "sv=1&sig=s"}) || hasAzureKeys(map[string]string{"hfToken": "x"}) {
		t.Error("hasAzureKeys")
	}
	_, err = credentials(map[string]string{"azureStorageKey": "a2V5", "azureStorageSASToken": "sv=1&sig=SECRET"})
	if err == nil || strings.Contains(err.Error(), "SECRET") || strings.Contains(err.Error(), "a2V5") {
		t.Errorf("key and SAS together: %v", err)
	}
	got := mountEnv([]string{"PATH=/bin", "AZURE_STORAGE_KEY=node", "AZURE_CLIENT_ID=id", "AZURE_FEDERATED_TOKEN_FILE=/t"}, false,
		[]string{"AZURE_STORAGE_SAS_TOKEN=vol"})
	for _, kv := range got {
		if strings.HasPrefix(kv, "AZURE_") && kv != "AZURE_STORAGE_SAS_TOKEN=vol" {
			t.Errorf("a mount without the node's identity gets the plugin's %s", kv)
		}
	}
	if kept := mountEnv([]string{"AZURE_CLIENT_ID=id"}, true, nil); !slices.Contains(kept, "AZURE_CLIENT_ID=id") {
		t.Errorf("a mount with the node's identity lost it: %q", kept)
	}
}

func TestAzureInlineSources(t *testing.T) {
	p, err := ParseInlineSources("az://acct1, https://*.blob.core.windows.net:443, http://10.0.0.5:10000")
	if err != nil {
		t.Fatal(err)
	}
	anyAccount, err := ParseInlineSources("az")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		attrs         map[string]string
		ok, okAnyAcct bool
	}{
		{map[string]string{"source": "az://acct1/models/x"}, true, true},
		{map[string]string{"source": "az://acct2/models/x"}, true, true}, // by its https origin
		{map[string]string{"source": "https://acct1.blob.core.windows.net/models/x"}, true, true},
		{map[string]string{"source": "az://acct1/models", "endpoint": "http://10.0.0.5:10000/acct1"}, true, false},
		{map[string]string{"source": "az://acct1/models", "endpoint": "http://10.0.0.6:10000/acct1"}, false, false},
	} {
		v, err := parseVolume(c.attrs)
		if err != nil {
			t.Fatal(err)
		}
		if got := p.allows(v); got != c.ok {
			t.Errorf("%v: allowed %v, want %v", c.attrs, got, c.ok)
		}
		if got := anyAccount.allows(v); got != c.okAnyAcct {
			t.Errorf("az: %v: allowed %v, want %v", c.attrs, got, c.okAnyAcct)
		}
	}
	only, _ := ParseInlineSources("az://acct1")
	if v, _ := parseVolume(map[string]string{"source": "az://acct2/models"}); only.allows(v) {
		t.Error("az://acct1 allowed another account")
	}
	for _, bad := range []string{"az://", "az://ACCT", "az://acct1/models"} {
		if _, err := ParseInlineSources(bad); err == nil {
			t.Errorf("ParseInlineSources(%q) accepted", bad)
		}
	}
}
