// Package unixsock creates the unix sockets b9-resolver serves on: root-only
// by default (the folder 0700 when we create it, the socket 0600), or
// shared with one group (0750 and 0660, WithGroup) for a socket that other
// uids must reach; a stale socket (nothing answering) is replaced and a
// live one refused, so two services never share a path.
package unixsock

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"
)

// Option configures Listen.
type Option func(*modes)

type modes struct {
	dir, sock fs.FileMode
	gid       int // -1: leave the group alone
}

// WithGroup shares the socket with group gid: the socket is 0660 and a
// folder Listen creates is 0750, both of group gid. Who may then call is
// still the service's own check (the Credentials service's peer uids).
func WithGroup(gid int) Option {
	return func(m *modes) { m.dir, m.sock, m.gid = 0o750, 0o660, gid }
}

// Listen creates the socket at addr.
func Listen(ctx context.Context, addr string, opts ...Option) (net.Listener, error) {
	m := modes{dir: 0o700, sock: 0o600, gid: -1}
	for _, o := range opts {
		o(&m)
	}
	if !filepath.IsAbs(addr) {
		return nil, fmt.Errorf("socket %q is not an absolute path: %w", addr, errdefs.ErrInvalidArgument)
	}
	dir := filepath.Dir(addr)
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		// Missing parents are ordinary folders (0755, like /run's): the
		// socket's own folder is the one that guards it, and a group
		// given the socket must be able to reach it.
		if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
			return nil, fmt.Errorf("socket folder %s: %w", dir, err)
		}
		if err := os.Mkdir(dir, m.dir); err != nil && !errors.Is(err, fs.ErrExist) {
			return nil, fmt.Errorf("socket folder %s: %w", dir, err)
		}
		// MkdirAll applies the umask; the folder's mode must be ours
		// whatever it is.
		if err := os.Chmod(dir, m.dir); err != nil {
			return nil, fmt.Errorf("socket folder %s: %w", dir, err)
		}
		if err := os.Lchown(dir, -1, m.gid); err != nil {
			return nil, fmt.Errorf("socket folder %s: group %d: %w", dir, m.gid, err)
		}
	} else if err != nil {
		return nil, fmt.Errorf("socket folder %s: %w", dir, err)
	} else if fi, err := os.Stat(dir); err == nil && fi.Mode().Perm()&0o077&^m.dir != 0 {
		// An existing folder may be shared (/run); it is not ours to chmod.
		// The socket's own mode still holds.
		log.G(ctx).WithField("folder", dir).WithField("mode", fi.Mode().Perm().String()).
			Warn("b9-resolver: socket folder is open to other users; use a folder of its own (" + m.dir.String() + ")")
	} else if err == nil && m.gid >= 0 && !groupCanEnter(fi, m.gid) {
		log.G(ctx).WithField("folder", dir).WithField("mode", fi.Mode().Perm().String()).WithField("gid", m.gid).
			Warn("b9-resolver: the socket's group cannot enter its folder, so its members cannot connect; use a folder of its own")
	}
	if fi, err := os.Lstat(addr); err == nil {
		if fi.Mode()&fs.ModeSocket == 0 {
			return nil, fmt.Errorf("%s exists and is not a socket: %w", addr, errdefs.ErrAlreadyExists)
		}
		if c, err := net.DialTimeout("unix", addr, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("socket %s is in use by another process: %w", addr, errdefs.ErrAlreadyExists)
		}
		if err := os.Remove(addr); err != nil {
			return nil, fmt.Errorf("remove stale socket %s: %w", addr, err)
		}
	}
	l, err := net.Listen("unix", addr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", addr, err)
	}
	// Between Listen and Chmod the socket has the umask's mode; the
	// folder covers that window when we created it. The group is set
	// before the mode opens the socket to it.
	if err := os.Lchown(addr, -1, m.gid); err != nil {
		l.Close()
		return nil, fmt.Errorf("socket %s: group %d: %w", addr, m.gid, err)
	}
	if err := os.Chmod(addr, m.sock); err != nil {
		l.Close()
		return nil, fmt.Errorf("chmod socket %s: %w", addr, err)
	}
	return l, nil
}

// groupCanEnter reports whether members of gid may pass through dir.
func groupCanEnter(dir fs.FileInfo, gid int) bool {
	perm := dir.Mode().Perm()
	if perm&0o001 != 0 {
		return true
	}
	st, ok := dir.Sys().(*syscall.Stat_t)
	return ok && int(st.Gid) == gid && perm&0o010 != 0
}
