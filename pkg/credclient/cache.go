package credclient

import (
	"time"

	"github.com/beam-cloud/b9-resolver/internal/cache"
)

// Cache policy defaults.
const (
	// DefaultCacheTTL bounds how long an answer is reused even when it does
	// not expire: a newer pull may have recorded another credential for the
	// same repository, and it should win within this time.
	DefaultCacheTTL = 30 * time.Second
	// maxMargin is the most an answer is retired before its expiry, so a
	// token is never presented in its last moments (clock skew, a slow
	// request). Short lives use a tenth of the life.
	maxMargin = 30 * time.Second
	// maxEntries bounds the cache: a node mounts few images at once.
	maxEntries = 1024
)

// answers caches the service's answers by Request (comparable: no key
// building on the warm path), each until the TTL passes or its expiry
// nears, whichever is first.
type answers = cache.Cache[Request, Credential]

func newAnswers(now func() time.Time) *answers {
	return cache.New[Request, Credential](maxEntries, cache.WithClock(now))
}

// reuseUntil is when an answer fetched at now stops being reused; one
// already inside its margin is not kept at all (the cache drops a time
// not after now).
func reuseUntil(cred Credential, now time.Time, ttl time.Duration) time.Time {
	until := now.Add(ttl)
	if !cred.ExpiresAt.IsZero() {
		life := cred.ExpiresAt.Sub(now)
		if end := cred.ExpiresAt.Add(-cache.ExpiryMargin(life, maxMargin)); end.Before(until) {
			until = end
		}
	}
	return until
}
