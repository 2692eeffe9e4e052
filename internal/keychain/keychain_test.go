package keychain

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containerd/errdefs"

	"github.com/beam-cloud/b9-resolver/internal/keychain/document"
	"github.com/beam-cloud/b9-resolver/internal/keychain/registry"
	"github.com/beam-cloud/b9-resolver/internal/secret"
)

const canary = "CANARY-kc-5a1e"

// fakeProvider mints numbered tokens of a chosen life and counts calls.
type fakeProvider struct {
	typ   document.Type
	life  time.Duration
	now   func() time.Time
	calls atomic.Int64
	delay time.Duration
	fail  atomic.Bool
	scope func(registry.Registry) string
	gate  chan struct{}
}

func (p *fakeProvider) Type() document.Type { return p.typ }

func (p *fakeProvider) Mint(ctx context.Context, reg registry.Registry, doc document.Document) (Minted, error) {
	n := p.calls.Add(1)
	if p.gate != nil {
		<-p.gate
	}
	if p.delay > 0 {
		time.Sleep(p.delay)
	}
	if p.fail.Load() {
		return Minted{}, fmt.Errorf("token API down: %w", errdefs.ErrUnavailable)
	}
	m := Minted{Username: "AWS", Secret: secret.New(fmt.Sprintf("%s-%d", canary, n))}
	if p.life > 0 {
		m.ExpiresAt = p.now().Add(p.life)
	}
	return m, nil
}

func (p *fakeProvider) CacheScope(reg registry.Registry, _ document.Document) string {
	if p.scope != nil {
		return p.scope(reg)
	}
	return reg.Host
}

// clock is a settable time source.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func mustDoc(t testing.TB, text, host string) document.Document {
	t.Helper()
	d, err := document.Parse("annotation test", text, host)
	if err != nil {
		t.Fatal(err)
	}
	return d[0]
}

func reg(host string) registry.Registry { return registry.Detect(host) }

// mustNew is New with options that must be valid.
func mustNew(t testing.TB, opts ...Option) *Keychain {
	t.Helper()
	k, err := New(opts...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return k
}

func TestBasicAndTokenProviders(t *testing.T) {
	k := mustNew(t)
	for _, tc := range []struct {
		name, host, doc, user, provider string
		secretKey                       string
	}{
		{"basic", "r.example.com", `{"USERNAME":"u","PASSWORD":"` + canary + `"}`, "u", "basic", canary},
		{"basic, registry keys first", "r.example.com", `{"USERNAME":"plain","PASSWORD":"x","REGISTRY_USERNAME":"reg","REGISTRY_PASSWORD":"` + canary + `"}`, "reg", "basic", canary},
		{"basic user:pass", "r.example.com", "robot+ci:" + canary, "robot+ci", "basic", canary},
		{"ngc", "nvcr.io", `{"NGC_API_KEY":"` + canary + `"}`, "$oauthtoken", "token/ngc", canary},
		{"ghcr with username", "ghcr.io", `{"GITHUB_USERNAME":"octo","GITHUB_TOKEN":"` + canary + `"}`, "octo", "token/ghcr", canary},
		{"ghcr without username", "ghcr.io", `{"GITHUB_TOKEN":"` + canary + `"}`, "x-access-token", "token/ghcr", canary},
		{"dockerhub token", "docker.io", `{"DOCKERHUB_USERNAME":"me","DOCKERHUB_TOKEN":"` + canary + `"}`, "me", "token/dockerhub", canary},
		{"each registry its own token", "nvcr.io", `{"GITHUB_TOKEN":"x","NGC_API_KEY":"` + canary + `"}`, "$oauthtoken", "token/ngc", canary},
		{"token on a generic host", "r.example.com", `{"type":"token","credentials":{"GCP_ACCESS_TOKEN":"` + canary + `"}}`, "oauth2accesstoken", "token/oauth2", canary},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := k.Resolve(t.Context(), reg(tc.host), mustDoc(t, tc.doc, tc.host))
			if err != nil {
				t.Fatal(err)
			}
			if c.Username != tc.user || c.Secret.Reveal() != tc.secretKey || c.Provider != tc.provider || c.Anonymous {
				t.Errorf("got user %q provider %q anonymous %v", c.Username, c.Provider, c.Anonymous)
			}
			if c.Source != "annotation test" || c.Ref == "" || c.SourceFingerprint == "" || !c.ExpiresAt.IsZero() {
				t.Errorf("metadata: %+v", c)
			}
			if strings.Contains(fmt.Sprintf("%v %+v %#v", c, c, c), canary) {
				t.Error("credential formatting leaks the secret")
			}
		})
	}
}

func TestDockerHubTokenNeedsUsername(t *testing.T) {
	_, err := mustNew(t).Resolve(t.Context(), reg("docker.io"), mustDoc(t, `{"DOCKERHUB_TOKEN":"`+canary+`"}`, "docker.io"))
	if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "DOCKERHUB_TOKEN") || strings.Contains(err.Error(), canary) {
		t.Fatalf("err = %v", err)
	}
}

func TestPublicAndNone(t *testing.T) {
	k := mustNew(t)
	docs := []document.Document{mustDoc(t, `{"registry":"ghcr.io","type":"public"}`, "")}
	c, err := resolveFor(k, t.Context(), reg("ghcr.io"), docs)
	if err != nil || !c.Anonymous || c.Source != "annotation test" || c.Type != document.TypePublic {
		t.Fatalf("public: %+v %v", c, err)
	}
	c, err = resolveFor(k, t.Context(), reg("quay.io"), docs)
	if err != nil || !c.Anonymous || c.Source != SourceNone {
		t.Fatalf("no document: %+v %v", c, err)
	}
	if len(k.Entries()) != 0 {
		t.Fatal("anonymous credentials were cached")
	}
}

func TestUnsupportedType(t *testing.T) {
	_, err := mustNew(t).Resolve(t.Context(), reg("123456789012.dkr.ecr.us-east-1.amazonaws.com"),
		mustDoc(t, `{"AWS_ACCESS_KEY_ID":"AKID","AWS_SECRET_ACCESS_KEY":"`+canary+`"}`, ""))
	if !errdefs.IsNotImplemented(err) || !strings.Contains(err.Error(), "aws") || strings.Contains(err.Error(), canary) {
		t.Fatalf("err = %v", err)
	}
}

func TestCacheKeyIsolation(t *testing.T) {
	clk := &clock{t: time.Unix(1_700_000_000, 0)}
	p := &fakeProvider{typ: document.TypeBasic, life: time.Hour, now: clk.Now}
	k := mustNew(t, WithProvider(p), WithClock(clk.Now))
	a := mustDoc(t, `{"USERNAME":"a","PASSWORD":"pa"}`, "")
	b := mustDoc(t, `{"USERNAME":"b","PASSWORD":"pb"}`, "")
	r := reg("r.example.com")

	ca, _ := k.Resolve(t.Context(), r, a)
	cb, _ := k.Resolve(t.Context(), r, b)
	if ca.Secret.Equal(cb.Secret) || ca.Ref == cb.Ref || p.calls.Load() != 2 {
		t.Fatal("two tenants' credentials share a cache entry")
	}
	ca2, _ := k.Resolve(t.Context(), r, a)
	if !ca2.Secret.Equal(ca.Secret) || p.calls.Load() != 2 {
		t.Fatal("the same credential was minted twice")
	}
	// Another host, same document: another entry (the provider is not a wide Scoper).
	if c, _ := k.Resolve(t.Context(), reg("s.example.com"), a); c.Secret.Equal(ca.Secret) || p.calls.Load() != 3 {
		t.Fatal("a credential minted for one host was served for another")
	}
	if got := len(k.Entries()); got != 3 {
		t.Fatalf("%d entries", got)
	}
}

func TestScoperSharesAcrossHosts(t *testing.T) {
	clk := &clock{t: time.Unix(1_700_000_000, 0)}
	p := &fakeProvider{typ: document.TypeBasic, life: time.Hour, now: clk.Now, scope: func(r registry.Registry) string { return "region-x" }}
	k := mustNew(t, WithProvider(p), WithClock(clk.Now))
	d := mustDoc(t, `{"USERNAME":"a","PASSWORD":"pa"}`, "")
	c1, _ := k.Resolve(t.Context(), reg("a.example.com"), d)
	c2, _ := k.Resolve(t.Context(), reg("b.example.com"), d)
	if p.calls.Load() != 1 || c2.Registry.Host != "b.example.com" || c1.Ref != c2.Ref {
		t.Fatalf("calls %d, c2 host %s", p.calls.Load(), c2.Registry.Host)
	}
}

func TestConcurrentMissesMintOnce(t *testing.T) {
	p := &fakeProvider{typ: document.TypeBasic, life: time.Hour, now: time.Now, gate: make(chan struct{})}
	k := mustNew(t, WithProvider(p))
	d := mustDoc(t, `{"USERNAME":"a","PASSWORD":"pa"}`, "")
	const n = 64
	var wg sync.WaitGroup
	creds := make([]Credential, n)
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			creds[i], errs[i] = k.Resolve(context.Background(), reg("r.example.com"), d)
		}()
	}
	// Let every goroutine reach the singleflight before the mint returns.
	time.Sleep(50 * time.Millisecond)
	close(p.gate)
	wg.Wait()
	if p.calls.Load() != 1 {
		t.Fatalf("%d mints for %d concurrent misses", p.calls.Load(), n)
	}
	for i := range n {
		if errs[i] != nil || !creds[i].Secret.Equal(creds[0].Secret) {
			t.Fatalf("resolution %d: %v", i, errs[i])
		}
	}
}

func TestCallerCancellationDoesNotCancelSharedMint(t *testing.T) {
	p := &fakeProvider{typ: document.TypeBasic, life: time.Hour, now: time.Now, gate: make(chan struct{})}
	k := mustNew(t, WithProvider(p))
	d := mustDoc(t, `{"USERNAME":"a","PASSWORD":"pa"}`, "")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { _, err := k.Resolve(ctx, reg("r.example.com"), d); done <- err }()
	time.Sleep(20 * time.Millisecond)
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled caller got %v", err)
	}
	close(p.gate)
	// The mint finished for the others and was cached.
	if _, err := k.Resolve(context.Background(), reg("r.example.com"), d); err != nil || p.calls.Load() != 1 {
		t.Fatalf("after cancel: %v, %d calls", err, p.calls.Load())
	}
}

func TestRefreshAheadAndNeverPastExpiry(t *testing.T) {
	clk := &clock{t: time.Unix(1_700_000_000, 0)}
	p := &fakeProvider{typ: document.TypeBasic, life: 100 * time.Second, now: clk.Now}
	k := mustNew(t, WithProvider(p), WithClock(clk.Now))
	k.jitter = func(time.Duration) time.Duration { return 0 }
	d := mustDoc(t, `{"USERNAME":"a","PASSWORD":"pa"}`, "")
	r := reg("r.example.com")

	c1, _ := k.Resolve(t.Context(), r, d)
	clk.Add(40 * time.Second) // before half-life: served from cache, no refresh
	if c, _ := k.Resolve(t.Context(), r, d); !c.Secret.Equal(c1.Secret) || p.calls.Load() != 1 {
		t.Fatal("refreshed before it was due")
	}
	clk.Add(20 * time.Second) // past half-life: served from cache, refresh in background
	c, _ := k.Resolve(t.Context(), r, d)
	if !c.Secret.Equal(c1.Secret) {
		t.Fatal("the due refresh blocked the caller instead of serving the cached credential")
	}
	waitFor(t, func() bool { return p.calls.Load() == 2 })
	waitFor(t, func() bool { c, _ := k.Resolve(t.Context(), r, d); return !c.Secret.Equal(c1.Secret) })

	// Refreshes keep failing: the cached credential is served until its
	// margin, never after.
	p.fail.Store(true)
	c2, _ := k.Resolve(t.Context(), r, d)
	clk.Add(60 * time.Second)
	if c, err := k.Resolve(t.Context(), r, d); err != nil || !c.Secret.Equal(c2.Secret) {
		t.Fatalf("stale-but-valid credential not served while refresh fails: %v", err)
	}
	clk.Add(35 * time.Second) // 95 s of 100: inside the 10 s margin
	if _, err := k.Resolve(t.Context(), r, d); !errdefs.IsUnavailable(err) {
		t.Fatalf("credential served inside its expiry margin (err %v)", err)
	}
}

func TestInvalidate(t *testing.T) {
	clk := &clock{t: time.Unix(1_700_000_000, 0)}
	p := &fakeProvider{typ: document.TypeBasic, life: time.Hour, now: clk.Now}
	k := mustNew(t, WithProvider(p), WithClock(clk.Now))
	d := mustDoc(t, `{"USERNAME":"a","PASSWORD":"pa"}`, "")
	r := reg("r.example.com")
	old, _ := k.Resolve(t.Context(), r, d)
	k.Invalidate(old)
	fresh, _ := k.Resolve(t.Context(), r, d)
	if fresh.Secret.Equal(old.Secret) || p.calls.Load() != 2 {
		t.Fatal("Invalidate did not force a re-mint")
	}
	// Invalidating the old credential again must not drop the new one.
	k.Invalidate(old)
	if c, _ := k.Resolve(t.Context(), r, d); !c.Secret.Equal(fresh.Secret) || p.calls.Load() != 2 {
		t.Fatal("a stale Invalidate dropped a newer credential")
	}
}

func TestCacheBound(t *testing.T) {
	p := &fakeProvider{typ: document.TypeBasic, life: time.Hour, now: time.Now}
	k := mustNew(t, WithProvider(p), WithCacheSize(8))
	for i := range 20 {
		d := mustDoc(t, fmt.Sprintf(`{"USERNAME":"u%d","PASSWORD":"p"}`, i), "")
		if _, err := k.Resolve(t.Context(), reg("r.example.com"), d); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(k.Entries()); n != 8 {
		t.Fatalf("%d entries, bound is 8", n)
	}
	// The most recent is still there; the first was evicted.
	calls := p.calls.Load()
	k.Resolve(t.Context(), reg("r.example.com"), mustDoc(t, `{"USERNAME":"u19","PASSWORD":"p"}`, ""))
	if p.calls.Load() != calls {
		t.Fatal("most recent entry evicted")
	}
	k.Resolve(t.Context(), reg("r.example.com"), mustDoc(t, `{"USERNAME":"u0","PASSWORD":"p"}`, ""))
	if p.calls.Load() != calls+1 {
		t.Fatal("oldest entry not evicted")
	}
}

func TestEntriesAreRedacted(t *testing.T) {
	k := mustNew(t)
	k.Resolve(t.Context(), reg("r.example.com"), mustDoc(t, `{"USERNAME":"u","PASSWORD":"`+canary+`"}`, ""))
	e := k.Entries()
	if len(e) != 1 || e[0].Host != "r.example.com" || e[0].Fingerprint == "" || e[0].Source != "annotation test" {
		t.Fatalf("entries %+v", e)
	}
	if strings.Contains(fmt.Sprintf("%+v", e), canary) {
		t.Fatal("Entries leak the secret")
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in 5s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestSourceIsTheCallersDocument: one secret under two annotation keys
// shares a cache entry, but each resolution names its own document.
func TestSourceIsTheCallersDocument(t *testing.T) {
	k := mustNew(t)
	a, _ := document.Parse("annotation a", `{"USERNAME":"u","PASSWORD":"p"}`, "")
	b, _ := document.Parse("annotation b", `{"USERNAME":"u","PASSWORD":"p"}`, "")
	r := reg("r.example.com")
	ca, _ := k.Resolve(t.Context(), r, a[0])
	cb, _ := k.Resolve(t.Context(), r, b[0])
	if ca.Ref != cb.Ref || ca.Source != "annotation a" || cb.Source != "annotation b" {
		t.Fatalf("sources %q %q, refs %s %s", ca.Source, cb.Source, ca.Ref, cb.Ref)
	}
}

// The cache is keyed by the document's full identity, never the 12-digit
// display fingerprint (2^48 is searchable for a colliding document).
func TestCacheKeyIsTheFullIdentity(t *testing.T) {
	k := mustNew(t)
	defer k.Close()
	d := mustDoc(t, `{"USERNAME":"a","PASSWORD":"`+canary+`"}`, "")
	if _, err := k.Resolve(t.Context(), reg("r.example.com"), d); err != nil {
		t.Fatal(err)
	}
	items := k.cache.Items()
	for _, it := range items {
		if it.Key.identity != d.Identity() || len(it.Key.identity) != len("sha256:")+64 {
			t.Fatalf("cache key source %q, want the document's full identity", it.Key.identity)
		}
	}
	if len(items) != 1 {
		t.Fatalf("%d entries", len(items))
	}
}

// A Ref is the full HMAC of the cache key under the ref key: stable for
// one key (a restarted plugin with the same key), unrelated under
// another, random per Keychain by default, and no hash of the secret
// anyone could test a guess against.
func TestRefIsAnHMACUnderTheRefKey(t *testing.T) {
	d := mustDoc(t, `{"USERNAME":"a","PASSWORD":"`+canary+`"}`, "")
	r := reg("r.example.com")
	refWith := func(opts ...Option) string {
		k := mustNew(t, opts...)
		defer k.Close()
		c, err := k.Resolve(t.Context(), r, d)
		if err != nil {
			t.Fatal(err)
		}
		return c.Ref
	}
	key := []byte(strings.Repeat("k", RefKeySize))
	ref := refWith(WithRefKey(key))
	if !strings.HasPrefix(ref, RefPrefix) || len(ref) != len(RefPrefix)+64 {
		t.Fatalf("ref form %q", ref)
	}
	m := hmac.New(sha256.New, key)
	m.Write([]byte(cacheKey{scope: r.Host, typ: d.Type, identity: d.Identity()}.String()))
	if want := RefPrefix + hex.EncodeToString(m.Sum(nil)); ref != want {
		t.Fatalf("ref %s, want the HMAC of the cache key %s", ref, want)
	}
	if again := refWith(WithRefKey(key)); again != ref {
		t.Errorf("same ref key, different refs: %s %s", ref, again)
	}
	if other := refWith(WithRefKey([]byte(strings.Repeat("o", RefKeySize)))); other == ref {
		t.Error("another ref key gave the same ref")
	}
	if a, b := refWith(), refWith(); a == b || a == ref || !strings.HasPrefix(a, RefPrefix) {
		t.Errorf("default keychains share refs: %s %s", a, b)
	}
	if strings.Contains(ref, strings.TrimPrefix(d.Identity(), "sha256:")[:12]) {
		t.Error("the ref shows the document's identity")
	}
}

// Fingerprints are HMACs under the keychain's fingerprint key: the same
// password gives different fingerprints under different keys, the same
// under the same key, and never the unkeyed sha256 anyone could compute
// for a guess (what fingerprints used to be).
func TestFingerprintsAreKeyed(t *testing.T) {
	doc := mustDoc(t, `{"USERNAME":"u","PASSWORD":"`+canary+`"}`, "")
	resolve := func(opts ...Option) (Credential, []Entry) {
		t.Helper()
		k := mustNew(t, opts...)
		defer k.Close()
		c, err := k.Resolve(t.Context(), reg("r.example.com"), doc)
		if err != nil {
			t.Fatal(err)
		}
		return c, k.Entries()
	}
	keyA, keyB := []byte(strings.Repeat("a", 32)), []byte(strings.Repeat("b", 32))
	a, entries := resolve(WithFingerprintKey(keyA))
	a2, _ := resolve(WithFingerprintKey(keyA))
	b, _ := resolve(WithFingerprintKey(keyB))
	r1, _ := resolve()
	r2, _ := resolve()
	if !strings.HasPrefix(a.SourceFingerprint, secret.FingerprintPrefix) || !strings.HasPrefix(a.SecretFingerprint, secret.FingerprintPrefix) {
		t.Fatalf("fingerprints %q %q", a.SourceFingerprint, a.SecretFingerprint)
	}
	if a.SourceFingerprint != a2.SourceFingerprint || a.SecretFingerprint != a2.SecretFingerprint {
		t.Error("the same key gave different fingerprints")
	}
	if a.SourceFingerprint == b.SourceFingerprint || a.SecretFingerprint == b.SecretFingerprint {
		t.Error("the same password has the same fingerprint under two keys")
	}
	if r1.SecretFingerprint == r2.SecretFingerprint || r1.SecretFingerprint == a.SecretFingerprint {
		t.Error("keychains without a key share fingerprints")
	}
	if len(entries) != 1 || entries[0].Fingerprint != a.SourceFingerprint {
		t.Errorf("Entries show %+v, want the credential's source fingerprint %s", entries, a.SourceFingerprint)
	}
	unkeyed := []string{
		secret.Hash(canary)[len("sha256:"):][:12], // the old secret fingerprint
		doc.Identity()[len("sha256:"):][:12],      // the old document fingerprint
		secret.Hash("node", doc.Identity())[len("sha256:"):][:12],
	}
	for _, c := range []Credential{a, b, r1} {
		for _, u := range unkeyed {
			if strings.Contains(c.SourceFingerprint+c.SecretFingerprint, u) {
				t.Errorf("fingerprint shows the unkeyed hash %s", u)
			}
		}
	}
}

// resolveFor resolves the document docs give reg's host, anonymous with
// none (the precedence chain does this on pulls).
func resolveFor(k *Keychain, ctx context.Context, reg registry.Registry, docs []document.Document) (Credential, error) {
	doc, ok := document.Select(docs, reg.Host)
	if !ok {
		return Anonymous(reg), nil
	}
	return k.Resolve(ctx, reg, doc)
}
