package credclient

import (
	"testing"
	"time"
)

// An answer is reused until the TTL passes or a margin before its expiry,
// whichever is first; one already inside its margin is not kept at all.
func TestReuseUntil(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	for _, tc := range []struct {
		name    string
		expires time.Duration // from now; 0: no expiry
		want    time.Duration // from now; <= 0: not kept
	}{
		{"no expiry: the TTL", 0, DefaultCacheTTL},
		{"expiry far: the TTL", time.Hour, DefaultCacheTTL},
		{"expiry near: a tenth of the life before it", 20 * time.Second, 18 * time.Second},
		{"long life: at most maxMargin before it", 10 * time.Minute, DefaultCacheTTL},
		{"already expired: not kept", -time.Second, 0},
	} {
		cred := Credential{}
		if tc.expires != 0 {
			cred.ExpiresAt = now.Add(tc.expires)
		}
		got := reuseUntil(cred, now, DefaultCacheTTL).Sub(now)
		if (tc.want <= 0 && got > 0) || (tc.want > 0 && got != tc.want) {
			t.Errorf("%s: reused for %v, want %v", tc.name, got, tc.want)
		}
	}
	// The cache does not keep what reuseUntil puts at or before now.
	c := newAnswers(func() time.Time { return now })
	req := Request{Host: "registry.example", Repository: "team/app"}
	c.Add(req, Credential{Secret: "dying"}, reuseUntil(Credential{ExpiresAt: now}, now, DefaultCacheTTL))
	if _, ok := c.Lookup(req); ok {
		t.Fatal("an expired answer was kept")
	}
}
