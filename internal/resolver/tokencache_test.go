package resolver

import (
	"context"
	"net/http"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/core/remotes/docker"

	"github.com/beam-cloud/b9-resolver/internal/keychain"
	"github.com/beam-cloud/b9-resolver/internal/keychain/registry"
	"github.com/beam-cloud/b9-resolver/internal/secret"
	"github.com/beam-cloud/b9-resolver/internal/testutil/keychaintest"
	"github.com/beam-cloud/b9-resolver/internal/testutil/registrytest"
)

func TestLifetimes(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	for _, tc := range []struct {
		life, wantExp, wantUsable time.Duration
	}{
		{0, 60 * time.Second, 54 * time.Second}, // absent: the spec's 60 s
		{2 * time.Second, 2 * time.Second, 1800 * time.Millisecond},
		{300 * time.Second, 300 * time.Second, 270 * time.Second},
		{12 * time.Hour, 12 * time.Hour, 12*time.Hour - 30*time.Second}, // margin capped
	} {
		exp, usable := lifetimes(now, tc.life, DefaultMaxTokenMargin)
		if exp.Sub(now) != tc.wantExp || usable.Sub(now) != tc.wantUsable {
			t.Errorf("life %v: expires %v usable %v; want %v %v", tc.life, exp.Sub(now), usable.Sub(now), tc.wantExp, tc.wantUsable)
		}
	}
}

func TestTokenCacheBoundedAndGuarded(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	clock := now
	c := newTokenCache(2, func() time.Time { return clock })
	put := func(scope, header string) {
		c.Add(tokenKey{host: "h", scopes: scope, cred: "c"}, header, now.Add(time.Minute))
	}
	put("a", "Bearer a")
	put("b", "Bearer b")
	if _, ok := c.Lookup(tokenKey{"h", "a", "c"}); !ok { // a is now most recent
		t.Fatal("a missing")
	}
	put("c", "Bearer c") // evicts b, the least recently used
	if _, ok := c.Lookup(tokenKey{"h", "b", "c"}); ok || c.Len() != 2 {
		t.Fatalf("b not evicted (len %d)", c.Len())
	}
	// A rejected token is dropped by its header; a newer one for the same
	// key, fetched by a concurrent request, is not.
	if n := removeHeader(c, "h", "Bearer newer"); n != 0 {
		t.Fatalf("removed %d tokens other than the rejected one", n)
	}
	if n := removeHeader(c, "other", "Bearer c"); n != 0 {
		t.Fatalf("removed another host's token (%d)", n)
	}
	if n := removeHeader(c, "h", "Bearer c"); n != 1 || c.Len() != 1 {
		t.Fatalf("removeHeader removed %d", n)
	}
	clock = now.Add(time.Minute)
	if _, ok := c.Lookup(tokenKey{"h", "a", "c"}); ok {
		t.Fatal("token served at its usableUntil")
	}
}

// Without expires_in a token lives 60 s (containerd would keep it
// forever): reused at 53 s, replaced at 55 s (a tenth kept as margin).
func TestTokenWithoutExpiresIn(t *testing.T) {
	ctx, _ := testContext(t)
	reg := registrytest.Start(t, registrytest.WithTokenAuth(), registrytest.WithUser("alice", alicePass), registrytest.WithTokenExpiresIn(0))
	img := reg.PushRandomImage(t, "alice/app", "v1", "alice", alicePass)
	var mu sync.Mutex
	clock := time.Now()
	now := func() time.Time { mu.Lock(); defer mu.Unlock(); return clock }
	advance := func(d time.Duration) { mu.Lock(); clock = clock.Add(d); mu.Unlock() }
	kc := keychaintest.New(t)
	defer kc.Close()
	res := mustNew(t, WithAuthorizer(mustAuthorizer(t, WithClock(now))))
	creds := FromKeychain(kc, docs(t, [3]string{"", "alice", alicePass}))
	reg.Reset()
	for i, step := range []struct {
		advance time.Duration
		fetches int
	}{{0, 1}, {53 * time.Second, 1}, {2 * time.Second, 2}} {
		advance(step.advance)
		if err := pull(ctx, res.Hosts(creds), img.Ref, newStore(t)); err != nil {
			t.Fatal(err)
		}
		if reg.TokenFetches() != step.fetches {
			t.Fatalf("step %d: %d token fetches, want %d\n%s", i, reg.TokenFetches(), step.fetches, reg.Summary())
		}
	}
}

// Concurrent first pulls through one Authorizer fetch one token.
func TestConcurrentPullsOneTokenFetch(t *testing.T) {
	ctx, _ := testContext(t)
	reg := registrytest.Start(t, registrytest.WithTokenAuth(), registrytest.WithUser("alice", alicePass))
	img := reg.PushRandomImage(t, "alice/app", "v1", "alice", alicePass)
	reg.Reset()
	kc := keychaintest.New(t)
	defer kc.Close()
	res := mustNew(t)
	creds := FromKeychain(kc, docs(t, [3]string{"", "alice", alicePass}))
	const N = 8
	var wg sync.WaitGroup
	errs := make(chan error, N)
	for i := 0; i < N; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- pull(ctx, res.Hosts(creds), img.Ref, newStore(t))
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if reg.TokenFetches() != 1 {
		t.Fatalf("%d concurrent pulls fetched %d tokens, want 1\n%s", N, reg.TokenFetches(), reg.Summary())
	}
}

// The token grant follows the credential: OAuth2 password grant, refresh
// token (identity token, ACR), GET fallback where POST is not served, and
// anonymous GET.
func TestTokenGrants(t *testing.T) {
	const refresh = "canary-refresh-" + alicePass
	for _, tc := range []struct {
		name string
		opts []registrytest.Option
		cred keychain.Credential
		// token endpoint requests as "METHOD status grant auth"
		want []string
	}{
		{"password", nil, keychain.Credential{Source: "test", Username: "alice", Secret: secret.New(alicePass)},
			[]string{"POST 200 password "}},
		{"identity token", []registrytest.Option{registrytest.WithIdentityToken("alice", refresh)},
			keychain.Credential{Source: "test", Username: "00000000-0000-0000-0000-000000000000", Secret: secret.New(refresh), IdentityToken: true},
			[]string{"POST 200 refresh_token "}},
		{"no oauth2", []registrytest.Option{registrytest.WithoutOAuth()}, keychain.Credential{Source: "test", Username: "alice", Secret: secret.New(alicePass)},
			[]string{"POST 404 password ", "GET 200  Basic"}},
		{"anonymous", []registrytest.Option{registrytest.WithAnonymousPull("alice/app")}, keychain.Credential{Source: keychain.SourceNone, Anonymous: true},
			[]string{"GET 200  "}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, logs := testContext(t)
			reg := registrytest.Start(t, append(tc.opts, registrytest.WithTokenAuth(), registrytest.WithUser("alice", alicePass))...)
			img := reg.PushRandomImage(t, "alice/app", "v1", "alice", alicePass)
			reg.Reset()
			creds := CredentialFunc(func(_ context.Context, r registry.Registry, _ bool) (keychain.Credential, error) {
				c := tc.cred
				c.Registry = r
				return c, nil
			})
			if err := pull(ctx, mustNew(t).Hosts(creds), img.Ref, newStore(t)); err != nil {
				t.Fatalf("pull: %v\n%s", err, reg.Summary())
			}
			var got []string
			for _, q := range reg.Requests() {
				if q.Server == registrytest.ServerToken {
					got = append(got, q.Method+" "+strconv.Itoa(q.Status)+" "+q.GrantType+" "+q.Auth)
				}
			}
			if len(got) != len(tc.want) {
				t.Fatalf("token requests %q, want %q", got, tc.want)
			}
			for i := range got {
				if got[i] != tc.want[i] {
					t.Fatalf("token requests %q, want %q", got, tc.want)
				}
			}
			noCanary(t, logs.String())
		})
	}
}

// failTransport fails any network use.
type failTransport struct{ tb testing.TB }

func (f failTransport) RoundTrip(*http.Request) (*http.Response, error) {
	f.tb.Fatal("network used")
	return nil, nil
}

// BenchmarkAuthorizeCachedToken: a request to a bearer host whose token is
// cached — no network, the cost each blob request of every pull pays.
func BenchmarkAuthorizeCachedToken(b *testing.B) {
	a := mustAuthorizer(b)
	host := "registry.example.com"
	cred := keychain.Credential{Source: "bench", Username: "alice", Secret: secret.New(alicePass)}
	ha := a.For(Binding{
		Host: host, Scheme: "https", Registry: registry.Detect(host), Upstream: registry.Detect(host),
		Credentials: CredentialFunc(func(context.Context, registry.Registry, bool) (keychain.Credential, error) { return cred, nil }),
		Client:      &http.Client{Transport: failTransport{b}},
	}).(*hostAuthorizer)
	a.challenges.set(host, challenge{scheme: schemeBearer, realm: "https://auth.example.com/token", service: host})
	ctx := docker.WithScope(context.Background(), "repository:library/app:pull")
	rc, err := ha.credential(ctx, time.Now())
	if err != nil {
		b.Fatal(err)
	}
	_, until := lifetimes(time.Now(), time.Hour, DefaultMaxTokenMargin)
	a.tokens.Add(tokenKey{host: host, scopes: "repository:library/app:pull", cred: rc.fp}, "Bearer tok", until)
	req, _ := http.NewRequest(http.MethodGet, "https://"+host+"/v2/library/app/blobs/sha256:0", nil)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if err := ha.Authorize(ctx, req); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	if req.Header.Get("Authorization") != "Bearer tok" || a.TokenFetches() != 0 {
		b.Fatalf("not authorised from the cache: %q, %d fetches", req.Header.Get("Authorization"), a.TokenFetches())
	}
}

// Bearer tokens are cached under the full hash of the presented
// credential: a 12-digit fingerprint would let a crafted secret share
// (and be served) another tenant's token.
func TestTokenKeyIsTheFullCredentialHash(t *testing.T) {
	host := "registry.example.com"
	for _, identity := range []bool{false, true} {
		cred := keychain.Credential{Source: "test", Username: "alice", Secret: secret.New(alicePass), IdentityToken: identity}
		ha := mustAuthorizer(t).For(Binding{
			Host: host, Scheme: "https", Registry: registry.Detect(host), Upstream: registry.Detect(host),
			Credentials: CredentialFunc(func(context.Context, registry.Registry, bool) (keychain.Credential, error) { return cred, nil }),
			Client:      &http.Client{Transport: failTransport{t}},
		}).(*hostAuthorizer)
		rc, err := ha.credential(context.Background(), time.Now())
		if err != nil {
			t.Fatal(err)
		}
		kind := map[bool]string{false: "p", true: "i"}[identity]
		if want := secret.Hash(kind, "alice", alicePass); rc.fp != want {
			t.Errorf("identity token %v: token cache key %q, want the full hash %q", identity, rc.fp, want)
		}
	}
}
