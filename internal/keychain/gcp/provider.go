package gcp

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/beam-cloud/b9-resolver/internal/keychain"
	"github.com/beam-cloud/b9-resolver/internal/keychain/document"
	"github.com/beam-cloud/b9-resolver/internal/keychain/registry"
)

// Username is what Google registries take with an access token.
const Username = "oauth2accesstoken"

// Provider mints Google access tokens for GCR and Artifact Registry. Use New.
type Provider struct {
	hc              *http.Client
	metadataHC      *http.Client // hc without a proxy (keychain.WithoutProxy)
	ambient         bool
	scopes          []string
	retry           keychain.RetryPolicy
	minLife         time.Duration
	accessTokenLife time.Duration
	keyDirs         []string
	tokenURIOK      func(*url.URL) bool
	now             func() time.Time
}

var (
	_ keychain.Provider = (*Provider)(nil)
	_ keychain.Scoper   = (*Provider)(nil)
)

// New returns the provider for type gcp.
func New(opts ...Option) (keychain.Provider, error) {
	p := defaults()
	p.now = time.Now
	for _, o := range opts {
		if err := o(p); err != nil {
			return nil, err
		}
	}
	p.metadataHC = keychain.WithoutProxy(p.hc)
	return p, nil
}

func (*Provider) Type() document.Type { return document.TypeGCP }

// Mint prefers a service-account key (it can be re-minted) to a bare
// access token (it cannot), and uses the node's identity only for a node
// document with neither.
func (p *Provider) Mint(ctx context.Context, reg registry.Registry, doc document.Document) (keychain.Minted, error) {
	switch reg.Kind {
	case registry.KindGCR, registry.KindGAR, registry.KindGeneric:
	default:
		return keychain.Minted{}, &document.Error{Source: doc.Source, Field: "type",
			Reason: fmt.Sprintf("type gcp cannot make credentials for %s, a %s registry", reg.Host, reg.Kind)}
	}
	switch {
	case doc.Has(document.KeyGoogleAppCreds):
		return p.serviceAccount(ctx, doc)
	case doc.Has(document.KeyGCPAccessToken):
		// A raw token cannot be refreshed and its expiry is unknown: assume
		// Google's default life from now. When it lapses the keychain asks
		// again and gets the same token — only a new document can help, and
		// the registry's 401 says so.
		return keychain.Minted{Username: Username, Secret: doc.Get(document.KeyGCPAccessToken),
			ExpiresAt: p.now().Add(p.accessTokenLife), Provider: "gcp/access-token"}, nil
	case !doc.Node:
		// The node's identity is a node credential source only: a
		// pod's document never reaches it, whatever the node enables.
		return keychain.Minted{}, &document.Error{Source: doc.Source, Field: "credentials." + document.KeyGoogleAppCreds,
			Reason: "missing; a pod's gcp document needs a service-account key or GCP_ACCESS_TOKEN (the node's own identity is only for node credentials)"}
	case p.ambient:
		if err := keychain.AmbientFor(reg, doc, "metadata-server identity", registry.KindGCR, registry.KindGAR); err != nil {
			return keychain.Minted{}, err
		}
		return p.metadataToken(ctx)
	}
	return keychain.Minted{}, &document.Error{Source: doc.Source, Field: "credentials." + document.KeyGoogleAppCreds,
		Reason: "missing; type gcp needs a service-account key or GCP_ACCESS_TOKEN (this node does not lend its own identity; cloud.ambient)"}
}

// CacheScope is one scope for every Google registry: an access token opens
// all of them to its principal.
func (*Provider) CacheScope(registry.Registry, document.Document) string { return "gcp" }
