package resolver

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/beam-cloud/b9-resolver/internal/testutil/keychaintest"
	"github.com/beam-cloud/b9-resolver/internal/testutil/registrytest"
)

// A mirror with override_path serves the repository "mirror/<name>": its
// challenge asks for repository:mirror/alice/app:pull, while containerd's
// request scope says repository:alice/app:pull, and the token server
// grants only what is asked. The challenge's scope is remembered
// node-wide with the challenge, so every later binding (containerd binds
// afresh for each Resolve and each Fetcher) and every later pull asks for
// the token the registry wants up front: the second pull makes no token
// request and draws no 401. (With the scope kept per binding, each new
// binding fetched a token without it and drew a 401.)
func TestChallengeScopeRememberedAcrossBindings(t *testing.T) {
	ctx, logs := testContext(t)
	reg := registrytest.Start(t, registrytest.WithTokenAuth(), registrytest.WithUser("alice", alicePass, "mirror/alice/app"))
	reg.PushRandomImage(t, "mirror/alice/app", "v1", "alice", alicePass)
	reg.Reset()
	const upstream = "upstream.b9test"
	root := t.TempDir()
	writeHosts(t, root, upstream, fmt.Sprintf(`server = "https://%s"

[host."http://%s/v2/mirror"]
  capabilities = ["pull", "resolve"]
  override_path = true
`, upstream, reg.Host))
	kc := keychaintest.New(t)
	defer kc.Close()
	d := docs(t, [3]string{reg.Host, "alice", alicePass})
	res := mustNew(t, WithConfigPath(root))
	ref := upstream + "/alice/app:v1"

	if err := pull(ctx, res.Hosts(FromKeychain(kc, d)), ref, newStore(t)); err != nil {
		t.Fatalf("first pull: %v\n%s", err, reg.Summary())
	}
	if reg.Unauthorized() != 1 || reg.TokenFetches() != 1 {
		t.Fatalf("first pull: %d 401s, %d token requests; want 1 (first contact) and 1\n%s", reg.Unauthorized(), reg.TokenFetches(), reg.Summary())
	}
	reg.Reset()
	if err := pull(ctx, res.Hosts(FromKeychain(kc, d)), ref, newStore(t)); err != nil {
		t.Fatalf("second pull: %v\n%s", err, reg.Summary())
	}
	if reg.Unauthorized() != 0 || reg.TokenFetches() != 0 {
		t.Fatalf("second pull: %d 401s, %d token requests; want none\n%s", reg.Unauthorized(), reg.TokenFetches(), reg.Summary())
	}
	noCanary(t, logs.String())
}

// A challenge remembered from an earlier pull whose token endpoint now
// refuses (the registry moved its realm): the request is sent once without
// a token, the registry's 401 teaches the current challenge, and the pull
// succeeds — where it used to fail on the stale realm.
func TestStaleChallengeIsRelearnt(t *testing.T) {
	ctx, logs := testContext(t)
	reg := registrytest.Start(t, registrytest.WithTokenAuth(), registrytest.WithUser("alice", alicePass))
	img := reg.PushRandomImage(t, "alice/app", "v1", "alice", alicePass)
	reg.Reset()
	gone := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusGone) }))
	defer gone.Close()
	kc := keychaintest.New(t)
	defer kc.Close()
	res := mustNew(t)
	res.Authorizer().challenges.set(reg.Host, challenge{scheme: schemeBearer, realm: gone.URL + "/token", service: reg.Service})

	if err := pull(ctx, res.Hosts(FromKeychain(kc, docs(t, [3]string{"", "alice", alicePass}))), img.Ref, newStore(t)); err != nil {
		t.Fatalf("pull: %v\n%s", err, reg.Summary())
	}
	if reg.Unauthorized() != 1 || reg.TokenFetches() != 1 {
		t.Fatalf("want one 401 (re-learning the challenge) and one token request, got %d, %d\n%s", reg.Unauthorized(), reg.TokenFetches(), reg.Summary())
	}
	if ch, _ := res.Authorizer().challenges.get(reg.Host); ch.realm != reg.Realm {
		t.Errorf("remembered realm %q, want %q", ch.realm, reg.Realm)
	}
	noCanary(t, logs.String())
}

// A registry writes the scopes: what is remembered per entry is bounded.
func TestScopeMemoryIsBounded(t *testing.T) {
	var s scopeMemory
	req := []string{"repository:a:pull"}
	var asked []string
	for i := range 100 {
		asked = append(asked, fmt.Sprintf("repository:x%d:pull", i))
	}
	asked = append(asked, "repository:"+strings.Repeat("y", 4096)+":pull")
	s.learn("h", req, asked)
	s.learn("h", req, asked)
	if got := s.extra("h", req); len(got) != maxExtraScopes {
		t.Errorf("%d extra scopes remembered, want %d", len(got), maxExtraScopes)
	}
	s.learn("h", req, []string{"repository:a:pull"})
	if got := s.extra("h2", req); got != nil {
		t.Errorf("another host got %v", got)
	}
}

func TestScopeMemoryBoundsEntries(t *testing.T) {
	var s scopeMemory
	extra := []string{"repository:mirror/x:pull"}
	last := []string{}
	for i := range maxRememberedScopes + 10 {
		last = []string{fmt.Sprintf("repository:r%d:pull", i)}
		s.learn(fmt.Sprintf("h%d", i%3), last, extra)
	}
	total := 0
	for _, es := range s.m {
		total += len(es)
	}
	if total != maxRememberedScopes || s.n != total {
		t.Errorf("%d entries kept (counted %d), want %d", total, s.n, maxRememberedScopes)
	}
	if got := s.extra(fmt.Sprintf("h%d", (maxRememberedScopes+9)%3), last); !slices.Equal(got, extra) {
		t.Errorf("the newest entry was lost: %v", got)
	}
}
