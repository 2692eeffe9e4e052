/*
   Copyright The containerd Authors.

   Licensed under the Apache License, Version 2.0 (the "License");
   you may not use this file except in compliance with the License.
   You may obtain a copy of the License at

       http://www.apache.org/licenses/LICENSE-2.0

   Unless required by applicable law or agreed to in writing, software
   distributed under the License is distributed on an "AS IS" BASIS,
   WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
   See the License for the specific language governing permissions and
   limitations under the License.
*/

// Cases ported from containerd v2.4.2, core/remotes/docker/auth/parse_test.go
// (TestParseAuthHeaderBearer, TestParseAuthHeader, FuzzParseAuthHeader's
// seed), assertions kept, run against this package's challenge parser;
// the fuzz target adds invariants of its own.

package resolver

import (
	"fmt"
	"net/http"
	"reflect"
	"strings"
	"testing"
)

func TestPeerContainerdParseAuthHeaderBearer(t *testing.T) {
	headerTemplate := `Bearer realm="%s",service="%s",scope="%s"`

	for _, tc := range []struct {
		name    string
		realm   string
		service string
		scope   string
	}{
		{
			name:    "SingleScope",
			realm:   "https://auth.docker.io/token",
			service: "registry.docker.io",
			scope:   "repository:foo/bar:pull,push",
		},
		{
			name:    "MultipleScopes",
			realm:   "https://auth.docker.io/token",
			service: "registry.docker.io",
			scope:   "repository:foo/bar:pull,push repository:foo/baz:pull repository:foo/foo:push",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			expected := []authChallenge{
				{
					scheme: "bearer",
					params: map[string]string{
						"realm":   tc.realm,
						"service": tc.service,
						"scope":   tc.scope,
					},
				},
			}

			hdr := http.Header{
				http.CanonicalHeaderKey("WWW-Authenticate"): []string{fmt.Sprintf(
					headerTemplate, tc.realm, tc.service, tc.scope,
				)},
			}
			actual := parseAuthHeader(hdr)
			if !reflect.DeepEqual(expected, actual) {
				t.Fatalf("expected %v, but got %v", expected, actual)
			}
		})
	}
}

func TestPeerContainerdParseAuthHeader(t *testing.T) {
	v := `Bearer realm="https://auth.example.io/token",empty="",service="registry.example.io",scope="repository:library/hello-world:pull,push"`
	h := http.Header{http.CanonicalHeaderKey("WWW-Authenticate"): []string{v}}
	challenge := parseAuthHeader(h)

	actual, ok := challenge[0].params["empty"]
	if !ok || actual != "" {
		t.Errorf("empty: %q, %v", actual, ok)
	}
	actual, ok = challenge[0].params["service"]
	if !ok || actual != "registry.example.io" {
		t.Errorf("service: %q, %v", actual, ok)
	}
}

// The parser never panics or loops, and whatever it returns is well formed:
// lower-case token schemes, lower-case parameter names, a bounded number
// of parameters. (`make fuzz` runs it.)
func FuzzParseAuthHeader(f *testing.F) {
	f.Add(`Bearer realm="https://example.com/token",service="example.com",scope="repository:foo/bar:pull,push"`)
	f.Add(`Bearer realm = "https://auth.example.io/token" , service= registry , scope ="a b"`)
	f.Add(`Basic realm="x", Bearer realm="y",error="insufficient_scope"`)
	f.Add(`Newauth realm="apps", type=1, title="Login to \"apps\"", Basic realm="simple"`)
	f.Add(`Bearer realm="unterminated`)
	f.Fuzz(func(t *testing.T, v string) {
		h := http.Header{http.CanonicalHeaderKey("WWW-Authenticate"): []string{v}}
		for _, c := range parseAuthHeader(h) {
			if c.scheme == "" || c.scheme != strings.ToLower(c.scheme) || strings.IndexFunc(c.scheme, func(r rune) bool { return r > 127 || !isTokenChar(byte(r)) }) >= 0 {
				t.Fatalf("scheme %q from %q", c.scheme, v)
			}
			if len(c.params) > maxChallengeParams {
				t.Fatalf("%d params from %q", len(c.params), v)
			}
			for k := range c.params {
				if k == "" || k != strings.ToLower(k) {
					t.Fatalf("param name %q from %q", k, v)
				}
			}
		}
	})
}
