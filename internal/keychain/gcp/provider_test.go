package gcp

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/errdefs"

	"github.com/beam-cloud/b9-resolver/internal/keychain/document"
	"github.com/beam-cloud/b9-resolver/internal/testutil/cloudemu"
)

func TestMint(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		doc      func(tb testing.TB, key []byte, dir string) document.Document
		host     string
		calls    int
		provider string
		canary   bool // the secret is the planted access token
	}{
		{name: "inline key JSON", host: "gcr.io", calls: 1, provider: "gcp/service-account",
			doc: func(tb testing.TB, key []byte, _ string) document.Document { return keyDoc(tb, key) }},
		{name: "base64 key", host: "us-docker.pkg.dev", calls: 1, provider: "gcp/service-account",
			doc: func(tb testing.TB, key []byte, _ string) document.Document {
				return gcpDoc(tb, document.KeyGoogleAppCreds, base64.StdEncoding.EncodeToString(key))
			}},
		{name: "key file in an allowed directory", host: "docker.europe-west3.rep.pkg.dev", calls: 1, provider: "gcp/service-account",
			doc: func(tb testing.TB, key []byte, dir string) document.Document {
				path := filepath.Join(dir, "sa.json")
				if err := os.WriteFile(path, key, 0o600); err != nil {
					tb.Fatal(err)
				}
				return gcpDoc(tb, document.KeyGoogleAppCreds, path)
			}},
		{name: "access token passes through", host: "gcr.io", calls: 0, provider: "gcp/access-token", canary: true,
			doc: func(tb testing.TB, _ []byte, _ string) document.Document {
				return gcpDoc(tb, document.KeyGCPAccessToken, tokenCanary, document.KeyGCPProjectID, "proj")
			}},
		{name: "a key wins over a token", host: "gcr.io", calls: 1, provider: "gcp/service-account",
			doc: func(tb testing.TB, key []byte, _ string) document.Document {
				return gcpDoc(tb, document.KeyGoogleAppCreds, string(key), document.KeyGCPAccessToken, tokenCanary)
			}},
		{name: "a generic mirror", host: "mirror.example.com", calls: 1, provider: "gcp/service-account",
			doc: func(tb testing.TB, key []byte, _ string) document.Document { return keyDoc(tb, key) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			g := cloudemu.NewGCP(t)
			key := g.NewServiceAccountKey(t, saEmail)
			dir := t.TempDir()
			p := newProvider(WithKeyFileDirs(dir))
			m, err := p.Mint(context.Background(), reg(tt.host), tt.doc(t, key, dir))
			if err != nil {
				t.Fatalf("Mint: %v", err)
			}
			if m.Username != Username || m.Provider != tt.provider || m.IdentityToken {
				t.Errorf("minted %+v", m)
			}
			if n := g.Calls(cloudemu.APIGoogleToken); n != tt.calls {
				t.Errorf("token calls %d, want %d", n, tt.calls)
			}
			if tt.canary {
				if m.Secret.Reveal() != tokenCanary {
					t.Error("the access token was not passed through")
				}
				if d := time.Until(m.ExpiresAt); d < 59*time.Minute || d > time.Hour {
					t.Errorf("assumed life %v, want ~1h", d)
				}
				return
			}
			if !g.Valid(m.Secret.Reveal(), time.Now()) {
				t.Error("the emulator does not accept the minted token")
			}
			if d := m.ExpiresAt.Sub(g.ExpiresAt(m.Secret.Reveal())); d < -time.Second || d > time.Second {
				t.Errorf("expiry differs from the emulator's by %v", d)
			}
			if s := g.Scopes(); len(s) != 1 || s[0] != DefaultScope {
				t.Errorf("scopes asked %v, want [%s]", s, DefaultScope)
			}
		})
	}
}

func TestMintErrors(t *testing.T) {
	t.Parallel()
	outside := t.TempDir()
	tests := []struct {
		name  string
		doc   func(tb testing.TB, g *cloudemu.GCP, key []byte, dir string) document.Document
		setup func(g *cloudemu.GCP)
		opts  []Option
		host  string
		class func(error) bool
		want  string
		calls int
	}{
		{name: "key path, no directory allowed", class: errdefs.IsInvalidArgument, want: "does not read key files",
			opts: []Option{WithKeyFileDirs()},
			doc: func(tb testing.TB, _ *cloudemu.GCP, key []byte, dir string) document.Document {
				path := filepath.Join(dir, "sa.json")
				_ = os.WriteFile(path, key, 0o600)
				return gcpDoc(tb, document.KeyGoogleAppCreds, path)
			}},
		{name: "key path escaping the allowed directory by symlink", class: errdefs.IsInvalidArgument, want: "outside the directories",
			doc: func(tb testing.TB, _ *cloudemu.GCP, key []byte, dir string) document.Document {
				target := filepath.Join(outside, "node-key.json")
				_ = os.WriteFile(target, key, 0o600)
				link := filepath.Join(dir, "link.json")
				if err := os.Symlink(target, link); err != nil {
					tb.Fatal(err)
				}
				return gcpDoc(tb, document.KeyGoogleAppCreds, link)
			}},
		{name: "a FIFO in the allowed directory (would block the mint)", class: errdefs.IsInvalidArgument, want: "not a regular key file",
			doc: func(tb testing.TB, _ *cloudemu.GCP, _ []byte, dir string) document.Document {
				fifo := filepath.Join(dir, "fifo.json")
				if err := syscall.Mkfifo(fifo, 0o600); err != nil {
					tb.Fatal(err)
				}
				return gcpDoc(tb, document.KeyGoogleAppCreds, fifo)
			}},
		{name: "a directory in the allowed directory", class: errdefs.IsInvalidArgument, want: "not a regular key file",
			doc: func(tb testing.TB, _ *cloudemu.GCP, _ []byte, dir string) document.Document {
				sub := filepath.Join(dir, "sub")
				if err := os.Mkdir(sub, 0o700); err != nil {
					tb.Fatal(err)
				}
				return gcpDoc(tb, document.KeyGoogleAppCreds, sub)
			}},
		{name: "not a key at all", class: errdefs.IsInvalidArgument, want: "neither service-account key JSON",
			doc: func(tb testing.TB, _ *cloudemu.GCP, _ []byte, _ string) document.Document {
				return gcpDoc(tb, document.KeyGoogleAppCreds, "CANARY-not-a-key")
			}},
		{name: "malformed JSON", class: errdefs.IsInvalidArgument, want: "malformed at byte",
			doc: func(tb testing.TB, _ *cloudemu.GCP, _ []byte, _ string) document.Document {
				return gcpDoc(tb, document.KeyGoogleAppCreds, `{"type":"service_account","private_key":CANARY-x}`)
			}},
		{name: "external_account config", class: errdefs.IsInvalidArgument, want: "only service_account keys",
			doc: func(tb testing.TB, _ *cloudemu.GCP, _ []byte, _ string) document.Document {
				return gcpDoc(tb, document.KeyGoogleAppCreds, `{"type":"external_account","credential_source":{"file":"/var/run/secrets/CANARY"}}`)
			}},
		{name: "token_uri on loopback refused by default", class: errdefs.IsInvalidArgument, want: "token_uri is not a token endpoint",
			opts: []Option{WithTokenURICheck(GoogleTokenURI)},
			doc:  func(tb testing.TB, _ *cloudemu.GCP, key []byte, _ string) document.Document { return keyDoc(tb, key) }},
		{name: "token_uri elsewhere", class: errdefs.IsInvalidArgument, want: "token_uri is not a token endpoint",
			doc: func(tb testing.TB, _ *cloudemu.GCP, key []byte, _ string) document.Document {
				return keyDoc(tb, []byte(strings.Replace(string(key), `"token_uri":"http://127.0.0.1`, `"token_uri":"http://169.254.169.254`, 1)))
			}},
		{name: "key not registered (wrong key)", class: errdefs.IsUnauthorized, want: "refused the service-account key: HTTP 400 invalid_grant", calls: 1,
			doc: func(tb testing.TB, g *cloudemu.GCP, key []byte, _ string) document.Document {
				g.NewServiceAccountKey(tb, saEmail) // replaces the registered key
				return keyDoc(tb, key)
			}},
		{name: "account disabled", class: errdefs.IsUnauthorized, want: "Invalid JWT Signature", calls: 1,
			setup: func(g *cloudemu.GCP) { g.DisableServiceAccount(saEmail) },
			doc:   func(tb testing.TB, _ *cloudemu.GCP, key []byte, _ string) document.Document { return keyDoc(tb, key) }},
		{name: "throttled every attempt", class: errdefs.IsUnavailable, want: "throttled (3 attempts): HTTP 429 rate_limit_exceeded", calls: 3,
			setup: func(g *cloudemu.GCP) { g.Fail(cloudemu.APIGoogleToken, cloudemu.Throttle, -1) },
			doc:   func(tb testing.TB, _ *cloudemu.GCP, key []byte, _ string) document.Document { return keyDoc(tb, key) }},
		{name: "503 every attempt", class: errdefs.IsUnavailable, want: "unavailable (3 attempts): HTTP 503", calls: 3,
			setup: func(g *cloudemu.GCP) { g.Fail(cloudemu.APIGoogleToken, cloudemu.Unavailable, -1) },
			doc:   func(tb testing.TB, _ *cloudemu.GCP, key []byte, _ string) document.Document { return keyDoc(tb, key) }},
		{name: "tokens always about to expire", class: errdefs.IsUnavailable, want: "token expires too soon", calls: 3,
			setup: func(g *cloudemu.GCP) { g.Fail(cloudemu.APIGoogleToken, cloudemu.IssueExpired, -1) },
			doc:   func(tb testing.TB, _ *cloudemu.GCP, key []byte, _ string) document.Document { return keyDoc(tb, key) }},
		{name: "endpoint down", class: errdefs.IsUnavailable, want: "unreachable",
			setup: func(g *cloudemu.GCP) { g.Close() },
			doc:   func(tb testing.TB, _ *cloudemu.GCP, key []byte, _ string) document.Document { return keyDoc(tb, key) }},
		{name: "no key and ambient disabled", class: errdefs.IsInvalidArgument, want: "credentials.GOOGLE_APPLICATION_CREDENTIALS: missing",
			doc: func(tb testing.TB, _ *cloudemu.GCP, _ []byte, _ string) document.Document {
				return gcpDoc(tb, document.KeyGCPProjectID, "proj")
			}},
		{name: "not a Google registry", host: "123456789012.dkr.ecr.us-west-2.amazonaws.com", class: errdefs.IsInvalidArgument, want: "type gcp cannot make credentials",
			doc: func(tb testing.TB, _ *cloudemu.GCP, key []byte, _ string) document.Document { return keyDoc(tb, key) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			g := cloudemu.NewGCP(t)
			key := g.NewServiceAccountKey(t, saEmail)
			dir := t.TempDir()
			doc := tt.doc(t, g, key, dir)
			if tt.setup != nil {
				tt.setup(g)
			}
			host := tt.host
			if host == "" {
				host = "gcr.io"
			}
			p := newProvider(append([]Option{WithKeyFileDirs(dir)}, tt.opts...)...)
			_, err := p.Mint(context.Background(), reg(host), doc)
			if err == nil {
				t.Fatal("Mint succeeded")
			}
			if !tt.class(err) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q: want class %v and text %q", err, tt.class(err), tt.want)
			}
			if n := g.Calls(cloudemu.APIGoogleToken); n != tt.calls {
				t.Errorf("token calls %d, want %d", n, tt.calls)
			}
			assertNoSecrets(t, key, err.Error())
		})
	}
}

func TestThrottleRecovers(t *testing.T) {
	t.Parallel()
	g := cloudemu.NewGCP(t)
	key := g.NewServiceAccountKey(t, saEmail)
	g.Fail(cloudemu.APIGoogleToken, cloudemu.Throttle, 2)
	m, err := newProvider().Mint(context.Background(), reg("gcr.io"), keyDoc(t, key))
	if err != nil {
		t.Fatal(err)
	}
	if n := g.Calls(cloudemu.APIGoogleToken); n != 3 || !g.Valid(m.Secret.Reveal(), time.Now()) {
		t.Errorf("calls %d (want 3), valid %v", n, g.Valid(m.Secret.Reveal(), time.Now()))
	}
}

// The metadata server (GCE_METADATA_HOST) serves node documents without
// keys only when the node enables it, and a pod's document never; a token
// near expiry is waited out.
func TestMetadata(t *testing.T) {
	g := cloudemu.NewGCP(t)
	t.Setenv("GCE_METADATA_HOST", g.MetadataHost())
	ctx := context.Background()
	pod := gcpDoc(t, document.KeyGCPProjectID, "proj")
	doc := pod
	doc.Node = true

	if _, err := newProvider().Mint(ctx, reg("gcr.io"), doc); !errdefs.IsInvalidArgument(err) || g.Calls(cloudemu.APIGCEMetadataToken) != 0 {
		t.Fatalf("ambient off: %v, %d metadata calls", err, g.Calls(cloudemu.APIGCEMetadataToken))
	}
	p := newProvider(WithAmbient(true))
	// A pod's keyless document (an annotation's {"type":"gcp"}) does not
	// borrow the node's service account, even with ambient enabled.
	_, err := p.Mint(ctx, reg("gcr.io"), pod)
	if !errdefs.IsInvalidArgument(err) || g.Calls(cloudemu.APIGCEMetadataToken) != 0 ||
		!strings.Contains(err.Error(), "a pod's gcp document needs") || !strings.Contains(err.Error(), "only for node credentials") {
		t.Fatalf("pod document, ambient on: %v, %d metadata calls; want InvalidArgument and none", err, g.Calls(cloudemu.APIGCEMetadataToken))
	}
	// Nor does a host that is no Google registry get the node's token,
	// even for a node document: it is whatever registry a pod named.
	_, err = p.Mint(ctx, reg("registry.evil.example"), doc)
	if !errdefs.IsInvalidArgument(err) || g.Calls(cloudemu.APIGCEMetadataToken) != 0 ||
		!strings.Contains(err.Error(), "only sent to gcr/gar registries") {
		t.Fatalf("generic host, ambient on: %v, %d metadata calls; want InvalidArgument and none", err, g.Calls(cloudemu.APIGCEMetadataToken))
	}
	m, err := p.Mint(ctx, reg("gcr.io"), doc)
	if err != nil || m.Provider != "gcp/metadata" || !g.Valid(m.Secret.Reveal(), time.Now()) {
		t.Fatalf("ambient: %+v, %v", m, err)
	}

	// The first answer expires in 1 s (< 10 s): wait it out, ask again.
	g.Fail(cloudemu.APIGCEMetadataToken, cloudemu.IssueExpired, 1)
	before := g.Calls(cloudemu.APIGCEMetadataToken)
	start := time.Now()
	m, err = p.Mint(ctx, reg("gcr.io"), doc)
	if err != nil || time.Until(m.ExpiresAt) < 30*time.Minute || !g.Valid(m.Secret.Reveal(), time.Now()) {
		t.Fatalf("near-expiry: %v, life %v", err, time.Until(m.ExpiresAt))
	}
	if n := g.Calls(cloudemu.APIGCEMetadataToken) - before; n != 2 || time.Since(start) < 900*time.Millisecond {
		t.Errorf("near-expiry: %d calls in %v, want 2 after waiting ~1 s", n, time.Since(start))
	}

	for _, tc := range []struct {
		name  string
		fault cloudemu.Fault
		class func(error) bool
		want  string
	}{
		{"throttled", cloudemu.Throttle, errdefs.IsUnavailable, "GCE metadata token throttled"},
		{"denied", cloudemu.Deny, errdefs.IsPermissionDenied, "denied"},
		{"no service account", cloudemu.NotFound, errdefs.IsUnauthorized, "no default service account"},
	} {
		g.Fail(cloudemu.APIGCEMetadataToken, tc.fault, -1)
		_, err := p.Mint(ctx, reg("gcr.io"), doc)
		if err == nil || !tc.class(err) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
		g.Heal("")
	}
	g.Close()
	if _, err := p.Mint(ctx, reg("gcr.io"), doc); !errdefs.IsUnavailable(err) || !strings.Contains(err.Error(), "unreachable") {
		t.Errorf("down: %v", err)
	}
}

func TestKeyChecksDoNotEchoTheKey(t *testing.T) {
	t.Parallel()
	g := cloudemu.NewGCP(t)
	key := g.NewServiceAccountKey(t, saEmail)
	var k map[string]string
	_ = json.Unmarshal(key, &k)
	k["private_key"] = strings.Replace(k["private_key"], "\n", "\n!", 3) // corrupt the PEM
	bad, _ := json.Marshal(k)
	_, err := newProvider().Mint(context.Background(), reg("gcr.io"), keyDoc(t, bad))
	if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "private_key") {
		t.Fatalf("corrupt key: %v", err)
	}
	assertNoSecrets(t, key, err.Error())
}

// Options given a value they cannot use refuse it, naming the option.
func TestBadOptionsAreErrors(t *testing.T) {
	for name, o := range map[string]Option{
		"gcp.WithHTTPClient":      WithHTTPClient(nil),
		"gcp.WithScopes":          WithScopes(),
		"gcp.WithAccessTokenLife": WithAccessTokenLife(-time.Second),
		"gcp.WithTokenURICheck":   WithTokenURICheck(nil),
	} {
		if _, err := New(o); !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), name) {
			t.Errorf("%s: %v, want InvalidArgument naming it", name, err)
		}
	}
}
