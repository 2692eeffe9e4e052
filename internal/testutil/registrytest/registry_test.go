package registrytest

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

const (
	alicePass = "canary-alice-Pw-7f3a"
	bobPass   = "canary-bob-Pw-19cd"
)

// pull fetches ref's manifest with ggcr as user; it returns the error.
func pull(r *Registry, ref, user, pass string) error {
	var opts []name.Option
	if r.CertPool() == nil {
		opts = append(opts, name.Insecure)
	}
	n, err := name.ParseReference(ref, opts...)
	if err != nil {
		return err
	}
	_, err = remote.Get(n, remote.WithAuth(&authn.Basic{Username: user, Password: pass}), remote.WithTransport(r.Transport()))
	return err
}

func TestModes(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts []Option
	}{
		{"none", nil},
		{"basic", []Option{WithBasicAuth()}},
		{"token", []Option{WithTokenAuth()}},
		{"token-separate-host-tls", []Option{WithTokenAuth(), WithSeparateTokenHost(), WithTLS("123456789012.dkr.ecr.us-east-1.amazonaws.com")}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := Start(t, append(tc.opts, WithUser("alice", alicePass))...)
			img := r.PushRandomImage(t, "alice/app", "v1", "alice", alicePass)
			if !strings.HasPrefix(img.Digest, "sha256:") || len(img.Layers) != 2 {
				t.Fatalf("pushed %+v", img)
			}
			r.Reset()
			if err := pull(r, img.Ref, "alice", alicePass); err != nil {
				t.Fatalf("pull: %v", err)
			}
			if r.Count(Request.IsManifest) == 0 {
				t.Fatalf("no manifest request recorded:\n%s", r.Summary())
			}
			if tc.name != "none" {
				if r.Unauthorized() == 0 {
					t.Errorf("ggcr's first contact should have been challenged:\n%s", r.Summary())
				}
				if err := pull(r, img.Ref, "alice", "wrong"); err == nil {
					t.Error("wrong password accepted")
				}
			}
			if strings.HasPrefix(tc.name, "token") && r.TokenFetches() == 0 {
				t.Errorf("no token fetch recorded:\n%s", r.Summary())
			}
			if strings.Contains(tc.name, "tls") && !strings.HasPrefix(r.URL, "https://123456789012.dkr.ecr.us-east-1.amazonaws.com:") {
				t.Errorf("URL = %s", r.URL)
			}
		})
	}
}

// Two users of one token registry each reach only their own repository.
func TestTokenScopesPerUser(t *testing.T) {
	r := Start(t, WithTokenAuth(), WithUser("alice", alicePass, "alice/app"), WithUser("bob", bobPass, "bob/app"))
	a := r.PushRandomImage(t, "alice/app", "v1", "alice", alicePass)
	b := r.PushRandomImage(t, "bob/app", "v1", "bob", bobPass)
	for _, tc := range []struct {
		ref, user, pass string
		ok              bool
	}{
		{a.Ref, "alice", alicePass, true},
		{b.Ref, "bob", bobPass, true},
		{b.Ref, "alice", alicePass, false},
		{a.Ref, "bob", bobPass, false},
	} {
		if err := pull(r, tc.ref, tc.user, tc.pass); (err == nil) != tc.ok {
			t.Errorf("%s as %s: err=%v, want ok=%v", tc.ref, tc.user, err, tc.ok)
		}
	}
}

// token asks the issuer for a token by GET or POST and returns the decoded body.
func fetchToken(t *testing.T, r *Registry, method string, form url.Values, user, pass string) (int, map[string]any) {
	t.Helper()
	var req *http.Request
	if method == http.MethodPost {
		req, _ = http.NewRequest(method, r.Realm, strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	} else {
		req, _ = http.NewRequest(method, r.Realm+"?"+form.Encode(), nil)
	}
	if user != "" {
		req.SetBasicAuth(user, pass)
	}
	resp, err := r.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body map[string]any
	b, _ := io.ReadAll(resp.Body)
	_ = json.Unmarshal(b, &body)
	return resp.StatusCode, body
}

func TestTokenEndpoint(t *testing.T) {
	r := Start(t, WithTokenAuth(), WithUser("alice", alicePass), WithIdentityToken("alice", "canary-refresh-tok"), WithTokenExpiresIn(7*time.Second))
	scope := "repository:alice/app:pull"
	code, body := fetchToken(t, r, http.MethodGet, url.Values{"service": {r.Service}, "scope": {scope}, "offline_token": {"true"}}, "alice", alicePass)
	if code != 200 || body["expires_in"] != float64(7) || body["token"] == "" || body["refresh_token"] == nil {
		t.Fatalf("GET: %d %v", code, body)
	}
	code, body = fetchToken(t, r, http.MethodPost, url.Values{"service": {r.Service}, "scope": {scope}, "client_id": {"t"}, "grant_type": {"refresh_token"}, "refresh_token": {"canary-refresh-tok"}}, "", "")
	if code != 200 || body["access_token"] == nil {
		t.Fatalf("POST refresh_token: %d %v", code, body)
	}
	code, _ = fetchToken(t, r, http.MethodPost, url.Values{"service": {r.Service}, "scope": {scope}, "client_id": {"t"}, "grant_type": {"password"}, "username": {"alice"}, "password": {"nope"}}, "", "")
	if code != http.StatusUnauthorized {
		t.Fatalf("POST bad password: %d", code)
	}
	if got := r.Count(func(q Request) bool { return q.Server == ServerToken && q.GrantType == "refresh_token" }); got != 1 {
		t.Errorf("grant_type recorded %d times", got)
	}
	r2 := Start(t, WithTokenAuth(), WithoutOAuth(), WithTokenExpiresIn(0))
	code, _ = fetchToken(t, r2, http.MethodPost, url.Values{"service": {r2.Service}, "client_id": {"t"}, "grant_type": {"password"}}, "", "")
	if code != http.StatusNotFound {
		t.Errorf("WithoutOAuth POST: %d", code)
	}
	code, body = fetchToken(t, r2, http.MethodGet, url.Values{"service": {r2.Service}}, "", "")
	if _, has := body["expires_in"]; code != 200 || has {
		t.Errorf("WithTokenExpiresIn(0): %d %v", code, body)
	}
}

// AddIdentityToken: a refresh token learned after Start works from then on.
func TestAddIdentityToken(t *testing.T) {
	r := Start(t, WithTokenAuth(), WithUser("alice", alicePass, "alice/app"))
	form := url.Values{"service": {r.Service}, "scope": {"repository:alice/app:pull"}, "client_id": {"t"},
		"grant_type": {"refresh_token"}, "refresh_token": {"canary-late-tok"}}
	if code, _ := fetchToken(t, r, http.MethodPost, form, "", ""); code != http.StatusUnauthorized {
		t.Fatalf("before AddIdentityToken: %d, want 401", code)
	}
	r.AddIdentityToken("alice", "canary-late-tok")
	if code, body := fetchToken(t, r, http.MethodPost, form, "", ""); code != 200 || body["access_token"] == nil {
		t.Fatalf("after AddIdentityToken: %d %v", code, body)
	}
	r.RemoveUser(t, "alice")
	if code, _ := fetchToken(t, r, http.MethodPost, form, "", ""); code != http.StatusUnauthorized {
		t.Fatalf("after RemoveUser: %d, want 401", code)
	}
}

// Revocation: a changed password, a removed user, expired tokens.
func TestRevocation(t *testing.T) {
	t.Run("basic", func(t *testing.T) {
		r := Start(t, WithBasicAuth(), WithUser("alice", alicePass))
		img := r.PushRandomImage(t, "alice/app", "v1", "alice", alicePass)
		r.SetPassword(t, "alice", "new-pass")
		if err := pull(r, img.Ref, "alice", alicePass); err == nil {
			t.Error("old password still accepted")
		}
		if err := pull(r, img.Ref, "alice", "new-pass"); err != nil {
			t.Errorf("new password: %v", err)
		}
	})
	t.Run("token", func(t *testing.T) {
		r := Start(t, WithTokenAuth(), WithUser("alice", alicePass))
		img := r.PushRandomImage(t, "alice/app", "v1", "alice", alicePass)
		_, body := fetchToken(t, r, http.MethodGet, url.Values{"service": {r.Service}, "scope": {"repository:alice/app:pull"}}, "alice", alicePass)
		get := func() *http.Response {
			req, _ := http.NewRequest(http.MethodGet, r.URL+"/v2/alice/app/manifests/v1", nil)
			req.Header.Set("Authorization", "Bearer "+body["token"].(string))
			req.Header.Set("Accept", "application/vnd.oci.image.manifest.v1+json,application/vnd.docker.distribution.manifest.v2+json")
			resp, err := r.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			return resp
		}
		if resp := get(); resp.StatusCode != 200 {
			t.Fatalf("with fresh token: %d", resp.StatusCode)
		}
		r.ExpireTokens()
		resp := get()
		if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(resp.Header.Get("WWW-Authenticate"), `error="invalid_token"`) {
			t.Fatalf("expired token: %d %q", resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
		}
		r.RemoveUser(t, "alice")
		if err := pull(r, img.Ref, "alice", alicePass); err == nil {
			t.Error("removed user still pulls")
		}
	})
}

// A token's real lifetime ends when the registry says, despite distribution's
// 60 s leeway.
func TestTokenLifetime(t *testing.T) {
	r := Start(t, WithTokenAuth(), WithUser("alice", alicePass), WithTokenLifetime(2*time.Second))
	r.PushRandomImage(t, "alice/app", "v1", "alice", alicePass)
	_, body := fetchToken(t, r, http.MethodGet, url.Values{"service": {r.Service}, "scope": {"repository:alice/app:pull"}}, "alice", alicePass)
	status := func() int {
		req, _ := http.NewRequest(http.MethodHead, r.URL+"/v2/alice/app/manifests/v1", nil)
		req.Header.Set("Authorization", "Bearer "+body["token"].(string))
		resp, err := r.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if s := status(); s != 200 {
		t.Fatalf("fresh: %d", s)
	}
	time.Sleep(3 * time.Second)
	if s := status(); s != http.StatusUnauthorized {
		t.Fatalf("after lifetime: %d", s)
	}
}

func TestBlobRedirect(t *testing.T) {
	r := Start(t, WithBasicAuth(), WithUser("alice", alicePass), WithBlobRedirect())
	img := r.PushRandomImage(t, "alice/app", "v1", "alice", alicePass)
	r.Reset()
	req, _ := http.NewRequest(http.MethodGet, r.URL+"/v2/alice/app/blobs/"+img.Layers[0], nil)
	req.SetBasicAuth("alice", alicePass)
	// Go's client drops Authorization on a redirect to another host: the
	// blob host must see none.
	resp, err := r.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || len(b) == 0 {
		t.Fatalf("blob: %d, %d bytes", resp.StatusCode, len(b))
	}
	var blob []Request
	for _, q := range r.Requests() {
		if q.Server == ServerBlob {
			blob = append(blob, q)
		}
	}
	if len(blob) != 1 || blob[0].Host != r.BlobHost || blob[0].HadAuth() {
		t.Fatalf("blob host requests: %+v\n%s", blob, r.Summary())
	}
}

// Nothing the recorder keeps or logs contains a secret.
func TestNoSecretsRecorded(t *testing.T) {
	var logs strings.Builder
	r := Start(t, WithTokenAuth(), WithUser("alice", alicePass), WithLogf(func(f string, a ...any) {
		fmt.Fprintf(&logs, f+"\n", a...)
	}))
	img := r.PushRandomImage(t, "alice/app", "v1", "alice", alicePass)
	if err := pull(r, img.Ref, "alice", alicePass); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{logs.String(), r.Summary()} {
		if strings.Contains(s, alicePass) || strings.Contains(s, "eyJ") {
			t.Fatalf("secret in recorder output: %s", s)
		}
	}
}

// A stopped registry refuses connections, token server included.
func TestStop(t *testing.T) {
	r := Start(t, WithTokenAuth(), WithSeparateTokenHost(), WithUser("admin", alicePass, "*"), WithAnonymousPull("public/app"))
	img := r.PushRandomImage(t, "public/app", "v1", "admin", alicePass)
	if err := pull(r, img.Ref, "", ""); err != nil {
		t.Fatalf("before Stop: %v", err)
	}
	r.Stop()
	for _, u := range []string{r.URL + "/v2/", "http://" + r.TokenHost + "/token"} {
		resp, err := http.Get(u)
		if err == nil {
			resp.Body.Close()
			t.Errorf("GET %s after Stop answered %s", u, resp.Status)
		}
	}
}
