package credentials

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/containerd/errdefs"

	"github.com/beam-cloud/b9-resolver/internal/keychain"
	"github.com/beam-cloud/b9-resolver/internal/keychain/registry"
	"github.com/beam-cloud/b9-resolver/internal/testutil/keychaintest"
	"github.com/beam-cloud/b9-resolver/pkg/credclient"
)

func mode(t *testing.T, path string) os.FileMode {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}

// A plugin restart with persistence: the refs a lazy mount holds still
// answer, over the socket, from a new process-worth of state (new store,
// new keychain keyed as the plugin keys it, new server), a re-pull gives
// the same ref, and the files are private and sealed.
func TestPersistenceRoundTrip(t *testing.T) {
	logs := captureLogs(t)
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "state")
	cfg := StoreConfig{StateDir: dir}

	st1, err := NewStore(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	kc1 := keychaintest.New(t, keychain.WithRefKey(st1.RefKey()))
	refA := pull(t, kc1, st1, hostA, "tenant-a/app", basicDoc(t, hostA, "alice", canaryA))
	refB := pull(t, kc1, st1, hostA, "tenant-b/app", basicDoc(t, hostA, "bob", canaryB))
	pull(t, kc1, st1, "ghcr.io", "org/public", publicDoc(t, "ghcr.io"))
	kc1.Close()

	if m := mode(t, dir); m != 0o700 {
		t.Errorf("state dir mode %v, want 0700", m)
	}
	if m := mode(t, filepath.Join(dir, KeyFileName)); m != 0o600 {
		t.Errorf("key file mode %v, want 0600", m)
	}
	statePath := filepath.Join(dir, StateFileName)
	if m := mode(t, statePath); m != 0o600 {
		t.Errorf("state file mode %v, want 0600", m)
	}
	raw, err := os.ReadFile(statePath)
	if err != nil {
		t.Fatal(err)
	}
	for _, plain := range []string{canaryA, canaryB, "alice", hostA, "tenant-a"} {
		if bytes.Contains(raw, []byte(plain)) {
			t.Fatalf("state file holds %q in clear", plain)
		}
	}

	// "Restart".
	st2, err := NewStore(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	kc2 := keychaintest.New(t, keychain.WithRefKey(st2.RefKey()))
	defer kc2.Close()
	c, err := credclient.New(serve(t, newServer(t, kc2, st2)), credclient.WithCacheTTL(0))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, tc := range []struct {
		req  credclient.Request
		want string
	}{
		{credclient.Request{Host: hostA, Repository: "tenant-a/app", CredentialRef: refA}, canaryA},
		{credclient.Request{Host: hostA, Repository: "tenant-a/app", CredentialRef: refB}, canaryB},
		{credclient.Request{Host: hostA, Repository: "tenant-b/app"}, canaryB},
		{credclient.Request{Host: hostA, Repository: "tenant-a/app"}, canaryA},
	} {
		cred, err := c.GetCredentials(ctx, tc.req)
		if err != nil || cred.Secret != tc.want {
			t.Errorf("after restart %+v: %v %v", tc.req, cred, err)
		}
	}
	cred, err := c.GetCredentials(ctx, credclient.Request{Host: "ghcr.io", Repository: "org/public"})
	if err != nil || !cred.Anonymous {
		t.Errorf("public after restart: %v %v", cred, err)
	}
	// Re-recording the same pull gives the same ref (existing labels keep
	// working) and does not rewrite the file.
	before, _ := os.Stat(statePath)
	if again := pull(t, kc2, st2, hostA, "tenant-a/app", basicDoc(t, hostA, "alice", canaryA)); again != refA {
		t.Errorf("re-pull after restart gave ref %s, want %s", again, refA)
	}
	after, _ := os.Stat(statePath)
	if !before.ModTime().Equal(after.ModTime()) || before.Size() != after.Size() {
		t.Error("an unchanged record rewrote the state file")
	}
	if strings.Contains(logs.String(), canaryA) {
		t.Fatal("secret in logs")
	}
}

// Without persistence a restart forgets: old refs are NotFound (CLIP then
// falls back to its keychain) until the image is pulled again, which
// records anew.
func TestRestartWithoutPersistence(t *testing.T) {
	ctx := context.Background()
	kc := keychaintest.New(t)
	defer kc.Close()
	st1 := memStore(t)
	ref := pull(t, kc, st1, hostA, "team/app", basicDoc(t, hostA, "alice", canaryA))
	if _, err := newServer(t, kc, st1).Lookup(ctx, Query{Host: hostA, CredentialRef: ref}); err != nil {
		t.Fatal(err)
	}
	st2 := memStore(t) // the restarted plugin
	srv := newServer(t, kc, st2)
	_, err := srv.Lookup(ctx, Query{Host: hostA, Repository: "team/app", CredentialRef: ref})
	wantClass(t, err, isNotFound, "NotFound")
	_, err = srv.Lookup(ctx, Query{Host: hostA, Repository: "team/app"})
	wantClass(t, err, isNotFound, "NotFound")
	// The kubelet's next pull of the image records again; the same
	// document gives the same ref, so existing snapshot labels work again.
	if again := pull(t, kc, st2, hostA, "team/app", basicDoc(t, hostA, "alice", canaryA)); again != ref {
		t.Fatalf("re-pull gave ref %s, want %s", again, ref)
	}
	if cred, err := srv.Lookup(ctx, Query{Host: hostA, CredentialRef: ref}); err != nil || cred.Secret.Reveal() != canaryA {
		t.Fatalf("after re-pull: %v %v", cred, err)
	}
}

// A state file sealed under another key is moved aside, not trusted, and
// the store starts empty.
func TestStateUnderAnotherKey(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "state")
	kc := keychaintest.New(t)
	defer kc.Close()
	st, err := NewStore(ctx, StoreConfig{StateDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	pull(t, kc, st, hostA, "team/app", basicDoc(t, hostA, "alice", canaryA))
	if err := os.Remove(filepath.Join(dir, KeyFileName)); err != nil {
		t.Fatal(err)
	}
	st2, err := NewStore(ctx, StoreConfig{StateDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if refs, repos := st2.Len(); refs+repos != 0 {
		t.Fatalf("loaded %d/%d records under a new key", refs, repos)
	}
	aside, _ := filepath.Glob(filepath.Join(dir, StateFileName+".unreadable-*"))
	if len(aside) != 1 {
		t.Fatalf("unreadable state not moved aside: %v", aside)
	}
	// A tampered file is refused the same way.
	pull(t, kc, st2, hostA, "team/app", basicDoc(t, hostA, "alice", canaryA))
	p := filepath.Join(dir, StateFileName)
	b, _ := os.ReadFile(p)
	b[len(b)-1] ^= 1
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	st3, err := NewStore(ctx, StoreConfig{StateDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if refs, _ := st3.Len(); refs != 0 {
		t.Fatal("tampered state loaded")
	}
}

func TestKeyFileChecks(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	key := filepath.Join(dir, "key")
	if err := os.WriteFile(key, bytes.Repeat([]byte{7}, keySize), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := NewStore(ctx, StoreConfig{StateDir: filepath.Join(dir, "s"), KeyFile: key})
	wantClass(t, err, errdefs.IsFailedPrecondition, "FailedPrecondition")
	if err := os.Chmod(key, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := NewStore(ctx, StoreConfig{StateDir: filepath.Join(dir, "s"), KeyFile: key}); err != nil {
		t.Fatalf("0600 key of the right size: %v", err)
	}
	if err := os.WriteFile(key, []byte("short"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = NewStore(ctx, StoreConfig{StateDir: filepath.Join(dir, "s"), KeyFile: key})
	wantClass(t, err, errdefs.IsFailedPrecondition, "FailedPrecondition")
	_, err = NewStore(ctx, StoreConfig{StateDir: "relative"})
	wantClass(t, err, errdefs.IsInvalidArgument, "InvalidArgument")
	// An existing state dir with loose permissions is tightened.
	loose := filepath.Join(dir, "loose")
	if err := os.Mkdir(loose, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := NewStore(ctx, StoreConfig{StateDir: loose}); err != nil {
		t.Fatal(err)
	}
	if m := mode(t, loose); m != 0o700 {
		t.Fatalf("state dir mode %v, want 0700", m)
	}
}

// The ref key comes from the node key: the same for every store on that
// key, another for another key, never the encryption key itself, and none
// for memory-only records.
func TestRefKeyFromNodeKey(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	open := func(sub, keyFile string) []byte {
		t.Helper()
		st, err := NewStore(ctx, StoreConfig{StateDir: filepath.Join(dir, sub), KeyFile: keyFile})
		if err != nil {
			t.Fatal(err)
		}
		return st.RefKey()
	}
	k1 := open("a", "")
	if len(k1) != keySize {
		t.Fatalf("ref key of %d bytes", len(k1))
	}
	if !bytes.Equal(open("a", ""), k1) {
		t.Error("the same node key gave another ref key")
	}
	if bytes.Equal(open("b", ""), k1) {
		t.Error("another node key gave the same ref key")
	}
	node, err := os.ReadFile(filepath.Join(dir, "a", KeyFileName))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(node, k1) {
		t.Error("the ref key is the raw node (encryption) key")
	}
	if k := memStore(t).RefKey(); k != nil {
		t.Errorf("memory-only store has a ref key")
	}
}

// Concurrent Records each save the state; a slow save of an older
// snapshot must never land after a newer one. Every record survives a
// reload.
func TestConcurrentRecordsAllPersist(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "state")
	st, err := NewStore(ctx, StoreConfig{StateDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	doc := basicDoc(t, hostA, "alice", canaryA)
	const rounds, perRound = 8, 24
	for round := range rounds {
		var wg sync.WaitGroup
		for i := range perRound {
			wg.Add(1)
			go func() {
				defer wg.Done()
				n := round*perRound + i
				if err := st.Record(fmt.Sprintf("ref-%d", n), registry.Detect(hostA), fmt.Sprintf("team/app-%d", n), doc); err != nil {
					t.Error(err)
				}
			}()
		}
		wg.Wait()
		again, err := NewStore(ctx, StoreConfig{StateDir: dir})
		if err != nil {
			t.Fatal(err)
		}
		want := (round + 1) * perRound
		if refs, repos := again.Len(); refs != want || repos != want {
			t.Fatalf("round %d: reloaded %d refs, %d repositories; want %d of each (a stale save overwrote a newer one)", round, refs, repos, want)
		}
	}
}
