package service

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/beam-cloud/b9-resolver/internal/keychain/registry"
)

// A registry that cannot be reached is an outage (Unavailable, or
// DeadlineExceeded for a timeout), not an unknown error: kubelet backs off
// and operators' alerts see the right class. The errors are real ones,
// from net/http against real sockets.
func TestNetworkFailuresAreUnavailableOrDeadlineExceeded(t *testing.T) {
	get := func(t *testing.T, c *http.Client, url string) error {
		t.Helper()
		resp, err := c.Get(url)
		if err == nil {
			resp.Body.Close()
			t.Fatalf("GET %s succeeded", url)
		}
		return err
	}

	refusedURL := "http://" + refusingAddr(t) + "/v2/"

	// Accepts, then never answers; accepts, then hangs up.
	held := make(chan net.Conn, 16)
	t.Cleanup(func() {
		for len(held) > 0 {
			(<-held).Close()
		}
	})
	stalled := listen(t, func(c net.Conn) { held <- c })
	hangup := listen(t, func(c net.Conn) { c.Close() })

	// A TLS registry whose certificate the node does not trust.
	untrusted := httptest.NewTLSServer(http.NotFoundHandler())
	t.Cleanup(untrusted.Close)

	for _, tc := range []struct {
		name string
		err  func(t *testing.T) error
		want error
		code codes.Code
	}{
		{"connection refused", func(t *testing.T) error { return get(t, http.DefaultClient, refusedURL) },
			errdefs.ErrUnavailable, codes.Unavailable},
		{"no answer within the client's timeout", func(t *testing.T) error {
			return get(t, &http.Client{Timeout: 100 * time.Millisecond}, "http://"+stalled.Addr().String()+"/v2/")
		}, context.DeadlineExceeded, codes.DeadlineExceeded},
		{"connection closed without an answer", func(t *testing.T) error {
			return get(t, http.DefaultClient, "http://"+hangup.Addr().String()+"/v2/")
		}, errdefs.ErrUnavailable, codes.Unavailable},
		{"certificate not trusted", func(t *testing.T) error { return get(t, http.DefaultClient, untrusted.URL+"/v2/") },
			errdefs.ErrFailedPrecondition, codes.FailedPrecondition},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.err(t)
			// As containerd's resolver wraps it.
			err = errors.Join(errors.New("failed to resolve reference"), err)
			if got := class(err); !errors.Is(got, tc.want) {
				t.Fatalf("class(%v) = %v, want %v", err, got, tc.want)
			}
			ref := registry.Reference{Registry: registry.Registry{Host: "127.0.0.1:1"}, Repository: "a/b", Tag: "v1"}
			if got := status.Code(pullStatus(err, ref, nil)); got != tc.code {
				t.Errorf("PullImage status code %s, want %s", got, tc.code)
			}
		})
	}
}

// refusingAddr is a loopback address that refuses connections: a socket
// bound to it that never listens. Closing a listener would free its port
// for another test's server to take (the suite runs packages in
// parallel); the bound socket keeps it until the test ends.
func refusingAddr(t *testing.T) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("127.0.0.1:%d", sa.(*syscall.SockaddrInet4).Port)
}

// listen serves a loopback port, handing each connection to conn.
func listen(t *testing.T, conn func(net.Conn)) net.Listener {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			conn(c)
		}
	}()
	return l
}

// Forward mode reads containerd's CRI text, which arrives as Unknown.
func TestForwardedNetworkFailureText(t *testing.T) {
	for msg, want := range map[string]codes.Code{
		`failed to pull and unpack image "127.0.0.1:5000/a/b:v1": failed to resolve reference "127.0.0.1:5000/a/b:v1": failed to do request: Head "http://127.0.0.1:5000/v2/a/b/manifests/v1": dial tcp 127.0.0.1:5000: connect: connection refused`: codes.Unavailable,
		`failed to resolve reference "r.example/a/b:v1": failed to do request: Head "https://r.example/v2/a/b/manifests/v1": dial tcp: lookup r.example: no such host`:                                                                               codes.Unavailable,
		`failed to do request: Head "https://r.example/v2/a/b/manifests/v1": dial tcp 10.0.0.1:443: i/o timeout`:                                                                                                                                     codes.DeadlineExceeded,
		`unexpected status from HEAD request to https://r.example/v2/a/b/manifests/v1: 503 Service Unavailable`:                                                                                                                                      codes.Unavailable,
		`unexpected status from HEAD request to https://r.example/v2/a/b/manifests/v1: 401 Unauthorized`:                                                                                                                                             codes.Unauthenticated,
	} {
		err := status.Error(codes.Unknown, msg)
		if got := errgrpc.ToGRPC(class(err)); status.Code(got) != want {
			t.Errorf("%s: %s, want %s", msg, status.Code(got), want)
		}
	}
}

// A pull refused for want of a credential says what to set: the pod's
// annotation key (and its named form) or the node's config key, with the
// configured prefix; it says "anonymous" at most once. A refused
// credential gets no such advice: the message names its source instead.
func TestRefusalSaysWhatToDo(t *testing.T) {
	f := &fakeCRI{pull: func(r *runtime.PullImageRequest) (*runtime.PullImageResponse, error) {
		return nil, status.Error(codes.Unknown, `failed to pull and unpack image: failed to resolve reference: pull access denied, repository does not exist or may require authorization: authorization failed: no basic auth credentials`)
	}}
	_, cli := startService(t, Config{ContainerdAddress: startFakeCRI(t, f), PullMode: PullForward, AnnotationPrefix: "tenant.example/"})
	_, err := cli.PullImage(ctxT(t), pullReq("127.0.0.1:5000/a/app:v1", nil, nil))
	st := status.Convert(err)
	if st.Code() != codes.Unauthenticated {
		t.Fatalf("code %s, want Unauthenticated: %s", st.Code(), st.Message())
	}
	for _, part := range []string{"127.0.0.1:5000", "tenant.example/image-credentials ", "tenant.example/image-credentials.<name>", "node_credentials"} {
		if !strings.Contains(st.Message(), part) {
			t.Errorf("message does not say %q: %s", part, st.Message())
		}
	}
	if n := strings.Count(strings.ToLower(st.Message()), "anonymous"); n > 1 {
		t.Errorf("message says anonymous %d times: %s", n, st.Message())
	}

	_, err = cli.PullImage(ctxT(t), pullReq("127.0.0.1:5000/a/app:v1", map[string]string{"tenant.example/image-credentials": "alice:" + canaryPass}, nil))
	st = status.Convert(err)
	if st.Code() != codes.Unauthenticated || strings.Contains(st.Message(), "node_credentials") || !strings.Contains(st.Message(), "annotation tenant.example/image-credentials") {
		t.Errorf("refused annotation credential: %s %s; want Unauthenticated naming the annotation, without the no-credential advice", st.Code(), st.Message())
	}
}
