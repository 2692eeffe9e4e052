package cloud

import (
	"testing"

	"github.com/containerd/errdefs"

	"github.com/beam-cloud/b9-resolver/internal/keychain"
	"github.com/beam-cloud/b9-resolver/internal/keychain/document"
	"github.com/beam-cloud/b9-resolver/internal/keychain/registry"
	"github.com/beam-cloud/b9-resolver/internal/testutil/keychaintest"
)

// TestEveryTypeHasAProvider: a bare keychain refuses cloud types; the node
// keychain has a provider for each (it may then fail on the network, but
// not with NotImplemented).
func TestEveryTypeHasAProvider(t *testing.T) {
	docs := map[document.Type]string{
		document.TypeAWS:   `{"type":"aws","credentials":{"AWS_ACCESS_KEY_ID":"AKID","AWS_SECRET_ACCESS_KEY":"s","AWS_REGION":"us-east-1"}}`,
		document.TypeGCP:   `{"type":"gcp","credentials":{"GCP_ACCESS_TOKEN":"ya29.x"}}`,
		document.TypeAzure: `{"type":"azure","credentials":{"AZURE_CLIENT_ID":"id","AZURE_CLIENT_SECRET":"s"}}`,
	}
	for typ, text := range docs {
		d, err := document.Parse("test", text, "")
		if err != nil {
			t.Fatal(err)
		}
		reg := registry.Detect("registry.example.com")
		if _, err := keychaintest.New(t).Resolve(t.Context(), reg, d[0]); !errdefs.IsNotImplemented(err) {
			t.Fatalf("%s: bare keychain err = %v, want NotImplemented", typ, err)
		}
		_, err = mustNew(t).Resolve(t.Context(), reg, d[0])
		if errdefs.IsNotImplemented(err) {
			t.Errorf("%s: node keychain has no provider: %v", typ, err)
		}
	}
	// A raw GCP token mints without any network.
	d, _ := document.Parse("test", docs[document.TypeGCP], "")
	c, err := mustNew(t).Resolve(t.Context(), registry.Detect("us-docker.pkg.dev"), d[0])
	if err != nil || c.Username != "oauth2accesstoken" || c.ExpiresAt.IsZero() {
		t.Fatalf("gcp access token: %+v %v", c, err)
	}
}

func mustNew(t *testing.T) *keychain.Keychain {
	t.Helper()
	k, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(k.Close)
	return k
}
