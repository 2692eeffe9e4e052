package service

import (
	"context"
	"encoding/base64"
	"sort"
	"strings"
	"sync"

	"github.com/beam-cloud/b9-resolver/internal/keychain"
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
	// skip counts the candidates a host has used up: after a registry
	// rejected one, the retry starts past it (isolation "fallback").
	skip map[string]int
	used map[string]presented
	// secrets are values to cut from messages; see scrub.
	secrets map[string]struct{}
}

// presented is what was offered to a host.
type presented struct {
	cred keychain.Credential
	// cand is where cred came from (zero for anonymous-by-default).
	cand  candidate
	index int
	// more is true when a fallback candidate remains after this one.
	more bool
	// stale is set when the registry rejected cred as expired or revoked:
	// the next request resolves again, while messages still name it.
	stale bool
}

func newPullAuth(kc *keychain.Keychain, det *registry.Detector, src *requestSources, strict bool) *pullAuth {
	p := &pullAuth{
		kc: kc, detector: det, src: src, strict: strict,
		skip: map[string]int{}, used: map[string]presented{}, secrets: map[string]struct{}{},
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
// when there is none.
func (p *pullAuth) credential(ctx context.Context, host string) (keychain.Credential, error) {
	p.mu.Lock()
	if u, ok := p.used[host]; ok && !u.stale {
		p.mu.Unlock()
		return u.cred, nil
	}
	start := p.skip[host]
	p.mu.Unlock()

	limit := -1
	if p.strict {
		limit = 1
	}
	cands, err := p.src.candidates(ctx, host, limit)
	if err != nil {
		return keychain.Credential{}, err
	}
	reg := p.detector.Detect(host)
	if len(cands) == 0 {
		return p.record(host, presented{cred: keychain.Anonymous(reg)}), nil
	}
	var lastErr error
	for i := start; i < len(cands); i++ {
		c := cands[i]
		p.addCandidateSecrets(c)
		cred, err := p.resolve(ctx, reg, c)
		if err == nil {
			more := i+1 < len(cands) && !p.strict && !c.public()
			return p.record(host, presented{cred: cred, cand: c, index: i, more: more}), nil
		}
		lastErr = err
		if p.strict || c.public() {
			break
		}
	}
	if lastErr == nil {
		// Every candidate was used up by earlier rejections.
		return keychain.Credential{}, errNoMoreCandidates
	}
	return keychain.Credential{}, lastErr
}

func (p *pullAuth) resolve(ctx context.Context, reg registry.Registry, c candidate) (keychain.Credential, error) {
	if c.cred != nil {
		cred := *c.cred
		cred.Registry = reg
		return cred, nil
	}
	return p.kc.Resolve(ctx, reg, c.doc)
}

func (p *pullAuth) record(host string, u presented) keychain.Credential {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.used[host] = u
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
// to fall back to (strict isolation, a public document, the last source).
func (p *pullAuth) fallback(host string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	u, ok := p.used[host]
	if !ok || !u.more {
		return false
	}
	p.skip[host] = u.index + 1
	delete(p.used, host)
	return true
}

// identity is a fingerprint of every credential source of the request, so
// only pulls that would present the same credentials share one pull.
func (p *pullAuth) identity() string {
	parts := []string{}
	for _, d := range p.src.annotations {
		parts = append(parts, d.Fingerprint())
	}
	if a := p.src.auth; a != nil {
		if a.cred != nil {
			parts = append(parts, "auth", a.cred.SourceFingerprint)
		} else {
			parts = append(parts, "auth", a.doc.Fingerprint())
		}
	}
	return secret.Fingerprint(parts...)
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

// scrub cuts every secret this pull touched out of s. Messages are built
// without secrets; this is the second line, for text that comes from
// elsewhere (a registry's error body, containerd's CRI).
func (p *pullAuth) scrub(s string) string {
	p.mu.Lock()
	vals := make([]string, 0, len(p.secrets))
	for v := range p.secrets {
		// Very short values would cut ordinary words; no real secret is
		// that short.
		if len(v) >= 4 {
			vals = append(vals, v)
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

func (p *pullAuth) addCandidateSecrets(c candidate) {
	if c.cred != nil {
		p.mu.Lock()
		p.secrets[c.cred.Secret.Reveal()] = struct{}{}
		p.mu.Unlock()
		return
	}
	p.addDocSecrets(c.doc)
}

func (p *pullAuth) addDocSecrets(d document.Document) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for k, v := range d.Keys {
		if !document.IsPublicKey(k) && !v.IsZero() {
			p.secrets[v.Reveal()] = struct{}{}
		}
	}
}
