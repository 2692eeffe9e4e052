package unixsock

import (
	"bytes"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	"github.com/sirupsen/logrus"
)

func TestListen(t *testing.T) {
	root := t.TempDir()
	addr := filepath.Join(root, "b9", "b9.sock")
	l, err := Listen(t.Context(), addr)
	if err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]os.FileMode{filepath.Dir(addr): 0o700, addr: 0o600} {
		fi, err := os.Stat(path)
		if err != nil || fi.Mode().Perm() != want {
			t.Errorf("%s mode %v, want %v", path, fi.Mode().Perm(), want)
		}
	}

	// A live socket is refused; nothing is removed.
	if _, err := Listen(t.Context(), addr); !errdefs.IsAlreadyExists(err) {
		t.Errorf("second listener on a live socket: %v", err)
	}
	if c, err := net.Dial("unix", addr); err != nil {
		t.Errorf("the live socket was disturbed: %v", err)
	} else {
		c.Close()
	}

	// A stale one (nothing answering) is replaced.
	if ul, ok := l.(*net.UnixListener); ok {
		ul.SetUnlinkOnClose(false)
	}
	l.Close()
	if _, err := os.Lstat(addr); err != nil {
		t.Fatalf("stale socket not left behind for the test: %v", err)
	}
	l, err = Listen(t.Context(), addr)
	if err != nil {
		t.Fatalf("stale socket not replaced: %v", err)
	}
	l.Close()

	// Not a socket, or a relative path: refused.
	file := filepath.Join(root, "file")
	os.WriteFile(file, []byte("x"), 0o600)
	if _, err := Listen(t.Context(), file); !errdefs.IsAlreadyExists(err) {
		t.Errorf("regular file: %v", err)
	}
	if b, _ := os.ReadFile(file); string(b) != "x" {
		t.Error("a regular file was replaced")
	}
	if _, err := Listen(t.Context(), "relative.sock"); !errdefs.IsInvalidArgument(err) {
		t.Errorf("relative path: %v", err)
	}
}

// WithGroup opens the socket and a folder Listen creates to one group, and
// to no one else.
func TestListenWithGroup(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root to give the socket another group (CI runs tests as root)")
	}
	const gid = 65534
	// Two missing levels: the group must get through the parent too.
	addr := filepath.Join(t.TempDir(), "run", "creds", "credentials.sock")
	l, err := Listen(t.Context(), addr, WithGroup(gid))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for path, want := range map[string]os.FileMode{filepath.Dir(addr): 0o750, addr: 0o660} {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		st := fi.Sys().(*syscall.Stat_t)
		if fi.Mode().Perm() != want || st.Gid != gid || st.Uid != 0 {
			t.Errorf("%s: mode %v uid %d gid %d; want %v, root, group %d", path, fi.Mode().Perm(), st.Uid, st.Gid, want, gid)
		}
	}
	if fi, err := os.Stat(filepath.Dir(filepath.Dir(addr))); err != nil || fi.Mode().Perm()&0o005 != 0o005 {
		t.Errorf("created parent folder %v (%v): others cannot pass through to the group's folder", fi.Mode().Perm(), err)
	}
}

// An existing folder the group cannot enter (not ours to chmod) is
// reported: its members could never connect.
func TestListenWarnsWhenTheGroupCannotEnter(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "closed")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	logger := logrus.New()
	logger.SetOutput(&buf)
	ctx := log.WithLogger(t.Context(), logrus.NewEntry(logger))
	l, err := Listen(ctx, filepath.Join(dir, "c.sock"), WithGroup(65534))
	if err != nil {
		t.Fatal(err)
	}
	l.Close()
	if !strings.Contains(buf.String(), "cannot enter its folder") {
		t.Errorf("no warning for a folder the group cannot enter; logged %q", buf.String())
	}
	buf.Reset()
	if err := os.Chmod(dir, 0o711); err != nil {
		t.Fatal(err)
	}
	l, err = Listen(ctx, filepath.Join(dir, "d.sock"), WithGroup(65534))
	if err != nil {
		t.Fatal(err)
	}
	l.Close()
	if strings.Contains(buf.String(), "cannot enter") {
		t.Errorf("warned about a folder anyone may pass through: %q", buf.String())
	}
}
