package credtest

import (
	"context"
	"path/filepath"
	"runtime"
	"sync/atomic"
	"testing"

	"google.golang.org/grpc"

	"github.com/beam-cloud/b9-resolver/internal/keychain"
	"github.com/beam-cloud/b9-resolver/internal/keychain/document"
	"github.com/beam-cloud/b9-resolver/internal/keychain/registry"
	"github.com/beam-cloud/b9-resolver/internal/testutil/keychaintest"
	"github.com/beam-cloud/b9-resolver/plugin/credentials"
)

// Env is a running Credentials service.
type Env struct {
	Keychain *keychain.Keychain
	Store    *credentials.Store
	Server   *credentials.Server
	// Addr is the socket path.
	Addr string
	rpcs atomic.Int64
}

// RPCs is the number of calls the service has answered or refused.
func (e *Env) RPCs() int64 { return e.rpcs.Load() }

// Start serves a service until the test ends. cfg's Keychain and Store
// are filled in when nil.
func Start(t testing.TB, cfg credentials.Config) *Env {
	t.Helper()
	if cfg.Keychain == nil {
		cfg.Keychain = keychaintest.New(t)
		t.Cleanup(cfg.Keychain.Close)
	}
	if cfg.Store == nil {
		st, err := credentials.NewStore(context.Background(), credentials.StoreConfig{})
		if err != nil {
			t.Fatal(err)
		}
		cfg.Store = st
	}
	srv, err := credentials.NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	e := &Env{Keychain: cfg.Keychain, Store: cfg.Store, Server: srv, Addr: filepath.Join(t.TempDir(), "b9", "b9.sock")}
	l, err := credentials.Listen(e.Addr)
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer(grpc.Creds(credentials.PeerCredentials()), grpc.NumStreamWorkers(uint32(runtime.GOMAXPROCS(0))),
		grpc.InitialWindowSize(1<<20), grpc.InitialConnWindowSize(1<<20), // as plugin/service
		grpc.UnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			e.rpcs.Add(1)
			return h(ctx, req)
		}))
	srv.Register(g)
	done := make(chan struct{})
	go func() { defer close(done); _ = g.Serve(l) }()
	t.Cleanup(func() { g.Stop(); <-done })
	return e
}

// Pull does what the CRI service does after a successful pull of
// host/repo with the annotation document text: resolve it, and record it
// under the ref the layer snapshots are labelled with. It returns the ref.
func (e *Env) Pull(t testing.TB, host, repo, text string) string {
	t.Helper()
	h, err := registry.NormalizeHost(host)
	if err != nil {
		t.Fatal(err)
	}
	docs, err := document.Parse("annotation b9.beam.cloud/image-credentials", text, h)
	if err != nil {
		t.Fatal(err)
	}
	reg := registry.Detect(h)
	cred, err := e.Keychain.Resolve(context.Background(), reg, docs[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Store.Record(cred.Ref, reg, repo, docs[0]); err != nil {
		t.Fatal(err)
	}
	return cred.Ref
}
