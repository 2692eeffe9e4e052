package resolver

import (
	"crypto/tls"
	"fmt"
	"net/http"
	"path/filepath"

	"github.com/containerd/containerd/v2/core/remotes"
	"github.com/containerd/containerd/v2/core/remotes/docker"
	"github.com/containerd/containerd/v2/core/remotes/docker/config"
	"github.com/containerd/errdefs"

	"github.com/beam-cloud/b9-resolver/internal/keychain/registry"
	"github.com/beam-cloud/b9-resolver/internal/origin"
)

// Resolver makes registry hosts for pulls. One per node: its Authorizer's
// challenges and tokens are shared by every pull it serves.
type Resolver struct {
	auth          *Authorizer
	roots         []string
	headers       http.Header
	defaultScheme string
	tlsConfig     *tls.Config
	updateClient  config.UpdateClientFunc
	trusted       map[string]bool
	detector      *registry.Detector
	hostsCache    hostsCache
}

// Option configures a Resolver. An option given a value it cannot use
// returns an error rather than drop it silently.
type Option func(*Resolver) error

// WithAuthorizer shares a (node-wide) Authorizer; by default the Resolver
// has its own.
func WithAuthorizer(a *Authorizer) Option {
	return func(r *Resolver) error {
		if a == nil {
			return invalidOption("WithAuthorizer", "a nil *Authorizer")
		}
		r.auth = a
		return nil
	}
}

// WithConfigPath sets the hosts.toml root(s), like CRI's registry
// config_path: a directory, or several separated by the OS list separator
// (":"), tried in order per host. An empty path reads no hosts.toml.
func WithConfigPath(path string) Option {
	return func(r *Resolver) error {
		r.roots = nil
		for _, p := range filepath.SplitList(path) {
			if p != "" {
				r.roots = append(r.roots, p)
			}
		}
		return nil
	}
}

// WithHeaders adds headers to every registry and token request.
func WithHeaders(h http.Header) Option {
	return func(r *Resolver) error {
		r.headers = h.Clone()
		return nil
	}
}

// WithDefaultScheme sets the scheme of hosts hosts.toml does not describe:
// "http" for a plain-HTTP registry, or "https". containerd's default
// applies without it: https, and http for localhost on a port other than
// 443.
func WithDefaultScheme(s string) Option {
	return func(r *Resolver) error {
		if s != "http" && s != "https" {
			return invalidOption("WithDefaultScheme", "%q is not \"http\" or \"https\"", s)
		}
		r.defaultScheme = s
		return nil
	}
}

// WithTLSConfig sets the TLS configuration of hosts without their own
// (nil: Go's defaults).
func WithTLSConfig(c *tls.Config) Option {
	return func(r *Resolver) error {
		r.tlsConfig = c
		return nil
	}
}

// WithUpdateClient lets the caller adjust each host's http.Client (its
// transport, a dialer) after hosts.toml was applied. It runs when a host's
// configuration is (re)built, not per pull, and the client it adjusts is
// shared by every pull of that host: it must not capture per-pull state.
func WithUpdateClient(f config.UpdateClientFunc) Option {
	return func(r *Resolver) error {
		r.updateClient = f
		return nil
	}
}

// WithTrustedMirrors lists mirror hosts (host[:port]) that may be given the
// upstream registry's credentials when no document names them. A mirror not
// listed gets only credentials for its own host, so a pull-through cache
// run by someone else never sees the upstream's secret. A host that is not
// a registry host is refused, not skipped: the mirror meant would
// otherwise silently get no credentials.
func WithTrustedMirrors(hosts ...string) Option {
	return func(r *Resolver) error {
		for i, h := range hosts {
			n, err := registry.NormalizeHost(h)
			if err != nil {
				return invalidOption("WithTrustedMirrors", "[%d] %q is not a registry host", i, h)
			}
			r.trusted[n] = true
		}
		return nil
	}
}

// WithDetector classifies hosts with the node's mappings (nil: none, every
// host detected by its name alone).
func WithDetector(d *registry.Detector) Option {
	return func(r *Resolver) error {
		r.detector = d
		return nil
	}
}

// New returns a Resolver, or the InvalidArgument error of the first option
// that refused its value.
func New(opts ...Option) (*Resolver, error) {
	r := &Resolver{trusted: map[string]bool{}}
	for _, o := range opts {
		if err := o(r); err != nil {
			return nil, err
		}
	}
	if r.auth == nil {
		auth, err := NewAuthorizer()
		if err != nil {
			return nil, err
		}
		r.auth = auth
	}
	return r, nil
}

// Authorizer is the Resolver's shared Authorizer.
func (r *Resolver) Authorizer() *Authorizer { return r.auth }

// Resolver is a containerd resolver for one pull with creds.
func (r *Resolver) Resolver(creds Credentials) remotes.Resolver {
	return docker.NewResolver(docker.ResolverOptions{Hosts: r.Hosts(creds), Headers: r.headers})
}

// Hosts returns the registry hosts for pulls with creds: hosts.toml's
// mirrors and settings (validated), Docker Hub at registry-1.docker.io, and
// on every host b9-resolver's Authorizer bound to that host's credentials.
func (r *Resolver) Hosts(creds Credentials) docker.RegistryHosts {
	if creds == nil {
		creds = Anonymous
	}
	return func(host string) ([]docker.RegistryHost, error) {
		upstreamHost, err := registry.NormalizeHost(host)
		if err != nil {
			return nil, fmt.Errorf("registry host: %w", err)
		}
		upstream := r.detector.Detect(upstreamHost)
		cached, err := r.configuredHosts(host)
		if err != nil {
			return nil, err
		}
		// The cached hosts are shared by every pull: this pull's copy gets
		// its own Authorizer, header map and client value (over the shared
		// transport, so connections are reused across pulls).
		hosts := make([]docker.RegistryHost, len(cached))
		copy(hosts, cached)
		for i := range hosts {
			rh := &hosts[i]
			rh.Header = rh.Header.Clone()
			canonical, err := registry.NormalizeHost(rh.Host)
			if err != nil {
				return nil, fmt.Errorf("registry host %s (from hosts.toml for %s): %w", rh.Host, host, err)
			}
			mirror := canonical != upstreamHost
			header := r.headers.Clone()
			if header == nil {
				header = http.Header{}
			}
			for k, v := range rh.Header {
				header[k] = append(header[k], v...)
			}
			rh.Authorizer = r.auth.For(Binding{
				Host: rh.Host, Scheme: rh.Scheme,
				Registry: r.detector.Detect(canonical),
				Mirror:   mirror, Upstream: upstream, TrustUpstream: mirror && r.trusted[canonical],
				Credentials: creds, Client: rh.Client, Header: header,
			})
			c := http.Client{}
			if rh.Client != nil {
				c = *rh.Client
			}
			// Whoever set an Authorization header, it does not follow a
			// redirect off the host's origin (Go copies it to the same
			// name on plain http, on another port, to subdomains).
			c.Transport = expiryTransport{next: origin.Transport(transportOf(rh.Client)), origin: origin.OfHost(rh.Scheme, rh.Host)}
			rh.Client = &c
		}
		return hosts, nil
	}
}

// hostDir finds a host's directory under the first root that has one.
func (r *Resolver) hostDir(host string) (string, error) {
	for _, root := range r.roots {
		dir, err := config.HostDirFromRoot(root)(host)
		if err == nil {
			return dir, nil
		}
		if !errdefs.IsNotFound(err) {
			return "", fmt.Errorf("hosts directory for %s under %s: %w", host, root, err)
		}
	}
	return "", errdefs.ErrNotFound
}
