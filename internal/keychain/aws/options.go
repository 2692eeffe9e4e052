package aws

import (
	"fmt"
	"net/http"
	"os"
	"time"

	"github.com/beam-cloud/b9-resolver/internal/keychain"
	"github.com/containerd/errdefs"
)

// Endpoints overrides AWS API endpoints (scheme://host[:port]); empty
// fields fall back to the SDK's environment variables.
type Endpoints struct {
	ECR, ECRPublic, STS string
}

// Option configures the provider.
type Option func(*Provider) error

// WithEndpoints sets endpoints that win over the environment (tests,
// ctr-b9 flags).
func WithEndpoints(e Endpoints) Option {
	return func(p *Provider) error {
		p.endpoints = e
		return nil
	}
}

// WithHTTPClient sets the client for every AWS call.
func WithHTTPClient(c *http.Client) Option {
	return func(p *Provider) error {
		if c == nil {
			return fmt.Errorf("aws.WithHTTPClient: a nil *http.Client: %w", errdefs.ErrInvalidArgument)
		}
		p.hc = c
		return nil
	}
}

// WithAmbient lets node credential documents (document.Document.Node)
// without keys use the node's own identity through the SDK's default chain
// (environment, shared files, web identity / IRSA, ECS and EC2 instance
// roles). A pod's document never does. Off by default.
func WithAmbient(enabled bool) Option {
	return func(p *Provider) error {
		p.ambient = enabled
		return nil
	}
}

// WithGetenv replaces os.Getenv for the endpoint variables (tests).
func WithGetenv(f func(string) string) Option {
	return func(p *Provider) error {
		if f == nil {
			return fmt.Errorf("aws.WithGetenv: a nil function: %w", errdefs.ErrInvalidArgument)
		}
		p.getenv = f
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

// WithRoleSessionName sets the RoleSessionName of AssumeRole calls, which
// CloudTrail shows; default "b9-resolver".
func WithRoleSessionName(name string) Option {
	return func(p *Provider) error {
		if name == "" {
			return fmt.Errorf("aws.WithRoleSessionName: an empty session name: %w", errdefs.ErrInvalidArgument)
		}
		p.sessionName = name
		return nil
	}
}

// WithRoleDuration sets the life asked for assumed-role sessions.
func WithRoleDuration(d time.Duration) Option {
	return func(p *Provider) error {
		if d <= 0 {
			return fmt.Errorf("aws.WithRoleDuration: a duration that is not positive: %w", errdefs.ErrInvalidArgument)
		}
		p.roleDuration = d
		return nil
	}
}

// WithMaxSessions bounds the cached assumed-role sessions.
func WithMaxSessions(n int) Option {
	return func(p *Provider) error {
		if n <= 0 {
			return fmt.Errorf("aws.WithMaxSessions: a bound that is not positive: %w", errdefs.ErrInvalidArgument)
		}
		p.sessions.max = n
		return nil
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
