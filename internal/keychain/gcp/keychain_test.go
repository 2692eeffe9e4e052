package gcp

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/containerd/errdefs"

	"github.com/beam-cloud/b9-resolver/internal/keychain"
	"github.com/beam-cloud/b9-resolver/internal/testutil/cloudemu"
	"github.com/beam-cloud/b9-resolver/internal/testutil/keychaintest"
)

func newKeychain(tb testing.TB, p *Provider) *keychain.Keychain {
	kc := keychaintest.New(tb, keychain.WithProvider(p))
	tb.Cleanup(kc.Close)
	return kc
}

// 64 concurrent pulls from GCR and Artifact Registry hosts with one key
// make one token call: one token serves every Google registry.
func TestConcurrentResolutionsShareOneCall(t *testing.T) {
	t.Parallel()
	g := cloudemu.NewGCP(t)
	key := g.NewServiceAccountKey(t, saEmail)
	g.SetDelay(100 * time.Millisecond)
	kc := newKeychain(t, newProvider())
	doc := keyDoc(t, key)
	hosts := []string{"gcr.io", "us-docker.pkg.dev", "eu.gcr.io", "docker.europe-west3.rep.pkg.dev"}
	var wg sync.WaitGroup
	secrets := make([]string, 64)
	errs := make([]error, 64)
	for i := range 64 {
		wg.Go(func() {
			c, err := kc.Resolve(context.Background(), reg(hosts[i%len(hosts)]), doc)
			secrets[i], errs[i] = c.Secret.Reveal(), err
		})
	}
	wg.Wait()
	for i := range 64 {
		if errs[i] != nil || secrets[i] != secrets[0] {
			t.Fatalf("resolution %d: %v", i, errs[i])
		}
	}
	if n := g.Calls(cloudemu.APIGoogleToken); n != 1 {
		t.Errorf("token calls %d, want 1", n)
	}
}

// A token the registry rejects is invalidated and re-minted from the key.
func TestExpiredTokenIsReminted(t *testing.T) {
	t.Parallel()
	g := cloudemu.NewGCP(t)
	key := g.NewServiceAccountKey(t, saEmail)
	kc := newKeychain(t, newProvider())
	doc := keyDoc(t, key)
	c1, err := kc.Resolve(context.Background(), reg("gcr.io"), doc)
	if err != nil {
		t.Fatal(err)
	}
	g.Expire(c1.Secret.Reveal())
	kc.Invalidate(c1)
	c2, err := kc.Resolve(context.Background(), reg("gcr.io"), doc)
	if err != nil {
		t.Fatal(err)
	}
	if c2.Secret.Equal(c1.Secret) || !g.Valid(c2.Secret.Reveal(), time.Now()) || g.Calls(cloudemu.APIGoogleToken) != 2 {
		t.Errorf("after Invalidate: fresh=%v valid=%v calls=%d", !c2.Secret.Equal(c1.Secret), g.Valid(c2.Secret.Reveal(), time.Now()), g.Calls(cloudemu.APIGoogleToken))
	}
}

// Tokens living 2 s, resolved every 50 ms for 10 s (see the aws twin).
func TestShortLivedTokensStream(t *testing.T) {
	if testing.Short() {
		t.Skip("10 s stream")
	}
	t.Parallel()
	g := cloudemu.NewGCP(t)
	key := g.NewServiceAccountKey(t, saEmail)
	g.SetLifetime(2 * time.Second)
	g.SetDelay(300 * time.Millisecond)
	kc := newKeychain(t, newProvider(WithMinTokenLife(500*time.Millisecond)))
	doc := keyDoc(t, key)
	r := cloudemu.Stream(context.Background(), 10*time.Second, 50*time.Millisecond, 150*time.Millisecond,
		func(ctx context.Context) (string, error) {
			c, err := kc.Resolve(ctx, reg("us-docker.pkg.dev"), doc)
			return c.Secret.Reveal(), err
		}, g.Valid)
	cloudemu.CheckStream(t, r, g.Calls(cloudemu.APIGoogleToken), 300*time.Millisecond)
}

func BenchmarkResolveWarm(b *testing.B) {
	g := cloudemu.NewGCP(b)
	key := g.NewServiceAccountKey(b, saEmail)
	kc := newKeychain(b, newProvider())
	doc := keyDoc(b, key)
	r := reg("us-docker.pkg.dev")
	ctx := context.Background()
	if _, err := kc.Resolve(ctx, r, doc); err != nil {
		b.Fatal(err)
	}
	cloudemu.BenchmarkResolve(b, func() error { _, err := kc.Resolve(ctx, r, doc); return err })
	if n := g.Calls(cloudemu.APIGoogleToken); n != 1 {
		b.Fatalf("token calls %d during a warm benchmark", n)
	}
}

// The node's metadata token, once cached for a node document, is not
// served to a pod's keyless document: the tier is part of the cache key.
func TestNodeTokenNotSharedWithPodDocument(t *testing.T) {
	g := cloudemu.NewGCP(t)
	t.Setenv("GCE_METADATA_HOST", g.MetadataHost())
	kc := newKeychain(t, newProvider(WithAmbient(true)))
	ctx := context.Background()
	pod := gcpDoc(t)
	node := pod
	node.Node = true
	if _, err := kc.Resolve(ctx, reg("gcr.io"), node); err != nil {
		t.Fatalf("node document: %v", err)
	}
	if c, err := kc.Resolve(ctx, reg("gcr.io"), pod); !errdefs.IsInvalidArgument(err) {
		t.Fatalf("pod document after a node mint: %v (provider %q), want InvalidArgument", err, c.Provider)
	}
	if n := g.Calls(cloudemu.APIGCEMetadataToken); n != 1 {
		t.Errorf("metadata calls %d, want 1 (the node document's)", n)
	}
}
