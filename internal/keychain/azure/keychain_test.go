package azure

import (
	"context"
	"strings"
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

// 64 concurrent pulls from one ACR make one AAD call and one exchange.
func TestConcurrentResolutionsShareOneCall(t *testing.T) {
	t.Parallel()
	z := newEmu(t)
	z.SetDelay(100 * time.Millisecond)
	kc := newKeychain(t, newProvider(z))
	doc := spDoc(t)
	var wg sync.WaitGroup
	secrets := make([]string, 64)
	errs := make([]error, 64)
	for i := range 64 {
		wg.Go(func() {
			c, err := kc.Resolve(context.Background(), acr(z, "azure"), doc)
			secrets[i], errs[i] = c.Secret.Reveal(), err
		})
	}
	wg.Wait()
	for i := range 64 {
		if errs[i] != nil || secrets[i] != secrets[0] {
			t.Fatalf("resolution %d: %v", i, errs[i])
		}
	}
	if a, e := z.Calls(cloudemu.APIAADToken), z.Calls(cloudemu.APIACRExchange); a != 1 || e != 1 {
		t.Errorf("AAD calls %d, exchange calls %d; want 1 and 1", a, e)
	}
}

// A refresh token the registry rejects is invalidated and re-minted.
func TestExpiredTokenIsReminted(t *testing.T) {
	t.Parallel()
	z := newEmu(t)
	kc := newKeychain(t, newProvider(z))
	doc := spDoc(t)
	c1, err := kc.Resolve(context.Background(), acr(z, "azure"), doc)
	if err != nil {
		t.Fatal(err)
	}
	z.Expire(c1.Secret.Reveal())
	if pullWithRefreshToken(t, z, c1.Secret.Reveal()) {
		t.Fatal("the registry still takes the expired refresh token")
	}
	kc.Invalidate(c1)
	c2, err := kc.Resolve(context.Background(), acr(z, "azure"), doc)
	if err != nil {
		t.Fatal(err)
	}
	if c2.Secret.Equal(c1.Secret) || !pullWithRefreshToken(t, z, c2.Secret.Reveal()) || z.Calls(cloudemu.APIACRExchange) != 2 {
		t.Errorf("after Invalidate: fresh=%v exchanges=%d", !c2.Secret.Equal(c1.Secret), z.Calls(cloudemu.APIACRExchange))
	}
}

// A refresh token already expired on arrival is never served.
func TestIssuedExpiredIsRefused(t *testing.T) {
	t.Parallel()
	z := newEmu(t)
	z.Fail(cloudemu.APIACRExchange, cloudemu.IssueExpired, 1)
	kc := newKeychain(t, newProvider(z))
	_, err := kc.Resolve(context.Background(), acr(z, "azure"), spDoc(t))
	if err == nil || !strings.Contains(err.Error(), "expired") || !errdefs.IsUnavailable(err) {
		t.Fatalf("error %v, want an Unavailable 'expired' error", err)
	}
}

// Refresh tokens living 2 s (exp has whole seconds: 1-2 s), resolved every
// 50 ms for 10 s (see the aws twin).
func TestShortLivedTokensStream(t *testing.T) {
	if testing.Short() {
		t.Skip("10 s stream")
	}
	t.Parallel()
	z := newEmu(t)
	z.SetLifetime(2 * time.Second)
	// Each mint is an AAD call and an exchange: 150 ms each.
	z.SetDelay(150 * time.Millisecond)
	kc := newKeychain(t, newProvider(z))
	doc := spDoc(t)
	r := cloudemu.Stream(context.Background(), 10*time.Second, 50*time.Millisecond, 150*time.Millisecond,
		func(ctx context.Context) (string, error) {
			c, err := kc.Resolve(ctx, acr(z, "azure"), doc)
			return c.Secret.Reveal(), err
		}, z.Valid)
	cloudemu.CheckStream(t, r, z.Calls(cloudemu.APIACRExchange), 300*time.Millisecond)
}

func BenchmarkResolveWarm(b *testing.B) {
	z := newEmu(b)
	kc := newKeychain(b, newProvider(z))
	doc := spDoc(b)
	r := acr(z, "azure")
	ctx := context.Background()
	if _, err := kc.Resolve(ctx, r, doc); err != nil {
		b.Fatal(err)
	}
	cloudemu.BenchmarkResolve(b, func() error { _, err := kc.Resolve(ctx, r, doc); return err })
	if n := z.Calls(cloudemu.APIACRExchange); n != 1 {
		b.Fatalf("exchange calls %d during a warm benchmark", n)
	}
}

// Failed background refreshes are logged without the client secret, the
// refresh token or the AAD token.
func TestRefreshFailureLogsNoSecrets(t *testing.T) {
	logs := cloudemu.CaptureLogs(t)
	z := newEmu(t)
	z.SetLifetime(2 * time.Second)
	kc := newKeychain(t, newProvider(z))
	doc := spDoc(t)
	c1, err := kc.Resolve(context.Background(), acr(z, "azure"), doc)
	if err != nil {
		t.Fatal(err)
	}
	z.ExpireClientSecret(tenantID, clientID)
	z.Fail(cloudemu.APIACRExchange, cloudemu.Deny, -1)
	var errs []string
	for end := time.Now().Add(2500 * time.Millisecond); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		c, err := kc.Resolve(context.Background(), acr(z, "azure"), doc)
		if err != nil {
			errs = append(errs, err.Error())
		} else if !z.Valid(c.Secret.Reveal(), time.Now()) {
			t.Fatal("served a refresh token past its expiry")
		}
	}
	if len(errs) == 0 || !strings.Contains(logs.String(), "AADSTS7000222") {
		t.Fatalf("want failed refreshes logged with the AAD code; errors %d, log %q", len(errs), logs.String())
	}
	cloudemu.AssertNoSecrets(t, "log", []string{logs.String()}, c1.Secret.Reveal())
	cloudemu.AssertNoSecrets(t, "error", errs, c1.Secret.Reveal())
}
