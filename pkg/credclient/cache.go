package credclient

import (
	"sync"
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

type cacheEntry struct {
	cred  Credential
	until time.Time
}

// cache maps a Request (comparable: no key building on the warm path) to
// an answer and the time it stops being reused.
type answerCache struct {
	mu  sync.RWMutex
	m   map[Request]cacheEntry
	ttl time.Duration
	// gen counts forgets: an answer fetched before one is not kept, and
	// callers after one do not join a fetch started before it.
	gen uint64
}

// generation is the current forget count.
func (c *answerCache) generation() uint64 {
	if c == nil {
		return 0
	}
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.gen
}

func newCache(ttl time.Duration) *answerCache {
	return &answerCache{m: map[Request]cacheEntry{}, ttl: ttl}
}

func (c *answerCache) get(req Request, now time.Time) (Credential, bool) {
	if c == nil {
		return Credential{}, false
	}
	c.mu.RLock()
	e, ok := c.m[req]
	c.mu.RUnlock()
	if !ok || !now.Before(e.until) {
		return Credential{}, false
	}
	return e.cred, true
}

// put keeps cred, fetched in generation gen, until the TTL passes or its
// expiry nears, whichever is first; a credential already inside its margin,
// or fetched before a forget, is not kept at all.
func (c *answerCache) put(req Request, cred Credential, now time.Time, gen uint64) {
	if c == nil {
		return
	}
	until := now.Add(c.ttl)
	if !cred.ExpiresAt.IsZero() {
		life := cred.ExpiresAt.Sub(now)
		end := cred.ExpiresAt.Add(-cache.ExpiryMargin(life, maxMargin))
		if end.Before(until) {
			until = end
		}
	}
	if !now.Before(until) {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if gen != c.gen {
		return
	}
	if len(c.m) >= maxEntries {
		for k, e := range c.m {
			if !now.Before(e.until) {
				delete(c.m, k)
			}
		}
		if len(c.m) >= maxEntries {
			clear(c.m)
		}
	}
	c.m[req] = cacheEntry{cred: cred, until: until}
}

// forget drops every cached answer (a registry rejected one).
func (c *answerCache) forget() {
	if c == nil {
		return
	}
	c.mu.Lock()
	clear(c.m)
	c.gen++
	c.mu.Unlock()
}
