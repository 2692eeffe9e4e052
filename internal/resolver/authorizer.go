package resolver

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/containerd/containerd/v2/core/remotes/docker"
	"github.com/containerd/errdefs"
	"github.com/containerd/log"

	"github.com/beam-cloud/b9-resolver/internal/keychain"
	"github.com/beam-cloud/b9-resolver/internal/keychain/registry"
	"github.com/beam-cloud/b9-resolver/internal/metrics"
	"github.com/beam-cloud/b9-resolver/internal/origin"
	"github.com/beam-cloud/b9-resolver/internal/secret"
)

const userAgent = "b9-resolver"

// Defaults for an Authorizer.
const (
	DefaultTokenCacheSize = 1024
	// DefaultMaxTokenMargin caps how long before its expiry a token stops
	// being used (a tenth of its life, at most this).
	DefaultMaxTokenMargin = 30 * time.Second
	DefaultFetchTimeout   = 30 * time.Second
	// DefaultClientID is the OAuth2 client_id sent with POST token requests.
	DefaultClientID = "b9-resolver"
	// credentialRecheck bounds how long a host authorizer reuses the
	// credential it resolved before asking Credentials again.
	credentialRecheck = time.Minute
)

// Authorizer holds what outlives a pull: each host's challenge and the
// bearer-token cache. Create one per node and share it; bind it to a pull's
// credentials with Resolver.Hosts (or For).
type Authorizer struct {
	challenges   challenges
	scopes       scopeMemory
	tokens       *tokenCache
	tokenCap     int
	now          func() time.Time
	maxMargin    time.Duration
	fetchTimeout time.Duration
	clientID     string
	fetches      atomic.Int64
	// clients are the token clients, guarded by the realm rule.
	clients tokenClients
}

// AuthorizerOption configures an Authorizer. An option given a value it
// cannot use returns an error rather than keep the default silently.
type AuthorizerOption func(*Authorizer) error

// invalidOption is the error of an option refusing its value, naming the
// option and the value.
func invalidOption(option, format string, args ...any) error {
	return fmt.Errorf("resolver.%s: %s: %w", option, fmt.Sprintf(format, args...), errdefs.ErrInvalidArgument)
}

// WithTokenCacheSize bounds the number of cached bearer tokens; n > 0.
func WithTokenCacheSize(n int) AuthorizerOption {
	return func(a *Authorizer) error {
		if n <= 0 {
			return invalidOption("WithTokenCacheSize", "%d is not a positive size", n)
		}
		a.tokenCap = n
		return nil
	}
}

// WithClock replaces time.Now (tests).
func WithClock(now func() time.Time) AuthorizerOption {
	return func(a *Authorizer) error {
		if now == nil {
			return invalidOption("WithClock", "a nil function")
		}
		a.now = now
		return nil
	}
}

// WithMaxTokenMargin caps the safety margin kept before a token's expiry;
// 0 keeps none, a negative margin (serving tokens past their expiry) is
// refused.
func WithMaxTokenMargin(d time.Duration) AuthorizerOption {
	return func(a *Authorizer) error {
		if d < 0 {
			return invalidOption("WithMaxTokenMargin", "%s is negative", d)
		}
		a.maxMargin = d
		return nil
	}
}

// WithFetchTimeout bounds one token fetch; d > 0.
func WithFetchTimeout(d time.Duration) AuthorizerOption {
	return func(a *Authorizer) error {
		if d <= 0 {
			return invalidOption("WithFetchTimeout", "%s is not a positive duration", d)
		}
		a.fetchTimeout = d
		return nil
	}
}

// WithClientID sets the OAuth2 client_id; not empty (token servers that
// check it refuse a request without one).
func WithClientID(id string) AuthorizerOption {
	return func(a *Authorizer) error {
		if id == "" {
			return invalidOption("WithClientID", "an empty client_id")
		}
		a.clientID = id
		return nil
	}
}

// NewAuthorizer returns an empty Authorizer, or the InvalidArgument error
// of the first option that refused its value.
func NewAuthorizer(opts ...AuthorizerOption) (*Authorizer, error) {
	a := &Authorizer{
		tokenCap:     DefaultTokenCacheSize,
		now:          time.Now,
		maxMargin:    DefaultMaxTokenMargin,
		fetchTimeout: DefaultFetchTimeout,
		clientID:     DefaultClientID,
	}
	for _, o := range opts {
		if err := o(a); err != nil {
			return nil, err
		}
	}
	a.tokens = newTokenCache(a.tokenCap, func() time.Time { return a.now() })
	return a, nil
}

// TokenFetches is how many tokens were fetched (successfully) so far.
func (a *Authorizer) TokenFetches() int64 { return a.fetches.Load() }

// CachedTokens is the number of tokens in the cache.
func (a *Authorizer) CachedTokens() int { return a.tokens.Len() }

// Binding is what one host of one pull needs from its caller.
type Binding struct {
	// Host is the docker.RegistryHost's Host: the only host that receives
	// credentials through this binding.
	Host string
	// Scheme is the host's scheme ("https", "http").
	Scheme string
	// Registry is the registry whose credential the host gets: the host's
	// own (detected, canonical).
	Registry registry.Registry
	// Mirror is set when Host serves as a mirror of Upstream.
	Mirror bool
	// Upstream is the image's registry.
	Upstream registry.Registry
	// TrustUpstream lets a mirror with no credential of its own present
	// the upstream's.
	TrustUpstream bool
	Credentials   Credentials
	// Client fetches tokens (the host's TLS settings apply to its realm).
	Client *http.Client
	// Header is sent with token requests (hosts.toml and configured headers).
	Header http.Header
}

// For returns the docker.Authorizer for one host of one pull.
func (a *Authorizer) For(b Binding) docker.Authorizer {
	if b.Client == nil {
		b.Client = http.DefaultClient
	}
	if b.Credentials == nil {
		b.Credentials = Anonymous
	}
	return &hostAuthorizer{a: a, b: b, origin: origin.OfHost(b.Scheme, b.Host), realm: realmPolicy{scheme: b.Scheme, host: b.Host}}
}

// hostAuthorizer implements docker.Authorizer for one host of one pull.
type hostAuthorizer struct {
	a *Authorizer
	b Binding
	// origin is where the binding's credentials may go: the host's scheme,
	// lower-cased name and effective port.
	origin origin.Origin
	realm  realmPolicy

	mu   sync.Mutex
	cred *resolved
	// challenged: the host answered this binding with a challenge, so the
	// one remembered is current. Before that, a remembered challenge that
	// leads to a refused token is re-learnt once (see Authorize).
	challenged bool
	relearnt   bool
}

// resolved is a credential with what requests need from it, computed once.
type resolved struct {
	cred keychain.Credential
	// fp identifies the credential in token cache keys.
	fp string
	// basic is the ready "Basic ..." header ("" when anonymous).
	basic string
	until time.Time
}

var _ docker.Authorizer = (*hostAuthorizer)(nil)

// Authorize adds the Authorization header a request to the bound host
// needs, from what earlier requests (of any pull) learned: the host's
// challenge and, for bearer hosts, a cached token. Before a host's first
// challenge it adds nothing — the registry says what it wants.
func (h *hostAuthorizer) Authorize(ctx context.Context, req *http.Request) error {
	if origin.Of(req.URL) != h.origin {
		// containerd authorises a redirect with the original host's
		// authorizer, and Go's client copies the header along to the same
		// host name on plain http, on another port or to a subdomain.
		// Credentials are for the origin they were resolved for only; a
		// target that asked for a token of its own gets an anonymous one.
		req.Header.Del("Authorization")
		return h.authorizeTarget(ctx, req)
	}
	ch, ok := h.a.challenges.get(h.b.Host)
	if !ok {
		return nil
	}
	// One clock read per request: on some VMs it is the dearest step.
	now := h.a.now()
	rc, err := h.credential(ctx, now)
	if err != nil {
		return err
	}
	switch ch.scheme {
	case schemeBasic:
		if rc.basic != "" {
			req.Header.Set("Authorization", rc.basic)
		}
	case schemeBearer:
		v, err := h.bearer(ctx, ch, rc, now)
		if err != nil {
			if !h.relearn(ctx, err) {
				return err
			}
			// Sent without a token, the request draws the registry's
			// current challenge, and containerd retries it.
			req.Header.Del("Authorization")
			return nil
		}
		req.Header.Set("Authorization", v)
	}
	return nil
}

// relearn reports whether a token refused up front — with a challenge
// remembered from an earlier binding, which the registry may since have
// changed (realm, service, scope) — is worth one request without a token
// to learn the current challenge. Once per binding, and never after this
// binding's own challenge (then the refusal is the answer).
func (h *hostAuthorizer) relearn(ctx context.Context, err error) bool {
	if ctx.Err() != nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.challenged || h.relearnt {
		return false
	}
	h.relearnt = true
	log.G(ctx).WithField("host", h.b.Host).WithError(err).
		Debug("token refused with the remembered challenge; sending the request without one to learn the registry's current challenge")
	return true
}

// credential returns the credential for the bound host, resolving it once
// per credentialRecheck (or sooner when it expires).
func (h *hostAuthorizer) credential(ctx context.Context, now time.Time) (*resolved, error) {
	h.mu.Lock()
	rc := h.cred
	h.mu.Unlock()
	if rc != nil && now.Before(rc.until) {
		return rc, nil
	}
	cred, err := h.b.Credentials.Credential(ctx, h.b.Registry, h.b.Mirror)
	if err != nil {
		return nil, fmt.Errorf("credentials for %s: %w", h.b.Host, err)
	}
	// Only when no document names the mirror: a public document naming it
	// is an explicit anonymous, which never falls back.
	if h.b.Mirror && h.b.TrustUpstream && cred.Source == keychain.SourceNone {
		cred, err = h.b.Credentials.Credential(ctx, h.b.Upstream, false)
		if err != nil {
			return nil, fmt.Errorf("credentials of %s for its mirror %s: %w", h.b.Upstream.Host, h.b.Host, err)
		}
	}
	rc = &resolved{cred: cred, fp: "anonymous", until: now.Add(credentialRecheck)}
	if !cred.Anonymous && !cred.Secret.IsZero() {
		kind := "p"
		if cred.IdentityToken {
			kind = "i"
		}
		rc.fp = secret.Hash(kind, cred.Username, cred.Secret.Reveal())
		if !cred.IdentityToken {
			rc.basic = "Basic " + base64.StdEncoding.EncodeToString([]byte(cred.Username+":"+cred.Secret.Reveal()))
		}
		// Ask again before it nears expiry, as the keychain retires it:
		// a long pull must not go on presenting a dying credential.
		if exp := cred.ExpiresAt; !exp.IsZero() && exp.Add(-keychain.DefaultMaxMargin).Before(rc.until) {
			rc.until = exp.Add(-keychain.DefaultMaxMargin)
		}
	}
	h.mu.Lock()
	h.cred = rc
	h.mu.Unlock()
	return rc, nil
}

// bearer returns "Bearer <token>" for the request's scopes: cached, or
// fetched once for all concurrent requests with the same key. A token
// endpoint that rejects the credential gets one more try with a freshly
// resolved one (an expired ACR refresh token is re-minted by the keychain).
func (h *hostAuthorizer) bearer(ctx context.Context, ch challenge, rc *resolved, now time.Time) (string, error) {
	scopes := docker.GetTokenScopes(ctx, nil)
	if extra := h.a.scopes.extra(h.b.Host, scopes); len(extra) > 0 {
		scopes = docker.GetTokenScopes(ctx, extra)
	}
	key := tokenKey{host: h.b.Host, scopes: strings.Join(scopes, " "), cred: rc.fp}
	if v, ok := h.a.tokens.Lookup(key); ok {
		return v, nil
	}
	v, err := h.a.fetch(ctx, key, h.tokenRequest(ch, scopes, rc.cred))
	if err == nil || rc.cred.Anonymous || !(errdefs.IsUnauthorized(err) || errdefs.IsPermissionDenied(err)) {
		return v, err
	}
	log.G(ctx).WithField("host", h.b.Host).WithField("source", rc.cred.Source).
		Debug("token endpoint rejected the credential; resolving it again and retrying once")
	h.invalidateCredential(rc)
	rc2, err2 := h.credential(ctx, h.a.now())
	if err2 != nil {
		return "", err2
	}
	key.cred = rc2.fp
	return h.a.fetch(ctx, key, h.tokenRequest(ch, scopes, rc2.cred))
}

func (h *hostAuthorizer) tokenRequest(ch challenge, scopes []string, cred keychain.Credential) TokenRequest {
	return TokenRequest{
		Client: h.b.Client, Header: h.b.Header, ClientID: h.a.clientID,
		RegistryScheme: h.b.Scheme, RegistryHost: h.b.Host,
		Realm: ch.realm, Service: ch.service, Scopes: scopes, Credential: cred,
	}
}

// fetch gets a token for key once for all concurrent callers and caches
// it until a margin before its expiry. One caller's cancellation ends only
// its own wait.
func (a *Authorizer) fetch(ctx context.Context, key tokenKey, tr TokenRequest) (string, error) {
	v, err := a.tokens.Get(ctx, key, func(fctx context.Context) (string, time.Time, error) {
		fctx, cancel := context.WithTimeout(fctx, a.fetchTimeout)
		defer cancel()
		p := realmPolicy{scheme: tr.RegistryScheme, host: tr.RegistryHost}
		tok, err := fetchToken(fctx, tr, a.clients.get(tr.Client, p, credentialed(tr.Credential)))
		metrics.TokenFetch(err)
		if err != nil {
			return "", time.Time{}, err
		}
		a.fetches.Add(1)
		_, usableUntil := lifetimes(a.now(), tok.Life, a.maxMargin)
		return "Bearer " + tok.Value, usableUntil, nil
	})
	if cerr := ctx.Err(); err != nil && cerr != nil && errors.Is(err, cerr) {
		return "", fmt.Errorf("token for %s: %w", tr.RegistryHost, err)
	}
	return v, err
}

// invalidateCredential forgets rc here and reports it to Credentials.
func (h *hostAuthorizer) invalidateCredential(rc *resolved) {
	h.mu.Lock()
	if h.cred == rc {
		h.cred = nil
	}
	h.mu.Unlock()
	if !rc.cred.Anonymous {
		h.b.Credentials.Invalidate(rc.cred)
	}
}

// AddResponses learns from a 401 (or ECR's "expired" 403, which the host's
// transport presents as one): it records the host's challenge for every
// later request and pull, and when the registry rejected what was sent it
// drops the token and the credential and lets containerd retry — once.
func (h *hostAuthorizer) AddResponses(ctx context.Context, responses []*http.Response) error {
	last := responses[len(responses)-1]
	req := last.Request
	// Only a redirect can reach another origin: containerd sends its own
	// requests to the bound host (over plain http when its fallback for a
	// host configured as http downgraded one), and the request in the
	// answer is then the one the transport sent.
	if req.Response != nil && origin.Of(req.URL) != h.origin {
		return h.learnTarget(ctx, responses)
	}
	expired := last.Header.Get(expiredHeader) != ""
	p, ok := parseChallenge(last.Header)
	switch {
	case expired:
		p.err = "authorization token has expired"
	case !ok:
		return fmt.Errorf("%s answered 401 without a basic or bearer challenge: %w", h.b.Host, errdefs.ErrNotImplemented)
	default:
		if p.scheme == schemeBearer {
			if err := h.realm.checkRealm(p.realm); err != nil {
				return err
			}
		}
		h.a.challenges.set(h.b.Host, p.challenge)
		h.mu.Lock()
		h.challenged = true
		h.mu.Unlock()
		if p.scope != "" {
			h.a.scopes.learn(h.b.Host, docker.GetTokenScopes(ctx, nil), strings.Fields(p.scope))
		}
	}

	sent := req.Header.Get("Authorization")
	if sent == "" {
		if unauthorized(responses, false) > 1 {
			return fmt.Errorf("%s keeps answering 401 to requests without credentials: %w", h.b.Host, errdefs.ErrUnauthenticated)
		}
		if p.scheme == schemeBasic {
			rc, err := h.credential(ctx, h.a.now())
			if err != nil {
				return err
			}
			if rc.basic == "" {
				return fmt.Errorf("%s requires credentials and none apply to it (credentials from %s): %w: %w",
					h.b.Host, describeSource(rc.cred), errdefs.ErrUnauthenticated, docker.ErrInvalidAuthorization)
			}
		}
		return nil // authorise up front from now on, and retry
	}

	// The registry rejected what was sent: forget it, so the retry (and
	// every other pull) uses a fresh token and credential.
	removeHeader(h.a.tokens, h.b.Host, sent)
	h.mu.Lock()
	rc := h.cred
	h.mu.Unlock()
	// insufficient_scope says the token lacks access, not that the
	// credential went bad: keep the credential (re-minting it is a cloud
	// API call).
	if rc != nil && p.err != CodeInsufficientScope {
		h.invalidateCredential(rc)
	}
	if unauthorized(responses, true) > 1 {
		return h.rejected(p, rc)
	}
	log.G(ctx).WithField("host", h.b.Host).WithField("error", keychain.OneLine(p.err, 64)).
		Debug("registry rejected the authorization; dropped it, retrying once")
	return nil
}

// rejected is the final error after the retry was rejected too.
func (h *hostAuthorizer) rejected(p parsed, rc *resolved) error {
	src := "unknown source"
	if rc != nil {
		src = describeSource(rc.cred)
	}
	return &RefusedError{Host: h.b.Host, Code: p.err, Scheme: p.scheme.String(), Source: src}
}

// unauthorized counts the 401s among responses whose request carried an
// Authorization header (withAuth) or did not.
func unauthorized(responses []*http.Response, withAuth bool) int {
	n := 0
	for _, r := range responses {
		if r.StatusCode == http.StatusUnauthorized && (r.Request.Header.Get("Authorization") != "") == withAuth {
			n++
		}
	}
	return n
}
