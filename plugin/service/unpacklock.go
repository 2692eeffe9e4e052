package service

import (
	"context"
	"sync"

	"golang.org/x/sync/semaphore"
)

// keyedLocks is the duplication suppressor direct pulls give containerd's
// unpacker (the shape of its internal kmutex.KeyedLocker, which cannot be
// imported): one lock per key, so concurrent pulls of images that share a
// layer unpack it once and the others wait for its snapshot, as in CRI's
// pulls. A key's entry lives while someone holds or waits for it.
type keyedLocks struct {
	mu    sync.Mutex
	locks map[string]*keyedLock
}

type keyedLock struct {
	sem *semaphore.Weighted
	// refs counts holders and waiters.
	refs int
}

func newKeyedLocks() *keyedLocks { return &keyedLocks{locks: map[string]*keyedLock{}} }

// Lock waits for key's lock or for ctx to end.
func (k *keyedLocks) Lock(ctx context.Context, key string) error {
	k.mu.Lock()
	l := k.locks[key]
	if l == nil {
		l = &keyedLock{sem: semaphore.NewWeighted(1)}
		k.locks[key] = l
	}
	l.refs++
	k.mu.Unlock()
	if err := l.sem.Acquire(ctx, 1); err != nil {
		k.release(key, l)
		return err
	}
	return nil
}

// Unlock releases key's lock, held by the caller.
func (k *keyedLocks) Unlock(key string) {
	k.mu.Lock()
	l := k.locks[key]
	k.mu.Unlock()
	if l == nil {
		panic("b9-resolver: unlock of a key not locked")
	}
	l.sem.Release(1)
	k.release(key, l)
}

func (k *keyedLocks) release(key string, l *keyedLock) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if l.refs--; l.refs == 0 {
		delete(k.locks, key)
	}
}
