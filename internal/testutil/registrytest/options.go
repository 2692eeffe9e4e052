package registrytest

import (
	"net"
	"net/http"
	"time"
)

// AuthMode is how the registry authenticates clients.
type AuthMode int

const (
	// AuthNone serves everything anonymously.
	AuthNone AuthMode = iota
	// AuthBasic is distribution's htpasswd access controller (bcrypt).
	AuthBasic
	// AuthToken is distribution's token access controller, trusting the
	// test's own JWT issuer.
	AuthToken
)

func (m AuthMode) String() string {
	switch m {
	case AuthBasic:
		return "basic"
	case AuthToken:
		return "token"
	default:
		return "none"
	}
}

// Option configures Start.
type Option func(*config)

type user struct {
	password string
	// repos the user may pull and push; "*" is every repository.
	repos []string
}

type config struct {
	auth          AuthMode
	users         map[string]user
	anonymous     []string // repos anyone may pull (token mode)
	refreshTokens map[string]string
	expiresIn     time.Duration // reported; 0 omits the field
	omitExpiresIn bool
	lifetime      time.Duration // real validity; 0 = expiresIn (or 60 s)
	noOAuth       bool
	separateToken bool
	addr          string
	tlsNames      []string
	tls           bool
	blobRedirect  bool
	blobHostName  string
	blobDelay     time.Duration
	middleware    []func(http.Handler) http.Handler
	connState     func(Server, net.Conn, http.ConnState)
	logf          func(format string, args ...any)
	onDisk        bool
}

// WithDiskStorage keeps blobs in files under the test's temp dir instead of
// memory: for tests that push hundreds of megabytes, which the in-memory
// driver holds at once and copies slowly.
func WithDiskStorage() Option { return func(c *config) { c.onDisk = true } }

// WithBasicAuth protects the registry with htpasswd auth; add users with WithUser.
func WithBasicAuth() Option { return func(c *config) { c.auth = AuthBasic } }

// WithTokenAuth protects the registry with token auth and runs the JWT issuer.
func WithTokenAuth() Option { return func(c *config) { c.auth = AuthToken } }

// WithUser adds a user. In token mode the user's tokens grant pull and push
// on repos only ("*" for all; none given means all); in basic mode every
// user may access every repository (htpasswd has no scopes).
func WithUser(name, password string, repos ...string) Option {
	return func(c *config) {
		if len(repos) == 0 {
			repos = []string{"*"}
		}
		c.users[name] = user{password: password, repos: repos}
	}
}

// WithAnonymousPull lets anonymous token requests pull repos (token mode).
func WithAnonymousPull(repos ...string) Option {
	return func(c *config) { c.anonymous = append(c.anonymous, repos...) }
}

// WithIdentityToken makes refreshToken a valid OAuth2 refresh token for user
// (grant_type=refresh_token), like an ACR refresh token or a Docker identity
// token.
func WithIdentityToken(user, refreshToken string) Option {
	return func(c *config) { c.refreshTokens[refreshToken] = user }
}

// WithTokenExpiresIn sets the expires_in the issuer reports (default 300 s).
// Zero omits the field, which per the token spec means 60 s.
func WithTokenExpiresIn(d time.Duration) Option {
	return func(c *config) {
		c.expiresIn = d
		c.omitExpiresIn = d == 0
	}
}

// WithTokenLifetime sets how long issued tokens really stay valid,
// independently of the reported expires_in, to simulate a token that dies
// before the client expected.
func WithTokenLifetime(d time.Duration) Option { return func(c *config) { c.lifetime = d } }

// WithoutOAuth makes POST /token answer 404, as token servers without OAuth2
// support do; clients must fall back to GET.
func WithoutOAuth() Option { return func(c *config) { c.noOAuth = true } }

// WithSeparateTokenHost serves the token issuer on its own listener (like
// auth.docker.io for registry-1.docker.io) instead of the registry's /token.
func WithSeparateTokenHost() Option { return func(c *config) { c.separateToken = true } }

// WithAddr listens on addr (e.g. "127.0.0.1:5000") instead of a random
// loopback port, for a containerd daemon configured to reach it there.
func WithAddr(addr string) Option { return func(c *config) { c.addr = addr } }

// WithTLS serves HTTPS with a certificate from a fresh test CA, valid for
// names (plus localhost and 127.0.0.1). The first name becomes Host; clients
// reach it through Registry.Client or Registry.DialContext, which map the
// names to the listener.
func WithTLS(names ...string) Option {
	return func(c *config) {
		c.tls = true
		c.tlsNames = append(c.tlsNames, names...)
	}
}

// WithBlobRedirect answers blob GETs with a 307 to a second host ("object
// storage") that serves the bytes without auth, like S3 behind ECR or Docker Hub.
func WithBlobRedirect() Option { return func(c *config) { c.blobRedirect = true } }

// WithBlobRedirectHost is WithBlobRedirect to hostname (on its own port)
// instead of "localhost". "127.0.0.1" gives the registry's own hostname on
// another port: Go's http.Client copies Authorization along such a redirect
// (it compares hostnames, not ports), so only the client's authorizer can
// keep credentials off it.
func WithBlobRedirectHost(hostname string) Option {
	return func(c *config) { c.blobRedirect, c.blobHostName = true, hostname }
}

// WithBlobDelay holds each blob GET for d before the registry checks its
// authorization: a slow blob, during which a short-lived token can expire.
func WithBlobDelay(d time.Duration) Option { return func(c *config) { c.blobDelay = d } }

// WithMiddleware wraps the registry handler (inside the recorder, so what it
// answers is recorded): inject failures such as ECR's 403 "expired".
func WithMiddleware(mw func(http.Handler) http.Handler) Option {
	return func(c *config) { c.middleware = append(c.middleware, mw) }
}

// WithLogf logs one line per request (method, host, path, status; never
// headers). t.Logf is the usual choice.
func WithLogf(logf func(format string, args ...any)) Option {
	return func(c *config) { c.logf = logf }
}

// WithConnState calls f on every connection state change at the registry's
// listeners, naming the listener (the registry's own also serves /token
// unless WithSeparateTokenHost). Count http.StateNew to count TCP
// connections, and so connection reuse across pulls.
func WithConnState(f func(s Server, c net.Conn, state http.ConnState)) Option {
	return func(c *config) { c.connState = f }
}
