package keychain

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestRetry(t *testing.T) {
	errBusy := errors.New("busy")
	p := RetryPolicy{Attempts: 4, Base: time.Millisecond, Max: 2 * time.Millisecond}
	tests := []struct {
		name    string
		ctx     func() (context.Context, context.CancelFunc)
		policy  RetryPolicy
		results []bool // per call: retryable failure (true) or success (false)
		after   time.Duration
		calls   int
		err     bool
		atLeast time.Duration
		atMost  time.Duration
	}{
		{name: "succeeds after retries", results: []bool{true, true, false}, calls: 3},
		{name: "gives up after the attempts", results: []bool{true, true, true, true, true}, calls: 4, err: true},
		{name: "honours Retry-After", results: []bool{true, false}, after: 60 * time.Millisecond, calls: 2, atLeast: 60 * time.Millisecond},
		{name: "stops when the next wait would pass the deadline", results: []bool{true, true, true}, calls: 1, err: true,
			policy: RetryPolicy{Attempts: 5, Base: time.Second, Max: time.Second}, atMost: 300 * time.Millisecond,
			ctx: func() (context.Context, context.CancelFunc) {
				return context.WithTimeout(context.Background(), 400*time.Millisecond)
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.Background(), context.CancelFunc(func() {})
			if tt.ctx != nil {
				ctx, cancel = tt.ctx()
			}
			defer cancel()
			pol := p
			if tt.policy.Attempts > 0 {
				pol = tt.policy
			}
			calls := 0
			start := time.Now()
			n, err := Retry(ctx, pol, func(context.Context) (bool, time.Duration, error) {
				r := tt.results[calls]
				calls++
				if r {
					return true, tt.after, errBusy
				}
				return false, 0, nil
			})
			took := time.Since(start)
			if n != tt.calls || calls != tt.calls || (err != nil) != tt.err {
				t.Errorf("n=%d calls=%d err=%v; want %d calls, err=%v", n, calls, err, tt.calls, tt.err)
			}
			if tt.err && !errors.Is(err, errBusy) {
				t.Errorf("returned %v, want the call's error", err)
			}
			if took < tt.atLeast || (tt.atMost > 0 && took > tt.atMost) {
				t.Errorf("took %v", took)
			}
		})
	}
	// A non-retryable error ends at once.
	n, err := Retry(context.Background(), p, func(context.Context) (bool, time.Duration, error) { return false, 0, errBusy })
	if n != 1 || !errors.Is(err, errBusy) {
		t.Errorf("non-retryable: n=%d err=%v", n, err)
	}
}
