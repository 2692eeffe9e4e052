package resolver

import (
	"context"

	"github.com/beam-cloud/b9-resolver/internal/keychain"
	"github.com/beam-cloud/b9-resolver/internal/keychain/chain"
	"github.com/beam-cloud/b9-resolver/internal/keychain/document"
	"github.com/beam-cloud/b9-resolver/internal/keychain/registry"
)

// Credentials supplies one pull's credentials, host by host. Implementations
// must be safe for concurrent use: layers are fetched in parallel.
type Credentials interface {
	// Credential returns what to present to reg. With mirror set, reg is
	// serving as a mirror of the image's registry and only credentials that
	// name reg explicitly apply (a document without a registry means "the
	// image's registry", never a mirror). No credential is Anonymous, not an
	// error.
	Credential(ctx context.Context, reg registry.Registry, mirror bool) (keychain.Credential, error)
	// Invalidate reports that a registry rejected cred (expired, revoked),
	// so the next Credential call mints a fresh one.
	Invalidate(cred keychain.Credential)
}

// FromKeychain serves a pull's credentials from the node's keychain and the
// pull's documents: the pod's (in order), then the node's (Node). It is
// the precedence chain (internal/keychain/chain) over those two sources;
// the image's registry is whichever host is asked for without mirror.
func FromKeychain(kc *keychain.Keychain, docs []document.Document) Credentials {
	var pod, node []document.Document
	for _, d := range docs {
		if d.Node {
			node = append(node, d)
		} else {
			pod = append(pod, d)
		}
	}
	return keychainCredentials{kc: kc, chain: chain.Chain{
		chain.Documents{Tier: chain.TierAnnotation, Docs: pod},
		chain.Documents{Tier: chain.TierNode, Docs: node},
	}}
}

type keychainCredentials struct {
	kc    *keychain.Keychain
	chain chain.Chain
}

func (k keychainCredentials) Credential(ctx context.Context, reg registry.Registry, mirror bool) (keychain.Credential, error) {
	imageHost := reg.Host
	if mirror {
		imageHost = ""
	}
	// Strict: the first candidate only; a failing document is an error.
	return chain.Credentials{Keychain: k.kc, Chain: k.chain, ImageHost: imageHost, Strict: true}.Credential(ctx, reg, mirror)
}

func (k keychainCredentials) Invalidate(cred keychain.Credential) { k.kc.Invalidate(cred) }

// CredentialFunc adapts a function to Credentials; Invalidate does nothing.
type CredentialFunc func(ctx context.Context, reg registry.Registry, mirror bool) (keychain.Credential, error)

func (f CredentialFunc) Credential(ctx context.Context, reg registry.Registry, mirror bool) (keychain.Credential, error) {
	return f(ctx, reg, mirror)
}

func (CredentialFunc) Invalidate(keychain.Credential) {}

// Anonymous is Credentials that presents no credential anywhere.
var Anonymous Credentials = CredentialFunc(func(_ context.Context, reg registry.Registry, _ bool) (keychain.Credential, error) {
	return keychain.Anonymous(reg), nil
})
