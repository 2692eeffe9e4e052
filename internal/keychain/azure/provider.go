package azure

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/beam-cloud/b9-resolver/internal/keychain"
	"github.com/beam-cloud/b9-resolver/internal/keychain/document"
	"github.com/beam-cloud/b9-resolver/internal/keychain/registry"
	"github.com/beam-cloud/b9-resolver/internal/secret"
)

// RefreshTokenUsername goes with an ACR refresh token.
const RefreshTokenUsername = "00000000-0000-0000-0000-000000000000"

// Provider mints ACR credentials. Use New.
type Provider struct {
	hc        *http.Client
	authority string
	// ambient, identityClientID and imds: the node's managed identity.
	ambient          bool
	identityClientID string
	imds             string
	imdsHC           *http.Client // hc without a proxy (keychain.WithoutProxy)
	getenv           func(string) string
	retry            keychain.RetryPolicy
	now              func() time.Time
}

var _ keychain.Provider = (*Provider)(nil)

// New returns the provider for type azure.
func New(opts ...Option) (keychain.Provider, error) {
	p := defaults()
	for _, o := range opts {
		if err := o(p); err != nil {
			return nil, err
		}
	}
	p.imdsHC = keychain.WithoutProxy(p.hc)
	return p, nil
}

func (*Provider) Type() document.Type { return document.TypeAzure }

// Mint exchanges the principal for a refresh token of reg, or falls back
// to the principal as basic auth where the exchange is not possible.
func (p *Provider) Mint(ctx context.Context, reg registry.Registry, doc document.Document) (keychain.Minted, error) {
	switch reg.Kind {
	case registry.KindACR, registry.KindGeneric:
	default:
		return keychain.Minted{}, &document.Error{Source: doc.Source, Field: "type",
			Reason: fmt.Sprintf("type azure cannot make credentials for %s, a %s registry", reg.Host, reg.Kind)}
	}
	if !doc.Has(document.KeyAzureClientID) || !doc.Has(document.KeyAzureClientSecret) {
		switch {
		case !doc.Node:
			// The node's identity is a node credential source only.
			return keychain.Minted{}, &document.Error{Source: doc.Source, Field: "credentials." + document.KeyAzureClientID,
				Reason: "missing; a pod's azure document needs AZURE_CLIENT_ID and AZURE_CLIENT_SECRET (the node's managed identity is only for node credentials)"}
		case p.ambient:
			if err := keychain.AmbientFor(reg, doc, "managed identity", registry.KindACR); err != nil {
				return keychain.Minted{}, err
			}
			return p.managedIdentity(ctx, reg, doc)
		}
		return keychain.Minted{}, &document.Error{Source: doc.Source, Field: "credentials." + document.KeyAzureClientID,
			Reason: "missing; type azure needs AZURE_CLIENT_ID and AZURE_CLIENT_SECRET (this node does not lend its managed identity; cloud.ambient)"}
	}
	clientID := strings.TrimSpace(doc.Get(document.KeyAzureClientID).Reveal())
	sp := keychain.Minted{Username: clientID, Secret: doc.Get(document.KeyAzureClientSecret), Provider: "azure/service-principal"}
	tenant := strings.TrimSpace(doc.Get(document.KeyAzureTenantID).Reveal())
	if tenant == "" {
		// The exchange needs the tenant; ACR takes the principal directly.
		return sp, nil
	}
	if !validTenant(tenant) {
		return keychain.Minted{}, &document.Error{Source: doc.Source, Field: "credentials." + document.KeyAzureTenantID,
			Reason: "not a tenant id or domain (want letters, digits, dots and dashes)"}
	}
	c := p.cloudFor(reg.Partition)
	aad, err := p.aadToken(ctx, c, tenant, clientID, doc.Get(document.KeyAzureClientSecret))
	if err != nil {
		return keychain.Minted{}, err
	}
	refresh, err := p.exchange(ctx, reg, tenant, aad)
	if err == errNoExchange {
		sp.Provider = "azure/service-principal (registry has no AAD exchange)"
		return sp, nil
	}
	if err != nil {
		return keychain.Minted{}, err
	}
	return keychain.Minted{
		Username: RefreshTokenUsername, Secret: secret.New(refresh), IdentityToken: true,
		ExpiresAt: p.refreshExpiry(refresh), Provider: "azure/acr-exchange",
	}, nil
}

func validTenant(t string) bool {
	return len(t) <= 256 && strings.Trim(strings.ToLower(t), "abcdefghijklmnopqrstuvwxyz0123456789.-") == ""
}
