package resolver

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/containerd/errdefs"

	"github.com/beam-cloud/b9-resolver/internal/keychain"
	"github.com/beam-cloud/b9-resolver/internal/secret"
)

// localService stands for a service on the node (or cloud metadata): it
// answers anything with a "token" and counts the requests that reach it
// and those that carried the password.
type localService struct {
	*httptest.Server
	hits, withSecret atomic.Int64
}

func startLocalService(t *testing.T) *localService {
	s := &localService{}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.hits.Add(1)
		_ = r.ParseForm()
		if u, p, _ := r.BasicAuth(); p == alicePass || u == alicePass || strings.Contains(r.Form.Encode(), alicePass) {
			s.withSecret.Add(1)
		}
		_, _ = w.Write([]byte(`{"Token":"local-service-secret"}`))
	}))
	t.Cleanup(s.Close)
	return s
}

// redirector answers every request with status and Location target.
func redirector(t *testing.T, status int, target string, tls bool) *httptest.Server {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Location", target)
		w.WriteHeader(status)
	})
	var s *httptest.Server
	if tls {
		s = httptest.NewTLSServer(h)
	} else {
		s = httptest.NewServer(h)
	}
	t.Cleanup(s.Close)
	return s
}

// dialAs is a client whose dialer sends name to addr, as DNS would.
func dialAs(base *http.Client, names map[string]string) *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if base != nil && base.Transport != nil {
		tr = base.Transport.(*http.Transport).Clone()
	}
	tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		host, port, _ := net.SplitHostPort(addr)
		if to, ok := names[host]; ok {
			addr = net.JoinHostPort(to, port)
		}
		return (&net.Dialer{}).DialContext(ctx, network, addr)
	}
	return &http.Client{Transport: tr}
}

func aliceCred() keychain.Credential {
	return keychain.Credential{Source: "test", Username: "alice", Secret: secret.New(alicePass)}
}

// Every hop of a token request is held to the realm rule, and so is the
// address each connection reaches: a realm that redirects to cloud
// metadata or to a local service (from a registry not on loopback), or
// whose name resolves to loopback, gets nothing — the node neither fetches
// it nor forwards its answer as a token. A request carrying a credential
// does not follow a redirect off its origin (a 307 would re-POST the
// password form, here to plain http on the same host).
func TestTokenRequestRedirects(t *testing.T) {
	local := startLocalService(t)
	_, localPort, _ := net.SplitHostPort(local.Listener.Addr().String())
	for _, tc := range []struct {
		name string
		// realm server: a redirect to target (status), over TLS or not
		status int
		target string
		tls    bool
		// registry the token is for, and the names the dialer resolves
		registry, scheme string
		names            map[string]string
		realmHost        string // realm's host name (the redirector's port)
		cred             keychain.Credential
		permissionDenied bool
	}{
		// The registry is https://example.com (the test certificate's
		// name), served here: its own name may be on loopback, so the
		// realm passes and each redirect is what is checked.
		{name: "to metadata", status: http.StatusFound, target: "http://169.254.169.254/latest/meta-data/iam/security-credentials/role", tls: true,
			registry: "example.com", scheme: "https", realmHost: "example.com",
			names: map[string]string{"example.com": "127.0.0.1"}, permissionDenied: true},
		{name: "to metadata by name", status: http.StatusFound, target: "https://metadata.google.internal/computeMetadata/v1/", tls: true,
			registry: "example.com", scheme: "https", realmHost: "example.com",
			names: map[string]string{"example.com": "127.0.0.1"}, permissionDenied: true},
		{name: "to a local port from a remote registry", status: http.StatusFound, target: local.URL + "/token", tls: true,
			registry: "example.com", scheme: "https", realmHost: "example.com",
			names: map[string]string{"example.com": "127.0.0.1"}, permissionDenied: true},
		{name: "to a name that resolves to loopback (rebinding)", status: http.StatusFound, target: "https://rebound.example:" + localPort + "/token", tls: true,
			registry: "example.com", scheme: "https", realmHost: "example.com",
			names: map[string]string{"example.com": "127.0.0.1", "rebound.example": "127.0.0.1"}, permissionDenied: true},
		{name: "password form 307 to plain http", status: http.StatusTemporaryRedirect, target: local.URL + "/token", tls: true,
			registry: "127.0.0.1:1", scheme: "https", realmHost: "127.0.0.1", cred: aliceCred(), permissionDenied: true},
		{name: "credential 302 to another port", status: http.StatusFound, target: local.URL + "/token",
			registry: "127.0.0.1:1", scheme: "http", realmHost: "127.0.0.1", cred: aliceCred(), permissionDenied: true},
		// Control: a loopback registry's anonymous token request may follow
		// a redirect on loopback.
		{name: "anonymous on loopback", status: http.StatusFound, target: local.URL + "/token",
			registry: "127.0.0.1:1", scheme: "http", realmHost: "127.0.0.1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			local.hits.Store(0)
			local.withSecret.Store(0)
			rd := redirector(t, tc.status, tc.target, tc.tls)
			_, port, _ := net.SplitHostPort(rd.Listener.Addr().String())
			scheme := "http"
			if tc.tls {
				scheme = "https"
			}
			cred := tc.cred
			if cred.Secret.IsZero() {
				cred = keychain.Credential{Anonymous: true}
			}
			tok, err := FetchToken(context.Background(), TokenRequest{
				Client: dialAs(rd.Client(), tc.names), RegistryScheme: tc.scheme, RegistryHost: tc.registry,
				Realm: scheme + "://" + net.JoinHostPort(tc.realmHost, port) + "/token", Service: "svc",
				Scopes: []string{"repository:app:pull"}, Credential: cred,
			})
			local127 := strings.Contains(tc.target, "127.0.0.1")
			if tc.permissionDenied && tc.cred.Secret.IsZero() && local127 {
				// Control (loopback targets only: tests reach nothing off
				// 127.0.0.0/8): the same request without the realm rule
				// follows the redirect, so the test can fail.
				tok, err := fetchToken(context.Background(), TokenRequest{
					RegistryScheme: tc.scheme, RegistryHost: tc.registry,
					Realm: scheme + "://" + net.JoinHostPort(tc.realmHost, port) + "/token", Credential: cred,
				}, dialAs(rd.Client(), tc.names))
				if err != nil || tok.Value != "local-service-secret" {
					t.Fatalf("control: %q, %v; the unguarded client did not reach the local service", tok.Value, err)
				}
				local.hits.Store(0)
			}
			if !tc.permissionDenied {
				if err != nil || tok.Value != "local-service-secret" {
					t.Fatalf("control: %q, %v", tok.Value, err)
				}
				return
			}
			if err == nil || !errdefs.IsPermissionDenied(err) {
				t.Fatalf("token %q, error %v; want permission denied", tok.Value, err)
			}
			if !strings.Contains(err.Error(), tc.registry) {
				t.Errorf("error does not name the registry: %v", err)
			}
			if local.hits.Load() != 0 || local.withSecret.Load() != 0 {
				t.Errorf("the local service was reached %d times (%d with the password)", local.hits.Load(), local.withSecret.Load())
			}
			noCanary(t, err.Error())
			t.Logf("error: %v", err)
		})
	}
}

// A token response is read up to a limit chosen here (64 KiB), and a
// larger one is refused, not truncated into a token.
func TestTokenResponseSizeCap(t *testing.T) {
	big := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte(`{"token":"` + strings.Repeat("a", 1<<20) + `"}`))
	}))
	defer big.Close()
	host := big.Listener.Addr().String()
	_, err := FetchToken(context.Background(), TokenRequest{Client: big.Client(), RegistryScheme: "http", RegistryHost: host,
		Realm: big.URL + "/token", Credential: keychain.Credential{Anonymous: true}})
	if err == nil || !strings.Contains(err.Error(), "larger than 64 KiB") {
		t.Fatalf("1 MiB token answer: %v, want refused as larger than 64 KiB", err)
	}
	var te *TokenError
	if !errorsAs(err, &te) || te.Host != host {
		t.Errorf("not a *TokenError naming %s: %#v", host, err)
	}
}

// The address check: metadata never; loopback for a registry on loopback,
// or for an https registry's own name (only a holder of its certificate
// answers there), never for a plain-http registry's name that resolves to
// loopback (DNS rebinding) nor for another name.
func TestCheckAddr(t *testing.T) {
	lo, md := net.ParseIP("127.0.0.1"), net.ParseIP("169.254.169.254")
	for _, tc := range []struct {
		scheme, registry, dialled string
		ip                        net.IP
		ok                        bool
	}{
		{"https", "registry.example.com", "registry.example.com", lo, true},
		{"http", "registry.example.com", "registry.example.com", lo, false},
		{"https", "registry.example.com", "auth.example.com", lo, false},
		{"http", "127.0.0.1:5000", "localhost", lo, true},
		{"https", "registry.example.com", "registry.example.com", md, false},
		{"https", "127.0.0.1:5000", "127.0.0.1", md, false},
		{"https", "registry.example.com", "auth.example.com", net.ParseIP("0.0.0.0"), false},
		{"https", "registry.example.com", "auth.example.com", net.ParseIP("203.0.113.7"), true},
	} {
		err := realmPolicy{scheme: tc.scheme, host: tc.registry}.checkAddr(tc.dialled, tc.ip)
		if (err == nil) != tc.ok {
			t.Errorf("%s://%s dialling %s at %s: %v, want ok=%v", tc.scheme, tc.registry, tc.dialled, tc.ip, err, tc.ok)
		}
	}
}
