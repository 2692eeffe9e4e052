package keychain

import (
	"context"
	"crypto/hmac"
	crand "crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"

	"github.com/beam-cloud/b9-resolver/internal/cache"
	"github.com/beam-cloud/b9-resolver/internal/keychain/document"
	"github.com/beam-cloud/b9-resolver/internal/keychain/registry"
	"github.com/beam-cloud/b9-resolver/internal/metrics"
	"github.com/beam-cloud/b9-resolver/internal/secret"
)

// Defaults for the cache and refresh policy.
const (
	DefaultCacheSize = 4096
	// DefaultRefreshFraction starts a background refresh once this much of
	// a credential's life has passed (ECR tokens: at ~6 h of 12 h).
	DefaultRefreshFraction = 0.5
	// DefaultMaxMargin caps the safety margin kept before expiry; the
	// margin is a tenth of the life, at most this.
	DefaultMaxMargin = 30 * time.Second
	// DefaultMintTimeout bounds a background refresh.
	DefaultMintTimeout = 30 * time.Second
	// minRetry and maxRetry bound the backoff between failed refreshes.
	minRetry = 500 * time.Millisecond
	maxRetry = 5 * time.Minute
)

// RefPrefix starts every Credential.Ref.
const RefPrefix = "b9ref-"

// RefKeySize is the size of the random ref key a Keychain makes when
// WithRefKey does not give one.
const RefKeySize = 32

// SourceNone is the Source of the anonymous credential used when no
// document applies.
const SourceNone = "none"

// Keychain resolves credentials through providers, with a shared cache.
type Keychain struct {
	providers map[document.Type]Provider
	cache     *cache.Cache[cacheKey, *entry]
	cacheSize int
	// stateMu guards the refresh state of cached entries.
	stateMu         sync.Mutex
	now             func() time.Time
	refreshFraction float64
	maxMargin       time.Duration
	mintTimeout     time.Duration
	jitter          func(time.Duration) time.Duration
	// refKey keys the HMAC that makes a cache entry's Ref.
	refKey []byte
	// fp makes the fingerprints a Credential shows.
	fp secret.Fingerprinter
	// background refreshes hold this; Close cancels them.
	bg       context.Context
	bgCancel context.CancelFunc
}

// New returns a Keychain with the public, basic and token providers and
// whatever opts add. An option given a value it cannot use is an
// InvalidArgument error naming it.
func New(opts ...Option) (*Keychain, error) {
	k := &Keychain{
		providers:       map[document.Type]Provider{},
		cacheSize:       DefaultCacheSize,
		now:             time.Now,
		refreshFraction: DefaultRefreshFraction,
		maxMargin:       DefaultMaxMargin,
		mintTimeout:     DefaultMintTimeout,
		jitter: func(d time.Duration) time.Duration {
			if d <= 0 {
				return 0
			}
			return time.Duration(rand.Int64N(int64(d)))
		},
	}
	for _, p := range []Provider{Public{}, Basic{}, Token{}} {
		k.providers[p.Type()] = p
	}
	for _, o := range opts {
		if err := o(k); err != nil {
			return nil, err
		}
	}
	k.bg, k.bgCancel = context.WithCancel(context.Background())
	k.cache = cache.New[cacheKey, *entry](k.cacheSize, cache.WithClock(func() time.Time { return k.now() }))
	if k.refKey == nil {
		k.refKey = make([]byte, RefKeySize)
		// crypto/rand.Read never fails (it panics if the OS cannot give
		// randomness).
		_, _ = crand.Read(k.refKey)
	}
	if !k.fp.Keyed() {
		k.fp = secret.RandomFingerprinter()
	}
	return k, nil
}

// Fingerprinter is what this Keychain makes fingerprints with, for
// credentials built outside it that are shown beside its own.
func (k *Keychain) Fingerprinter() secret.Fingerprinter { return k.fp }

// Close stops background refreshes.
func (k *Keychain) Close() { k.bgCancel() }

// Anonymous is the credential for a host no document applies to.
func Anonymous(reg registry.Registry) Credential {
	return Credential{Registry: reg, Source: SourceNone, Provider: "anonymous", Anonymous: true}
}

// Resolve returns the credential doc gives for reg: from the cache while it
// is usable (starting a background refresh once it is due), else minted —
// once for all concurrent callers with the same key.
func (k *Keychain) Resolve(ctx context.Context, reg registry.Registry, doc document.Document) (Credential, error) {
	p, ok := k.providers[doc.Type]
	if !ok {
		return Credential{}, fmt.Errorf("%s: credential type %s is not enabled on this node: %w", doc.Source, doc.Type, errdefs.ErrNotImplemented)
	}
	if doc.Type == document.TypePublic {
		return k.credential(reg, doc, p, Minted{Anonymous: true}, cacheKey{}), nil
	}
	key := cacheKey{scope: reg.Host, typ: doc.Type, identity: doc.Identity()}
	if s, ok := p.(Scoper); ok {
		key.scope = s.CacheScope(reg, doc)
	}

	if e, ok := k.cache.Lookup(key); ok {
		k.refreshIfDue(e, p)
		metrics.CacheLookup(true)
		// The cached credential may have been minted for another host of
		// the same scope, from the same secret under another document (an
		// other annotation key, another pod); it is presented to this host
		// on behalf of this document.
		cred := e.cred
		cred.Registry, cred.Source = reg, doc.Source
		return cred, nil
	}
	metrics.CacheLookup(false)
	// One mint for all concurrent misses, on a context no caller's
	// cancellation cuts short for the others waiting on it.
	e, err := k.cache.Get(ctx, key, func(ctx context.Context) (*entry, time.Time, error) {
		ctx, cancel := context.WithTimeout(ctx, k.mintTimeout)
		defer cancel()
		return k.mint(ctx, key, p, reg, doc)
	})
	if err != nil {
		if cerr := ctx.Err(); cerr != nil && errors.Is(err, cerr) {
			return Credential{}, fmt.Errorf("%s credentials for %s from %s: %w", doc.Type, reg.Host, doc.Source, err)
		}
		return Credential{}, err
	}
	cred := e.cred
	cred.Registry, cred.Source = reg, doc.Source
	return cred, nil
}

// mint calls the provider and returns the entry to cache and until when
// it may be served.
func (k *Keychain) mint(ctx context.Context, key cacheKey, p Provider, reg registry.Registry, doc document.Document) (*entry, time.Time, error) {
	start := time.Now()
	m, err := p.Mint(ctx, reg, doc)
	metrics.Mint(string(doc.Type), err, time.Since(start))
	if err != nil {
		return nil, time.Time{}, redactDocument(fmt.Errorf("%s credentials for %s from %s: %w", doc.Type, reg.Host, doc.Source, err), doc, reg.Host)
	}
	cred := k.credential(reg, doc, p, m, key)
	now := k.now()
	if !cred.Valid(now) {
		return nil, time.Time{}, fmt.Errorf("%s credentials for %s from %s: provider returned a credential that expired at %s: %w",
			doc.Type, reg.Host, doc.Source, cred.ExpiresAt.UTC().Format(time.RFC3339), errdefs.ErrUnavailable)
	}
	e := &entry{key: key, cred: cred, reg: reg, doc: doc}
	k.schedule(e, now)
	return e, e.usableUntil, nil
}

// schedule sets the entry's margin and refresh time from its life.
func (k *Keychain) schedule(e *entry, now time.Time) {
	if !e.expires() {
		return
	}
	life := e.cred.ExpiresAt.Sub(now)
	margin := cache.ExpiryMargin(life, k.maxMargin)
	e.usableUntil = e.cred.ExpiresAt.Add(-margin)
	// Refresh at refreshFraction of life, jittered by up to a tenth of the
	// life earlier so many nodes minting at once do not refresh at once.
	at := time.Duration(float64(life) * k.refreshFraction)
	e.refreshAt = now.Add(at - k.jitter(life/10))
}

// refreshIfDue starts a background refresh of e once its time has come.
func (k *Keychain) refreshIfDue(e *entry, p Provider) {
	if !e.expires() {
		return
	}
	now := k.now()
	k.stateMu.Lock()
	due := !e.refreshing && !now.Before(e.refreshAt)
	if due {
		e.refreshing = true
	}
	k.stateMu.Unlock()
	if due {
		go k.refresh(e, p)
	}
}

// refresh re-mints an entry in the background (sharing a mint a caller
// already started). On failure the entry keeps serving until usableUntil
// and the refresh is retried with backoff.
func (k *Keychain) refresh(e *entry, p Provider) {
	ctx, cancel := context.WithTimeout(k.bg, k.mintTimeout)
	defer cancel()
	_, err := k.cache.Fetch(ctx, e.key, func(ctx context.Context) (*entry, time.Time, error) {
		return k.mint(ctx, e.key, p, e.reg, e.doc)
	})
	if err == nil {
		return
	}
	k.stateMu.Lock()
	defer k.stateMu.Unlock()
	e.refreshing = false
	e.failures++
	now := k.now()
	wait := min(minRetry<<min(e.failures, 20), maxRetry, max(e.usableUntil.Sub(now)/2, minRetry))
	e.refreshAt = now.Add(wait/2 + k.jitter(wait/2))
	log.G(ctx).WithError(err).WithField("registry", e.reg.Host).WithField("retry_in", wait).
		Warn("background credential refresh failed; serving the cached credential until it expires")
}

// Invalidate drops the cached credential c came from, if it still holds
// the same secret (a newer one minted meanwhile is kept). Call it when a
// registry rejects c as expired or revoked; the next Resolve re-mints.
func (k *Keychain) Invalidate(c Credential) {
	k.cache.RemoveFunc(func(_ cacheKey, e *entry) bool {
		if e.cred.Ref != c.Ref || !e.cred.Secret.Equal(c.Secret) {
			return false
		}
		if inv, ok := k.providers[e.doc.Type].(Invalidator); ok {
			inv.Invalidate(e.reg, e.doc)
		}
		return true
	})
}

// Entry is a cached credential as ListCredentials shows it: no secret.
type Entry struct {
	Host        string        `json:"host"`
	Kind        registry.Kind `json:"kind"`
	Type        document.Type `json:"type"`
	Source      string        `json:"source"`
	Provider    string        `json:"provider"`
	Username    string        `json:"username,omitempty"`
	Fingerprint string        `json:"fingerprint"`
	Ref         string        `json:"ref"`
	ExpiresAt   time.Time     `json:"expires_at,omitzero"`
}

// Entries lists the cache, most recently used first.
func (k *Keychain) Entries() []Entry {
	items := k.cache.Items()
	out := make([]Entry, 0, len(items))
	for _, it := range items {
		c := it.Value.cred
		out = append(out, Entry{
			Host: c.Registry.Host, Kind: c.Registry.Kind, Type: c.Type, Source: c.Source,
			Provider: c.Provider, Username: c.Username, Fingerprint: c.SourceFingerprint,
			Ref: c.Ref, ExpiresAt: c.ExpiresAt,
		})
	}
	return out
}

// credential assembles a Credential from a provider's answer.
func (k *Keychain) credential(reg registry.Registry, doc document.Document, p Provider, m Minted, key cacheKey) Credential {
	name := m.Provider
	if name == "" {
		name = string(p.Type())
	}
	c := Credential{
		Registry: reg, Type: doc.Type, Source: doc.Source, Provider: name,
		Username: m.Username, Secret: m.Secret, IdentityToken: m.IdentityToken,
		Anonymous: m.Anonymous, ExpiresAt: m.ExpiresAt,
		SourceFingerprint: k.fp.Of(doc.Identity()), SecretFingerprint: k.fp.Secret(m.Secret),
	}
	if key != (cacheKey{}) {
		c.Ref = k.ref(key)
	}
	return c
}

// ref is the opaque id of a cache entry: RefPrefix and the full
// HMAC-SHA256 of the key under the Keychain's ref key.
func (k *Keychain) ref(key cacheKey) string {
	m := hmac.New(sha256.New, k.refKey)
	m.Write([]byte(key.String()))
	return RefPrefix + hex.EncodeToString(m.Sum(nil))
}
