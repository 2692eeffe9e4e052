package service

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/core/remotes/docker"
	remoteserrors "github.com/containerd/containerd/v2/core/remotes/errors"
	"github.com/containerd/errdefs"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/beam-cloud/b9-resolver/internal/keychain"
	"github.com/beam-cloud/b9-resolver/internal/keychain/chain"
	"github.com/beam-cloud/b9-resolver/internal/keychain/document"
	"github.com/beam-cloud/b9-resolver/internal/keychain/registry"
	"github.com/beam-cloud/b9-resolver/internal/resolver"
	"github.com/beam-cloud/b9-resolver/internal/secret"
	"github.com/beam-cloud/b9-resolver/internal/testutil/keychaintest"
)

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

// userSecret asks pa for host's credential as the resolver does and
// returns what would be sent.
func userSecret(t *testing.T, pa *pullAuth, host string) (user, secret string, identity bool) {
	t.Helper()
	c, err := pa.Credential(context.Background(), registry.Detect(host), false)
	if err != nil {
		t.Fatalf("%s: %v", host, err)
	}
	return c.Username, c.Secret.Reveal(), c.IdentityToken
}

func newTestPullAuth(t *testing.T, imageHost string, ann map[string]string, auth *runtime.AuthConfig, node chain.Chain, strict bool) *pullAuth {
	t.Helper()
	docs, err := document.FromAnnotations(ann, "", imageHost)
	if err != nil {
		t.Fatal(err)
	}
	a, err := chain.FromAuthConfig(auth, imageHost, nil)
	if err != nil {
		t.Fatal(err)
	}
	kc := keychaintest.New(t)
	t.Cleanup(kc.Close)
	return newPullAuth(kc, nil, &requestSources{imageHost: imageHost, annotations: docs, auth: a, node: node}, strict)
}

func TestCredentialsPerHost(t *testing.T) {
	ann := map[string]string{
		annKey:           "alice:" + canaryPass,
		annKey + ".ghcr": `{"registry":"ghcr.io","GITHUB_TOKEN":"` + canaryToken + `"}`,
	}
	pa := newTestPullAuth(t, "127.0.0.1:5000", ann, nil, nil, true)
	for host, wantUser := range map[string]string{
		"127.0.0.1:5000": "alice",
		"ghcr.io":        "x-access-token",
		// A mirror the pull is sent to gets nothing: the unnamed document
		// is for the image's own registry only.
		"mirror.local:5000": "",
	} {
		user, secret, _ := userSecret(t, pa, host)
		if user != wantUser || (wantUser == "") != (secret == "") {
			t.Errorf("%s: user %q (secret set %v), want %q", host, user, secret != "", wantUser)
		}
	}
	u, _ := pa.presentedTo("127.0.0.1:5000")
	if u.cred.Ref == "" || u.cred.Source != "annotation "+annKey {
		t.Errorf("presented %+v, want a keychain ref and the annotation as source", u.cred)
	}
}

func TestIdentityTokenAuth(t *testing.T) {
	pa := newTestPullAuth(t, "myreg.azurecr.io", nil, &runtime.AuthConfig{IdentityToken: canaryToken}, nil, true)
	user, secret, identity := userSecret(t, pa, "myreg.azurecr.io")
	if user != "" || secret != canaryToken || !identity {
		t.Errorf("identity token: user %q secret set %v identity %v; want the token as an identity token", user, secret != "", identity)
	}
}

func TestAuthServerAddressPins(t *testing.T) {
	pa := newTestPullAuth(t, "127.0.0.1:5000", nil, &runtime.AuthConfig{Username: "u", Password: canaryPass, ServerAddress: "https://other.example"}, nil, true)
	if user, _, _ := userSecret(t, pa, "127.0.0.1:5000"); user != "" {
		t.Errorf("auth for other.example offered to the image host as %q", user)
	}
	if user, _, _ := userSecret(t, pa, "other.example"); user != "u" {
		t.Errorf("auth not offered to its server_address host: %q", user)
	}
}

func TestScrub(t *testing.T) {
	pa := newTestPullAuth(t, "127.0.0.1:5000", map[string]string{annKey: "alice:" + canaryPass}, nil, nil, true)
	if _, err := pa.credential(context.Background(), "127.0.0.1:5000"); err != nil {
		t.Fatal(err)
	}
	msg := pa.scrub("got " + canaryPass + " and Basic " + b64("alice:"+canaryPass))
	if strings.Contains(msg, canaryPass) || strings.Contains(msg, b64("alice:"+canaryPass)) {
		t.Errorf("scrub left a secret: %s", msg)
	}
}

func TestClass(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want error
	}{
		{fmt.Errorf("resolve: %w", remoteserrors.ErrUnexpectedStatus{StatusCode: 401}), errdefs.ErrUnauthenticated},
		{fmt.Errorf("token: %w", remoteserrors.ErrUnexpectedStatus{StatusCode: 403}), errdefs.ErrPermissionDenied},
		{fmt.Errorf("pull access denied: %w", docker.ErrInvalidAuthorization), errdefs.ErrUnauthenticated},
		// A registry's refusal is typed: its error code decides, not text.
		{fmt.Errorf("resolve: %w", &resolver.RefusedError{Host: "r.example", Code: resolver.CodeInsufficientScope, Scheme: "bearer", Source: "s"}), errdefs.ErrPermissionDenied},
		{fmt.Errorf("resolve: %w", &resolver.RefusedError{Host: "r.example", Code: resolver.CodeInvalidToken, Scheme: "bearer", Source: "s"}), errdefs.ErrUnauthenticated},
		{fmt.Errorf("resolve: %w", &resolver.RefusedError{Host: "insufficient_scope.example", Scheme: "basic", Source: "insufficient_scope"}), errdefs.ErrUnauthenticated},
		{fmt.Errorf("x:latest: %w", errdefs.ErrNotFound), errdefs.ErrNotFound},
		{&document.Error{Source: "annotation k", Field: "type", Reason: "bad"}, errdefs.ErrInvalidArgument},
	} {
		if got := class(tc.err); !errors.Is(got, tc.want) {
			t.Errorf("class(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}

// The service's pull flights: one pull for concurrent callers, not
// cancelled by one caller leaving, cancelled once all have.
func TestFlightShares(t *testing.T) {
	g := newPullFlights[string]()
	var calls atomic.Int32
	release := make(chan struct{})
	fn := func(ctx context.Context) (string, error) {
		calls.Add(1)
		select {
		case <-release:
			return "sha256:one", nil
		case <-ctx.Done():
			return "", ctx.Err()
		}
	}
	// The first caller gives up; the pull must go on for the others.
	impatient, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	results := make(chan string, 3)
	wg.Add(1)
	go func() {
		defer wg.Done()
		_, _, err := g.Do(impatient, "k", fn)
		if !errors.Is(err, context.Canceled) {
			t.Errorf("impatient caller: %v", err)
		}
	}()
	time.Sleep(20 * time.Millisecond)
	for range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			v, _, err := g.Do(context.Background(), "k", fn)
			if err != nil {
				t.Errorf("patient caller: %v", err)
			}
			results <- v
		}()
	}
	time.Sleep(20 * time.Millisecond)
	cancel()
	time.Sleep(20 * time.Millisecond)
	close(release)
	wg.Wait()
	close(results)
	for v := range results {
		if v != "sha256:one" {
			t.Errorf("result %q", v)
		}
	}
	if n := calls.Load(); n != 1 {
		t.Errorf("%d pulls, want 1 shared", n)
	}

	// When every caller leaves, the pull is cancelled.
	ctx, cancel2 := context.WithCancel(context.Background())
	stopped := make(chan error, 1)
	go func() {
		_, _, _ = g.Do(ctx, "k2", func(ctx context.Context) (string, error) {
			<-ctx.Done()
			stopped <- ctx.Err()
			return "", ctx.Err()
		})
	}()
	time.Sleep(20 * time.Millisecond)
	cancel2()
	select {
	case <-stopped:
	case <-time.After(5 * time.Second):
		t.Error("pull not cancelled after its only caller left")
	}
}

func TestInvalidateResolvesAgainButKeepsTheRecord(t *testing.T) {
	pa := newTestPullAuth(t, "127.0.0.1:5000", map[string]string{annKey: "alice:" + canaryPass}, nil, nil, true)
	reg := registry.Detect("127.0.0.1:5000")
	c1, err := pa.Credential(context.Background(), reg, false)
	if err != nil {
		t.Fatal(err)
	}
	pa.Invalidate(c1)
	if u, ok := pa.presentedTo("127.0.0.1:5000"); !ok || u.cred.Source != "annotation "+annKey {
		t.Errorf("after Invalidate the error message would not name the credential: %+v %v", u.cred, ok)
	}
	c2, err := pa.Credential(context.Background(), reg, false)
	if err != nil || c2.Username != "alice" {
		t.Fatalf("re-resolve after Invalidate: %+v %v", c2, err)
	}
	if u, _ := pa.presentedTo("127.0.0.1:5000"); u.stale {
		t.Error("the re-resolved credential is still marked stale")
	}
}

func TestSourceIsThisPullsEvenOnACacheHit(t *testing.T) {
	kc := keychaintest.New(t)
	defer kc.Close()
	resolve := func(key string) keychain.Credential {
		docs, err := document.FromAnnotations(map[string]string{key: "alice:" + canaryPass}, "", "127.0.0.1:5000")
		if err != nil {
			t.Fatal(err)
		}
		pa := newPullAuth(kc, nil, &requestSources{imageHost: "127.0.0.1:5000", annotations: docs}, true)
		c, err := pa.credential(context.Background(), "127.0.0.1:5000")
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	first, second := resolve(annKey+".one"), resolve(annKey+".two")
	if first.Ref != second.Ref {
		t.Errorf("same secret, different cache entries: %s %s", first.Ref, second.Ref)
	}
	if second.Source != "annotation "+annKey+".two" {
		t.Errorf("second pull's source %q, want its own annotation", second.Source)
	}
}

// The shared-pull key is the full hash of every source's full identity:
// pulls share only when every credential is the same, and no 12-digit
// fingerprint (searchable for a collision) is part of it.
func TestPullIdentityIsAFullHash(t *testing.T) {
	const host = "127.0.0.1:5000"
	id := func(ann map[string]string, auth *runtime.AuthConfig) string {
		return newTestPullAuth(t, host, ann, auth, nil, true).identity()
	}
	alice := id(map[string]string{annKey: "alice:" + canaryPass}, nil)
	docs, err := document.FromAnnotations(map[string]string{annKey: "alice:" + canaryPass}, "", host)
	if err != nil {
		t.Fatal(err)
	}
	if want := secret.Hash(docs[0].Identity()); alice != want {
		t.Fatalf("identity %q, want the full hash of the document's identity %q", alice, want)
	}
	if again := id(map[string]string{annKey: "alice:" + canaryPass}, nil); again != alice {
		t.Error("the same credentials give two shared-pull keys")
	}
	tok := func(s string) *runtime.AuthConfig { return &runtime.AuthConfig{IdentityToken: s} }
	for name, other := range map[string]string{
		"another password":       id(map[string]string{annKey: "alice:" + canaryPass + "x"}, nil),
		"an added auth token":    id(map[string]string{annKey: "alice:" + canaryPass}, tok(canaryToken)),
		"only an identity token": id(nil, tok(canaryToken)),
	} {
		if other == alice || len(other) != len(alice) {
			t.Errorf("%s: shared-pull key %q (alice's %q)", name, other, alice)
		}
	}
	if id(nil, tok(canaryToken)) == id(nil, tok(canaryToken+"x")) {
		t.Error("two identity tokens share a shared-pull key")
	}
}

// lifeProvider mints numbered aws-type tokens of a fixed life.
type lifeProvider struct {
	life  time.Duration
	mints atomic.Int32
}

func (*lifeProvider) Type() document.Type { return document.TypeAWS }

func (p *lifeProvider) Mint(context.Context, registry.Registry, document.Document) (keychain.Minted, error) {
	n := p.mints.Add(1)
	return keychain.Minted{Username: "AWS", Secret: secret.New(fmt.Sprintf("tok-%d", n)), ExpiresAt: time.Now().Add(p.life)}, nil
}

// A pull keeps its credential for a host — unless it nears expiry: then
// each use asks the keychain again, so a re-mint (here forced by another
// pull's rejection) reaches a long-running pull before the old one dies.
func TestNearExpiryCredentialIsAskedForAgain(t *testing.T) {
	const host = "123456789012.dkr.ecr.us-east-1.amazonaws.com"
	for _, tt := range []struct {
		life time.Duration
		want string // the second use's token
	}{
		{12 * time.Hour, "tok-1"},
		{keychain.DefaultMaxMargin / 2, "tok-2"},
	} {
		p := &lifeProvider{life: tt.life}
		kc := keychaintest.New(t, keychain.WithProvider(p))
		docs, err := document.FromAnnotations(map[string]string{annKey: `{"type":"aws","credentials":{"AWS_ACCESS_KEY_ID":"AKID","AWS_SECRET_ACCESS_KEY":"` + canaryPass + `"}}`}, "", host)
		if err != nil {
			t.Fatal(err)
		}
		pa := newPullAuth(kc, nil, &requestSources{imageHost: host, annotations: docs}, true)
		first, err := pa.credential(context.Background(), host)
		if err != nil || first.Secret.Reveal() != "tok-1" {
			t.Fatalf("life %v: first use %v %v", tt.life, first.Secret.Reveal(), err)
		}
		kc.Invalidate(first)
		second, err := pa.credential(context.Background(), host)
		if err != nil || second.Secret.Reveal() != tt.want {
			t.Errorf("life %v: second use got %q (%v), want %s", tt.life, second.Secret.Reveal(), err, tt.want)
		}
		kc.Close()
	}
}
