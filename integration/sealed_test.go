package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"filippo.io/age"
	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/pkg/namespaces"

	"github.com/beam-cloud/b9-resolver/internal/sealed"
	"github.com/beam-cloud/b9-resolver/internal/testutil/registrytest"
	"github.com/beam-cloud/b9-resolver/pkg/imagecreds"
)

// writeIdentity writes a new age identity to path (0600, root's) and
// returns it.
func writeIdentity(t *testing.T, path string) *age.X25519Identity {
	t.Helper()
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte("# node identity\n"+id.String()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return id
}

// TestSealed pulls with sealed annotations in both pull modes: a value
// opens only in its namespace, before its not_after and on a node holding
// one of its recipients' identities; sealed.require refuses plain
// documents; node identities rotate without a restart; and the secret
// inside appears in no log, crictl or ctr-b9 output (inspectp of a pod
// sandbox carrying the annotation, inspecti), label, metric or file under
// the node's folders (containerd's metadata and the plugin's state).
func TestSealed(t *testing.T) {
	binaries(t)
	pass, admin, plain := canary("sealed"), canary("admin"), canary("plain")
	reg := registrytest.Start(t, registrytest.WithBasicAuth(),
		registrytest.WithUser("alice", pass), registrytest.WithUser("admin", admin))
	sandboxConfig, sandboxEnv, pauseRef := sandboxRuntime(t, reg, "admin", admin)
	idDir := filepath.Join(shortTempDir(t), "identities")
	if err := os.Mkdir(idDir, 0o700); err != nil {
		t.Fatal(err)
	}
	oldKey := filepath.Join(idDir, "old.key")
	oldID := writeIdentity(t, oldKey)
	stranger, _ := age.GenerateX25519Identity()
	metricsAddr := freeAddr(t)
	n := newNode(t, nodeConfig{
		plugin: fmt.Sprintf("  [plugins.'io.containerd.grpc.v1.b9-resolver'.sealed]\n    identity_files = ['%s/*.key']\n", idDir),
		extra:  fmt.Sprintf("[metrics]\n  address = '%s'\n", metricsAddr) + sandboxConfig,
		env:    sandboxEnv,
	})
	n.startStandalone("forward")
	strict := startRequireSealed(t, n, idDir)

	doc := basicDoc(reg.Host, "alice", pass)
	seal := func(ns string, notAfter time.Time, ids ...*age.X25519Identity) string {
		t.Helper()
		var rs []string
		for _, id := range ids {
			rs = append(rs, id.Recipient().String())
		}
		v, err := imagecreds.Seal(doc, rs, ns, notAfter)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	key := annKey + ".sealed"
	in := func(ns string) podMeta { return podMeta{namespace: ns} }
	fp := func(id *age.X25519Identity) string { return sealed.RecipientFingerprint(id.Recipient().String()) }
	modes := []struct{ name, sock string }{{"forward", n.standAddr}, {"direct", n.b9}}
	images := map[string]registrytest.Image{}

	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			img := reg.PushRandomImage(t, "sealed/"+m.name, "v1", "admin", admin)
			images[m.name] = img
			good := seal("team-a", time.Now().Add(time.Hour), stranger, oldID)
			mustSucceed(t, n.pullAs(m.sock, img.Ref, in("team-a"), map[string]string{key: good}), "sealed annotation")
			if !n.listedByCRI(img.Ref) {
				t.Errorf("CRI does not list %s", img.Ref)
			}

			r := n.pullAs(m.sock, img.Ref, in("team-b"), map[string]string{key: good})
			wantCode(t, r, "the same value in another namespace", "PermissionDenied")
			wantSays(t, r, key, "another namespace than the pod's (team-b)")
			if strings.Contains(r.out, "team-a") {
				t.Errorf("the refusal names the sealed namespace: %s", r.out)
			}

			r = n.pullAs(m.sock, img.Ref, in("team-a"), map[string]string{key: seal("team-a", time.Now().Add(-time.Minute), oldID)})
			wantCode(t, r, "expired", "InvalidArgument")
			wantSays(t, r, key, "expired at")

			r = n.pullAs(m.sock, img.Ref, in("team-a"), map[string]string{key: seal("team-a", time.Time{}, stranger)})
			wantCode(t, r, "sealed for a key the node lacks", "FailedPrecondition")
			wantSays(t, r, key, "sealed for "+fp(stranger), fp(oldID))

			// A beta9 ContainerRequest's credentials become annotations the
			// node pulls with, plain and sealed.
			var req struct {
				ImageCredentials string `json:"image_credentials"`
			}
			crJSON, _ := json.Marshal(map[string]any{"container_id": "c-1", "workspace_id": "team-a",
				"image_credentials": fmt.Sprintf(`{"credentials":{"PASSWORD":%q,"USERNAME":"alice"},"registry":%q,"type":"basic"}`, pass, reg.Host)})
			if err := json.Unmarshal(crJSON, &req); err != nil {
				t.Fatal(err)
			}
			for _, opts := range [][]imagecreds.Option{
				{imagecreds.WithImage(img.Ref)},
				{imagecreds.WithImage(img.Ref), imagecreds.WithName("beta9"), imagecreds.WithSealing([]string{oldID.Recipient().String()}, "team-a", time.Now().Add(time.Hour))},
			} {
				ann, err := imagecreds.FromContainerRequest(req.ImageCredentials, opts...)
				if err != nil {
					t.Fatal(err)
				}
				mustSucceed(t, n.pullAs(m.sock, img.Ref, in("team-a"), ann), fmt.Sprintf("annotations from a ContainerRequest %v", keysOf(ann)))
			}
		})
	}

	t.Run("sealed.require", func(t *testing.T) {
		img := images["direct"]
		r := n.pullAs(strict, img.Ref, in("team-a"), map[string]string{key: "alice:" + plain})
		wantCode(t, r, "plain annotation under sealed.require", "InvalidArgument")
		wantSays(t, r, key, "sealed.require")
		mustSucceed(t, n.pullAs(strict, img.Ref, in("team-a"), map[string]string{key: seal("team-a", time.Time{}, oldID)}), "sealed annotation under sealed.require")
	})

	t.Run("rotation without restart", func(t *testing.T) {
		oldValue := seal("team-a", time.Time{}, oldID)
		newID := writeIdentity(t, filepath.Join(idDir, "new.key"))
		newValue := seal("team-a", time.Time{}, newID)
		for _, m := range modes {
			img := images[m.name]
			mustSucceed(t, n.pullAs(m.sock, img.Ref, in("team-a"), map[string]string{key: newValue}), m.name+": value for the added identity")
			mustSucceed(t, n.pullAs(m.sock, img.Ref, in("team-a"), map[string]string{key: oldValue}), m.name+": value for the old identity, both installed")
		}
		if err := os.Remove(oldKey); err != nil {
			t.Fatal(err)
		}
		for _, m := range modes {
			img := images[m.name]
			r := n.pullAs(m.sock, img.Ref, in("team-a"), map[string]string{key: oldValue})
			wantCode(t, r, m.name+": value for the removed identity", "FailedPrecondition")
			wantSays(t, r, key, fp(oldID), fp(newID))
			mustSucceed(t, n.pullAs(m.sock, img.Ref, in("team-a"), map[string]string{key: newValue}), m.name+": value for the new identity")
		}
		for _, p := range []*proc{n.cd, n.standalone} {
			if p.exited() {
				t.Errorf("%s restarted or exited during the rotation", p.name)
			}
		}
	})

	// kubelet's RunPodSandbox stores the pod's annotations in containerd's
	// sandbox store, which crictl inspectp prints: ciphertext only.
	t.Run("sandbox store", func(t *testing.T) {
		if pauseRef == "" {
			t.Skip("runc is not installed; .ci/run installs it")
		}
		value := seal("team-a", time.Time{}, mustReadIdentity(t, filepath.Join(idDir, "new.key")))
		mustSucceed(t, n.pull(n.b9, pauseRef, map[string]string{annKey: basicDoc(reg.Host, "admin", admin)}), "pull the sandbox image")
		id := n.runPod(t, "team-a", map[string]string{key: value})
		r := n.crictl(n.containerd, "inspectp", id)
		mustSucceed(t, r, "crictl inspectp")
		if !strings.Contains(r.out, value) {
			t.Errorf("crictl inspectp does not show the sealed annotation:\n%.2000s", r.out)
		}
	})

	t.Run("the secret appears nowhere", func(t *testing.T) {
		img := images["direct"]
		newKey := filepath.Join(idDir, "new.key")
		podFile := filepath.Join(n.dir, "sealed-pod.json")
		b, _ := json.Marshal(map[string]any{"metadata": map[string]string{"name": "p", "namespace": "team-a"},
			"annotations": map[string]string{key: seal("team-a", time.Time{}, mustReadIdentity(t, newKey))}})
		if err := os.WriteFile(podFile, b, 0o600); err != nil {
			t.Fatal(err)
		}
		for _, args := range [][]string{
			{"creds", "--pod-config", podFile, "--identity", newKey, img.Ref},
			{"creds", "-o", "json", "--pod-config", podFile, "--identity", newKey, img.Ref},
			{"check", "--pod-config", podFile, "--identity", newKey, img.Ref},
			{"pull", "--snapshotter", "native", "--pod-config", podFile, "--identity", newKey, img.Ref},
		} {
			if r := n.ctrB9(args...); r.status != 0 {
				t.Errorf("ctr-b9 %s: %d\n%s%s", args[0], r.status, r.stdout, r.stderr)
			}
		}
		n.crictl(n.containerd, "inspecti", img.Ref)
		n.crictl(n.containerd, "inspecti", images["forward"].Ref)
		secrets := []string{pass, plain}
		assertNoLabelHolds(t, n, secrets...)
		body, _ := scrape(t, metricsAddr)
		if !strings.Contains(body, "b9_resolver_image_pulls_total") {
			t.Errorf("metrics scrape has no pulls: %.200s", body)
		}
		for _, s := range secrets {
			if strings.Contains(body, s) {
				t.Error("a secret is in the metrics")
			}
		}
		assertNoFileHolds(t, n.dir, secrets...)
		n.assertNoSecrets(secrets...)
	})
}

func mustReadIdentity(t *testing.T, path string) *age.X25519Identity {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	ids, err := age.ParseIdentities(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	return ids[0].(*age.X25519Identity)
}

// startRequireSealed runs a second standalone daemon (direct mode) whose
// config sets sealed.require, and returns its socket.
func startRequireSealed(t *testing.T, n *node, idDir string) string {
	t.Helper()
	cfg := filepath.Join(n.dir, "require.toml")
	text := fmt.Sprintf("snapshotter = 'native'\nconfig_path = '%s/certs.d'\n[sealed]\n  identity_files = ['%s/*.key']\n  require = true\n", n.dir, idDir)
	if err := os.WriteFile(cfg, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	addr := filepath.Join(n.dir, "require", "b9.sock")
	p := startProcEnv(t, "standalone-require", filepath.Join(n.dir, "require.log"), n.env,
		containerdBin, "standalone", "--config", cfg, "--containerd-address", n.containerd,
		"--address", addr, "--pull-mode", "direct", "--log-level", "debug")
	waitSocket(t, p, addr, 30*time.Second)
	return addr
}

func wantSays(t *testing.T, r crictlResult, parts ...string) {
	t.Helper()
	for _, p := range parts {
		if !strings.Contains(r.out, p) {
			t.Errorf("message does not say %q: %s", p, r.out)
		}
	}
}

func keysOf(m map[string]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// assertNoLabelHolds checks every label of every image, content blob and
// native snapshot in k8s.io.
func assertNoLabelHolds(t *testing.T, n *node, secrets ...string) {
	t.Helper()
	c := client(t, n)
	ctx := namespaces.WithNamespace(context.Background(), "k8s.io")
	check := func(what string, labels map[string]string) {
		for k, v := range labels {
			for _, s := range secrets {
				if strings.Contains(k+"="+v, s) {
					t.Errorf("a secret is in the label %s of %s", k, what)
				}
			}
		}
	}
	imgs, err := c.ImageService().List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, img := range imgs {
		check("image "+img.Name, img.Labels)
	}
	if err := c.ContentStore().Walk(ctx, func(info content.Info) error {
		check("blob "+info.Digest.String(), info.Labels)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := c.SnapshotService("native").Walk(ctx, func(_ context.Context, info snapshots.Info) error {
		check("snapshot "+info.Name, info.Labels)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(imgs) == 0 {
		t.Error("no images to check")
	}
}

// assertNoFileHolds reads every regular file under dir (containerd's root
// and state, the plugin's state dir, logs) for the secrets.
func assertNoFileHolds(t *testing.T, dir string, secrets ...string) {
	t.Helper()
	files := 0
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return nil
		}
		files++
		for _, s := range secrets {
			if bytes.Contains(b, []byte(s)) {
				t.Errorf("a secret is in %s", p)
			}
		}
		return nil
	})
	if err != nil || files == 0 {
		t.Errorf("walking %s: %v (%d files)", dir, err, files)
	}
}
