package resolver

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/core/remotes"
	"github.com/containerd/containerd/v2/core/remotes/docker"
	"github.com/containerd/containerd/v2/plugins/content/local"
	"github.com/containerd/log"
	"github.com/sirupsen/logrus"

	"github.com/beam-cloud/b9-resolver/internal/keychain"
	"github.com/beam-cloud/b9-resolver/internal/keychain/document"
	"github.com/beam-cloud/b9-resolver/internal/keychain/registry"
	"github.com/beam-cloud/b9-resolver/internal/testutil/registrytest"
)

// Canary secrets: no error or log line may contain them.
const (
	alicePass = "canary-alice-S3cret-7a1f"
	bobPass   = "canary-bob-S3cret-02de"
)

// docs parses one credential document per (registry, user, password); an
// empty registry means "the image's registry".
func docs(t testing.TB, entries ...[3]string) []document.Document {
	t.Helper()
	var out []document.Document
	for i, e := range entries {
		reg := ""
		if e[0] != "" {
			reg = fmt.Sprintf(`"registry":%q,`, e[0])
		}
		text := fmt.Sprintf(`{%s"type":"basic","credentials":{"USERNAME":%q,"PASSWORD":%q}}`, reg, e[1], e[2])
		d, err := document.Parse(fmt.Sprintf("b9.beam.cloud/image-credentials.test%d", i), text, "")
		if err != nil {
			t.Fatalf("document: %v", err)
		}
		out = append(out, d...)
	}
	return out
}

// countingCreds counts Credential and Invalidate calls.
type countingCreds struct {
	Credentials
	calls, invalidations atomic.Int64
}

func (c *countingCreds) Credential(ctx context.Context, reg registry.Registry, mirror bool) (keychain.Credential, error) {
	c.calls.Add(1)
	return c.Credentials.Credential(ctx, reg, mirror)
}

func (c *countingCreds) Invalidate(cred keychain.Credential) {
	c.invalidations.Add(1)
	c.Credentials.Invalidate(cred)
}

// logCapture is a per-test debug logger (containerd/log reads it from the
// context, so nothing global changes).
type logCapture struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logCapture) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logCapture) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func testContext(t testing.TB) (context.Context, *logCapture) {
	lc := &logCapture{}
	lg := logrus.New()
	lg.SetOutput(lc)
	lg.SetLevel(logrus.TraceLevel)
	ctx := log.WithLogger(t.Context(), logrus.NewEntry(lg))
	return ctx, lc
}

// pull resolves ref and fetches everything it points to into store, as
// containerd's client.Pull does before unpacking.
func pull(ctx context.Context, hosts docker.RegistryHosts, ref string, store content.Store) error {
	res := docker.NewResolver(docker.ResolverOptions{Hosts: hosts})
	name, desc, err := res.Resolve(ctx, ref)
	if err != nil {
		return err
	}
	f, err := res.Fetcher(ctx, name)
	if err != nil {
		return err
	}
	return images.Dispatch(ctx, images.Handlers(remotes.FetchHandler(store, f), images.ChildrenHandler(store)), nil, desc)
}

func newStore(t testing.TB) content.Store {
	t.Helper()
	s, err := local.NewStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// noCanary fails if any of texts holds a canary secret.
func noCanary(t testing.TB, texts ...string) {
	t.Helper()
	for _, s := range texts {
		for _, c := range []string{alicePass, bobPass} {
			if strings.Contains(s, c) {
				t.Fatalf("canary secret leaked into: %s", s)
			}
		}
	}
}

// count counts reg's requests matching all preds.
func count(reg *registrytest.Registry, preds ...func(registrytest.Request) bool) int {
	return reg.Count(func(q registrytest.Request) bool {
		for _, p := range preds {
			if !p(q) {
				return false
			}
		}
		return true
	})
}

func onServer(s registrytest.Server) func(registrytest.Request) bool {
	return func(q registrytest.Request) bool { return q.Server == s }
}

func withStatus(code int) func(registrytest.Request) bool {
	return func(q registrytest.Request) bool { return q.Status == code }
}

var (
	withAuth    = func(q registrytest.Request) bool { return q.HadAuth() }
	withoutAuth = func(q registrytest.Request) bool { return !q.HadAuth() }
	isHead      = func(q registrytest.Request) bool { return q.Method == http.MethodHead }
)

// writeHosts writes root/<host dir>/hosts.toml for host.
func writeHosts(t testing.TB, root, host, body string) string {
	t.Helper()
	dir := filepath.Join(root, host)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "hosts.toml")
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func errorsAs(err error, target any) bool { return errors.As(err, target) }

// basicValue is the base64 of user:pass, as in a Basic Authorization header.
func basicValue(user, pass string) string {
	return base64.StdEncoding.EncodeToString([]byte(user + ":" + pass))
}

// mustNew is New with options that must be valid.
func mustNew(t testing.TB, opts ...Option) *Resolver {
	t.Helper()
	r, err := New(opts...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return r
}

// mustAuthorizer is NewAuthorizer with options that must be valid.
func mustAuthorizer(t testing.TB, opts ...AuthorizerOption) *Authorizer {
	t.Helper()
	a, err := NewAuthorizer(opts...)
	if err != nil {
		t.Fatalf("NewAuthorizer: %v", err)
	}
	return a
}
