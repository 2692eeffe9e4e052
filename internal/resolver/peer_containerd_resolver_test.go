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

// Cases ported from containerd v2.4.2, core/remotes/docker/resolver_test.go:
// TestBasicResolver, TestAnonymousTokenResolver, TestBasicAuthTokenResolver,
// TestRefreshTokenResolver, TestPostBasicAuthTokenResolver,
// TestBasicAuthResolver, TestBadTokenResolver, TestMissingBasicAuthResolver
// and TestWrongBasicAuthResolver, with their servers (withTokenServer,
// withBasicAuthServer, tlsServer) and runBasicTest's assertions (resolve,
// fetch the manifest, two references, each fetched and fetched by digest
// with its digest checked). Construction changed: the hosts carry this
// package's Authorizer, bound to the same credentials. Assertions kept,
// except TestMissingBasicAuthResolver's message ("no basic auth
// credentials" is containerd's wording; the error class is asserted).

package resolver

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"github.com/containerd/containerd/v2/core/remotes"
	"github.com/containerd/containerd/v2/core/remotes/docker"
	remoteerrors "github.com/containerd/containerd/v2/core/remotes/errors"
	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/beam-cloud/b9-resolver/internal/keychain"
	"github.com/beam-cloud/b9-resolver/internal/keychain/registry"
	"github.com/beam-cloud/b9-resolver/internal/secret"
)

// peerCreds adapts containerd's creds callback (username, secret; an empty
// username with a secret is a refresh token) to Credentials.
func peerCreds(creds func(string) (string, string, error)) Credentials {
	if creds == nil {
		return Anonymous
	}
	return CredentialFunc(func(_ context.Context, reg registry.Registry, _ bool) (keychain.Credential, error) {
		u, p, err := creds(reg.Host)
		if err != nil || p == "" {
			return keychain.Anonymous(reg), err
		}
		return keychain.Credential{Source: "peer test", Username: u, Secret: secret.New(p), IdentityToken: u == ""}, nil
	})
}

type peerOptions struct {
	hosts docker.RegistryHosts
}

// peerHosts is ConfigureDefaultRegistries(WithClient, WithAuthorizer) with
// this package's Authorizer bound to creds.
func peerHosts(client *http.Client, creds func(string) (string, string, error)) docker.RegistryHosts {
	a, err := NewAuthorizer()
	return func(host string) ([]docker.RegistryHost, error) {
		if err != nil {
			return nil, err
		}
		return []docker.RegistryHost{{
			Client: client, Host: host, Scheme: "https", Path: "/v2",
			Capabilities: docker.HostCapabilityPull | docker.HostCapabilityResolve,
			Authorizer: a.For(Binding{Host: host, Scheme: "https", Registry: registry.Registry{Host: host},
				Credentials: peerCreds(creds), Client: client}),
		}}, nil
	}
}

func TestPeerContainerdBasicResolver(t *testing.T) {
	basicAuth := func(h http.Handler) (string, peerOptions, func()) {
		// Wrap with basic auth
		wrapped := http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
			username, password, ok := r.BasicAuth()
			if !ok || username != "user1" || password != "password1" {
				rw.Header().Set("WWW-Authenticate", "Basic realm=localhost")
				rw.WriteHeader(http.StatusUnauthorized)
				return
			}
			h.ServeHTTP(rw, r)
		})

		base, client, close := peerTLSServer(wrapped)
		return base, peerOptions{hosts: peerHosts(client, func(string) (string, string, error) { return "user1", "password1", nil })}, close
	}
	peerRunBasicTest(t, "testname", basicAuth)
}

func TestPeerContainerdAnonymousTokenResolver(t *testing.T) {
	th := http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet {
			rw.WriteHeader(http.StatusMethodNotAllowed)
			return
		}
		rw.Header().Set("Content-Type", "application/json")
		rw.WriteHeader(http.StatusOK)
		rw.Write([]byte(`{"access_token":"perfectlyvalidopaquetoken"}`))
	})

	peerRunBasicTest(t, "testname", peerWithTokenServer(th, nil))
}

func TestPeerContainerdBasicAuthTokenResolver(t *testing.T) {
	th := http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet {
			rw.WriteHeader(http.StatusMethodNotAllowed)
			return
		}
		rw.Header().Set("Content-Type", "application/json")
		rw.WriteHeader(http.StatusOK)
		username, password, ok := r.BasicAuth()
		if !ok || username != "user1" || password != "password1" {
			rw.Write([]byte(`{"access_token":"insufficientscope"}`))
		} else {
			rw.Write([]byte(`{"access_token":"perfectlyvalidopaquetoken"}`))
		}
	})
	creds := func(string) (string, string, error) {
		return "user1", "password1", nil
	}

	peerRunBasicTest(t, "testname", peerWithTokenServer(th, creds))
}

func TestPeerContainerdRefreshTokenResolver(t *testing.T) {
	th := http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			rw.WriteHeader(http.StatusMethodNotAllowed)
			return
		}
		rw.Header().Set("Content-Type", "application/json")
		rw.WriteHeader(http.StatusOK)

		r.ParseForm()
		if r.PostForm.Get("grant_type") != "refresh_token" || r.PostForm.Get("refresh_token") != "somerefreshtoken" {
			rw.Write([]byte(`{"access_token":"insufficientscope"}`))
		} else {
			rw.Write([]byte(`{"access_token":"perfectlyvalidopaquetoken"}`))
		}
	})
	creds := func(string) (string, string, error) {
		return "", "somerefreshtoken", nil
	}

	peerRunBasicTest(t, "testname", peerWithTokenServer(th, creds))
}

func TestPeerContainerdPostBasicAuthTokenResolver(t *testing.T) {
	th := http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			rw.WriteHeader(http.StatusMethodNotAllowed)
			return
		}
		rw.Header().Set("Content-Type", "application/json")
		rw.WriteHeader(http.StatusOK)

		r.ParseForm()
		if r.PostForm.Get("grant_type") != "password" || r.PostForm.Get("username") != "user1" || r.PostForm.Get("password") != "password1" {
			rw.Write([]byte(`{"access_token":"insufficientscope"}`))
		} else {
			rw.Write([]byte(`{"access_token":"perfectlyvalidopaquetoken"}`))
		}
	})
	creds := func(string) (string, string, error) {
		return "user1", "password1", nil
	}

	peerRunBasicTest(t, "testname", peerWithTokenServer(th, creds))
}

func TestPeerContainerdBasicAuthResolver(t *testing.T) {
	creds := func(string) (string, string, error) {
		return "totallyvaliduser", "totallyvalidpassword", nil
	}

	peerRunBasicTest(t, "testname", peerWithBasicAuthServer(creds))
}

func TestPeerContainerdBadTokenResolver(t *testing.T) {
	th := http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			rw.WriteHeader(http.StatusMethodNotAllowed)
			return
		}
		rw.Header().Set("Content-Type", "application/json")
		rw.WriteHeader(http.StatusOK)
		rw.Write([]byte(`{"access_token":"insufficientscope"}`))
	})
	creds := func(string) (string, string, error) {
		return "", "somerefreshtoken", nil
	}

	ctx := context.Background()
	h := peerNewContent(ocispec.MediaTypeImageManifest, []byte("not anything parse-able"))

	base, ro, close := peerWithTokenServer(th, creds)(h)
	defer close()

	resolver := docker.NewResolver(docker.ResolverOptions{Hosts: ro.hosts})
	image := fmt.Sprintf("%s/doesntmatter:sometag", base)

	_, _, err := resolver.Resolve(ctx, image)
	if err == nil {
		t.Fatal("Expected error getting token with inssufficient scope")
	}
	if !errors.Is(err, docker.ErrInvalidAuthorization) {
		t.Fatal(err)
	}
}

func TestPeerContainerdMissingBasicAuthResolver(t *testing.T) {
	creds := func(string) (string, string, error) {
		return "", "", nil
	}

	ctx := context.Background()
	h := peerNewContent(ocispec.MediaTypeImageManifest, []byte("not anything parse-able"))

	base, ro, close := peerWithBasicAuthServer(creds)(h)
	defer close()

	resolver := docker.NewResolver(docker.ResolverOptions{Hosts: ro.hosts})
	image := fmt.Sprintf("%s/doesntmatter:sometag", base)

	_, _, err := resolver.Resolve(ctx, image)
	if err == nil {
		t.Fatal("Expected error getting token with inssufficient scope")
	}
	if !errors.Is(err, docker.ErrInvalidAuthorization) {
		t.Fatal(err)
	}
}

func TestPeerContainerdWrongBasicAuthResolver(t *testing.T) {
	creds := func(string) (string, string, error) {
		return "totallyvaliduser", "definitelythewrongpassword", nil
	}

	ctx := context.Background()
	h := peerNewContent(ocispec.MediaTypeImageManifest, []byte("not anything parse-able"))

	base, ro, close := peerWithBasicAuthServer(creds)(h)
	defer close()

	resolver := docker.NewResolver(docker.ResolverOptions{Hosts: ro.hosts})
	image := fmt.Sprintf("%s/doesntmatter:sometag", base)

	_, _, err := resolver.Resolve(ctx, image)
	if err == nil {
		t.Fatal("Expected error getting token with inssufficient scope")
	}
	var rerr remoteerrors.ErrUnexpectedStatus
	if !errors.As(err, &rerr) {
		t.Fatal(err)
	}
	if rerr.StatusCode != 403 {
		t.Fatalf("expected 403 status code, got %d", rerr.StatusCode)
	}
}

func peerWithTokenServer(th http.Handler, creds func(string) (string, string, error)) func(h http.Handler) (string, peerOptions, func()) {
	return func(h http.Handler) (string, peerOptions, func()) {
		s := httptest.NewUnstartedServer(th)
		s.StartTLS()

		cert, _ := x509.ParseCertificate(s.TLS.Certificates[0].Certificate[0])
		tokenBase := s.URL + "/token"

		// Wrap with token auth
		wrapped := http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
			auth := strings.ToLower(r.Header.Get("Authorization"))
			if auth != "bearer perfectlyvalidopaquetoken" {
				authHeader := fmt.Sprintf("Bearer realm=%q,service=registry,scope=\"repository:testname:pull,pull\"", tokenBase)
				if strings.HasPrefix(auth, "bearer ") {
					authHeader = authHeader + ",error=" + auth[7:]
				}
				rw.Header().Set("WWW-Authenticate", authHeader)
				rw.WriteHeader(http.StatusUnauthorized)
				return
			}
			h.ServeHTTP(rw, r)
		})

		base, client, close := peerTLSServer(wrapped)
		client.Transport.(*http.Transport).TLSClientConfig.RootCAs.AddCert(cert)
		return base, peerOptions{hosts: peerHosts(client, creds)}, func() {
			s.Close()
			close()
		}
	}
}

func peerWithBasicAuthServer(creds func(string) (string, string, error)) func(h http.Handler) (string, peerOptions, func()) {
	return func(h http.Handler) (string, peerOptions, func()) {
		// Wrap with basic auth
		wrapped := http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
			user, password, ok := r.BasicAuth()
			if ok {
				if user != "totallyvaliduser" || password != "totallyvalidpassword" {
					rw.WriteHeader(http.StatusForbidden)
					rw.Write([]byte(`{"errors":[{"code":"DENIED"}]}`))
					return
				}
			} else {
				authHeader := "Basic realm=\"testserver\""
				rw.Header().Set("WWW-Authenticate", authHeader)
				rw.WriteHeader(http.StatusUnauthorized)
				return
			}
			h.ServeHTTP(rw, r)
		})

		base, client, close := peerTLSServer(wrapped)
		return base, peerOptions{hosts: peerHosts(client, creds)}, close
	}
}

func peerTLSServer(h http.Handler) (string, *http.Client, func()) {
	s := httptest.NewUnstartedServer(h)
	s.StartTLS()

	capool := x509.NewCertPool()
	cert, _ := x509.ParseCertificate(s.TLS.Certificates[0].Certificate[0])
	capool.AddCert(cert)

	client := &http.Client{
		Transport: &http.Transport{
			TLSClientConfig: &tls.Config{
				RootCAs: capool,
			},
		},
	}
	base := s.URL[8:] // strip "https://"
	return base, client, s.Close
}

func peerRunBasicTest(t *testing.T, name string, sf func(h http.Handler) (string, peerOptions, func())) {
	var (
		ctx = context.Background()
		tag = "latest"
		r   = http.NewServeMux()
	)

	m := peerNewManifest(
		peerNewContent(ocispec.MediaTypeImageConfig, []byte("1")),
		peerNewContent(ocispec.MediaTypeImageLayerGzip, []byte("2")),
	)
	mc := peerNewContent(ocispec.MediaTypeImageManifest, m.OCIManifest())
	m.RegisterHandler(r, name)
	r.Handle(fmt.Sprintf("/v2/%s/manifests/%s", name, tag), mc)
	r.Handle(fmt.Sprintf("/v2/%s/manifests/%s", name, mc.Digest()), mc)

	base, ro, close := sf(r)
	defer close()

	resolver := docker.NewResolver(docker.ResolverOptions{Hosts: ro.hosts})
	image := fmt.Sprintf("%s/%s:%s", base, name, tag)

	_, d, err := resolver.Resolve(ctx, image)
	if err != nil {
		t.Fatal(err)
	}
	f, err := resolver.Fetcher(ctx, image)
	if err != nil {
		t.Fatal(err)
	}

	refs, err := peerTestOCIManifest(ctx, f, d)
	if err != nil {
		t.Fatal(err)
	}

	if len(refs) != 2 {
		t.Fatalf("Unexpected number of references: %d, expected 2", len(refs))
	}

	for _, ref := range refs {
		if err := peerTestFetch(ctx, f, ref); err != nil {
			t.Fatal(err)
		}
	}
}

func peerTestFetch(ctx context.Context, f remotes.Fetcher, desc ocispec.Descriptor) error {
	r, err := f.Fetch(ctx, desc)
	if err != nil {
		return err
	}
	dgstr := desc.Digest.Algorithm().Digester()
	io.Copy(dgstr.Hash(), r)
	if dgstr.Digest() != desc.Digest {
		return fmt.Errorf("content mismatch: %s != %s", dgstr.Digest(), desc.Digest)
	}

	fByDigest, ok := f.(remotes.FetcherByDigest)
	if !ok {
		return fmt.Errorf("fetcher %T does not implement FetcherByDigest", f)
	}
	r2, desc2, err := fByDigest.FetchByDigest(ctx, desc.Digest)
	if err != nil {
		return fmt.Errorf("FetcherByDigest: failed to fetch %v: %w", desc.Digest, err)
	}
	if desc2.Size != desc.Size {
		return fmt.Errorf("FetcherByDigest: size mismatch: %d != %d", desc2.Size, desc.Size)
	}
	dgstr2 := desc.Digest.Algorithm().Digester()
	if _, err = io.Copy(dgstr2.Hash(), r2); err != nil {
		return fmt.Errorf("FetcherByDigest: failed to copy: %w", err)
	}
	if dgstr2.Digest() != desc.Digest {
		return fmt.Errorf("FetcherByDigest: content mismatch: %s != %s", dgstr2.Digest(), desc.Digest)
	}
	return nil
}

func peerTestOCIManifest(ctx context.Context, f remotes.Fetcher, desc ocispec.Descriptor) ([]ocispec.Descriptor, error) {
	r, err := f.Fetch(ctx, desc)
	if err != nil {
		return nil, fmt.Errorf("failed to fetch %s: %w", desc.Digest, err)
	}
	p, err := io.ReadAll(r)
	if err != nil {
		return nil, err
	}
	if dgst := desc.Digest.Algorithm().FromBytes(p); dgst != desc.Digest {
		return nil, fmt.Errorf("digest mismatch: %s != %s", dgst, desc.Digest)
	}

	var manifest ocispec.Manifest
	if err := json.Unmarshal(p, &manifest); err != nil {
		return nil, err
	}

	var descs []ocispec.Descriptor

	descs = append(descs, manifest.Config)
	descs = append(descs, manifest.Layers...)

	return descs, nil
}

type peerContent struct {
	mediaType string
	content   []byte
}

func peerNewContent(mediaType string, b []byte) peerContent {
	return peerContent{mediaType: mediaType, content: b}
}

func (tc peerContent) Descriptor() ocispec.Descriptor {
	return ocispec.Descriptor{
		MediaType: tc.mediaType,
		Digest:    digest.FromBytes(tc.content),
		Size:      int64(len(tc.content)),
	}
}

func (tc peerContent) Digest() digest.Digest {
	return digest.FromBytes(tc.content)
}

func (tc peerContent) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Add("Content-Type", tc.mediaType)
	w.Header().Add("Content-Length", strconv.Itoa(len(tc.content)))
	w.Header().Add("Docker-Content-Digest", tc.Digest().String())
	w.WriteHeader(http.StatusOK)
	w.Write(tc.content)
}

type peerManifest struct {
	config     peerContent
	references []peerContent
}

func peerNewManifest(config peerContent, refs ...peerContent) peerManifest {
	return peerManifest{
		config:     config,
		references: refs,
	}
}

func (m peerManifest) OCIManifest() []byte {
	manifest := ocispec.Manifest{
		Versioned: specs.Versioned{
			SchemaVersion: 1,
		},
		Config: m.config.Descriptor(),
		Layers: make([]ocispec.Descriptor, len(m.references)),
	}
	for i, c := range m.references {
		manifest.Layers[i] = c.Descriptor()
	}
	b, _ := json.Marshal(manifest)
	return b
}

func (m peerManifest) RegisterHandler(r *http.ServeMux, name string) {
	for _, c := range append(m.references, m.config) {
		r.Handle(fmt.Sprintf("/v2/%s/blobs/%s", name, c.Digest()), c)
	}
}
