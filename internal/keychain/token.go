package keychain

import (
	"context"
	"fmt"

	"github.com/containerd/errdefs"

	"github.com/beam-cloud/b9-resolver/internal/keychain/document"
	"github.com/beam-cloud/b9-resolver/internal/keychain/registry"
)

// tokenRule says how a registry takes one kind of token: which key holds
// it, which keys may name the user, and the username to use when none
// does ("" means a username is required).
type tokenRule struct {
	name            string
	key             string
	kind            registry.Kind
	usernameKeys    []string
	defaultUsername string
}

// tokenRules is tried in order; a rule whose kind is the registry's kind
// wins over the others, so a document with several tokens sends each
// registry its own.
var tokenRules = []tokenRule{
	// NGC takes the literal username "$oauthtoken" with an API key.
	{name: "token/ngc", key: document.KeyNGCAPIKey, kind: registry.KindNGC, defaultUsername: "$oauthtoken"},
	// GHCR accepts any username with a PAT; GitHub documents x-access-token
	// for token auth, and it is not the token (CLIP sends the token itself
	// as the username, which then shows up in registry logs).
	{name: "token/ghcr", key: document.KeyGitHubToken, kind: registry.KindGHCR,
		usernameKeys: []string{document.KeyGitHubUsername, document.KeyUsername}, defaultUsername: "x-access-token"},
	// Docker Hub personal access tokens only work with the account name.
	{name: "token/dockerhub", key: document.KeyDockerHubToken, kind: registry.KindDockerHub,
		usernameKeys: []string{document.KeyDockerHubUsername, document.KeyUsername}},
	// A bare Google access token, e.g. for a GAR mirror typed "token".
	{name: "token/oauth2", key: document.KeyGCPAccessToken, defaultUsername: "oauth2accesstoken"},
}

// Token serves type token: NGC API keys, GitHub tokens, Docker Hub tokens.
type Token struct{}

func (Token) Type() document.Type { return document.TypeToken }

func (Token) Mint(_ context.Context, reg registry.Registry, doc document.Document) (Minted, error) {
	rule, ok := pickTokenRule(reg.Kind, doc)
	if !ok {
		return Minted{}, fmt.Errorf("no token key for %s: %w", reg.Host, errdefs.ErrInvalidArgument)
	}
	user := rule.defaultUsername
	for _, k := range rule.usernameKeys {
		if doc.Has(k) {
			user = doc.Get(k).Reveal()
			break
		}
	}
	if user == "" {
		return Minted{}, fmt.Errorf("%s: field credentials.%s: a %s token needs a username (%v): %w",
			doc.Source, rule.key, reg.Kind, rule.usernameKeys, errdefs.ErrInvalidArgument)
	}
	return Minted{Username: user, Secret: doc.Get(rule.key), Provider: rule.name}, nil
}

func pickTokenRule(kind registry.Kind, doc document.Document) (tokenRule, bool) {
	for _, r := range tokenRules {
		if r.kind == kind && doc.Has(r.key) {
			return r, true
		}
	}
	for _, r := range tokenRules {
		if doc.Has(r.key) {
			return r, true
		}
	}
	return tokenRule{}, false
}
