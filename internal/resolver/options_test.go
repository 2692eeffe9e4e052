package resolver

import (
	"crypto/tls"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"
)

// Every Authorizer option refuses a value it cannot use with
// InvalidArgument naming the option and the value, instead of keeping its
// default silently, and applies a good one.
func TestAuthorizerOptionValues(t *testing.T) {
	for _, tt := range []struct {
		name string
		opt  AuthorizerOption
		// want is what the error says besides the option's name; "" for
		// a value that is accepted.
		want  string
		check func(*Authorizer) bool
	}{
		{"WithTokenCacheSize", WithTokenCacheSize(0), "0 is not a positive size", nil},
		{"WithTokenCacheSize", WithTokenCacheSize(-1), "-1 is not a positive size", nil},
		{"WithTokenCacheSize", WithTokenCacheSize(3), "", func(a *Authorizer) bool { return a.tokenCap == 3 }},
		{"WithClock", WithClock(nil), "nil function", nil},
		{"WithClock", WithClock(func() time.Time { return time.Unix(42, 0) }), "", func(a *Authorizer) bool { return a.now().Unix() == 42 }},
		{"WithMaxTokenMargin", WithMaxTokenMargin(-time.Second), "-1s is negative", nil},
		{"WithMaxTokenMargin", WithMaxTokenMargin(0), "", func(a *Authorizer) bool { return a.maxMargin == 0 }},
		{"WithMaxTokenMargin", WithMaxTokenMargin(time.Minute), "", func(a *Authorizer) bool { return a.maxMargin == time.Minute }},
		{"WithFetchTimeout", WithFetchTimeout(0), "0s is not a positive duration", nil},
		{"WithFetchTimeout", WithFetchTimeout(5 * time.Second), "", func(a *Authorizer) bool { return a.fetchTimeout == 5*time.Second }},
		{"WithClientID", WithClientID(""), "an empty client_id", nil},
		{"WithClientID", WithClientID("node-7"), "", func(a *Authorizer) bool { return a.clientID == "node-7" }},
	} {
		a, err := NewAuthorizer(tt.opt)
		checkOption(t, tt.name, tt.want, a, err, tt.check)
	}
	// The token cache is made with the size asked for.
	a := mustAuthorizer(t, WithTokenCacheSize(3))
	if a.tokens == nil {
		t.Fatal("no token cache")
	}
}

// Every Resolver option refuses a value it cannot use the same way (a
// trusted mirror that is not a host is refused, not skipped), and applies
// a good one.
func TestResolverOptionValues(t *testing.T) {
	auth := mustAuthorizer(t)
	for _, tt := range []struct {
		name  string
		opt   Option
		want  string
		check func(*Resolver) bool
	}{
		{"WithAuthorizer", WithAuthorizer(nil), "nil *Authorizer", nil},
		{"WithAuthorizer", WithAuthorizer(auth), "", func(r *Resolver) bool { return r.auth == auth }},
		{"WithDefaultScheme", WithDefaultScheme(""), `"" is not "http" or "https"`, nil},
		{"WithDefaultScheme", WithDefaultScheme("ftp"), `"ftp" is not "http" or "https"`, nil},
		{"WithDefaultScheme", WithDefaultScheme("http"), "", func(r *Resolver) bool { return r.defaultScheme == "http" }},
		{"WithTrustedMirrors", WithTrustedMirrors("mirror.example.com", "not a host"), `[1] "not a host" is not a registry host`, nil},
		{"WithTrustedMirrors", WithTrustedMirrors(""), `[0] "" is not a registry host`, nil},
		{"WithTrustedMirrors", WithTrustedMirrors("Mirror.Example.com:5000"), "", func(r *Resolver) bool { return r.trusted["mirror.example.com:5000"] }},
		{"WithConfigPath", WithConfigPath("/a:/b"), "", func(r *Resolver) bool { return len(r.roots) == 2 }},
		{"WithConfigPath", WithConfigPath(""), "", func(r *Resolver) bool { return len(r.roots) == 0 }},
		{"WithHeaders", WithHeaders(http.Header{"X-A": {"1"}}), "", func(r *Resolver) bool { return r.headers.Get("X-A") == "1" }},
		{"WithTLSConfig", WithTLSConfig(&tls.Config{ServerName: "s"}), "", func(r *Resolver) bool { return r.tlsConfig.ServerName == "s" }},
		{"WithDetector", WithDetector(nil), "", func(r *Resolver) bool { return r.auth != nil }},
	} {
		r, err := New(tt.opt)
		checkOption(t, tt.name, tt.want, r, err, tt.check)
	}
}

// checkOption checks what New made of one option: a good value (want "")
// accepted and applied, a bad one refused with InvalidArgument naming the
// option and saying want, and no value returned with the error.
func checkOption[T any](t *testing.T, option, want string, v *T, err error, applied func(*T) bool) {
	t.Helper()
	if want == "" {
		if err != nil {
			t.Errorf("%s: a good value refused: %v", option, err)
		} else if !applied(v) {
			t.Errorf("%s: a good value accepted but not applied", option)
		}
		return
	}
	if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "resolver."+option+": ") || !strings.Contains(err.Error(), want) {
		t.Errorf("%s: error %v, want InvalidArgument naming resolver.%s and saying %q", option, err, option, want)
	}
	if v != nil {
		t.Errorf("%s: a refused option still returned a value", option)
	}
}
