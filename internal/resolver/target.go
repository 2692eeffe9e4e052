package resolver

import (
	"context"
	"fmt"
	"net/http"
	"strings"

	"github.com/containerd/containerd/v2/core/remotes/docker"
	"github.com/containerd/errdefs"

	"github.com/beam-cloud/b9-resolver/internal/keychain"
	"github.com/beam-cloud/b9-resolver/internal/origin"
)

// Redirect targets (object storage a registry sends blobs to) get none of
// the registry's credentials. Some want a token of their own: they answer
// the redirected request with a bearer challenge, as a registry would. The
// Authorizer then asks the target's token endpoint for an anonymous token
// — nothing of the pull's credential leaves the registry's origin — and
// presents it to the target only, as go-containerregistry does. The
// target's challenge is remembered node-wide under its origin, like a
// host's.

// targetKey is the challenges/scopes key of a redirect target's origin
// (it cannot collide with a registry host[:port]).
func targetKey(o origin.Origin) string { return "redirect " + o.String() }

// learnTarget records the bearer challenge of a redirect target; any other
// challenge there is refused (a basic one would want a credential).
func (h *hostAuthorizer) learnTarget(ctx context.Context, responses []*http.Response) error {
	last := responses[len(responses)-1]
	req := last.Request
	to := origin.Of(req.URL)
	refuse := func() error {
		return fmt.Errorf("%s, where %s redirected a request, asked for credentials; %s's are sent to %s only: %w",
			req.URL.Host, h.b.Host, h.b.Host, h.b.Host, errdefs.ErrPermissionDenied)
	}
	p, ok := parseChallenge(last.Header)
	if !ok || p.scheme != schemeBearer {
		return refuse()
	}
	if unauthorizedAt(responses, to) > 1 {
		return fmt.Errorf("%s, where %s redirected a request, refused its own anonymous token: %w", req.URL.Host, h.b.Host, errdefs.ErrUnauthenticated)
	}
	if err := (realmPolicy{scheme: to.Scheme, host: req.URL.Host}).checkRealm(p.realm); err != nil {
		return err
	}
	key := targetKey(to)
	h.a.challenges.set(key, p.challenge)
	if p.scope != "" {
		h.a.scopes.learn(key, docker.GetTokenScopes(ctx, nil), strings.Fields(p.scope))
	}
	if sent := req.Header.Get("Authorization"); sent != "" {
		removeHeader(h.a.tokens, key, sent)
	}
	return nil
}

// authorizeTarget adds the anonymous token a redirect target asked for
// (by an earlier challenge), or nothing.
func (h *hostAuthorizer) authorizeTarget(ctx context.Context, req *http.Request) error {
	to := origin.Of(req.URL)
	key := targetKey(to)
	ch, ok := h.a.challenges.get(key)
	if !ok || ch.scheme != schemeBearer {
		return nil
	}
	scopes := docker.GetTokenScopes(ctx, h.a.scopes.extra(key, docker.GetTokenScopes(ctx, nil)))
	tk := tokenKey{host: key, scopes: strings.Join(scopes, " "), cred: "anonymous"}
	v, ok := h.a.tokens.Lookup(tk)
	if !ok {
		var err error
		v, err = h.a.fetch(ctx, tk, TokenRequest{
			Client: h.b.Client, Header: h.b.Header, ClientID: h.a.clientID,
			RegistryScheme: to.Scheme, RegistryHost: req.URL.Host,
			Realm: ch.realm, Service: ch.service, Scopes: scopes, Credential: keychain.Credential{Anonymous: true},
		})
		if err != nil {
			return fmt.Errorf("anonymous token for %s, where %s redirected a request: %w", req.URL.Host, h.b.Host, err)
		}
	}
	req.Header.Set("Authorization", v)
	return nil
}

// unauthorizedAt counts the 401s from o among a request's responses that
// carried an Authorization header: only our own token reaches a target, so
// a second one means it refuses it.
func unauthorizedAt(responses []*http.Response, o origin.Origin) int {
	n := 0
	for _, r := range responses {
		if r.StatusCode == http.StatusUnauthorized && origin.Of(r.Request.URL) == o && r.Request.Header.Get("Authorization") != "" {
			n++
		}
	}
	return n
}
