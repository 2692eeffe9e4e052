package resolver

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/containerd/errdefs"

	"github.com/beam-cloud/b9-resolver/internal/keychain"
)

// maxTokenBody caps a token response. Real ones are a few KiB (a JWT with
// its claims, perhaps a refresh token); a registry (or its realm) that
// answers more is refused rather than read: the answer is held in memory
// and its token sent with every request.
const maxTokenBody = 64 << 10

// TokenRequest is one bearer-token fetch from a registry's token endpoint.
type TokenRequest struct {
	// Client is the registry host's client: its TLS settings and proxy
	// apply to the realm too. Redirects and connections are checked with
	// the realm rule whatever its own CheckRedirect says.
	Client *http.Client
	// Header is added to the request (hosts.toml and configured headers).
	Header http.Header
	// ClientID is the OAuth2 client_id of POST requests (DefaultClientID
	// when empty).
	ClientID string
	// RegistryScheme and RegistryHost are the registry's: the realm rule
	// is relative to them, and messages name the host.
	RegistryScheme, RegistryHost string
	// Realm and Service are the bearer challenge's.
	Realm, Service string
	Scopes         []string
	// Credential is presented to the realm; an anonymous one asks for an
	// anonymous token.
	Credential keychain.Credential
}

// Token is a bearer token and how long the server said it lives (0 when
// it did not say).
type Token struct {
	Value string
	Life  time.Duration
}

// FetchToken gets a bearer token the way every pull does: the realm (and
// every redirect of it, and the address each connection reaches) checked
// with the realm rule; with a secret, OAuth2 POST first (password grant, or
// refresh_token for identity tokens) and GET with basic auth when the
// server does not do OAuth2 (404, 405, and the 400 and 401 some registries
// answer instead); anonymous, GET. Errors are *TokenError.
func FetchToken(ctx context.Context, tr TokenRequest) (Token, error) {
	p := realmPolicy{scheme: tr.RegistryScheme, host: tr.RegistryHost}
	if err := p.checkRealm(tr.Realm); err != nil {
		return Token{}, err
	}
	base := tr.Client
	if base == nil {
		base = &http.Client{}
	}
	return fetchToken(ctx, tr, p.tokenClient(base, credentialed(tr.Credential)))
}

func credentialed(c keychain.Credential) bool { return !c.Anonymous && !c.Secret.IsZero() }

// fetchToken is FetchToken with the realm already checked and client
// already guarded.
func fetchToken(ctx context.Context, tr TokenRequest, client *http.Client) (Token, error) {
	if !credentialed(tr.Credential) {
		return tr.get(ctx, client)
	}
	tok, err := tr.post(ctx, client)
	if err == nil {
		return tok, nil
	}
	var te *TokenError
	if errors.As(err, &te) {
		switch te.Status {
		// GCR answers 404, Artifactory 401, ACR 400, others 405.
		case http.StatusNotFound, http.StatusMethodNotAllowed, http.StatusBadRequest, http.StatusUnauthorized:
			return tr.get(ctx, client)
		}
	}
	return Token{}, err
}

func (tr TokenRequest) post(ctx context.Context, client *http.Client) (Token, error) {
	form := url.Values{}
	if len(tr.Scopes) > 0 {
		form.Set("scope", strings.Join(tr.Scopes, " "))
	}
	form.Set("service", tr.Service)
	id := tr.ClientID
	if id == "" {
		id = DefaultClientID
	}
	form.Set("client_id", id)
	if tr.Credential.IdentityToken {
		form.Set("grant_type", "refresh_token")
		form.Set("refresh_token", tr.Credential.Secret.Reveal())
	} else {
		form.Set("grant_type", "password")
		form.Set("username", tr.Credential.Username)
		form.Set("password", tr.Credential.Secret.Reveal())
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, tr.Realm, strings.NewReader(form.Encode()))
	if err != nil {
		return Token{}, tr.fail(http.MethodPost, 0, "", fmt.Errorf("build request: %w", errdefs.ErrInvalidArgument))
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded; charset=utf-8")
	return tr.do(client, req)
}

func (tr TokenRequest) get(ctx context.Context, client *http.Client) (Token, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, tr.Realm, nil)
	if err != nil {
		return Token{}, tr.fail(http.MethodGet, 0, "", fmt.Errorf("build request: %w", errdefs.ErrInvalidArgument))
	}
	q := req.URL.Query()
	if tr.Service != "" {
		q.Set("service", tr.Service)
	}
	for _, s := range tr.Scopes {
		q.Add("scope", s)
	}
	req.URL.RawQuery = q.Encode()
	if credentialed(tr.Credential) {
		req.SetBasicAuth(tr.Credential.Username, tr.Credential.Secret.Reveal())
	}
	return tr.do(client, req)
}

type tokenResponse struct {
	Token       string `json:"token"`
	AccessToken string `json:"access_token"`
	ExpiresIn   int64  `json:"expires_in"`
}

func (tr TokenRequest) do(client *http.Client, req *http.Request) (Token, error) {
	for k, v := range tr.Header {
		req.Header[k] = append(req.Header[k], v...)
	}
	if req.Header.Get("User-Agent") == "" {
		req.Header.Set("User-Agent", userAgent)
	}
	resp, err := client.Do(req)
	if err != nil {
		// url.Error quotes the URL: the realm and its query (service,
		// scope), never credentials, which travel in the header or body.
		return Token{}, tr.fail(req.Method, 0, "", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxTokenBody+1))
	if err != nil {
		return Token{}, tr.fail(req.Method, resp.StatusCode, "", fmt.Errorf("reading the answer: %w", err))
	}
	if resp.StatusCode/100 != 2 {
		// The body is not quoted (some servers echo the request); only
		// its OAuth2 error code, which is a token from a fixed set.
		return Token{}, tr.fail(req.Method, resp.StatusCode, oauthCode(body), fmt.Errorf("answered %s: %w", resp.Status, StatusClass(resp.StatusCode)))
	}
	if len(body) > maxTokenBody {
		return Token{}, tr.fail(req.Method, resp.StatusCode, "", fmt.Errorf("answer larger than %d KiB: %w", maxTokenBody>>10, errdefs.ErrUnknown))
	}
	var tb tokenResponse
	if err := json.NewDecoder(bytes.NewReader(body)).Decode(&tb); err != nil {
		return Token{}, tr.fail(req.Method, resp.StatusCode, "", fmt.Errorf("undecodable response: %w", errdefs.ErrUnknown))
	}
	tok := tb.AccessToken
	if tok == "" {
		tok = tb.Token
	}
	if tok == "" {
		return Token{}, tr.fail(req.Method, resp.StatusCode, "", fmt.Errorf("response has no token: %w", errdefs.ErrUnknown))
	}
	var life time.Duration
	if tb.ExpiresIn > 0 {
		life = time.Duration(tb.ExpiresIn) * time.Second
	}
	return Token{Value: tok, Life: life}, nil
}

// oauthCode is an OAuth2 error answer's "error" (RFC 6749 §5.2), if it is
// a plain token; never free text.
func oauthCode(body []byte) string {
	var e struct {
		Error string `json:"error"`
	}
	if json.Unmarshal(body, &e) != nil || len(e.Error) > 64 {
		return ""
	}
	for _, r := range e.Error {
		if !(r == '_' || r == '-' || r == '.' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9') {
			return ""
		}
	}
	return e.Error
}

// TokenError is a failed token request: which registry, which endpoint
// (without its query), the method, the HTTP status (0 when there was no
// answer), the OAuth2 error code if the server gave one, and where the
// credential came from. It wraps the errdefs class of the failure.
type TokenError struct {
	Host     string
	Endpoint string
	Method   string
	Status   int
	Code     string
	Source   string
	Err      error
}

func (e *TokenError) Error() string {
	code := ""
	if e.Code != "" {
		code = ", error " + e.Code
	}
	return fmt.Sprintf("token for %s from %s (%s, credentials from %s%s): %v", e.Host, e.Endpoint, e.Method, e.Source, code, e.Err)
}

func (e *TokenError) Unwrap() error { return e.Err }

func (tr TokenRequest) fail(method string, status int, code string, err error) error {
	endpoint := tr.Realm
	if u, perr := url.Parse(tr.Realm); perr == nil {
		endpoint = u.Scheme + "://" + u.Host + u.Path
	}
	return &TokenError{Host: tr.RegistryHost, Endpoint: endpoint, Method: method, Status: status, Code: code, Source: describeSource(tr.Credential), Err: err}
}

// CheckRealm refuses a token realm credentials must not be sent to: not
// an http(s) URL, plain http from an https registry, link-local or cloud
// metadata, loopback from a registry not on loopback. It is the check
// every pull applies (FetchToken applies it too, and to every redirect).
func CheckRealm(realm, registryScheme, registryHost string) error {
	return realmPolicy{scheme: registryScheme, host: registryHost}.checkRealm(realm)
}

// StatusClass is the errdefs class of a registry's (or token server's)
// HTTP status, for errors that callers map to gRPC codes.
func StatusClass(code int) error {
	switch {
	case code == http.StatusUnauthorized:
		return errdefs.ErrUnauthenticated
	case code == http.StatusForbidden:
		return errdefs.ErrPermissionDenied
	case code == http.StatusNotFound:
		return errdefs.ErrNotFound
	case code == http.StatusTooManyRequests:
		return errdefs.ErrResourceExhausted
	case code >= 500:
		return errdefs.ErrUnavailable
	}
	return errdefs.ErrUnknown
}

// describeSource says where a credential came from, for messages: source
// and provider. Never the secret, nor the username: it is a value read
// from the tenant's document, and no message quotes one.
func describeSource(c keychain.Credential) string {
	if c.Anonymous {
		if c.Source == "" || c.Source == keychain.SourceNone {
			return "none (anonymous)"
		}
		return c.Source + " (anonymous)"
	}
	s := c.Source
	if s == "" {
		s = "unknown source"
	}
	if c.Provider != "" {
		s += ", " + c.Provider
	}
	return s
}
