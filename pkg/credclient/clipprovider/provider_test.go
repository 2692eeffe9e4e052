package clipprovider_test

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/beam-cloud/clip/pkg/common"
	"github.com/google/go-containerregistry/pkg/authn"

	"github.com/beam-cloud/b9-resolver/internal/keychain"
	"github.com/beam-cloud/b9-resolver/internal/keychain/registry"
	"github.com/beam-cloud/b9-resolver/internal/secret"
	"github.com/beam-cloud/b9-resolver/pkg/credclient"
	"github.com/beam-cloud/b9-resolver/pkg/credclient/clipprovider"
	"github.com/beam-cloud/b9-resolver/plugin/credentials"
	"github.com/beam-cloud/b9-resolver/plugin/credentials/credtest"
)

const canaryA, canaryB = "CANARY-clip-A-4d1f", "CANARY-clip-B-a07e"

func basic(user, pass string) string {
	return fmt.Sprintf(`{"type":"basic","credentials":{"USERNAME":%q,"PASSWORD":%q}}`, user, pass)
}

func newClient(t *testing.T, addr string, opts ...credclient.Option) *credclient.Client {
	t.Helper()
	c, err := credclient.New(addr, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// CLIP type-asserts an interface{}; a *Provider must pass that assertion
// or CLIP silently uses its own keychain.
func TestIsACLIPProvider(t *testing.T) {
	var v any = clipprovider.New(nil)
	if _, ok := v.(common.RegistryCredentialProvider); !ok {
		t.Fatal("*Provider does not implement CLIP's RegistryCredentialProvider")
	}
	if clipprovider.New(nil).Name() != "b9-resolver" || clipprovider.New(nil, clipprovider.WithName("x")).Name() != "x" {
		t.Fatal("Name")
	}
}

func TestAnswers(t *testing.T) {
	node := func(_ context.Context, reg registry.Registry, _ string) (keychain.Credential, bool, error) {
		if reg.Host != "acr.example" {
			return keychain.Credential{}, false, nil
		}
		return keychain.Credential{Registry: reg, Secret: secret.New("refresh-tok"), IdentityToken: true, Source: "node"}, true, nil
	}
	e := credtest.Start(t, credentials.Config{NodeCredentials: node})
	e.Pull(t, "docker.io", "library/ubuntu", basic("hub", canaryA))
	e.Pull(t, "ghcr.io", "org/public", `{"type":"public"}`)
	p := clipprovider.New(newClient(t, e.Addr))
	ctx := context.Background()

	// CLIP stores Docker Hub as index.docker.io.
	cfg, err := p.GetCredentials(ctx, "index.docker.io", "library/ubuntu")
	if err != nil || cfg == nil || cfg.Username != "hub" || cfg.Password != canaryA {
		t.Fatalf("basic: %+v %v", cfg, err)
	}
	// Public: a non-nil empty AuthConfig = anonymous, no keychain fallback.
	cfg, err = p.GetCredentials(ctx, "ghcr.io", "org/public")
	if err != nil || cfg == nil || *cfg != (authn.AuthConfig{}) {
		t.Fatalf("public: %+v %v", cfg, err)
	}
	// Identity token.
	cfg, err = p.GetCredentials(ctx, "acr.example", "x/y")
	if err != nil || cfg == nil || cfg.IdentityToken != "refresh-tok" || cfg.Password != "" {
		t.Fatalf("identity token: %+v %v", cfg, err)
	}
	// Nothing recorded: exactly CLIP's sentinel (CLIP compares with ==).
	cfg, err = p.GetCredentials(ctx, "quay.io", "nobody/here")
	if err != common.ErrNoCredentials || cfg != nil {
		t.Fatalf("want (nil, common.ErrNoCredentials), got (%+v, %v)", cfg, err)
	}
}

// A provider pinned to one pull's ref answers that pull's credential and
// nothing else, whatever repository CLIP names.
func TestPinnedRefIsolation(t *testing.T) {
	e := credtest.Start(t, credentials.Config{})
	refA := e.Pull(t, "registry.p.example", "tenant-a/app", basic("a", canaryA))
	refB := e.Pull(t, "registry.p.example", "tenant-b/app", basic("b", canaryB))
	c := newClient(t, e.Addr)
	pa := clipprovider.New(c, clipprovider.WithCredentialRef(refA))
	pb := clipprovider.New(c, clipprovider.WithCredentialRef(refB))
	ctx := context.Background()
	for _, repo := range []string{"tenant-a/app", "tenant-b/app", "other"} {
		if cfg, err := pa.GetCredentials(ctx, "registry.p.example", repo); err != nil || cfg.Password != canaryA {
			t.Fatalf("A for %s: %v", repo, err)
		}
		if cfg, err := pb.GetCredentials(ctx, "registry.p.example", repo); err != nil || cfg.Password != canaryB {
			t.Fatalf("B for %s: %v", repo, err)
		}
	}
	// Another registry with a pinned ref: no credential at all.
	if cfg, err := pa.GetCredentials(ctx, "registry.q.example", "tenant-a/app"); err != common.ErrNoCredentials || cfg != nil {
		t.Fatalf("pinned ref on another registry: %+v %v", cfg, err)
	}
}

// With the service down CLIP gets an error (it logs it and falls back to
// its keychain), not ErrNoCredentials, and quickly.
func TestServiceDown(t *testing.T) {
	p := clipprovider.New(newClient(t, filepath.Join(t.TempDir(), "none.sock"), credclient.WithTimeout(3*time.Second)))
	cfg, err := p.GetCredentials(context.Background(), "ghcr.io", "x/y")
	if err == nil || err == common.ErrNoCredentials || cfg != nil {
		t.Fatalf("want a real error, got (%+v, %v)", cfg, err)
	}
}

// BenchmarkProviderWarm is CLIP's call on every layer fetch, cache warm.
func BenchmarkProviderWarm(b *testing.B) {
	e := credtest.Start(b, credentials.Config{})
	e.Pull(b, "docker.io", "library/ubuntu", basic("hub", canaryA))
	c, err := credclient.New(e.Addr)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	p := clipprovider.New(c)
	ctx := context.Background()
	if _, err := p.GetCredentials(ctx, "index.docker.io", "library/ubuntu"); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if _, err := p.GetCredentials(ctx, "index.docker.io", "library/ubuntu"); err != nil {
			b.Fatal(err)
		}
	}
}
