package integration

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/core/snapshots"

	"github.com/beam-cloud/b9-resolver/internal/testutil/registrytest"
	"github.com/beam-cloud/b9-resolver/pkg/credclient"
)

// TestRestart: restarting containerd-b9 (and with it the plugin) and
// restarting the standalone daemon leave pulled images listed and
// unpacked, and the sockets serving pulls again.
func TestRestart(t *testing.T) {
	binaries(t)
	pass, admin := canary("alice"), canary("admin")
	reg := registrytest.Start(t, registrytest.WithTokenAuth(),
		registrytest.WithUser("alice", pass, "app/direct", "app/forward"), registrytest.WithUser("admin", admin, "*"))
	n := newNode(t, nodeConfig{pullMode: "direct"})
	n.startStandalone("forward")
	ann := map[string]string{annKey: basicDoc(reg.Host, "alice", pass)}

	direct := reg.PushRandomImage(t, "app/direct", "v1", "admin", admin)
	forward := reg.PushRandomImage(t, "app/forward", "v1", "admin", admin)
	mustSucceed(t, n.pull(n.b9, direct.Ref, ann), "direct pull")
	mustSucceed(t, n.pull(n.standAddr, forward.Ref, ann), "forward pull")

	usable := func(stage string) {
		t.Helper()
		for _, img := range []registrytest.Image{direct, forward} {
			if !n.listedByCRI(img.Ref) {
				t.Errorf("%s: %s not listed by containerd's CRI", stage, img.Ref)
			}
			// Through the b9 socket too: ImageStatus is forwarded.
			r := n.crictl(n.b9, "inspecti", img.Ref)
			if r.err != nil || !strings.Contains(r.out, img.Config) {
				t.Errorf("%s: crictl inspecti %s via b9: %v\n%s", stage, img.Ref, r.err, r.out)
			}
			c := client(t, n)
			ci, err := c.GetImage(context.Background(), img.Ref)
			if err != nil {
				t.Errorf("%s: %s: %v", stage, img.Ref, err)
				continue
			}
			if ok, err := ci.IsUnpacked(context.Background(), "native"); err != nil || !ok {
				t.Errorf("%s: %s not unpacked in native (%v)", stage, img.Ref, err)
			}
		}
	}
	usable("before restarts")
	// The credential ref on the direct pull's layers, for the Credentials
	// service after restarts (its records persist in the plugin's root).
	ref := layerCredentialRef(t, n, direct.Layers[0])

	// containerd (and the plugin in it) restarts; the standalone daemon
	// keeps running and must find containerd again on its own.
	n.restartContainerd()
	usable("after containerd restart")
	if got := credentialFor(t, n.b9, credclient.Request{Host: reg.Host, Repository: "app/direct", CredentialRef: ref}); got.Username != "alice" || got.Secret != pass {
		t.Errorf("after restart, GetCredentials(ref) = user %q (secret matches %v), want alice's recorded credential", got.Username, got.Secret == pass)
	}
	mustSucceed(t, n.pull(n.b9, direct.Ref, ann), "direct pull after containerd restart")
	start := time.Now()
	mustSucceed(t, n.pull(n.standAddr, forward.Ref, ann), "forward pull through the standalone daemon after containerd restart")
	t.Logf("first standalone pull after containerd restart took %s", time.Since(start).Round(time.Millisecond))

	// The standalone daemon restarts: a stale socket is replaced.
	n.restartStandalone("forward")
	mustSucceed(t, n.pull(n.standAddr, forward.Ref, ann), "forward pull after standalone restart")
	usable("after standalone restart")

	// A containerd killed hard leaves its socket file behind; the plugin
	// must take it over when containerd comes back.
	if err := killHard(n.cd); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(n.b9); err != nil {
		t.Logf("b9 socket gone after SIGKILL (%v)", err)
	}
	n.startContainerd()
	mustSucceed(t, n.pull(n.b9, direct.Ref, ann), "direct pull after SIGKILL and start")
	usable("after containerd SIGKILL")

	for _, p := range []string{n.b9, n.standAddr} {
		fi, err := os.Stat(p)
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v (%v), want 0600", p, fi.Mode().Perm(), err)
		}
		if di, err := os.Stat(filepath.Dir(p)); err != nil || di.Mode().Perm() != 0o700 {
			t.Errorf("%s: mode %v (%v), want 0700", filepath.Dir(p), di.Mode().Perm(), err)
		}
	}
	n.assertNoSecrets(pass, admin)
}

// layerCredentialRef is the b9.credential-ref label of a layer's snapshot.
func layerCredentialRef(t *testing.T, n *node, layer string) string {
	t.Helper()
	ref := ""
	err := client(t, n).SnapshotService("native").Walk(context.Background(), func(_ context.Context, info snapshots.Info) error {
		if info.Labels["containerd.io/snapshot/cri.layer-digest"] == layer {
			ref = info.Labels["containerd.io/snapshot/b9.credential-ref"]
		}
		return nil
	})
	if err != nil || ref == "" {
		t.Fatalf("no credential ref on the snapshot of layer %s (%v)", layer, err)
	}
	return ref
}

func killHard(p *proc) error {
	if err := p.cmd.Process.Kill(); err != nil {
		return err
	}
	<-p.done
	return nil
}

// TestBadConfig: a bad plugin table fails the plugin with a message
// naming the key, and with required_plugins stops containerd.
func TestBadConfig(t *testing.T) {
	binaries(t)
	dir := shortTempDir(t)
	write := func(name, top, plugin string) string {
		p := filepath.Join(dir, name)
		cfg := "version = 3\n" + top + "\nroot = '" + dir + "/root-" + name + "'\nstate = '" + dir + "/state-" + name + "'\n" +
			"disabled_plugins = ['io.containerd.nri.v1.nri']\n" +
			"[grpc]\n  address = '" + dir + "/" + name + ".sock'\n" +
			"[ttrpc]\n  address = '" + dir + "/" + name + ".sock.ttrpc'\n" +
			"[plugins.'io.containerd.internal.v1.opt']\n  path = '" + dir + "/opt'\n" +
			"[plugins.'io.containerd.grpc.v1.b9-resolver']\n  address = '" + dir + "/b9-" + name + "/b9.sock'\n" + plugin
		if err := os.WriteFile(p, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	bad := "  pull_mode = 'sideways'\n  isolation = 'loose'\n"

	// Without required_plugins containerd serves on, without the plugin.
	cfg := write("soft", "", bad)
	p := startProc(t, "containerd-b9", filepath.Join(dir, "soft.log"), containerdBin, "--config", cfg)
	waitSocket(t, p, filepath.Join(dir, "soft.sock"), 60*time.Second)
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(p.logText(), "b9-resolver config:") && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	log := p.logText()
	for _, want := range []string{"io.containerd.grpc.v1.b9-resolver", "pull_mode: \\\"sideways\\\"", "isolation: \\\"loose\\\""} {
		if !strings.Contains(log, want) {
			t.Errorf("containerd log lacks %q:\n%s", want, tail(log, 20))
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "b9-soft", "b9.sock")); err == nil {
		t.Error("the b9 socket exists although the config is bad")
	}
	p.stop(t)

	// With required_plugins containerd refuses to start.
	cfg = write("hard", "required_plugins = ['io.containerd.grpc.v1.b9-resolver']", bad)
	p = startProc(t, "containerd-b9", filepath.Join(dir, "hard.log"), containerdBin, "--config", cfg)
	select {
	case <-p.done:
		if p.err == nil {
			t.Error("containerd exited 0 with a required plugin failing")
		}
		if !strings.Contains(p.logText(), "b9-resolver") {
			t.Errorf("exit log does not name the plugin:\n%s", tail(p.logText(), 20))
		}
	case <-time.After(60 * time.Second):
		t.Error("containerd kept running with a required plugin failing")
	}
}
