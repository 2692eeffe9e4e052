/*
Copyright The ORAS Authors.
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

// Cases ported from oras-go v2, registry/remote/auth/challenge_test.go
// (Test_parseChallenge, every case, assertions kept): run against this
// package's challenge parser. oras-go returns the parameters of bearer
// challenges only, so for basic and unknown schemes only the scheme is
// compared.

package resolver

import (
	"net/http"
	"reflect"
	"testing"
)

func TestPeerORASParseChallenge(t *testing.T) {
	const (
		SchemeUnknown = "unknown"
		SchemeBasic   = "basic"
		SchemeBearer  = "bearer"
	)
	tests := []struct {
		name       string
		header     string
		wantScheme string
		wantParams map[string]string
	}{
		{
			name:       "empty header",
			wantScheme: SchemeUnknown,
		},
		{
			name:       "unknown scheme",
			header:     "foo bar",
			wantScheme: SchemeUnknown,
		},
		{
			name:       "basic challenge",
			header:     `Basic realm="Test Registry"`,
			wantScheme: SchemeBasic,
		},
		{
			name:       "basic challenge with no parameters",
			header:     "Basic",
			wantScheme: SchemeBasic,
		},
		{
			name:       "basic challenge with no parameters but spaces",
			header:     "Basic  ",
			wantScheme: SchemeBasic,
		},
		{
			name:       "bearer challenge",
			header:     `Bearer realm="https://auth.example.io/token",service="registry.example.io",scope="repository:library/hello-world:pull,push"`,
			wantScheme: SchemeBearer,
			wantParams: map[string]string{
				"realm":   "https://auth.example.io/token",
				"service": "registry.example.io",
				"scope":   "repository:library/hello-world:pull,push",
			},
		},
		{
			name:       "bearer challenge with multiple scopes",
			header:     `Bearer realm="https://auth.example.io/token",service="registry.example.io",scope="repository:library/alpine:pull,push repository:ubuntu:pull"`,
			wantScheme: SchemeBearer,
			wantParams: map[string]string{
				"realm":   "https://auth.example.io/token",
				"service": "registry.example.io",
				"scope":   "repository:library/alpine:pull,push repository:ubuntu:pull",
			},
		},
		{
			name:       "bearer challenge with no parameters",
			header:     "Bearer",
			wantScheme: SchemeBearer,
		},
		{
			name:       "bearer challenge with no parameters but spaces",
			header:     "Bearer  ",
			wantScheme: SchemeBearer,
		},
		{
			name:       "bearer challenge with white spaces",
			header:     `Bearer realm = "https://auth.example.io/token"   ,service=registry.example.io, scope  ="repository:library/hello-world:pull,push"  `,
			wantScheme: SchemeBearer,
			wantParams: map[string]string{
				"realm":   "https://auth.example.io/token",
				"service": "registry.example.io",
				"scope":   "repository:library/hello-world:pull,push",
			},
		},
		{
			name:       "bad bearer challenge (incomplete parameter with spaces)",
			header:     `Bearer realm="https://auth.example.io/token",service`,
			wantScheme: SchemeBearer,
			wantParams: map[string]string{
				"realm": "https://auth.example.io/token",
			},
		},
		{
			name:       "bad bearer challenge (incomplete parameter with no value)",
			header:     `Bearer realm="https://auth.example.io/token",service=`,
			wantScheme: SchemeBearer,
			wantParams: map[string]string{
				"realm": "https://auth.example.io/token",
			},
		},
		{
			name:       "bad bearer challenge (incomplete parameter with spaces)",
			header:     `Bearer realm="https://auth.example.io/token",service= `,
			wantScheme: SchemeBearer,
			wantParams: map[string]string{
				"realm": "https://auth.example.io/token",
			},
		},
		{
			name:       "bad bearer challenge (incomplete quote)",
			header:     `Bearer realm="https://auth.example.io/token",service="registry`,
			wantScheme: SchemeBearer,
			wantParams: map[string]string{
				"realm": "https://auth.example.io/token",
			},
		},
		{
			name:       "bearer challenge with empty parameter value",
			header:     `Bearer realm="https://auth.example.io/token",empty="",service="registry.example.io",scope="repository:library/hello-world:pull,push"`,
			wantScheme: SchemeBearer,
			wantParams: map[string]string{
				"realm":   "https://auth.example.io/token",
				"empty":   "",
				"service": "registry.example.io",
				"scope":   "repository:library/hello-world:pull,push",
			},
		},
		{
			name:       "bearer challenge with escaping parameter value",
			header:     `Bearer foo="foo\"bar",hello="\"hello world\""`,
			wantScheme: SchemeBearer,
			wantParams: map[string]string{
				"foo":   `foo"bar`,
				"hello": `"hello world"`,
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			gotScheme, gotParams := SchemeUnknown, map[string]string(nil)
			if cs := parseAuthHeader(http.Header{"Www-Authenticate": {tt.header}}); len(cs) > 0 {
				switch cs[0].scheme {
				case SchemeBasic:
					gotScheme = SchemeBasic
				case SchemeBearer:
					gotScheme = SchemeBearer
					if len(cs[0].params) > 0 {
						gotParams = cs[0].params
					}
				}
			}
			if gotScheme != tt.wantScheme {
				t.Errorf("parseChallenge() gotScheme = %v, want %v", gotScheme, tt.wantScheme)
			}
			if !reflect.DeepEqual(gotParams, tt.wantParams) {
				t.Errorf("parseChallenge() gotParams = %v, want %v", gotParams, tt.wantParams)
			}
		})
	}
}
