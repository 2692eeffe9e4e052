package keychain

import (
	"time"

	"github.com/beam-cloud/b9-resolver/internal/keychain/document"
	"github.com/beam-cloud/b9-resolver/internal/keychain/registry"
	"github.com/beam-cloud/b9-resolver/internal/secret"
)

// Credential is what to present to a registry.
type Credential struct {
	// Registry is the registry the credential is for.
	Registry registry.Registry
	// Type is the source document's type ("" when no document applied).
	Type document.Type
	// Source names where the source credential came from: an annotation
	// key, "auth", a node-config source, or "none".
	Source string
	// Provider names what minted it ("basic", "token/ngc", "aws/ecr"...).
	Provider string
	// Username is the registry username ("" for anonymous or identity tokens).
	Username string
	// Secret is the password or token. Empty when Anonymous.
	Secret secret.Secret
	// IdentityToken marks Secret as an OAuth2 refresh token (ACR) to be
	// exchanged at the registry's token endpoint rather than sent as basic.
	IdentityToken bool
	// Anonymous is an explicit "no credentials": a public document, or no
	// document at all.
	Anonymous bool
	// ExpiresAt is when the registry stops accepting Secret; zero if never.
	ExpiresAt time.Time
	// SourceFingerprint shows the source credential: a keyed fingerprint
	// (secret.Fingerprinter) of the document's Identity, the same across
	// re-mints. For display only; empty when nothing may be shown.
	SourceFingerprint string
	// SecretFingerprint shows the minted Secret the same way; empty for
	// no secret.
	SecretFingerprint string
	// Ref is the opaque cache-entry id: an HMAC (RefPrefix, 64 hex digits)
	// of the registry identity, type and source identity under the
	// Keychain's ref key (WithRefKey). Safe to store in labels and log.
	Ref string
}

// Valid reports whether c can still be presented at now.
func (c Credential) Valid(now time.Time) bool {
	return c.ExpiresAt.IsZero() || now.Before(c.ExpiresAt)
}

// Minted is what a Provider returns.
type Minted struct {
	Username      string
	Secret        secret.Secret
	IdentityToken bool
	Anonymous     bool
	// ExpiresAt is the credential's real expiry; zero means it does not expire.
	ExpiresAt time.Time
	// Provider overrides the provider's name for display ("token/ngc").
	Provider string
}
