package credclient

import (
	"testing"
	"time"
)

// An answer fetched before a Forget is not kept after it: the registry
// rejected that credential, and parallel reads must not get it back from
// a fetch that was already under way.
func TestForgetDropsAnswersFetchedBeforeIt(t *testing.T) {
	c := newCache(time.Minute)
	req := Request{Host: "registry.example", Repository: "team/app"}
	now := time.Now()

	before := c.generation()
	c.forget() // a registry rejected the cached credential meanwhile
	c.put(req, Credential{Username: "u", Secret: "OLD-REJECTED"}, now, before)
	if cred, ok := c.get(req, now); ok {
		t.Fatalf("an answer fetched before the forget was kept: %q", cred.Secret)
	}
	c.put(req, Credential{Username: "u", Secret: "fresh"}, now, c.generation())
	if cred, ok := c.get(req, now); !ok || cred.Secret != "fresh" {
		t.Fatalf("an answer fetched after the forget: %q %v", cred.Secret, ok)
	}
}
