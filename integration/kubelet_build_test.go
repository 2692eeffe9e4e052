package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// The kubelet the suite runs: built from the Go module proxy, never
// downloaded as a binary.
const kubeletVersion = "v1.34.4"

// kubeletStaging lists the modules k8s.io/kubernetes's go.mod replaces
// with its own ./staging/src folders. A module that requires
// k8s.io/kubernetes does not inherit those replaces, so it must point each
// at the published tag of the same release (v1.34.4 → v0.34.4).
var kubeletStaging = []string{
	"api", "apiextensions-apiserver", "apimachinery", "apiserver", "cli-runtime",
	"client-go", "cloud-provider", "cluster-bootstrap", "code-generator",
	"component-base", "component-helpers", "controller-manager", "cri-api",
	"cri-client", "csi-translation-lib", "dynamic-resource-allocation",
	"endpointslice", "externaljwt", "kms", "kube-aggregator",
	"kube-controller-manager", "kube-proxy", "kube-scheduler", "kubectl",
	"kubelet", "metrics", "mount-utils", "pod-security-admission",
	"sample-apiserver", "sample-cli-plugin", "sample-controller",
}

// builtOnce is a program the suite builds (or finds) once per run.
type builtOnce struct {
	once sync.Once
	path string
	err  error
}

// get returns the program's path, running build the first time; a build
// error fails every test that asks.
func (b *builtOnce) get(t testing.TB, what string, build func() (string, error)) string {
	t.Helper()
	binaries(t)
	b.once.Do(func() { b.path, b.err = build() })
	if b.err != nil {
		t.Fatalf("building %s: %v", what, b.err)
	}
	return b.path
}

var kubeletBuild builtOnce

// kubeletBinary returns .cache/bin/kubelet-<version>, building it the
// first time (B9_KUBELET overrides). The build is a generated wrapper
// module under .cache (nothing committed) with CGO_ENABLED=0; it takes
// about 3.5 minutes on 2 cores with a cold build cache.
func kubeletBinary(t *testing.T) string {
	t.Helper()
	return kubeletBuild.get(t, "kubelet "+kubeletVersion, func() (string, error) {
		if p := os.Getenv("B9_KUBELET"); p != "" {
			return p, nil
		}
		path := filepath.Join(moduleRoot, ".cache", "bin", "kubelet-"+kubeletVersion)
		if _, err := os.Stat(path); err == nil {
			return path, nil
		}
		start := time.Now()
		err := buildKubelet(filepath.Join(moduleRoot, ".cache", "kubelet-"+kubeletVersion), path)
		t.Logf("built kubelet %s in %s", kubeletVersion, time.Since(start).Round(time.Second))
		return path, err
	})
}

// kubeletGoMod is the wrapper module: kubelet as a tool of a module that
// requires k8s.io/kubernetes with the staging modules pinned.
func kubeletGoMod() string {
	var b strings.Builder
	fmt.Fprintf(&b, "module b9-resolver.test/kubelet\n\ngo 1.24\n\ntool k8s.io/kubernetes/cmd/kubelet\n\nrequire k8s.io/kubernetes %s\n\nreplace (\n", kubeletVersion)
	staging := "v0" + strings.TrimPrefix(kubeletVersion, "v1")
	for _, m := range kubeletStaging {
		fmt.Fprintf(&b, "\tk8s.io/%s => k8s.io/%s %s\n", m, m, staging)
	}
	b.WriteString(")\n")
	return b.String()
}

func buildKubelet(srcDir, out string) error {
	if err := os.MkdirAll(srcDir, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(srcDir, "go.mod"), []byte(kubeletGoMod()), 0o644); err != nil {
		return err
	}
	major, minor, _ := strings.Cut(strings.TrimPrefix(kubeletVersion, "v"), ".")
	minor, _, _ = strings.Cut(minor, ".")
	ldflags := fmt.Sprintf("-s -w -X k8s.io/component-base/version.gitVersion=%s -X k8s.io/component-base/version.gitMajor=%s -X k8s.io/component-base/version.gitMinor=%s",
		kubeletVersion, major, minor)
	tmp := out + ".tmp"
	for _, args := range [][]string{
		{"mod", "tidy"},
		{"build", "-trimpath", "-ldflags", ldflags, "-o", tmp, "k8s.io/kubernetes/cmd/kubelet"},
	} {
		cmd := exec.Command("go", args...)
		cmd.Dir = srcDir
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS=-mod=mod", "GOWORK=off")
		if b, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("go %s: %v\n%s", strings.Join(args[:1], " "), err, tail(string(b), 30))
		}
	}
	return os.Rename(tmp, out)
}
