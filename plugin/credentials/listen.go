package credentials

import (
	"context"
	"fmt"
	"net"

	"github.com/beam-cloud/b9-resolver/internal/unixsock"
)

// Listen creates the unix socket at addr for a server of its own (the
// plugin serves this service on its CRI socket instead): the folder is
// created 0700 if missing, the socket is 0600, so only root can connect
// at all; the peer check is the second wall. A stale socket (nothing
// answering) is replaced; a live one is an error.
func Listen(addr string) (net.Listener, error) {
	l, err := unixsock.Listen(context.Background(), addr)
	if err != nil {
		return nil, fmt.Errorf("credentials %w", err)
	}
	return l, nil
}
