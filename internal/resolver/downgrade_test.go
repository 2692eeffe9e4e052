package resolver

import (
	"bufio"
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/beam-cloud/b9-resolver/internal/testutil/keychaintest"
	"github.com/beam-cloud/b9-resolver/internal/testutil/registrytest"
)

// sniffer listens on one port and forwards each connection by its first
// byte: a TLS handshake to tlsAddr, anything else to plainAddr — so
// https://host:port and http://host:port are both served, as by a
// registry whose port speaks both.
func sniffer(t *testing.T, tlsAddr, plainAddr string) string {
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
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				first, err := br.Peek(1)
				if err != nil {
					return
				}
				to := plainAddr
				if first[0] == 0x16 {
					to = tlsAddr
				}
				up, err := net.Dial("tcp", to)
				if err != nil {
					return
				}
				defer up.Close()
				go func() { _, _ = io.Copy(up, br); up.(*net.TCPConn).CloseWrite() }()
				_, _ = io.Copy(c, up)
			}()
		}
	}()
	return l.Addr().String()
}

// An https registry with basic auth answers a blob request with a 307 to
// plain http on the same host and port. Go's client copies the
// Authorization header there (the control shows it); through the
// resolver's hosts no request reaches http://host:port with it, whatever
// becomes of the pull.
func TestHTTPSToHTTPRedirectSameHostPort(t *testing.T) {
	var plainAuth, plainHits atomic.Int64
	plain := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		plainHits.Add(1)
		if r.Header.Get("Authorization") != "" {
			plainAuth.Add(1)
		}
		w.WriteHeader(http.StatusNotFound)
	}))
	defer plain.Close()
	reg := registrytest.Start(t, registrytest.WithBasicAuth(), registrytest.WithUser("alice", alicePass), registrytest.WithTLS("registry.test"),
		registrytest.WithMiddleware(func(next http.Handler) http.Handler {
			return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/") && r.Header.Get("Authorization") != "" {
					http.Redirect(w, r, "http://"+r.Host+r.URL.Path, http.StatusTemporaryRedirect)
					return
				}
				next.ServeHTTP(w, r)
			})
		}))
	img := reg.PushRandomImage(t, "alice/app", "v1", "alice", alicePass)
	front := sniffer(t, reg.Addr, plain.Listener.Addr().String())
	_, port, _ := net.SplitHostPort(front)
	host := net.JoinHostPort("registry.test", port)
	dial := func(ctx context.Context, network, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, network, front)
	}

	// Control: Go's client sends the header to http://registry.test:port.
	ctl := &http.Client{Transport: &http.Transport{DialContext: dial, TLSClientConfig: &tls.Config{RootCAs: reg.CertPool(), MinVersion: tls.VersionTLS12}}}
	req, _ := http.NewRequest(http.MethodGet, "https://"+host+"/v2/alice/app/blobs/"+img.Layers[0], nil)
	req.SetBasicAuth("alice", alicePass)
	if resp, err := ctl.Do(req); err == nil {
		resp.Body.Close()
	}
	if plainAuth.Load() != 1 {
		t.Fatalf("control: %d credentialed requests reached plain http; the test proves nothing", plainAuth.Load())
	}
	plainAuth.Store(0)
	plainHits.Store(0)

	ctx, logs := testContext(t)
	kc := keychaintest.New(t)
	defer kc.Close()
	res := mustNew(t,
		WithTLSConfig(&tls.Config{RootCAs: reg.CertPool(), MinVersion: tls.VersionTLS12}),
		WithUpdateClient(func(c *http.Client) error {
			c.Transport.(*http.Transport).DialContext = dial
			return nil
		}),
	)
	err := pull(ctx, res.Hosts(FromKeychain(kc, docs(t, [3]string{"", "alice", alicePass}))), host+"/alice/app:v1", newStore(t))
	if plainHits.Load() == 0 {
		t.Fatalf("no request followed the redirect to plain http (pull: %v); the test proves nothing", err)
	}
	if plainAuth.Load() != 0 {
		t.Fatalf("%d requests carried alice's credential over plain http", plainAuth.Load())
	}
	if err != nil {
		noCanary(t, err.Error())
	}
	noCanary(t, logs.String())
}
