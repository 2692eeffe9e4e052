package service

import (
	"context"
	"encoding/base64"
	"strings"

	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/beam-cloud/b9-resolver/internal/keychain"
	"github.com/beam-cloud/b9-resolver/internal/keychain/document"
	"github.com/beam-cloud/b9-resolver/internal/keychain/registry"
	"github.com/beam-cloud/b9-resolver/internal/secret"
)

// tier is a precedence level of credential sources:
// annotation document → PullImageRequest.auth → node credentials.
type tier int

const (
	tierAnnotation tier = iota
	tierAuth
	tierNode
)

// SourceAuth is the Source of credentials taken from PullImageRequest.auth.
const SourceAuth = "auth"

// candidate is one place a host's credential can come from: a document
// the keychain resolves, or a ready credential (an identity token, which
// has no document form).
type candidate struct {
	tier tier
	doc  document.Document
	cred *keychain.Credential
}

// public reports an explicit anonymous document, which never falls back.
func (c candidate) public() bool { return c.cred == nil && c.doc.Type == document.TypePublic }

// requestSources are the credential sources of one PullImage call.
type requestSources struct {
	imageHost   string
	annotations []document.Document
	// auth is the request's auth, if any; its registry is pinned by
	// server_address ("" means the image's host).
	auth *candidate
	node *nodeCredentials
	// annotationKey is the credential annotation's key (the prefix
	// configured), for messages that tell a pod what to set.
	annotationKey string
}

// lookup returns the candidate tier t offers a canonical host, if any.
// A document without "registry" applies only to the image's own host,
// never to a mirror or another registry the pull is sent to, so a pod's
// secret is not offered to hosts it was not written for. Only the node
// tier costs anything (files read, helpers run): pullAuth asks for it only
// once the earlier tiers are used up.
func (r *requestSources) lookup(ctx context.Context, host string, t tier) (candidate, bool, error) {
	switch t {
	case tierAnnotation:
		if d, ok := pickDocument(r.annotations, host, host == r.imageHost); ok {
			return candidate{tier: tierAnnotation, doc: d}, true, nil
		}
	case tierAuth:
		if r.auth != nil && applies(r.auth.registry(), host, r.imageHost) {
			return *r.auth, true, nil
		}
	case tierNode:
		if r.node != nil {
			return r.node.lookup(ctx, host, host == r.imageHost)
		}
	}
	return candidate{}, false, nil
}

func (c candidate) registry() string {
	if c.cred != nil {
		return c.cred.Registry.Host
	}
	return c.doc.Registry
}

func applies(docRegistry, host, imageHost string) bool {
	return docRegistry == host || (docRegistry == "" && host == imageHost)
}

// pickDocument is document.Select restricted to what may reach host: the
// first document naming host, else (for the image's host only) the first
// naming no registry.
func pickDocument(docs []document.Document, host string, imageHost bool) (document.Document, bool) {
	for _, d := range docs {
		if d.Registry == host {
			return d, true
		}
	}
	if imageHost {
		for _, d := range docs {
			if d.Registry == "" {
				return d, true
			}
		}
	}
	return document.Document{}, false
}

// authCandidate turns PullImageRequest.auth into a candidate: username and
// password (or the base64 "auth" field) as a basic document, an identity
// token as a ready credential; server_address pins it to one registry.
// registry_token is ignored, as containerd's CRI does. Errors name the
// field, never a value.
func authCandidate(a *runtime.AuthConfig, imageHost string, det *registry.Detector) (*candidate, error) {
	if a == nil {
		return nil, nil
	}
	reg := ""
	if a.ServerAddress != "" {
		h, err := registry.NormalizeHost(a.ServerAddress)
		if err != nil {
			return nil, &document.Error{Source: SourceAuth, Field: "server_address", Reason: "not a registry host (want host, host:port or a URL)"}
		}
		reg = h
	}
	user, pass := a.Username, a.Password
	if user == "" && a.Auth != "" {
		raw, err := base64.StdEncoding.DecodeString(a.Auth)
		if err != nil {
			return nil, &document.Error{Source: SourceAuth, Field: "auth", Reason: "not base64"}
		}
		u, p, ok := strings.Cut(string(raw), ":")
		if !ok {
			return nil, &document.Error{Source: SourceAuth, Field: "auth", Reason: "decoded value is not username:password"}
		}
		user, pass = u, strings.Trim(p, "\x00")
	}
	switch {
	case user != "" || pass != "":
		keys := map[string]secret.Secret{}
		if user != "" {
			keys[document.KeyUsername] = secret.New(user)
		}
		if pass != "" {
			keys[document.KeyPassword] = secret.New(pass)
		}
		d, err := document.New(SourceAuth, reg, document.TypeBasic, keys, imageHost)
		if err != nil {
			return nil, err
		}
		return &candidate{tier: tierAuth, doc: d}, nil
	case a.IdentityToken != "":
		host := reg
		if host == "" {
			host = imageHost
		}
		cred := identityCredential(det.Detect(host), SourceAuth, "", a.IdentityToken)
		// An identity token without server_address is for the image's host.
		if reg == "" {
			cred.Registry.Host = ""
		}
		return &candidate{tier: tierAuth, cred: &cred}, nil
	}
	return nil, nil
}

// identityCredential is a ready OAuth2 refresh-token credential (ACR's
// identity token). It has no keychain entry, so no Ref, and nothing lists
// it, so no fingerprint.
func identityCredential(reg registry.Registry, source, username, token string) keychain.Credential {
	return keychain.Credential{
		Registry: reg, Source: source, Provider: "identity-token", Username: username,
		Secret: secret.New(token), IdentityToken: true,
	}
}
