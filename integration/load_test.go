package integration

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/beam-cloud/b9-resolver/internal/testutil/registrytest"
)

// TestEnsureConcurrentPulls: 2,000 PullImage calls at once on the b9
// socket with ensure_secret_pulled_images on — 200 tags of one image,
// each asked for by 10 pods with the same credential (containerd-b9 in
// direct mode, its real image store, a token-auth registry) — and none
// fails: recording who may use an image is per image and in memory, not
// a node-wide lock around containerd's store.
func TestEnsureConcurrentPulls(t *testing.T) {
	binaries(t)
	const tags, podsPerTag = 200, 10
	pass, admin := canary("alice"), canary("admin")
	n := newNode(t, nodeConfig{pullMode: "direct", plugin: "  ensure_secret_pulled_images = true\n"})
	reg := registrytest.Start(t, registrytest.WithTokenAuth(),
		registrytest.WithUser("alice", pass, "load/app"), registrytest.WithUser("admin", admin, "*"))
	img := reg.PushRandomImage(t, "load/app", "t0", "admin", admin)
	for i := 1; i < tags; i++ {
		tag, err := name.NewTag(fmt.Sprintf("%s/load/app:t%d", reg.Host, i), name.Insecure)
		if err != nil {
			t.Fatal(err)
		}
		if err := remote.Tag(tag, img.Image, remote.WithAuth(&authn.Basic{Username: "admin", Password: admin}), remote.WithTransport(reg.Transport())); err != nil {
			t.Fatalf("tag %s: %v", tag, err)
		}
	}

	conn, err := grpc.NewClient("unix://"+n.b9, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	cri := runtime.NewImageServiceClient(conn)
	ann := map[string]string{annKey: basicDoc(reg.Host, "alice", pass)}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	start := time.Now()
	var wg sync.WaitGroup
	var mu sync.Mutex
	failures := map[string]int{}
	var first string
	for i := range tags * podsPerTag {
		wg.Go(func() {
			req := &runtime.PullImageRequest{
				Image: &runtime.ImageSpec{Image: fmt.Sprintf("%s/load/app:t%d", reg.Host, i%tags), Annotations: ann},
				SandboxConfig: &runtime.PodSandboxConfig{Annotations: ann, Metadata: &runtime.PodSandboxMetadata{
					Name: fmt.Sprintf("p%d", i), Namespace: "load", Uid: fmt.Sprintf("uid-load-%d", i)}},
			}
			if _, err := cri.PullImage(ctx, req); err != nil {
				mu.Lock()
				failures[status.Code(err).String()]++
				if first == "" {
					first = err.Error()
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	t.Logf("%d concurrent PullImage calls (%d tags) with ensure on: %s, failures %v", tags*podsPerTag, tags, time.Since(start), failures)
	if len(failures) > 0 {
		t.Fatalf("failures by code %v; first: %s", failures, first)
	}
	if r := n.crictl(n.b9, "inspecti", img.Ref); r.err == nil {
		t.Errorf("%s shown to a pod with no credential after the load", img.Ref)
	}
	n.assertNoSecrets(pass, admin)
}
