package credentials

import (
	"context"
	"fmt"
	"net"
	"syscall"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
)

// PeerInfo is the grpc AuthInfo PeerCredentials attaches to each
// connection: the kernel's word (SO_PEERCRED) on who connected.
type PeerInfo struct {
	credentials.CommonAuthInfo
	// Known is false when the connection was not a unix socket, so no
	// uid could be read; such peers are refused.
	Known    bool
	UID, GID uint32
	PID      int32
}

// AuthType implements credentials.AuthInfo.
func (PeerInfo) AuthType() string { return peerCredProtocol }

const peerCredProtocol = "b9-peercred"

// PeerCredentials returns grpc server transport credentials that read the
// connecting process's uid with SO_PEERCRED. They add nothing to the wire
// (clients keep insecure.NewCredentials()), so the same grpc.Server can
// serve CRI too. Serve the Credentials service with
// grpc.NewServer(grpc.Creds(PeerCredentials()), ...): without them every
// call is refused, since the caller cannot be known.
func PeerCredentials() credentials.TransportCredentials { return peerCreds{} }

type peerCreds struct{}

func (peerCreds) ServerHandshake(conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	info := PeerInfo{CommonAuthInfo: credentials.CommonAuthInfo{SecurityLevel: credentials.NoSecurity}}
	sc, ok := conn.(syscall.Conn)
	if !ok || conn.LocalAddr().Network() != "unix" {
		return conn, info, nil
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return conn, info, nil
	}
	var ucred *unix.Ucred
	var uerr error
	if err := raw.Control(func(fd uintptr) {
		ucred, uerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil || uerr != nil {
		return conn, info, nil
	}
	info.Known, info.UID, info.GID, info.PID = true, ucred.Uid, ucred.Gid, ucred.Pid
	return conn, info, nil
}

// ClientHandshake is a pass-through: these credentials are server-side.
func (peerCreds) ClientHandshake(_ context.Context, _ string, conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return conn, PeerInfo{CommonAuthInfo: credentials.CommonAuthInfo{SecurityLevel: credentials.NoSecurity}}, nil
}

func (peerCreds) Info() credentials.ProtocolInfo {
	return credentials.ProtocolInfo{SecurityProtocol: peerCredProtocol}
}
func (peerCreds) Clone() credentials.TransportCredentials { return peerCreds{} }

//nolint:staticcheck // required by the interface, deprecated upstream.
func (peerCreds) OverrideServerName(string) error { return nil }

// authorize admits uid 0 and the configured uids.
func (s *Server) authorize(ctx context.Context) error {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return fmt.Errorf("credentials service: no peer information: %w", errdefs.ErrPermissionDenied)
	}
	info, ok := p.AuthInfo.(PeerInfo)
	if !ok || !info.Known {
		return fmt.Errorf("credentials service: caller's uid is unknown (serve on a unix socket with credentials.PeerCredentials()): %w", errdefs.ErrPermissionDenied)
	}
	if info.UID == 0 || s.allowed[info.UID] {
		return nil
	}
	return fmt.Errorf("credentials service: uid %d may not read registry credentials (root or allowed_uids only): %w", info.UID, errdefs.ErrPermissionDenied)
}
