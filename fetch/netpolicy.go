package fetch

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"syscall"
	"time"
)

// NetPolicy bounds the addresses a source may connect to. It is checked
// when a connection is dialled, on the address DNS returned, so a name that
// resolves (or later re-resolves) to a denied address is refused too; and
// on every redirect an HTTP source is sent. A nil *NetPolicy allows all.
type NetPolicy struct {
	// Deny are the networks no connection may reach.
	Deny []netip.Prefix
	// Allow are exceptions to Deny (a test store on loopback, a cluster's
	// own object store).
	Allow []netip.Prefix
}

// DefaultDeniedNetworks are the networks a pod should never reach through
// the node: link-local (cloud instance metadata at 169.254.169.254, EKS pod
// identity at 169.254.170.23), AWS's IPv6 metadata address, loopback (the
// node's own services) and the unspecified addresses (which reach
// loopback).
func DefaultDeniedNetworks() []netip.Prefix {
	return []netip.Prefix{
		netip.MustParsePrefix("169.254.0.0/16"),
		netip.MustParsePrefix("fe80::/10"),
		netip.MustParsePrefix("fd00:ec2::254/128"),
		netip.MustParsePrefix("127.0.0.0/8"),
		netip.MustParsePrefix("::1/128"),
		netip.MustParsePrefix("0.0.0.0/8"),
		netip.MustParsePrefix("::/128"),
	}
}

// ErrNetDenied marks a connection the policy refused. It wraps ErrAccess:
// it is an answer, not an outage, so it is neither retried nor a reason to
// fall back to a saved listing.
var ErrNetDenied = fmt.Errorf("%w: address denied by the network policy", ErrAccess)

// ParseNetworks parses a comma-separated list of CIDR prefixes or single
// addresses ("10.0.0.0/8,fd00::1"); "" is none.
func ParseNetworks(s string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		if p, err := netip.ParsePrefix(f); err == nil {
			out = append(out, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(f)
		if err != nil {
			return nil, fmt.Errorf("%q is not a network (CIDR like 10.0.0.0/8) or an address", f)
		}
		out = append(out, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
	}
	return out, nil
}

// FormatNetworks is ParseNetworks' inverse.
func FormatNetworks(nets []netip.Prefix) string {
	s := make([]string, len(nets))
	for i, n := range nets {
		s[i] = n.String()
	}
	return strings.Join(s, ",")
}

// CheckAddr returns an error wrapping ErrNetDenied if addr may not be
// reached.
func (p *NetPolicy) CheckAddr(addr netip.Addr) error {
	if p == nil {
		return nil
	}
	addr = addr.Unmap() // ::ffff:127.0.0.1 is loopback too
	for _, n := range p.Allow {
		if n.Contains(addr) {
			return nil
		}
	}
	for _, n := range p.Deny {
		if n.Contains(addr) {
			return fmt.Errorf("%w: %s is in %s", ErrNetDenied, addr, n)
		}
	}
	return nil
}

// CheckHost checks a URL host ("name", "name:port", "[v6]:port") that is
// an IP literal; names are checked when dialled.
func (p *NetPolicy) CheckHost(host string) error {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	addr, err := netip.ParseAddr(strings.Trim(host, "[]"))
	if err != nil {
		return nil
	}
	return p.CheckAddr(addr)
}

// control is a net.Dialer Control: it sees the resolved address just
// before connect.
func (p *NetPolicy) control(_, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("%w: unexpected dial address %q", ErrNetDenied, address)
	}
	return p.CheckAddr(ap.Addr())
}

// Dialer is the dialer a transport under the policy uses.
func (p *NetPolicy) Dialer() *net.Dialer {
	d := &net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}
	p.applyDialer(d)
	return d
}

func (p *NetPolicy) applyDialer(d *net.Dialer) {
	if p != nil {
		d.Control = p.control
	}
}

// applyTransport routes t's connections through the policy. A proxy
// would make the policy check the proxy's address and not the source's,
// so under a policy connections are direct.
func (p *NetPolicy) applyTransport(t *http.Transport) {
	if p == nil {
		return
	}
	t.Proxy = nil
	t.DialContext = p.Dialer().DialContext
}

// checkRedirect is an http.Client CheckRedirect: each hop must stay on
// http(s) and, when its host is an address, pass the policy (a name is
// checked when dialled). It keeps net/http's limit of 10 hops.
func (p *NetPolicy) checkRedirect(req *http.Request, via []*http.Request) error {
	if len(via) >= 10 {
		return errors.New("stopped after 10 redirects")
	}
	if p == nil {
		return nil
	}
	if req.URL.Scheme != "http" && req.URL.Scheme != "https" {
		return fmt.Errorf("%w: redirect to a %s: URL", ErrNetDenied, req.URL.Scheme)
	}
	return p.CheckHost(req.URL.Host)
}
