package integration

import (
	"os"
	"strings"
	"testing"

	"github.com/beam-cloud/b9-resolver/internal/testutil/registrytest"
)

// TestPluginInProcess proves the plugin uses the containerd it runs in
// without its socket: with containerd's gRPC socket file removed, pulls
// (direct and forward), ImageStatus and ListImages through the b9 socket
// still work, and registry errors keep their codes. Any dial of
// containerd's own socket would fail ("no such file").
func TestPluginInProcess(t *testing.T) {
	binaries(t)
	pass := canary("inproc")
	reg := registrytest.Start(t, registrytest.WithBasicAuth(), registrytest.WithUser("alice", pass))
	for _, mode := range []string{"direct", "forward"} {
		t.Run(mode, func(t *testing.T) {
			n := newNode(t, nodeConfig{pullMode: mode})
			ann := map[string]string{annKey: "alice:" + pass}
			// Before any call through the b9 socket: a connection made
			// earlier would outlive the file.
			if err := os.Remove(n.containerd); err != nil {
				t.Fatalf("removing containerd's socket: %v", err)
			}
			img := reg.PushRandomImage(t, "inproc/"+mode, "after", "alice", pass)
			r := n.pull(n.b9, img.Ref, ann)
			mustSucceed(t, r, "pull after containerd's socket was removed")
			if !strings.Contains(r.out, img.Config) {
				t.Errorf("pull returned %q, want the image id %s", r.out, img.Config)
			}
			// CRI's image service answers in process, and knows the image.
			st := n.crictl(n.b9, "inspecti", img.Ref)
			mustSucceed(t, st, "ImageStatus through the b9 socket")
			if !strings.Contains(st.out, img.Config) {
				t.Errorf("ImageStatus of %s does not show its id %s:\n%s", img.Ref, img.Config, st.out)
			}
			ls := n.crictl(n.b9, "images", "-q")
			mustSucceed(t, ls, "ListImages through the b9 socket")
			if !strings.Contains(ls.out, img.Config) {
				t.Errorf("ListImages does not list %s:\n%s", img.Config, ls.out)
			}
			wantCode(t, n.pull(n.b9, img.Ref, map[string]string{annKey: "alice:wrong-" + pass}), "wrong password", "Unauthenticated")
			wantCode(t, n.pull(n.b9, reg.Host+"/inproc/"+mode+":missing", ann), "missing tag", "NotFound")
			if strings.Contains(n.cd.logText(), n.containerd+": connect") {
				t.Errorf("containerd-b9 dialled its own socket:\n%s", tail(n.cd.logText(), 20))
			}
			n.assertNoSecrets(pass)
		})
	}
}
