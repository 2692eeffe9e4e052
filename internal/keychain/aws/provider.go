package aws

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"time"

	awssdk "github.com/aws/aws-sdk-go-v2/aws"

	"github.com/beam-cloud/b9-resolver/internal/keychain"
	"github.com/beam-cloud/b9-resolver/internal/keychain/document"
	"github.com/beam-cloud/b9-resolver/internal/keychain/registry"
)

// Provider mints ECR and ECR Public credentials. Use New.
type Provider struct {
	hc           *http.Client
	endpoints    Endpoints
	getenv       func(string) string
	ambient      bool
	retry        keychain.RetryPolicy
	sessionName  string
	roleDuration time.Duration
	sessions     *sessionCache

	ambientMu    sync.Mutex
	ambientCreds awssdk.CredentialsProvider
}

var (
	_ keychain.Provider    = (*Provider)(nil)
	_ keychain.Scoper      = (*Provider)(nil)
	_ keychain.Invalidator = (*Provider)(nil)
)

// New returns the provider for type aws.
func New(opts ...Option) (keychain.Provider, error) {
	p := defaults()
	for _, o := range opts {
		if err := o(p); err != nil {
			return nil, err
		}
	}
	return p, nil
}

func (*Provider) Type() document.Type { return document.TypeAWS }

// Mint gets an authorization token for reg's partition and region (or
// ECR Public) with the document's principal.
func (p *Provider) Mint(ctx context.Context, reg registry.Registry, doc document.Document) (keychain.Minted, error) {
	if doc.Node && p.ambient && !doc.Has(document.KeyAWSAccessKeyID) {
		if err := keychain.AmbientFor(reg, doc, "AWS identity", registry.KindECR, registry.KindECRPublic); err != nil {
			return keychain.Minted{}, err
		}
	}
	t, err := targetFor(reg, doc)
	if err != nil {
		return keychain.Minted{}, err
	}
	creds, how, err := p.credentialsFor(ctx, t, doc)
	if err != nil {
		return keychain.Minted{}, err
	}
	m, err := p.authorizationToken(ctx, t, creds)
	if err != nil {
		return keychain.Minted{}, err
	}
	m.Provider += how
	return m, nil
}

// CacheScope shares one token among the registries of a partition and
// region (see target.scope).
func (p *Provider) CacheScope(reg registry.Registry, doc document.Document) string {
	t, err := targetFor(reg, doc)
	if err != nil {
		// Mint reports the error; keep such entries per host.
		return reg.Host
	}
	return t.scope()
}

// Invalidate drops the assumed-role session behind a credential a registry
// rejected, so the re-mint starts from a fresh session.
func (p *Provider) Invalidate(reg registry.Registry, doc document.Document) {
	if !doc.Has(document.KeyAWSRoleARN) {
		return
	}
	t, err := targetFor(reg, doc)
	if err != nil {
		return
	}
	role := strings.TrimSpace(doc.Get(document.KeyAWSRoleARN).Reveal())
	id := "ambient"
	if doc.Has(document.KeyAWSAccessKeyID) {
		id = hashParts("static", doc.Get(document.KeyAWSAccessKeyID).Reveal(),
			doc.Get(document.KeyAWSSecretKey).Reveal(), doc.Get(document.KeyAWSSessionToken).Reveal())
	}
	p.sessions.drop(sessionKey(id, role, t))
}

// endpoint is the override for an SDK service id ("ECR", "ECR_PUBLIC",
// "STS"): the option, else the SDK's standard variables.
func (p *Provider) endpoint(envName, opt string) string {
	if opt != "" {
		return opt
	}
	if strings.EqualFold(p.getenv("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS"), "true") {
		return ""
	}
	if v := p.getenv("AWS_ENDPOINT_URL_" + envName); v != "" {
		return v
	}
	return p.getenv("AWS_ENDPOINT_URL")
}

// applyEndpoint sets a client's endpoint: the override when there is one,
// else the FIPS / dual-stack variants the registry host asks for. The SDK
// refuses FIPS together with a custom endpoint, and an override is an
// explicit choice of endpoint anyway.
func (p *Provider) applyEndpoint(base **string, fips *awssdk.FIPSEndpointState, ds *awssdk.DualStackEndpointState, envName, opt string, t target) {
	if ep := p.endpoint(envName, opt); ep != "" {
		*base = awssdk.String(ep)
		return
	}
	if t.fips {
		*fips = awssdk.FIPSEndpointStateEnabled
	}
	if t.dualstack {
		*ds = awssdk.DualStackEndpointStateEnabled
	}
}
