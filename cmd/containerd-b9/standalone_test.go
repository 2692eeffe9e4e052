package main

import (
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"google.golang.org/grpc"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/beam-cloud/b9-resolver/plugin/service"
)

func shortDir(t *testing.T) string {
	t.Helper()
	d, err := os.MkdirTemp("", "b9c")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

type fsInfoServer struct {
	runtime.UnimplementedImageServiceServer
}

func (fsInfoServer) ImageFsInfo(context.Context, *runtime.ImageFsInfoRequest) (*runtime.ImageFsInfoResponse, error) {
	return &runtime.ImageFsInfoResponse{}, nil
}

func TestProbe(t *testing.T) {
	addr := filepath.Join(shortDir(t), "b9.sock")
	ctx, cancel := context.WithTimeout(t.Context(), 500*time.Millisecond)
	defer cancel()
	if err := probe(ctx, addr); err == nil {
		t.Error("probe succeeded with nothing at the socket")
	}
	// Something that accepts but is not a CRI image service: not ready.
	l, err := net.Listen("unix", addr)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	go srv.Serve(l)
	ctx, cancel = context.WithTimeout(t.Context(), 2*time.Second)
	defer cancel()
	if err := probe(ctx, addr); err == nil {
		t.Error("probe succeeded against a server without the image service")
	}
	srv.Stop()

	l, err = net.Listen("unix", addr)
	if err != nil {
		t.Fatal(err)
	}
	srv = grpc.NewServer()
	runtime.RegisterImageServiceServer(srv, fsInfoServer{})
	go srv.Serve(l)
	defer srv.Stop()
	ctx, cancel = context.WithTimeout(t.Context(), 2*time.Second)
	defer cancel()
	if err := probe(ctx, addr); err != nil {
		t.Errorf("probe of a serving socket: %v", err)
	}
}

// A new instance waits while the old one serves the socket, and serves
// it as soon as the old one lets go; without --takeover-timeout, or once
// it has passed, a live socket is an error.
func TestRunTakingOver(t *testing.T) {
	dir := shortDir(t)
	cfg := *service.DefaultConfig()
	cfg.Address = filepath.Join(dir, "b9", "b9.sock")
	cfg.ContainerdAddress = filepath.Join(dir, "containerd.sock")
	if err := os.MkdirAll(filepath.Dir(cfg.Address), 0o700); err != nil {
		t.Fatal(err)
	}
	old, err := net.Listen("unix", cfg.Address)
	if err != nil {
		t.Fatal(err)
	}

	for name, timeout := range map[string]time.Duration{"no wait": 0, "wait too short": 300 * time.Millisecond} {
		if err := runTakingOver(t.Context(), cfg, timeout); !errdefs.IsAlreadyExists(err) {
			t.Errorf("%s: %v, want already exists", name, err)
		}
	}

	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- runTakingOver(ctx, cfg, time.Minute) }()
	time.Sleep(300 * time.Millisecond)
	select {
	case err := <-done:
		t.Fatalf("returned while the old instance served: %v", err)
	default:
	}
	old.Close() // the old instance stops (and unlinks its socket)

	pctx, pcancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer pcancel()
	for !answering(cfg.Address) {
		if pctx.Err() != nil {
			t.Fatal("the new instance did not take the socket over")
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("after takeover and stop: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("did not stop")
	}
}

// The debug socket serves the profiler's index and a CPU profile, and is
// root-only (0600) as containerd's is.
func TestServeDebug(t *testing.T) {
	addr := filepath.Join(shortDir(t), "debug", "debug.sock")
	closeDebug, err := serveDebug(t.Context(), addr)
	if err != nil {
		t.Fatal(err)
	}
	defer closeDebug()
	fi, err := os.Stat(addr)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("debug socket mode %v, want 0600", fi.Mode().Perm())
	}
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", addr)
	}}}
	for path, want := range map[string]string{
		"/debug/pprof/":                  "goroutine",
		"/debug/pprof/profile?seconds=1": "", // a gzipped profile: checked by its magic below
		"/debug/vars":                    "memstats",
		"/debug/pprof/goroutine?debug=1": "serveDebug",
	} {
		resp, err := hc.Get("http://b9" + path)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: status %d, %v", path, resp.StatusCode, err)
		}
		if want == "" {
			if len(body) < 2 || body[0] != 0x1f || body[1] != 0x8b {
				t.Errorf("GET %s: not a gzipped profile", path)
			}
			continue
		}
		if !strings.Contains(string(body), want) {
			t.Errorf("GET %s: no %q in the answer", path, want)
		}
	}
	// A second server on a live socket is refused, not shared.
	if _, err := serveDebug(t.Context(), addr); err == nil {
		t.Error("a second debug server took a live socket")
	}
}
