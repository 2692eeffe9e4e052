package service

import (
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/core/metadata"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	bolt "go.etcd.io/bbolt"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/beam-cloud/b9-resolver/internal/imageaccess"
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

// ensureService is a Service with containerd's real (bolt-backed) image
// store and in-memory access records, under policy.
func ensureService(t *testing.T, cfg Config) *Service {
	t.Helper()
	cfg.EnsureSecretPulledImages = true
	st, err := cfg.validate()
	if err != nil {
		t.Fatal(err)
	}
	access, err := imageaccess.Open(t.Context(), imageaccess.Config{})
	if err != nil {
		t.Fatal(err)
	}
	return &Service{cfg: st, images: imageStore(t), access: access}
}

// Each KEP-2535 policy, against containerd's image store: what
// ImageStatus shows a pod, per (repository, image id) — never per digest
// alone: evil.example/x holds tenant A's content, and A's record does not
// open it.
func TestEnsurePolicies(t *testing.T) {
	const (
		idA   = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
		idPub = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
		idPre = "sha256:cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc"
		idNew = "sha256:dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd"
		tagA  = "reg.example/tenant/a:v1"
		evil  = "evil.example/x:v1"
		pub   = "reg.example/public/p:v1"
		pre   = "reg.example/pre/app:v1"
		base  = "reg.example/base/img:v1"
	)
	alice := map[string]string{annKey: `{"registry":"reg.example","USERNAME":"alice","PASSWORD":"` + canaryPass + `"}`}
	bob := map[string]string{annKey: `{"registry":"reg.example","USERNAME":"bob","PASSWORD":"` + canaryPass + `"}`}
	ids := map[string]string{tagA: idA, evil: idA, pub: idPub, pre: idPre, base: idNew}

	for _, tc := range []struct {
		policy    imageaccess.Policy
		allowlist []string
		// shown lists the names shown to a pod with no credential;
		// every other name is hidden.
		shown []string
	}{
		{imageaccess.NeverVerify, nil, []string{tagA, evil, pub, pre, base}},
		{imageaccess.NeverVerifyPreloadedImages, nil, []string{pub, pre}},
		{imageaccess.NeverVerifyAllowlistedImages, []string{"reg.example/pre/app", "reg.example/base/*"}, []string{pub, pre, base}},
		{imageaccess.AlwaysVerify, nil, []string{pub}},
	} {
		t.Run(string(tc.policy), func(t *testing.T) {
			s := ensureService(t, Config{VerificationPolicy: tc.policy, VerificationAllowlist: tc.allowlist, VerificationTTL: "1h"})
			ctx := namespaces.WithNamespace(t.Context(), Namespace)
			create := func(name string) {
				t.Helper()
				target := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromString(ids[name]), Size: 10}
				if _, err := s.images.Create(ctx, images.Image{Name: name, Target: target}); err != nil {
					t.Fatal(err)
				}
			}
			// pre was on the node before records began; the others came since.
			create(pre)
			time.Sleep(time.Millisecond)
			access, err := imageaccess.Open(t.Context(), imageaccess.Config{})
			if err != nil {
				t.Fatal(err)
			}
			s.access = access
			time.Sleep(time.Millisecond)
			for _, n := range []string{tagA, evil, pub, base} {
				create(n)
			}
			s.access.Accepted(imageaccess.Key{Repository: "reg.example/tenant/a", ImageID: idA}, false,
				s.annotationFingerprint(ctx, "reg.example/tenant/a", alice))
			s.access.Accepted(imageaccess.Key{Repository: "reg.example/public/p", ImageID: idPub}, true, "")

			status := func(name string, ann map[string]string) *runtime.ImageStatusResponse {
				t.Helper()
				resp := &runtime.ImageStatusResponse{Image: &runtime.Image{Id: ids[name], RepoTags: []string{tagA, evil, pub, pre, base}}}
				out, err := s.ensureStatus(ctx, &runtime.ImageStatusRequest{Image: &runtime.ImageSpec{Image: name, Annotations: ann}}, resp)
				if err != nil {
					t.Fatal(err)
				}
				return out
			}
			for _, name := range []string{tagA, evil, pub, pre, base} {
				want := slices.Contains(tc.shown, name)
				if got := status(name, nil).GetImage() != nil; got != want {
					t.Errorf("%s to a pod with no credential: shown %v, want %v", name, got, want)
				}
			}
			if tc.policy == imageaccess.NeverVerify {
				return
			}
			// Another repository's name for the same content is not shown.
			if tags := status(pub, nil).GetImage().GetRepoTags(); !slices.Equal(tags, []string{pub}) {
				t.Errorf("%s shown with names %v; want only its own", pub, tags)
			}
			// Within verification_ttl, the credential the registry accepted
			// starts the image again unchecked; another does not, nor does it
			// carry over to the same content under another name.
			if status(tagA, alice).GetImage() == nil {
				t.Errorf("%s hidden from alice, whose credential was accepted for it within the TTL", tagA)
			}
			if status(tagA, bob).GetImage() != nil || status(evil, alice).GetImage() != nil {
				t.Errorf("alice's record served bob, or another repository with the same digest")
			}
		})
	}
}

// verification_ttl: a credential accepted longer ago than the TTL needs
// the registry again; "0s" always does.
func TestVerificationTTL(t *testing.T) {
	const id, tag = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "reg.example/tenant/a:v1"
	alice := map[string]string{annKey: "alice:" + canaryPass}
	for _, tc := range []struct {
		ttl   string
		age   time.Duration
		shown bool
	}{{"0s", 0, false}, {"1h", 59 * time.Minute, true}, {"1h", 61 * time.Minute, false}} {
		now := time.Now()
		s := ensureService(t, Config{VerificationTTL: tc.ttl})
		access, err := imageaccess.Open(t.Context(), imageaccess.Config{Now: func() time.Time { return now.Add(-tc.age) }})
		if err != nil {
			t.Fatal(err)
		}
		s.access = access
		ctx := namespaces.WithNamespace(t.Context(), Namespace)
		s.access.Accepted(imageaccess.Key{Repository: "reg.example/tenant/a", ImageID: id}, false, s.annotationFingerprint(ctx, "reg.example/tenant/a", alice))
		resp, err := s.ensureStatus(ctx, &runtime.ImageStatusRequest{Image: &runtime.ImageSpec{Image: tag, Annotations: alice}}, statusFor(id))
		if err != nil {
			t.Fatal(err)
		}
		if got := resp.GetImage() != nil; got != tc.shown {
			t.Errorf("ttl %s, accepted %s ago: shown %v, want %v", tc.ttl, tc.age, got, tc.shown)
		}
	}
}

// An image being pulled is hidden until the pull has recorded it.
func TestImageBeingPulledIsHidden(t *testing.T) {
	const id, tag = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "reg.example/public/p:v1"
	s := ensureService(t, Config{})
	ctx := namespaces.WithNamespace(t.Context(), Namespace)
	s.access.Accepted(imageaccess.Key{Repository: "reg.example/public/p", ImageID: id}, true, "")
	hidden := func() bool {
		resp, err := s.ensureStatus(ctx, &runtime.ImageStatusRequest{Image: &runtime.ImageSpec{Image: tag}}, statusFor(id))
		if err != nil {
			t.Fatal(err)
		}
		return resp.GetImage() == nil
	}
	s.beginPull(pullingName(tag))
	if !hidden() {
		t.Error("an image being pulled is shown")
	}
	s.endPull(pullingName(tag))
	if hidden() {
		t.Error("an open image is hidden after its pull")
	}
}

// A record an earlier version labelled secret stays hidden after an
// upgrade, although it predates the access records.
func TestLegacySecretLabelStaysHidden(t *testing.T) {
	const id, tag = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "reg.example/tenant/a:v1"
	s := ensureService(t, Config{})
	ctx := namespaces.WithNamespace(t.Context(), Namespace)
	target := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.FromString("m"), Size: 10}
	for name, labels := range map[string]map[string]string{tag: {PullAccessLabel: PullAccessSecret}, "reg.example/pre/b:v1": nil} {
		if _, err := s.images.Create(ctx, images.Image{Name: name, Target: target, Labels: labels}); err != nil {
			t.Fatal(err)
		}
	}
	access, err := imageaccess.Open(t.Context(), imageaccess.Config{Now: func() time.Time { return time.Now().Add(time.Hour) }})
	if err != nil {
		t.Fatal(err)
	}
	s.access = access
	for name, want := range map[string]bool{tag: true, "reg.example/pre/b:v1": false} {
		resp, err := s.ensureStatus(ctx, &runtime.ImageStatusRequest{Image: &runtime.ImageSpec{Image: name}}, statusFor(id))
		if err != nil {
			t.Fatal(err)
		}
		if got := resp.GetImage() == nil; got != want {
			t.Errorf("%s: hidden %v, want %v", name, got, want)
		}
	}
}
