package aws

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

// 64 pulls that need one credential at once make exactly one token call
// (and one STS call when a role is assumed).
func TestConcurrentResolutionsShareOneCall(t *testing.T) {
	t.Parallel()
	for _, role := range []bool{false, true} {
		t.Run(map[bool]string{false: "static", true: "assume-role"}[role], func(t *testing.T) {
			t.Parallel()
			e := newEmu(t)
			e.SetDelay(100 * time.Millisecond)
			kc := newKeychain(t, newProvider(e))
			doc := staticDoc(t)
			if role {
				doc = staticDoc(t, "AWS_ROLE_ARN", roleARN)
			}
			hosts := []string{ecrHost, ecrHost2} // same region: one scope
			var wg sync.WaitGroup
			secrets := make([]string, 64)
			errs := make([]error, 64)
			for i := range 64 {
				wg.Go(func() {
					c, err := kc.Resolve(context.Background(), reg(hosts[i%2]), doc)
					secrets[i], errs[i] = c.Secret.Reveal(), err
				})
			}
			wg.Wait()
			for i := range 64 {
				if errs[i] != nil || secrets[i] != secrets[0] {
					t.Fatalf("resolution %d: err %v, same secret %v", i, errs[i], secrets[i] == secrets[0])
				}
			}
			if n := e.Calls(cloudemu.APIECRGetAuthorizationToken); n != 1 {
				t.Errorf("ECR calls %d, want 1", n)
			}
			want := 0
			if role {
				want = 1
			}
			if n := e.Calls(cloudemu.APISTSAssumeRole); n != want {
				t.Errorf("STS calls %d, want %d", n, want)
			}
		})
	}
}

// A token is minted per region, and an assumed-role session is reused
// across regions and across tenants' identical documents.
func TestScopesAndSessionReuse(t *testing.T) {
	t.Parallel()
	e := newEmu(t)
	kc := newKeychain(t, newProvider(e))
	doc := staticDoc(t, "AWS_ROLE_ARN", roleARN)
	for _, h := range []string{ecrHost, ecrHost2, ecrHostEast, ecrHost} {
		c, err := kc.Resolve(context.Background(), reg(h), doc)
		if err != nil {
			t.Fatalf("Resolve %s: %v", h, err)
		}
		if c.Registry.Host != h {
			t.Errorf("credential presented for %s, want %s", c.Registry.Host, h)
		}
	}
	if n := e.Calls(cloudemu.APIECRGetAuthorizationToken); n != 2 {
		t.Errorf("ECR calls %d, want 2 (us-west-2 and us-east-1)", n)
	}
	if n := e.Calls(cloudemu.APISTSAssumeRole); n != 1 {
		t.Errorf("STS calls %d, want 1 (the session is reused)", n)
	}
	// Another tenant's keys never share the first tenant's entry.
	other := awsDoc(t, "AWS_ACCESS_KEY_ID", otherAKID, "AWS_SECRET_ACCESS_KEY", otherSecret)
	if _, err := kc.Resolve(context.Background(), reg(ecrHost), other); err != nil {
		t.Fatal(err)
	}
	if n := e.Calls(cloudemu.APIECRGetAuthorizationToken); n != 3 {
		t.Errorf("ECR calls %d after a second tenant, want 3", n)
	}
	// A FIPS registry gets a session of its own, from the FIPS STS.
	if _, err := kc.Resolve(context.Background(), reg("123456789012.dkr.ecr-fips.us-west-2.amazonaws.com"), doc); err != nil {
		t.Fatal(err)
	}
	if n := e.Calls(cloudemu.APISTSAssumeRole); n != 2 {
		t.Errorf("STS calls %d after a FIPS registry, want 2 (no standard-endpoint session for it)", n)
	}
}

// A registry that says the token expired makes the caller invalidate it;
// the next resolution mints a fresh one (and a fresh STS session).
func TestExpiredTokenIsReminted(t *testing.T) {
	t.Parallel()
	e := newEmu(t)
	kc := newKeychain(t, newProvider(e))
	doc := staticDoc(t, "AWS_ROLE_ARN", roleARN)
	c1, err := kc.Resolve(context.Background(), reg(ecrHost), doc)
	if err != nil {
		t.Fatal(err)
	}
	e.Expire(c1.Secret.Reveal())
	if e.Valid(c1.Secret.Reveal(), time.Now()) {
		t.Fatal("emulator still accepts the expired token")
	}
	kc.Invalidate(c1)
	c2, err := kc.Resolve(context.Background(), reg(ecrHost), doc)
	if err != nil {
		t.Fatal(err)
	}
	if c2.Secret.Equal(c1.Secret) || !e.Valid(c2.Secret.Reveal(), time.Now()) {
		t.Error("after Invalidate the keychain did not hand out a fresh, valid token")
	}
	if n := e.Calls(cloudemu.APIECRGetAuthorizationToken); n != 2 {
		t.Errorf("ECR calls %d, want 2", n)
	}
	if n := e.Calls(cloudemu.APISTSAssumeRole); n != 2 {
		t.Errorf("STS calls %d, want 2 (Invalidate drops the session)", n)
	}
}

// A token that is already expired when it arrives is never served.
func TestIssuedExpiredIsRefused(t *testing.T) {
	t.Parallel()
	e := newEmu(t)
	e.Fail(cloudemu.APIECRGetAuthorizationToken, cloudemu.IssueExpired, 1)
	kc := newKeychain(t, newProvider(e))
	_, err := kc.Resolve(context.Background(), reg(ecrHost), staticDoc(t))
	if err == nil || !strings.Contains(err.Error(), "expired") || !errdefs.IsUnavailable(err) {
		t.Fatalf("error %v, want an Unavailable 'expired' error", err)
	}
	c, err := kc.Resolve(context.Background(), reg(ecrHost), staticDoc(t))
	if err != nil || !e.Valid(c.Secret.Reveal(), time.Now()) {
		t.Fatalf("second resolution: %v, valid=%v", err, err == nil && e.Valid(c.Secret.Reveal(), time.Now()))
	}
}

// Tokens living 2 s, resolved every 50 ms for 10 s: every token handed out
// is valid when used, refreshes happen in the background ahead of expiry,
// and no resolution after the first waits on the (300 ms) token call.
func TestShortLivedTokensStream(t *testing.T) {
	if testing.Short() {
		t.Skip("10 s stream")
	}
	t.Parallel()
	e := newEmu(t)
	e.SetLifetime(2 * time.Second)
	e.SetDelay(300 * time.Millisecond)
	kc := newKeychain(t, newProvider(e))
	doc := staticDoc(t)
	r := cloudemu.Stream(context.Background(), 10*time.Second, 50*time.Millisecond, 150*time.Millisecond,
		func(ctx context.Context) (string, error) {
			c, err := kc.Resolve(ctx, reg(ecrHost), doc)
			return c.Secret.Reveal(), err
		}, e.Valid)
	cloudemu.CheckStream(t, r, e.Calls(cloudemu.APIECRGetAuthorizationToken), 300*time.Millisecond)
}

// When refreshes fail, the still-valid token keeps being served, never
// past its expiry, and the refresh is retried until it succeeds. Nothing
// logged on the way carries a secret.
func TestRefreshFailureServesValidTokenThenRecovers(t *testing.T) {
	logs := cloudemu.CaptureLogs(t)
	e := newEmu(t)
	e.SetLifetime(2 * time.Second)
	kc := newKeychain(t, newProvider(e))
	doc := staticDoc(t)
	c1, err := kc.Resolve(context.Background(), reg(ecrHost), doc)
	if err != nil {
		t.Fatal(err)
	}
	e.Fail(cloudemu.APIECRGetAuthorizationToken, cloudemu.Unavailable, -1)
	var errs []string
	deadline := time.Now().Add(2500 * time.Millisecond)
	served, failed := 0, 0
	for time.Now().Before(deadline) {
		c, err := kc.Resolve(context.Background(), reg(ecrHost), doc)
		if err != nil {
			failed++
			errs = append(errs, err.Error())
		} else {
			served++
			if !e.Valid(c.Secret.Reveal(), time.Now()) {
				t.Fatal("served a token past its expiry")
			}
			if !c.Secret.Equal(c1.Secret) {
				t.Fatal("a new token appeared while the API was failing")
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	if served < 20 || failed == 0 {
		t.Errorf("served %d, failed %d: want the old token served until near its expiry, then errors", served, failed)
	}
	e.Heal("")
	c2, err := kc.Resolve(context.Background(), reg(ecrHost), doc)
	if err != nil || !e.Valid(c2.Secret.Reveal(), time.Now()) {
		t.Fatalf("after the API recovered: %v", err)
	}
	if !strings.Contains(logs.String(), "background credential refresh failed") {
		t.Error("the failed refreshes were not logged (log capture broken?)")
	}
	cloudemu.AssertNoSecrets(t, "log", []string{logs.String()}, c1.Secret.Reveal(), c2.Secret.Reveal())
	cloudemu.AssertNoSecrets(t, "error", errs, c1.Secret.Reveal())
}

func BenchmarkResolveWarm(b *testing.B) {
	e := newEmu(b)
	kc := newKeychain(b, newProvider(e))
	doc := staticDoc(b, "AWS_ROLE_ARN", roleARN)
	r := reg(ecrHost)
	ctx := context.Background()
	if _, err := kc.Resolve(ctx, r, doc); err != nil {
		b.Fatal(err)
	}
	cloudemu.BenchmarkResolve(b, func() error { _, err := kc.Resolve(ctx, r, doc); return err })
	if n := e.Calls(cloudemu.APIECRGetAuthorizationToken); n != 1 {
		b.Fatalf("ECR calls %d during a warm benchmark", n)
	}
}
