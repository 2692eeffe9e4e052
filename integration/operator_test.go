package integration

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/beam-cloud/b9-resolver/internal/testutil/registrytest"
)

// TestPullErrorsTellOperators: in both pull modes, containerd-b9's log
// lines "pulled image" and "pull failed" name the pod (namespace/name and
// uid from the sandbox config); a pull refused for want of a credential
// says which annotation (and the node's config key) would give one; and a
// registry that is down is Unavailable, not Unknown.
func TestPullErrorsTellOperators(t *testing.T) {
	binaries(t)
	pass, admin := canary("alice"), canary("admin")
	n := newNode(t, nodeConfig{pullMode: "direct"})
	n.startStandalone("forward")
	for _, m := range []struct{ name, sock string }{{"direct", n.b9}, {"forward", n.standAddr}} {
		t.Run(m.name, func(t *testing.T) {
			reg := registrytest.Start(t, registrytest.WithTokenAuth(),
				registrytest.WithUser("alice", pass, "private/app"), registrytest.WithUser("admin", admin, "*"))
			img := reg.PushRandomImage(t, "private/app", "v1", "admin", admin)
			alice := map[string]string{annKey: basicDoc(reg.Host, "alice", pass)}
			logOf := func() string {
				if m.name == "forward" {
					return n.standalone.logText()
				}
				return n.cd.logText()
			}

			okPod := podMeta{namespace: "team-" + m.name, name: "web", uid: fmt.Sprintf("uid-ok-%d", time.Now().UnixNano())}
			mustSucceed(t, n.pullAs(m.sock, img.Ref, okPod, alice), "alice pulls")
			wantLogLine(t, logOf(), "b9-resolver: pulled image", okPod)

			refusedPod := podMeta{namespace: "team-" + m.name, name: "batch", uid: fmt.Sprintf("uid-refused-%d", time.Now().UnixNano())}
			r := n.pullAs(m.sock, img.Ref, refusedPod, nil)
			wantCode(t, r, "no credential", "Unauthenticated")
			for _, part := range []string{reg.Host, annKey + " ", annKey + ".<name>", "node_credentials"} {
				if !strings.Contains(r.out, part) {
					t.Errorf("refusal does not say %q:\n%s", part, r.out)
				}
			}
			// crictl prints the status twice (its log line and its fatal
			// line); count in one.
			msg := tail(r.out, 1)
			if c := strings.Count(strings.ToLower(msg), "anonymous"); c > 1 {
				t.Errorf("refusal says anonymous %d times:\n%s", c, msg)
			}
			wantLogLine(t, logOf(), "b9-resolver: pull failed", refusedPod)

			reg.Stop()
			wantCode(t, n.pullAs(m.sock, img.Ref, okPod, alice), "registry down", "Unavailable")
		})
	}
	n.assertNoSecrets(pass, admin)
}

// wantLogLine finds a log line with msg that names pod.
func wantLogLine(t *testing.T, log, msg string, pod podMeta) {
	t.Helper()
	for _, line := range strings.Split(log, "\n") {
		if strings.Contains(line, msg) && strings.Contains(line, "pod_uid="+pod.uid) {
			if !strings.Contains(line, "pod="+pod.namespace+"/"+pod.name) {
				t.Errorf("log line %q names the pod's uid but not %s/%s", line, pod.namespace, pod.name)
			}
			return
		}
	}
	t.Errorf("no %q log line names pod %s/%s (uid %s):\n%s", msg, pod.namespace, pod.name, pod.uid, tail(log, 20))
}
