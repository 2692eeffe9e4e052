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
		name string
		u    presented
		open bool
	}{
		{"anonymous by default", presented{cred: keychain.Credential{Anonymous: true}}, true},
		{"public document", presented{cred: keychain.Credential{Anonymous: true}, cand: candidate{tier: tierAnnotation, doc: document.Document{Type: document.TypePublic}}}, true},
		{"node credential", presented{cand: candidate{tier: tierNode, doc: basic}}, true},
		{"annotation document", presented{cand: candidate{tier: tierAnnotation, doc: basic}}, false},
		{"request auth", presented{cand: candidate{tier: tierAuth, doc: basic}}, false},
		{"request auth identity token", presented{cand: candidate{tier: tierAuth, cred: token}}, false},
	} {
		if got := openAccess(tt.u); got != tt.open {
			t.Errorf("%s: open = %v, want %v", tt.name, got, tt.open)
		}
	}
}

// A pull is open only if every host it used — the registry and any
// mirror — got open access: a pod's credential given to a mirror alone
// makes it secret.
func TestPullWasOpen(t *testing.T) {
	basic := document.Document{Type: document.TypeBasic}
	anon := presented{cred: keychain.Credential{Anonymous: true}}
	pod := presented{cand: candidate{tier: tierAnnotation, doc: basic}}
	for _, tt := range []struct {
		name string
		used map[string]presented
		open bool
	}{
		{"no host asked for credentials", nil, true},
		{"anonymous registry", map[string]presented{"reg": anon}, true},
		{"pod credential at a mirror, nothing at the registry", map[string]presented{"mirror": pod}, false},
		{"pod credential at the registry", map[string]presented{"mirror": anon, "reg": pod}, false},
	} {
		pa := &pullAuth{used: map[string]presented{}, secrets: map[string]struct{}{}}
		for h, u := range tt.used {
			pa.record(h, u)
		}
		if got := pullWasOpen(pa); got != tt.open {
			t.Errorf("%s: open = %v, want %v", tt.name, got, tt.open)
		}
	}
	// A pod credential replaced by the node's partway through (fallback)
	// still made the pull secret.
	pa := &pullAuth{used: map[string]presented{}, secrets: map[string]struct{}{}}
	pa.record("reg", pod)
	pa.record("reg", presented{cand: candidate{tier: tierNode, doc: basic}})
	if pullWasOpen(pa) {
		t.Error("a pull that presented a pod credential, then the node's, counted as open")
	}
}
