package credentials

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containerd/errdefs"

	"github.com/beam-cloud/b9-resolver/internal/keychain"
	"github.com/beam-cloud/b9-resolver/internal/keychain/document"
	"github.com/beam-cloud/b9-resolver/internal/keychain/registry"
	"github.com/beam-cloud/b9-resolver/internal/secret"
	"github.com/beam-cloud/b9-resolver/internal/testutil/keychaintest"
)

func TestLookupRules(t *testing.T) {
	ctx := context.Background()
	kc := keychaintest.New(t)
	defer kc.Close()
	st := memStore(t)
	nodeCalls := 0
	node := func(_ context.Context, reg registry.Registry, repo string) (keychain.Credential, bool, error) {
		nodeCalls++
		if reg.Host != "node.example" {
			return keychain.Credential{}, false, nil
		}
		return keychain.Credential{Registry: reg, Username: "node", Secret: secret.New("node-pass"), Source: "node_credentials.documents"}, true, nil
	}
	srv := newServer(t, kc, st, func(c *Config) { c.NodeCredentials = node })

	refA := pull(t, kc, st, hostA, "team/app", basicDoc(t, hostA, "alice", canaryA))

	// Rule 1: the ref names exactly its credential.
	cred, err := srv.Lookup(ctx, Query{Host: hostA, Repository: "team/app", CredentialRef: refA})
	if err != nil || cred.Secret.Reveal() != canaryA || cred.Username != "alice" || cred.Ref != refA {
		t.Fatalf("ref lookup: %v %v", cred, err)
	}
	// Unknown ref: NotFound, and no fall-through to the repository record.
	_, err = srv.Lookup(ctx, Query{Host: hostA, Repository: "team/app", CredentialRef: "sha256:000000000000"})
	wantClass(t, err, isNotFound, "NotFound")
	// A ref asked for on another registry: NotFound.
	_, err = srv.Lookup(ctx, Query{Host: "other.example", Repository: "team/app", CredentialRef: refA})
	wantClass(t, err, isNotFound, "NotFound")

	// Rule 2: most recent successful credential for host/repository.
	cred, err = srv.Lookup(ctx, Query{Host: hostA, Repository: "team/app"})
	if err != nil || cred.Secret.Reveal() != canaryA {
		t.Fatalf("repository lookup: %v %v", cred, err)
	}
	refB := pull(t, kc, st, hostA, "team/app", basicDoc(t, hostA, "bob", canaryB))
	cred, err = srv.Lookup(ctx, Query{Host: hostA, Repository: "/team/app/"})
	if err != nil || cred.Secret.Reveal() != canaryB || cred.Ref != refB {
		t.Fatalf("most recent should win: %v %v", cred, err)
	}
	// ...while the older pull's ref still answers the older credential.
	cred, err = srv.Lookup(ctx, Query{Host: hostA, Repository: "team/app", CredentialRef: refA})
	if err != nil || cred.Secret.Reveal() != canaryA {
		t.Fatalf("older ref after a newer pull: %v %v", cred, err)
	}
	// image_ref alone selects host and repository.
	cred, err = srv.Lookup(ctx, Query{ImageRef: hostA + "/team/app:v1"})
	if err != nil || cred.Secret.Reveal() != canaryB {
		t.Fatalf("image_ref lookup: %v %v", cred, err)
	}

	// Rule 3: node credentials when nothing was recorded.
	cred, err = srv.Lookup(ctx, Query{Host: "node.example", Repository: "x/y"})
	if err != nil || cred.Username != "node" || nodeCalls == 0 {
		t.Fatalf("node fallback: %v %v (calls %d)", cred, err, nodeCalls)
	}
	// A recorded repository never reaches the node function.
	nodeCalls = 0
	if _, err := srv.Lookup(ctx, Query{Host: hostA, Repository: "team/app"}); err != nil || nodeCalls != 0 {
		t.Fatalf("recorded repo consulted node credentials: %v calls=%d", err, nodeCalls)
	}
	// Rule 4: NotFound.
	_, err = srv.Lookup(ctx, Query{Host: hostA, Repository: "team/never-pulled"})
	wantClass(t, err, isNotFound, "NotFound")
	// Without a node function too.
	srvNoNode := newServer(t, kc, st)
	_, err = srvNoNode.Lookup(ctx, Query{Host: "node.example", Repository: "x/y"})
	wantClass(t, err, isNotFound, "NotFound")

	// Bad input is InvalidArgument.
	_, err = srv.Lookup(ctx, Query{Repository: "x"})
	wantClass(t, err, errdefs.IsInvalidArgument, "InvalidArgument")
	_, err = srv.Lookup(ctx, Query{Host: "bad host/x"})
	wantClass(t, err, errdefs.IsInvalidArgument, "InvalidArgument")
}

func TestPublicPullAnswersAnonymous(t *testing.T) {
	kc := keychaintest.New(t)
	defer kc.Close()
	st := memStore(t)
	srv := newServer(t, kc, st, func(c *Config) {
		c.NodeCredentials = func(context.Context, registry.Registry, string) (keychain.Credential, bool, error) {
			t.Error("a public pull must not fall back to node credentials")
			return keychain.Credential{}, false, nil
		}
	})
	pull(t, kc, st, "ghcr.io", "org/public", publicDoc(t, "ghcr.io"))
	cred, err := srv.Lookup(context.Background(), Query{Host: "ghcr.io", Repository: "org/public"})
	if err != nil || !cred.Anonymous || !cred.Secret.IsZero() {
		t.Fatalf("want an explicit anonymous answer, got %v %v", cred, err)
	}
}

func TestDockerHubNames(t *testing.T) {
	kc := keychaintest.New(t)
	defer kc.Close()
	st := memStore(t)
	srv := newServer(t, kc, st)
	// The CRI service records under the canonical name and repository.
	ref := pull(t, kc, st, "docker.io", "library/ubuntu", basicDoc(t, "docker.io", "hubuser", canaryA))
	for _, q := range []Query{
		{Host: "index.docker.io", Repository: "library/ubuntu"},             // CLIP
		{Host: "registry-1.docker.io", Repository: "library/ubuntu"},        // containerd
		{Host: "docker.io", Repository: "ubuntu"},                           // short name
		{Host: "https://index.docker.io/v1/", Repository: "ubuntu"},         // docker config key
		{Host: "registry-1.docker.io", Repository: "x", CredentialRef: ref}, // ref: repository irrelevant
		{ImageRef: "ubuntu:22.04"},
	} {
		cred, err := srv.Lookup(context.Background(), q)
		if err != nil || cred.Secret.Reveal() != canaryA {
			t.Errorf("%+v: %v %v", q, cred, err)
		}
	}
}

// Two pods, two repositories, two secrets: every answer is the right one,
// even under concurrent load, and a ref never yields the other pull's.
func TestIsolation(t *testing.T) {
	kc := keychaintest.New(t)
	defer kc.Close()
	st := memStore(t)
	srv := newServer(t, kc, st)
	refA := pull(t, kc, st, hostA, "tenant-a/app", basicDoc(t, hostA, "a", canaryA))
	refB := pull(t, kc, st, hostA, "tenant-b/app", basicDoc(t, hostA, "b", canaryB))
	if refA == refB {
		t.Fatal("two credentials share a ref")
	}
	cases := []struct {
		q    Query
		want string
	}{
		{Query{Host: hostA, Repository: "tenant-a/app"}, canaryA},
		{Query{Host: hostA, Repository: "tenant-b/app"}, canaryB},
		{Query{Host: hostA, Repository: "tenant-a/app", CredentialRef: refA}, canaryA},
		{Query{Host: hostA, Repository: "tenant-b/app", CredentialRef: refB}, canaryB},
		// The ref wins over the repository: B's layer in A's repository
		// still gets B's credential, never A's.
		{Query{Host: hostA, Repository: "tenant-a/app", CredentialRef: refB}, canaryB},
		{Query{Host: hostA, Repository: "tenant-b/app", CredentialRef: refA}, canaryA},
	}
	var wg sync.WaitGroup
	errs := make(chan string, 1000)
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 200; i++ {
				c := cases[(g+i)%len(cases)]
				cred, err := srv.Lookup(context.Background(), c.q)
				if err != nil || cred.Secret.Reveal() != c.want {
					errs <- fmt.Sprintf("%+v: got %v, %v", c.q, cred, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
}

// A record whose document does not resolve to the ref it was recorded
// under (a CRI bug) is refused rather than answered.
func TestMismatchedRecordRefused(t *testing.T) {
	kc := keychaintest.New(t)
	defer kc.Close()
	st := memStore(t)
	srv := newServer(t, kc, st)
	docA, docB := basicDoc(t, hostA, "a", canaryA), basicDoc(t, hostA, "b", canaryB)
	refB := pull(t, kc, st, hostA, "b/app", docB)
	// Record A's document under B's ref.
	if err := st.Record(refB, registry.Detect(hostA), "a/app", docA); err != nil {
		t.Fatal(err)
	}
	cred, err := srv.Lookup(context.Background(), Query{Host: hostA, CredentialRef: refB})
	wantClass(t, err, errdefs.IsFailedPrecondition, "FailedPrecondition")
	if cred.Secret.Reveal() != "" {
		t.Fatal("a refused answer carried a secret")
	}
}

// The answer is re-minted from the source document: hours after the pull,
// past the minted token's expiry, the service still answers with a fresh
// token rather than the one captured at pull time.
func TestRemintFromSourceHoursLater(t *testing.T) {
	clk := &clock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	fm := &fakeMinter{life: time.Hour, now: clk.Now}
	kc := keychaintest.New(t, keychain.WithProvider(fm), keychain.WithClock(clk.Now))
	defer kc.Close()
	st := memStore(t)
	srv := newServer(t, kc, st)

	host := "123456789012.dkr.ecr.us-east-1.amazonaws.com"
	docs, err := document.Parse("annotation b9.beam.cloud/image-credentials",
		fmt.Sprintf(`{"AWS_ACCESS_KEY_ID":"AKIAEXAMPLE","AWS_SECRET_ACCESS_KEY":%q,"AWS_REGION":"us-east-1"}`, canaryAWS), host)
	if err != nil {
		t.Fatal(err)
	}
	ref := pull(t, kc, st, host, "team/model", docs[0])
	first, err := srv.Lookup(context.Background(), Query{Host: host, Repository: "team/model", CredentialRef: ref})
	if err != nil {
		t.Fatal(err)
	}
	for _, later := range []time.Duration{3 * time.Hour, 12 * time.Hour} {
		clk.Add(later)
		cred, err := srv.Lookup(context.Background(), Query{Host: host, Repository: "team/model", CredentialRef: ref})
		if err != nil {
			t.Fatalf("+%s: %v", later, err)
		}
		if cred.Secret.Equal(first.Secret) || !cred.Valid(clk.Now()) || cred.Ref != ref {
			t.Fatalf("+%s: want a fresh valid token under the same ref, got expiry %s (now %s)", later, cred.ExpiresAt, clk.Now())
		}
	}
	if n := fm.mints.Load(); n < 3 {
		t.Fatalf("mints = %d, want >= 3 (pull + two re-mints)", n)
	}
	if strings.Contains(first.Secret.Reveal(), canaryAWS) {
		t.Fatal("the fake token should not carry the source secret")
	}
}

func TestEviction(t *testing.T) {
	st, err := NewStore(context.Background(), StoreConfig{MaxRecords: 2})
	if err != nil {
		t.Fatal(err)
	}
	clk := &clock{t: time.Unix(1000, 0)}
	st.now = clk.Now
	for i := range 3 {
		clk.Add(time.Second)
		if err := st.Record(fmt.Sprintf("ref-%d", i), registry.Detect(hostA), fmt.Sprintf("r/%d", i), basicDoc(t, hostA, "u", canaryA)); err != nil {
			t.Fatal(err)
		}
	}
	if refs, repos := st.Len(); refs != 2 || repos != 2 {
		t.Fatalf("len = %d refs, %d repos; want 2, 2", refs, repos)
	}
	if _, ok := st.byCredentialRef("ref-0", hostA); ok {
		t.Fatal("the oldest ref was kept")
	}
	if _, ok := st.byCredentialRef("ref-2", hostA); !ok {
		t.Fatal("the newest ref was dropped")
	}
}

func TestRecordRejectsBadInput(t *testing.T) {
	st := memStore(t)
	if err := st.Record("r", registry.Registry{Host: ""}, "a/b", basicDoc(t, hostA, "u", canaryA)); !errdefs.IsInvalidArgument(err) {
		t.Fatalf("empty host: %v", err)
	}
	if err := st.Record("r", registry.Detect(hostA), "", basicDoc(t, hostA, "u", canaryA)); !errdefs.IsInvalidArgument(err) {
		t.Fatalf("empty repository: %v", err)
	}
	if err := st.Record("r", registry.Detect(hostA), "a/b", document.Document{}); !errdefs.IsInvalidArgument(err) {
		t.Fatalf("zero document: %v", err)
	}
}

// scopedMinter is an aws-like provider whose cache scope is the region, as
// the real aws provider's is: one token for every ECR account there.
type scopedMinter struct{ *fakeMinter }

func (scopedMinter) CacheScope(registry.Registry, document.Document) string {
	return "aws/aws/us-east-1"
}

// One document pulls from two ECR accounts of a region: one cache entry,
// so one ref, for both hosts. Each host keeps its own record, and the ref
// answers for both (CLIP's lazy reads of either), in memory and after a
// restart; never for a host it did not pull from.
func TestSharedScopeRefAnswersEachHost(t *testing.T) {
	ctx := context.Background()
	const ecrA, ecrB = "111111111111.dkr.ecr.us-east-1.amazonaws.com", "222222222222.dkr.ecr.us-east-1.amazonaws.com"
	docs, err := document.Parse("annotation b9.beam.cloud/image-credentials",
		`{"type":"aws","credentials":{"AWS_ACCESS_KEY_ID":"AKIAEXAMPLE","AWS_SECRET_ACCESS_KEY":"`+canaryAWS+`"}}`, ecrA)
	if err != nil {
		t.Fatal(err)
	}
	doc := docs[0]
	cfg := StoreConfig{StateDir: filepath.Join(t.TempDir(), "state")}
	st, err := NewStore(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	newKeychain := func(st *Store) *keychain.Keychain {
		fm := &fakeMinter{life: time.Hour, now: time.Now}
		kc := keychaintest.New(t, keychain.WithProvider(scopedMinter{fm}), keychain.WithRefKey(st.RefKey()))
		t.Cleanup(kc.Close)
		return kc
	}
	kc := newKeychain(st)
	refA := pull(t, kc, st, ecrA, "team/a", doc)
	refB := pull(t, kc, st, ecrB, "team/b", doc)
	if refA != refB {
		t.Fatalf("one scope, two refs (%s, %s): the test needs a shared ref", refA, refB)
	}
	check := func(stage string, srv *Server) {
		t.Helper()
		for _, host := range []string{ecrA, ecrB} {
			cred, err := srv.Lookup(ctx, Query{Host: host, CredentialRef: refA})
			if err != nil || cred.Registry.Host != host || cred.Ref != refA || !strings.HasPrefix(cred.Secret.Reveal(), "token-") {
				t.Errorf("%s: ref lookup for %s: %+v, %v", stage, host, cred.Registry, err)
			}
		}
		_, err := srv.Lookup(ctx, Query{Host: "333333333333.dkr.ecr.us-east-1.amazonaws.com", CredentialRef: refA})
		wantClass(t, err, isNotFound, "NotFound")
	}
	check("in memory", newServer(t, kc, st))
	if refs, _ := st.Len(); refs != 2 {
		t.Errorf("%d ref records, want one per host", refs)
	}

	st2, err := NewStore(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	check("after restart", newServer(t, newKeychain(st2), st2))
}
