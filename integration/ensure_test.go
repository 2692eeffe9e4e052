package integration

import (
	"strings"
	"testing"

	"github.com/beam-cloud/b9-resolver/internal/testutil/registrytest"
)

// TestEnsureSecretPulledImages: with ensure_secret_pulled_images, an image
// a pod pulled with its own credential is reported absent by the b9
// socket's ImageStatus (what kubelet asks before an IfNotPresent pull), so
// the next pod must PullImage with its own credentials: bob, who may not
// read alice's repository, is refused although the layers are on the
// node, and alice pays one manifest round and no blob. An image pulled
// anonymously stays visible (for good, once anyone pulled it without a
// credential), and containerd's own CRI still lists them all.
func TestEnsureSecretPulledImages(t *testing.T) {
	binaries(t)
	passA, passB, admin := canary("alice"), canary("bob"), canary("admin")
	modes := []struct{ name, sock string }{{"forward", ""}, {"direct", ""}}
	reg := registrytest.Start(t, registrytest.WithTokenAuth(),
		registrytest.WithUser("alice", passA, "private/forward", "private/direct"),
		registrytest.WithUser("bob", passB, "bob/forward", "bob/direct"),
		registrytest.WithUser("admin", admin, "*"),
		registrytest.WithAnonymousPull("public/forward", "public/direct"))
	n := newNode(t, nodeConfig{pullMode: "direct", plugin: "  ensure_secret_pulled_images = true\n"})
	n.startStandalone("forward")
	modes[0].sock, modes[1].sock = n.standAddr, n.b9
	alice := map[string]string{annKey: basicDoc(reg.Host, "alice", passA)}
	bob := map[string]string{annKey: basicDoc(reg.Host, "bob", passB)}

	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			priv := reg.PushRandomImage(t, "private/"+m.name, "v1", "admin", admin)
			pub := reg.PushRandomImage(t, "public/"+m.name, "v1", "admin", admin)
			mustSucceed(t, n.pull(m.sock, priv.Ref, alice), "alice pulls her private image")
			mustSucceed(t, n.pull(m.sock, pub.Ref, nil), "anonymous pull of a public image")

			present := func(sock, ref string) bool {
				t.Helper()
				r := n.crictl(sock, "inspecti", ref)
				if r.err != nil && !strings.Contains(r.out, "no such image") {
					t.Fatalf("crictl inspecti %s: %v\n%s", ref, r.err, r.out)
				}
				return r.err == nil
			}
			if present(m.sock, priv.Ref) {
				t.Errorf("ImageStatus on the b9 socket shows %s, which only alice's credential pulled", priv.Ref)
			}
			if !present(m.sock, pub.Ref) {
				t.Errorf("ImageStatus on the b9 socket hides %s, which was pulled anonymously", pub.Ref)
			}
			if !present(n.containerd, priv.Ref) || !n.listedByCRI(priv.Ref) {
				t.Errorf("containerd's own CRI lost %s", priv.Ref)
			}

			// So kubelet calls PullImage with the next pod's credentials,
			// and the registry decides.
			reg.Reset()
			wantCode(t, n.pull(m.sock, priv.Ref, bob), "bob, image on the node", "PermissionDenied")
			wantCode(t, n.pull(m.sock, priv.Ref, nil), "no credential, image on the node", "Unauthenticated")
			if blobs := reg.Count(registrytest.Request.IsBlob); blobs != 0 {
				t.Errorf("refused pulls fetched %d blobs", blobs)
			}

			reg.Reset()
			mustSucceed(t, n.pull(m.sock, priv.Ref, alice), "alice again")
			manifests, blobs := reg.Count(registrytest.Request.IsManifest), reg.Count(registrytest.Request.IsBlob)
			t.Logf("%s: alice's re-pull of her present image: %d manifest requests, %d blob requests", m.name, manifests, blobs)
			if manifests == 0 || blobs != 0 {
				t.Errorf("re-pull of a present image: %d manifest and %d blob requests; want the manifest checked and no blob\n%s", manifests, blobs, reg.Summary())
			}
			if present(m.sock, priv.Ref) {
				t.Errorf("%s shown after alice's re-pull; it is still secret-pulled", priv.Ref)
			}

			// A public image alice happened to pull with her credential is
			// hidden until anyone pulls it without one; then it is open.
			pub2 := reg.PushRandomImage(t, "public/"+m.name, "v2", "admin", admin)
			mustSucceed(t, n.pull(m.sock, pub2.Ref, alice), "alice pulls a public image with her credential")
			if present(m.sock, pub2.Ref) {
				t.Errorf("%s shown; only alice's credential has pulled it so far", pub2.Ref)
			}
			mustSucceed(t, n.pull(m.sock, pub2.Ref, nil), "anonymous pull of the same image")
			mustSucceed(t, n.pull(m.sock, pub2.Ref, alice), "alice once more")
			if !present(m.sock, pub2.Ref) {
				t.Errorf("%s hidden after an anonymous pull; open must stay open", pub2.Ref)
			}
		})
	}
	n.assertNoSecrets(passA, passB, admin)
}
