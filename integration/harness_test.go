package integration

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
)

// Versions and paths the harness uses.
const (
	crictlModule = "sigs.k8s.io/cri-tools/cmd/crictl@v1.34.0"
	annKey       = "b9.beam.cloud/image-credentials"
)

var (
	buildOnce                 sync.Once
	buildErr                  error
	containerdBin, crictlBin  string
	moduleRoot                string
	buildDuration, crictlTime time.Duration
)

// requireRoot skips t when not root: containerd needs root for its
// snapshotter mounts and for chown/chmod of its state.
func requireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("integration tests need root (they run containerd-b9 with the native snapshotter); run `sudo make test` or `sudo go test ./integration`")
	}
}

// binaries builds (or finds) containerd-b9 and crictl once per run.
func binaries(t testing.TB) {
	t.Helper()
	requireRoot(t)
	buildOnce.Do(func() { buildErr = build() })
	if buildErr != nil {
		t.Fatalf("building the test binaries: %v", buildErr)
	}
}

func build() error {
	root, err := filepath.Abs("..")
	if err != nil {
		return err
	}
	moduleRoot = root
	containerdBin = os.Getenv("B9_CONTAINERD_BIN")
	if containerdBin == "" {
		containerdBin = filepath.Join(root, "bin", "containerd-b9")
		if !fresh(containerdBin, root) {
			start := time.Now()
			cmd := exec.Command("go", "build", "-o", containerdBin, "./cmd/containerd-b9")
			cmd.Dir = root
			cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
			if out, err := cmd.CombinedOutput(); err != nil {
				return fmt.Errorf("go build ./cmd/containerd-b9: %v\n%s", err, out)
			}
			buildDuration = time.Since(start)
		}
	}
	crictlBin = os.Getenv("B9_CRICTL")
	if crictlBin == "" {
		gobin := filepath.Join(root, ".cache", "bin")
		crictlBin = filepath.Join(gobin, "crictl")
		if _, err := os.Stat(crictlBin); err != nil {
			start := time.Now()
			cmd := exec.Command("go", "install", crictlModule)
			cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOBIN="+gobin, "GOFLAGS=-mod=mod")
			cmd.Dir = os.TempDir() // outside our module: install the tool's own go.mod
			if out, err := cmd.CombinedOutput(); err != nil {
				return fmt.Errorf("go install %s: %v\n%s", crictlModule, err, out)
			}
			crictlTime = time.Since(start)
		}
	}
	return nil
}

// fresh reports whether bin is newer than every non-test Go file (and
// go.mod/go.sum) it could be built from.
func fresh(bin, root string) bool {
	fi, err := os.Stat(bin)
	if err != nil {
		return false
	}
	stale := false
	_ = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || stale {
			return filepath.SkipDir
		}
		name := d.Name()
		if d.IsDir() {
			if name == ".git" || name == ".cache" || name == "bin" || name == "integration" || name == "testdata" {
				return filepath.SkipDir
			}
			return nil
		}
		if (strings.HasSuffix(name, ".go") && !strings.HasSuffix(name, "_test.go")) || name == "go.mod" || name == "go.sum" {
			if info, err := d.Info(); err == nil && info.ModTime().After(fi.ModTime()) {
				stale = true
			}
		}
		return nil
	})
	return !stale
}

// shortTempDir is a temp dir short enough for unix socket paths.
func shortTempDir(t testing.TB) string {
	t.Helper()
	d, err := os.MkdirTemp("", "b9i")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// containerd may leave bind mounts behind if killed; unmount first.
		unmountUnder(d)
		os.RemoveAll(d)
	})
	return d
}

func unmountUnder(dir string) {
	b, err := os.ReadFile("/proc/self/mounts")
	if err != nil {
		return
	}
	lines := strings.Split(string(b), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		f := strings.Fields(lines[i])
		if len(f) > 1 && strings.HasPrefix(f[1], dir+"/") {
			_ = syscall.Unmount(f[1], syscall.MNT_DETACH)
		}
	}
}

// proc is a daemon the test started, in its own process group.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
	err  error
}

func startProc(t testing.TB, name, logPath string, args ...string) *proc {
	t.Helper()
	return startProcEnv(t, name, logPath, nil, args...)
}

// startProcEnv is startProc with extra environment variables.
func startProcEnv(t testing.TB, name, logPath string, env []string, args ...string) *proc {
	t.Helper()
	lf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = lf, lf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		lf.Close()
		t.Fatalf("start %s: %v", name, err)
	}
	p := &proc{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		lf.Close()
		close(p.done)
	}()
	t.Cleanup(func() { p.stop(t) })
	return p
}

// stop sends SIGTERM to the process group, then SIGKILL after 15 s.
func (p *proc) stop(t testing.TB) {
	select {
	case <-p.done:
		return
	default:
	}
	pgid := p.cmd.Process.Pid
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(15 * time.Second):
		t.Logf("%s did not stop on SIGTERM; killing", p.name)
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		<-p.done
	}
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

func (p *proc) logText() string {
	b, _ := os.ReadFile(p.log)
	return string(b)
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// waitSocket waits until addr accepts connections or p exits.
func waitSocket(t testing.TB, p *proc, addr string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if c, err := net.DialTimeout("unix", addr, time.Second); err == nil {
			c.Close()
			return
		}
		if p.exited() {
			t.Fatalf("%s exited before serving %s (%v):\n%s", p.name, addr, p.err, tail(p.logText(), 40))
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s: %s not serving after %s:\n%s", p.name, addr, timeout, tail(p.logText(), 40))
}

// node is containerd-b9 under a temp dir, optionally with a standalone
// b9 daemon next to it.
type node struct {
	t          testing.TB
	dir        string
	config     string
	containerd string // containerd's socket
	b9         string // the plugin's socket
	cd         *proc
	standalone *proc
	standAddr  string
	env        []string
	logLevel   string
	withoutB9  bool
	debug      bool
	// outputs collects everything crictl printed, for the secret check.
	mu      sync.Mutex
	outputs []string
}

// nodeConfig is the plugin table's extra lines and the node's options.
type nodeConfig struct {
	pullMode string
	// plugin holds extra TOML lines for the plugin table.
	plugin string
	// extra is appended to the config (other tables).
	extra string
	// env is added to the daemons' environment (cloud endpoint overrides).
	env []string
	// snapshotter is CRI's (and so b9's) snapshotter; "native" if empty.
	snapshotter string
	// criDefaults leaves CRI's disable_snapshot_annotations at its default
	// (true: CRI pulls through the transfer service), as on a stock node.
	criDefaults bool
	// withoutB9 disables the b9 plugin: the same binary, plugin-less.
	withoutB9 bool
	// logLevel is containerd's; "debug" if empty.
	logLevel string
	// debug serves containerd's debug endpoint (pprof) on <dir>/debug.sock.
	debug bool
}

func newNode(t testing.TB, nc nodeConfig) *node {
	t.Helper()
	binaries(t)
	dir := shortTempDir(t)
	n := &node{t: t, dir: dir, config: filepath.Join(dir, "config.toml"),
		containerd: filepath.Join(dir, "containerd.sock"), b9: filepath.Join(dir, "b9", "b9.sock"), env: nc.env}
	if nc.pullMode == "" {
		nc.pullMode = "direct"
	}
	if nc.snapshotter == "" {
		nc.snapshotter = "native"
	}
	n.logLevel, n.withoutB9, n.debug = cmp.Or(nc.logLevel, "debug"), nc.withoutB9, nc.debug
	disabled := "'io.containerd.nri.v1.nri'"
	if nc.withoutB9 {
		disabled += ", 'io.containerd.grpc.v1.b9-resolver'"
	}
	annotations := `
  # Snapshot labels for remote snapshotters (CLIP), which b9's direct
  # pulls follow as CRI's own do.
  disable_snapshot_annotations = false`
	if nc.criDefaults {
		annotations = ""
	}
	if nc.debug {
		nc.extra += fmt.Sprintf("\n[debug]\n  address = '%s'\n", filepath.Join(dir, "debug.sock"))
	}
	if err := os.MkdirAll(filepath.Join(dir, "certs.d"), 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := fmt.Sprintf(`version = 3
root = '%[1]s/root'
state = '%[1]s/state'
# NRI would share /var/run/nri with other daemons; these tests need none.
disabled_plugins = [%[5]s]

[grpc]
  address = '%[1]s/containerd.sock'
[ttrpc]
  address = '%[1]s/containerd.sock.ttrpc'

[plugins.'io.containerd.internal.v1.opt']
  path = '%[1]s/opt'
[plugins.'io.containerd.cri.v1.images']
  snapshotter = '%[6]s'%[7]s
  [plugins.'io.containerd.cri.v1.images'.registry]
    config_path = '%[1]s/certs.d'
[[plugins.'io.containerd.transfer.v1.local'.unpack_config]]
  platform = 'linux/amd64'
  snapshotter = '%[6]s'
  differ = 'walking'

# Direct pulls follow CRI's snapshotter above: no override here.
[plugins.'io.containerd.grpc.v1.b9-resolver']
  address = '%[1]s/b9/b9.sock'
  pull_mode = '%[2]s'
  config_path = '%[1]s/certs.d'
%[3]s
%[4]s
`, dir, nc.pullMode, nc.plugin, nc.extra, disabled, nc.snapshotter, annotations)
	if err := os.WriteFile(n.config, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	// crictl insists on a config file; an empty one keeps /etc/crictl.yaml out.
	if err := os.WriteFile(filepath.Join(dir, "crictl.yaml"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	n.startContainerd()
	return n
}

// startContainerd starts containerd-b9 and waits for both sockets.
func (n *node) startContainerd() {
	n.t.Helper()
	n.cd = startProcEnv(n.t, "containerd-b9", filepath.Join(n.dir, "containerd.log"), n.env,
		containerdBin, "--config", n.config, "--log-level", n.logLevel)
	waitSocket(n.t, n.cd, n.containerd, 60*time.Second)
	if !n.withoutB9 {
		waitSocket(n.t, n.cd, n.b9, 30*time.Second)
	}
}

func (n *node) restartContainerd() {
	n.t.Helper()
	n.cd.stop(n.t)
	n.startContainerd()
}

// startStandalone runs `containerd-b9 standalone` on its own socket with
// the same config file, in pull mode mode, with more flags.
func (n *node) startStandalone(mode string, flags ...string) {
	n.t.Helper()
	n.standAddr, n.standalone = n.startStandaloneNamed("standalone", mode, flags...)
}

// startStandaloneNamed starts a standalone daemon next to n's containerd
// with its socket, log and debug socket under <dir>/<name>: more than one
// may run at once (the benchmark runs one per pull mode).
func (n *node) startStandaloneNamed(name, mode string, flags ...string) (string, *proc) {
	n.t.Helper()
	addr := filepath.Join(n.dir, name, "b9.sock")
	// The standalone daemon logs at containerd's level, and serves its
	// profiler on <dir>/<name>-debug.sock when containerd serves its own.
	args := []string{containerdBin, "standalone", "--config", n.config, "--containerd-address", n.containerd,
		"--address", addr, "--pull-mode", mode, "--log-level", n.logLevel}
	if n.debug {
		args = append(args, "--debug-address", filepath.Join(n.dir, name+"-debug.sock"))
	}
	p := startProcEnv(n.t, name, filepath.Join(n.dir, name+".log"), n.env, append(args, flags...)...)
	waitSocket(n.t, p, addr, 30*time.Second)
	return addr, p
}

func (n *node) restartStandalone(mode string) {
	n.t.Helper()
	n.standalone.stop(n.t)
	n.startStandalone(mode)
}

// crictlResult is one crictl run.
type crictlResult struct {
	out  string
	err  error
	code string // gRPC code name from the error text, "" on success
}

var codeRE = regexp.MustCompile(`code = (\w+)`)

// crictl runs crictl with the runtime endpoint at containerd and the
// image endpoint at imageSock.
func (n *node) crictl(imageSock string, args ...string) crictlResult {
	n.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	full := append([]string{
		"--config", filepath.Join(n.dir, "crictl.yaml"),
		"--runtime-endpoint", "unix://" + n.containerd,
		"--image-endpoint", "unix://" + imageSock,
		"--timeout", "30s",
	}, args...)
	cmd := exec.CommandContext(ctx, crictlBin, full...)
	var buf bytes.Buffer
	cmd.Stdout, cmd.Stderr = &buf, &buf
	err := cmd.Run()
	r := crictlResult{out: buf.String(), err: err}
	if err != nil {
		r.code = "Unknown"
		if m := codeRE.FindStringSubmatch(r.out); m != nil {
			r.code = m[1]
		}
	}
	n.mu.Lock()
	n.outputs = append(n.outputs, r.out)
	n.mu.Unlock()
	return r
}

// pull runs `crictl pull --pod-config` with the given annotations.
func (n *node) pull(imageSock, image string, annotations map[string]string, extra ...string) crictlResult {
	n.t.Helper()
	return n.pullAs(imageSock, image, podMeta{}, annotations, extra...)
}

// podMeta is a sandbox config's metadata; zero fields get defaults.
type podMeta struct{ namespace, name, uid string }

// pullAs is pull for a pod with the given metadata.
func (n *node) pullAs(imageSock, image string, meta podMeta, annotations map[string]string, extra ...string) crictlResult {
	n.t.Helper()
	if meta.namespace == "" {
		meta.namespace = "default"
	}
	if meta.name == "" {
		meta.name = "p"
	}
	if meta.uid == "" {
		meta.uid = fmt.Sprintf("uid-%d", time.Now().UnixNano())
	}
	pod := map[string]any{
		"metadata":    map[string]string{"name": meta.name, "namespace": meta.namespace, "uid": meta.uid},
		"annotations": annotations,
	}
	b, _ := json.Marshal(pod)
	f, err := os.CreateTemp(n.dir, "pod-*.json")
	if err != nil {
		n.t.Fatal(err)
	}
	f.Write(b)
	f.Close()
	defer os.Remove(f.Name())
	args := append([]string{"pull", "--pod-config", f.Name()}, extra...)
	return n.crictl(imageSock, append(args, image)...)
}

// listedByCRI reports whether containerd's own CRI lists ref.
func (n *node) listedByCRI(ref string) bool {
	n.t.Helper()
	r := n.crictl(n.containerd, "images", "-o", "json")
	if r.err != nil {
		n.t.Fatalf("crictl images: %v\n%s", r.err, r.out)
	}
	var out struct {
		Images []struct {
			ID       string   `json:"id"`
			RepoTags []string `json:"repoTags"`
		} `json:"images"`
	}
	if err := json.Unmarshal([]byte(r.out), &out); err != nil {
		n.t.Fatalf("crictl images -o json: %v\n%s", err, r.out)
	}
	for _, img := range out.Images {
		for _, tag := range img.RepoTags {
			if tag == ref {
				return true
			}
		}
	}
	return false
}

// assertNoSecrets fails if any canary appears in containerd's log, the
// standalone daemon's log or anything crictl printed.
func (n *node) assertNoSecrets(canaries ...string) {
	n.t.Helper()
	texts := map[string]string{"containerd.log": n.cd.logText()}
	if n.standalone != nil {
		texts["standalone.log"] = n.standalone.logText()
	}
	n.mu.Lock()
	texts["crictl output"] = strings.Join(n.outputs, "\n")
	n.mu.Unlock()
	for name, text := range texts {
		for _, c := range canaries {
			if strings.Contains(text, c) {
				i := strings.Index(text, c)
				lo := max(0, i-200)
				n.t.Errorf("secret canary found in %s: ...%s...", name, strings.ReplaceAll(text[lo:i], "\n", " | "))
			}
		}
	}
}

func mustSucceed(t testing.TB, r crictlResult, what string) {
	t.Helper()
	if r.err != nil {
		t.Fatalf("%s: %v\n%s", what, r.err, r.out)
	}
}

func wantCode(t testing.TB, r crictlResult, what string, codes ...string) {
	t.Helper()
	if r.err == nil {
		t.Fatalf("%s: succeeded, want %v", what, codes)
	}
	for _, c := range codes {
		if r.code == c {
			return
		}
	}
	t.Fatalf("%s: code %s, want %v:\n%s", what, r.code, codes, r.out)
}

func init() {
	// The in-process registries log every request through logrus'
	// standard logger; the tests print what matters themselves.
	logrus.SetOutput(io.Discard)
}
