package keychain

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/beam-cloud/b9-resolver/internal/keychain/document"
	"github.com/beam-cloud/b9-resolver/internal/keychain/registry"
)

// Provider mints registry credentials from documents of one type.
// Implementations must be safe for concurrent use; the Keychain caches
// what they return, so Mint may be slow (a cloud API call).
type Provider interface {
	// Type is the document type the provider serves.
	Type() document.Type
	// Mint turns the document into a credential for reg.
	Mint(ctx context.Context, reg registry.Registry, doc document.Document) (Minted, error)
}

// Scoper is implemented by providers whose credentials are good for more
// than one host, so one cache entry serves them all: an ECR token is valid
// for every registry of its partition and region, so aws scopes by those.
// Without it the scope is the registry host.
type Scoper interface {
	CacheScope(reg registry.Registry, doc document.Document) string
}

// Invalidator is implemented by providers that hold state of their own
// (an STS session) to drop when a registry rejects what they minted.
type Invalidator interface {
	Invalidate(reg registry.Registry, doc document.Document)
}

// AmbientFor refuses to lend the node's own cloud identity (named by
// identity) to reg unless reg is one of kinds. Any other host is whatever
// registry a pod named, and it would keep the token; a mirror mapped to a
// kind with registry_mappings qualifies.
func AmbientFor(reg registry.Registry, doc document.Document, identity string, kinds ...registry.Kind) error {
	if slices.Contains(kinds, reg.Kind) {
		return nil
	}
	return &document.Error{Source: doc.Source, Field: "registry",
		Reason: fmt.Sprintf("the node's %s is only sent to %s registries, and %s is a %s registry (map a mirror with registry_mappings)",
			identity, kindList(kinds), reg.Host, reg.Kind)}
}

func kindList(kinds []registry.Kind) string {
	s := make([]string, len(kinds))
	for i, k := range kinds {
		s[i] = string(k)
	}
	return strings.Join(s, "/")
}
