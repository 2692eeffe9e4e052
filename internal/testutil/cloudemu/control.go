package cloudemu

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"sync"
	"time"
)

// Fault is what an emulated API does instead of answering normally.
type Fault int

const (
	// Throttle answers as the API does when rate limited (ECR's 400
	// ThrottlingException, STS's Throttling, Google's and AAD's 429).
	Throttle Fault = iota + 1
	// Unavailable answers 503.
	Unavailable
	// Deny rejects the call as the API does for a principal that may not
	// make it (AccessDenied, invalid_grant, invalid_client).
	Deny
	// NotFound answers 404 (an ACR that has no AAD exchange).
	NotFound
	// BadRequest answers 400 without a recognisable error code.
	BadRequest
	// IssueExpired answers normally with a token that has already expired
	// (for Google's expires_in, which cannot say "past", one that expires
	// in a second).
	IssueExpired
)

// DefaultLifetime is how long issued tokens live unless SetLifetime says
// otherwise.
const DefaultLifetime = time.Hour

type faultRule struct {
	fault Fault
	left  int // <0: until Heal
}

// Control is the part every emulator shares: call counters, injected
// faults, latency, the lifetime of issued tokens, and the record of which
// tokens exist and until when they are valid.
type Control struct {
	mu       sync.Mutex
	calls    map[string]int
	faults   map[string]*faultRule
	delay    time.Duration
	lifetime time.Duration
	tokens   map[string]time.Time
	issued   int
}

func newControl() *Control {
	return &Control{
		calls:    map[string]int{},
		faults:   map[string]*faultRule{},
		lifetime: DefaultLifetime,
		tokens:   map[string]time.Time{},
	}
}

// Calls is how many requests reached api (faulted ones included).
func (c *Control) Calls(api string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.calls[api]
}

// Fail makes the next times calls to api answer with f; times < 0 keeps
// failing until Heal.
func (c *Control) Fail(api string, f Fault, times int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.faults[api] = &faultRule{fault: f, left: times}
}

// Heal removes the faults of api, or of every API when api is "".
func (c *Control) Heal(api string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if api == "" {
		clear(c.faults)
		return
	}
	delete(c.faults, api)
}

// SetDelay makes every call wait d before it is answered.
func (c *Control) SetDelay(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.delay = d
}

// SetLifetime sets the life of tokens issued from now on.
func (c *Control) SetLifetime(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.lifetime = d
}

// Valid reports whether secret is a token this emulator issued and it is
// still valid at at.
func (c *Control) Valid(secret string, at time.Time) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	exp, ok := c.tokens[secret]
	return ok && at.Before(exp)
}

// ExpiresAt is when an issued token expires (zero if unknown).
func (c *Control) ExpiresAt(secret string) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.tokens[secret]
}

// Expire makes an issued token invalid from now on, as a registry sees a
// token that has passed its expiry or been revoked.
func (c *Control) Expire(secret string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.tokens[secret]; ok {
		c.tokens[secret] = time.Now()
	}
}

// Issued is how many tokens have been issued.
func (c *Control) Issued() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.issued
}

// begin counts a call to api, waits the configured delay (or until the
// request is cancelled) and returns the fault to apply, if any, and the
// lifetime for a token issued by this call.
func (c *Control) begin(ctx context.Context, api string) (Fault, time.Duration) {
	c.mu.Lock()
	c.calls[api]++
	var f Fault
	if r := c.faults[api]; r != nil {
		f = r.fault
		if r.left > 0 {
			r.left--
			if r.left == 0 {
				delete(c.faults, api)
			}
		}
	}
	delay, life := c.delay, c.lifetime
	c.mu.Unlock()
	if delay > 0 {
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
		case <-t.C:
		}
	}
	if f == IssueExpired {
		return 0, -time.Second
	}
	return f, life
}

// register records a token valid until exp.
func (c *Control) register(token string, exp time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.tokens[token] = exp
	c.issued++
}

// randomString is prefix and n random bytes in hex.
func randomString(prefix string, n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return prefix + hex.EncodeToString(b)
}
