package service

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/beam-cloud/b9-resolver/internal/testutil/asuser"
	"github.com/beam-cloud/b9-resolver/internal/testutil/credprobe"
)

const credHost, credRepo = "127.0.0.1:5000", "a/b"

func TestMain(m *testing.M) {
	credprobe.DialFromEnv()
	os.Exit(m.Run())
}

// credentials_address serves the Credentials service, and only it, on a
// socket a group can reach, so a snapshotter that is not root can ask for
// credentials; the b9 socket stays root-only, and the peer uid check
// still decides who is answered.
func TestCredentialsSocketForNonRootUIDs(t *testing.T) {
	asuser.RequireRoot(t)
	const gid = 65534
	f := &fakeCRI{pull: func(*runtime.PullImageRequest) (*runtime.PullImageResponse, error) {
		return &runtime.PullImageResponse{ImageRef: "sha256:abc"}, nil
	}}
	parent := shortDir(t)
	if err := os.Chmod(parent, 0o755); err != nil { // as /run is
		t.Fatal(err)
	}
	credDir := filepath.Join(parent, "creds")
	cfg := Config{
		ContainerdAddress: startFakeCRI(t, f), PullMode: PullForward,
		CredentialsAddress: filepath.Join(credDir, "credentials.sock"), CredentialsGID: gid,
		CredentialsUIDs: []uint32{65534},
	}
	svc, cli := startService(t, cfg)
	if _, err := cli.PullImage(ctxT(t), pullReq(credHost+"/"+credRepo+":v1", map[string]string{annKey: "alice:" + canaryPass}, nil)); err != nil {
		t.Fatal(err)
	}

	for path, want := range map[string]os.FileMode{credDir: 0o750, cfg.CredentialsAddress: 0o660} {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if st := fi.Sys().(*syscall.Stat_t); fi.Mode().Perm() != want || st.Gid != gid {
			t.Errorf("%s: mode %v group %d; want %v group %d", path, fi.Mode().Perm(), st.Gid, want, gid)
		}
	}

	b9 := svc.Address()
	for _, c := range []struct {
		name     string
		uid, gid uint32
		addr     string
		want     string // a prefix; "unavailable" must be the socket's EACCES
	}{
		{"listed uid, in the group", 65534, gid, cfg.CredentialsAddress, fmt.Sprintf("uid=65534 ok secret-len=%d", len(canaryPass))},
		{"unlisted uid, in the group", 65533, gid, cfg.CredentialsAddress, "uid=65533 permission-denied: "},
		{"listed uid, outside the group", 65534, 65533, cfg.CredentialsAddress, "uid=65534 unavailable: "},
		{"listed uid on the root-only b9 socket", 65534, gid, b9, "uid=65534 unavailable: "},
	} {
		got := asuser.Run(t, c.uid, c.gid, credprobe.DialVar(c.addr, credHost, credRepo))
		if !strings.HasPrefix(got, c.want) || strings.Contains(c.want, "unavailable") && !strings.Contains(got, "permission denied") {
			t.Errorf("%s (%d:%d): %q, want %q", c.name, c.uid, c.gid, got, c.want)
		}
	}

	// The Credentials socket serves no CRI: its callers must not pull.
	conn, err := grpc.NewClient("unix://"+cfg.CredentialsAddress, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_, err = runtime.NewImageServiceClient(conn).PullImage(ctxT(t), pullReq(credHost+"/"+credRepo+":v1", nil, nil))
	if status.Code(err) != codes.Unimplemented {
		t.Errorf("PullImage on the Credentials socket: %v, want Unimplemented", err)
	}

	svc.Close()
	for _, addr := range []string{b9, cfg.CredentialsAddress} {
		if _, err := os.Lstat(addr); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s left behind after Close: %v", addr, err)
		}
	}
}
