package service

import (
	"context"
	"encoding/base64"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/containerd/log"

	"github.com/beam-cloud/b9-resolver/internal/keychain"
	"github.com/beam-cloud/b9-resolver/internal/keychain/chain"
	"github.com/beam-cloud/b9-resolver/internal/keychain/document"
	"github.com/beam-cloud/b9-resolver/internal/keychain/registry"
	"github.com/beam-cloud/b9-resolver/internal/secret"
)

// pullAuth answers "which credential for this host?" for one pull. It
// resolves each host once, lazily (a registry that never challenges costs
// no mint), remembers what it presented — for error messages, the
// credential-ref label and fallback — and knows every secret the pull
// touched so they can be cut out of anything it returns.
type pullAuth struct {
	kc       *keychain.Keychain
	detector *registry.Detector
	src      *requestSources
	strict   bool

	mu sync.Mutex
	// cands are each host's candidates, looked up source by source as far
	// as the pull needed them.
	cands map[string]*chain.Candidates
	// skip counts the candidates a host has used up: after a registry
	// rejected one, the retry starts past it (isolation "fallback").
	skip map[string]int
	used map[string]presented
	// podCredentialUsed is set once a pod's own credential (not anonymous,
	// public or the node's) was presented to any host of the pull, even if
	// a later one replaced it (ensure_secret_pulled_images).
	podCredentialUsed bool
	// secrets are values to cut from messages; see scrub.
	secrets map[string]struct{}
}

// presented is what was offered to a host.
type presented struct {
	cred keychain.Credential
	// cand is where cred came from (zero for anonymous-by-default).
	cand  chain.Candidate
	index int
	// stale is set when the registry rejected cred as expired or revoked:
	// the next request resolves again, while messages still name it.
	stale bool
}

func newPullAuth(kc *keychain.Keychain, det *registry.Detector, src *requestSources, strict bool) *pullAuth {
	p := &pullAuth{
		kc: kc, detector: det, src: src, strict: strict,
		cands: map[string]*chain.Candidates{}, skip: map[string]int{}, used: map[string]presented{}, secrets: map[string]struct{}{},
	}
	for _, d := range src.annotations {
		p.addDocSecrets(d)
	}
	if src.auth != nil {
		p.addCandidateSecrets(*src.auth)
	}
	return p
}

// credential returns the credential for a canonical host: the first
// candidate that resolves (strict: the first candidate only), anonymous
// when there is none. Candidates are looked up lazily: a later tier (the
// node's files and docker-credential helpers) is consulted only when the
// earlier ones are used up or fail.
func (p *pullAuth) credential(ctx context.Context, host string) (keychain.Credential, error) {
	p.mu.Lock()
	// A credential near its expiry is resolved again (the keychain has a
	// fresh one by then): a long pull must not keep presenting it.
	if u, ok := p.used[host]; ok && !u.stale &&
		(u.cred.ExpiresAt.IsZero() || time.Now().Before(u.cred.ExpiresAt.Add(-keychain.DefaultMaxMargin))) {
		p.mu.Unlock()
		return u.cred, nil
	}
	start := p.skip[host]
	p.mu.Unlock()

	r, err := chain.Walk(ctx, p.kc, p.detector.Detect(host), p.candidates(host), start, p.strict, p.addCandidateSecrets)
	if err != nil {
		return keychain.Credential{}, err
	}
	return p.record(host, presented{cred: r.Cred, cand: r.Candidate, index: r.Index}), nil
}

// candidates are host's candidates for this pull, created on first use.
func (p *pullAuth) candidates(host string) *chain.Candidates {
	p.mu.Lock()
	defer p.mu.Unlock()
	cs := p.cands[host]
	if cs == nil {
		cs = p.src.candidates(host)
		p.cands[host] = cs
	}
	return cs
}

func (p *pullAuth) record(host string, u presented) keychain.Credential {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.used[host] = u
	if !openAccess(u) {
		p.podCredentialUsed = true
	}
	if s := u.cred.Secret.Reveal(); s != "" {
		p.secrets[s] = struct{}{}
		// A registry or proxy echoing a basic Authorization header would
		// carry this form.
		p.secrets[base64.StdEncoding.EncodeToString([]byte(u.cred.Username+":"+s))] = struct{}{}
	}
	return u.cred
}

// presentedTo returns what was offered to host, if anything.
func (p *pullAuth) presentedTo(host string) (presented, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	u, ok := p.used[host]
	return u, ok
}

// fallback moves host past the credential it was offered, for a retry
// after the registry rejected it. It reports false when there is nothing
// to fall back to (strict isolation, a public document, the last source);
// finding that out may look up the next tier (the node's credentials).
func (p *pullAuth) fallback(ctx context.Context, host string) bool {
	p.mu.Lock()
	u, ok := p.used[host]
	p.mu.Unlock()
	if !ok || p.strict || u.cand.Public() || (u.cand.Cred == nil && u.cand.Doc.Type == "") {
		return false
	}
	if _, more, err := p.candidates(host).At(ctx, u.index+1); err != nil || !more {
		if err != nil {
			log.G(ctx).WithError(err).WithField("registry", host).
				Warn("b9-resolver: looking up the next credential source failed; not falling back")
		}
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.skip[host] = u.index + 1
	delete(p.used, host)
	return true
}

// renew handles a registry rejecting cred, a credential the keychain
// minted: it drops cred from the keychain and resolves host again. It
// reports whether that gave another credential worth one more try (an
// expired or revoked token re-minted); a static secret comes back the
// same and is not presented twice.
func (p *pullAuth) renew(ctx context.Context, host string, cred keychain.Credential) bool {
	if cred.Ref == "" || cred.Anonymous {
		return false
	}
	p.Invalidate(cred)
	fresh, err := p.credential(ctx, host)
	return err == nil && !fresh.Anonymous && !fresh.Secret.Equal(cred.Secret)
}

// identity is the full hash of every credential source of the request
// (never 12-digit fingerprints, which a crafted document could collide
// with), so only pulls that would present the same credentials share one
// pull.
func (p *pullAuth) identity() string {
	parts := []string{}
	for _, d := range p.src.annotations {
		parts = append(parts, d.Identity())
	}
	if a := p.src.auth; a != nil {
		if a.Cred != nil {
			// A ready identity token: the token is the credential.
			parts = append(parts, "auth-token", a.Cred.Username, a.Cred.Secret.Reveal())
		} else {
			parts = append(parts, "auth", a.Doc.Identity())
		}
	}
	return secret.Hash(parts...)
}

// Credential implements resolver.Credentials: the resolver's shared
// Authorizer asks it, per host of this pull, on the host's first request.
// mirror needs no handling here: candidates already keep documents that
// name no registry for the image's own host.
func (p *pullAuth) Credential(ctx context.Context, reg registry.Registry, _ bool) (keychain.Credential, error) {
	return p.credential(ctx, reg.Host)
}

// Invalidate implements resolver.Credentials: a registry rejected cred as
// expired or revoked. The keychain drops it and the host resolves again,
// so the resolver's one retry presents a freshly minted credential.
func (p *pullAuth) Invalidate(cred keychain.Credential) {
	if cred.Ref != "" {
		p.kc.Invalidate(cred)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for host, u := range p.used {
		if u.cred.Ref == cred.Ref && u.cred.Secret.Equal(cred.Secret) {
			u.stale = true
			p.used[host] = u
			p.skip[host] = u.index
		}
	}
}

// scrub cuts every document value this pull touched — secrets, and the
// usernames, tenants and role ARNs beside them — out of s, in each of its
// renderings (secret.Renderings). Messages are built without document
// values; this is the second line, for text that comes from elsewhere (a
// registry's error body, containerd's CRI). A value that is part of one of
// keep (the image reference the message names anyway) stays.
func (p *pullAuth) scrub(s string, keep ...string) string {
	p.mu.Lock()
	vals := make([]string, 0, 4*len(p.secrets))
	for v := range p.secrets {
		for _, r := range secret.Renderings(v) {
			// Very short values would cut ordinary words; no real
			// credential is that short.
			if len(r) >= 4 && !containedIn(r, keep) {
				vals = append(vals, r)
			}
		}
	}
	p.mu.Unlock()
	// Longest first, so a secret containing another is cut whole.
	sort.Slice(vals, func(i, j int) bool { return len(vals[i]) > len(vals[j]) })
	for _, v := range vals {
		s = strings.ReplaceAll(s, v, secret.Redacted)
	}
	return s
}

func containedIn(v string, in []string) bool {
	for _, s := range in {
		if strings.Contains(s, v) {
			return true
		}
	}
	return false
}

func (p *pullAuth) addCandidateSecrets(c chain.Candidate) {
	if c.Cred != nil {
		p.mu.Lock()
		p.secrets[c.Cred.Secret.Reveal()] = struct{}{}
		p.secrets[c.Cred.Username] = struct{}{}
		p.mu.Unlock()
		return
	}
	p.addDocSecrets(c.Doc)
}

// addDocSecrets adds every value of d, public or not: none is quoted.
func (p *pullAuth) addDocSecrets(d document.Document) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, v := range d.Keys {
		if !v.IsZero() {
			p.secrets[v.Reveal()] = struct{}{}
		}
	}
}
