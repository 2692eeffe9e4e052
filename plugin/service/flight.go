package service

import (
	"context"
	"sync"
)

// flightGroup makes concurrent pulls of one image (with the same
// credentials and snapshotter) share one pull, as kubelet starting many
// pods of one image at once would otherwise fetch it many times. Unlike
// singleflight, the shared pull runs on its own context, cancelled only
// when every caller waiting for it has gone: one impatient caller must
// not fail the others.
type flightGroup[T any] struct {
	mu sync.Mutex
	m  map[string]*flight[T]
}

type flight[T any] struct {
	done    chan struct{}
	val     T
	err     error
	waiters int
	cancel  context.CancelFunc
}

// do runs fn once for all concurrent callers with the same key. shared is
// true for callers that joined a pull already running.
func (g *flightGroup[T]) do(ctx context.Context, key string, fn func(context.Context) (T, error)) (val T, shared bool, err error) {
	g.mu.Lock()
	if g.m == nil {
		g.m = map[string]*flight[T]{}
	}
	f, running := g.m[key]
	if !running {
		// The pull keeps the first caller's values (logger, trace) but not
		// its deadline or cancellation.
		fctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		f = &flight[T]{done: make(chan struct{}), cancel: cancel}
		g.m[key] = f
		go func() {
			f.val, f.err = fn(fctx)
			cancel()
			g.mu.Lock()
			g.forget(key, f)
			g.mu.Unlock()
			close(f.done)
		}()
	}
	f.waiters++
	g.mu.Unlock()

	select {
	case <-f.done:
		return f.val, running, f.err
	case <-ctx.Done():
		g.mu.Lock()
		f.waiters--
		if f.waiters == 0 {
			// Nobody wants it any more; a caller arriving now starts anew
			// rather than joining a pull being cancelled.
			f.cancel()
			g.forget(key, f)
		}
		g.mu.Unlock()
		var zero T
		return zero, running, ctx.Err()
	}
}

// forget removes f from the map if it is still the flight for key.
func (g *flightGroup[T]) forget(key string, f *flight[T]) {
	if g.m[key] == f {
		delete(g.m, key)
	}
}
