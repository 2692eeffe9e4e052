package keychain

import (
	"container/list"
	"sync"
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

// entry is a cached credential and what refreshing it needs.
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
	elem       *list.Element
}

func (e *entry) expires() bool { return !e.cred.ExpiresAt.IsZero() }

// lru is a size-bounded map of entries, least recently used evicted first.
type lru struct {
	mu    sync.Mutex
	max   int
	items map[cacheKey]*entry
	order *list.List
}

func newLRU(max int) *lru {
	return &lru{max: max, items: make(map[cacheKey]*entry), order: list.New()}
}

func (c *lru) get(k cacheKey) *entry {
	e := c.items[k]
	if e != nil {
		c.order.MoveToFront(e.elem)
	}
	return e
}

func (c *lru) put(e *entry) {
	if old := c.items[e.key]; old != nil {
		c.order.Remove(old.elem)
	}
	e.elem = c.order.PushFront(e)
	c.items[e.key] = e
	for c.order.Len() > c.max {
		oldest := c.order.Back()
		c.order.Remove(oldest)
		delete(c.items, oldest.Value.(*entry).key)
	}
}

func (c *lru) remove(k cacheKey) {
	if e := c.items[k]; e != nil {
		c.order.Remove(e.elem)
		delete(c.items, k)
	}
}
