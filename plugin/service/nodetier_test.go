package service

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/beam-cloud/b9-resolver/internal/keychain"
	"github.com/beam-cloud/b9-resolver/internal/keychain/document"
	"github.com/beam-cloud/b9-resolver/internal/keychain/registry"
	"github.com/beam-cloud/b9-resolver/internal/secret"
	"github.com/beam-cloud/b9-resolver/internal/testutil/cloudemu"
)

// The node's cloud identity (cloud.ambient) is a node credential source:
// node_credentials documents without keys get it, a pod's keyless
// annotation never does — not even under strict isolation with a node
// document configured for the same registry.
func TestAmbientIdentityIsForNodeDocumentsOnly(t *testing.T) {
	g := cloudemu.NewGCP(t)
	t.Setenv("GCE_METADATA_HOST", g.MetadataHost())
	f := &fakeCRI{pull: func(*runtime.PullImageRequest) (*runtime.PullImageResponse, error) {
		return &runtime.PullImageResponse{ImageRef: "sha256:gcr"}, nil
	}}
	sock := startFakeCRI(t, f)
	image := "gcr.io/proj/app:v1"
	nodeFile := filepath.Join(shortDir(t), "node.json")
	writeFile(t, nodeFile, `{"registry":"gcr.io","type":"gcp"}`)

	for _, tc := range []struct {
		name string
		node NodeCredentials
	}{
		{"no node credentials", NodeCredentials{}},
		{"node document configured", NodeCredentials{Documents: []string{`{"registry":"gcr.io","type":"gcp"}`}}},
	} {
		t.Run("pod annotation, "+tc.name, func(t *testing.T) {
			_, cli := startService(t, Config{ContainerdAddress: sock, PullMode: PullForward,
				Cloud: Cloud{Ambient: []string{"gcp", "aws"}}, NodeCredentials: tc.node})
			before := len(f.pulls())
			for img, ann := range map[string]string{
				image: `{"type":"gcp"}`,
				"123456789012.dkr.ecr.us-east-1.amazonaws.com/app:v1": `{"type":"aws"}`,
			} {
				_, err := cli.PullImage(ctxT(t), pullReq(img, map[string]string{annKey: ann}, nil))
				st := status.Convert(err)
				if st.Code() != codes.InvalidArgument || !strings.Contains(st.Message(), annKey) ||
					!strings.Contains(st.Message(), "a pod's") || !strings.Contains(st.Message(), "only for node credentials") {
					t.Fatalf("%s: %s %q, want InvalidArgument naming the annotation and the rule", ann, st.Code(), st.Message())
				}
			}
			if n := len(f.pulls()) - before; n != 0 {
				t.Errorf("%d pulls forwarded", n)
			}
			if n := g.Calls(cloudemu.APIGCEMetadataToken); n != 0 {
				t.Errorf("a pod's document reached the metadata server %d times", n)
			}
		})
	}
	for name, node := range map[string]NodeCredentials{
		"node document":      {Documents: []string{`{"registry":"gcr.io","type":"gcp"}`}},
		"node document file": {DocumentFiles: []string{nodeFile}},
	} {
		t.Run(name, func(t *testing.T) {
			_, cli := startService(t, Config{ContainerdAddress: sock, PullMode: PullForward,
				Cloud: Cloud{Ambient: []string{"gcp"}}, NodeCredentials: node})
			before := g.Calls(cloudemu.APIGCEMetadataToken)
			if _, err := cli.PullImage(ctxT(t), pullReq(image, nil, nil)); err != nil {
				t.Fatal(err)
			}
			got := f.pulls()[len(f.pulls())-1].GetAuth()
			if got.GetUsername() != "oauth2accesstoken" || !g.Valid(got.GetPassword(), time.Now()) {
				t.Errorf("forwarded user %q (valid metadata token %v), want the node's metadata token", got.GetUsername(), g.Valid(got.GetPassword(), time.Now()))
			}
			if n := g.Calls(cloudemu.APIGCEMetadataToken) - before; n != 1 {
				t.Errorf("metadata calls %d, want 1", n)
			}
		})
	}
}

// Node credentials are looked up only when the pod's credential is used
// up: with isolation "fallback", a pull whose annotation credential works
// runs no docker-credential helper and reads no node document file (a
// broken one does not fail it); one whose annotation is rejected runs the
// helper once and pulls with its answer.
func TestNodeCredentialsAreLazy(t *testing.T) {
	dir := shortDir(t)
	calls := filepath.Join(dir, "calls")
	helper := filepath.Join(dir, "docker-credential-b9count")
	writeFile(t, helper, `#!/bin/sh
echo x >> `+calls+`
read host
echo '{"Username":"node","Secret":"node-secret-xyz"}'
`)
	if err := os.Chmod(helper, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", dir+string(os.PathListSeparator)+os.Getenv("PATH"))
	helperCalls := func() int {
		b, err := os.ReadFile(calls)
		if os.IsNotExist(err) {
			return 0
		}
		if err != nil {
			t.Fatal(err)
		}
		return strings.Count(string(b), "x")
	}
	cfg := filepath.Join(dir, "config.json")
	writeFile(t, cfg, `{"credHelpers":{"127.0.0.1:5000":"b9count"}}`)
	nodeFile := filepath.Join(dir, "node.json")
	writeFile(t, nodeFile, `{"registry":"other.example","credentials":{"USERNAME":"o","PASSWORD":"p"}}`)

	f := &fakeCRI{pull: func(r *runtime.PullImageRequest) (*runtime.PullImageResponse, error) {
		if u := r.GetAuth().GetUsername(); u == "alice" || u == "node" {
			return &runtime.PullImageResponse{ImageRef: "sha256:" + u}, nil
		}
		return nil, status.Error(codes.Unknown, "failed to authorize: 401 Unauthorized")
	}}
	_, cli := startService(t, Config{ContainerdAddress: startFakeCRI(t, f), PullMode: PullForward, Isolation: IsolationFallback,
		NodeCredentials: NodeCredentials{DockerConfig: cfg, DocumentFiles: []string{nodeFile}}})
	good := map[string]string{annKey: "alice:" + canaryPass}
	resp, err := cli.PullImage(ctxT(t), pullReq("127.0.0.1:5000/a/b", good, nil))
	if err != nil || resp.ImageRef != "sha256:alice" {
		t.Fatalf("annotation pull: %v %v", resp, err)
	}
	if n := helperCalls(); n != 0 {
		t.Fatalf("the docker-credential helper ran %d times for a pull the annotation credential served", n)
	}
	// Nor is a node document file read: a broken one does not matter.
	writeFile(t, nodeFile, `{"registry":"other.example","credentials":{`)
	if _, err := cli.PullImage(ctxT(t), pullReq("127.0.0.1:5000/a/b", good, nil)); err != nil {
		t.Fatalf("annotation pull with a broken node file: %v", err)
	}

	// The annotation is rejected: now the node tier is consulted; its
	// broken document file (first in the node's order) leaves nothing
	// to fall back to, and the registry's rejection is the answer.
	_, err = cli.PullImage(ctxT(t), pullReq("127.0.0.1:5000/a/b", map[string]string{annKey: "wrong:" + canaryPass}, nil))
	if status.Code(err) != codes.Unauthenticated || helperCalls() != 0 {
		t.Fatalf("rejected annotation with a broken node file: %v, %d helper runs; want Unauthenticated", err, helperCalls())
	}
	writeFile(t, nodeFile, `{"registry":"other.example","credentials":{"USERNAME":"o","PASSWORD":"p"}}`)
	resp, err = cli.PullImage(ctxT(t), pullReq("127.0.0.1:5000/a/b", map[string]string{annKey: "wrong:" + canaryPass}, nil))
	if err != nil || resp.ImageRef != "sha256:node" {
		t.Fatalf("rejected annotation: %v %v, want the helper's credential", resp, err)
	}
	if n := helperCalls(); n != 1 {
		t.Errorf("helper ran %d times, want 1", n)
	}
}

// mintingProvider mints a new token on every call, like ECR: tok-1, tok-2…
type mintingProvider struct{ mints atomic.Int32 }

func (*mintingProvider) Type() document.Type { return document.TypeAWS }

func (p *mintingProvider) Mint(context.Context, registry.Registry, document.Document) (keychain.Minted, error) {
	n := p.mints.Add(1)
	return keychain.Minted{Username: "AWS", Secret: secret.New("tok-" + string(rune('0'+n))),
		ExpiresAt: time.Now().Add(12 * time.Hour), Provider: "aws/ecr"}, nil
}

// Forward mode: a registry rejecting the forwarded credential (a revoked
// or expired ECR token the keychain still holds) makes the service drop it
// from the keychain and forward once more with a freshly minted one —
// under strict isolation too, where there is no fallback. Later pulls get
// the new token from the cache.
func TestForwardRenewsARejectedCredential(t *testing.T) {
	f := &fakeCRI{pull: func(r *runtime.PullImageRequest) (*runtime.PullImageResponse, error) {
		if r.GetAuth().GetPassword() == "tok-1" {
			return nil, status.Error(codes.Unknown, "failed to authorize: 401 Unauthorized")
		}
		return &runtime.PullImageResponse{ImageRef: "sha256:ecr"}, nil
	}}
	p := &mintingProvider{}
	cfg := Config{ContainerdAddress: startFakeCRI(t, f), PullMode: PullForward, Address: filepath.Join(shortDir(t), "b9.sock")}
	svc, err := New(cfg, WithKeychainOptions(keychain.WithProvider(p)))
	if err != nil {
		t.Fatal(err)
	}
	if err := svc.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { svc.Close() })
	conn, err := grpc.NewClient("unix://"+cfg.Address, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	cli := runtime.NewImageServiceClient(conn)

	image := "123456789012.dkr.ecr.us-east-1.amazonaws.com/app:v1"
	ann := map[string]string{annKey: `{"type":"aws","credentials":{"AWS_ACCESS_KEY_ID":"AKIAB9TEST","AWS_SECRET_ACCESS_KEY":"` + canaryPass + `"}}`}
	if _, err := cli.PullImage(ctxT(t), pullReq(image, ann, nil)); err != nil {
		t.Fatalf("pull with a rejected cached token: %v", err)
	}
	var sent []string
	for _, r := range f.pulls() {
		sent = append(sent, r.GetAuth().GetPassword())
	}
	if strings.Join(sent, ",") != "tok-1,tok-2" || p.mints.Load() != 2 {
		t.Fatalf("forwarded %v with %d mints, want tok-1 then tok-2", sent, p.mints.Load())
	}
	if _, err := cli.PullImage(ctxT(t), pullReq(image, ann, nil)); err != nil {
		t.Fatal(err)
	}
	if last := f.pulls()[len(f.pulls())-1].GetAuth().GetPassword(); last != "tok-2" || p.mints.Load() != 2 {
		t.Errorf("next pull sent %s after %d mints, want the cached tok-2", last, p.mints.Load())
	}
}
