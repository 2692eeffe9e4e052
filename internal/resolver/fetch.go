package resolver

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/containerd/errdefs"

	"github.com/beam-cloud/b9-resolver/internal/keychain"
)

// maxTokenBody caps a token response; real ones are a few KiB.
const maxTokenBody = 64 << 10

// tokenRequest is one token fetch.
type tokenRequest struct {
	client   *http.Client
	header   http.Header
	clientID string
	ch       challenge
	host     string // registry host the token is for (for messages)
	scopes   []string
	cred     keychain.Credential
}

// fetchToken gets a bearer token as containerd does: with a secret, OAuth2
// POST first (password grant, or refresh_token for identity tokens) and GET
// with basic auth when the server does not do OAuth2 (404, 405, and the 400
// and 401 some registries answer instead); anonymous, GET. It returns the
// token and its life (0 when the server did not say).
func fetchToken(ctx context.Context, tr tokenRequest) (string, time.Duration, error) {
	if tr.cred.Anonymous || tr.cred.Secret.IsZero() {
		return tr.get(ctx)
	}
	tok, life, status, err := tr.post(ctx)
	if err == nil {
		return tok, life, nil
	}
	switch status {
	// GCR answers 404, Artifactory 401, ACR 400, others 405.
	case http.StatusNotFound, http.StatusMethodNotAllowed, http.StatusBadRequest, http.StatusUnauthorized:
		return tr.get(ctx)
	}
	return "", 0, err
}

func (tr tokenRequest) post(ctx context.Context) (string, time.Duration, int, error) {
	form := url.Values{}
	if len(tr.scopes) > 0 {
		form.Set("scope", strings.Join(tr.scopes, " "))
	}
	form.Set("service", tr.ch.service)
	form.Set("client_id", tr.clientID)
	if tr.cred.IdentityToken {
		form.Set("grant_type", "refresh_token")
		form.Set("refresh_token", tr.cred.Secret.Reveal())
	} else {
		form.Set("grant_type", "password")
		form.Set("username", tr.cred.Username)
		form.Set("password", tr.cred.Secret.Reveal())
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, tr.ch.realm, strings.NewReader(form.Encode()))
	if err != nil {
		return "", 0, 0, tr.fail("build request", err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded; charset=utf-8")
	return tr.do(req)
}

func (tr tokenRequest) get(ctx context.Context) (string, time.Duration, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, tr.ch.realm, nil)
	if err != nil {
		return "", 0, tr.fail("build request", err)
	}
	q := req.URL.Query()
	if tr.ch.service != "" {
		q.Set("service", tr.ch.service)
	}
	for _, s := range tr.scopes {
		q.Add("scope", s)
	}
	req.URL.RawQuery = q.Encode()
	if !tr.cred.Anonymous && !tr.cred.Secret.IsZero() {
		req.SetBasicAuth(tr.cred.Username, tr.cred.Secret.Reveal())
	}
	tok, life, _, err := tr.do(req)
	return tok, life, err
}

type tokenResponse struct {
	Token       string `json:"token"`
	AccessToken string `json:"access_token"`
	ExpiresIn   int64  `json:"expires_in"`
}

func (tr tokenRequest) do(req *http.Request) (string, time.Duration, int, error) {
	for k, v := range tr.header {
		req.Header[k] = append(req.Header[k], v...)
	}
	if req.Header.Get("User-Agent") == "" {
		req.Header.Set("User-Agent", userAgent)
	}
	resp, err := tr.client.Do(req)
	if err != nil {
		// url.Error quotes the URL: the realm and its query (service,
		// scope), never credentials, which travel in the header or body.
		return "", 0, 0, tr.fail(req.Method, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxTokenBody))
		// The body is not quoted: some servers echo the request.
		return "", 0, resp.StatusCode, tr.fail(req.Method, fmt.Errorf("answered %s: %w", resp.Status, StatusClass(resp.StatusCode)))
	}
	var body tokenResponse
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxTokenBody)).Decode(&body); err != nil {
		return "", 0, resp.StatusCode, tr.fail(req.Method, fmt.Errorf("undecodable response: %w", errdefs.ErrUnknown))
	}
	tok := body.AccessToken
	if tok == "" {
		tok = body.Token
	}
	if tok == "" {
		return "", 0, resp.StatusCode, tr.fail(req.Method, fmt.Errorf("response has no token: %w", errdefs.ErrUnknown))
	}
	var life time.Duration
	if body.ExpiresIn > 0 {
		life = time.Duration(body.ExpiresIn) * time.Second
	}
	return tok, life, resp.StatusCode, nil
}

// fail names the token endpoint (without its query), the registry and the
// credential's source.
func (tr tokenRequest) fail(what string, err error) error {
	endpoint := tr.ch.realm
	if u, perr := url.Parse(tr.ch.realm); perr == nil {
		endpoint = u.Scheme + "://" + u.Host + u.Path
	}
	return fmt.Errorf("token for %s from %s (%s, credentials from %s): %w", tr.host, endpoint, what, describeSource(tr.cred), err)
}

// CheckRealm refuses a token realm credentials must not be sent to: not
// a URL, plain http from an https registry (off loopback), link-local. It
// is the check every pull applies; ctr-b9 check applies it too.
func CheckRealm(realm, registryScheme, registryHost string) error {
	return checkRealm(realm, registryScheme, registryHost)
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
// and provider, and the username (not secret); never the secret.
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
	if c.Username != "" {
		s += fmt.Sprintf(", user %q", c.Username)
	}
	return s
}
