package cloudemu

import (
	"context"
	"testing"
	"time"
)

// StreamResult is what Stream saw.
type StreamResult struct {
	// Resolutions counts resolve calls; Errors the ones that failed.
	Resolutions int
	Errors      []error
	// Invalid counts secrets that the emulator did not hold valid at the
	// moment resolve returned them.
	Invalid int
	// Distinct counts the different secrets handed out.
	Distinct int
	// First is the latency of the first call (the one that must mint).
	First time.Duration
	// Blocked counts calls after the first that took at least the block
	// threshold: calls that waited on a token request.
	Blocked int
	// MaxAfterFirst is the slowest call after the first.
	MaxAfterFirst time.Duration
}

// Stream calls resolve every interval for d and checks each secret it
// returns against valid at the moment it is returned. Give the emulator a
// delay of at least block so a call that waits on a token request is told
// apart from one served from a cache.
func Stream(ctx context.Context, d, interval, block time.Duration,
	resolve func(context.Context) (string, error), valid func(secret string, at time.Time) bool,
) StreamResult {
	var res StreamResult
	seen := map[string]bool{}
	end := time.Now().Add(d)
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for time.Now().Before(end) && ctx.Err() == nil {
		start := time.Now()
		s, err := resolve(ctx)
		took := time.Since(start)
		if res.Resolutions == 0 {
			res.First = took
		} else {
			res.MaxAfterFirst = max(res.MaxAfterFirst, took)
			if took >= block {
				res.Blocked++
			}
		}
		res.Resolutions++
		if err != nil {
			res.Errors = append(res.Errors, err)
		} else {
			if !valid(s, time.Now()) {
				res.Invalid++
			}
			if !seen[s] {
				seen[s] = true
				res.Distinct++
			}
		}
		select {
		case <-ctx.Done():
		case <-tick.C:
		}
	}
	return res
}

// CheckStream asserts what a Stream over ~10 s of 2 s tokens must show:
// no failures, no token used after the emulator stopped accepting it, a
// first call that waited on the token API (delay), no later call that did,
// and refreshes about every second (calls is the emulator's count).
func CheckStream(t testing.TB, r StreamResult, calls int, delay time.Duration) {
	t.Helper()
	t.Logf("%d resolutions, %d tokens, %d token calls, first %v, slowest after first %v",
		r.Resolutions, r.Distinct, calls, r.First, r.MaxAfterFirst)
	if len(r.Errors) > 0 {
		t.Errorf("%d resolutions failed, first: %v", len(r.Errors), r.Errors[0])
	}
	if r.Invalid > 0 {
		t.Errorf("%d resolutions returned a token the emulator no longer accepted", r.Invalid)
	}
	if r.First < delay {
		t.Errorf("first resolution took %v; it should have waited on the token call", r.First)
	}
	if r.Blocked > 0 {
		t.Errorf("%d resolutions after the first waited on a token call (slowest %v)", r.Blocked, r.MaxAfterFirst)
	}
	if r.Distinct < 5 || calls < 6 || calls > 14 {
		t.Errorf("%d distinct tokens from %d calls; want refreshes about every second", r.Distinct, calls)
	}
}
