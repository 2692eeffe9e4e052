package service

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/containerd/log"
)

// listen creates the unix socket at addr: its folder 0700 when we create
// it, the socket 0600, so only root reaches a service that hands out pulls
// with any pod's credentials. A stale socket (nothing answering) is
// replaced; a live one is an error, so two services never share a path.
func listen(ctx context.Context, addr string) (net.Listener, error) {
	dir := filepath.Dir(addr)
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("b9-resolver: socket folder %s: %w", dir, err)
		}
		// MkdirAll applies the umask; the folder must be 0700 whatever it is.
		if err := os.Chmod(dir, 0o700); err != nil {
			return nil, fmt.Errorf("b9-resolver: socket folder %s: %w", dir, err)
		}
	} else if err != nil {
		return nil, fmt.Errorf("b9-resolver: socket folder %s: %w", dir, err)
	} else if fi, err := os.Stat(dir); err == nil && fi.Mode().Perm()&0o077 != 0 {
		// An existing folder may be shared (/run); it is not ours to chmod.
		// The socket's own 0600 still holds.
		log.G(ctx).WithField("folder", dir).WithField("mode", fi.Mode().Perm().String()).
			Warn("b9-resolver: socket folder is open to other users; use a folder of its own (0700)")
	}
	if fi, err := os.Lstat(addr); err == nil {
		if fi.Mode()&fs.ModeSocket == 0 {
			return nil, fmt.Errorf("b9-resolver: %s exists and is not a socket", addr)
		}
		if c, err := net.DialTimeout("unix", addr, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("b9-resolver: %s is in use by another process", addr)
		}
		if err := os.Remove(addr); err != nil {
			return nil, fmt.Errorf("b9-resolver: remove stale socket %s: %w", addr, err)
		}
	}
	l, err := net.Listen("unix", addr)
	if err != nil {
		return nil, fmt.Errorf("b9-resolver: listen on %s: %w", addr, err)
	}
	// Between Listen and Chmod the socket has the umask's mode; the 0700
	// folder covers that window when we created it.
	if err := os.Chmod(addr, 0o600); err != nil {
		l.Close()
		return nil, fmt.Errorf("b9-resolver: chmod socket %s: %w", addr, err)
	}
	return l, nil
}

func removeSocket(addr string) {
	if fi, err := os.Lstat(addr); err == nil && fi.Mode()&fs.ModeSocket != 0 {
		_ = os.Remove(addr)
	}
}
