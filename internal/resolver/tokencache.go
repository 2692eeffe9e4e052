package resolver

import (
	"time"

	"github.com/beam-cloud/b9-resolver/internal/cache"
)

// DefaultTokenLife is a token's life when the token server omits
// expires_in: the token spec says 60 s. (containerd instead keeps such a
// token forever, and learns of its expiry from a 401.)
const DefaultTokenLife = 60 * time.Second

// tokenKey identifies a bearer token: who it was minted for (the full
// sha256 of the presented credential, secret.Hash — never the secret, and
// never a truncated fingerprint two tenants could share), where it is
// valid (request host) and for what (the sorted scope set).
type tokenKey struct {
	host   string
	scopes string
	cred   string
}

// tokenCache is the bounded, expiring cache of "Bearer <token>" headers
// shared by all pulls: a token is served until a margin before its expiry
// (lifetimes), the least recently used goes first, and a missing one is
// fetched once for all concurrent requests.
type tokenCache = cache.Cache[tokenKey, string]

func newTokenCache(max int, now func() time.Time) *tokenCache {
	return cache.New[tokenKey, string](max, cache.WithClock(now))
}

// removeHeader drops whichever of host's tokens is header (a token the
// registry rejected, found without knowing the request's scopes); a token
// fetched since, by a concurrent request, is kept.
func removeHeader(c *tokenCache, host, header string) int {
	return c.RemoveFunc(func(k tokenKey, v string) bool { return k.host == host && v == header })
}

// lifetimes turns a token's reported life into when it expires and until
// when it is used: a tenth of the life is kept as margin (at most maxMargin)
// so a request is not sent with a token that dies on the way.
func lifetimes(now time.Time, life, maxMargin time.Duration) (expiresAt, usableUntil time.Time) {
	if life <= 0 {
		life = DefaultTokenLife
	}
	margin := cache.ExpiryMargin(life, maxMargin)
	return now.Add(life), now.Add(life - margin)
}
