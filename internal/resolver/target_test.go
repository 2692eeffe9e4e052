package resolver

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/beam-cloud/b9-resolver/internal/testutil/keychaintest"
	"github.com/beam-cloud/b9-resolver/internal/testutil/registrytest"
)

// objectStore stands for blob storage a registry redirects to that wants
// a bearer token of its own (from its own anonymous token endpoint). It
// serves each blob by reading it from the registry with the test's own
// credentials, and counts what reached it.
type objectStore struct {
	*httptest.Server
	tokens, credentialsAtToken, registryCredential, unauthorized, served atomic.Int64
}

const storeToken = "store-anonymous-token"

func startObjectStore(t *testing.T, reg *registrytest.Registry, registryAuth string) *objectStore {
	s := &objectStore{}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/token" {
			s.tokens.Add(1)
			_ = r.ParseForm()
			if r.Header.Get("Authorization") != "" || r.Form.Get("password") != "" || r.Form.Get("refresh_token") != "" {
				s.credentialsAtToken.Add(1)
			}
			_, _ = io.WriteString(w, `{"token":"`+storeToken+`","expires_in":300}`)
			return
		}
		if r.Header.Get("Authorization") == registryAuth {
			s.registryCredential.Add(1)
		}
		if r.Header.Get("Authorization") != "Bearer "+storeToken {
			s.unauthorized.Add(1)
			w.Header().Set("WWW-Authenticate", `Bearer realm="`+s.URL+`/token",service="store",scope="blob:read"`)
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		req, _ := http.NewRequest(http.MethodGet, reg.URL+r.URL.Path, nil)
		req.Header.Set("Authorization", registryAuth)
		req.Header.Set("X-From-Store", "1") // served, not redirected back
		resp, err := reg.Client().Do(req)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		s.served.Add(1)
		w.WriteHeader(resp.StatusCode)
		_, _ = io.Copy(w, resp.Body)
	}))
	t.Cleanup(s.Close)
	return s
}

// A registry redirects blobs to object storage that answers with a bearer
// challenge of its own: the Authorizer fetches an anonymous token from the
// storage's token endpoint (no credential there, none of the registry's
// at the storage), presents it to the storage only, caches it across blobs
// and pulls, and the pull succeeds. (It failed: the storage's challenge
// was refused as a request for the registry's credentials.)
func TestRedirectTargetGetsAnonymousToken(t *testing.T) {
	ctx, logs := testContext(t)
	var store *objectStore
	basicAuth := "Basic " + basicValue("alice", alicePass)
	reg := registrytest.Start(t, registrytest.WithBasicAuth(), registrytest.WithUser("alice", alicePass),
		registrytest.WithMiddleware(func(next http.Handler) http.Handler {
			return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/") && r.Header.Get("Authorization") == basicAuth && r.Header.Get("X-From-Store") == "" {
					http.Redirect(w, r, store.URL+r.URL.Path, http.StatusTemporaryRedirect)
					return
				}
				next.ServeHTTP(w, r)
			})
		}))
	img := reg.PushRandomImage(t, "alice/app", "v1", "alice", alicePass)
	store = startObjectStore(t, reg, basicAuth)

	kc := keychaintest.New(t)
	defer kc.Close()
	res := mustNew(t)
	d := docs(t, [3]string{"", "alice", alicePass})
	if err := pull(ctx, res.Hosts(FromKeychain(kc, d)), img.Ref, newStore(t)); err != nil {
		t.Fatalf("pull: %v\n%s", err, reg.Summary())
	}
	// Blobs are fetched in parallel: each one in flight before the
	// storage's challenge was learnt draws its own 401.
	first401 := store.unauthorized.Load()
	if store.served.Load() != 3 || store.tokens.Load() != 1 || first401 < 1 || first401 > 3 {
		t.Errorf("first pull: storage served %d blobs, %d token requests, %d 401s; want 3, 1, 1..3",
			store.served.Load(), store.tokens.Load(), first401)
	}
	if err := pull(ctx, res.Hosts(FromKeychain(kc, d)), img.Ref, newStore(t)); err != nil {
		t.Fatalf("second pull: %v\n%s", err, reg.Summary())
	}
	if store.served.Load() != 6 || store.tokens.Load() != 1 || store.unauthorized.Load() != first401 {
		t.Errorf("second pull: storage served %d blobs in all, %d token requests, %d 401s; want 6, still 1, no new 401",
			store.served.Load(), store.tokens.Load(), store.unauthorized.Load())
	}
	if store.credentialsAtToken.Load() != 0 || store.registryCredential.Load() != 0 {
		t.Errorf("a credential left the registry's origin: %d at the storage's token endpoint, %d at the storage",
			store.credentialsAtToken.Load(), store.registryCredential.Load())
	}
	noCanary(t, logs.String())
}
