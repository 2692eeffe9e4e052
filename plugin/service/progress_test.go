package service

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/core/remotes/docker"
)

// TestPullProgress: a request that stays open reading nothing cancels the
// pull after the timeout; one that keeps reading does not.
func TestPullProgress(t *testing.T) {
	stall := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		if r.URL.Path == "/stall" {
			<-stall
			return
		}
		// A slow but steady body.
		for range 8 {
			w.Write([]byte("x"))
			w.(http.Flusher).Flush()
			time.Sleep(40 * time.Millisecond)
		}
	}))
	defer srv.Close()
	defer close(stall)

	for _, tc := range []struct {
		path       string
		wantCancel bool
	}{{"/stall", true}, {"/steady", false}} {
		t.Run(tc.path, func(t *testing.T) {
			p := &pullProgress{}
			hosts := p.hosts(func(string) ([]docker.RegistryHost, error) {
				return []docker.RegistryHost{{Client: &http.Client{}}}, nil
			})
			h, err := hosts("x")
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			cancelled := make(chan struct{})
			go p.watch(ctx, "img", 100*time.Millisecond, func() { close(cancelled) })

			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+tc.path, nil)
			resp, err := h[0].Client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			done := make(chan struct{})
			go func() { io.Copy(io.Discard, resp.Body); resp.Body.Close(); close(done) }()
			select {
			case <-cancelled:
				if !tc.wantCancel {
					t.Fatal("a pull that kept reading was cancelled")
				}
			case <-done:
				if tc.wantCancel {
					t.Fatal("the stalled request finished")
				}
				if p.open.Load() != 0 || p.read.Load() != 8 {
					t.Errorf("open %d read %d, want 0 and 8", p.open.Load(), p.read.Load())
				}
			case <-time.After(5 * time.Second):
				t.Fatal("neither cancelled nor finished")
			}
		})
	}
}
