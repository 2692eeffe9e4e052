package credentials

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/core/metadata"
	"github.com/containerd/containerd/v2/core/snapshots"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/plugins/snapshots/native"
	bolt "go.etcd.io/bbolt"

	"github.com/beam-cloud/b9-resolver/internal/keychain"
	"github.com/beam-cloud/b9-resolver/internal/keychain/registry"
	"github.com/beam-cloud/b9-resolver/internal/testutil/keychaintest"
	"github.com/beam-cloud/b9-resolver/pkg/credclient/remotehosts"
)

// snapshotStore is containerd's metadata snapshotter over the native
// snapshotter (what the plugin's client reaches), in a temp dir, and a
// function that gives a layer snapshot a credential-ref label as an
// unpack of a direct pull does.
func snapshotStore(t *testing.T) (map[string]snapshots.Snapshotter, func(ref string)) {
	t.Helper()
	dir := t.TempDir()
	db, err := bolt.Open(filepath.Join(dir, "meta.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	sn, err := native.NewSnapshotter(filepath.Join(dir, "native"))
	if err != nil {
		t.Fatal(err)
	}
	mdb := metadata.NewDB(db, nil, map[string]snapshots.Snapshotter{"native": sn})
	ctx := namespaces.WithNamespace(context.Background(), "k8s.io")
	if err := mdb.Init(ctx); err != nil {
		t.Fatal(err)
	}
	sns := mdb.Snapshotters()
	label := func(ref string) {
		t.Helper()
		labels := snapshots.WithLabels(map[string]string{remotehosts.CredentialRefLabel: ref})
		if _, err := sns["native"].Prepare(ctx, "extract-"+ref, "", labels); err != nil {
			t.Fatal(err)
		}
		if err := sns["native"].Commit(ctx, "layer-"+ref, "extract-"+ref, labels); err != nil {
			t.Fatal(err)
		}
	}
	return sns, label
}

// boundedStore is a memory-only Store with the bounds and a test clock.
func boundedStore(t *testing.T, max, perSource int) (*Store, *clock) {
	t.Helper()
	st, err := NewStore(context.Background(), StoreConfig{MaxRecords: max, MaxRecordsPerSource: perSource})
	if err != nil {
		t.Fatal(err)
	}
	clk := &clock{t: time.Unix(1000, 0)}
	st.now = clk.Now
	return st, clk
}

// A flood of pulls with throw-away documents from many namespaces — each
// within its own share, together far past the Store's bound — does not
// evict tenant A's record while its ref is on a live snapshot: a lazy read
// of A's layers still gets A's credential. A's record whose ref is on no
// snapshot goes like any other old one, and the bound holds.
func TestEvictionFloodSparesLiveRef(t *testing.T) {
	const max, perSource = 64, 16
	st, clk := boundedStore(t, max, perSource)
	sns, label := snapshotStore(t)
	st.SetLiveRefs(func(ctx context.Context) (map[string]struct{}, error) {
		return SnapshotRefs(namespaces.WithNamespace(ctx, "k8s.io"), sns)
	})
	kc := keychaintest.New(t)
	defer kc.Close()
	record := func(ns, repo string, docN int) string {
		t.Helper()
		doc := basicDoc(t, hostA, "user", fmt.Sprintf("%s-throwaway-%d", canaryA, docN))
		cred, err := kc.Resolve(context.Background(), registry.Detect(hostA), doc)
		if err != nil {
			t.Fatal(err)
		}
		if err := st.Record(cred.Ref, registry.Detect(hostA), repo, doc, InNamespace(ns)); err != nil {
			t.Fatal(err)
		}
		clk.Add(10 * time.Millisecond)
		return cred.Ref
	}

	deadA := record("tenant-a", "team/old", -2)
	liveA := record("tenant-a", "team/app", -1)
	label(liveA) // A's pull unpacked its layers with the ref label
	clk.Add(2 * time.Second)

	const namespaces, each = 40, 8
	for n := range namespaces {
		for i := range each {
			record(fmt.Sprintf("flood-%d", n), fmt.Sprintf("flood/%d-%d", n, i), n*each+i)
		}
		clk.Add(2 * time.Second) // let the Store list the live refs again
	}

	srv := newServer(t, kc, st)
	cred, err := srv.Lookup(context.Background(), Query{Host: hostA, Repository: "team/app", CredentialRef: liveA})
	if err != nil || cred.Ref != liveA {
		t.Fatalf("A's live ref after the flood: %v (ref %s)", err, cred.Ref)
	}
	if _, ok := st.byCredentialRef(deadA, hostA); ok {
		t.Error("A's ref on no snapshot outlived 320 newer records")
	}
	if refs, repos := st.Len(); refs > max || repos > max {
		t.Errorf("%d refs, %d repositories held; the bound is %d", refs, repos, max)
	}
}

// One namespace's flood evicts its own records only: another tenant's,
// even on no snapshot and older than all of the flood, stay.
func TestEvictionBoundsEachSource(t *testing.T) {
	const max, perSource = 64, 16
	st, clk := boundedStore(t, max, perSource)
	kc := keychaintest.New(t)
	defer kc.Close()
	var refsA []string
	for i := range 3 {
		refsA = append(refsA, pullIn(t, kc, st, "tenant-a", fmt.Sprintf("team/app-%d", i), fmt.Sprintf("a-%d", i)))
		clk.Add(time.Millisecond)
	}
	node := basicDoc(t, hostA, "node", "node-secret")
	node.Node = true
	if err := st.Record("node-ref", registry.Detect(hostA), "node/app", node); err != nil {
		t.Fatal(err)
	}
	for i := range 500 {
		clk.Add(time.Millisecond)
		pullIn(t, kc, st, "tenant-b", fmt.Sprintf("flood/%d", i), fmt.Sprintf("b-%d", i))
	}
	for _, ref := range append(refsA, "node-ref") {
		if _, ok := st.byCredentialRef(ref, hostA); !ok {
			t.Errorf("ref %s evicted by another source's flood", ref)
		}
	}
	st.mu.RLock()
	b := countSource(st.byRef, "namespace/tenant-b")
	st.mu.RUnlock()
	if b != perSource {
		t.Errorf("the flooding namespace holds %d refs, want its share %d", b, perSource)
	}
}

// pullIn records a pull by namespace ns with a document of its own.
func pullIn(t *testing.T, kc *keychain.Keychain, st *Store, ns, repo, secret string) string {
	t.Helper()
	doc := basicDoc(t, hostA, "user", canaryA+secret)
	cred, err := kc.Resolve(context.Background(), registry.Detect(hostA), doc)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Record(cred.Ref, registry.Detect(hostA), repo, doc, InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	return cred.Ref
}

// Past the hard limit records go oldest first, live or not: memory stays
// bounded when every ref is on a snapshot or snapshots cannot be listed.
func TestEvictionHardLimit(t *testing.T) {
	st, clk := boundedStore(t, 4, 4)
	st.SetLiveRefs(func(context.Context) (map[string]struct{}, error) { return nil, fmt.Errorf("containerd is down") })
	kc := keychaintest.New(t)
	defer kc.Close()
	for i := range 40 {
		clk.Add(2 * time.Second)
		pullIn(t, kc, st, fmt.Sprintf("ns-%d", i), "app", fmt.Sprintf("s-%d", i))
	}
	if refs, _ := st.Len(); refs != 4*hardLimitFactor {
		t.Errorf("%d refs held with no listing of live refs; want the hard limit %d", refs, 4*hardLimitFactor)
	}
}

// A record's namespace survives a restart, so after one a flood still
// counts against the flooder's share.
func TestNamespacePersists(t *testing.T) {
	ctx := context.Background()
	cfg := StoreConfig{StateDir: filepath.Join(t.TempDir(), "state")}
	st, err := NewStore(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	kc := keychaintest.New(t, keychain.WithRefKey(st.RefKey()))
	defer kc.Close()
	ref := pullIn(t, kc, st, "tenant-a", "team/app", "a")
	st2, err := NewStore(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	r, ok := st2.byCredentialRef(ref, hostA)
	if !ok || r.source() != "namespace/tenant-a" {
		t.Fatalf("after a restart: %v %+v", ok, r)
	}
}
