package resolver

import (
	"fmt"
	"net/http"
	"testing"

	"github.com/containerd/errdefs"
)

// A registry chooses its token realm; credentials go there only over TLS
// when the registry uses TLS (loopback aside), never to link-local
// addresses (cloud metadata) or odd schemes.
func TestCheckRealm(t *testing.T) {
	for _, tc := range []struct {
		realm, scheme, host string
		ok                  bool
	}{
		{"https://auth.docker.io/token", "https", "registry-1.docker.io", true},
		// The registry's own host is no exception: over plain http the
		// password would cross the network in clear.
		{"http://registry.test:5000/token", "https", "registry.test:5000", false},
		{"http://REGISTRY.test/token", "https", "registry.test", false},
		{"http://localhost:9999/token", "https", "localhost:5000", true},
		// Loopback only for a registry on loopback: a remote registry must
		// not make the node send the password to a local port, in clear or
		// not, nor forward a local service's answer as its token.
		{"http://127.0.0.1:9999/token", "https", "registry.example.com", false},
		{"http://localhost:9999/token", "https", "registry.example.com", false},
		{"https://127.0.0.1:9999/token", "https", "registry.example.com", false},
		{"https://[::1]:9999/token", "http", "registry.example.com", false},
		{"https://localhost:9999/token", "https", "127.0.0.1:5000", true},
		// The registry's own name may resolve to loopback (its realm is
		// then served where the registry is).
		{"https://registry.example.com/token", "https", "registry.example.com", true},
		{"https://localhost:9999/token", "https", "localhost.example.com", false},
		{"http://169.254.169.254/latest/meta-data/iam", "http", "registry.example.com", false},
		{"https://metadata.google.internal/computeMetadata/v1/", "https", "registry.example.com", false},
		{"https://[fd00:ec2::254]/latest/", "https", "registry.example.com", false},
		{"http://127.0.0.1:9999/token", "https", "127.0.0.1:5000", true},
		{"http://auth.example.com/token", "http", "registry.example.com", true},
		{"http://auth.example.com/token", "https", "registry.example.com", false},
		{"https://169.254.169.254/latest/meta-data", "https", "registry.example.com", false},
		{"ftp://auth.example.com/token", "https", "registry.example.com", false},
		{"/token", "https", "registry.example.com", false},
	} {
		err := CheckRealm(tc.realm, tc.scheme, tc.host)
		if (err == nil) != tc.ok {
			t.Errorf("%s for %s://%s: err=%v, want ok=%v", tc.realm, tc.scheme, tc.host, err, tc.ok)
		}
		if err != nil && !errdefs.IsPermissionDenied(err) && !errdefs.IsInvalidArgument(err) {
			t.Errorf("%s: unclassified error %v", tc.realm, err)
		}
	}
}

// Pods choose the hosts; the challenges remembered for them stay bounded,
// and the newest host is kept.
func TestChallengesAreBounded(t *testing.T) {
	var c challenges
	for i := range maxChallengeHosts + 100 {
		c.set(fmt.Sprintf("host-%d.example", i), challenge{scheme: schemeBearer})
	}
	if n := len(c.m); n != maxChallengeHosts {
		t.Errorf("%d challenges remembered, want %d", n, maxChallengeHosts)
	}
	if _, ok := c.get(fmt.Sprintf("host-%d.example", maxChallengeHosts+99)); !ok {
		t.Error("the newest host's challenge was dropped")
	}
}

// RFC 7235 allows optional whitespace around "=" in auth-params; a
// challenge written that way keeps its realm, service and scope (with
// containerd's parser they were lost, and the token request went nowhere).
func TestParseChallengeBWS(t *testing.T) {
	h := http.Header{"Www-Authenticate": {`Basic realm="x", Bearer realm = "https://auth.example/token" , service= "reg.example",scope ="repository:a/b:pull" ,error = insufficient_scope`}}
	p, ok := parseChallenge(h)
	want := parsed{challenge: challenge{scheme: schemeBearer, realm: "https://auth.example/token", service: "reg.example"}, scope: "repository:a/b:pull", err: "insufficient_scope"}
	if !ok || p != want {
		t.Fatalf("parsed %+v, want %+v", p, want)
	}
}

// ParseChallenge (what ctr-b9 check reads) reads what pulls read.
func TestParseChallengeExported(t *testing.T) {
	for _, tc := range []struct {
		header string
		want   Challenge
		ok     bool
	}{
		{`Basic realm = "Registry Realm"`, Challenge{Scheme: "basic", Realm: "Registry Realm"}, true},
		{`Basic realm="r", Bearer realm = "https://a/token",service=s, scope="repository:x:pull"`, Challenge{Scheme: "bearer", Realm: "https://a/token", Service: "s", Scope: "repository:x:pull"}, true},
		{`Negotiate abc`, Challenge{}, false},
		{``, Challenge{}, false},
	} {
		got, ok := ParseChallenge(http.Header{"Www-Authenticate": {tc.header}})
		if ok != tc.ok || got != tc.want {
			t.Errorf("%q: %+v, %v; want %+v, %v", tc.header, got, ok, tc.want, tc.ok)
		}
	}
}
