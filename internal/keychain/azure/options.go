package azure

import (
	"net/http"
	"os"
	"time"

	"github.com/beam-cloud/b9-resolver/internal/keychain"
)

// DefaultRefreshTokenLife is assumed when an ACR refresh token does not
// carry a readable exp (they live about 3 h).
const DefaultRefreshTokenLife = 3 * time.Hour

// Option configures the provider.
type Option func(*Provider)

// WithHTTPClient sets the client for AAD and the registries' exchange.
func WithHTTPClient(c *http.Client) Option {
	return func(p *Provider) {
		if c != nil {
			p.hc = c
		}
	}
}

// WithAuthorityHost sets the AAD authority for every cloud, over
// AZURE_AUTHORITY_HOST.
func WithAuthorityHost(url string) Option { return func(p *Provider) { p.authority = url } }

// WithGetenv replaces os.Getenv for AZURE_AUTHORITY_HOST (tests).
func WithGetenv(f func(string) string) Option {
	return func(p *Provider) {
		if f != nil {
			p.getenv = f
		}
	}
}

// WithRetry sets how throttled and failing calls are retried.
func WithRetry(r keychain.RetryPolicy) Option { return func(p *Provider) { p.retry = r } }

func defaults() *Provider {
	return &Provider{
		hc:     &http.Client{Timeout: 30 * time.Second, Transport: http.DefaultTransport.(*http.Transport).Clone()},
		getenv: os.Getenv,
		retry:  keychain.DefaultRetry,
		now:    time.Now,
	}
}
