package resolver

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"

	"github.com/containerd/containerd/v2/core/remotes/docker"
	"github.com/containerd/errdefs"
	"golang.org/x/net/http/httpproxy"

	"github.com/beam-cloud/b9-resolver/internal/origin"
)

// realmPolicy says where a registry's token requests may go. A registry
// chooses its realm (and the realm its redirects), so a hostile or
// compromised one could otherwise point the node's credentials — or its
// requests, whose answer is then forwarded to the registry as a token — at
// anything the node can reach: cloud metadata, local services.
type realmPolicy struct {
	scheme string // the registry's scheme
	host   string // the registry's host[:port]
}

// loopback reports whether the registry itself is on the loopback
// interface (by name or address): only then may its token endpoint be.
func (p realmPolicy) loopback() bool { return docker.IsLocalhost(p.host) }

// ownName reports whether hostname is the registry's own host name and
// the registry uses TLS: a realm there is served by whatever the
// registry's name resolves to, and over TLS (the only way an https
// registry's realm is reached) only a server holding a certificate for
// the name answers, so a name rebound to a local port gains nothing. A
// plain-http registry's name gets no such exemption.
func (p realmPolicy) ownName(hostname string) bool {
	return p.scheme == "https" && strings.EqualFold(strings.TrimSuffix(hostname, "."), origin.OfHost(p.scheme, p.host).Host)
}

// realmRule refuses a token endpoint URL, or returns nil.
type realmRule func(p realmPolicy, u *url.URL) error

// realmRules are applied, in order, to the realm a challenge names and to
// every URL a token request is redirected to.
var realmRules = []realmRule{
	// HTTP(S) only.
	func(p realmPolicy, u *url.URL) error {
		if u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") {
			return fmt.Errorf("registry %s sent a token endpoint that is not an http(s) URL (scheme %q): %w", p.host, u.Scheme, errdefs.ErrInvalidArgument)
		}
		return nil
	},
	// Never cloud metadata, whatever the registry.
	func(p realmPolicy, u *url.URL) error {
		if metadataHost(u.Hostname()) {
			return fmt.Errorf("registry %s sent a token endpoint on %s (link-local or cloud metadata); refusing: %w", p.host, u.Hostname(), errdefs.ErrPermissionDenied)
		}
		return nil
	},
	// Loopback only for a registry on loopback.
	func(p realmPolicy, u *url.URL) error {
		if docker.IsLocalhost(u.Host) && !p.loopback() && !p.ownName(u.Hostname()) {
			return fmt.Errorf("registry %s sent a token endpoint on loopback (%s), which only a registry on loopback may: %w", p.host, u.Host, errdefs.ErrPermissionDenied)
		}
		return nil
	},
	// No plain http from an https registry: the password would cross the
	// network in clear, even on the registry's own host. Loopback never
	// leaves the machine (and containerd tries https first even on a
	// plain-http localhost registry).
	func(p realmPolicy, u *url.URL) error {
		if u.Scheme == "http" && p.scheme == "https" && !(p.loopback() && docker.IsLocalhost(u.Host)) {
			return fmt.Errorf("registry %s (https) sent a plain-http token endpoint on %s; refusing to send credentials there: %w", p.host, u.Host, errdefs.ErrPermissionDenied)
		}
		return nil
	},
}

func (p realmPolicy) check(u *url.URL) error {
	for _, rule := range realmRules {
		if err := rule(p, u); err != nil {
			return err
		}
	}
	return nil
}

func (p realmPolicy) checkRealm(realm string) error {
	u, err := url.Parse(realm)
	if err != nil {
		return fmt.Errorf("registry %s sent a token realm that is not a URL: %w", p.host, errdefs.ErrInvalidArgument)
	}
	return p.check(u)
}

// metadataNames are cloud metadata services' host names.
var metadataNames = map[string]bool{"metadata.google.internal": true, "metadata": true, "metadata.azure.internal": true}

// metadataIPs are metadata addresses outside the link-local ranges (AWS's
// IPv6 instance metadata endpoint).
var metadataIPs = []net.IP{net.ParseIP("fd00:ec2::254")}

func metadataHost(hostname string) bool {
	hostname = strings.TrimSuffix(strings.ToLower(hostname), ".")
	if metadataNames[hostname] {
		return true
	}
	ip := net.ParseIP(hostname)
	return ip != nil && metadataIP(ip)
}

func metadataIP(ip net.IP) bool {
	if ip.IsLinkLocalUnicast() || ip.IsLinkLocalMulticast() {
		return true
	}
	for _, m := range metadataIPs {
		if m.Equal(ip) {
			return true
		}
	}
	return false
}

// checkAddr applies the policy to the address a token request connected to
// (after DNS): a name that resolves to metadata or loopback — including a
// name that resolved elsewhere when the realm was checked (DNS rebinding) —
// is refused as the literal address would be. hostname is the name dialled.
func (p realmPolicy) checkAddr(hostname string, ip net.IP) error {
	switch {
	case metadataIP(ip):
		return fmt.Errorf("token endpoint %s of registry %s resolves to %s (link-local or cloud metadata); refusing: %w", hostname, p.host, ip, errdefs.ErrPermissionDenied)
	case (ip.IsLoopback() || ip.IsUnspecified()) && !p.loopback() && !p.ownName(hostname):
		return fmt.Errorf("token endpoint %s of registry %s resolves to loopback address %s, which only a registry on loopback may use: %w", hostname, p.host, ip, errdefs.ErrPermissionDenied)
	}
	return nil
}

// checkRedirect applies the policy to each redirect of a token request. A
// request that carries a credential (the password form, a refresh token or
// basic auth) does not follow a redirect off its origin: Go would re-send
// the form on a 307 and copy the header to the same name on plain http.
func (p realmPolicy) checkRedirect(credentialed bool) func(*http.Request, []*http.Request) error {
	return func(req *http.Request, via []*http.Request) error {
		if len(via) >= 10 {
			return fmt.Errorf("token endpoint of %s: stopped after 10 redirects: %w", p.host, errdefs.ErrUnknown)
		}
		if err := p.check(req.URL); err != nil {
			return fmt.Errorf("token endpoint redirected: %w", err)
		}
		if credentialed && !origin.Same(via[0].URL, req.URL) {
			return fmt.Errorf("token endpoint of %s redirected to another origin (%s); credentials are sent to %s only: %w",
				p.host, origin.Of(req.URL), origin.Of(via[0].URL), errdefs.ErrPermissionDenied)
		}
		return nil
	}
}

// guardDial wraps a transport's dialer with checkAddr. Through a proxy,
// the proxy resolves the name: its own address is not checked.
func (p realmPolicy) guardDial(dial func(ctx context.Context, network, addr string) (net.Conn, error), proxies map[string]bool) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		conn, err := dial(ctx, network, addr)
		if err != nil || proxies[addr] {
			return conn, err
		}
		hostname, _, _ := net.SplitHostPort(addr)
		if ta, ok := conn.RemoteAddr().(*net.TCPAddr); ok {
			if err := p.checkAddr(hostname, ta.IP); err != nil {
				conn.Close()
				return nil, err
			}
		}
		return conn, nil
	}
}

// envProxies are the proxy addresses the environment configures.
func envProxies() map[string]bool {
	m := map[string]bool{}
	c := httpproxy.FromEnvironment()
	for _, s := range []string{c.HTTPProxy, c.HTTPSProxy} {
		if s == "" {
			continue
		}
		if !strings.Contains(s, "://") {
			s = "http://" + s
		}
		if u, err := url.Parse(s); err == nil && u.Host != "" {
			o := origin.OfHost(u.Scheme, u.Host)
			m[net.JoinHostPort(u.Hostname(), o.Port)] = true
		}
	}
	return m
}

// tokenClient is base (the registry host's client: its TLS settings and
// proxy apply to the realm too) with the policy on every redirect and, when
// its transport is an *http.Transport (containerd's hosts.toml hosts and
// the default), on every connection. Another RoundTripper (an UpdateClient
// hook's, containerd's http fallback for a host configured as http) cannot
// be cloned: the realm rule then holds for every name and redirect, and
// the resolved address is not checked.
func (p realmPolicy) tokenClient(base *http.Client, credentialed bool) *http.Client {
	c := &http.Client{Timeout: base.Timeout, Jar: nil, Transport: base.Transport, CheckRedirect: p.checkRedirect(credentialed)}
	if c.Transport == nil {
		c.Transport = http.DefaultTransport
	}
	if t, ok := c.Transport.(*http.Transport); ok {
		t = t.Clone()
		dial := t.DialContext
		if dial == nil {
			dial = (&net.Dialer{}).DialContext
		}
		t.DialContext = p.guardDial(dial, envProxies())
		c.Transport = t
	}
	return c
}

// tokenClients keeps the guarded clients of the node's Authorizer, one per
// (host client, registry): each has its own transport, so its own idle
// connections, which are worth keeping across token fetches.
type tokenClients struct {
	mu sync.Mutex
	m  map[tokenClientKey]*http.Client
}

type tokenClientKey struct {
	base         *http.Client
	policy       realmPolicy
	credentialed bool
}

// maxTokenClients bounds the guarded clients kept (pods choose registries).
const maxTokenClients = 256

func (c *tokenClients) get(base *http.Client, p realmPolicy, credentialed bool) *http.Client {
	k := tokenClientKey{base: base, policy: p, credentialed: credentialed}
	c.mu.Lock()
	defer c.mu.Unlock()
	if tc, ok := c.m[k]; ok {
		return tc
	}
	if c.m == nil || len(c.m) >= maxTokenClients {
		for _, old := range c.m {
			old.CloseIdleConnections()
		}
		c.m = map[tokenClientKey]*http.Client{}
	}
	tc := p.tokenClient(base, credentialed)
	c.m[k] = tc
	return tc
}
