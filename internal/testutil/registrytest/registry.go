package registrytest

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/distribution/distribution/v3/configuration"
	"github.com/distribution/distribution/v3/registry/handlers"
	"golang.org/x/crypto/bcrypt"

	// Registered by init: the access controllers and the storage driver
	// the configuration names.
	_ "github.com/distribution/distribution/v3/registry/auth/htpasswd"
	_ "github.com/distribution/distribution/v3/registry/auth/token"
	_ "github.com/distribution/distribution/v3/registry/storage/driver/filesystem"
	_ "github.com/distribution/distribution/v3/registry/storage/driver/inmemory"
)

// DefaultTLSName is the Host of a TLS registry started without names.
const DefaultTLSName = "registry.test"

// Registry is a running test registry. All fields are read-only.
type Registry struct {
	// URL is scheme://Host.
	URL string
	// Host is the host[:port] clients name in image references.
	Host string
	// Addr is the registry listener's address (always 127.0.0.1:port).
	Addr string
	// Auth is the registry's auth mode.
	Auth AuthMode
	// Realm is the token endpoint's URL in token mode.
	Realm string
	// Service is the token service name the registry expects.
	Service string
	// TokenHost is the token endpoint's host[:port] (Host unless
	// WithSeparateTokenHost).
	TokenHost string
	// BlobHost is the redirect target's host:port with WithBlobRedirect.
	BlobHost string
	// CAFile is the PEM file of the test CA with WithTLS (for hosts.toml "ca").
	CAFile string

	cfg      *config
	rec      *recorder
	issuer   *issuer
	ca       *testCA
	names    map[string]bool
	htpasswd string
	scheme   string

	// servers are the registry's listeners (registry, token, blob), for Stop.
	servers []*httptest.Server

	mu    sync.Mutex
	users map[string]user // basic mode
	blobs map[string][]byte
	mtime time.Time
}

// Start runs a registry until the test ends.
func Start(t testing.TB, opts ...Option) *Registry {
	t.Helper()
	cfg := &config{users: map[string]user{}, refreshTokens: map[string]string{}, expiresIn: 300 * time.Second}
	for _, o := range opts {
		o(cfg)
	}
	r, err := start(t, cfg)
	if err != nil {
		t.Fatalf("registrytest: %v", err)
	}
	return r
}

func start(t testing.TB, cfg *config) (*Registry, error) {
	dir := t.TempDir()
	r := &Registry{cfg: cfg, Auth: cfg.auth, rec: &recorder{logf: cfg.logf}, users: map[string]user{}, blobs: map[string][]byte{}, scheme: "http"}
	for k, v := range cfg.users {
		r.users[k] = v
	}
	if cfg.tls {
		if len(cfg.tlsNames) == 0 {
			cfg.tlsNames = []string{DefaultTLSName}
		}
		ca, err := newTestCA(cfg.tlsNames)
		if err != nil {
			return nil, fmt.Errorf("test CA: %w", err)
		}
		r.ca, r.scheme = ca, "https"
		r.CAFile = filepath.Join(dir, "ca.pem")
		if err := os.WriteFile(r.CAFile, ca.certPEM, 0o600); err != nil {
			return nil, err
		}
		r.names = map[string]bool{}
		for _, n := range cfg.tlsNames {
			r.names[strings.ToLower(n)] = true
		}
	}

	main, err := r.newServer(t, cfg.addr)
	if err != nil {
		return nil, err
	}
	r.Addr = main.Listener.Addr().String()
	_, port, _ := net.SplitHostPort(r.Addr)
	r.Host = r.Addr
	if cfg.tls {
		r.Host = net.JoinHostPort(cfg.tlsNames[0], port)
	}
	r.URL = r.scheme + "://" + r.Host
	r.Service = r.Host
	r.TokenHost = r.Host

	// The token issuer and the blob store answer to "localhost:<port>", a
	// host that differs from the registry's by name as well as by port, and
	// that clients which refuse loopback IP realms (ggcr) still accept.
	var tokenSrv, blobSrv *httptest.Server
	if cfg.auth == AuthToken && cfg.separateToken {
		if tokenSrv, err = r.newServer(t, ""); err != nil {
			return nil, err
		}
		r.TokenHost = localhostName(tokenSrv)
	}
	if cfg.blobRedirect {
		if blobSrv, err = r.newServer(t, ""); err != nil {
			return nil, err
		}
		r.BlobHost = localhostName(blobSrv)
		if cfg.blobHostName != "" {
			_, port, _ := net.SplitHostPort(blobSrv.Listener.Addr().String())
			r.BlobHost = net.JoinHostPort(cfg.blobHostName, port)
		}
	}

	dc := &configuration.Configuration{}
	dc.Storage = configuration.Storage{
		"inmemory": configuration.Parameters{},
		// The purger is a goroutine per registry that outlives the test.
		"maintenance": configuration.Parameters{"uploadpurging": map[any]any{"enabled": false}},
	}
	if cfg.onDisk {
		delete(dc.Storage, "inmemory")
		dc.Storage["filesystem"] = configuration.Parameters{"rootdirectory": filepath.Join(dir, "storage")}
	}
	dc.HTTP.Secret = randomHex(16)
	switch cfg.auth {
	case AuthBasic:
		r.htpasswd = filepath.Join(dir, "htpasswd")
		if err := r.writeHtpasswd(); err != nil {
			return nil, err
		}
		dc.Auth = configuration.Auth{"htpasswd": configuration.Parameters{"realm": "registrytest", "path": r.htpasswd}}
	case AuthToken:
		r.Realm = r.scheme + "://" + r.TokenHost + "/token"
		is, jwks, err := newIssuer(dir, r.Service, cfg)
		if err != nil {
			return nil, fmt.Errorf("token issuer: %w", err)
		}
		r.issuer = is
		dc.Auth = configuration.Auth{"token": configuration.Parameters{
			"realm": r.Realm, "service": r.Service, "issuer": is.name, "jwks": jwks,
		}}
	}
	app, err := newApp(dc)
	if err != nil {
		return nil, err
	}

	var h http.Handler = app
	if cfg.blobRedirect {
		h = r.redirectBlobs(h)
	}
	if cfg.blobDelay > 0 {
		h = delayBlobs(cfg.blobDelay, h)
	}
	if r.issuer != nil {
		h = r.rejectRevoked(h)
	}
	for i := len(cfg.middleware) - 1; i >= 0; i-- {
		h = cfg.middleware[i](h)
	}
	regHandler := r.rec.wrap(ServerRegistry, h)
	if r.issuer != nil && tokenSrv == nil {
		mux := http.NewServeMux()
		mux.Handle("/token", r.rec.wrap(ServerToken, r.issuer))
		mux.Handle("/", regHandler)
		main.Config.Handler = mux
	} else {
		main.Config.Handler = regHandler
	}
	if tokenSrv != nil {
		tokenSrv.Config.Handler = r.rec.wrap(ServerToken, r.issuer)
	}
	if blobSrv != nil {
		blobSrv.Config.Handler = r.rec.wrap(ServerBlob, http.HandlerFunc(r.serveObject))
	}
	for _, ls := range []struct {
		s    *httptest.Server
		name Server
	}{{main, ServerRegistry}, {tokenSrv, ServerToken}, {blobSrv, ServerBlob}} {
		s := ls.s
		if s == nil {
			continue
		}
		if f, name := cfg.connState, ls.name; f != nil {
			s.Config.ConnState = func(c net.Conn, st http.ConnState) { f(name, c, st) }
		}
		if cfg.tls {
			s.TLS = &tls.Config{Certificates: []tls.Certificate{r.ca.serving}, MinVersion: tls.VersionTLS12}
			s.StartTLS()
		} else {
			s.Start()
		}
		t.Cleanup(s.Close)
		r.servers = append(r.servers, s)
	}
	return r, nil
}

// Stop closes the registry's listeners (and its token and blob servers):
// from then on every connection to them is refused, as when a registry is
// down. The test's cleanup closes them anyway.
func (r *Registry) Stop() {
	for _, s := range r.servers {
		s.CloseClientConnections()
		s.Close()
	}
}

func localhostName(s *httptest.Server) string {
	_, port, _ := net.SplitHostPort(s.Listener.Addr().String())
	return net.JoinHostPort("localhost", port)
}

// newServer makes an unstarted server listening on addr (or a random
// loopback port).
func (r *Registry) newServer(t testing.TB, addr string) (*httptest.Server, error) {
	s := httptest.NewUnstartedServer(nil)
	if addr != "" {
		l, err := net.Listen("tcp", addr)
		if err != nil {
			return nil, fmt.Errorf("listen on %s: %w", addr, err)
		}
		s.Listener.Close()
		s.Listener = l
	}
	// Quiet the "http: TLS handshake error" lines clients that give up cause.
	s.Config.ErrorLog = nil
	return s, nil
}

// newApp builds distribution's handler; NewApp panics on bad configuration.
func newApp(dc *configuration.Configuration) (app http.Handler, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("distribution: %v", p)
		}
	}()
	return handlers.NewApp(context.Background(), dc), nil
}

var blobPath = regexp.MustCompile(`^/v2/.+/blobs/sha256:[a-f0-9]{64}$`)

func delayBlobs(d time.Duration, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.Method == http.MethodGet && blobPath.MatchString(req.URL.Path) {
			select {
			case <-time.After(d):
			case <-req.Context().Done():
				return
			}
		}
		next.ServeHTTP(w, req)
	})
}

// redirectBlobs answers an authorised blob GET with a 307 to the blob host,
// which then serves the bytes with no auth at all.
func (r *Registry) redirectBlobs(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.Method != http.MethodGet || !blobPath.MatchString(req.URL.Path) {
			next.ServeHTTP(w, req)
			return
		}
		rec := httptest.NewRecorder()
		next.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK {
			for k, v := range rec.Header() {
				w.Header()[k] = v
			}
			w.WriteHeader(rec.Code)
			_, _ = io.Copy(w, rec.Body)
			return
		}
		id := randomHex(12)
		r.mu.Lock()
		r.blobs[id] = rec.Body.Bytes()
		r.mu.Unlock()
		http.Redirect(w, req, r.scheme+"://"+r.BlobHost+"/objects/"+id, http.StatusTemporaryRedirect)
	})
}

func (r *Registry) serveObject(w http.ResponseWriter, req *http.Request) {
	id := strings.TrimPrefix(req.URL.Path, "/objects/")
	r.mu.Lock()
	b, ok := r.blobs[id]
	r.mu.Unlock()
	if !ok || (req.Method != http.MethodGet && req.Method != http.MethodHead) {
		http.NotFound(w, req)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	http.ServeContent(w, req, "", time.Time{}, strings.NewReader(string(b)))
}

// rejectRevoked answers tokens invalidated by ExpireTokens as distribution
// answers an expired one: 401 with a challenge carrying error="invalid_token".
func (r *Registry) rejectRevoked(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		scheme, raw, _ := strings.Cut(req.Header.Get("Authorization"), " ")
		if strings.EqualFold(scheme, "bearer") && r.issuer.isRevoked(raw) {
			w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Bearer realm=%q,service=%q,error="invalid_token"`, r.Realm, r.Service))
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = w.Write([]byte(`{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}`))
			return
		}
		next.ServeHTTP(w, req)
	})
}

// writeHtpasswd writes the users as bcrypt htpasswd lines and moves the
// file's mtime forward, which is how distribution notices a change.
func (r *Registry) writeHtpasswd() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	var b strings.Builder
	for name, u := range r.users {
		// MinCost: the registry checks every request's password.
		h, err := bcrypt.GenerateFromPassword([]byte(u.password), bcrypt.MinCost)
		if err != nil {
			return err
		}
		fmt.Fprintf(&b, "%s:%s\n", name, h)
	}
	if err := os.WriteFile(r.htpasswd, []byte(b.String()), 0o600); err != nil {
		return err
	}
	if r.mtime.IsZero() {
		r.mtime = time.Now()
	}
	r.mtime = r.mtime.Add(time.Second)
	return os.Chtimes(r.htpasswd, r.mtime, r.mtime)
}

// SetPassword changes (or adds) a user's password; the old one stops
// working at once. Tokens already issued stay valid until ExpireTokens.
func (r *Registry) SetPassword(t testing.TB, name, password string) {
	t.Helper()
	r.mu.Lock()
	u := r.users[name]
	if len(u.repos) == 0 {
		u.repos = []string{"*"}
	}
	u.password = password
	r.users[name] = u
	r.mu.Unlock()
	r.applyUsers(t, name, &u)
}

// RemoveUser revokes a user: passwords and refresh tokens stop working.
func (r *Registry) RemoveUser(t testing.TB, name string) {
	t.Helper()
	r.mu.Lock()
	delete(r.users, name)
	r.mu.Unlock()
	r.applyUsers(t, name, nil)
}

func (r *Registry) applyUsers(t testing.TB, name string, u *user) {
	switch r.Auth {
	case AuthBasic:
		if err := r.writeHtpasswd(); err != nil {
			t.Fatalf("registrytest: htpasswd: %v", err)
		}
	case AuthToken:
		r.issuer.setUser(name, u)
	}
}

// ExpireTokens makes every token issued so far invalid: the registry answers
// them 401 with error="invalid_token", as it does an expired token.
func (r *Registry) ExpireTokens() {
	if r.issuer != nil {
		r.issuer.expireAll()
	}
}

// CertPool is the pool trusting the test CA (nil without TLS).
func (r *Registry) CertPool() *x509.CertPool {
	if r.ca == nil {
		return nil
	}
	return r.ca.pool
}

// CACertPEM is the test CA certificate (nil without TLS).
func (r *Registry) CACertPEM() []byte {
	if r.ca == nil {
		return nil
	}
	return append([]byte(nil), r.ca.certPEM...)
}

// DialContext dials the registry's TLS names at 127.0.0.1 and everything
// else as asked, so clients reach "123456789012.dkr.ecr.us-east-1.amazonaws.com:port"
// without DNS.
func (r *Registry) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	if host, port, err := net.SplitHostPort(addr); err == nil && r.names[strings.ToLower(host)] {
		addr = net.JoinHostPort("127.0.0.1", port)
	}
	var d net.Dialer
	return d.DialContext(ctx, network, addr)
}

// Transport is an http.Transport that trusts the test CA, resolves the TLS
// names, and never uses a proxy from the environment.
func (r *Registry) Transport() *http.Transport {
	tr := &http.Transport{
		DialContext:         r.DialContext,
		ForceAttemptHTTP2:   true,
		MaxIdleConnsPerHost: 16,
		IdleConnTimeout:     30 * time.Second,
	}
	if r.ca != nil {
		tr.TLSClientConfig = &tls.Config{RootCAs: r.ca.pool, MinVersion: tls.VersionTLS12}
	}
	return tr
}

// Client is an http.Client using Transport.
func (r *Registry) Client() *http.Client { return &http.Client{Transport: r.Transport()} }
