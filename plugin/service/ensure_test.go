package service

import (
	"testing"

	"github.com/beam-cloud/b9-resolver/internal/keychain"
	"github.com/beam-cloud/b9-resolver/internal/keychain/document"
)

// Only a pod's own credential makes an image secret-pulled; what any pod
// on the node could have used (nothing, anonymous, public, the node's
// credentials) makes it open.
func TestOpenAccess(t *testing.T) {
	basic := document.Document{Type: document.TypeBasic}
	token := &keychain.Credential{Username: "u", IdentityToken: true}
	for _, tt := range []struct {
		name      string
		u         presented
		presented bool
		open      bool
	}{
		{"registry asked for nothing", presented{}, false, true},
		{"anonymous by default", presented{cred: keychain.Credential{Anonymous: true}}, true, true},
		{"public document", presented{cred: keychain.Credential{Anonymous: true}, cand: candidate{tier: tierAnnotation, doc: document.Document{Type: document.TypePublic}}}, true, true},
		{"node credential", presented{cand: candidate{tier: tierNode, doc: basic}}, true, true},
		{"annotation document", presented{cand: candidate{tier: tierAnnotation, doc: basic}}, true, false},
		{"request auth", presented{cand: candidate{tier: tierAuth, doc: basic}}, true, false},
		{"request auth identity token", presented{cand: candidate{tier: tierAuth, cred: token}}, true, false},
	} {
		if got := openAccess(tt.u, tt.presented); got != tt.open {
			t.Errorf("%s: open = %v, want %v", tt.name, got, tt.open)
		}
	}
}
