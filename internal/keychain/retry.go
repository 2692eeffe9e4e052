package keychain

import (
	"context"
	"math/rand/v2"
	"time"
)

// RetryPolicy bounds how a provider retries a cloud token API that
// throttles or fails transiently. It lives here so the aws, gcp and azure
// providers back off the same way.
type RetryPolicy struct {
	// Attempts is the most calls made, the first included.
	Attempts int
	// Base is the wait after the first failure; it doubles up to Max.
	Base, Max time.Duration
}

// DefaultRetry spends at most ~3 s waiting (0.2+0.4+0.8+1.6 s before
// jitter): a throttled pull then fails naming the API that throttled, well
// inside the kubelet's 2-minute runtime timeout, instead of on a bare
// deadline; the keychain's background refresh retries later anyway.
var DefaultRetry = RetryPolicy{Attempts: 5, Base: 200 * time.Millisecond, Max: 5 * time.Second}

// Retry calls call until it succeeds, returns an error it does not mark
// retryable, the attempts are spent, or the next wait would end past ctx's
// deadline — a wait that cannot finish in time would only turn a clear
// "throttled" into "deadline exceeded". call reports whether its error may
// pass with time and the least wait the server asked for (Retry-After).
// Waits are exponential with jitter (half fixed, half random) so callers
// throttled together do not return together. Retry returns the number of
// calls made and the last error.
func Retry(ctx context.Context, p RetryPolicy, call func(context.Context) (retry bool, after time.Duration, err error)) (int, error) {
	if p.Attempts < 1 {
		p.Attempts = 1
	}
	wait := p.Base
	for n := 1; ; n++ {
		retry, after, err := call(ctx)
		if err == nil || !retry || n >= p.Attempts {
			return n, err
		}
		d := wait / 2
		if half := int64(wait - d); half > 0 {
			d += time.Duration(rand.Int64N(half))
		}
		d = max(d, after)
		if deadline, ok := ctx.Deadline(); ok && time.Now().Add(d).After(deadline) {
			return n, err
		}
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return n, err
		case <-t.C:
		}
		wait = min(wait*2, max(p.Max, p.Base))
	}
}
