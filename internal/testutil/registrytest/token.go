package registrytest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/distribution/distribution/v3/registry/auth/token"
	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// leeway is distribution's fixed clock-skew allowance on exp/nbf
// (token.Leeway). The issuer back-dates exp by it so a token is rejected
// when its lifetime is really over, not a minute later.
const leeway = token.Leeway

// issuer is the JWT token server distribution's token auth trusts (through
// a JWKS file naming its key id).
type issuer struct {
	name    string
	service string
	signer  jose.Signer
	cfg     *config
	now     func() time.Time

	mu      sync.Mutex
	users   map[string]user
	refresh map[string]string // refresh token -> user
	issued  map[string]bool   // raw tokens issued, for ExpireTokens
	revoked map[string]bool
}

func newIssuer(dir, service string, cfg *config) (*issuer, string, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, "", err
	}
	kid := randomHex(8)
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: key},
		(&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", kid))
	if err != nil {
		return nil, "", err
	}
	jwks := jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &key.PublicKey, KeyID: kid, Algorithm: string(jose.ES256), Use: "sig"}}}
	b, err := json.Marshal(jwks)
	if err != nil {
		return nil, "", err
	}
	path := filepath.Join(dir, "jwks.json")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		return nil, "", err
	}
	is := &issuer{
		name: "registrytest-issuer", service: service, signer: signer, cfg: cfg, now: time.Now,
		users: map[string]user{}, refresh: map[string]string{}, issued: map[string]bool{}, revoked: map[string]bool{},
	}
	for k, v := range cfg.users {
		is.users[k] = v
	}
	for k, v := range cfg.refreshTokens {
		is.refresh[k] = v
	}
	return is, path, nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

type tokenResponse struct {
	Token        string `json:"token"`
	AccessToken  string `json:"access_token"`
	ExpiresIn    int    `json:"expires_in,omitempty"`
	IssuedAt     string `json:"issued_at"`
	RefreshToken string `json:"refresh_token,omitempty"`
	Scope        string `json:"scope,omitempty"`
}

// ServeHTTP implements GET /token (token.md) and POST /token (oauth.md).
func (is *issuer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var (
		subject  string
		ok       bool
		scopes   []string
		offline  bool
		service  string
		isOAuth2 bool
	)
	switch r.Method {
	case http.MethodGet:
		q := r.URL.Query()
		service = q.Get("service")
		for _, s := range q["scope"] {
			scopes = append(scopes, strings.Fields(s)...)
		}
		offline = q.Get("offline_token") == "true"
		if u, p, has := r.BasicAuth(); has {
			subject, ok = is.checkPassword(u, p)
		} else {
			subject, ok = "", true // anonymous
		}
	case http.MethodPost:
		if is.cfg.noOAuth {
			http.NotFound(w, r)
			return
		}
		isOAuth2 = true
		if err := r.ParseForm(); err != nil {
			oauthError(w, http.StatusBadRequest, "invalid_request")
			return
		}
		f := r.PostForm
		service = f.Get("service")
		scopes = strings.Fields(f.Get("scope"))
		offline = f.Get("access_type") == "offline"
		if f.Get("client_id") == "" {
			oauthError(w, http.StatusBadRequest, "invalid_request")
			return
		}
		switch f.Get("grant_type") {
		case "password":
			subject, ok = is.checkPassword(f.Get("username"), f.Get("password"))
		case "refresh_token":
			is.mu.Lock()
			subject, ok = is.refresh[f.Get("refresh_token")]
			if ok {
				_, ok = is.users[subject]
			}
			is.mu.Unlock()
		default:
			oauthError(w, http.StatusBadRequest, "unsupported_grant_type")
			return
		}
	default:
		w.WriteHeader(http.StatusMethodNotAllowed)
		return
	}
	if service != is.service {
		oauthError(w, http.StatusBadRequest, "invalid_request")
		return
	}
	if !ok {
		if isOAuth2 {
			oauthError(w, http.StatusUnauthorized, "invalid_grant")
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		_, _ = w.Write([]byte(`{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}`))
		return
	}

	access := is.grant(subject, scopes)
	now := is.now()
	lifetime := is.cfg.lifetime
	if lifetime == 0 {
		lifetime = is.cfg.expiresIn
		if lifetime == 0 {
			lifetime = 60 * time.Second
		}
	}
	claims := token.ClaimSet{
		Issuer: is.name, Subject: subject, Audience: token.AudienceList{is.service},
		// exp is whole seconds: round up, so the token lives at least
		// lifetime (a server must not be stricter than its expires_in).
		Expiration: now.Add(lifetime - leeway + time.Second - 1).Unix(),
		NotBefore:  now.Add(-time.Second).Unix(),
		IssuedAt:   now.Unix(),
		JWTID:      randomHex(8),
		Access:     access,
	}
	raw, err := jwt.Signed(is.signer).Claims(claims).Serialize()
	if err != nil {
		http.Error(w, "signing failed", http.StatusInternalServerError)
		return
	}
	is.mu.Lock()
	is.issued[raw] = true
	resp := tokenResponse{Token: raw, AccessToken: raw, IssuedAt: now.UTC().Format(time.RFC3339)}
	if !is.cfg.omitExpiresIn {
		resp.ExpiresIn = int(is.cfg.expiresIn / time.Second)
	}
	if offline && subject != "" {
		rt := "rt-" + randomHex(16)
		is.refresh[rt] = subject
		resp.RefreshToken = rt
	}
	is.mu.Unlock()
	if isOAuth2 {
		resp.Token = "" // oauth.md answers access_token only
		resp.Scope = strings.Join(scopes, " ")
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(resp)
}

func oauthError(w http.ResponseWriter, status int, code string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = fmt.Fprintf(w, `{"error":%q}`, code)
}

func (is *issuer) checkPassword(name, password string) (string, bool) {
	is.mu.Lock()
	defer is.mu.Unlock()
	u, ok := is.users[name]
	if !ok || u.password != password {
		return "", false
	}
	return name, true
}

// grant intersects the requested repository scopes with what subject may do.
func (is *issuer) grant(subject string, scopes []string) []*token.ResourceActions {
	is.mu.Lock()
	u, known := is.users[subject]
	is.mu.Unlock()
	var out []*token.ResourceActions
	for _, s := range scopes {
		parts := strings.Split(s, ":")
		if len(parts) < 3 || parts[0] != "repository" {
			continue
		}
		name := strings.Join(parts[1:len(parts)-1], ":")
		want := strings.Split(parts[len(parts)-1], ",")
		var allowed []string
		if known && (slices.Contains(u.repos, "*") || slices.Contains(u.repos, name)) {
			allowed = []string{"pull", "push", "*"}
		} else if slices.Contains(is.cfg.anonymous, name) || slices.Contains(is.cfg.anonymous, "*") {
			allowed = []string{"pull"}
		}
		var got []string
		for _, a := range want {
			if slices.Contains(allowed, a) {
				got = append(got, a)
			}
		}
		if len(got) > 0 {
			out = append(out, &token.ResourceActions{Type: "repository", Name: name, Actions: got})
		}
	}
	return out
}

// isRevoked reports whether raw was issued before the last ExpireTokens.
func (is *issuer) isRevoked(raw string) bool {
	is.mu.Lock()
	defer is.mu.Unlock()
	return is.revoked[raw]
}

func (is *issuer) expireAll() {
	is.mu.Lock()
	defer is.mu.Unlock()
	for raw := range is.issued {
		is.revoked[raw] = true
	}
	is.issued = map[string]bool{}
}

func (is *issuer) setUser(name string, u *user) {
	is.mu.Lock()
	defer is.mu.Unlock()
	if u == nil {
		delete(is.users, name)
		return
	}
	is.users[name] = *u
}

// AddIdentityToken makes refreshToken a valid OAuth2 refresh token for user
// from now on: WithIdentityToken for a token learned at run time, such as
// the ACR refresh token a test's /oauth2/exchange handler obtained. Like
// WithIdentityToken it is honoured only while user exists. It panics
// without WithTokenAuth (there is no token endpoint to honour it).
func (r *Registry) AddIdentityToken(user, refreshToken string) {
	if r.issuer == nil {
		panic("registrytest: AddIdentityToken needs WithTokenAuth")
	}
	r.issuer.mu.Lock()
	defer r.issuer.mu.Unlock()
	r.issuer.refresh[refreshToken] = user
}
