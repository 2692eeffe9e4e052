package cache

import (
	"context"
	"sync"
	"time"
)

// Cache is a bounded map whose entries expire: past its expiry an entry is
// never returned, and beyond Max entries the least recently used goes
// first. Get fetches a missing key once for every concurrent caller
// (Group). Safe for concurrent use.
type Cache[K comparable, V any] struct {
	max   int
	now   func() time.Time
	group Group[fetchKey[K], V]

	mu    sync.Mutex
	items map[K]*node[K, V]
	// root is the sentinel of the recency ring: root.next is the most
	// recently used entry, root.prev the least.
	root node[K, V]
	// gen counts Purges: a fetch started before one neither stores its
	// value nor is joined by callers after it.
	gen uint64
}

type node[K comparable, V any] struct {
	key        K
	val        V
	expires    time.Time // zero: never
	prev, next *node[K, V]
}

type fetchKey[K comparable] struct {
	key K
	gen uint64
}

// Option configures a Cache.
type Option func(*options)

type options struct{ now func() time.Time }

// WithClock replaces time.Now (tests).
func WithClock(now func() time.Time) Option { return func(o *options) { o.now = now } }

// New returns a cache of at most max entries; max must be positive.
func New[K comparable, V any](max int, opts ...Option) *Cache[K, V] {
	if max <= 0 {
		panic("cache.New: max must be positive")
	}
	o := options{now: time.Now}
	for _, opt := range opts {
		opt(&o)
	}
	c := &Cache[K, V]{max: max, now: o.now, items: map[K]*node[K, V]{}}
	c.root.next, c.root.prev = &c.root, &c.root
	return c
}

// Lookup returns key's value while it has not expired, marking it the
// most recently used.
func (c *Cache[K, V]) Lookup(key K) (V, bool) {
	now := c.now()
	c.mu.Lock()
	defer c.mu.Unlock()
	n, ok := c.items[key]
	if !ok {
		var zero V
		return zero, false
	}
	if !n.expires.IsZero() && !now.Before(n.expires) {
		c.unlink(n)
		var zero V
		return zero, false
	}
	c.moveToFront(n)
	return n.val, true
}

// Add stores val under key until expires (zero: no expiry), evicting the
// least recently used entries beyond the bound. A value already expired is
// not stored (and replaces nothing).
func (c *Cache[K, V]) Add(key K, val V, expires time.Time) {
	c.add(key, val, expires, nil)
}

// add stores val unless gen is set and a Purge came since.
func (c *Cache[K, V]) add(key K, val V, expires time.Time, gen *uint64) {
	if !expires.IsZero() && !c.now().Before(expires) {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if gen != nil && *gen != c.gen {
		return
	}
	if old, ok := c.items[key]; ok {
		c.unlink(old)
	}
	n := &node[K, V]{key: key, val: val, expires: expires}
	c.items[key] = n
	c.pushFront(n)
	for len(c.items) > c.max {
		c.unlink(c.root.prev)
	}
}

// Remove drops key; it reports whether it was there.
func (c *Cache[K, V]) Remove(key K) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	n, ok := c.items[key]
	if ok {
		c.unlink(n)
	}
	return ok
}

// RemoveFunc drops every entry drop returns true for and returns how many
// it dropped. drop runs with the cache locked: it must not call the cache.
func (c *Cache[K, V]) RemoveFunc(drop func(K, V) bool) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	dropped := 0
	for k, n := range c.items {
		if drop(k, n.val) {
			c.unlink(n)
			dropped++
		}
	}
	return dropped
}

// Purge drops every entry. Fetches running now still answer their
// callers, but do not store their values, and callers from now on start
// fetches of their own.
func (c *Cache[K, V]) Purge() {
	c.mu.Lock()
	defer c.mu.Unlock()
	clear(c.items)
	c.root.next, c.root.prev = &c.root, &c.root
	c.gen++
}

// Item is an entry as Items lists it.
type Item[K comparable, V any] struct {
	Key     K
	Value   V
	Expires time.Time
}

// Items lists the entries that have not expired, most recently used first.
func (c *Cache[K, V]) Items() []Item[K, V] {
	now := c.now()
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]Item[K, V], 0, len(c.items))
	for n := c.root.next; n != &c.root; n = n.next {
		if n.expires.IsZero() || now.Before(n.expires) {
			out = append(out, Item[K, V]{Key: n.key, Value: n.val, Expires: n.expires})
		}
	}
	return out
}

// Len is the number of entries, expired ones not yet dropped included.
func (c *Cache[K, V]) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.items)
}

// Fetcher makes a missing value and says until when it may be served
// (zero: no expiry). An error is returned to the callers and not cached.
type Fetcher[V any] func(ctx context.Context) (V, time.Time, error)

// Get returns key's value: from the cache while it has not expired, else
// from fetch — run once for all concurrent callers of key, on a context
// that no caller's cancellation or deadline ends (fetch bounds itself), and
// stored. A caller whose ctx ends gets ctx.Err() at once; the fetch goes
// on for the others and for the cache.
func (c *Cache[K, V]) Get(ctx context.Context, key K, fetch Fetcher[V]) (V, error) {
	if v, ok := c.Lookup(key); ok {
		return v, nil
	}
	return c.fetch(ctx, key, fetch, true)
}

// Fetch is Get without the lookup: it fetches (or joins the running fetch
// of key) and stores the result, whatever the cache holds — a refresh.
func (c *Cache[K, V]) Fetch(ctx context.Context, key K, fetch Fetcher[V]) (V, error) {
	return c.fetch(ctx, key, fetch, false)
}

// fetch runs fetch once for key's concurrent callers; with recheck, a
// value a fetch that just finished stored is taken instead.
func (c *Cache[K, V]) fetch(ctx context.Context, key K, fetch Fetcher[V], recheck bool) (V, error) {
	c.mu.Lock()
	gen := c.gen
	c.mu.Unlock()
	v, _, err := c.group.Do(ctx, fetchKey[K]{key, gen}, func(ctx context.Context) (V, error) {
		if recheck {
			if v, ok := c.Lookup(key); ok {
				return v, nil
			}
		}
		v, expires, err := fetch(ctx)
		if err == nil {
			c.add(key, v, expires, &gen)
		}
		return v, err
	})
	return v, err
}

func (c *Cache[K, V]) pushFront(n *node[K, V]) {
	n.prev, n.next = &c.root, c.root.next
	c.root.next.prev = n
	c.root.next = n
}

func (c *Cache[K, V]) moveToFront(n *node[K, V]) {
	if c.root.next == n {
		return
	}
	n.prev.next, n.next.prev = n.next, n.prev
	c.pushFront(n)
}

// unlink removes n from the ring and the map.
func (c *Cache[K, V]) unlink(n *node[K, V]) {
	n.prev.next, n.next.prev = n.next, n.prev
	n.prev, n.next = nil, nil
	delete(c.items, n.key)
}
