package chain

import (
	"context"
	"fmt"
	"sync"

	"github.com/containerd/errdefs"

	"github.com/beam-cloud/b9-resolver/internal/keychain"
	"github.com/beam-cloud/b9-resolver/internal/keychain/document"
	"github.com/beam-cloud/b9-resolver/internal/keychain/registry"
)

// Tier is a precedence level of credential sources. Sources of a chain
// come in tier order; the tier of the candidate a pull used says whose
// credential it was (the pod's, or the node's).
type Tier int

const (
	// TierAnnotation is the pod's annotation documents.
	TierAnnotation Tier = iota
	// TierAuth is PullImageRequest.auth.
	TierAuth
	// TierNode is the node's own credentials.
	TierNode
)

func (t Tier) String() string {
	switch t {
	case TierAnnotation:
		return "annotation"
	case TierAuth:
		return "auth"
	case TierNode:
		return "node"
	}
	return "unknown"
}

// Candidate is one place a host's credential can come from: a document
// the keychain resolves, or a ready credential (Cred).
type Candidate struct {
	Tier Tier
	Doc  document.Document
	Cred *keychain.Credential
}

// Public reports an explicit anonymous document, which never falls back.
func (c Candidate) Public() bool { return c.Cred == nil && c.Doc.Type == document.TypePublic }

// Registry is the host the candidate names, "" for the image's own.
func (c Candidate) Registry() string {
	if c.Cred != nil {
		return c.Cred.Registry.Host
	}
	return c.Doc.Registry
}

// Query is what a source is asked: the canonical host being contacted,
// and the image's own registry host (a candidate naming no registry
// applies to that host only — never to a mirror or another registry the
// pull is sent to — so a pod's secret is not offered to hosts it was not
// written for).
type Query struct {
	Host      string
	ImageHost string
}

// appliesTo reports whether a candidate naming registry reg applies to q.
func (q Query) appliesTo(reg string) bool {
	return reg == q.Host || (reg == "" && q.Host == q.ImageHost)
}

// Source is one link of the chain: the candidate it offers a host, if any.
// Implementations must be safe for concurrent use.
type Source interface {
	Lookup(ctx context.Context, q Query) (Candidate, bool, error)
}

// Chain is sources in precedence order.
type Chain []Source

// For returns q's candidates, looked up lazily.
func (c Chain) For(q Query) *Candidates { return &Candidates{chain: c, q: q} }

// Candidates are one host's candidates, in precedence order, looked up as
// far as they were asked for (each source at most once).
type Candidates struct {
	chain Chain
	q     Query

	// mu is held across a lookup (a helper run): a concurrent request for
	// the same host waits for its answer rather than running it again.
	mu   sync.Mutex
	list []Candidate
	next int // the next source to look up
}

// At returns the i-th candidate; ok is false past the last.
func (cs *Candidates) At(ctx context.Context, i int) (c Candidate, ok bool, err error) {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	for len(cs.list) <= i && cs.next < len(cs.chain) {
		c, ok, err := cs.chain[cs.next].Lookup(ctx, cs.q)
		if err != nil {
			return Candidate{}, false, err
		}
		cs.next++
		if ok {
			cs.list = append(cs.list, c)
		}
	}
	if i < len(cs.list) {
		return cs.list[i], true, nil
	}
	return Candidate{}, false, nil
}

// ErrExhausted is Walk's answer when every candidate from start on was
// used up by earlier rejections.
var ErrExhausted = fmt.Errorf("every credential source for the host was rejected: %w", errdefs.ErrUnauthenticated)

// Resolved is what Walk chose: the credential, the candidate it came from
// and its index (-1 and a zero candidate for anonymous-by-default).
type Resolved struct {
	Cred      keychain.Credential
	Candidate Candidate
	Index     int
}

// Walk returns the credential reg gets from cands, starting at start: the
// first candidate that resolves wins; with strict only the first candidate
// is ever tried (a pod whose secret is wrong fails rather than pulling
// with someone else's), and a public document never falls back. No
// candidate at all is anonymous. seen, if set, is called with each
// candidate before it is resolved.
func Walk(ctx context.Context, kc *keychain.Keychain, reg registry.Registry, cands *Candidates, start int, strict bool, seen func(Candidate)) (Resolved, error) {
	var lastErr error
	for i := start; !strict || i < 1; i++ {
		c, ok, err := cands.At(ctx, i)
		if err != nil {
			return Resolved{}, err
		}
		if !ok {
			break
		}
		if seen != nil {
			seen(c)
		}
		cred, err := c.resolve(ctx, kc, reg)
		if err == nil {
			return Resolved{Cred: cred, Candidate: c, Index: i}, nil
		}
		lastErr = err
		if c.Public() {
			break
		}
	}
	switch {
	case lastErr != nil:
		return Resolved{}, lastErr
	case start == 0:
		return Resolved{Cred: keychain.Anonymous(reg), Index: -1}, nil
	}
	return Resolved{}, ErrExhausted
}

// resolve mints (or takes from the keychain's cache) the candidate's
// credential for reg.
func (c Candidate) resolve(ctx context.Context, kc *keychain.Keychain, reg registry.Registry) (keychain.Credential, error) {
	if c.Cred != nil {
		cred := *c.Cred
		cred.Registry = reg
		return cred, nil
	}
	return kc.Resolve(ctx, reg, c.Doc)
}

// Credentials serves a pull's credentials from a chain, host by host (it
// implements the resolver's Credentials): each host walks the chain from
// its first source. The CRI image service adds per-pull memory and
// fallback after a registry's rejection on top of the same Walk.
type Credentials struct {
	Keychain  *keychain.Keychain
	Chain     Chain
	ImageHost string
	Strict    bool
}

// Credential returns what to present to reg. A mirror (any host but the
// image's) gets only candidates that name it.
func (c Credentials) Credential(ctx context.Context, reg registry.Registry, _ bool) (keychain.Credential, error) {
	r, err := Walk(ctx, c.Keychain, reg, c.Chain.For(Query{Host: reg.Host, ImageHost: c.ImageHost}), 0, c.Strict, nil)
	return r.Cred, err
}

// Invalidate drops a credential a registry rejected from the keychain, so
// the next Credential mints afresh.
func (c Credentials) Invalidate(cred keychain.Credential) {
	if cred.Ref != "" {
		c.Keychain.Invalidate(cred)
	}
}
