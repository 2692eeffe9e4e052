package azure

import (
	"fmt"
	"net/http"
	"os"
	"time"

	"github.com/beam-cloud/b9-resolver/internal/keychain"
	"github.com/containerd/errdefs"
)

// DefaultRefreshTokenLife is assumed when an ACR refresh token does not
// carry a readable exp (they live about 3 h).
const DefaultRefreshTokenLife = 3 * time.Hour

// Option configures the provider.
type Option func(*Provider) error

// WithHTTPClient sets the client for AAD and the registries' exchange.
func WithHTTPClient(c *http.Client) Option {
	return func(p *Provider) error {
		if c == nil {
			return fmt.Errorf("azure.WithHTTPClient: a nil *http.Client: %w", errdefs.ErrInvalidArgument)
		}
		p.hc = c
		return nil
	}
}

// WithAuthorityHost sets the AAD authority for every cloud, over
// AZURE_AUTHORITY_HOST.
func WithAuthorityHost(url string) Option {
	return func(p *Provider) error {
		p.authority = url
		return nil
	}
}

// WithGetenv replaces os.Getenv for AZURE_AUTHORITY_HOST and
// AZURE_POD_IDENTITY_AUTHORITY_HOST (tests).
func WithGetenv(f func(string) string) Option {
	return func(p *Provider) error {
		if f == nil {
			return fmt.Errorf("azure.WithGetenv: a nil function: %w", errdefs.ErrInvalidArgument)
		}
		p.getenv = f
		return nil
	}
}

// WithAmbient lets node credential documents (document.Document.Node)
// of type azure without keys use the node's managed identity through IMDS.
// A pod's document never does.
func WithAmbient(enabled bool) Option {
	return func(p *Provider) error {
		p.ambient = enabled
		return nil
	}
}

// WithIdentityClientID picks a user-assigned managed identity by client
// id; empty means the node's system-assigned identity.
func WithIdentityClientID(id string) Option {
	return func(p *Provider) error {
		p.identityClientID = id
		return nil
	}
}

// WithIMDSEndpoint sets the instance metadata service, over
// AZURE_POD_IDENTITY_AUTHORITY_HOST and DefaultIMDSEndpoint.
func WithIMDSEndpoint(url string) Option {
	return func(p *Provider) error {
		p.imds = url
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

func defaults() *Provider {
	return &Provider{
		hc:     &http.Client{Timeout: 30 * time.Second, Transport: http.DefaultTransport.(*http.Transport).Clone()},
		getenv: os.Getenv,
		retry:  keychain.DefaultRetry,
		now:    time.Now,
	}
}
