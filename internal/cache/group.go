package cache

import (
	"context"
	"sync"
)

// Group runs one fetch per key for all concurrent callers. Unlike
// x/sync/singleflight, the fetch runs on a context of its own — the first
// caller's values (logger, trace) without its deadline or cancellation —
// so one impatient caller never fails the others: a caller whose context
// ends stops waiting, alone. The zero Group is ready to use.
type Group[K comparable, V any] struct {
	// CancelOrphans cancels a fetch once every caller waiting for it has
	// gone (a pull nobody wants any more). Off, a fetch runs to its end
	// (a credential mint whose result the cache keeps for the next caller).
	CancelOrphans bool

	mu sync.Mutex
	m  map[K]*call[V]
}

type call[V any] struct {
	done    chan struct{}
	val     V
	err     error
	waiters int
	cancel  context.CancelFunc
}

// Do returns fn's result for key, running fn only if no call for key is
// running. shared is true for callers that joined a running call. A
// caller whose ctx ends gets ctx.Err() at once; the call goes on.
func (g *Group[K, V]) Do(ctx context.Context, key K, fn func(context.Context) (V, error)) (val V, shared bool, err error) {
	g.mu.Lock()
	if g.m == nil {
		g.m = map[K]*call[V]{}
	}
	c, running := g.m[key]
	if !running {
		cctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		c = &call[V]{done: make(chan struct{}), cancel: cancel}
		g.m[key] = c
		go func() {
			defer close(c.done)
			defer func() {
				cancel()
				g.mu.Lock()
				g.forget(key, c)
				g.mu.Unlock()
			}()
			c.val, c.err = fn(cctx)
		}()
	}
	c.waiters++
	g.mu.Unlock()

	select {
	case <-c.done:
		return c.val, running, c.err
	case <-ctx.Done():
		g.mu.Lock()
		c.waiters--
		if c.waiters == 0 && g.CancelOrphans {
			// A caller arriving now starts anew rather than joining a call
			// being cancelled.
			c.cancel()
			g.forget(key, c)
		}
		g.mu.Unlock()
		var zero V
		return zero, running, ctx.Err()
	}
}

// forget removes c from the map if it is still the call for key.
func (g *Group[K, V]) forget(key K, c *call[V]) {
	if g.m[key] == c {
		delete(g.m, key)
	}
}
