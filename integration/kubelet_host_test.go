package integration

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// kubeletSysctls are the kernel settings kubelet changes at start when
// protectKernelDefaults is off (pkg/kubelet/cm setupKernelTunables). The
// test puts each back.
var kubeletSysctls = []string{
	"vm/overcommit_memory", "vm/panic_on_oom", "kernel/panic", "kernel/panic_on_oops",
	"kernel/keys/root_maxkeys", "kernel/keys/root_maxbytes",
}

// kubeletHostPaths are what kubelet writes outside its --root-dir whatever
// it is configured with: the device-plugin socket folder and the
// container-log symlink folder are compiled in.
var kubeletHostPaths = []string{"/var/lib/kubelet", "/var/lib/kubelet/device-plugins", "/var/log/containers"}

// containerCgroupParent is where containerd's CRI puts pod cgroups when
// kubelet names no parent (cgroupsPerQOS off): /k8s.io/<id> in every
// hierarchy.
const containerCgroupParent = "/k8s.io"

// hostGuard remembers the host state a kubelet run may change and puts it
// back: sysctls, folders and files outside the test's dir, the shims (and
// their containers) of the test's containerd, and the cgroups they made.
type hostGuard struct {
	t *testing.T
	// shimAddress is the test containerd's socket: its shims carry it as
	// -address, which tells them from any other containerd's.
	shimAddress string
	sysctls     map[string]string
	// existed: path → entries it held (nil when it did not exist).
	existed map[string]map[string]bool
	// cgroups: the folders under containerCgroupParent in each hierarchy
	// before the test.
	cgroups map[string]bool
	// sandboxes are the ids of the test's pods and containers (their
	// cgroups are containerCgroupParent/<id>; other tests on the machine
	// may have theirs there too).
	sandboxes []string
}

// guardHost snapshots the host and registers the restore; call it before
// starting anything, so the restore runs after everything has stopped.
// It skips when a kubelet already runs on this machine.
func guardHost(t *testing.T) *hostGuard {
	t.Helper()
	if _, err := os.Stat("/var/lib/kubelet/device-plugins/kubelet.sock"); err == nil {
		t.Skip("a kubelet runs on this machine (/var/lib/kubelet/device-plugins/kubelet.sock exists); the kubelet test would share its host paths")
	}
	g := &hostGuard{t: t, sysctls: map[string]string{}, existed: map[string]map[string]bool{}}
	for _, s := range kubeletSysctls {
		if b, err := os.ReadFile(filepath.Join("/proc/sys", s)); err == nil {
			g.sysctls[s] = strings.TrimSpace(string(b))
		}
	}
	for _, p := range kubeletHostPaths {
		g.existed[p] = nil
		if ents, err := os.ReadDir(p); err == nil {
			g.existed[p] = map[string]bool{}
			for _, e := range ents {
				g.existed[p][e.Name()] = true
			}
		}
	}
	g.cgroups = cgroupDirs(containerCgroupParent)
	t.Cleanup(g.restore)
	return g
}

// watchShims names the test containerd's socket, whose shims restore
// kills if any outlive the test's own cleanup.
func (g *hostGuard) watchShims(containerdAddress string) { g.shimAddress = containerdAddress }

// watchCgroups adds pod and container ids whose cgroups must be gone.
func (g *hostGuard) watchCgroups(ids ...string) { g.sandboxes = append(g.sandboxes, ids...) }

func (g *hostGuard) restore() {
	t := g.t
	// Shims the pod removal missed, with their containers (their
	// children): a leak, but not one to leave running.
	if g.shimAddress != "" {
		for _, shim := range shimsOf(g.shimAddress) {
			for _, pid := range append(childrenOf(shim), shim) {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
			t.Errorf("host cleanup: shim %d of the test's containerd outlived it; killed it and its containers", shim)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	var left []string
	for d := range cgroupDirs(containerCgroupParent) {
		if g.cgroups[d] || !slices.Contains(g.sandboxes, filepath.Base(d)) {
			continue
		}
		for syscall.Rmdir(d) == syscall.EBUSY && time.Now().Before(deadline) {
			time.Sleep(100 * time.Millisecond)
		}
		if _, err := os.Stat(d); err == nil {
			left = append(left, d)
		}
	}
	if len(left) > 0 {
		t.Errorf("host cleanup: cgroups of the test's pods left behind: %v", left)
	}
	// The parent folder, if the test made it and nothing else uses it.
	for d := range cgroupDirs(containerCgroupParent) {
		if !g.cgroups[d] && filepath.Base(d) == filepath.Base(containerCgroupParent) {
			_ = syscall.Rmdir(d)
		}
	}

	for s, old := range g.sysctls {
		p := filepath.Join("/proc/sys", s)
		b, err := os.ReadFile(p)
		if err != nil || strings.TrimSpace(string(b)) == old {
			continue
		}
		if err := os.WriteFile(p, []byte(old), 0o644); err != nil {
			t.Errorf("host cleanup: restoring %s to %s: %v", s, old, err)
			continue
		}
		t.Logf("host cleanup: %s restored to %s (kubelet set %s)", strings.ReplaceAll(s, "/", "."), old, strings.TrimSpace(string(b)))
	}

	// Paths, deepest first: remove what the run added; a folder that did
	// not exist goes entirely.
	paths := append([]string(nil), kubeletHostPaths...)
	sort.Sort(sort.Reverse(sort.StringSlice(paths)))
	for _, p := range paths {
		before := g.existed[p]
		if before == nil {
			if err := os.RemoveAll(p); err != nil {
				t.Errorf("host cleanup: %v", err)
			}
			continue
		}
		ents, _ := os.ReadDir(p)
		for _, e := range ents {
			if !before[e.Name()] {
				if err := os.RemoveAll(filepath.Join(p, e.Name())); err != nil {
					t.Errorf("host cleanup: %v", err)
				}
			}
		}
	}
}

// cgroupDirs lists the folders named root (a cgroup path) and below in
// every cgroup hierarchy mounted under /sys/fs/cgroup (v1 controllers and
// v2).
func cgroupDirs(root string) map[string]bool {
	out := map[string]bool{}
	var tops []string
	hier, _ := os.ReadDir("/sys/fs/cgroup")
	for _, h := range hier {
		tops = append(tops, filepath.Join("/sys/fs/cgroup", h.Name(), root))
	}
	// cgroup v2 alone: the hierarchy is /sys/fs/cgroup itself.
	tops = append(tops, filepath.Join("/sys/fs/cgroup", root))
	for _, top := range tops {
		if _, err := os.Stat(filepath.Join(top, "cgroup.procs")); err != nil {
			continue
		}
		_ = filepath.WalkDir(top, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				if d != nil && d.IsDir() && p != "/sys/fs/cgroup" {
					return filepath.SkipDir
				}
				return nil
			}
			if d.IsDir() {
				out[p] = true
			}
			return nil
		})
	}
	return out
}

// shimsOf lists the running containerd-shim processes serving the
// containerd at address.
func shimsOf(address string) []int {
	var out []int
	for _, pid := range pids() {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err != nil {
			continue
		}
		args := strings.Split(string(b), "\x00")
		if strings.Contains(filepath.Base(args[0]), "containerd-shim") && slices.Contains(args, address) && processState(pid) != "Z" {
			out = append(out, pid)
		}
	}
	return out
}

// childrenOf lists the processes whose parent is pid.
func childrenOf(pid int) []int {
	var out []int
	for _, p := range pids() {
		if f := procStat(p); len(f) > 1 && f[1] == strconv.Itoa(pid) {
			out = append(out, p)
		}
	}
	return out
}

func processState(pid int) string {
	if f := procStat(pid); len(f) > 0 {
		return f[0]
	}
	return ""
}

// procStat is /proc/pid/stat after "pid (comm)": state, ppid, ...
func procStat(pid int) []string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil
	}
	// comm may hold spaces and parentheses: cut at the last ')'.
	return strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
}

func pids() []int {
	ents, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range ents {
		if pid, err := strconv.Atoi(e.Name()); err == nil {
			out = append(out, pid)
		}
	}
	return out
}
