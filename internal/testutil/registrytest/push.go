package registrytest

import (
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// Image is what PushRandomImage pushed.
type Image struct {
	// Ref is Host/repo:tag.
	Ref string
	// Digest is the manifest digest ("sha256:...").
	Digest string
	// Layers are the layer digests, in order.
	Layers []string
	// Config is the config blob digest.
	Config string
	Image  v1.Image
}

// PushRandomImage pushes a random two-layer image (1 KiB layers) to repo:tag
// as user (anonymous when user is ""). The push's requests are recorded;
// call Reset before counting a pull.
func (r *Registry) PushRandomImage(t testing.TB, repo, tag, user, pass string) Image {
	t.Helper()
	img, err := random.Image(1024, 2)
	if err != nil {
		t.Fatalf("registrytest: random image: %v", err)
	}
	return r.PushImage(t, repo, tag, img, user, pass)
}

// PushImage pushes img to repo:tag as user.
func (r *Registry) PushImage(t testing.TB, repo, tag string, img v1.Image, user, pass string) Image {
	t.Helper()
	var opts []name.Option
	if r.ca == nil {
		opts = append(opts, name.Insecure)
	}
	ref, err := name.ParseReference(r.Host+"/"+repo+":"+tag, opts...)
	if err != nil {
		t.Fatalf("registrytest: reference: %v", err)
	}
	auth := authn.Anonymous
	if user != "" {
		auth = &authn.Basic{Username: user, Password: pass}
	}
	if err := remote.Write(ref, img, remote.WithAuth(auth), remote.WithTransport(r.Transport())); err != nil {
		// ggcr's errors quote the registry's answer, never the password.
		t.Fatalf("registrytest: push %s: %v", ref, err)
	}
	out := Image{Ref: ref.String(), Image: img}
	d, err := img.Digest()
	if err != nil {
		t.Fatalf("registrytest: digest: %v", err)
	}
	out.Digest = d.String()
	cd, err := img.ConfigName()
	if err != nil {
		t.Fatalf("registrytest: config: %v", err)
	}
	out.Config = cd.String()
	layers, err := img.Layers()
	if err != nil {
		t.Fatalf("registrytest: layers: %v", err)
	}
	for _, l := range layers {
		ld, err := l.Digest()
		if err != nil {
			t.Fatalf("registrytest: layer digest: %v", err)
		}
		out.Layers = append(out.Layers, ld.String())
	}
	return out
}
