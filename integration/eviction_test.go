package integration

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/containerd/errdefs"

	"github.com/beam-cloud/b9-resolver/internal/testutil/registrytest"
	"github.com/beam-cloud/b9-resolver/pkg/credclient"
)

// A flood of pulls with throw-away documents, one per namespace (each
// within its share, together far past the bound), does not evict tenant
// A's record while A's layers carry its ref: a lazy snapshotter asking by
// the layer's label still gets A's credential. The flood's own records,
// on no snapshot, are evicted. Scaled down: a bound of 8 records, 24
// flooding pulls.
func TestCredentialRecordsSurviveAFlood(t *testing.T) {
	pass := canary("evict-a")
	const flood = 24
	opts := []registrytest.Option{registrytest.WithTokenAuth(), registrytest.WithUser("alice", pass, "team-a/app")}
	for i := range flood {
		opts = append(opts, registrytest.WithUser(fmt.Sprintf("flood%d", i), fmt.Sprintf("throwaway-%d", i), "flood/app"))
	}
	reg := registrytest.Start(t, opts...)
	imgA := reg.PushRandomImage(t, "team-a/app", "v1", "alice", pass)
	imgFlood := reg.PushRandomImage(t, "flood/app", "v1", "flood0", "throwaway-0")
	n := newNode(t, nodeConfig{pullMode: "direct", plugin: "credentials_max_records = 8\ncredentials_max_records_per_source = 4"})

	mustSucceed(t, n.pullAs(n.b9, imgA.Ref, podMeta{namespace: "tenant-a"}, map[string]string{annKey: basicDoc(reg.Host, "alice", pass)}), "A's pull")
	refA := layerCredentialRef(t, n, imgA.Layers[0])
	floodPull := func(i int) {
		doc := basicDoc(reg.Host, fmt.Sprintf("flood%d", i), fmt.Sprintf("throwaway-%d", i))
		mustSucceed(t, n.pullAs(n.b9, imgFlood.Ref, podMeta{namespace: fmt.Sprintf("flood-%d", i)}, map[string]string{annKey: doc}),
			fmt.Sprintf("flood pull %d", i))
	}
	for i := range flood - 1 {
		floodPull(i)
	}
	// The Store lists the refs on snapshots at most once a second and
	// spares what was recorded since its last listing; the last pull,
	// after that second, has every earlier record judged.
	time.Sleep(1100 * time.Millisecond)
	floodPull(flood - 1)

	if got := credentialFor(t, n.b9, credclient.Request{Host: reg.Host, Repository: "team-a/app", CredentialRef: refA}); got.Username != "alice" || got.Secret != pass {
		t.Errorf("after the flood, A's layer ref answers user %q (secret matches %v), want alice's", got.Username, got.Secret == pass)
	}
	// The flood's refs are in the keychain's listing; most of their
	// records must be gone.
	c, err := credclient.New(n.b9)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	entries, err := c.ListCredentials(ctx)
	if err != nil {
		t.Fatal(err)
	}
	gone, asked := 0, 0
	for _, e := range entries {
		if e.Ref == refA || e.Host != reg.Host {
			continue
		}
		asked++
		if _, err := c.Fetch(ctx, credclient.Request{Host: reg.Host, Repository: "flood/app", CredentialRef: e.Ref}); errdefs.IsNotFound(err) {
			gone++
		}
	}
	if asked < flood || gone < flood-8 {
		t.Errorf("%d of %d flood refs evicted; the bound is 8 records", gone, asked)
	}
	n.assertNoSecrets(pass)
}
