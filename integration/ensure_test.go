package integration

import (
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

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

// TestEnsureDigestFromAnotherRegistry: a pod with no credential names an
// image on a registry of its own, which answers the manifest HEAD with
// tenant A's private digest. containerd has A's content and would reuse
// it after that one request; with ensure the pull must fetch the manifest
// from that registry and check it, so the pull fails, A's image stays
// hidden and its tag is not shown. If that registry does serve A's
// manifest bytes (whoever has them can), the image is open under that
// registry's name only: A's repository stays hidden and A's tag is not
// among the names shown.
func TestEnsureDigestFromAnotherRegistry(t *testing.T) {
	binaries(t)
	passA, admin := canary("alice"), canary("admin")
	n := newNode(t, nodeConfig{pullMode: "direct", plugin: "  ensure_secret_pulled_images = true\n"})
	n.startStandalone("forward")
	reg := registrytest.Start(t, registrytest.WithTokenAuth(),
		registrytest.WithUser("alice", passA, "tenant/a/direct", "tenant/a/forward"),
		registrytest.WithUser("admin", admin, "*"))
	alice := map[string]string{annKey: basicDoc(reg.Host, "alice", passA)}

	for _, m := range []struct{ name, sock string }{{"direct", n.b9}, {"forward", n.standAddr}} {
		t.Run(m.name, func(t *testing.T) {
			priv := reg.PushRandomImage(t, "tenant/a/"+m.name, "v1", "admin", admin)
			raw, err := priv.Image.RawManifest()
			if err != nil {
				t.Fatal(err)
			}
			mt, _ := priv.Image.MediaType()
			var serveBytes atomic.Bool
			evil := registrytest.Start(t, registrytest.WithTokenAuth(), registrytest.WithAnonymousPull("x"),
				registrytest.WithMiddleware(func(next http.Handler) http.Handler {
					return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
						if !strings.HasPrefix(r.URL.Path, "/v2/x/manifests/") {
							next.ServeHTTP(w, r)
							return
						}
						if r.Method == http.MethodHead || serveBytes.Load() {
							w.Header().Set("Docker-Content-Digest", priv.Digest)
							w.Header().Set("Content-Type", string(mt))
							w.Header().Set("Content-Length", fmt.Sprint(len(raw)))
							if r.Method == http.MethodGet {
								w.Write(raw)
							}
							return
						}
						next.ServeHTTP(w, r)
					})
				}))
			evilRef := evil.Host + "/x:" + m.name
			inspect := func(ref string) (bool, string) {
				t.Helper()
				r := n.crictl(m.sock, "inspecti", ref)
				if r.err != nil && !strings.Contains(r.out, "no such image") {
					t.Fatalf("crictl inspecti %s: %v\n%s", ref, r.err, r.out)
				}
				return r.err == nil, r.out
			}

			mustSucceed(t, n.pull(m.sock, priv.Ref, alice), "alice pulls her image")
			r := n.pull(m.sock, evilRef, nil)
			if r.err == nil {
				t.Fatalf("the pull of %s, whose registry only named alice's digest, succeeded", evilRef)
			}
			t.Logf("%s: %s", evilRef, r.code)
			if shown, _ := inspect(priv.Ref); shown {
				t.Errorf("%s shown after another registry named its digest", priv.Ref)
			}
			if shown, out := inspect(evilRef); shown {
				t.Errorf("%s shown although its registry never served it:\n%s", evilRef, out)
			}

			serveBytes.Store(true)
			mustSucceed(t, n.pull(m.sock, evilRef, nil), "pull from a registry serving the same manifest bytes")
			shown, out := inspect(evilRef)
			if !shown {
				t.Errorf("%s hidden although its registry served it openly", evilRef)
			}
			if strings.Contains(out, "tenant/a/") {
				t.Errorf("ImageStatus of %s reveals alice's repository:\n%s", evilRef, out)
			}
			if shown, _ := inspect(priv.Ref); shown {
				t.Errorf("%s shown after the same content was opened under another repository", priv.Ref)
			}
		})
	}
	n.assertNoSecrets(passA, admin)
}

// TestEnsureRegistryOutage: with ensure on, the registry stopped and
// containerd-b9 restarted (the records come back from the sealed state
// file), a pod whose credential pulled the image gets it again — counted
// in b9_resolver_ensure_decisions_total{decision="outage_accepted"} and
// logged with the pod — while a pod with another credential or none is
// still refused (Unavailable: the registry could not check it). In both
// pull modes.
func TestEnsureRegistryOutage(t *testing.T) {
	binaries(t)
	passA, passB, admin := canary("alice"), canary("bob"), canary("admin")
	for _, mode := range []string{"direct", "forward"} {
		t.Run(mode, func(t *testing.T) {
			metricsAddr := freeAddr(t)
			n := newNode(t, nodeConfig{pullMode: mode, plugin: "  ensure_secret_pulled_images = true\n",
				extra: fmt.Sprintf("[metrics]\n  address = '%s'\n", metricsAddr)})
			reg := registrytest.Start(t, registrytest.WithTokenAuth(),
				registrytest.WithUser("alice", passA, "tenant/a"), registrytest.WithUser("bob", passB, "tenant/b"),
				registrytest.WithUser("admin", admin, "*"))
			img := reg.PushRandomImage(t, "tenant/a", "v1", "admin", admin)
			alice := map[string]string{annKey: basicDoc(reg.Host, "alice", passA)}
			bob := map[string]string{annKey: basicDoc(reg.Host, "bob", passB)}
			mustSucceed(t, n.pull(n.b9, img.Ref, alice), "alice pulls with the registry up")

			n.restartContainerd()
			reg.Stop()
			pod := podMeta{namespace: "tenant-a", name: "web", uid: fmt.Sprintf("uid-outage-%d", time.Now().UnixNano())}
			mustSucceed(t, n.pullAs(n.b9, img.Ref, pod, alice), "alice, registry down, image on the node")
			wantLogLine(t, n.cd.logText(), "registry unreachable; image on the node accepted", pod)
			wantCode(t, n.pull(n.b9, img.Ref, bob), "bob, registry down", "Unavailable")
			wantCode(t, n.pull(n.b9, img.Ref, nil), "no credential, registry down", "Unavailable")
			_, fams := scrape(t, metricsAddr)
			if got := value(fams, "b9_resolver_ensure_decisions_total", map[string]string{"decision": "outage_accepted"}); got != 1 {
				t.Errorf("outage_accepted = %v, want 1", got)
			}
			if got := value(fams, "b9_resolver_ensure_decisions_total", map[string]string{"decision": "outage_refused"}); got != 2 {
				t.Errorf("outage_refused = %v, want 2", got)
			}
			n.assertNoSecrets(passA, passB, admin)
		})
	}
}
