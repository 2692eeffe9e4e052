package resolver

import (
	"net/http"
	"strings"
	"testing"

	"github.com/beam-cloud/b9-resolver/internal/testutil/keychaintest"
	"github.com/beam-cloud/b9-resolver/internal/testutil/registrytest"
)

// The request counts of the "done when": the first pull pays one
// 401 (the host's first contact), later pulls none; a re-pull of a present
// image is one manifest request; K pulls within a token's life make one
// token fetch. Each pull binds fresh Hosts, as every CRI pull does.
func TestPullRequestCounts(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts []registrytest.Option
		// tokens fetched by the first pull
		tokens int
	}{
		{"basic", []registrytest.Option{registrytest.WithBasicAuth()}, 0},
		{"token", []registrytest.Option{registrytest.WithTokenAuth()}, 1},
		// Docker Hub's shape: the token server on another host.
		{"token separate host", []registrytest.Option{registrytest.WithTokenAuth(), registrytest.WithSeparateTokenHost()}, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, logs := testContext(t)
			reg := registrytest.Start(t, append(tc.opts, registrytest.WithUser("alice", alicePass, "alice/app"))...)
			v1 := reg.PushRandomImage(t, "alice/app", "v1", "alice", alicePass)
			reg.PushRandomImage(t, "alice/app", "v2", "alice", alicePass)
			reg.Reset()

			kc := keychaintest.New(t)
			defer kc.Close()
			d := docs(t, [3]string{"", "alice", alicePass})
			res := mustNew(t)
			store := newStore(t)

			// 1. First pull: HEAD 401 (first contact), HEAD, manifest, config, 2 layers.
			if err := pull(ctx, res.Hosts(FromKeychain(kc, d)), v1.Ref, store); err != nil {
				t.Fatalf("first pull: %v", err)
			}
			reg1 := count(reg, onServer(registrytest.ServerRegistry))
			if reg1 != 6 || reg.Unauthorized() != 1 || reg.TokenFetches() != tc.tokens {
				t.Fatalf("first pull: %d registry requests, %d 401s, %d token fetches; want 6, 1, %d\n%s",
					reg1, reg.Unauthorized(), reg.TokenFetches(), tc.tokens, reg.Summary())
			}

			// 2. Another image of the same repository, new pull: no 401 and,
			// same scope and credential, no token fetch.
			reg.Reset()
			if err := pull(ctx, res.Hosts(FromKeychain(kc, d)), reg.Host+"/alice/app:v2", store); err != nil {
				t.Fatalf("second pull: %v", err)
			}
			if n := count(reg, onServer(registrytest.ServerRegistry)); n != 5 || reg.Unauthorized() != 0 || reg.TokenFetches() != 0 {
				t.Fatalf("second pull: %d registry requests, %d 401s, %d token fetches; want 5, 0, 0\n%s",
					n, reg.Unauthorized(), reg.TokenFetches(), reg.Summary())
			}
			if n := count(reg, onServer(registrytest.ServerRegistry), withoutAuth); n != 0 {
				t.Fatalf("%d requests went out without credentials:\n%s", n, reg.Summary())
			}

			// 3. Re-pull of a present image: one manifest request, authorised.
			reg.Reset()
			if err := pull(ctx, res.Hosts(FromKeychain(kc, d)), v1.Ref, store); err != nil {
				t.Fatalf("re-pull: %v", err)
			}
			if got := reg.Requests(); len(got) != 1 || !got[0].IsManifest() || got[0].Status != http.StatusOK || !got[0].HadAuth() {
				t.Fatalf("re-pull: want exactly one authorised 200 manifest request, got\n%s", reg.Summary())
			}

			// 4. K pulls into fresh stores: all layers again, no 401, no token.
			reg.Reset()
			const K = 5
			for i := 0; i < K; i++ {
				if err := pull(ctx, res.Hosts(FromKeychain(kc, d)), v1.Ref, newStore(t)); err != nil {
					t.Fatalf("pull %d: %v", i, err)
				}
			}
			if n := count(reg, onServer(registrytest.ServerRegistry)); n != 5*K || reg.Unauthorized() != 0 || reg.TokenFetches() != 0 {
				t.Fatalf("%d pulls: %d registry requests, %d 401s, %d token fetches; want %d, 0, 0\n%s",
					K, n, reg.Unauthorized(), reg.TokenFetches(), 5*K, reg.Summary())
			}
			if got := res.Authorizer().TokenFetches(); got != int64(tc.tokens) {
				t.Errorf("authorizer fetched %d tokens over %d pulls, want %d", got, K+3, tc.tokens)
			}
			noCanary(t, logs.String(), reg.Summary())
		})
	}
}

// A second user's credentials get a token of their own (the cache key holds
// the credential's fingerprint), and a user reaches only their repository:
// the other's fails with a permission error naming host and source.
func TestTokenPerCredential(t *testing.T) {
	ctx, logs := testContext(t)
	reg := registrytest.Start(t, registrytest.WithTokenAuth(),
		registrytest.WithUser("alice", alicePass, "alice/app"), registrytest.WithUser("bob", bobPass, "bob/app"))
	a := reg.PushRandomImage(t, "alice/app", "v1", "alice", alicePass)
	b := reg.PushRandomImage(t, "bob/app", "v1", "bob", bobPass)
	reg.Reset()
	kc := keychaintest.New(t)
	defer kc.Close()
	res := mustNew(t)
	alice := FromKeychain(kc, docs(t, [3]string{"", "alice", alicePass}))
	bob := FromKeychain(kc, docs(t, [3]string{"", "bob", bobPass}))

	if err := pull(ctx, res.Hosts(alice), a.Ref, newStore(t)); err != nil {
		t.Fatalf("alice: %v", err)
	}
	if err := pull(ctx, res.Hosts(bob), b.Ref, newStore(t)); err != nil {
		t.Fatalf("bob: %v", err)
	}
	if reg.TokenFetches() != 2 || reg.Unauthorized() != 1 {
		t.Fatalf("want 2 token fetches (one per user) and 1 401 (first contact):\n%s", reg.Summary())
	}
	reg.Reset()
	err := pull(ctx, res.Hosts(alice), b.Ref, newStore(t))
	if err == nil {
		t.Fatal("alice pulled bob's image")
	}
	msg := err.Error()
	for _, want := range []string{reg.Host, "image-credentials.test0", "insufficient_scope"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q does not name %q", msg, want)
		}
	}
	t.Logf("error: %s", msg)
	noCanary(t, msg, logs.String())
}
