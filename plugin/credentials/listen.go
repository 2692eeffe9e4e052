package credentials

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/containerd/errdefs"
)

// Listen creates the unix socket at addr for a server of its own (the
// plugin serves this service on its CRI socket instead): the folder is
// created 0700 if missing, the socket is 0600, so only root can connect
// at all; the peer check is the second wall. A stale socket (nothing
// answering) is replaced; a live one is an error.
func Listen(addr string) (net.Listener, error) {
	if !filepath.IsAbs(addr) {
		return nil, fmt.Errorf("credentials socket %q is not an absolute path: %w", addr, errdefs.ErrInvalidArgument)
	}
	dir := filepath.Dir(addr)
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("credentials socket folder: %w", err)
		}
		// MkdirAll applied the umask.
		if err := os.Chmod(dir, 0o700); err != nil {
			return nil, fmt.Errorf("credentials socket folder: %w", err)
		}
	} else if err != nil {
		return nil, fmt.Errorf("credentials socket folder: %w", err)
	}
	if fi, err := os.Lstat(addr); err == nil {
		if fi.Mode()&fs.ModeSocket == 0 {
			return nil, fmt.Errorf("credentials socket %s exists and is not a socket: %w", addr, errdefs.ErrAlreadyExists)
		}
		if c, err := net.DialTimeout("unix", addr, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("credentials socket %s is in use: %w", addr, errdefs.ErrAlreadyExists)
		}
		if err := os.Remove(addr); err != nil {
			return nil, fmt.Errorf("credentials socket: remove stale %s: %w", addr, err)
		}
	}
	l, err := net.Listen("unix", addr)
	if err != nil {
		return nil, fmt.Errorf("credentials socket: %w", err)
	}
	if err := os.Chmod(addr, 0o600); err != nil {
		l.Close()
		return nil, fmt.Errorf("credentials socket: %w", err)
	}
	return l, nil
}
