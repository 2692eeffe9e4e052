package credclient_test

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"google.golang.org/grpc"

	"github.com/beam-cloud/b9-resolver/internal/keychain"
	"github.com/beam-cloud/b9-resolver/internal/keychain/document"
	"github.com/beam-cloud/b9-resolver/internal/keychain/registry"
	"github.com/beam-cloud/b9-resolver/internal/secret"
	"github.com/beam-cloud/b9-resolver/internal/testutil/keychaintest"
	"github.com/beam-cloud/b9-resolver/pkg/credclient"
	"github.com/beam-cloud/b9-resolver/plugin/credentials"
	"github.com/beam-cloud/b9-resolver/plugin/credentials/credtest"
)

const (
	canary = "CANARY-client-91bc3e"
	host   = "registry.c.example"
	ecr    = "123456789012.dkr.ecr.us-east-1.amazonaws.com"
)

type env = credtest.Env

func start(t testing.TB, kopts ...keychain.Option) *env {
	t.Helper()
	kc := keychaintest.New(t, kopts...)
	t.Cleanup(kc.Close)
	return credtest.Start(t, credentials.Config{Keychain: kc})
}

func basic(user, pass string) string {
	return fmt.Sprintf(`{"type":"basic","credentials":{"USERNAME":%q,"PASSWORD":%q}}`, user, pass)
}

func client(t testing.TB, addr string, opts ...credclient.Option) *credclient.Client {
	t.Helper()
	c, err := credclient.New(addr, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
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

// minter is an "aws" provider minting numbered tokens of a fixed life.
type minter struct {
	life  time.Duration
	now   func() time.Time
	mints atomic.Int64
}

func (m *minter) Type() document.Type { return document.TypeAWS }
func (m *minter) Mint(context.Context, registry.Registry, document.Document) (keychain.Minted, error) {
	n := m.mints.Add(1)
	return keychain.Minted{Username: "AWS", Secret: secret.New(fmt.Sprintf("tok-%d", n)), ExpiresAt: m.now().Add(m.life)}, nil
}

// The cache serves a credential until its expiry nears, then asks again
// and gets the re-minted one; it never hands out an expired token.
func TestCacheHonoursExpiry(t *testing.T) {
	clk := &clock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	m := &minter{life: 10 * time.Minute, now: clk.Now}
	e := start(t, keychain.WithProvider(m), keychain.WithClock(clk.Now))
	ref := e.Pull(t, ecr, "team/model", `{"AWS_ACCESS_KEY_ID":"AKIAEXAMPLE","AWS_SECRET_ACCESS_KEY":"s","AWS_REGION":"us-east-1"}`)
	c := client(t, e.Addr, credclient.WithClock(clk.Now), credclient.WithCacheTTL(time.Hour))
	req := credclient.Request{Host: ecr, Repository: "team/model", CredentialRef: ref}
	ctx := context.Background()

	first, err := c.GetCredentials(ctx, req)
	if err != nil || first.Secret != "tok-1" || first.ExpiresAt.IsZero() {
		t.Fatalf("first: %v %v", first, err)
	}
	rpcs := e.RPCs()
	clk.Add(5 * time.Minute)
	if got, _ := c.GetCredentials(ctx, req); got.Secret != "tok-1" || e.RPCs() != rpcs {
		t.Fatalf("mid-life: want the cached tok-1 without a call, got %s (%d calls)", got.Secret, e.RPCs()-rpcs)
	}
	// Inside the margin before expiry (10% of life = 1 min): ask again.
	clk.Add(4*time.Minute + 30*time.Second)
	got, err := c.GetCredentials(ctx, req)
	if err != nil || e.RPCs() != rpcs+1 {
		t.Fatalf("near expiry: want one call, got %d (%v)", e.RPCs()-rpcs, err)
	}
	// The keychain still holds tok-1 usable for 30 s more; either way it
	// is valid now.
	if !got.ExpiresAt.After(clk.Now()) {
		t.Fatalf("served a credential expiring at %s at %s", got.ExpiresAt, clk.Now())
	}
	clk.Add(time.Hour)
	got, err = c.GetCredentials(ctx, req)
	if err != nil || got.Secret == "tok-1" || !got.ExpiresAt.After(clk.Now()) {
		t.Fatalf("an hour later: want a re-minted token, got %v %v", got, err)
	}
}

// A non-expiring answer is reused for the TTL only, so a newer pull's
// credential for the same repository reaches the client.
func TestCacheTTLAndNoNegativeCaching(t *testing.T) {
	clk := &clock{t: time.Unix(1_800_000_000, 0)}
	e := start(t)
	c := client(t, e.Addr, credclient.WithClock(clk.Now), credclient.WithCacheTTL(30*time.Second))
	req := credclient.Request{Host: host, Repository: "team/app"}
	ctx := context.Background()

	if _, err := c.GetCredentials(ctx, req); !errdefs.IsNotFound(err) {
		t.Fatalf("before any pull: %v", err)
	}
	e.Pull(t, host, "team/app", basic("a", canary+"-1"))
	if got, err := c.GetCredentials(ctx, req); err != nil || got.Secret != canary+"-1" {
		t.Fatalf("NotFound was cached: %v %v", got, err)
	}
	e.Pull(t, host, "team/app", basic("a", canary+"-2"))
	if got, _ := c.GetCredentials(ctx, req); got.Secret != canary+"-1" {
		t.Fatalf("within the TTL: got %s", got.Secret)
	}
	clk.Add(31 * time.Second)
	if got, _ := c.GetCredentials(ctx, req); got.Secret != canary+"-2" {
		t.Fatalf("after the TTL: got %s", got.Secret)
	}
	c.Forget()
	before := e.RPCs()
	if _, err := c.GetCredentials(ctx, req); err != nil || e.RPCs() != before+1 {
		t.Fatalf("Forget did not drop the cache: %v", err)
	}
}

// Concurrent misses share one call: CLIP fetches layers in parallel.
func TestConcurrentMissesShareOneCall(t *testing.T) {
	e := start(t)
	e.Pull(t, host, "team/app", basic("a", canary))
	c := client(t, e.Addr)
	var wg sync.WaitGroup
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if got, err := c.GetCredentials(context.Background(), credclient.Request{Host: host, Repository: "team/app"}); err != nil || got.Secret != canary {
				t.Errorf("%v %v", got, err)
			}
		}()
	}
	wg.Wait()
	if n := e.RPCs(); n > 2 {
		t.Fatalf("%d calls for 32 concurrent misses", n)
	}
}

func TestServiceDown(t *testing.T) {
	c := client(t, filepath.Join(t.TempDir(), "nobody.sock"), credclient.WithTimeout(5*time.Second))
	start := time.Now()
	_, err := c.GetCredentials(context.Background(), credclient.Request{Host: host, Repository: "x"})
	if !errdefs.IsUnavailable(err) {
		t.Fatalf("want Unavailable, got %v", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("a missing socket took %s to fail", d)
	}
}

// countingConn counts the writes a client makes on its socket.
type countingConn struct {
	net.Conn
	writes *atomic.Int64
}

func (c countingConn) Write(p []byte) (int, error) { c.writes.Add(1); return c.Conn.Write(p) }

// A warm call costs the client one socket write, not three: grpc-go's
// BDP probing (a PING per call, and the ack of the server's) is off on
// both ends, so a call is one request out and one answer back.
func TestWarmCallIsOneWrite(t *testing.T) {
	e := start(t)
	e.Pull(t, host, "team/app", basic("a", canary))
	var writes atomic.Int64
	dialer := func(ctx context.Context, addr string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, "unix", strings.TrimPrefix(addr, "unix://"))
		return countingConn{c, &writes}, err
	}
	c := client(t, e.Addr, credclient.WithCacheTTL(0), credclient.WithDialOptions(grpc.WithContextDialer(dialer)))
	req := credclient.Request{Host: host, Repository: "team/app"}
	ctx := context.Background()
	for range 20 { // connection preface, settings, first window updates
		if _, err := c.GetCredentials(ctx, req); err != nil {
			t.Fatal(err)
		}
	}
	const calls = 200
	before := writes.Load()
	for range calls {
		if _, err := c.GetCredentials(ctx, req); err != nil {
			t.Fatal(err)
		}
	}
	if n := writes.Load() - before; n > calls+calls/10 {
		t.Fatalf("%d calls made %d socket writes; want about one each", calls, n)
	}
}
