package cloudemu

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
)

// API names the GCP emulator counts calls under.
const (
	APIGoogleToken      = "google:token"
	APIGCEMetadataToken = "gce:metadata-token"
)

const (
	jwtBearerGrant   = "urn:ietf:params:oauth:grant-type:jwt-bearer"
	metadataTokenURL = "/computeMetadata/v1/instance/service-accounts/default/token"
)

type gcpAccount struct {
	key      *rsa.PublicKey
	kid      string
	disabled bool
}

// GCP emulates Google's OAuth token endpoint (the JWT-bearer grant a
// service-account key's token_uri receives) and the GCE metadata server on
// one loopback listener: keys from NewServiceAccountKey carry TokenURI, and
// GCE_METADATA_HOST=MetadataHost() sends the metadata client here.
type GCP struct {
	*Control
	// URL is http://127.0.0.1:port.
	URL string

	srv      *httptest.Server
	mu       sync.Mutex
	accounts map[string]*gcpAccount
	scopes   []string
}

// NewGCP starts the emulator; tb's cleanup stops it.
func NewGCP(tb testing.TB) *GCP {
	g := &GCP{Control: newControl(), accounts: map[string]*gcpAccount{}}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /token", g.token)
	mux.HandleFunc("GET "+metadataTokenURL, g.metadataToken)
	mux.HandleFunc("GET /computeMetadata/v1/instance/service-accounts/default/email", g.metadata(func() string {
		return "default@emulated.iam.gserviceaccount.com"
	}))
	mux.HandleFunc("GET /{$}", g.metadata(func() string { return "" }))
	g.srv = httptest.NewServer(mux)
	g.URL = g.srv.URL
	tb.Cleanup(g.srv.Close)
	return g
}

// Close stops the listener, as an endpoint that is down.
func (g *GCP) Close() { g.srv.Close() }

// TokenURI is the token endpoint to put in a key's token_uri.
func (g *GCP) TokenURI() string { return g.URL + "/token" }

// MetadataHost is the value for GCE_METADATA_HOST.
func (g *GCP) MetadataHost() string { return strings.TrimPrefix(g.URL, "http://") }

// Scopes lists the scope claim of every accepted JWT grant.
func (g *GCP) Scopes() []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]string(nil), g.scopes...)
}

// NewServiceAccountKey makes an RSA key for email, registers its public
// half and returns the service-account key JSON (token_uri = TokenURI).
func (g *GCP) NewServiceAccountKey(tb testing.TB, email string) []byte {
	tb.Helper()
	priv, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		tb.Fatalf("cloudemu: generating a key: %v", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		tb.Fatalf("cloudemu: encoding a key: %v", err)
	}
	kid := randomString("", 20)
	g.mu.Lock()
	g.accounts[email] = &gcpAccount{key: &priv.PublicKey, kid: kid}
	g.mu.Unlock()
	key, _ := json.Marshal(map[string]string{
		"type":           "service_account",
		"project_id":     "emulated",
		"private_key_id": kid,
		"private_key":    string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})),
		"client_email":   email,
		"client_id":      "100000000000000000000",
		"auth_uri":       "https://accounts.google.com/o/oauth2/auth",
		"token_uri":      g.TokenURI(),
	})
	return key
}

// DisableServiceAccount makes grants for email fail as for a deleted key.
func (g *GCP) DisableServiceAccount(email string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if a := g.accounts[email]; a != nil {
		a.disabled = true
	}
}

func oauthError(w http.ResponseWriter, status int, code, desc string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": code, "error_description": desc})
}

func (g *GCP) token(w http.ResponseWriter, r *http.Request) {
	fault, life := g.begin(r.Context(), APIGoogleToken)
	if g.fault(w, fault) {
		return
	}
	body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	form, err := url.ParseQuery(string(body))
	if err != nil || form.Get("grant_type") != jwtBearerGrant {
		oauthError(w, http.StatusBadRequest, "unsupported_grant_type", "Invalid grant_type.")
		return
	}
	scope, ok := g.verifyAssertion(form.Get("assertion"))
	if !ok {
		oauthError(w, http.StatusBadRequest, "invalid_grant", "Invalid JWT Signature.")
		return
	}
	if fault == Deny {
		oauthError(w, http.StatusBadRequest, "invalid_grant", "Invalid grant: account not found")
		return
	}
	g.mu.Lock()
	g.scopes = append(g.scopes, scope)
	g.mu.Unlock()
	g.issue(w, "ya29.emu-", life)
}

// verifyAssertion checks an RS256 JWT grant: signature by the issuer's
// registered key, key id, audience = TokenURI, times. It returns the scope.
func (g *GCP) verifyAssertion(jwt string) (string, bool) {
	parts := strings.Split(jwt, ".")
	if len(parts) != 3 {
		return "", false
	}
	var hdr struct {
		Alg string `json:"alg"`
		Kid string `json:"kid"`
	}
	var claims struct {
		Iss   string `json:"iss"`
		Scope string `json:"scope"`
		Aud   string `json:"aud"`
		Exp   int64  `json:"exp"`
		Iat   int64  `json:"iat"`
	}
	if decodeSegment(parts[0], &hdr) != nil || decodeSegment(parts[1], &claims) != nil || hdr.Alg != "RS256" {
		return "", false
	}
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil {
		return "", false
	}
	g.mu.Lock()
	acct := g.accounts[claims.Iss]
	g.mu.Unlock()
	if acct == nil || acct.disabled || acct.kid != hdr.Kid {
		return "", false
	}
	sum := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	if rsa.VerifyPKCS1v15(acct.key, crypto.SHA256, sum[:], sig) != nil {
		return "", false
	}
	now := time.Now().Unix()
	if claims.Aud != g.TokenURI() || claims.Exp <= now || claims.Iat > now+60 || claims.Scope == "" {
		return "", false
	}
	return claims.Scope, true
}

func decodeSegment(seg string, v any) error {
	b, err := base64.RawURLEncoding.DecodeString(seg)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}

func (g *GCP) metadataToken(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Metadata-Flavor") != "Google" {
		http.Error(w, "Missing Metadata-Flavor:Google header.", http.StatusForbidden)
		return
	}
	fault, life := g.begin(r.Context(), APIGCEMetadataToken)
	w.Header().Set("Metadata-Flavor", "Google")
	if g.fault(w, fault) {
		return
	}
	if fault == Deny {
		http.Error(w, "service account not enabled on this instance", http.StatusForbidden)
		return
	}
	g.issue(w, "ya29.gce-emu-", life)
}

func (g *GCP) metadata(value func() string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Metadata-Flavor", "Google")
		if r.Header.Get("Metadata-Flavor") != "Google" {
			http.Error(w, "Missing Metadata-Flavor:Google header.", http.StatusForbidden)
			return
		}
		_, _ = io.WriteString(w, value())
	}
}

// fault answers the transport-level faults and reports whether it did.
func (g *GCP) fault(w http.ResponseWriter, f Fault) bool {
	switch f {
	case Throttle:
		oauthError(w, http.StatusTooManyRequests, "rate_limit_exceeded", "Rate Limit Exceeded")
	case Unavailable:
		oauthError(w, http.StatusServiceUnavailable, "temporarily_unavailable", "Service unavailable")
	case NotFound:
		http.NotFound(w, nil)
	case BadRequest:
		oauthError(w, http.StatusBadRequest, "invalid_request", "emulated bad request")
	default:
		return false
	}
	return true
}

// issue answers with a new access token of the given life. Google's
// expires_in is whole seconds and cannot be negative, so a life under a
// second (IssueExpired) becomes one second.
func (g *GCP) issue(w http.ResponseWriter, prefix string, life time.Duration) {
	secs := int64(life / time.Second)
	if secs < 1 {
		secs = 1
	}
	tok := randomString(prefix, 24)
	g.register(tok, time.Now().Add(time.Duration(secs)*time.Second))
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"access_token": tok, "expires_in": secs, "token_type": "Bearer"})
}
