package remotehosts_test

import (
	"context"
	"fmt"
	"io"
	"testing"

	"github.com/containerd/containerd/v2/core/remotes/docker"
	"github.com/containerd/containerd/v2/core/remotes/docker/config"
	"github.com/containerd/containerd/v2/pkg/snapshotters"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/beam-cloud/b9-resolver/internal/testutil/registrytest"
	"github.com/beam-cloud/b9-resolver/pkg/credclient"
	"github.com/beam-cloud/b9-resolver/pkg/credclient/remotehosts"
	"github.com/beam-cloud/b9-resolver/plugin/credentials"
	"github.com/beam-cloud/b9-resolver/plugin/credentials/credtest"
)

const passA, passB = "CANARY-hosts-A-11aa", "CANARY-hosts-B-22bb"

func basic(user, pass string) string {
	return fmt.Sprintf(`{"type":"basic","credentials":{"USERNAME":%q,"PASSWORD":%q}}`, user, pass)
}

func newClient(t *testing.T, addr string) *credclient.Client {
	t.Helper()
	c, err := credclient.New(addr, credclient.WithCacheTTL(0))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// fetchLayer resolves ref with hosts and reads one layer blob, as a remote
// snapshotter does on a lazy read.
func fetchLayer(ctx context.Context, hosts docker.RegistryHosts, img registrytest.Image) error {
	ref := img.Ref
	layers, err := img.Image.Layers()
	if err != nil {
		return err
	}
	size, err := layers[0].Size()
	if err != nil {
		return err
	}
	r := docker.NewResolver(docker.ResolverOptions{Hosts: hosts})
	name, _, err := r.Resolve(ctx, ref)
	if err != nil {
		return err
	}
	f, err := r.Fetcher(ctx, name)
	if err != nil {
		return err
	}
	rc, err := f.Fetch(ctx, ocispec.Descriptor{MediaType: "application/vnd.oci.image.layer.v1.tar+gzip", Digest: digest.Digest(img.Layers[0]), Size: size})
	if err != nil {
		return err
	}
	defer rc.Close()
	_, err = io.Copy(io.Discard, rc)
	return err
}

// Against a token-auth registry whose users may each pull only their own
// repository: the snapshot's ref label decides which credential is used.
func TestRegistryHostsFromLabels(t *testing.T) {
	reg := registrytest.Start(t, registrytest.WithTokenAuth(),
		registrytest.WithUser("a", passA, "tenant-a/app", "tenant-a/other"), registrytest.WithUser("b", passB, "tenant-b/app"))
	imgA := reg.PushRandomImage(t, "tenant-a/app", "v1", "a", passA)
	imgB := reg.PushRandomImage(t, "tenant-b/app", "v1", "b", passB)
	e := credtest.Start(t, credentials.Config{})
	refA := e.Pull(t, reg.Host, "tenant-a/app", basic("a", passA))
	refB := e.Pull(t, reg.Host, "tenant-b/app", basic("b", passB))
	c := newClient(t, e.Addr)
	ctx := context.Background()

	labels := func(ref, image string) map[string]string {
		return map[string]string{remotehosts.CredentialRefLabel: ref, snapshotters.TargetRefLabel: image}
	}
	hosts := func(l map[string]string) docker.RegistryHosts {
		return remotehosts.RegistryHosts(ctx, c, remotehosts.FromLabels(l))
	}
	if err := fetchLayer(ctx, hosts(labels(refA, imgA.Ref)), imgA); err != nil {
		t.Fatalf("A's layer with A's ref: %v", err)
	}
	if err := fetchLayer(ctx, hosts(labels(refB, imgB.Ref)), imgB); err != nil {
		t.Fatalf("B's layer with B's ref: %v", err)
	}
	// B's ref on A's image: B's credential is presented (and refused by
	// the registry), never A's, although A pulled that repository.
	if err := fetchLayer(ctx, hosts(labels(refB, imgA.Ref)), imgA); err == nil {
		t.Fatal("B's ref read A's image: the repository's credential was used instead of the ref's")
	}
	// No ref: the most recent credential that pulled the repository.
	if err := fetchLayer(ctx, hosts(labels("", imgA.Ref)), imgA); err != nil {
		t.Fatalf("A's layer by repository: %v", err)
	}
	// Nothing recorded: anonymous, refused.
	imgC := reg.PushRandomImage(t, "tenant-a/other", "v1", "a", passA)
	if err := fetchLayer(ctx, hosts(labels("", imgC.Ref)), imgC); err == nil {
		t.Fatal("an unrecorded repository was read without credentials")
	}
}

// containerd asks under registry-1.docker.io; pulls are recorded under
// docker.io.
func TestCredentialsFuncDockerHub(t *testing.T) {
	e := credtest.Start(t, credentials.Config{})
	ref := e.Pull(t, "docker.io", "library/ubuntu", basic("hub", passA))
	c := newClient(t, e.Addr)
	for _, o := range []remotehosts.Options{{ImageRef: "ubuntu:22.04"}, {CredentialRef: ref}} {
		u, p, err := remotehosts.CredentialsFunc(c, o)("registry-1.docker.io")
		if err != nil || u != "hub" || p != passA {
			t.Fatalf("%+v: %q %v", o, u, err)
		}
	}
	// Unknown: anonymous, no error (the registry decides).
	u, p, err := remotehosts.CredentialsFunc(c, remotehosts.Options{ImageRef: "quay.io/x/y:1"})("quay.io")
	if err != nil || u != "" || p != "" {
		t.Fatalf("unknown: %q %q %v", u, p, err)
	}
}

// A registry redirecting a blob to the same host name on another port (or
// plain http, or a subdomain): Go copies the Authorization header that
// containerd's authorizer set, and containerd does not remove it. The
// hosts from RegistryHosts drop it off the registry's origin. The control
// (containerd's own ConfigureHosts with the same credentials) leaks, so
// the test can fail.
func TestRegistryHostsRedirectGetsNoCredentials(t *testing.T) {
	reg := registrytest.Start(t, registrytest.WithBasicAuth(), registrytest.WithUser("a", passA),
		registrytest.WithBlobRedirectHost("127.0.0.1"))
	img := reg.PushRandomImage(t, "tenant-a/app", "v1", "a", passA)
	e := credtest.Start(t, credentials.Config{})
	ref := e.Pull(t, reg.Host, "tenant-a/app", basic("a", passA))
	c := newClient(t, e.Addr)
	ctx := context.Background()
	blobAuth := func() int {
		return reg.Count(func(q registrytest.Request) bool { return q.Server == registrytest.ServerBlob && q.HadAuth() })
	}

	opts := remotehosts.Options{CredentialRef: ref, ImageRef: img.Ref}
	control := config.ConfigureHosts(ctx, config.HostOptions{Credentials: remotehosts.CredentialsFunc(c, opts)})
	reg.Reset()
	if err := fetchLayer(ctx, control, img); err != nil {
		t.Fatalf("control: %v", err)
	}
	if blobAuth() == 0 {
		t.Fatalf("control: containerd's hosts did not leak the credential to %s; the test proves nothing\n%s", reg.BlobHost, reg.Summary())
	}

	reg.Reset()
	if err := fetchLayer(ctx, remotehosts.RegistryHosts(ctx, c, opts), img); err != nil {
		t.Fatalf("fetch: %v\n%s", err, reg.Summary())
	}
	if n := blobAuth(); n != 0 || reg.Count(func(q registrytest.Request) bool { return q.Server == registrytest.ServerBlob }) == 0 {
		t.Fatalf("%d blob-host requests carried the registry's credential (want 0, and some blob requests)\n%s", n, reg.Summary())
	}
}
