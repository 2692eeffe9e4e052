package cache

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// clock is a settable time source.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func newClock() *clock { return &clock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)} }

func keys[K comparable, V any](c *Cache[K, V]) []K {
	var out []K
	for _, it := range c.Items() {
		out = append(out, it.Key)
	}
	return out
}

func TestEviction(t *testing.T) {
	for _, tc := range []struct {
		name string
		ops  func(c *Cache[string, int])
		want string // keys, most recently used first
	}{
		{"bounded, oldest out", func(c *Cache[string, int]) {
			c.Add("a", 1, time.Time{})
			c.Add("b", 2, time.Time{})
			c.Add("c", 3, time.Time{})
			c.Add("d", 4, time.Time{})
		}, "[d c b]"},
		{"a lookup makes an entry recent", func(c *Cache[string, int]) {
			c.Add("a", 1, time.Time{})
			c.Add("b", 2, time.Time{})
			c.Add("c", 3, time.Time{})
			c.Lookup("a")
			c.Add("d", 4, time.Time{})
		}, "[d a c]"},
		{"re-adding replaces and refreshes", func(c *Cache[string, int]) {
			c.Add("a", 1, time.Time{})
			c.Add("b", 2, time.Time{})
			c.Add("a", 10, time.Time{})
		}, "[a b]"},
		{"remove and remove by predicate", func(c *Cache[string, int]) {
			for i, k := range []string{"a", "b", "c"} {
				c.Add(k, i, time.Time{})
			}
			c.Remove("b")
			c.RemoveFunc(func(k string, v int) bool { return v == 2 })
		}, "[a]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := New[string, int](3)
			tc.ops(c)
			if got := fmt.Sprint(keys(c)); got != tc.want {
				t.Errorf("entries %s, want %s", got, tc.want)
			}
			if c.Len() != len(keys(c)) {
				t.Errorf("Len %d, entries %v", c.Len(), keys(c))
			}
		})
	}
	c := New[string, int](3)
	c.Add("a", 1, time.Time{})
	c.Add("a", 2, time.Time{})
	if v, _ := c.Lookup("a"); v != 2 || c.Len() != 1 {
		t.Errorf("re-add: %d, len %d", v, c.Len())
	}
}

func TestExpiry(t *testing.T) {
	clk := newClock()
	c := New[string, int](4, WithClock(clk.now))
	c.Add("short", 1, clk.now().Add(time.Second))
	c.Add("long", 2, clk.now().Add(time.Hour))
	c.Add("forever", 3, time.Time{})
	c.Add("stale", 4, clk.now()) // already expired: not stored
	if _, ok := c.Lookup("stale"); ok || c.Len() != 3 {
		t.Fatalf("an expired value was stored (len %d)", c.Len())
	}
	if v, ok := c.Lookup("short"); !ok || v != 1 {
		t.Fatalf("short before expiry: %d %v", v, ok)
	}
	clk.add(time.Second)
	if _, ok := c.Lookup("short"); ok {
		t.Fatal("short served at its expiry")
	}
	if got := fmt.Sprint(keys(c)); got != "[forever long]" {
		t.Errorf("items after expiry: %s", got)
	}
	clk.add(time.Hour)
	if _, ok := c.Lookup("long"); ok {
		t.Fatal("long served after its expiry")
	}
	if _, ok := c.Lookup("forever"); !ok {
		t.Fatal("an entry without expiry expired")
	}
	// Get fetches again once the value has expired.
	var fetches atomic.Int32
	fetch := func(context.Context) (int, time.Time, error) {
		return int(fetches.Add(1)), clk.now().Add(time.Minute), nil
	}
	for range 3 {
		c.Get(context.Background(), "k", fetch)
	}
	clk.add(time.Minute)
	if v, _ := c.Get(context.Background(), "k", fetch); v != 2 || fetches.Load() != 2 {
		t.Errorf("after expiry: value %d after %d fetches, want 2 after 2", v, fetches.Load())
	}
}

func TestConcurrentGetFetchesOnce(t *testing.T) {
	c := New[string, int](8)
	var fetches atomic.Int32
	release := make(chan struct{})
	fetch := func(context.Context) (int, time.Time, error) {
		fetches.Add(1)
		<-release
		return 42, time.Time{}, nil
	}
	const callers = 50
	var wg sync.WaitGroup
	errs := make(chan error, callers)
	for range callers {
		wg.Go(func() {
			v, err := c.Get(context.Background(), "k", fetch)
			if err != nil || v != 42 {
				errs <- fmt.Errorf("got %d %v", v, err)
			}
		})
	}
	time.Sleep(50 * time.Millisecond) // let them all join
	close(release)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := fetches.Load(); n != 1 {
		t.Errorf("%d fetches for %d concurrent callers, want 1", n, callers)
	}
	// An error reaches every caller and is not cached.
	boom := errors.New("boom")
	if _, err := c.Get(context.Background(), "e", func(context.Context) (int, time.Time, error) { return 0, time.Time{}, boom }); !errors.Is(err, boom) {
		t.Errorf("error: %v", err)
	}
	if v, err := c.Get(context.Background(), "e", func(context.Context) (int, time.Time, error) { return 7, time.Time{}, nil }); err != nil || v != 7 {
		t.Errorf("after an error: %d %v (was the error cached?)", v, err)
	}
}

// One waiter giving up cancels neither the shared fetch nor the others.
func TestCancelledWaiterLeavesTheFetch(t *testing.T) {
	c := New[string, int](8)
	started, release := make(chan struct{}), make(chan struct{})
	var fetchErr atomic.Value
	fetch := func(ctx context.Context) (int, time.Time, error) {
		close(started)
		select {
		case <-release:
		case <-ctx.Done():
			fetchErr.Store(ctx.Err())
			return 0, time.Time{}, ctx.Err()
		}
		return 42, time.Time{}, nil
	}
	impatient, cancel := context.WithCancel(context.Background())
	first := make(chan error, 1)
	go func() {
		_, err := c.Get(impatient, "k", fetch)
		first <- err
	}()
	<-started
	other := make(chan int, 1)
	go func() {
		v, _ := c.Get(context.Background(), "k", fetch)
		other <- v
	}()
	time.Sleep(20 * time.Millisecond)
	cancel()
	if err := <-first; !errors.Is(err, context.Canceled) {
		t.Fatalf("the cancelled waiter got %v, want context.Canceled at once", err)
	}
	close(release)
	if v := <-other; v != 42 {
		t.Fatalf("the other waiter got %d", v)
	}
	if err := fetchErr.Load(); err != nil {
		t.Fatalf("the shared fetch was cancelled: %v", err)
	}
	if v, ok := c.Lookup("k"); !ok || v != 42 {
		t.Fatalf("the fetch's value was not stored: %d %v", v, ok)
	}
	// The fetch keeps the first caller's values, not its deadline.
	type ctxKey struct{}
	dctx, dcancel := context.WithTimeout(context.WithValue(context.Background(), ctxKey{}, "v"), time.Hour)
	defer dcancel()
	c.Get(dctx, "values", func(ctx context.Context) (int, time.Time, error) {
		if _, has := ctx.Deadline(); has || ctx.Value(ctxKey{}) != "v" {
			t.Error("the fetch context carries the caller's deadline or lost its values")
		}
		return 1, time.Time{}, nil
	})
}

// With CancelOrphans, the call is cancelled once its last waiter has gone,
// and a caller arriving after starts a new one.
func TestGroupCancelOrphans(t *testing.T) {
	g := &Group[string, int]{CancelOrphans: true}
	cancelled := make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		g.Do(ctx, "k", func(ctx context.Context) (int, error) {
			<-ctx.Done()
			close(cancelled)
			return 0, ctx.Err()
		})
	}()
	time.Sleep(20 * time.Millisecond)
	cancel()
	<-done
	select {
	case <-cancelled:
	case <-time.After(5 * time.Second):
		t.Fatal("orphaned call not cancelled")
	}
	v, shared, err := g.Do(context.Background(), "k", func(context.Context) (int, error) { return 5, nil })
	if v != 5 || shared || err != nil {
		t.Fatalf("after the orphan: %d shared=%v %v", v, shared, err)
	}
}

// A Purge drops everything; a fetch that started before it answers its
// callers but does not store a value the purge was meant to drop.
func TestPurgeVersusRunningFetch(t *testing.T) {
	c := New[string, int](8)
	c.Add("a", 1, time.Time{})
	started, release := make(chan struct{}), make(chan struct{})
	got := make(chan int, 1)
	go func() {
		v, _ := c.Get(context.Background(), "k", func(context.Context) (int, time.Time, error) {
			close(started)
			<-release
			return 1, time.Time{}, nil
		})
		got <- v
	}()
	<-started
	c.Purge()
	// A caller after the purge does not join the old fetch.
	if v, _ := c.Get(context.Background(), "k", func(context.Context) (int, time.Time, error) { return 2, time.Time{}, nil }); v != 2 {
		t.Fatalf("a caller after Purge joined the fetch from before it: %d", v)
	}
	close(release)
	if v := <-got; v != 1 {
		t.Fatalf("the old fetch's caller got %d", v)
	}
	if v, _ := c.Lookup("k"); v != 2 {
		t.Fatalf("the fetch from before the purge overwrote the newer value: %d", v)
	}
	if _, ok := c.Lookup("a"); ok {
		t.Fatal("Purge kept an entry")
	}
}

func TestMarginRule(t *testing.T) {
	for _, tc := range []struct{ life, max, want time.Duration }{
		{time.Hour, 30 * time.Second, 30 * time.Second},
		{100 * time.Second, 30 * time.Second, 10 * time.Second},
		{0, 30 * time.Second, 0},
	} {
		if got := ExpiryMargin(tc.life, tc.max); got != tc.want {
			t.Errorf("ExpiryMargin(%v, %v) = %v, want %v", tc.life, tc.max, got, tc.want)
		}
	}
}

func BenchmarkLookupHit(b *testing.B) {
	c := New[string, int](1024)
	c.Add("k", 1, time.Now().Add(time.Hour))
	b.ReportAllocs()
	for b.Loop() {
		c.Lookup("k")
	}
}
