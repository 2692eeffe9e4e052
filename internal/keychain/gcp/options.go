package gcp

import (
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/beam-cloud/b9-resolver/internal/keychain"
	"github.com/containerd/errdefs"
)

// Defaults.
const (
	// DefaultScope covers GCR and Artifact Registry pulls.
	DefaultScope = "https://www.googleapis.com/auth/cloud-platform"
	// DefaultMinTokenLife: tokens expiring sooner are not used. The GKE
	// metadata server hands out tokens close to expiry; docker-credential-gcr
	// accepts anything beyond 10 s rather than oauth2's 255 s margin.
	DefaultMinTokenLife = 10 * time.Second
	// DefaultAccessTokenLife is the life assumed for a bare
	// GCP_ACCESS_TOKEN, whose real expiry cannot be known: Google access
	// tokens live one hour by default.
	DefaultAccessTokenLife = time.Hour
)

// Option configures the provider.
type Option func(*Provider) error

// WithHTTPClient sets the client for token and metadata requests.
func WithHTTPClient(c *http.Client) Option {
	return func(p *Provider) error {
		if c == nil {
			return fmt.Errorf("gcp.WithHTTPClient: a nil *http.Client: %w", errdefs.ErrInvalidArgument)
		}
		p.hc = c
		return nil
	}
}

// WithAmbient lets node credential documents (document.Document.Node)
// without a key or token use the node's metadata-server identity
// (GCE_METADATA_HOST redirects it). A pod's document never does. Off by
// default.
func WithAmbient(enabled bool) Option {
	return func(p *Provider) error {
		p.ambient = enabled
		return nil
	}
}

// WithScopes sets the OAuth scopes asked for with a service-account key.
func WithScopes(scopes ...string) Option {
	return func(p *Provider) error {
		if len(scopes) == 0 {
			return fmt.Errorf("gcp.WithScopes: no scopes: %w", errdefs.ErrInvalidArgument)
		}
		p.scopes = scopes
		return nil
	}
}

// WithRetry sets how throttled and failing calls are retried.
func WithRetry(r keychain.RetryPolicy) Option {
	return func(p *Provider) error {
		p.retry = r
		return nil
	}
}

// WithMinTokenLife sets the least remaining life of a usable token.
func WithMinTokenLife(d time.Duration) Option {
	return func(p *Provider) error {
		p.minLife = d
		return nil
	}
}

// WithAccessTokenLife sets the life assumed for a bare GCP_ACCESS_TOKEN.
func WithAccessTokenLife(d time.Duration) Option {
	return func(p *Provider) error {
		if d <= 0 {
			return fmt.Errorf("gcp.WithAccessTokenLife: a life that is not positive: %w", errdefs.ErrInvalidArgument)
		}
		p.accessTokenLife = d
		return nil
	}
}

// WithKeyFileDirs lets GOOGLE_APPLICATION_CREDENTIALS name key files under
// these directories. None by default: a tenant's path could otherwise name
// the node's own key.
func WithKeyFileDirs(dirs ...string) Option {
	return func(p *Provider) error {
		p.keyDirs = dirs
		return nil
	}
}

// WithTokenURICheck replaces the check of a key's token_uri (default
// GoogleTokenURI).
func WithTokenURICheck(ok func(*url.URL) bool) Option {
	return func(p *Provider) error {
		if ok == nil {
			return fmt.Errorf("gcp.WithTokenURICheck: a nil check: %w", errdefs.ErrInvalidArgument)
		}
		p.tokenURIOK = ok
		return nil
	}
}

// GoogleTokenURI accepts https endpoints of googleapis.com (which covers
// oauth2.googleapis.com and Private Service Connect names) and
// accounts.google.com.
func GoogleTokenURI(u *url.URL) bool {
	h := u.Hostname()
	return u.Scheme == "https" && (h == "accounts.google.com" || h == "googleapis.com" || strings.HasSuffix(h, ".googleapis.com"))
}

// LoopbackOrGoogleTokenURI also accepts loopback endpoints, for emulators.
func LoopbackOrGoogleTokenURI(u *url.URL) bool {
	if GoogleTokenURI(u) {
		return true
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return false
	}
	h := u.Hostname()
	ip := net.ParseIP(h)
	return h == "localhost" || (ip != nil && ip.IsLoopback())
}

func defaults() *Provider {
	return &Provider{
		hc:              &http.Client{Timeout: 30 * time.Second, Transport: http.DefaultTransport.(*http.Transport).Clone()},
		scopes:          []string{DefaultScope},
		retry:           keychain.DefaultRetry,
		minLife:         DefaultMinTokenLife,
		accessTokenLife: DefaultAccessTokenLife,
		tokenURIOK:      GoogleTokenURI,
	}
}
