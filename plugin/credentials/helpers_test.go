package credentials

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	"google.golang.org/grpc"

	"github.com/beam-cloud/b9-resolver/internal/keychain"
	"github.com/beam-cloud/b9-resolver/internal/keychain/document"
	"github.com/beam-cloud/b9-resolver/internal/keychain/registry"
	"github.com/beam-cloud/b9-resolver/internal/secret"
)

// Canary secrets: a test fails if one shows up where it must not.
const (
	canaryA   = "CANARY-cred-A-7f3b91"
	canaryB   = "CANARY-cred-B-20c4de"
	canaryAWS = "CANARY-aws-secret-e81a"
)

const hostA = "registry.a.example"

// basicDoc is a pod annotation document for host with password pass.
func basicDoc(t testing.TB, host, user, pass string) document.Document {
	t.Helper()
	text := fmt.Sprintf(`{"registry":%q,"type":"basic","credentials":{"USERNAME":%q,"PASSWORD":%q}}`, host, user, pass)
	docs, err := document.Parse("annotation b9.beam.cloud/image-credentials", text, host)
	if err != nil {
		t.Fatal(err)
	}
	return docs[0]
}

func publicDoc(t testing.TB, host string) document.Document {
	t.Helper()
	docs, err := document.Parse("annotation b9.beam.cloud/image-credentials", fmt.Sprintf(`{"registry":%q,"type":"public"}`, host), host)
	if err != nil {
		t.Fatal(err)
	}
	return docs[0]
}

// pull mimics the CRI service: resolve the document, present the
// credential, and record it with the ref the layer label would carry.
func pull(t testing.TB, kc *keychain.Keychain, st *Store, host, repo string, doc document.Document) string {
	t.Helper()
	reg := registry.Detect(host)
	cred, err := kc.Resolve(context.Background(), reg, doc)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Record(cred.Ref, reg, repo, doc); err != nil {
		t.Fatal(err)
	}
	return cred.Ref
}

func newServer(t testing.TB, kc *keychain.Keychain, st *Store, opts ...func(*Config)) *Server {
	t.Helper()
	cfg := Config{Keychain: kc, Store: st}
	for _, o := range opts {
		o(&cfg)
	}
	s, err := NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func memStore(t testing.TB) *Store {
	t.Helper()
	st, err := NewStore(context.Background(), StoreConfig{})
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// serve runs s on a fresh socket made by Listen and returns its path.
func serve(t testing.TB, s *Server) string {
	t.Helper()
	addr := filepath.Join(t.TempDir(), "run", "b9.sock")
	l, err := Listen(addr)
	if err != nil {
		t.Fatal(err)
	}
	serveOn(t, s, l)
	return addr
}

func serveOn(t testing.TB, s *Server, l net.Listener) {
	t.Helper()
	g := grpc.NewServer(grpc.Creds(PeerCredentials()))
	s.Register(g)
	done := make(chan struct{})
	go func() { defer close(done); _ = g.Serve(l) }()
	t.Cleanup(func() { g.Stop(); <-done })
}

// fakeMinter is an "aws" provider minting numbered tokens of a fixed life,
// so tests can watch re-minting without a cloud.
type fakeMinter struct {
	life  time.Duration
	now   func() time.Time
	mints atomic.Int64
}

func (f *fakeMinter) Type() document.Type { return document.TypeAWS }

func (f *fakeMinter) Mint(_ context.Context, _ registry.Registry, doc document.Document) (keychain.Minted, error) {
	n := f.mints.Add(1)
	// The token depends on the source secret, so a test can tell whose it is.
	return keychain.Minted{
		Username:  "AWS",
		Secret:    secret.New(fmt.Sprintf("token-%d-of-%s", n, secret.Hash(doc.Get(document.KeyAWSSecretKey).Reveal()))),
		ExpiresAt: f.now().Add(f.life),
		Provider:  "aws/ecr",
	}, nil
}

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// logBuffer captures containerd/log output for the test, so tests can
// check no secret is ever logged.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func captureLogs(t testing.TB) *logBuffer {
	t.Helper()
	lb := &logBuffer{}
	lg := log.L.Logger
	out, lvl := lg.Out, lg.Level
	lg.SetOutput(lb)
	_ = log.SetLevel("debug")
	t.Cleanup(func() { lg.SetOutput(out); lg.SetLevel(lvl) })
	return lb
}

func wantClass(t testing.TB, err error, is func(error) bool, class string) {
	t.Helper()
	if err == nil || !is(err) {
		t.Fatalf("want a %s error, got %v", class, err)
	}
}

var (
	isNotFound = errdefs.IsNotFound
)
