package credentials

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/beam-cloud/b9-resolver/internal/keychain"
	"github.com/beam-cloud/b9-resolver/internal/testutil/keychaintest"
)

// A pull made with a node credential (document.Document.Node) is recorded
// as one: after a restart its ref still answers, re-resolved from a node
// document again (the tier is part of the identity the ref is made from,
// and only a node document may use the node's cloud identity).
func TestNodeDocumentRecordSurvivesRestart(t *testing.T) {
	ctx := context.Background()
	cfg := StoreConfig{StateDir: filepath.Join(t.TempDir(), "state")}
	st1, err := NewStore(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	kc1 := keychaintest.New(t, keychain.WithRefKey(st1.RefKey()))
	doc := basicDoc(t, hostA, "node", canaryA)
	doc.Node = true
	ref := pull(t, kc1, st1, hostA, "team/app", doc)
	kc1.Close()

	st2, err := NewStore(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	kc2 := keychaintest.New(t, keychain.WithRefKey(st2.RefKey()))
	defer kc2.Close()
	cred, err := newServer(t, kc2, st2).Lookup(ctx, Query{Host: hostA, Repository: "team/app", CredentialRef: ref})
	if err != nil || cred.Secret.Reveal() != canaryA || cred.Ref != ref {
		t.Fatalf("node credential's ref after restart: ref match %v, %v", cred.Ref == ref, err)
	}
}
