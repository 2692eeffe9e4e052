package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/beam-cloud/b9-resolver/internal/imagebuild"
)

// staticProgram builds a tiny static program, a stand-in for the real
// binaries (their build is `make image`'s job, checked in CI by -verify).
func staticProgram(t *testing.T) []byte {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "main.go"), []byte("package main\n\nfunc main() {}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte("module standin\n\ngo 1.24\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("go", "build", "-o", "prog", ".")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64", "GOFLAGS=")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	b, err := os.ReadFile(filepath.Join(dir, "prog"))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func binDir(t *testing.T, files map[string][]byte) string {
	t.Helper()
	dir := t.TempDir()
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// The image the tool writes passes -verify: named in index.json, OCI
// types, `containerd-b9 standalone` as entrypoint, both programs
// executable and static; the same inputs give the same digest.
func TestBuildAndVerify(t *testing.T) {
	prog := staticProgram(t)
	bin := binDir(t, map[string][]byte{"containerd-b9": prog, "ctr-b9": prog})
	info := buildInfo{Version: "v1.2.3", Revision: "abc", Arch: "amd64", Created: time.Unix(1700000000, 0)}
	img, err := buildImage(bin, info)
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "layout")
	if err := imagebuild.WriteLayout(out, img, "b9-resolver:v1.2.3"); err != nil {
		t.Fatal(err)
	}
	d, err := verifyLayout(out)
	if err != nil {
		t.Fatalf("verify: %v", err)
	}
	want, _ := img.Digest()
	if d != want {
		t.Errorf("verify read %s, wrote %s", d, want)
	}
	again, err := buildImage(bin, info)
	if err != nil {
		t.Fatal(err)
	}
	if d2, _ := again.Digest(); d2 != want {
		t.Errorf("rebuild gave %s, want %s", d2, want)
	}
	cf, _ := img.ConfigFile()
	if cf.Config.User != "" || len(cf.Config.Cmd) != 0 || cf.Config.Labels["org.opencontainers.image.version"] != "v1.2.3" || cf.Config.Labels["org.opencontainers.image.revision"] != "abc" {
		t.Errorf("config %+v", cf.Config)
	}
	if !cf.Created.Equal(info.Created) {
		t.Errorf("created %v, want SOURCE_DATE_EPOCH's %v", cf.Created, info.Created)
	}
}

func TestBuildRefuses(t *testing.T) {
	prog := staticProgram(t)
	cases := map[string]map[string][]byte{
		"missing ctr-b9": {"containerd-b9": prog},
		"not a program":  {"containerd-b9": prog, "ctr-b9": []byte("#!/bin/sh\n")},
	}
	if runtime.GOARCH == "amd64" {
		// The host's own /bin/true is dynamically linked.
		if b, err := os.ReadFile("/bin/true"); err == nil {
			cases["dynamic"] = map[string][]byte{"containerd-b9": b, "ctr-b9": prog}
		}
	}
	for name, files := range cases {
		t.Run(name, func(t *testing.T) {
			if _, err := buildImage(binDir(t, files), buildInfo{Arch: "amd64"}); err == nil {
				t.Error("built an image")
			}
		})
	}
	if _, err := buildImage(binDir(t, map[string][]byte{"containerd-b9": prog, "ctr-b9": prog}), buildInfo{Arch: "arm64"}); err == nil || !strings.Contains(err.Error(), "want arm64") {
		t.Errorf("amd64 programs for an arm64 image: %v", err)
	}
}

func TestVerifyRejectsOtherImages(t *testing.T) {
	prog := staticProgram(t)
	for name, spec := range map[string]imagebuild.Spec{
		"other entrypoint": {Files: []imagebuild.File{{Path: containerdPath, Mode: 0o755, Data: prog}, {Path: ctrPath, Mode: 0o755, Data: prog}}, Entrypoint: []string{"/bin/sh"}},
		"no ctr-b9":        {Files: []imagebuild.File{{Path: containerdPath, Mode: 0o755, Data: prog}}, Entrypoint: entrypoint},
		"not executable":   {Files: []imagebuild.File{{Path: containerdPath, Mode: 0o644, Data: prog}, {Path: ctrPath, Mode: 0o755, Data: prog}}, Entrypoint: entrypoint},
	} {
		t.Run(name, func(t *testing.T) {
			img, err := imagebuild.Build(spec)
			if err != nil {
				t.Fatal(err)
			}
			dir := filepath.Join(t.TempDir(), "layout")
			if err := imagebuild.WriteLayout(dir, img, "x:y"); err != nil {
				t.Fatal(err)
			}
			if _, err := verifyLayout(dir); err == nil {
				t.Error("verify accepted it")
			}
		})
	}
}
