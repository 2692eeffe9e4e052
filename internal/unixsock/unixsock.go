// Package unixsock creates the root-only unix sockets b9-resolver serves
// on: the folder 0700 when we create it, the socket 0600, a stale socket
// (nothing answering) replaced and a live one refused, so two services
// never share a path and only root reaches a service that hands out pulls
// and credentials.
package unixsock

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"
)

// Listen creates the socket at addr.
func Listen(ctx context.Context, addr string) (net.Listener, error) {
	if !filepath.IsAbs(addr) {
		return nil, fmt.Errorf("socket %q is not an absolute path: %w", addr, errdefs.ErrInvalidArgument)
	}
	dir := filepath.Dir(addr)
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("socket folder %s: %w", dir, err)
		}
		// MkdirAll applies the umask; the folder must be 0700 whatever it is.
		if err := os.Chmod(dir, 0o700); err != nil {
			return nil, fmt.Errorf("socket folder %s: %w", dir, err)
		}
	} else if err != nil {
		return nil, fmt.Errorf("socket folder %s: %w", dir, err)
	} else if fi, err := os.Stat(dir); err == nil && fi.Mode().Perm()&0o077 != 0 {
		// An existing folder may be shared (/run); it is not ours to chmod.
		// The socket's own 0600 still holds.
		log.G(ctx).WithField("folder", dir).WithField("mode", fi.Mode().Perm().String()).
			Warn("b9-resolver: socket folder is open to other users; use a folder of its own (0700)")
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
	// Between Listen and Chmod the socket has the umask's mode; the 0700
	// folder covers that window when we created it.
	if err := os.Chmod(addr, 0o600); err != nil {
		l.Close()
		return nil, fmt.Errorf("chmod socket %s: %w", addr, err)
	}
	return l, nil
}

// Remove deletes the socket at addr if it is one (not a file someone put
// there).
func Remove(addr string) {
	if fi, err := os.Lstat(addr); err == nil && fi.Mode()&fs.ModeSocket != 0 {
		_ = os.Remove(addr)
	}
}
