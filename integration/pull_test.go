package integration

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/snapshots"

	"github.com/beam-cloud/b9-resolver/internal/testutil/registrytest"
	"github.com/beam-cloud/b9-resolver/pkg/credclient"
)

// canary is a unique secret: if it shows up in a log or an output, that
// is a leak.
func canary(who string) string {
	b := make([]byte, 6)
	rand.Read(b)
	return "CANARY-" + who + "-" + hex.EncodeToString(b)
}

func basicDoc(host, user, pass string) string {
	return fmt.Sprintf(`{"registry":%q,"type":"basic","credentials":{"USERNAME":%q,"PASSWORD":%q}}`, host, user, pass)
}

// pullEnv is one node with both services and three registries.
type pullEnv struct {
	n                     *node
	basic, token, nodeReg *registrytest.Registry
	passA, passB, admin   string
	nodePass              string
}

// The repositories of the token registry each user may pull.
func aliceRepos() []string {
	return []string{"team-a/forward", "team-a/direct", "team-a/k-forward", "team-a/k-direct", "team-a/stock", "team-a/concurrent"}
}

func bobRepos() []string { return []string{"team-b/forward", "team-b/direct"} }

func newPullEnv(t *testing.T) *pullEnv {
	binaries(t)
	e := &pullEnv{passA: canary("alice"), passB: canary("bob"), admin: canary("admin"), nodePass: canary("node")}
	e.basic = registrytest.Start(t, registrytest.WithBasicAuth(),
		registrytest.WithUser("alice", e.passA), registrytest.WithUser("admin", e.admin))
	e.token = registrytest.Start(t, registrytest.WithTokenAuth(),
		registrytest.WithUser("alice", e.passA, aliceRepos()...),
		registrytest.WithUser("bob", e.passB, bobRepos()...),
		registrytest.WithUser("admin", e.admin, "*"))
	e.nodeReg = registrytest.Start(t, registrytest.WithBasicAuth(),
		registrytest.WithUser("node", e.nodePass), registrytest.WithUser("admin", e.admin))
	// The node's own credential, for nodeReg only.
	plugin := fmt.Sprintf("  [plugins.'io.containerd.grpc.v1.b9-resolver'.node_credentials]\n    documents = ['%s']\n",
		basicDoc(e.nodeReg.Host, "node", e.nodePass))
	e.n = newNode(t, nodeConfig{pullMode: "direct", plugin: plugin})
	e.n.startStandalone("forward")
	return e
}

// TestPull drives crictl pulls through both pull modes: forward (the
// standalone daemon in front of containerd's CRI) and direct (the plugin
// inside containerd-b9).
func TestPull(t *testing.T) {
	e := newPullEnv(t)
	n := e.n
	modes := []struct{ name, sock string }{{"forward", n.standAddr}, {"direct", n.b9}}
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			t.Run("basic", func(t *testing.T) {
				img := e.basic.PushRandomImage(t, "basic/"+m.name, "v1", "admin", e.admin)
				r := n.pull(m.sock, img.Ref, map[string]string{annKey: "alice:" + e.passA})
				mustSucceed(t, r, "pull with a username:password annotation")
				if !strings.Contains(r.out, img.Config) {
					t.Errorf("pull returned %q, want the image id %s", r.out, img.Config)
				}
				if !n.listedByCRI(img.Ref) {
					t.Errorf("containerd's CRI does not list %s after the pull", img.Ref)
				}
				wantCode(t, n.pull(m.sock, img.Ref, nil), "no credential", "Unauthenticated")
				r = n.pull(m.sock, img.Ref, map[string]string{annKey: "alice:wrong-" + e.passB})
				wantCode(t, r, "wrong password", "Unauthenticated")
				for _, part := range []string{"from " + e.basic.Host, "credential from annotation " + annKey} {
					if !strings.Contains(r.out, part) {
						t.Errorf("message does not say %q: %s", part, r.out)
					}
				}
				// The request's auth (kubelet's imagePullSecrets) when no annotation applies.
				mustSucceed(t, n.pull(m.sock, img.Ref, nil, "--creds", "alice:"+e.passA), "pull with --creds")
			})

			t.Run("token", func(t *testing.T) {
				img := e.token.PushRandomImage(t, "team-a/"+m.name, "v1", "admin", e.admin)
				r := n.pull(m.sock, img.Ref, map[string]string{annKey + ".reg": basicDoc(e.token.Host, "alice", e.passA)})
				mustSucceed(t, r, "pull with a basic envelope from a token registry")
				if !n.listedByCRI(img.Ref) {
					t.Errorf("containerd's CRI does not list %s", img.Ref)
				}
				wantCode(t, n.pull(m.sock, img.Ref, nil), "anonymous on a private repository", "Unauthenticated")
				wantCode(t, n.pull(m.sock, img.Ref, map[string]string{annKey: "alice:wrong-" + e.passB}), "wrong password", "Unauthenticated")
			})

			t.Run("two pods", func(t *testing.T) {
				a := e.token.PushRandomImage(t, "team-a/"+m.name, "v2", "admin", e.admin)
				b := e.token.PushRandomImage(t, "team-b/"+m.name, "v2", "admin", e.admin)
				podA := map[string]string{annKey: basicDoc(e.token.Host, "alice", e.passA)}
				podB := map[string]string{annKey: basicDoc(e.token.Host, "bob", e.passB)}
				mustSucceed(t, n.pull(m.sock, a.Ref, podA), "alice pulls her image")
				mustSucceed(t, n.pull(m.sock, b.Ref, podB), "bob pulls his image")
				// Each image is now on the node; the other pod still may not
				// pull it: its credential reaches the registry, which refuses.
				wantCode(t, n.pull(m.sock, a.Ref, podB), "bob pulls alice's image", "PermissionDenied")
				wantCode(t, n.pull(m.sock, b.Ref, podA), "alice pulls bob's image", "PermissionDenied")
			})

			t.Run("node credentials and public", func(t *testing.T) {
				img := e.nodeReg.PushRandomImage(t, "node/"+m.name, "v1", "admin", e.admin)
				mustSucceed(t, n.pull(m.sock, img.Ref, nil), "no annotation: the node's credential")
				// A public document means anonymous, with no fallback to the
				// node's credential that would have worked.
				r := n.pull(m.sock, img.Ref, map[string]string{annKey: `{"type":"public"}`})
				wantCode(t, r, "public document", "Unauthenticated")
				if !strings.Contains(r.out, "public document") {
					t.Errorf("message does not say the pull was anonymous by a public document: %s", r.out)
				}
				// Strict isolation: a wrong pod credential does not fall back either.
				wantCode(t, n.pull(m.sock, img.Ref, map[string]string{annKey: "alice:" + e.passA}), "wrong pod credential, strict", "Unauthenticated")
			})

			t.Run("bad annotation", func(t *testing.T) {
				key := annKey + ".cloud"
				r := n.pull(m.sock, e.basic.Host+"/basic/"+m.name+":v1", map[string]string{
					key: `{"type":"aws","credentials":{"AWS_ACCESS_KEY_ID":"AKIA` + strings.ToUpper(hex.EncodeToString([]byte(e.passB)))[:12] + `"}}`,
				})
				wantCode(t, r, "aws document without a secret key", "InvalidArgument")
				for _, part := range []string{key, "AWS_SECRET_ACCESS_KEY"} {
					if !strings.Contains(r.out, part) {
						t.Errorf("message does not name %q: %s", part, r.out)
					}
				}
			})
		})
	}

	t.Run("direct labels", func(t *testing.T) { testLabels(t, e, n.b9, "direct") })
	t.Run("forward labels", func(t *testing.T) { testLabels(t, e, n.standAddr, "forward") })
	t.Run("direct request counts", func(t *testing.T) { testRequestCounts(t, e) })
	t.Run("direct concurrent pulls share", func(t *testing.T) { testConcurrent(t, e) })

	// Each socket really ran its mode.
	for _, c := range []struct {
		p    *proc
		mode string
	}{{n.standalone, "forward"}, {n.cd, "direct"}} {
		if !strings.Contains(c.p.logText(), "mode="+c.mode) || strings.Count(c.p.logText(), "b9-resolver: pulled image") < 5 {
			t.Errorf("%s log shows no %s-mode pulls", c.p.name, c.mode)
		}
	}
	n.assertNoSecrets(e.passA, e.passB, e.admin, e.nodePass)
}

func client(t *testing.T, n *node) *containerd.Client {
	t.Helper()
	c, err := containerd.New(n.containerd, containerd.WithDefaultNamespace("k8s.io"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// testLabels checks what a pull through sock leaves in containerd: CRI's
// image label and id name, the remote-snapshotter labels on each layer
// snapshot, and a credential ref that differs per credential, which the
// Credentials service on sock answers (direct mode labels in Prepare,
// forward mode after CRI's pull).
func testLabels(t *testing.T, e *pullEnv, sock, mode string) {
	n := e.n
	a := e.token.PushRandomImage(t, "team-a/"+mode, "labels", "admin", e.admin)
	b := e.token.PushRandomImage(t, "team-b/"+mode, "labels", "admin", e.admin)
	mustSucceed(t, n.pull(sock, a.Ref, map[string]string{annKey: basicDoc(e.token.Host, "alice", e.passA)}), "alice")
	mustSucceed(t, n.pull(sock, b.Ref, map[string]string{annKey: basicDoc(e.token.Host, "bob", e.passB)}), "bob")

	c := client(t, n)
	ctx := context.Background()
	for _, name := range []string{a.Ref, a.Config, e.token.Host + "/team-a/" + mode + "@" + a.Digest} {
		img, err := c.ImageService().Get(ctx, name)
		if err != nil {
			t.Errorf("image %s: %v", name, err)
			continue
		}
		if img.Labels["io.cri-containerd.image"] != "managed" {
			t.Errorf("image %s labels %v, want io.cri-containerd.image=managed", name, img.Labels)
		}
		if img.Target.Digest.String() != a.Digest {
			t.Errorf("image %s target %s, want %s", name, img.Target.Digest, a.Digest)
		}
	}

	// Forward mode labels in the background, just after the pull's
	// answer: wait (briefly) for every layer of both images to carry a ref.
	var refs map[string]string // layer digest → credential ref
	deadline := time.Now().Add(10 * time.Second)
	for {
		refs = map[string]string{}
		err := c.SnapshotService("native").Walk(ctx, func(_ context.Context, info snapshots.Info) error {
			if d := info.Labels["containerd.io/snapshot/cri.layer-digest"]; d != "" {
				refs[d] = info.Labels["containerd.io/snapshot/b9.credential-ref"]
				if info.Labels["containerd.io/snapshot/cri.image-ref"] == "" || info.Labels["containerd.io/snapshot/cri.manifest-digest"] == "" {
					t.Errorf("snapshot %s lacks cri.* labels: %v", info.Name, info.Labels)
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		labelled := true
		for _, l := range append(slices.Clone(a.Layers), b.Layers...) {
			labelled = labelled && refs[l] != ""
		}
		if labelled || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	refA, refB := refs[a.Layers[0]], refs[b.Layers[0]]
	if refA == "" || refB == "" || refs[a.Layers[1]] != refA {
		t.Fatalf("credential-ref labels: alice %q/%q bob %q; want one non-empty ref per credential", refA, refs[a.Layers[1]], refB)
	}
	if refA == refB {
		t.Errorf("alice's and bob's layers carry the same credential ref %q", refA)
	}
	for _, ref := range []string{refA, refB} {
		if strings.Contains(ref, "CANARY") {
			t.Errorf("credential ref label holds a secret: %q", ref)
		}
	}
	t.Logf("credential-ref labels: alice %s, bob %s", refA, refB)

	// A remote snapshotter holding only the label gets exactly that pull's
	// credential from the Credentials service on the b9 socket.
	for ref, want := range map[string][2]string{refA: {"alice", e.passA}, refB: {"bob", e.passB}} {
		got := credentialFor(t, sock, credclient.Request{Host: e.token.Host, Repository: "team-a/" + mode, CredentialRef: ref})
		if got.Username != want[0] || got.Secret != want[1] || got.Ref != ref {
			t.Errorf("GetCredentials(ref %s) = user %q ref %q (secret matches: %v), want %s", ref, got.Username, got.Ref, got.Secret == want[1], want[0])
		}
	}

	// Another credential pulling the same image leaves the first puller's
	// ref on its layers (direct mode unpacks a layer once; forward mode
	// labels only unlabelled layers). Forward mode labels in the
	// background and a daemon's Close waits for that: restart it, so the
	// check below sees whatever the second pull was going to write.
	mustSucceed(t, n.pull(sock, a.Ref, map[string]string{annKey: basicDoc(e.token.Host, "admin", e.admin)}), "admin")
	if mode == "forward" {
		n.restartStandalone("forward")
	}
	for _, l := range a.Layers {
		if got := layerCredentialRef(t, n, l); got != refA {
			t.Errorf("layer %s: credential ref %s after admin's pull, want alice's %s", l, got, refA)
		}
	}
}

// credentialFor asks the Credentials service at sock.
func credentialFor(t *testing.T, sock string, req credclient.Request) credclient.Credential {
	t.Helper()
	c, err := credclient.New(sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cred, err := c.Fetch(ctx, req)
	if err != nil {
		t.Fatalf("GetCredentials(%+v): %v", req, err)
	}
	return cred
}

// testRequestCounts compares registry requests of direct mode with stock
// CRI (crictl against containerd's own image service).
func testRequestCounts(t *testing.T, e *pullEnv) {
	n := e.n
	// Re-pull of a present image, basic auth.
	img := e.basic.PushRandomImage(t, "basic/recount", "v1", "admin", e.admin)
	ann := map[string]string{annKey: "alice:" + e.passA}
	mustSucceed(t, n.pull(n.b9, img.Ref, ann), "first direct pull")
	e.basic.Reset()
	mustSucceed(t, n.pull(n.b9, img.Ref, ann), "direct re-pull")
	direct := e.basic.Count(nil)
	e.basic.Reset()
	mustSucceed(t, n.crictl(n.containerd, "pull", "--creds", "alice:"+e.passA, img.Ref), "stock CRI re-pull")
	stock := e.basic.Count(nil)
	t.Logf("re-pull of a present image (basic auth): direct %d registry requests, stock CRI %d", direct, stock)
	if direct != 1 {
		t.Errorf("direct re-pull made %d registry requests, want 1:\n%s", direct, e.basic.Summary())
	}

	// K pulls within a token's life.
	const k = 5
	kImg := e.token.PushRandomImage(t, "team-a/k-direct", "v1", "admin", e.admin)
	sImg := e.token.PushRandomImage(t, "team-a/stock", "v1", "admin", e.admin)
	tAnn := map[string]string{annKey: basicDoc(e.token.Host, "alice", e.passA)}
	e.token.Reset()
	start := time.Now()
	for i := range k {
		mustSucceed(t, n.pull(n.b9, kImg.Ref, tAnn), fmt.Sprintf("direct pull %d", i))
	}
	directTime := time.Since(start)
	directTokens, directReqs := e.token.TokenFetches(), e.token.Count(nil)
	e.token.Reset()
	start = time.Now()
	for i := range k {
		mustSucceed(t, n.crictl(n.containerd, "pull", "--creds", "alice:"+e.passA, sImg.Ref), fmt.Sprintf("stock pull %d", i))
	}
	stockTime := time.Since(start)
	stockTokens, stockReqs := e.token.TokenFetches(), e.token.Count(nil)
	t.Logf("%d pulls of one image (token auth): direct %d token calls, %d requests, %s; stock CRI %d token calls, %d requests, %s",
		k, directTokens, directReqs, directTime.Round(time.Millisecond), stockTokens, stockReqs, stockTime.Round(time.Millisecond))
	if directTokens != 1 {
		t.Errorf("direct: %d token calls for %d pulls, want 1:\n%s", directTokens, k, e.token.Summary())
	}
	if stockTokens < k {
		t.Logf("note: stock CRI made %d token calls (expected %d)", stockTokens, k)
	}
}

// testConcurrent starts several pulls of one new image at once: they must
// share one pull (one manifest resolution, each blob fetched once).
func testConcurrent(t *testing.T, e *pullEnv) {
	n := e.n
	img := e.token.PushRandomImage(t, "team-a/concurrent", "v1", "admin", e.admin)
	ann := map[string]string{annKey: basicDoc(e.token.Host, "alice", e.passA)}
	e.token.Reset()
	const pulls = 4
	var wg sync.WaitGroup
	results := make([]crictlResult, pulls)
	for i := range pulls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = n.pull(n.b9, img.Ref, ann)
		}()
	}
	wg.Wait()
	for i, r := range results {
		mustSucceed(t, r, fmt.Sprintf("concurrent pull %d", i))
	}
	resolves := e.token.Count(func(q registrytest.Request) bool {
		return q.Server == registrytest.ServerRegistry && q.IsManifest() && q.Method == http.MethodHead && q.Status == http.StatusOK
	})
	blobs := e.token.Count(func(q registrytest.Request) bool {
		return q.Server == registrytest.ServerRegistry && q.IsBlob() && q.Method == http.MethodGet && q.Status == http.StatusOK
	})
	t.Logf("%d concurrent pulls: %d manifest resolutions, %d blob GETs, %d requests in all", pulls, resolves, blobs, e.token.Count(nil))
	if resolves != 1 || blobs != 1+len(img.Layers) {
		t.Errorf("%d concurrent pulls made %d resolutions and %d blob GETs, want 1 and %d:\n%s",
			pulls, resolves, blobs, 1+len(img.Layers), e.token.Summary())
	}
	// Callers that joined the shared pull report its credential too.
	lines := 0
	for _, l := range strings.Split(n.cd.logText(), "\n") {
		if strings.Contains(l, "b9-resolver: pulled image") && strings.Contains(l, `image="`+img.Ref+`"`) {
			lines++
			if !strings.Contains(l, `credential_source="annotation `+annKey+`"`) {
				t.Errorf("pull log line without the credential's source: %s", l)
			}
		}
	}
	if lines != pulls {
		t.Errorf("%d pull log lines for %d pulls", lines, pulls)
	}
}
