package resolver

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/containerd/errdefs"

	"github.com/beam-cloud/b9-resolver/internal/keychain/registry"
	"github.com/beam-cloud/b9-resolver/internal/testutil/keychaintest"
)

// basicBinding is an https registry.example.com binding presenting
// alice's basic credential, with the host's basic challenge remembered.
func basicBinding(t *testing.T, a *Authorizer, host string) *hostAuthorizer {
	t.Helper()
	kc := keychaintest.New(t)
	t.Cleanup(kc.Close)
	h := a.For(Binding{
		Host: host, Scheme: "https", Registry: registry.Registry{Host: host},
		Credentials: FromKeychain(kc, docs(t, [3]string{"", "alice", alicePass})),
	}).(*hostAuthorizer)
	a.challenges.set(host, challenge{scheme: schemeBasic})
	return h
}

// redirected is a request to target created by following a redirect from
// from, carrying the Authorization Go's client copied.
func redirected(t *testing.T, from, target, copied string) *http.Request {
	t.Helper()
	first, _ := http.NewRequest(http.MethodGet, from, nil)
	req, err := http.NewRequest(http.MethodGet, target, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Response = &http.Response{StatusCode: http.StatusTemporaryRedirect, Request: first}
	if copied != "" {
		req.Header.Set("Authorization", copied)
	}
	return req
}

// Credentials are bound to the registry's origin — scheme, lower-cased
// host, effective port — not to the Host string: a redirect to plain http
// on the same host and port, to another port or to a subdomain gets none
// (even the header Go copied), while https://HOST:443 and upper case are
// the same origin and keep them. (Comparing Host strings sent the basic
// credential over plain http, and failed the pull on :443 or upper case.)
func TestAuthorizeBindsCredentialsToOrigin(t *testing.T) {
	ctx := context.Background()
	a := mustAuthorizer(t)
	h := basicBinding(t, a, "registry.example.com")
	const from = "https://registry.example.com/v2/app/blobs/sha256:1"
	copied := "Basic " + "Y29waWVk"
	for _, tc := range []struct {
		target string
		keep   bool
	}{
		{"https://registry.example.com/v2/app/blobs/sha256:1", true},
		{"https://registry.example.com:443/storage/1", true},
		{"https://REGISTRY.EXAMPLE.COM/storage/1", true},
		{"https://Registry.Example.Com.:443/storage/1", true},
		{"http://registry.example.com/storage/1", false},
		{"http://registry.example.com:443/storage/1", false},
		{"https://registry.example.com:8443/storage/1", false},
		{"https://blobs.registry.example.com/storage/1", false},
	} {
		req := redirected(t, from, tc.target, copied)
		if err := h.Authorize(ctx, req); err != nil {
			t.Fatalf("%s: %v", tc.target, err)
		}
		got := req.Header.Get("Authorization")
		switch {
		case tc.keep && !strings.HasPrefix(got, "Basic ") || tc.keep && got == copied:
			t.Errorf("%s: Authorization %q, want alice's basic credential (same origin)", tc.target, got)
		case !tc.keep && got != "":
			t.Errorf("%s: Authorization %q sent off the registry's origin", tc.target, got)
		}
	}

	// A challenge from the same origin spelt differently is the registry's
	// own (no "sent to ... only" refusal); from another origin it is not.
	for _, tc := range []struct {
		target string
		own    bool
	}{
		{"https://registry.example.com:443/storage/1", true},
		{"https://REGISTRY.example.com/storage/1", true},
		{"http://registry.example.com/storage/1", false},
		{"https://registry.example.com:8443/storage/1", false},
	} {
		req := redirected(t, from, tc.target, "")
		resp := &http.Response{StatusCode: http.StatusUnauthorized, Request: req,
			Header: http.Header{"Www-Authenticate": {`Basic realm="x"`}}}
		err := h.AddResponses(ctx, []*http.Response{resp})
		if tc.own && err != nil {
			t.Errorf("%s: %v, want the challenge taken as the registry's own", tc.target, err)
		}
		if !tc.own && !errdefs.IsPermissionDenied(err) {
			t.Errorf("%s: %v, want permission denied", tc.target, err)
		}
	}
}
