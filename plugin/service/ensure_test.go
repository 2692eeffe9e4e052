package service

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/core/metadata"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	bolt "go.etcd.io/bbolt"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/beam-cloud/b9-resolver/internal/keychain"
	"github.com/beam-cloud/b9-resolver/internal/keychain/chain"
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
		{"public document", presented{cred: keychain.Credential{Anonymous: true}, cand: chain.Candidate{Tier: chain.TierAnnotation, Doc: document.Document{Type: document.TypePublic}}}, true},
		{"node credential", presented{cand: chain.Candidate{Tier: chain.TierNode, Doc: basic}}, true},
		{"annotation document", presented{cand: chain.Candidate{Tier: chain.TierAnnotation, Doc: basic}}, false},
		{"request auth", presented{cand: chain.Candidate{Tier: chain.TierAuth, Doc: basic}}, false},
		{"request auth identity token", presented{cand: chain.Candidate{Tier: chain.TierAuth, Cred: token}}, false},
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
	pod := presented{cand: chain.Candidate{Tier: chain.TierAnnotation, Doc: basic}}
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
	pa.record("reg", presented{cand: chain.Candidate{Tier: chain.TierNode, Doc: basic}})
	if pullWasOpen(pa) {
		t.Error("a pull that presented a pod credential, then the node's, counted as open")
	}
}

// imageStore is containerd's own bolt-backed image store (what the
// plugin's client reaches), in a temp dir.
func imageStore(t *testing.T) images.Store {
	t.Helper()
	db, err := bolt.Open(filepath.Join(t.TempDir(), "meta.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return metadata.NewImageStore(metadata.NewDB(db, nil, nil))
}

func statusFor(id string) *runtime.ImageStatusResponse {
	return &runtime.ImageStatusResponse{Image: &runtime.Image{Id: id}}
}

// What ImageStatus hides, against containerd's real image store: secret
// and in-flight images, and unlabelled ones newer than the service; not
// open ones or older unlabelled (preloaded) ones. Open, once recorded for
// any name of the content, covers every name and is never taken back.
func TestEnsureSecretPulledImagesRecords(t *testing.T) {
	ctx := namespaces.WithNamespace(t.Context(), Namespace)
	s := &Service{images: imageStore(t), ensureSince: time.Now().Add(-time.Hour)}
	target := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromString("manifest"), Size: 10}
	const id, tag = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", "registry.example/team/app:v1"
	other := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromString("other"), Size: 10}
	for _, img := range []images.Image{{Name: id, Target: target}, {Name: tag, Target: target}, {Name: "registry.example/x:1", Target: other}} {
		if _, err := s.images.Create(ctx, img); err != nil {
			t.Fatal(err)
		}
	}
	hidden := func(name string) bool {
		t.Helper()
		resp, err := s.hideSecretPulled(ctx, &runtime.ImageStatusRequest{Image: &runtime.ImageSpec{Image: name}}, statusFor(id))
		if err != nil {
			t.Fatal(err)
		}
		return resp.GetImage() == nil
	}
	label := func(name string) string {
		t.Helper()
		img, err := s.images.Get(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		return img.Labels[PullAccessLabel]
	}

	if !hidden(tag) {
		t.Error("an unlabelled image created since the service started is shown")
	}
	s.ensureSince = time.Now().Add(time.Hour) // now the records predate the service
	if hidden(tag) {
		t.Error("an unlabelled image older than the service (preloaded) is hidden")
	}
	s.beginPull(pullingName(tag))
	if !hidden(tag) {
		t.Error("an image being pulled is shown")
	}
	s.endPull(pullingName(tag))

	if err := s.recordPullAccess(ctx, id, false); err != nil {
		t.Fatal(err)
	}
	if label(id) != PullAccessSecret || label(tag) != PullAccessSecret || label("registry.example/x:1") != "" {
		t.Errorf("secret pull labelled id %q tag %q other %q; want both names of the content secret, the other image untouched",
			label(id), label(tag), label("registry.example/x:1"))
	}
	if !hidden(tag) || !hidden("sha256:"+strings.Repeat("0", 64)) {
		t.Error("a secret-pulled image is shown")
	}
	if err := s.recordPullAccess(ctx, id, true); err != nil {
		t.Fatal(err)
	}
	if err := s.recordPullAccess(ctx, id, false); err != nil {
		t.Fatal(err)
	}
	if label(id) != PullAccessOpen || label(tag) != PullAccessOpen || hidden(tag) {
		t.Errorf("after an open pull and another secret one: id %q tag %q; want open for good", label(id), label(tag))
	}
}
