package integration

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/beam-cloud/b9-resolver/internal/imagebuild"
	"github.com/beam-cloud/b9-resolver/internal/testutil/registrytest"
	"github.com/beam-cloud/b9-resolver/pkg/imagecreds"
)

// kubeletNodeName is the test kubelet's --hostname-override: static pods
// are named <manifest name>-<node name>.
const kubeletNodeName = "b9node"

// TestKubelet runs the product's real client: kubelet v1.34 standalone
// (static pods, hostNetwork, runc, cgroupfs) with its image service on the
// b9 socket and its runtime on containerd-b9's CRI. A pod with the
// annotation pulls and runs; a pod without it is refused with
// Unauthenticated (in kubelet's events); a sealed annotation pulls and runs
// in the namespace it was sealed for and is refused (PermissionDenied) in
// another; IfNotPresent on a present image
// costs no PullImage and Always one, which costs the registry one manifest
// request; kubelet reads ImageFsInfo through b9; containerd-b9 restarts
// (turning ensure_secret_pulled_images on) under running pods and kubelet
// carries on, each IfNotPresent pod of a secret-pulled image now checked
// by the registry; kubelet's image GC removes an unused image through
// b9's RemoveImage while ListImages through b9 marks the sandbox image
// pinned; with the registry stopped, a crashing IfNotPresent container
// whose pod's credential pulled the image restarts while pods with another
// credential or none are refused; no secret reaches kubelet's log at -v=4
// or b9's log lines.
// Every path is under the test's dir except the few kubelet hard-codes,
// which are removed; the sysctls kubelet sets are restored; no shim,
// container or cgroup outlives the test.
func TestKubelet(t *testing.T) {
	requireRoot(t)
	if _, err := exec.LookPath("runc"); err != nil {
		t.Fatal("runc not found on PATH: install Debian's runc (.ci/run does)")
	}
	guard := guardHost(t)
	kubelet := kubeletBinary(t)
	images := buildKubeImages(t)

	passA, admin := canary("alice"), canary("admin")
	reg := registrytest.Start(t, registrytest.WithTokenAuth(),
		registrytest.WithUser("alice", passA, "app/kube", "app/other", "app/gc", "app/ensure", "app/crash", "app/sealed"),
		registrytest.WithUser("admin", admin, "*"),
		// containerd's CRI pulls the sandbox image itself, anonymously.
		registrytest.WithAnonymousPull("pause"))
	refs := map[string]string{}
	for name, img := range images {
		repo, tag, _ := strings.Cut(name, ":")
		refs[name] = reg.PushImage(t, repo, tag, img, "admin", admin).Ref
	}
	alice := map[string]string{annKey: basicDoc(reg.Host, "alice", passA)}

	// runc with cgroupfs, the locally built sandbox image (pinned), no
	// CNI (hostNetwork pods only), b9's metrics on containerd's address.
	criConfig, criEnv, pauseRef := sandboxRuntime(t, reg, "admin", admin)
	metricsAddr := freeAddr(t)
	// The node's key for sealed annotations.
	idDir := shortTempDir(t)
	nodeID := writeIdentity(t, filepath.Join(idDir, "node.key"))
	n := newNode(t, nodeConfig{pullMode: "direct", extra: fmt.Sprintf("[metrics]\n  address = '%s'\n%s", metricsAddr, criConfig), env: criEnv,
		plugin: fmt.Sprintf("  [plugins.'io.containerd.grpc.v1.b9-resolver'.sealed]\n    identity_files = ['%s/*.key']\n", idDir)})
	guard.watchShims(n.containerd)
	k := startKubelet(t, n, kubelet)
	// Deferred, so it runs before the cleanups stop containerd (a restart
	// registers a new one): kubelet first, or it would start the pods
	// again, then every pod, which ends their shims and containers.
	defer func() {
		k.stop(t)
		guard.watchCgroups(removeAllPods(t, n)...)
	}()

	pulls := func(code string) float64 {
		_, fams := scrape(t, metricsAddr)
		return value(fams, "b9_resolver_grpc_calls_total", map[string]string{"method": "/runtime.v1.ImageService/PullImage", "code": code})
	}

	t.Run("pull and run", func(t *testing.T) {
		k.addPod(t, staticPod{name: "good", image: refs["app/kube:v1"], policy: "IfNotPresent", annotations: alice, marker: "good"})
		k.waitRunning(t, "good", 0)
		k.waitLog(t, "good", "kubeapp good started")
		if got := pulls("OK"); got != 1 {
			t.Errorf("PullImage OK = %v after the first pod, want 1", got)
		}
	})

	// The image GC check's image: used by a pod that then goes away, so
	// kubelet's image GC (imageMaximumGCAge) removes it at its first run
	// after start (kubelet runs image GC every 5 minutes).
	k.addPod(t, staticPod{name: "gc", image: refs["app/gc:v1"], policy: "IfNotPresent", annotations: alice, marker: "gc"})
	k.waitRunning(t, "gc", 0)
	k.removePod(t, "gc")

	t.Run("IfNotPresent and Always", func(t *testing.T) {
		before := pulls("OK")
		k.addPod(t, staticPod{name: "twin", image: refs["app/kube:v1"], policy: "IfNotPresent", annotations: alice, marker: "twin"})
		k.waitRunning(t, "twin", 0)
		if got := pulls("OK") - before; got != 0 {
			t.Errorf("IfNotPresent pod of a present image: %v PullImage calls, want 0", got)
		}
		reg.Reset()
		k.addPod(t, staticPod{name: "always", image: refs["app/kube:v1"], policy: "Always", annotations: alice, marker: "always"})
		k.waitRunning(t, "always", 0)
		if got := pulls("OK") - before; got != 1 {
			t.Errorf("Always pod of a present image: %v PullImage calls, want 1", got)
		}
		manifests, blobs := reg.Count(registrytest.Request.IsManifest), reg.Count(registrytest.Request.IsBlob)
		t.Logf("Always re-pull of a present image: %s", reg.Summary())
		if manifests != 1 || blobs != 0 {
			t.Errorf("Always re-pull: %d manifest and %d blob requests, want 1 and 0", manifests, blobs)
		}
	})

	t.Run("refused without the credential", func(t *testing.T) {
		k.addPod(t, staticPod{name: "nocred", image: refs["app/other:v1"], policy: "IfNotPresent", marker: "nocred"})
		line := k.waitLogLine(t, func(l string) bool {
			return strings.Contains(l, "nocred-"+kubeletNodeName) && strings.Contains(l, "code = Unauthenticated")
		}, time.Minute)
		t.Logf("kubelet: %s", trimLine(line, 400))
		if c := k.containers(t, "nocred"); len(c) != 0 {
			t.Errorf("a container of the refused pod exists: %+v", c)
		}
		if pulls("Unauthenticated") == 0 {
			t.Error("no PullImage answered Unauthenticated in b9's metrics")
		}
		k.removePod(t, "nocred")
	})

	// kubelet gives PullImage the pod's namespace (static pods: "default"):
	// a sealed annotation for it pulls and runs, the same credential sealed
	// for another namespace is refused.
	t.Run("sealed annotation", func(t *testing.T) {
		seal := func(ns string) map[string]string {
			v, err := imagecreds.Seal(basicDoc(reg.Host, "alice", passA), []string{nodeID.Recipient().String()}, ns, time.Now().Add(time.Hour))
			if err != nil {
				t.Fatal(err)
			}
			return map[string]string{annKey: v}
		}
		k.addPod(t, staticPod{name: "sealedns", image: refs["app/sealed:v1"], policy: "IfNotPresent", annotations: seal("team-b"), marker: "sealedns"})
		line := k.waitLogLine(t, func(l string) bool {
			return strings.Contains(l, "sealedns-"+kubeletNodeName) && strings.Contains(l, "code = PermissionDenied")
		}, time.Minute)
		if !strings.Contains(line, "sealed for another namespace than the pod's (default)") {
			t.Errorf("kubelet's line for the refused pod: %s", trimLine(line, 400))
		}
		k.removePod(t, "sealedns")
		k.addPod(t, staticPod{name: "sealed", image: refs["app/sealed:v1"], policy: "IfNotPresent", annotations: seal("default"), marker: "sealed"})
		k.waitRunning(t, "sealed", 0)
		k.waitLog(t, "sealed", "kubeapp sealed started")
		k.removePod(t, "sealed")
	})

	t.Run("ImageFsInfo through b9", func(t *testing.T) {
		waitFor(t, 2*time.Minute, "kubelet calling ImageFsInfo on the b9 socket", func() bool {
			_, fams := scrape(t, metricsAddr)
			return value(fams, "b9_resolver_grpc_calls_total", map[string]string{"method": "/runtime.v1.ImageService/ImageFsInfo", "code": "OK"}) > 0
		})
	})

	t.Run("containerd-b9 restart", func(t *testing.T) {
		running := k.containers(t, "good")
		// Restart with ensure_secret_pulled_images on: kubelet keeps its
		// pods, and an image a pod pulls from now on with its own
		// credential is checked by the registry for every next pod, even
		// IfNotPresent (the twin above cost no PullImage).
		setPluginOption(t, n, "ensure_secret_pulled_images = true")
		n.restartContainerd()
		waitFor(t, time.Minute, "containerd's CRI answering after the restart", func() bool {
			return n.crictl(n.containerd, "ps").err == nil
		})
		k.waitHealthy(t)
		after := k.containers(t, "good")
		if len(running) != 1 || len(after) != 1 || after[0].ID != running[0].ID || after[0].State != "CONTAINER_RUNNING" {
			t.Errorf("pod good's container across the restart: before %+v, after %+v", running, after)
		}
		before := pulls("OK")
		k.addPod(t, staticPod{name: "after", image: refs["app/ensure:v1"], policy: "IfNotPresent", annotations: alice, marker: "after"})
		k.waitRunning(t, "after", 0)
		reg.Reset()
		k.addPod(t, staticPod{name: "after-twin", image: refs["app/ensure:v1"], policy: "IfNotPresent", annotations: alice, marker: "after-twin"})
		k.waitRunning(t, "after-twin", 0)
		if got := pulls("OK") - before; got != 2 {
			t.Errorf("two IfNotPresent pods of an image pulled with a pod's credential under ensure_secret_pulled_images: %v PullImage calls, want 2", got)
		}
		if blobs := reg.Count(registrytest.Request.IsBlob); blobs != 0 {
			t.Errorf("the second pod's check fetched %d blobs, want none (the layers are on the node)", blobs)
		}
	})

	t.Run("image GC through b9", func(t *testing.T) {
		// kubelet's image GC by age does not need the filesystem stats
		// that cadvisor cannot read on every machine (it runs first); its
		// second run comes 5 minutes after kubelet started.
		waitForProc(t, k.p, time.Until(k.started.Add(kubeletImageGCPeriod+time.Minute)), "kubelet's image GC removing "+refs["app/gc:v1"],
			func() bool { return !k.imagePresent(t, refs["app/gc:v1"]) },
			func() string {
				return k.logLines(`eviction|[Gg]arbage|Removing image|unused images|threshold|ImageFs`, 40)
			})
		_, fams := scrape(t, metricsAddr)
		if v := value(fams, "b9_resolver_grpc_calls_total", map[string]string{"method": "/runtime.v1.ImageService/RemoveImage", "code": "OK"}); v == 0 {
			t.Error("the image went without a RemoveImage on the b9 socket")
		}
		// kubelet's GC skips what ListImages marks pinned: through the b9
		// socket the sandbox image is pinned and the others are not.
		r := n.crictl(n.b9, "images", "-o", "json")
		var list struct {
			Images []struct {
				RepoTags []string `json:"repoTags"`
				Pinned   bool     `json:"pinned"`
			} `json:"images"`
		}
		if r.err != nil || json.Unmarshal([]byte(r.out), &list) != nil {
			t.Fatalf("crictl images via b9: %v\n%s", r.err, r.out)
		}
		for _, img := range list.Images {
			if sandbox := slices.Contains(img.RepoTags, pauseRef); img.Pinned != sandbox {
				t.Errorf("ListImages via b9: %v pinned=%v, want %v", img.RepoTags, img.Pinned, sandbox)
			}
		}
		for _, ref := range []string{pauseRef, refs["app/kube:v1"]} {
			if !k.imagePresent(t, ref) {
				t.Errorf("GC removed %s (pinned sandbox image, or in use)", ref)
			}
		}
	})

	t.Run("registry outage with ensure_secret_pulled_images", func(t *testing.T) {
		// A crashing IfNotPresent container whose pod's credential pulled
		// the image restarts while the registry is down: the credential
		// is on the image's record. Another credential, or none, is still
		// refused.
		k.addPod(t, staticPod{name: "crash", image: refs["app/crash:v1"], policy: "IfNotPresent", annotations: alice, marker: "crash", exitAfter: 2 * time.Second})
		k.waitStarted(t, "crash", 1)
		reg.Stop()
		before := k.maxAttempt(t, "crash")
		okBefore := pulls("OK")
		k.waitStarted(t, "crash", before+2)
		if got := pulls("OK") - okBefore; got < 2 {
			t.Errorf("%v PullImage calls answered OK during the outage for two restarts, want 2 (one per restart)", got)
		}
		mallory := map[string]string{annKey: basicDoc(reg.Host, "mallory", canary("mallory"))}
		for name, ann := range map[string]map[string]string{"crash-nocred": nil, "crash-mallory": mallory} {
			k.addPod(t, staticPod{name: name, image: refs["app/crash:v1"], policy: "IfNotPresent", annotations: ann, marker: name})
			line := k.waitLogLine(t, func(l string) bool {
				return strings.Contains(l, name+"-"+kubeletNodeName) && strings.Contains(l, "ErrImagePull")
			}, time.Minute)
			t.Logf("%s: %s", name, trimLine(line, 300))
			if c := k.containers(t, name); len(c) != 0 {
				t.Errorf("pod %s started the image during the outage without the credential on its record: %+v", name, c)
			}
		}
	})

	k.stop(t)
	if text := k.logText(); strings.Contains(text, passA) || strings.Contains(text, admin) {
		t.Error("a secret canary is in kubelet's log at -v=4")
	}
	for _, line := range strings.Split(n.cd.logText(), "\n") {
		if strings.Contains(line, "b9-resolver") && (strings.Contains(line, passA) || strings.Contains(line, admin)) {
			t.Errorf("a secret canary is in a b9-resolver log line: %s", trimLine(strings.ReplaceAll(strings.ReplaceAll(line, passA, "<canary>"), admin, "<canary>"), 300))
		}
	}
}

func trimLine(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

// buildKubeImages builds testdata/kubeapp (static) and packs it into the
// images the pods run, which differ by one file, so each has its own
// digest.
func buildKubeImages(t *testing.T) map[string]v1.Image {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "kubeapp")
	cmd := exec.Command("go", "build", "-trimpath", "-o", bin, "./integration/testdata/kubeapp")
	cmd.Dir = moduleRoot
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build kubeapp: %v\n%s", err, out)
	}
	prog, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]v1.Image{}
	build := func(name string, spec imagebuild.Spec) {
		img, err := imagebuild.Build(spec)
		if err != nil {
			t.Fatalf("image %s: %v", name, err)
		}
		out[name] = img
	}
	for _, name := range []string{"app/kube:v1", "app/other:v1", "app/gc:v1", "app/ensure:v1", "app/crash:v1", "app/sealed:v1"} {
		build(name, imagebuild.Spec{Files: []imagebuild.File{
			{Path: "/app", Mode: 0o755, Data: prog},
			{Path: "/etc/image-name", Mode: 0o644, Data: []byte(name + "\n")},
		}, Entrypoint: []string{"/app"}})
	}
	return out
}

// setPluginOption adds a line to the b9-resolver table of n's config (for
// the next restart).
func setPluginOption(t *testing.T, n *node, line string) {
	t.Helper()
	b, err := os.ReadFile(n.config)
	if err != nil {
		t.Fatal(err)
	}
	const table = "[plugins.'io.containerd.grpc.v1.b9-resolver']\n"
	s := strings.Replace(string(b), table, table+"  "+line+"\n", 1)
	if s == string(b) {
		t.Fatalf("no b9-resolver table in %s", n.config)
	}
	if err := os.WriteFile(n.config, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
}

// removeAllPods stops and removes every pod sandbox in containerd (their
// shims exit with them), before containerd itself stops, and returns the
// ids of the pods and containers it removed. containerd may still be
// starting its CRI (a test that failed right after a restart).
func removeAllPods(t *testing.T, n *node) []string {
	if n.cd.exited() {
		return nil
	}
	var ids []string
	for _, list := range [][]string{{"pods", "-q"}, {"ps", "-a", "-q"}} {
		if r := n.crictl(n.containerd, list...); r.err == nil {
			ids = append(ids, strings.Fields(r.out)...)
		}
	}
	var r crictlResult
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(time.Second) {
		if r = n.crictl(n.containerd, "rmp", "--all", "--force"); r.err == nil {
			return ids
		}
	}
	t.Errorf("removing the pods: crictl rmp --all --force: %v\n%s", r.err, r.out)
	return ids
}

// kubeletImageGCPeriod is how often kubelet runs image GC (compiled in);
// the first run, at start, finds nothing old enough.
const kubeletImageGCPeriod = 5 * time.Minute

// kubeletRun is a kubelet under n's dir.
type kubeletRun struct {
	n         *node
	bin       string
	dir       string
	manifests string
	healthz   string
	p         *proc
	started   time.Time
}

func startKubelet(t *testing.T, n *node, bin string) *kubeletRun {
	t.Helper()
	dir := filepath.Join(n.dir, "kubelet")
	k := &kubeletRun{n: n, bin: bin, dir: dir, manifests: filepath.Join(dir, "manifests")}
	for _, d := range []string{k.manifests, filepath.Join(dir, "root")} {
		if err := os.MkdirAll(d, 0o750); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "resolv.conf"), []byte("nameserver 127.0.0.1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	k.start(t)
	return k
}

func (k *kubeletRun) start(t *testing.T) {
	t.Helper()
	k.healthz = freeAddr(t)
	hzHost, hzPort, _ := net.SplitHostPort(k.healthz)
	_, port, _ := net.SplitHostPort(freeAddr(t))
	hp, _ := strconv.Atoi(hzPort)
	pp, _ := strconv.Atoi(port)
	cfg := map[string]any{
		"apiVersion":               "kubelet.config.k8s.io/v1beta1",
		"kind":                     "KubeletConfiguration",
		"containerRuntimeEndpoint": "unix://" + k.n.containerd,
		"imageServiceEndpoint":     "unix://" + k.n.b9,
		"staticPodPath":            k.manifests,
		"fileCheckFrequency":       "1s",
		"syncFrequency":            "5s",
		"podLogsDir":               filepath.Join(k.dir, "pod-logs"),
		"address":                  "127.0.0.1",
		"port":                     pp,
		"readOnlyPort":             0,
		"healthzBindAddress":       hzHost,
		"healthzPort":              hp,
		"authentication":           map[string]any{"anonymous": map[string]any{"enabled": false}, "webhook": map[string]any{"enabled": false}},
		"authorization":            map[string]any{"mode": "AlwaysAllow"},
		"cgroupDriver":             "cgroupfs",
		// No QoS hierarchy (kubepods/...) on the host: containerd puts
		// each pod's cgroup at /k8s.io/<id>, removed with the pod.
		"cgroupsPerQOS":          false,
		"enforceNodeAllocatable": []string{"none"},
		"failSwapOn":             false,
		"resolvConf":             filepath.Join(k.dir, "resolv.conf"),
		// A crashing container restarts within 2 s, not after kubelet's
		// 10 s to 5 min back-off.
		"featureGates":     map[string]bool{"KubeletCrashLoopBackOffMax": true},
		"crashLoopBackOff": map[string]any{"maxContainerRestartPeriod": "2s"},
		// Image GC by age: an image no container uses for 30 s goes at
		// the next GC run. Disk-based GC and eviction need filesystem
		// stats cadvisor cannot read on every machine (a VM's virtio
		// disk): they stay at their defaults.
		"imageMinimumGCAge":             "1s",
		"imageMaximumGCAge":             "30s",
		"localStorageCapacityIsolation": false,
		"containerLogMaxSize":           "1Mi",
		"serializeImagePulls":           true,
		"registerNode":                  false,
	}
	b, _ := json.MarshalIndent(cfg, "", "  ")
	cfgPath := filepath.Join(k.dir, "config.json")
	if err := os.WriteFile(cfgPath, b, 0o600); err != nil {
		t.Fatal(err)
	}
	root := filepath.Join(k.dir, "root")
	k.started = time.Now()
	k.p = startProc(t, "kubelet", filepath.Join(k.dir, "kubelet.log"), k.bin,
		"--config", cfgPath, "--root-dir", root, "--cert-dir", filepath.Join(root, "pki"),
		"--hostname-override", kubeletNodeName, "-v", "4")
	k.waitHealthy(t)
}

func (k *kubeletRun) stop(t *testing.T) {
	if k != nil && k.p != nil {
		k.p.stop(t)
	}
}

func (k *kubeletRun) logText() string { return k.p.logText() }

// waitHealthy waits for kubelet's /healthz (which includes PLEG: the
// runtime answers relists).
func (k *kubeletRun) waitHealthy(t *testing.T) {
	t.Helper()
	waitForProc(t, k.p, 2*time.Minute, "kubelet /healthz ok", func() bool {
		resp, err := http.Get("http://" + k.healthz + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
}

// staticPod is one manifest in kubelet's static pod folder.
type staticPod struct {
	name, image, policy string
	annotations         map[string]string
	marker              string
	// exitAfter makes the container exit (code 1) after that long.
	exitAfter time.Duration
}

func (k *kubeletRun) addPod(t *testing.T, p staticPod) {
	t.Helper()
	args := []string{"-marker", p.marker}
	if p.exitAfter > 0 {
		args = append(args, "-exit-after", p.exitAfter.String())
	}
	pod := map[string]any{
		"apiVersion": "v1",
		"kind":       "Pod",
		"metadata":   map[string]any{"name": p.name, "namespace": "default", "annotations": p.annotations},
		"spec": map[string]any{
			"hostNetwork":                   true,
			"restartPolicy":                 "Always",
			"terminationGracePeriodSeconds": 2,
			"containers": []any{map[string]any{
				"name": "app", "image": p.image, "imagePullPolicy": p.policy, "args": args,
			}},
		},
	}
	b, _ := json.Marshal(pod)
	tmp := filepath.Join(k.dir, "."+p.name+".json")
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		t.Fatal(err)
	}
	// Renamed in, so kubelet never reads half a manifest.
	if err := os.Rename(tmp, filepath.Join(k.manifests, p.name+".json")); err != nil {
		t.Fatal(err)
	}
}

func (k *kubeletRun) removePod(t *testing.T, name string) {
	t.Helper()
	if err := os.Remove(filepath.Join(k.manifests, name+".json")); err != nil {
		t.Fatal(err)
	}
}

// imagePresent reports whether containerd's CRI has ref.
func (k *kubeletRun) imagePresent(t *testing.T, ref string) bool {
	t.Helper()
	r := k.n.crictl(k.n.containerd, "inspecti", ref)
	if r.err != nil && !strings.Contains(r.out, "no such image") {
		t.Fatalf("crictl inspecti %s: %v\n%s", ref, r.err, r.out)
	}
	return r.err == nil
}

// container is what crictl ps says of one container.
type container struct {
	ID      string
	State   string
	Attempt int
}

// containers lists the containers of static pod name, through
// containerd's CRI.
func (k *kubeletRun) containers(t *testing.T, name string) []container {
	t.Helper()
	r := k.n.crictl(k.n.containerd, "ps", "-a", "-o", "json", "--label", "io.kubernetes.pod.name="+name+"-"+kubeletNodeName)
	if r.err != nil {
		t.Fatalf("crictl ps: %v\n%s", r.err, r.out)
	}
	var out struct {
		Containers []struct {
			ID       string `json:"id"`
			State    string `json:"state"`
			Metadata struct {
				Attempt int `json:"attempt"`
			} `json:"metadata"`
		} `json:"containers"`
	}
	if err := json.Unmarshal([]byte(r.out), &out); err != nil {
		t.Fatalf("crictl ps -o json: %v\n%s", err, r.out)
	}
	var cs []container
	for _, c := range out.Containers {
		cs = append(cs, container{ID: c.ID, State: c.State, Attempt: c.Metadata.Attempt})
	}
	return cs
}

// waitRunning waits until pod name has a running container of attempt
// minAttempt or later.
func (k *kubeletRun) waitRunning(t *testing.T, name string, minAttempt int) {
	t.Helper()
	waitForProc(t, k.p, 2*time.Minute, "pod "+name+" running", func() bool {
		for _, c := range k.containers(t, name) {
			if c.State == "CONTAINER_RUNNING" && c.Attempt >= minAttempt {
				return true
			}
		}
		return false
	})
}

// maxAttempt is the highest container attempt of pod name (-1: none).
func (k *kubeletRun) maxAttempt(t *testing.T, name string) int {
	t.Helper()
	m := -1
	for _, c := range k.containers(t, name) {
		m = max(m, c.Attempt)
	}
	return m
}

// waitStarted waits until pod name has a container of attempt at least
// attempt (kubelet created it, running or already exited).
func (k *kubeletRun) waitStarted(t *testing.T, name string, attempt int) {
	t.Helper()
	waitForProc(t, k.p, 2*time.Minute, fmt.Sprintf("pod %s's container attempt %d", name, attempt), func() bool {
		return k.maxAttempt(t, name) >= attempt
	}, func() string { return k.logLines(name+"-"+kubeletNodeName, 20) })
}

// waitLog waits for text in the container log of pod name.
func (k *kubeletRun) waitLog(t *testing.T, name, text string) {
	t.Helper()
	waitForProc(t, k.p, time.Minute, fmt.Sprintf("%q in pod %s's log", text, name), func() bool {
		files, _ := filepath.Glob(filepath.Join(k.dir, "pod-logs", "default_"+name+"-"+kubeletNodeName+"_*", "app", "*.log"))
		for _, f := range files {
			if b, err := os.ReadFile(f); err == nil && strings.Contains(string(b), text) {
				return true
			}
		}
		return false
	})
}

// waitLogLine waits for a kubelet log line match accepts and returns it.
func (k *kubeletRun) waitLogLine(t *testing.T, match func(string) bool, timeout time.Duration) string {
	t.Helper()
	var found string
	waitForProc(t, k.p, timeout, "a matching kubelet log line", func() bool {
		f, err := os.Open(k.p.log)
		if err != nil {
			return false
		}
		defer f.Close()
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			if match(sc.Text()) {
				found = sc.Text()
				return true
			}
		}
		return false
	})
	return found
}

func waitFor(t *testing.T, timeout time.Duration, what string, ok func() bool) {
	t.Helper()
	waitForProc(t, nil, timeout, what, ok)
}

// logLines returns the last n lines of kubelet's log that match pattern.
func (k *kubeletRun) logLines(pattern string, n int) string {
	re := regexp.MustCompile(pattern)
	var out []string
	for _, l := range strings.Split(k.logText(), "\n") {
		if re.MatchString(l) {
			out = append(out, trimLine(l, 300))
		}
	}
	return tail(strings.Join(out, "\n"), n)
}

// waitForProc polls ok until it holds; it fails the test after timeout or
// when p (if any) exits, with the end of p's log, or what explain says
// instead.
func waitForProc(t *testing.T, p *proc, timeout time.Duration, what string, ok func() bool, explain ...func() string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for {
		if ok() {
			return
		}
		if p != nil && p.exited() {
			t.Fatalf("waiting for %s: %s exited (%v):\n%s", what, p.name, p.err, tail(p.logText(), 40))
		}
		select {
		case <-ctx.Done():
			msg := fmt.Sprintf("timed out after %s waiting for %s", timeout, what)
			switch {
			case len(explain) > 0:
				msg += ":\n" + explain[0]()
			case p != nil:
				msg += ":\n" + tail(p.logText(), 40)
			}
			t.Fatal(msg)
		case <-time.After(250 * time.Millisecond):
		}
	}
}
