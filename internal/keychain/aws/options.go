package aws

import (
	"net/http"
	"os"
	"time"

	"github.com/beam-cloud/b9-resolver/internal/keychain"
)

// Endpoints overrides AWS API endpoints (scheme://host[:port]); empty
// fields fall back to the SDK's environment variables.
type Endpoints struct {
	ECR, ECRPublic, STS string
}

// Option configures the provider.
type Option func(*Provider)

// WithEndpoints sets endpoints that win over the environment (tests,
// ctr-b9 flags).
func WithEndpoints(e Endpoints) Option { return func(p *Provider) { p.endpoints = e } }

// WithHTTPClient sets the client for every AWS call.
func WithHTTPClient(c *http.Client) Option {
	return func(p *Provider) {
		if c != nil {
			p.hc = c
		}
	}
}

// WithAmbient lets node credential documents (document.Document.Node)
// without keys use the node's own identity through the SDK's default chain
// (environment, shared files, web identity / IRSA, ECS and EC2 instance
// roles). A pod's document never does. Off by default.
func WithAmbient(enabled bool) Option { return func(p *Provider) { p.ambient = enabled } }

// WithGetenv replaces os.Getenv for the endpoint variables (tests).
func WithGetenv(f func(string) string) Option {
	return func(p *Provider) {
		if f != nil {
			p.getenv = f
		}
	}
}

// WithRetry sets how throttled and failing calls are retried.
func WithRetry(r keychain.RetryPolicy) Option { return func(p *Provider) { p.retry = r } }

// WithRoleSessionName sets the RoleSessionName of AssumeRole calls, which
// CloudTrail shows; default "b9-resolver".
func WithRoleSessionName(name string) Option {
	return func(p *Provider) {
		if name != "" {
			p.sessionName = name
		}
	}
}

// WithRoleDuration sets the life asked for assumed-role sessions.
func WithRoleDuration(d time.Duration) Option {
	return func(p *Provider) {
		if d > 0 {
			p.roleDuration = d
		}
	}
}

// WithMaxSessions bounds the cached assumed-role sessions.
func WithMaxSessions(n int) Option {
	return func(p *Provider) {
		if n > 0 {
			p.sessions.max = n
		}
	}
}

func defaults() *Provider {
	return &Provider{
		hc:           &http.Client{Timeout: 30 * time.Second, Transport: http.DefaultTransport.(*http.Transport).Clone()},
		getenv:       os.Getenv,
		retry:        keychain.DefaultRetry,
		sessionName:  "b9-resolver",
		roleDuration: time.Hour,
		sessions:     &sessionCache{max: 1024, m: map[string]*session{}},
	}
}
