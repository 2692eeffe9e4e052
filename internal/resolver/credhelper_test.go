package resolver

import (
	"context"
	"testing"

	transfer "github.com/containerd/containerd/v2/core/transfer/registry"

	"github.com/beam-cloud/b9-resolver/internal/keychain"
	"github.com/beam-cloud/b9-resolver/internal/keychain/document"
	"github.com/beam-cloud/b9-resolver/internal/keychain/registry"
	"github.com/beam-cloud/b9-resolver/internal/secret"
	"github.com/beam-cloud/b9-resolver/internal/testutil/keychaintest"
)

// The transfer-service adapter gives each request host what Hosts would:
// the image's credentials on its registry (Docker Hub's API host included),
// nothing on an untrusted mirror, the upstream's on a trusted one, a
// mirror's own where a document names it, and identity tokens with an
// empty username (containerd's signal for a refresh-token grant).
func TestCredentialHelper(t *testing.T) {
	kc := keychaintest.New(t)
	defer kc.Close()
	d := docs(t, [3]string{"", "alice", alicePass}, [3]string{"own.mirror.test", "bob", bobPass})
	identity := CredentialFunc(func(_ context.Context, r registry.Registry, _ bool) (keychain.Credential, error) {
		return keychain.Credential{Registry: r, Username: "00000000-0000-0000-0000-000000000000", Secret: secret.New("refresh-" + alicePass), IdentityToken: true}, nil
	})
	for _, tc := range []struct {
		name      string
		creds     Credentials
		trusted   []string
		ref, host string
		want      transfer.Credentials
	}{
		{"registry", FromKeychain(kc, d), nil, "ghcr.io/o/app:v1", "ghcr.io",
			transfer.Credentials{Host: "ghcr.io", Username: "alice", Secret: alicePass}},
		{"docker hub api host", FromKeychain(kc, d), nil, "ubuntu:24.04", "registry-1.docker.io",
			transfer.Credentials{Host: "registry-1.docker.io", Username: "alice", Secret: alicePass}},
		{"untrusted mirror", FromKeychain(kc, d), nil, "ghcr.io/o/app:v1", "mirror.test:5000",
			transfer.Credentials{Host: "mirror.test:5000"}},
		{"trusted mirror", FromKeychain(kc, d), []string{"mirror.test:5000"}, "ghcr.io/o/app:v1", "mirror.test:5000",
			transfer.Credentials{Host: "mirror.test:5000", Username: "alice", Secret: alicePass}},
		// A public document naming the trusted mirror is an explicit
		// anonymous: the upstream's secret is not sent there.
		{"trusted mirror with a public document", FromKeychain(kc, withPublic(t, d, "mirror.test:5000")), []string{"mirror.test:5000"}, "ghcr.io/o/app:v1", "mirror.test:5000",
			transfer.Credentials{Host: "mirror.test:5000"}},
		{"mirror's own document", FromKeychain(kc, d), nil, "ghcr.io/o/app:v1", "own.mirror.test",
			transfer.Credentials{Host: "own.mirror.test", Username: "bob", Secret: bobPass}},
		{"identity token", identity, nil, "x.azurecr.io/app:v1", "x.azurecr.io",
			transfer.Credentials{Host: "x.azurecr.io", Secret: "refresh-" + alicePass}},
		{"anonymous", Anonymous, nil, "ghcr.io/o/app:v1", "ghcr.io", transfer.Credentials{Host: "ghcr.io"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := mustNew(t, WithTrustedMirrors(tc.trusted...)).CredentialHelper(tc.creds)
			got, err := h.GetCredentials(context.Background(), tc.ref, tc.host)
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				// Compare without printing secrets.
				t.Fatalf("host %q user %q secret-match %v; want host %q user %q", got.Host, got.Username, got.Secret == tc.want.Secret, tc.want.Host, tc.want.Username)
			}
		})
	}
	if _, err := mustNew(t).CredentialHelper(Anonymous).GetCredentials(context.Background(), "UPPER/Case", "ghcr.io"); err == nil {
		t.Error("bad reference accepted")
	}
}

// withPublic adds a public document naming host to docs.
func withPublic(t testing.TB, docs []document.Document, host string) []document.Document {
	t.Helper()
	pub, err := document.Parse("b9.beam.cloud/image-credentials.public", `{"registry":"`+host+`","type":"public"}`, "")
	if err != nil {
		t.Fatal(err)
	}
	return append(append([]document.Document(nil), docs...), pub...)
}
