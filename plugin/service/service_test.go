package service

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/beam-cloud/b9-resolver/internal/keychain/document"
	"github.com/beam-cloud/b9-resolver/internal/keychain/registry"
)

// fakeCRI is containerd's CRI image service as forward mode sees it: it
// records each PullImage and answers with pull's result.
type fakeCRI struct {
	runtime.UnimplementedImageServiceServer
	mu       sync.Mutex
	requests []*runtime.PullImageRequest
	statuses []*runtime.ImageStatusRequest
	pull     func(*runtime.PullImageRequest) (*runtime.PullImageResponse, error)
}

func (f *fakeCRI) PullImage(_ context.Context, r *runtime.PullImageRequest) (*runtime.PullImageResponse, error) {
	f.mu.Lock()
	f.requests = append(f.requests, r)
	f.mu.Unlock()
	return f.pull(r)
}

func (f *fakeCRI) ImageStatus(_ context.Context, r *runtime.ImageStatusRequest) (*runtime.ImageStatusResponse, error) {
	f.mu.Lock()
	f.statuses = append(f.statuses, r)
	f.mu.Unlock()
	return &runtime.ImageStatusResponse{}, nil
}

func (f *fakeCRI) ListImages(context.Context, *runtime.ListImagesRequest) (*runtime.ListImagesResponse, error) {
	return &runtime.ListImagesResponse{Images: []*runtime.Image{{Id: "sha256:listed"}}}, nil
}

func (f *fakeCRI) pulls() []*runtime.PullImageRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*runtime.PullImageRequest(nil), f.requests...)
}

// shortDir is a temp dir short enough for unix socket paths (108 bytes).
func shortDir(t *testing.T) string {
	t.Helper()
	d, err := os.MkdirTemp("", "b9t")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

// startFakeCRI serves f on a socket and returns its path.
func startFakeCRI(t *testing.T, f *fakeCRI) string {
	t.Helper()
	sock := filepath.Join(shortDir(t), "containerd.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	runtime.RegisterImageServiceServer(srv, f)
	go srv.Serve(l)
	t.Cleanup(srv.Stop)
	return sock
}

// startService runs a Service with cfg against the socket and returns a
// CRI client connected to the b9 socket.
func startService(t *testing.T, cfg Config) (*Service, runtime.ImageServiceClient) {
	t.Helper()
	if cfg.Address == "" {
		cfg.Address = filepath.Join(shortDir(t), "b9", "b9.sock")
	}
	svc, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if err := svc.Start(context.Background()); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { svc.Close() })
	conn, err := grpc.NewClient("unix://"+cfg.Address, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return svc, runtime.NewImageServiceClient(conn)
}

// pullReq is a PullImageRequest as kubelet makes it: the pod's
// annotations in the sandbox config and in the image spec.
func pullReq(image string, annotations map[string]string, auth *runtime.AuthConfig) *runtime.PullImageRequest {
	return &runtime.PullImageRequest{
		Image:         &runtime.ImageSpec{Image: image, Annotations: annotations},
		Auth:          auth,
		SandboxConfig: &runtime.PodSandboxConfig{Annotations: annotations},
	}
}

const (
	canaryPass  = "canary-Pa55w0rd-7f3e9c"
	canaryToken = "canary-tok-41d2aa90"
	annKey      = "b9.beam.cloud/image-credentials"
)

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestForwardFillsAuthPinnedToHost(t *testing.T) {
	f := &fakeCRI{pull: func(*runtime.PullImageRequest) (*runtime.PullImageResponse, error) {
		return &runtime.PullImageResponse{ImageRef: "sha256:abc"}, nil
	}}
	_, cli := startService(t, Config{ContainerdAddress: startFakeCRI(t, f), PullMode: PullForward})

	for _, tc := range []struct {
		name, image string
		ann         map[string]string
		auth        *runtime.AuthConfig
		wantUser    string
		wantServer  string
	}{
		{name: "annotation userpass", image: "127.0.0.1:5000/team/app:v1",
			ann: map[string]string{annKey: "alice:" + canaryPass, "other": "x"}, wantUser: "alice", wantServer: "https://127.0.0.1:5000"},
		{name: "annotation beats auth", image: "127.0.0.1:5000/team/app:v1",
			ann:  map[string]string{annKey: `{"registry":"127.0.0.1:5000","type":"basic","credentials":{"USERNAME":"bob","PASSWORD":"` + canaryPass + `"}}`},
			auth: &runtime.AuthConfig{Username: "kubelet", Password: "kubelet-secret"}, wantUser: "bob", wantServer: "https://127.0.0.1:5000"},
		{name: "auth when no annotation", image: "127.0.0.1:5000/team/app:v1",
			auth: &runtime.AuthConfig{Username: "kubelet", Password: "kubelet-secret"}, wantUser: "kubelet", wantServer: "https://127.0.0.1:5000"},
		{name: "docker hub goes to its API host", image: "ubuntu",
			ann: map[string]string{annKey: `{"DOCKERHUB_USERNAME":"carol","DOCKERHUB_TOKEN":"` + canaryToken + `"}`}, wantUser: "carol", wantServer: "https://registry-1.docker.io"},
		{name: "annotation for another registry does not apply", image: "127.0.0.1:5000/team/app:v1",
			ann: map[string]string{annKey + ".ghcr": `{"registry":"ghcr.io","GITHUB_TOKEN":"` + canaryToken + `"}`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := len(f.pulls())
			resp, err := cli.PullImage(ctxT(t), pullReq(tc.image, tc.ann, tc.auth))
			if err != nil {
				t.Fatalf("PullImage: %v", err)
			}
			if resp.ImageRef != "sha256:abc" {
				t.Errorf("ImageRef = %q, want containerd's answer", resp.ImageRef)
			}
			got := f.pulls()[before]
			if tc.wantUser == "" {
				if got.Auth != nil {
					t.Fatalf("forwarded auth for %s, want none", got.Auth.ServerAddress)
				}
			} else if got.Auth.GetUsername() != tc.wantUser || got.Auth.GetServerAddress() != tc.wantServer {
				t.Errorf("forwarded auth user %q server %q, want %q %q", got.Auth.GetUsername(), got.Auth.GetServerAddress(), tc.wantUser, tc.wantServer)
			}
			for _, ann := range []map[string]string{got.GetSandboxConfig().GetAnnotations(), got.GetImage().GetAnnotations()} {
				for k := range ann {
					if strings.HasPrefix(k, annKey) {
						t.Errorf("credential annotation %s forwarded to containerd", k)
					}
				}
			}
			if tc.ann["other"] != "" && got.GetImage().GetAnnotations()["other"] != tc.ann["other"] {
				t.Errorf("other annotations of the image spec were not forwarded: %v", got.GetImage().GetAnnotations())
			}
		})
	}

	// kubelet sends the pod's annotations with ImageStatus too.
	_, _ = cli.ImageStatus(ctxT(t), &runtime.ImageStatusRequest{Image: &runtime.ImageSpec{Image: "127.0.0.1:5000/team/app:v1",
		Annotations: map[string]string{annKey: "alice:" + canaryPass, annKey + ".x": "bob:" + canaryPass, "other": "x"}}})
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.statuses) != 1 {
		t.Fatalf("%d ImageStatus calls reached containerd, want 1", len(f.statuses))
	}
	if got := f.statuses[0].GetImage().GetAnnotations(); len(got) != 1 || got["other"] != "x" {
		t.Errorf("ImageStatus forwarded annotations %v; want only the non-credential one", got)
	}
}

func TestForwardErrorsMapAndNeverCarrySecrets(t *testing.T) {
	// containerd's CRI answers codes.Unknown with its resolver's text; a
	// careless registry may even echo what it was sent.
	f := &fakeCRI{pull: func(r *runtime.PullImageRequest) (*runtime.PullImageResponse, error) {
		switch {
		case strings.Contains(r.Image.Image, "denied"):
			return nil, status.Error(codes.Unknown, "failed to pull: server message: insufficient_scope: authorization failed")
		case strings.Contains(r.Image.Image, "missing"):
			return nil, status.Error(codes.NotFound, "failed to resolve: not found")
		}
		return nil, status.Errorf(codes.Unknown, "unexpected status from HEAD request to http://127.0.0.1:5000/v2/: 401 Unauthorized (sent %s)", r.GetAuth().GetPassword())
	}}
	_, cli := startService(t, Config{ContainerdAddress: startFakeCRI(t, f), PullMode: PullForward})
	ann := map[string]string{annKey: "alice:" + canaryPass}

	for image, want := range map[string]codes.Code{
		"127.0.0.1:5000/a/wrong":   codes.Unauthenticated,
		"127.0.0.1:5000/a/denied":  codes.PermissionDenied,
		"127.0.0.1:5000/a/missing": codes.NotFound,
	} {
		_, err := cli.PullImage(ctxT(t), pullReq(image, ann, nil))
		st := status.Convert(err)
		if st.Code() != want {
			t.Errorf("%s: code %s, want %s (%s)", image, st.Code(), want, st.Message())
		}
		if strings.Contains(st.Message(), canaryPass) {
			t.Errorf("%s: secret in error: %s", image, st.Message())
		}
		for _, part := range []string{"127.0.0.1:5000", "annotation " + annKey} {
			if !strings.Contains(st.Message(), part) {
				t.Errorf("%s: message %q does not name %q", image, st.Message(), part)
			}
		}
	}
}

func TestBadAnnotationIsInvalidArgumentNamingKeyAndField(t *testing.T) {
	f := &fakeCRI{pull: func(*runtime.PullImageRequest) (*runtime.PullImageResponse, error) {
		t.Error("containerd must not be called for a bad document")
		return nil, status.Error(codes.Internal, "unreachable")
	}}
	_, cli := startService(t, Config{ContainerdAddress: startFakeCRI(t, f), PullMode: PullForward})
	key := annKey + ".aws"
	_, err := cli.PullImage(ctxT(t), pullReq("127.0.0.1:5000/a/b", map[string]string{
		key: `{"type":"aws","credentials":{"AWS_ACCESS_KEY_ID":"AKIA` + canaryToken + `"}}`,
	}, nil))
	st := status.Convert(err)
	if st.Code() != codes.InvalidArgument {
		t.Fatalf("code %s, want InvalidArgument: %s", st.Code(), st.Message())
	}
	for _, part := range []string{key, "AWS_SECRET_ACCESS_KEY"} {
		if !strings.Contains(st.Message(), part) {
			t.Errorf("message %q does not name %q", st.Message(), part)
		}
	}
	if strings.Contains(st.Message(), canaryToken) {
		t.Errorf("secret in message: %s", st.Message())
	}
}

func TestIsolation(t *testing.T) {
	node := filepath.Join(shortDir(t), "config.json")
	writeFile(t, node, `{"auths":{"127.0.0.1:5000":{"auth":"`+b64("node:node-secret-xyz")+`"}}}`)
	// The registry accepts only the node's credential.
	f := &fakeCRI{pull: func(r *runtime.PullImageRequest) (*runtime.PullImageResponse, error) {
		if r.GetAuth().GetUsername() == "node" {
			return &runtime.PullImageResponse{ImageRef: "sha256:node"}, nil
		}
		return nil, status.Error(codes.Unknown, "failed to authorize: 401 Unauthorized")
	}}
	sock := startFakeCRI(t, f)
	wrong := map[string]string{annKey: "alice:" + canaryPass}
	public := map[string]string{annKey: `{"type":"public"}`}

	t.Run("strict never falls back", func(t *testing.T) {
		_, cli := startService(t, Config{ContainerdAddress: sock, PullMode: PullForward, NodeCredentials: NodeCredentials{DockerConfig: node}})
		before := len(f.pulls())
		_, err := cli.PullImage(ctxT(t), pullReq("127.0.0.1:5000/a/b", wrong, nil))
		if status.Code(err) != codes.Unauthenticated {
			t.Fatalf("err %v, want Unauthenticated", err)
		}
		if n := len(f.pulls()) - before; n != 1 {
			t.Errorf("%d forwarded pulls, want 1 (no retry with the node's credential)", n)
		}
	})
	t.Run("fallback tries the node", func(t *testing.T) {
		_, cli := startService(t, Config{ContainerdAddress: sock, PullMode: PullForward, Isolation: IsolationFallback, NodeCredentials: NodeCredentials{DockerConfig: node}})
		resp, err := cli.PullImage(ctxT(t), pullReq("127.0.0.1:5000/a/b", wrong, nil))
		if err != nil || resp.ImageRef != "sha256:node" {
			t.Fatalf("got %v %v, want the node credential's pull", resp, err)
		}
	})
	t.Run("public never falls back", func(t *testing.T) {
		_, cli := startService(t, Config{ContainerdAddress: sock, PullMode: PullForward, Isolation: IsolationFallback, NodeCredentials: NodeCredentials{DockerConfig: node}})
		before := len(f.pulls())
		_, err := cli.PullImage(ctxT(t), pullReq("127.0.0.1:5000/a/b", public, nil))
		if status.Code(err) != codes.Unauthenticated {
			t.Fatalf("err %v, want Unauthenticated", err)
		}
		got := f.pulls()[before:]
		if len(got) != 1 || got[0].Auth != nil {
			t.Errorf("public document: %d pulls, first auth %v; want one anonymous pull", len(got), got[0].GetAuth().GetUsername())
		}
	})
	t.Run("node when no annotation", func(t *testing.T) {
		_, cli := startService(t, Config{ContainerdAddress: sock, PullMode: PullForward, NodeCredentials: NodeCredentials{DockerConfig: node}})
		if _, err := cli.PullImage(ctxT(t), pullReq("127.0.0.1:5000/a/b", nil, nil)); err != nil {
			t.Fatal(err)
		}
	})
}

func TestOtherCallsAreForwarded(t *testing.T) {
	f := &fakeCRI{}
	_, cli := startService(t, Config{ContainerdAddress: startFakeCRI(t, f)})
	resp, err := cli.ListImages(ctxT(t), &runtime.ListImagesRequest{})
	if err != nil || len(resp.Images) != 1 || resp.Images[0].Id != "sha256:listed" {
		t.Fatalf("ListImages = %v, %v; want containerd's list", resp, err)
	}
	// Unimplemented upstream stays Unimplemented, not swallowed.
	if _, err := cli.ImageFsInfo(ctxT(t), &runtime.ImageFsInfoRequest{}); status.Code(err) != codes.Unimplemented {
		t.Errorf("ImageFsInfo err %v, want containerd's Unimplemented", err)
	}
}

func TestSocketPermissions(t *testing.T) {
	dir := filepath.Join(shortDir(t), "run", "b9")
	addr := filepath.Join(dir, "b9.sock")
	svc, _ := startService(t, Config{Address: addr, ContainerdAddress: "/nonexistent.sock"})
	for path, want := range map[string]os.FileMode{dir: 0o700, addr: 0o600} {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != want {
			t.Errorf("%s mode %v, want %v", path, fi.Mode().Perm(), want)
		}
	}
	// A second service on a live socket must refuse, not steal it.
	other, err := New(Config{Address: addr, ContainerdAddress: "/nonexistent.sock"})
	if err != nil {
		t.Fatal(err)
	}
	if err := other.Start(context.Background()); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Errorf("second Start on a live socket: %v, want in use", err)
	}
	other.Close()
	// After Close, a stale socket file is replaced.
	svc.Close()
	l, err := net.Listen("unix", addr)
	if err != nil {
		t.Fatal(err)
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close()
	third, err := New(Config{Address: addr, ContainerdAddress: "/nonexistent.sock"})
	if err != nil {
		t.Fatal(err)
	}
	defer third.Close()
	if err := third.Start(context.Background()); err != nil {
		t.Errorf("Start over a stale socket: %v", err)
	}
}

func writeFile(t *testing.T, path, text string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestOnPulledReportsTheAcceptedCredential(t *testing.T) {
	f := &fakeCRI{pull: func(*runtime.PullImageRequest) (*runtime.PullImageResponse, error) {
		return &runtime.PullImageResponse{ImageRef: "sha256:abc"}, nil
	}}
	got := make(chan Pulled, 1)
	cfg := Config{ContainerdAddress: startFakeCRI(t, f), PullMode: PullForward, Address: filepath.Join(shortDir(t), "b9.sock")}
	svc, err := New(cfg, WithOnPulled(func(_ context.Context, p Pulled) { got <- p }))
	if err != nil {
		t.Fatal(err)
	}
	if err := svc.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
	conn, err := grpc.NewClient("unix://"+cfg.Address, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := runtime.NewImageServiceClient(conn).PullImage(ctxT(t), pullReq("127.0.0.1:5000/a/b:v1", map[string]string{annKey: "alice:" + canaryPass}, nil)); err != nil {
		t.Fatal(err)
	}
	p := <-got
	if p.ImageID != "sha256:abc" || p.Image.Repository != "a/b" || p.Credential.Ref == "" ||
		p.Document == nil || p.Document.Source != "annotation "+annKey {
		t.Errorf("Pulled = id %q repo %q ref %q doc %v; want the annotation's document and ref", p.ImageID, p.Image.Repository, p.Credential.Ref, p.Document != nil)
	}
}

// With a state dir the Credentials records persist, so the refs on
// snapshot labels must survive a restart: a re-built service (same state
// dir, so the same node key) gives a document the same ref; another node
// key gives another. Without a state dir refs are random per process.
func TestRefsSurviveRestartWithState(t *testing.T) {
	stateA, stateB := filepath.Join(shortDir(t), "state"), filepath.Join(shortDir(t), "state")
	docs, err := document.Parse("annotation "+annKey, "alice:"+canaryPass, "127.0.0.1:5000")
	if err != nil {
		t.Fatal(err)
	}
	ref := func(stateDir string) string {
		t.Helper()
		svc, err := New(Config{ContainerdAddress: filepath.Join(shortDir(t), "containerd.sock"), PullMode: PullForward,
			Address: filepath.Join(shortDir(t), "b9.sock"), StateDir: stateDir})
		if err != nil {
			t.Fatal(err)
		}
		defer svc.Close()
		c, err := svc.Keychain().Resolve(ctxT(t), registry.Detect("127.0.0.1:5000"), docs[0])
		if err != nil {
			t.Fatal(err)
		}
		return c.Ref
	}
	first := ref(stateA)
	if again := ref(stateA); again != first {
		t.Errorf("same state dir, refs %s and %s: labels would not survive a restart", first, again)
	}
	if other := ref(stateB); other == first {
		t.Error("another node key gave the same ref")
	}
	if a, b := ref(""), ref(""); a == b {
		t.Error("memory-only services share a ref key")
	}
}

// A successor takes the socket path over once this service's listener has
// closed (a rolling upgrade); Close, still finishing a running call, must
// leave the successor's socket alone.
func TestCloseLeavesSuccessorSocket(t *testing.T) {
	release, entered := make(chan struct{}), make(chan struct{})
	f := &fakeCRI{pull: func(*runtime.PullImageRequest) (*runtime.PullImageResponse, error) {
		close(entered)
		<-release
		return &runtime.PullImageResponse{ImageRef: "sha256:abc"}, nil
	}}
	addr := filepath.Join(shortDir(t), "b9", "b9.sock")
	svc, cli := startService(t, Config{Address: addr, ContainerdAddress: startFakeCRI(t, f), PullMode: PullForward})
	go cli.PullImage(ctxT(t), pullReq("127.0.0.1:5000/team/app:v1", nil, nil))
	<-entered

	closed := make(chan struct{})
	go func() { svc.Close(); close(closed) }()
	// The running pull keeps Close waiting; the listener is already gone.
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := os.Lstat(addr); err != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the socket path is still there while Close drains")
		}
		time.Sleep(10 * time.Millisecond)
	}
	successor, err := net.Listen("unix", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer successor.Close()
	close(release)
	<-closed
	c, err := net.Dial("unix", addr)
	if err != nil {
		t.Fatalf("Close removed the successor's socket: %v", err)
	}
	c.Close()
}
