package keychain

import (
	"time"

	"github.com/beam-cloud/b9-resolver/internal/keychain/document"
	"github.com/beam-cloud/b9-resolver/internal/keychain/registry"
)

// cacheKey is what makes two resolutions share a credential: the
// registry identity (host, or a provider's wider scope), the document type
// and the source credential's full-length identity (Document.Identity,
// never the 12-digit display fingerprint). Tenants with different secrets
// never share an entry, whatever the host.
type cacheKey struct {
	scope    string
	typ      document.Type
	identity string
}

func (k cacheKey) String() string { return k.scope + "\x00" + string(k.typ) + "\x00" + k.identity }

// entry is a cached credential and what refreshing it needs. The cache
// (internal/cache) keeps it until usableUntil; the refresh state is
// guarded by Keychain.stateMu.
type entry struct {
	key  cacheKey
	cred Credential
	// reg and doc are the source, kept to re-mint in the background.
	reg registry.Registry
	doc document.Document
	// usableUntil is ExpiresAt less a safety margin; past it the entry is
	// never served.
	usableUntil time.Time
	// refreshAt is when a background refresh starts (or is retried).
	refreshAt  time.Time
	refreshing bool
	failures   int
}

func (e *entry) expires() bool { return !e.cred.ExpiresAt.IsZero() }
