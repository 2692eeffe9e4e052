package service

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestKeyedLocksExcludePerKey(t *testing.T) {
	k := newKeyedLocks()
	ctx := context.Background()
	var inside, most atomic.Int32
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := k.Lock(ctx, "layer"); err != nil {
				t.Error(err)
				return
			}
			n := inside.Add(1)
			for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
			}
			time.Sleep(time.Millisecond)
			inside.Add(-1)
			k.Unlock("layer")
		}()
	}
	wg.Wait()
	if most.Load() != 1 {
		t.Errorf("%d holders of one key at once, want 1", most.Load())
	}
	// Another key is not held up by a held one.
	if err := k.Lock(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	short, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	if err := k.Lock(short, "b"); err != nil {
		t.Fatalf("key b waited for key a: %v", err)
	}
	k.Unlock("a")
	k.Unlock("b")
	if len(k.locks) != 0 {
		t.Errorf("%d entries left after every unlock", len(k.locks))
	}
}

func TestKeyedLocksCancelledWait(t *testing.T) {
	k := newKeyedLocks()
	if err := k.Lock(context.Background(), "layer"); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := k.Lock(ctx, "layer"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("waiting on a held key past the deadline: %v", err)
	}
	k.Unlock("layer")
	if len(k.locks) != 0 {
		t.Errorf("%d entries left: a cancelled waiter must not keep the key", len(k.locks))
	}
	// The key is free again.
	if err := k.Lock(context.Background(), "layer"); err != nil {
		t.Fatal(err)
	}
	k.Unlock("layer")
}
