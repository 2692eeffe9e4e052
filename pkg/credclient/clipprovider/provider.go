package clipprovider

import (
	"context"

	"github.com/beam-cloud/clip/pkg/common"
	"github.com/containerd/errdefs"
	"github.com/google/go-containerregistry/pkg/authn"

	"github.com/beam-cloud/b9-resolver/pkg/credclient"
)

// Name is the provider's default name, as CLIP logs it.
const Name = "b9-resolver"

// Provider answers CLIP from the Credentials service.
type Provider struct {
	c    *credclient.Client
	ref  string
	name string
}

var _ common.RegistryCredentialProvider = (*Provider)(nil)

// Option configures New.
type Option func(*Provider)

// WithCredentialRef pins the provider to the credential that pulled the
// image (the containerd.io/snapshot/b9.credential-ref label): it will
// answer that credential or nothing, never another pull's. beta9 mounts
// one CLIP archive per image id, so one Provider per mount fits.
func WithCredentialRef(ref string) Option { return func(p *Provider) { p.ref = ref } }

// WithName replaces the name CLIP logs.
func WithName(name string) Option { return func(p *Provider) { p.name = name } }

// New returns a provider backed by c.
func New(c *credclient.Client, opts ...Option) *Provider {
	p := &Provider{c: c, name: Name}
	for _, o := range opts {
		o(p)
	}
	return p
}

// Name implements common.RegistryCredentialProvider.
func (p *Provider) Name() string { return p.name }

// GetCredentials implements common.RegistryCredentialProvider. registry
// is the host as CLIP stores it (index.docker.io for Docker Hub), scope the
// repository. It returns:
//   - a basic or identity-token AuthConfig for a recorded credential;
//   - an empty, non-nil AuthConfig for a public pull, which CLIP uses as
//     "anonymous, no fallback";
//   - common.ErrNoCredentials itself when the service has none (CLIP
//     compares with ==, so the sentinel is returned unwrapped) and CLIP
//     falls back to its keychain;
//   - any other error (service down, uid refused): CLIP logs it and falls
//     back to its keychain too.
func (p *Provider) GetCredentials(ctx context.Context, registry, scope string) (*authn.AuthConfig, error) {
	cred, err := p.c.GetCredentials(ctx, credclient.Request{Host: registry, Repository: scope, CredentialRef: p.ref})
	if err != nil {
		if errdefs.IsNotFound(err) {
			return nil, common.ErrNoCredentials
		}
		return nil, err
	}
	switch {
	case cred.Anonymous:
		return &authn.AuthConfig{}, nil
	case cred.IdentityToken:
		return &authn.AuthConfig{IdentityToken: cred.Secret}, nil
	}
	return &authn.AuthConfig{Username: cred.Username, Password: cred.Secret}, nil
}
