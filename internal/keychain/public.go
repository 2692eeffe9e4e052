package keychain

import (
	"context"

	"github.com/beam-cloud/b9-resolver/internal/keychain/document"
	"github.com/beam-cloud/b9-resolver/internal/keychain/registry"
)

// Public serves type public: an explicit anonymous pull. It never falls
// back to node credentials — the document says the image is public, and a
// private image must then fail rather than pull with someone else's secret.
type Public struct{}

func (Public) Type() document.Type { return document.TypePublic }

func (Public) Mint(context.Context, registry.Registry, document.Document) (Minted, error) {
	return Minted{Anonymous: true, Provider: "public"}, nil
}
