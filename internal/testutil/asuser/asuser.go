// Package asuser runs the current test binary again as another uid and
// gid, so a test can see what a non-root process gets from a socket: the
// kernel's own permission checks and SO_PEERCRED, no pretending.
package asuser

import (
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// RequireRoot skips t unless it runs as root, which switching uid needs
// (CI runs the tests as root).
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Getuid() != 0 {
		t.Skip("needs root: runs a child process as another uid (CI runs tests as root)")
	}
}

// Run runs the test binary as uid:gid with env added and no test selected
// (-test.run=^$), so the binary's TestMain must act on env, and returns
// its trimmed output; a failed run fails t.
func Run(t testing.TB, uid, gid uint32, env ...string) string {
	t.Helper()
	cmd := Command(t, uid, gid, "-test.run=^$")
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("helper as %d:%d: %v\n%s", uid, gid, err, out)
	}
	return strings.TrimSpace(string(out))
}

// Command is the test binary with args, to be run as uid:gid. The binary
// is copied to a folder that uid can read, since go test's own build
// folder is 0700.
func Command(t testing.TB, uid, gid uint32, args ...string) *exec.Cmd {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "b9-asuser-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "helper")
	src, err := os.Open(self)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := os.OpenFile(bin, os.O_CREATE|os.O_WRONLY, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: gid, NoSetGroups: true}}
	return cmd
}
