package keychain

import (
	"context"

	"github.com/beam-cloud/b9-resolver/internal/keychain/document"
	"github.com/beam-cloud/b9-resolver/internal/keychain/registry"
)

// Basic serves type basic: a username and password sent as they are. The
// username is the first present of REGISTRY_USERNAME, DOCKER_USERNAME,
// DOCKERHUB_USERNAME, USERNAME, then any other *USERNAME key; the password
// is the one with the username's prefix, else the first by the same order.
type Basic struct{}

func (Basic) Type() document.Type { return document.TypeBasic }

func (Basic) Mint(_ context.Context, _ registry.Registry, doc document.Document) (Minted, error) {
	user := document.Username(doc)
	pass := document.Password(doc, user)
	// document.Parse has checked both exist for type basic.
	return Minted{Username: doc.Get(user).Reveal(), Secret: doc.Get(pass), Provider: "basic"}, nil
}
