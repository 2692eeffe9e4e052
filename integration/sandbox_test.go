package integration

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/beam-cloud/b9-resolver/internal/imagebuild"
	"github.com/beam-cloud/b9-resolver/internal/testutil/registrytest"
)

var (
	sandboxOnce  sync.Once
	sandboxShim  string
	sandboxPause []byte
	sandboxErr   error
)

// sandboxParts builds, once per run, what containerd's CRI needs to run a
// pod sandbox here: containerd-shim-runc-v2 from the containerd module
// this one builds against (cached under .cache), and a static pause
// program for the sandbox image.
func sandboxParts(t *testing.T) (shimDir string, pause []byte) {
	t.Helper()
	binaries(t)
	sandboxOnce.Do(func() {
		v, err := exec.Command("go", "list", "-m", "-f", "{{.Version}}", "github.com/containerd/containerd/v2").Output()
		if err != nil {
			sandboxErr = fmt.Errorf("go list -m containerd: %v", err)
			return
		}
		dir := filepath.Join(moduleRoot, ".cache", "shim-"+strings.TrimSpace(string(v)))
		shim := filepath.Join(dir, "containerd-shim-runc-v2")
		if _, err := os.Stat(shim); err != nil {
			cmd := exec.Command("go", "build", "-o", shim+".tmp", "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2")
			cmd.Dir = moduleRoot
			cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
			if out, err := cmd.CombinedOutput(); err != nil {
				sandboxErr = fmt.Errorf("go build containerd-shim-runc-v2: %v\n%s", err, out)
				return
			}
			if sandboxErr = os.Rename(shim+".tmp", shim); sandboxErr != nil {
				return
			}
		}
		sandboxShim = dir
		tmp, err := os.MkdirTemp("", "b9pause")
		if err != nil {
			sandboxErr = err
			return
		}
		defer os.RemoveAll(tmp)
		bin := filepath.Join(tmp, "pause")
		cmd := exec.Command("go", "build", "-trimpath", "-o", bin, "./integration/testdata/pause")
		cmd.Dir = moduleRoot
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			sandboxErr = fmt.Errorf("go build pause: %v\n%s", err, out)
			return
		}
		sandboxPause, sandboxErr = os.ReadFile(bin)
	})
	if sandboxErr != nil {
		t.Fatal(sandboxErr)
	}
	return sandboxShim, sandboxPause
}

// sandboxRuntime pushes a pause image to reg as repository "pause" and
// returns the containerd config lines and the environment that let CRI
// run host-network sandboxes with runc (the pinned sandbox image, no CNI,
// cgroupfs), and the image's reference, for the test to pull first.
// Without runc on PATH it returns no config and pauseRef "": a test runs
// its sandbox steps only when pauseRef is set.
func sandboxRuntime(t *testing.T, reg *registrytest.Registry, user, pass string) (config string, env []string, pauseRef string) {
	t.Helper()
	runc, err := exec.LookPath("runc")
	if err != nil {
		t.Log("runc is not installed (.ci/run installs it): no pod sandbox steps")
		return "", nil, ""
	}
	shimDir, pause := sandboxParts(t)
	img, err := imagebuild.Build(imagebuild.Spec{Files: []imagebuild.File{{Path: "/pause", Mode: 0o755, Data: pause}}, Entrypoint: []string{"/pause"}})
	if err != nil {
		t.Fatal(err)
	}
	ref := reg.PushImage(t, "pause", "3.10", img, user, pass).Ref
	var b strings.Builder
	fmt.Fprintf(&b, "[plugins.'io.containerd.cri.v1.images'.pinned_images]\n  sandbox = '%s'\n", ref)
	b.WriteString("[plugins.'io.containerd.cri.v1.runtime']\n  restrict_oom_score_adj = true\n")
	b.WriteString("  [plugins.'io.containerd.cri.v1.runtime'.cni]\n    conf_dir = '/nonexistent/b9-sandbox-test'\n")
	b.WriteString("  [plugins.'io.containerd.cri.v1.runtime'.containerd]\n    default_runtime_name = 'runc'\n")
	b.WriteString("    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]\n      runtime_type = 'io.containerd.runc.v2'\n")
	fmt.Fprintf(&b, "      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]\n        BinaryName = '%s'\n        SystemdCgroup = false\n", runc)
	return b.String(), []string{"PATH=" + shimDir + ":" + os.Getenv("PATH")}, ref
}

// runPod starts a host-network pod sandbox with annotations through
// containerd's CRI (as kubelet's RunPodSandbox would) and returns its id;
// the node's sandboxes are removed when the test ends, before containerd
// stops.
func (n *node) runPod(t *testing.T, namespace string, annotations map[string]string) string {
	t.Helper()
	cgroupParent := fmt.Sprintf("/b9sandbox-%d", time.Now().UnixNano())
	pod := map[string]any{
		"metadata":      map[string]string{"name": "sandbox", "namespace": namespace, "uid": fmt.Sprintf("uid-%d", time.Now().UnixNano())},
		"annotations":   annotations,
		"log_directory": filepath.Join(n.dir, "pods"),
		"linux": map[string]any{
			"security_context": map[string]any{"namespace_options": map[string]any{"network": 2}},
			// A parent of the test's own, removed at the end.
			"cgroup_parent": cgroupParent,
		},
	}
	b, _ := json.Marshal(pod)
	f := filepath.Join(n.dir, "sandbox-pod.json")
	if err := os.WriteFile(f, b, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// Every sandbox of this containerd (its own, under the test's dir),
		// then the cgroup folders runc leaves (cgroup v1 or v2).
		if !n.cd.exited() {
			n.crictl(n.containerd, "rmp", "--all", "--force")
		}
		dirs, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup", "*", cgroupParent))
		dirs = append(dirs, filepath.Join("/sys/fs/cgroup", cgroupParent))
		for _, d := range dirs {
			os.Remove(d)
		}
	})
	r := n.crictl(n.containerd, "runp", f)
	mustSucceed(t, r, "crictl runp")
	// stdout's last line is the id; crictl's warnings come before it.
	lines := strings.Fields(strings.TrimSpace(r.out))
	id := lines[len(lines)-1]
	return id
}
