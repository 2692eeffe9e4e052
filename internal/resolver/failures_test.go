package resolver

import (
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containerd/errdefs"

	"github.com/beam-cloud/b9-resolver/internal/testutil/keychaintest"
	"github.com/beam-cloud/b9-resolver/internal/testutil/registrytest"
)

// delayFirstBlob holds the first blob GET for d before the registry checks
// its token: a slow blob during which the token expires.
func delayFirstBlob(d time.Duration) registrytest.Option {
	var done atomic.Bool
	return registrytest.WithMiddleware(func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/") && done.CompareAndSwap(false, true) {
				time.Sleep(d)
			}
			next.ServeHTTP(w, r)
		})
	})
}

// A token that expires while a slow blob is in flight is rejected with
// error="invalid_token": dropped, replaced, the blob retried once, the pull
// completes. Afterwards the cache's expiry is honoured up front: a pull
// after the token's life fetches a new one before any request, with no 401.
func TestTokenExpiresMidPull(t *testing.T) {
	ctx, logs := testContext(t)
	reg := registrytest.Start(t, registrytest.WithTokenAuth(), registrytest.WithUser("alice", alicePass),
		registrytest.WithTokenExpiresIn(2*time.Second), delayFirstBlob(4*time.Second))
	img := reg.PushRandomImage(t, "alice/app", "v1", "alice", alicePass)
	reg.Reset()
	kc := keychaintest.New(t)
	defer kc.Close()
	creds := &countingCreds{Credentials: FromKeychain(kc, docs(t, [3]string{"", "alice", alicePass}))}
	res := mustNew(t)

	if err := pull(ctx, res.Hosts(creds), img.Ref, newStore(t)); err != nil {
		t.Fatalf("pull: %v\n%s", err, reg.Summary())
	}
	expired := count(reg, onServer(registrytest.ServerRegistry), withStatus(http.StatusUnauthorized), withAuth)
	if reg.Unauthorized() != 2 || expired != 1 || reg.TokenFetches() != 2 || creds.invalidations.Load() != 1 {
		t.Fatalf("want 2 401s (first contact, expired token), 2 token fetches, 1 invalidation; got %d, %d, %d\n%s",
			reg.Unauthorized(), reg.TokenFetches(), creds.invalidations.Load(), reg.Summary())
	}

	time.Sleep(2500 * time.Millisecond) // past the second token's life
	reg.Reset()
	if err := pull(ctx, res.Hosts(creds), img.Ref, newStore(t)); err != nil {
		t.Fatalf("pull after expiry: %v", err)
	}
	if reg.Unauthorized() != 0 || reg.TokenFetches() != 1 {
		t.Fatalf("after expiry: want a new token fetched up front (0 401s, 1 fetch), got %d, %d\n%s",
			reg.Unauthorized(), reg.TokenFetches(), reg.Summary())
	}
	noCanary(t, logs.String())
}

// Revoked credentials: the registry's rejection invalidates the token and
// the keychain credential, one retry is made, and the pull fails with an
// error that names the host and the credential's source, never the secret.
func TestRevokedCredentials(t *testing.T) {
	for _, tc := range []struct {
		name   string
		auth   registrytest.Option
		revoke func(t *testing.T, r *registrytest.Registry)
		// registry and token-endpoint requests of the failing pull
		registry, tokens int
		inMessage        []string
	}{
		{
			name: "basic", auth: registrytest.WithBasicAuth(),
			revoke: func(t *testing.T, r *registrytest.Registry) { r.SetPassword(t, "alice", "rotated") },
			// HEAD 401, retried once: HEAD 401.
			registry: 2, tokens: 0,
			inMessage: []string{"rejected the credentials", "again after they were resolved again"},
		},
		{
			name: "token", auth: registrytest.WithTokenAuth(),
			revoke: func(t *testing.T, r *registrytest.Registry) { r.RemoveUser(t, "alice"); r.ExpireTokens() },
			// HEAD with the revoked token 401; the token endpoint then
			// rejects the credential (POST, GET fallback), which is
			// resolved again and tried once more (POST, GET).
			registry: 1, tokens: 4,
			inMessage: []string{"token for", "/token", "401 Unauthorized"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, logs := testContext(t)
			reg := registrytest.Start(t, tc.auth, registrytest.WithUser("alice", alicePass))
			img := reg.PushRandomImage(t, "alice/app", "v1", "alice", alicePass)
			kc := keychaintest.New(t)
			defer kc.Close()
			creds := &countingCreds{Credentials: FromKeychain(kc, docs(t, [3]string{"", "alice", alicePass}))}
			res := mustNew(t)
			if err := pull(ctx, res.Hosts(creds), img.Ref, newStore(t)); err != nil {
				t.Fatalf("pull: %v", err)
			}
			tc.revoke(t, reg)
			reg.Reset()
			creds.invalidations.Store(0)

			err := pull(ctx, res.Hosts(creds), img.Ref, newStore(t))
			if err == nil {
				t.Fatal("pull with revoked credentials succeeded")
			}
			if !errdefs.IsUnauthorized(err) {
				t.Errorf("error is not classified unauthenticated: %v", err)
			}
			msg := err.Error()
			for _, want := range append([]string{reg.Host, "b9.beam.cloud/image-credentials.test0"}, tc.inMessage...) {
				if !strings.Contains(msg, want) {
					t.Errorf("error does not name %q: %s", want, msg)
				}
			}
			// The document's source, never its values: not even the user.
			if strings.Contains(msg, "alice") {
				t.Errorf("error quotes the document's username: %s", msg)
			}
			if n := count(reg, onServer(registrytest.ServerRegistry)); n != tc.registry || reg.TokenFetches() != tc.tokens {
				t.Errorf("want %d registry and %d token requests, got %d and %d\n%s", tc.registry, tc.tokens, n, reg.TokenFetches(), reg.Summary())
			}
			if got := creds.invalidations.Load(); got != 2 {
				t.Errorf("keychain credential invalidated %d times, want 2 (each rejection)", got)
			}
			t.Logf("error: %s", msg)
			noCanary(t, msg, logs.String())
		})
	}
}

// A blob redirect to another host carries no credentials, even where Go's
// http.Client would copy them (same hostname, other port).
func TestRedirectGetsNoCredentials(t *testing.T) {
	for _, auth := range []registrytest.Option{registrytest.WithBasicAuth(), registrytest.WithTokenAuth()} {
		reg := registrytest.Start(t, auth, registrytest.WithUser("alice", alicePass), registrytest.WithBlobRedirectHost("127.0.0.1"))
		t.Run(reg.Auth.String(), func(t *testing.T) {
			ctx, _ := testContext(t)
			img := reg.PushRandomImage(t, "alice/app", "v1", "alice", alicePass)

			// Control: a plain client does leak here, so the test can fail.
			req, _ := http.NewRequest(http.MethodGet, reg.URL+"/v2/alice/app/blobs/"+img.Layers[0], nil)
			req.SetBasicAuth("alice", alicePass)
			if reg.Auth == registrytest.AuthBasic {
				reg.Reset()
				resp, err := reg.Client().Do(req)
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				if count(reg, onServer(registrytest.ServerBlob), withAuth) != 1 {
					t.Fatalf("control: Go's client did not copy Authorization to %s; the test proves nothing\n%s", reg.BlobHost, reg.Summary())
				}
			}

			reg.Reset()
			kc := keychaintest.New(t)
			defer kc.Close()
			if err := pull(ctx, mustNew(t).Hosts(FromKeychain(kc, docs(t, [3]string{"", "alice", alicePass}))), img.Ref, newStore(t)); err != nil {
				t.Fatalf("pull: %v\n%s", err, reg.Summary())
			}
			blobs := count(reg, onServer(registrytest.ServerBlob))
			if blobs != 3 || count(reg, onServer(registrytest.ServerBlob), withAuth) != 0 {
				t.Fatalf("want 3 blob-host requests (config, 2 layers), none with Authorization\n%s", reg.Summary())
			}
			if n := count(reg, onServer(registrytest.ServerRegistry), withStatus(http.StatusTemporaryRedirect), withAuth); n != 3 {
				t.Fatalf("want 3 authorised redirects from the registry, got %d\n%s", n, reg.Summary())
			}
		})
	}
}

// ecrExpiry answers requests carrying credentials as ECR does a token past
// its life: 403, with the message in the body of a GET; expire counts the
// GETs so answered.
func ecrExpiry(expire *atomic.Int64) registrytest.Option {
	return registrytest.WithMiddleware(func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Header.Get("Authorization") != "" && expire.Load() != 0 {
				w.Header().Set("Content-Type", "application/json; charset=utf-8")
				w.WriteHeader(http.StatusForbidden)
				if r.Method == http.MethodHead {
					return // no body, as for any HEAD
				}
				expire.Add(-1)
				_, _ = w.Write([]byte(`{"errors":[{"code":"DENIED","message":"Your authorization token has expired. Reauthenticate and try again."}]}`))
				return
			}
			next.ServeHTTP(w, r)
		})
	})
}

// ECR's 403 "Your authorization token has expired" (no challenge)
// invalidates the keychain credential and is retried once; a second one
// fails the pull naming host and source.
func TestECRExpired403(t *testing.T) {
	ctx, logs := testContext(t)
	var expire atomic.Int64
	reg := registrytest.Start(t, registrytest.WithBasicAuth(), registrytest.WithUser("AWS", alicePass), ecrExpiry(&expire))
	img := reg.PushRandomImage(t, "app", "v1", "AWS", alicePass)
	kc := keychaintest.New(t)
	defer kc.Close()
	creds := &countingCreds{Credentials: FromKeychain(kc, docs(t, [3]string{"", "AWS", alicePass}))}
	res := mustNew(t)
	if err := pull(ctx, res.Hosts(creds), img.Ref, newStore(t)); err != nil {
		t.Fatalf("pull: %v", err)
	}

	reg.Reset()
	expire.Store(1)
	if err := pull(ctx, res.Hosts(creds), img.Ref, newStore(t)); err != nil {
		t.Fatalf("pull with one expired answer: %v\n%s", err, reg.Summary())
	}
	// HEAD 403 (bodiless), GET 403 (expired), GET 200.
	if n := count(reg, withStatus(http.StatusForbidden)); n != 2 || creds.invalidations.Load() != 1 {
		t.Fatalf("want two 403s (HEAD, GET) and one invalidation, got %d and %d\n%s", n, creds.invalidations.Load(), reg.Summary())
	}

	reg.Reset()
	expire.Store(100)
	err := pull(ctx, res.Hosts(creds), img.Ref, newStore(t))
	if err == nil {
		t.Fatal("pull succeeded with every answer expired")
	}
	// HEAD 403, GET 403 (expired), retried once: GET 403.
	if n := count(reg, withStatus(http.StatusForbidden)); n != 3 {
		t.Errorf("want the expired GET retried exactly once (3 403s in all), got %d\n%s", n, reg.Summary())
	}
	for _, want := range []string{reg.Host, "image-credentials.test0", "authorization token has expired"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not name %q: %v", want, err)
		}
	}
	t.Logf("error: %v", err)
	noCanary(t, err.Error(), logs.String())
}
