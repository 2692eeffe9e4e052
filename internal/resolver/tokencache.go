package resolver

import (
	"container/list"
	"sync"
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

func (k tokenKey) String() string { return k.host + "\x00" + k.scopes + "\x00" + k.cred }

type tokenEntry struct {
	key tokenKey
	// header is the ready Authorization value ("Bearer ..."), built once.
	header      string
	expiresAt   time.Time
	usableUntil time.Time
}

// tokenCache is a bounded LRU of bearer tokens shared by all pulls.
type tokenCache struct {
	mu    sync.Mutex
	max   int
	m     map[tokenKey]*list.Element
	order list.List // front = most recently used
}

func newTokenCache(max int) *tokenCache {
	return &tokenCache{max: max, m: make(map[tokenKey]*list.Element)}
}

// get returns the header of a token still usable at now.
func (c *tokenCache) get(k tokenKey, now time.Time) (string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.m[k]
	if !ok {
		return "", false
	}
	e := el.Value.(*tokenEntry)
	if !now.Before(e.usableUntil) {
		// Leave it: a fetch will replace it, and removing here would race
		// with that fetch's put for no gain.
		return "", false
	}
	c.order.MoveToFront(el)
	return e.header, true
}

func (c *tokenCache) put(e *tokenEntry) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.m[e.key]; ok {
		el.Value = e
		c.order.MoveToFront(el)
		return
	}
	c.m[e.key] = c.order.PushFront(e)
	for c.order.Len() > c.max {
		old := c.order.Back()
		c.order.Remove(old)
		delete(c.m, old.Value.(*tokenEntry).key)
	}
}

// remove drops k if it still holds header: a token fetched by a concurrent
// request after the rejected one was sent is kept.
func (c *tokenCache) remove(k tokenKey, header string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.m[k]
	if !ok || el.Value.(*tokenEntry).header != header {
		return false
	}
	c.order.Remove(el)
	delete(c.m, k)
	return true
}

// removeHeader drops whichever entries hold header (a token the registry
// rejected, found without knowing the request's scopes).
func (c *tokenCache) removeHeader(host, header string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for k, el := range c.m {
		if k.host == host && el.Value.(*tokenEntry).header == header {
			c.order.Remove(el)
			delete(c.m, k)
			n++
		}
	}
	return n
}

func (c *tokenCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.order.Len()
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
