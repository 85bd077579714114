package csi

import (
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strings"

	"github.com/modelfs/modelfs/fetch"
)

// InlineSources is the operator's list of what inline ephemeral volumes,
// which any pod author writes, may read. Its zero value allows none.
type InlineSources struct {
	any   bool
	rules []sourceRule
	text  string
}

// sourceRule is one entry: S3 on AWS (all buckets, or one), or an
// http(s) origin, exact or a wildcard over subdomains.
type sourceRule struct {
	scheme string // "s3", "gs", "az", "http" or "https"
	bucket string // s3, gs: "" for any bucket; az: the account, "" for any
	host   string // http(s): lower-case host:port
	suffix bool   // host is ".domain:port", matching any subdomain
}

// AnyInlineSource allows every source to inline volumes (the network
// policy still applies).
func AnyInlineSource() InlineSources { return InlineSources{any: true, text: "*"} }

// ParseInlineSources parses the --inline-sources list: comma-separated
// entries, each one of
//
//   - any source
//     s3                         any bucket on AWS S3 (no endpoint attribute)
//     s3://BUCKET                that bucket on AWS S3
//     az                         any account on Azure's public cloud (no endpoint attribute)
//     az://ACCOUNT               that storage account
//     gs                         any bucket on Google Cloud Storage (no endpoint attribute)
//     gs://BUCKET                that bucket on Google Cloud Storage
//     https://HOST[:PORT]        HTTP(S) sources on that host, and S3
//     http://HOST[:PORT]         endpoints at that origin
//     https://*.DOMAIN[:PORT]    the same for every subdomain of DOMAIN
//
// "" or "none" allows no inline volume.
func ParseInlineSources(s string) (InlineSources, error) {
	p := InlineSources{}
	var shown []string
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		switch {
		case f == "" || f == "none":
			continue
		case f == "*":
			p.any = true
		case f == "s3":
			p.rules = append(p.rules, sourceRule{scheme: "s3"})
		case f == "gs":
			p.rules = append(p.rules, sourceRule{scheme: "gs"})
		case strings.HasPrefix(f, "gs://"):
			loc, err := fetch.ParseLocation(f)
			if err != nil || loc.Prefix != "" {
				return InlineSources{}, fmt.Errorf("inline source %q: want gs://BUCKET", f)
			}
			p.rules = append(p.rules, sourceRule{scheme: "gs", bucket: loc.Bucket})
		case strings.HasPrefix(f, "s3://"):
			loc, err := fetch.ParseLocation(f)
			if err != nil || loc.Prefix != "" {
				return InlineSources{}, fmt.Errorf("inline source %q: want s3://BUCKET", f)
			}
			p.rules = append(p.rules, sourceRule{scheme: "s3", bucket: loc.Bucket})
		case f == "az":
			p.rules = append(p.rules, sourceRule{scheme: "az"})
		case strings.HasPrefix(f, "az://"):
			account := strings.TrimPrefix(f, "az://")
			if checkAccount(account) != nil {
				return InlineSources{}, fmt.Errorf("inline source %q: want az://ACCOUNT", f)
			}
			p.rules = append(p.rules, sourceRule{scheme: "az", bucket: account})
		default:
			u, err := url.Parse(f)
			if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil ||
				strings.Trim(u.Path, "/") != "" || u.RawQuery != "" {
				return InlineSources{}, fmt.Errorf("inline source %q: want *, s3, s3://BUCKET, gs, gs://BUCKET, az, az://ACCOUNT or http(s)://HOST[:PORT]", f)
			}
			r := sourceRule{scheme: u.Scheme, host: origin(u)}
			if rest, ok := strings.CutPrefix(r.host, "*."); ok {
				r.host, r.suffix = "."+rest, true
			}
			if strings.Contains(r.host, "*") {
				return InlineSources{}, fmt.Errorf("inline source %q: a wildcard only as *.DOMAIN", f)
			}
			p.rules = append(p.rules, r)
		}
		shown = append(shown, f)
	}
	p.text = strings.Join(shown, ",")
	return p, nil
}

func (p InlineSources) String() string {
	if p.text == "" {
		return "none"
	}
	return p.text
}

// origin is u's lower-case host:port, the port made explicit.
func origin(u *url.URL) string {
	port := u.Port()
	if port == "" {
		port = map[string]string{"http": "80", "https": "443"}[u.Scheme]
	}
	return net.JoinHostPort(strings.ToLower(u.Hostname()), port)
}

func (r sourceRule) matchesOrigin(u *url.URL) bool {
	if u.Scheme != r.scheme {
		return false
	}
	o := origin(u)
	if !r.suffix {
		return o == r.host
	}
	// ".example.com:443" matches "a.example.com:443", not "example.com:443".
	return strings.HasSuffix(o, r.host) && len(o) > len(r.host)
}

// allows reports whether an inline volume may read v's source (and reach
// its endpoint).
func (p InlineSources) allows(v *volume) bool {
	if p.any {
		return true
	}
	switch v.scheme {
	case "s3", "gs":
		loc, err := fetch.ParseLocation(v.source)
		if err != nil {
			return false
		}
		bucket := false
		for _, r := range p.rules {
			bucket = bucket || r.scheme == v.scheme && (r.bucket == "" || r.bucket == loc.Bucket)
		}
		if !bucket || v.endpoint == "" {
			return bucket
		}
		return p.allowsURL(v.endpoint)
	case "az":
		loc, err := fetch.ParseLocation(v.source)
		if err != nil {
			return false
		}
		account := false
		for _, r := range p.rules {
			account = account || r.scheme == "az" && (r.bucket == "" || r.bucket == loc.Account)
		}
		if v.endpoint != "" {
			return account && p.allowsURL(v.endpoint)
		}
		// Or by the public cloud's origin for the account.
		return account || p.allowsURL("https://"+loc.Account+".blob.core.windows.net")
	case "hf":
		// A Hub is allowed like an HTTPS origin: https://huggingface.co,
		// or the mirror the endpoint attribute names.
		return p.allowsURL(v.hfEndpoint())
	default:
		return p.allowsURL(v.source)
	}
}

func (p InlineSources) allowsURL(raw string) bool {
	u, err := url.Parse(raw)
	if err != nil {
		return false
	}
	for _, r := range p.rules {
		if r.matchesOrigin(u) {
			return true
		}
	}
	return false
}

// checkAccount checks an az://ACCOUNT entry as az:// sources are.
func checkAccount(account string) error {
	loc, err := fetch.ParseLocation("az://" + account + "/container")
	if err != nil || loc.Account != account {
		return fmt.Errorf("not a storage account name")
	}
	return nil
}

// netPolicy is the plugin's network policy for every volume's mount: the
// default denied networks plus the operator's, less the allowed ones.
func (o *Options) netPolicy() *fetch.NetPolicy {
	return &fetch.NetPolicy{
		Deny:  append(fetch.DefaultDeniedNetworks(), o.DeniedNetworks...),
		Allow: o.AllowedNetworks,
	}
}

// checkAddresses refuses a source or endpoint that names a denied address
// outright, before any mount starts; names are checked by the mount when
// it dials.
func checkAddresses(policy *fetch.NetPolicy, v *volume) error {
	for _, raw := range []string{v.source, v.endpoint} {
		if raw == "" || (v.scheme == "s3" || v.scheme == "hf" || v.scheme == "gs") && raw == v.source {
			continue
		}
		u, err := url.Parse(raw)
		if err != nil {
			continue
		}
		if addr, err := netip.ParseAddr(u.Hostname()); err == nil {
			if err := policy.CheckAddr(addr); err != nil {
				return err
			}
		}
	}
	return nil
}
