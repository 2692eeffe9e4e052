package chain

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

// SourceAuth is the Source of credentials taken from PullImageRequest.auth.
const SourceAuth = "auth"

// Auth offers one fixed candidate (PullImageRequest.auth) to the host it
// names, or with no registry to the image's host. A nil Candidate offers
// nothing.
type Auth struct{ Candidate *Candidate }

// Lookup implements Source.
func (s Auth) Lookup(_ context.Context, q Query) (Candidate, bool, error) {
	if s.Candidate == nil || !q.appliesTo(s.Candidate.Registry()) {
		return Candidate{}, false, nil
	}
	return *s.Candidate, true, nil
}

// FromAuthConfig turns PullImageRequest.auth into a candidate (nil for no
// auth): username and password (or the base64 "auth" field) as a basic
// document, an identity token as a ready credential; server_address pins
// it to one registry. registry_token is ignored, as containerd's CRI does.
// Errors name the field, never a value.
func FromAuthConfig(a *runtime.AuthConfig, imageHost string, det *registry.Detector) (*Candidate, error) {
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
		var err error
		if user, pass, err = DecodeDockerAuth(SourceAuth, a.Auth); err != nil {
			return nil, err
		}
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
		return &Candidate{Tier: TierAuth, Doc: d}, nil
	case a.IdentityToken != "":
		host := reg
		if host == "" {
			host = imageHost
		}
		cred := IdentityCredential(det.Detect(host), SourceAuth, "", a.IdentityToken)
		// An identity token without server_address is for the image's host.
		if reg == "" {
			cred.Registry.Host = ""
		}
		return &Candidate{Tier: TierAuth, Cred: &cred}, nil
	}
	return nil, nil
}

// DecodeDockerAuth decodes a docker "auth" field: base64 of
// "username:password", padded or not (the docker CLI and
// go-containerregistry accept both), with the NULs some writers pad the
// password with trimmed. Errors name source and the field, never a value.
func DecodeDockerAuth(source, auth string) (user, pass string, err error) {
	auth = strings.TrimSpace(auth)
	raw, err := base64.StdEncoding.DecodeString(auth)
	if err != nil {
		raw, err = base64.RawStdEncoding.DecodeString(strings.TrimRight(auth, "="))
	}
	if err != nil {
		return "", "", &document.Error{Source: source, Field: "auth", Reason: "not base64"}
	}
	u, p, ok := strings.Cut(string(raw), ":")
	if !ok {
		return "", "", &document.Error{Source: source, Field: "auth", Reason: "decoded value is not username:password"}
	}
	return u, strings.Trim(p, "\x00"), nil
}

// IdentityCredential is a ready OAuth2 refresh-token credential (ACR's
// identity token). It has no keychain entry, so no Ref, and nothing lists
// it, so no fingerprint.
func IdentityCredential(reg registry.Registry, source, username, token string) keychain.Credential {
	return keychain.Credential{
		Registry: reg, Source: source, Provider: "identity-token", Username: username,
		Secret: secret.New(token), IdentityToken: true,
	}
}
