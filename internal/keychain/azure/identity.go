package azure

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/containerd/errdefs"

	"github.com/beam-cloud/b9-resolver/internal/keychain"
	"github.com/beam-cloud/b9-resolver/internal/keychain/document"
	"github.com/beam-cloud/b9-resolver/internal/keychain/registry"
	"github.com/beam-cloud/b9-resolver/internal/secret"
)

// DefaultIMDSEndpoint is Azure's instance metadata service, which hands a
// VM (or AKS node) the tokens of its managed identities.
const DefaultIMDSEndpoint = "http://169.254.169.254"

// imdsAPIVersion is the IMDS identity API version kubelet's ACR provider
// and the Azure SDKs use.
const imdsAPIVersion = "2018-02-01"

// managedIdentity mints with the node's managed identity: an AAD token
// from IMDS for the cloud's ACR audience, exchanged for the registry's
// refresh token. There is no basic-auth fallback: an identity has no
// secret to send.
func (p *Provider) managedIdentity(ctx context.Context, reg registry.Registry, doc document.Document) (keychain.Minted, error) {
	c := p.cloudFor(reg.Partition)
	aad, err := p.imdsToken(ctx, c.audience)
	if err != nil {
		return keychain.Minted{}, err
	}
	// The exchange wants the identity's tenant, which the node's document
	// need not know: the token says it.
	tenant := strings.TrimSpace(doc.Get(document.KeyAzureTenantID).Reveal())
	if tenant == "" {
		tenant = readClaims(aad).tid
	}
	refresh, err := p.exchange(ctx, reg, tenant, aad)
	if err == errNoExchange {
		return keychain.Minted{}, fmt.Errorf("ACR %s has no AAD exchange, which the node's managed identity needs: %w", reg.Host, errdefs.ErrNotImplemented)
	}
	if err != nil {
		return keychain.Minted{}, err
	}
	return keychain.Minted{
		Username: RefreshTokenUsername, Secret: secret.New(refresh), IdentityToken: true,
		ExpiresAt: p.refreshExpiry(refresh), Provider: "azure/managed-identity",
	}, nil
}

// imdsToken asks IMDS for the identity's AAD token for resource. IMDS
// answers 404 while it is updating and 429/5xx under load; those are
// retried. An identity the node does not have is a 400.
func (p *Provider) imdsToken(ctx context.Context, resource string) (string, error) {
	const api = "Azure IMDS managed identity token"
	q := url.Values{"api-version": {imdsAPIVersion}, "resource": {resource}}
	if p.identityClientID != "" {
		q.Set("client_id", p.identityClientID)
	}
	endpoint := p.imdsEndpoint()
	target := endpoint + "/metadata/identity/oauth2/token?" + q.Encode()
	var tok string
	var status int
	var rerr struct {
		Error       string `json:"error"`
		Description string `json:"error_description"`
	}
	n, err := keychain.Retry(ctx, p.retry, func(ctx context.Context) (bool, time.Duration, error) {
		var body []byte
		var wait time.Duration
		var err error
		status, body, wait, err = p.send(ctx, p.imdsHC, http.MethodGet, target, nil, "Metadata", "true")
		if err != nil {
			return false, 0, err
		}
		if status != http.StatusOK {
			_ = json.Unmarshal(body, &rerr)
			retry := status == http.StatusNotFound || status == http.StatusTooManyRequests || status >= 500
			return retry, wait, fmt.Errorf("HTTP %d", status)
		}
		var r struct {
			AccessToken string `json:"access_token"`
		}
		if json.Unmarshal(body, &r) != nil || r.AccessToken == "" {
			return false, 0, fmt.Errorf("%s: the answer has no access_token: %w", api, errdefs.ErrUnknown)
		}
		tok = r.AccessToken
		return false, 0, nil
	})
	switch {
	case err == nil:
		return tok, nil
	case status == 0 && ctx.Err() != nil:
		return "", fmt.Errorf("%s: no answer in time (%d attempts): %w", api, n, ctx.Err())
	case status == 0:
		return "", fmt.Errorf("%s: %s unreachable (is this an Azure VM with a managed identity?): %s: %w",
			api, endpoint, keychain.OneLine(err.Error(), 200), errdefs.ErrUnavailable)
	case status == http.StatusOK:
		return "", err
	case status == http.StatusNotFound:
		return "", fmt.Errorf("%s: IMDS not ready (HTTP 404, %d attempts)%s: %w", api, n, imdsDetail(rerr.Error, rerr.Description), errdefs.ErrUnavailable)
	}
	return "", &keychain.TokenEndpointError{API: api, Attempts: n, Status: status, Code: rerr.Error, Description: rerr.Description,
		Issuer: "IMDS", Credential: "the node's managed identity " + identityName(p.identityClientID)}
}

func (p *Provider) imdsEndpoint() string {
	e := p.imds
	if e == "" {
		// The variable Azure's SDKs read to move IMDS (AAD Pod Identity).
		e = p.getenv("AZURE_POD_IDENTITY_AUTHORITY_HOST")
	}
	if e == "" {
		e = DefaultIMDSEndpoint
	}
	return strings.TrimRight(e, "/")
}

func identityName(clientID string) string {
	if clientID == "" {
		return "(system-assigned)"
	}
	return strconv.Quote(clientID)
}

func imdsDetail(code, desc string) string {
	if code == "" && desc == "" {
		return ""
	}
	return ": " + keychain.OneLine(strings.TrimSpace(code+": "+desc), 200)
}
