package credentials

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	"google.golang.org/grpc/peer"
	"google.golang.org/protobuf/encoding/prototext"

	credentialsv1 "github.com/beam-cloud/b9-resolver/api/credentials/v1"
	"github.com/beam-cloud/b9-resolver/internal/keychain"
	"github.com/beam-cloud/b9-resolver/internal/keychain/registry"
	"github.com/beam-cloud/b9-resolver/internal/secret"
	"github.com/beam-cloud/b9-resolver/internal/testutil/asuser"
	"github.com/beam-cloud/b9-resolver/internal/testutil/credprobe"
	"github.com/beam-cloud/b9-resolver/internal/testutil/keychaintest"
	"github.com/beam-cloud/b9-resolver/pkg/credclient"
)

func TestMain(m *testing.M) {
	credprobe.DialFromEnv()
	os.Exit(m.Run())
}

// runAs runs the test binary's dial helper as uid against addr.
func runAs(t *testing.T, uid uint32, addr string) string {
	t.Helper()
	return asuser.Run(t, uid, uid, credprobe.DialVar(addr, hostA, "team/app"))
}

// openSocket serves s on a socket anyone can connect to, so only the peer
// check stands between another uid and the service.
func openSocket(t *testing.T, s *Server) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "b9-cred-open-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	addr := filepath.Join(dir, "open.sock")
	l, err := net.Listen("unix", addr)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(addr, 0o666); err != nil {
		t.Fatal(err)
	}
	serveOn(t, s, l)
	return addr
}

func TestPeerUIDRefused(t *testing.T) {
	asuser.RequireRoot(t)
	logs := captureLogs(t)
	kc := keychaintest.New(t)
	defer kc.Close()
	st := memStore(t)
	pull(t, kc, st, hostA, "team/app", basicDoc(t, hostA, "alice", canaryA))

	// The peer check: a non-root uid reaching the socket is refused.
	out := runAs(t, 65534, openSocket(t, newServer(t, kc, st)))
	if !strings.HasPrefix(out, "uid=65534 permission-denied") {
		t.Fatalf("non-root caller: %q", out)
	}
	// A configured uid is admitted (so the refusal above is the uid check,
	// not a broken socket).
	out = runAs(t, 65534, openSocket(t, newServer(t, kc, st, func(c *Config) { c.AllowedUIDs = []uint32{65534} })))
	if out != fmt.Sprintf("uid=65534 ok secret-len=%d", len(canaryA)) {
		t.Fatalf("allowed uid: %q", out)
	}
	// Root is admitted.
	c, err := credclient.New(serve(t, newServer(t, kc, st)), credclient.WithCacheTTL(0))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if cred, err := c.GetCredentials(context.Background(), credclient.Request{Host: hostA, Repository: "team/app"}); err != nil || cred.Secret != canaryA {
		t.Fatalf("root: %v %v", cred, err)
	}
	// The production socket (Listen: 0700 folder, 0600 socket) does not
	// even let another uid connect.
	out = runAs(t, 65534, serve(t, newServer(t, kc, st, func(c *Config) { c.AllowedUIDs = []uint32{65534} })))
	if !strings.HasPrefix(out, "uid=65534 unavailable") || !strings.Contains(out, "permission denied") {
		t.Fatalf("non-root caller on the 0600 socket: %q", out)
	}
	if strings.Contains(logs.String(), canaryA) || strings.Contains(out, canaryA) {
		t.Fatal("secret in logs or output")
	}
}

// A server without PeerCredentials cannot know its callers and refuses all.
func TestWithoutPeerCredentialsRefused(t *testing.T) {
	kc := keychaintest.New(t)
	defer kc.Close()
	srv := newServer(t, kc, memStore(t))
	_, err := srv.GetCredentials(context.Background(), &credentialsv1.GetCredentialsRequest{Host: hostA})
	if err == nil || !strings.Contains(err.Error(), "PermissionDenied") {
		t.Fatalf("want PermissionDenied, got %v", err)
	}
	_, err = srv.ListCredentials(context.Background(), &credentialsv1.ListCredentialsRequest{})
	if err == nil || !strings.Contains(err.Error(), "PermissionDenied") {
		t.Fatalf("list: want PermissionDenied, got %v", err)
	}
}

func TestListenModes(t *testing.T) {
	base := t.TempDir()
	addr := filepath.Join(base, "run", "b9", "b9.sock")
	l, err := Listen(addr)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Dir(addr))
	if err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("socket folder mode = %v, %v; want 0700", fi.Mode().Perm(), err)
	}
	fi, err = os.Lstat(addr)
	if err != nil || fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode = %v, %v; want socket 0600", fi.Mode(), err)
	}
	// A live socket is not taken over.
	if _, err := Listen(addr); !errdefs.IsAlreadyExists(err) {
		t.Fatalf("second Listen on a live socket: %v", err)
	}
	l.Close()
	// net.UnixListener.Close removes the file; leave a stale one behind.
	stale, err := net.Listen("unix", addr)
	if err != nil {
		t.Fatal(err)
	}
	stale.(*net.UnixListener).SetUnlinkOnClose(false)
	stale.Close()
	l, err = Listen(addr)
	if err != nil {
		t.Fatalf("stale socket not replaced: %v", err)
	}
	l.Close()
	// A regular file at the path is not removed.
	file := filepath.Join(base, "file.sock")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Listen(file); err == nil {
		t.Fatal("Listen replaced a regular file")
	}
	if _, err := Listen("relative.sock"); !errdefs.IsInvalidArgument(err) {
		t.Fatalf("relative path: %v", err)
	}
}

// Over the socket: answers, NotFound as a gRPC code, and ListCredentials
// carries no secret.
func TestServiceOverSocket(t *testing.T) {
	logs := captureLogs(t)
	kc := keychaintest.New(t)
	defer kc.Close()
	st := memStore(t)
	ref := pull(t, kc, st, hostA, "team/app", basicDoc(t, hostA, "alice", canaryA))
	pull(t, kc, st, "ghcr.io", "org/public", publicDoc(t, "ghcr.io"))
	addr := serve(t, newServer(t, kc, st))
	c, err := credclient.New(addr, credclient.WithCacheTTL(0))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()

	cred, err := c.GetCredentials(ctx, credclient.Request{Host: hostA, Repository: "team/app", CredentialRef: ref})
	if err != nil || cred.Secret != canaryA || cred.Username != "alice" || cred.Ref != ref || cred.Anonymous ||
		cred.Source != "annotation b9.beam.cloud/image-credentials" {
		t.Fatalf("get: %v %v", cred, err)
	}
	cred, err = c.GetCredentials(ctx, credclient.Request{Host: "ghcr.io", Repository: "org/public"})
	if err != nil || !cred.Anonymous || cred.Secret != "" {
		t.Fatalf("public: %v %v", cred, err)
	}
	_, err = c.GetCredentials(ctx, credclient.Request{Host: hostA, Repository: "team/app", CredentialRef: "sha256:ffffffffffff"})
	wantClass(t, err, isNotFound, "NotFound")
	_, err = c.GetCredentials(ctx, credclient.Request{})
	wantClass(t, err, errdefs.IsInvalidArgument, "InvalidArgument")

	entries, err := c.ListCredentials(ctx)
	if err != nil || len(entries) == 0 {
		t.Fatalf("list: %v %v", entries, err)
	}
	found := false
	for _, e := range entries {
		if e.Host == hostA && e.Ref == ref && e.Type == "basic" && strings.HasPrefix(e.Fingerprint, secret.FingerprintPrefix) {
			found = true
		}
	}
	if !found {
		t.Fatalf("list lacks the pulled credential: %+v", entries)
	}
	raw, err := newServer(t, kc, st).ListCredentials(peerCtx(), &credentialsv1.ListCredentialsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if txt := prototext.Format(raw); strings.Contains(txt, canaryA) {
		t.Fatal("ListCredentials carries a secret")
	}
	// The client's Credential never prints its secret.
	cred, _ = c.GetCredentials(ctx, credclient.Request{Host: hostA, Repository: "team/app"})
	for _, f := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x"} {
		if s := fmt.Sprintf(f, cred); strings.Contains(s, canaryA) {
			t.Fatalf("%s prints the secret: %s", f, s)
		}
	}
	if strings.Contains(logs.String(), canaryA) {
		t.Fatal("secret in logs")
	}
}

// peerCtx is a context as PeerCredentials would give a root caller.
func peerCtx() context.Context {
	return peer.NewContext(context.Background(), &peer.Peer{AuthInfo: PeerInfo{Known: true, UID: 0}})
}

func TestNoSecretInErrorsOrLogs(t *testing.T) {
	logs := captureLogs(t)
	kc := keychaintest.New(t)
	defer kc.Close()
	st := memStore(t)
	docA, docB := basicDoc(t, hostA, "a", canaryA), basicDoc(t, hostA, "b", canaryB)
	refB := pull(t, kc, st, hostA, "b/app", docB)
	_ = st.Record(refB, st.byRef[refKey{refB, hostA}].reg, "a/app", docA) // mismatched pair
	srv := newServer(t, kc, st, func(c *Config) {
		c.NodeCredentials = func(context.Context, registry.Registry, string) (keychain.Credential, bool, error) {
			return keychain.Credential{}, false, errors.New("node source broken")
		}
	})
	var msgs []string
	for _, q := range []*credentialsv1.GetCredentialsRequest{
		{Host: hostA, CredentialRef: refB},
		{Host: hostA, CredentialRef: "nope"},
		{Host: "other.example", CredentialRef: refB},
		{Host: hostA, Repository: "never"},
	} {
		_, err := srv.GetCredentials(peerCtx(), q)
		if err == nil {
			t.Fatalf("%v: want an error", q)
		}
		msgs = append(msgs, err.Error())
	}
	all := strings.Join(msgs, "\n") + logs.String()
	for _, c := range []string{canaryA, canaryB} {
		if strings.Contains(all, c) {
			t.Fatalf("canary %s leaked:\n%s", c, all)
		}
	}
}
