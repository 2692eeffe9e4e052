package resolver

import (
	"context"
	"fmt"

	transfer "github.com/containerd/containerd/v2/core/transfer/registry"

	"github.com/beam-cloud/b9-resolver/internal/keychain"
	"github.com/beam-cloud/b9-resolver/internal/keychain/registry"
)

// CredentialHelper adapts a pull's Credentials to the transfer service's
// registry.CredentialHelper, so client.Transfer pulls (and ctr's default
// pull path) use the keychain too, with the same mirror rules as Hosts.
//
// The transfer service builds containerd's own authorizer from what this
// returns, so such pulls do not share the Resolver's challenge and token
// cache; only direct pulls through Hosts do.
func (r *Resolver) CredentialHelper(creds Credentials) transfer.CredentialHelper {
	if creds == nil {
		creds = Anonymous
	}
	return &credentialHelper{r: r, creds: creds}
}

type credentialHelper struct {
	r     *Resolver
	creds Credentials
}

var _ transfer.CredentialHelper = (*credentialHelper)(nil)

// GetCredentials returns the credential for host (a request host: the
// registry, its API host, or a mirror) while pulling ref.
func (c *credentialHelper) GetCredentials(ctx context.Context, ref, host string) (transfer.Credentials, error) {
	canonical, err := registry.NormalizeHost(host)
	if err != nil {
		return transfer.Credentials{}, fmt.Errorf("registry host: %w", err)
	}
	upstream := c.r.detector.Detect(canonical)
	if ref != "" {
		parsed, err := c.r.detector.ParseReference(ref)
		if err != nil {
			return transfer.Credentials{}, err
		}
		upstream = parsed.Registry
	}
	mirror := canonical != upstream.Host
	cred, err := c.creds.Credential(ctx, c.r.detector.Detect(canonical), mirror)
	if err != nil {
		return transfer.Credentials{}, fmt.Errorf("credentials for %s: %w", host, err)
	}
	// Only when no document names the mirror: a public document naming it
	// is an explicit anonymous, which never falls back.
	if mirror && cred.Source == keychain.SourceNone && c.r.trusted[canonical] {
		if cred, err = c.creds.Credential(ctx, upstream, false); err != nil {
			return transfer.Credentials{}, fmt.Errorf("credentials of %s for its mirror %s: %w", upstream.Host, host, err)
		}
	}
	out := transfer.Credentials{Host: host}
	if cred.Anonymous || cred.Secret.IsZero() {
		return out, nil
	}
	// containerd's authorizer treats an empty username with a secret as a
	// refresh token (OAuth2 grant_type=refresh_token).
	if !cred.IdentityToken {
		out.Username = cred.Username
	}
	out.Secret = cred.Secret.Reveal()
	return out, nil
}
