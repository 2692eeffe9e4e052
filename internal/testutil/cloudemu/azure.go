package cloudemu

import (
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
)

// API names the Azure emulator counts calls under.
const (
	APIAADToken    = "aad:token"
	APIACRExchange = "acr:exchange"
	APIACRToken    = "acr:token"
	APIIMDSToken   = "imds:token"
)

// ACRRefreshUsername is the username that goes with an ACR refresh token.
const ACRRefreshUsername = "00000000-0000-0000-0000-000000000000"

// aadTokenLife is how long AAD access tokens live (the Control lifetime
// applies to the ACR refresh tokens that reach a registry).
const aadTokenLife = time.Hour

type azurePrincipal struct {
	secret  string
	expired bool
}

// ACRExchange is what the emulator saw of one accepted /oauth2/exchange.
type ACRExchange struct {
	Tenant, Service, GrantType string
}

// Azure emulates Azure AD's v2 token endpoint (client-credentials grant)
// and one ACR login server (/oauth2/exchange, /oauth2/token, /v2/) on one
// loopback TLS listener: URL is both the authority host and the registry,
// Host the registry's host, Client an http.Client that trusts the listener.
// IMDSURL is the instance metadata service's managed-identity token
// endpoint, plain HTTP as on a VM.
type Azure struct {
	*Control
	// URL is https://127.0.0.1:port.
	URL string
	// Host is 127.0.0.1:port, the registry (login server) host.
	Host string
	// IMDSURL is http://127.0.0.1:port, IMDS.
	IMDSURL string

	srv        *httptest.Server
	key        []byte
	mu         sync.Mutex
	principals map[string]*azurePrincipal
	audience   string
	access     map[string]time.Time
	exchanges  []ACRExchange
	// identities are the node's managed identities: client id ("" for
	// the system-assigned one) to tenant.
	identities map[string]string
	imds       *httptest.Server
}

// NewAzure starts the emulator; tb's cleanup stops it.
func NewAzure(tb testing.TB) *Azure {
	z := &Azure{
		Control:    newControl(),
		key:        []byte(randomString("", 32)),
		principals: map[string]*azurePrincipal{},
		audience:   "https://containerregistry.azure.net",
		access:     map[string]time.Time{},
		identities: map[string]string{},
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /{tenant}/oauth2/v2.0/token", z.aadToken)
	mux.HandleFunc("POST /oauth2/exchange", z.exchange)
	mux.HandleFunc("POST /oauth2/token", z.acrToken)
	mux.HandleFunc("GET /v2/", z.v2)
	z.srv = httptest.NewTLSServer(mux)
	z.URL = z.srv.URL
	z.Host = strings.TrimPrefix(z.srv.URL, "https://")
	tb.Cleanup(z.srv.Close)
	z.imds = httptest.NewServer(http.HandlerFunc(z.imdsToken))
	z.IMDSURL = z.imds.URL
	tb.Cleanup(z.imds.Close)
	return z
}

// Close stops the listeners, as endpoints that are down.
func (z *Azure) Close() { z.srv.Close(); z.imds.Close() }

// AssignIdentity gives the node a managed identity of tenant: clientID ""
// is the system-assigned one, any other a user-assigned one.
func (z *Azure) AssignIdentity(tenant, clientID string) {
	z.mu.Lock()
	defer z.mu.Unlock()
	z.identities[clientID] = tenant
}

// imdsToken is IMDS's GET /metadata/identity/oauth2/token: a token for
// resource, of the identity client_id names (or the system-assigned one).
func (z *Azure) imdsToken(w http.ResponseWriter, r *http.Request) {
	fault, life := z.begin(r.Context(), APIIMDSToken)
	switch fault {
	case Throttle:
		oauthError(w, http.StatusTooManyRequests, "too_many_requests", "IMDS throttled the request")
		return
	case Unavailable:
		oauthError(w, http.StatusInternalServerError, "unknown_error", "IMDS is unavailable")
		return
	case NotFound:
		oauthError(w, http.StatusNotFound, "not_found", "IMDS is updating")
		return
	case BadRequest, Deny:
		oauthError(w, http.StatusBadRequest, "invalid_request", "Identity not found")
		return
	}
	q := r.URL.Query()
	z.mu.Lock()
	aud := z.audience
	tenant, ok := z.identities[q.Get("client_id")]
	z.mu.Unlock()
	switch {
	case r.Method != http.MethodGet || r.URL.Path != "/metadata/identity/oauth2/token":
		http.NotFound(w, r)
	case r.Header.Get("Metadata") != "true":
		oauthError(w, http.StatusBadRequest, "invalid_request", "Required metadata header not specified")
	case q.Get("api-version") == "":
		oauthError(w, http.StatusBadRequest, "invalid_request", "Required query variable 'api-version' is missing")
	case strings.TrimRight(q.Get("resource"), "/") != aud:
		oauthError(w, http.StatusBadRequest, "invalid_resource", "AADSTS500011: The resource principal named "+q.Get("resource")+" was not found")
	case !ok:
		oauthError(w, http.StatusBadRequest, "invalid_request", "Identity not found")
	default:
		exp := time.Now().Add(aadTokenLife)
		if life < 0 {
			exp = time.Now().Add(life)
		}
		tok := signHS256(z.key, map[string]any{"aud": aud, "tid": tenant, "appid": q.Get("client_id"), "iat": time.Now().Unix(), "exp": exp.Unix()})
		w.Header().Set("Content-Type", "application/json")
		// IMDS sends its numbers as strings.
		_ = json.NewEncoder(w).Encode(map[string]string{"token_type": "Bearer", "access_token": tok, "resource": q.Get("resource"),
			"expires_in": fmt.Sprint(int(time.Until(exp).Seconds())), "expires_on": fmt.Sprint(exp.Unix())})
	}
}

// Client trusts the emulator's TLS certificate.
func (z *Azure) Client() *http.Client { return z.srv.Client() }

// AddServicePrincipal registers a client id and secret in tenant.
func (z *Azure) AddServicePrincipal(tenant, clientID, secret string) {
	z.mu.Lock()
	defer z.mu.Unlock()
	z.principals[tenant+"/"+clientID] = &azurePrincipal{secret: secret}
}

// ExpireClientSecret makes the principal's secret fail as an expired one.
func (z *Azure) ExpireClientSecret(tenant, clientID string) {
	z.mu.Lock()
	defer z.mu.Unlock()
	if p := z.principals[tenant+"/"+clientID]; p != nil {
		p.expired = true
	}
}

// SetAudience sets the ACR audience AAD tokens must be for (the scope
// without "/.default"); default https://containerregistry.azure.net.
func (z *Azure) SetAudience(aud string) {
	z.mu.Lock()
	defer z.mu.Unlock()
	z.audience = aud
}

// Exchanges lists the accepted exchanges, oldest first.
func (z *Azure) Exchanges() []ACRExchange {
	z.mu.Lock()
	defer z.mu.Unlock()
	return append([]ACRExchange(nil), z.exchanges...)
}

// ValidBasic reports whether user:pass is a registered service principal
// (ACR accepts a principal as basic auth).
func (z *Azure) ValidBasic(user, pass string) bool {
	z.mu.Lock()
	defer z.mu.Unlock()
	for k, p := range z.principals {
		if strings.HasSuffix(k, "/"+user) && p.secret == pass && !p.expired {
			return true
		}
	}
	return false
}

func (z *Azure) aadToken(w http.ResponseWriter, r *http.Request) {
	fault, life := z.begin(r.Context(), APIAADToken)
	switch fault {
	case Throttle:
		oauthError(w, http.StatusTooManyRequests, "temporarily_unavailable", "AADSTS50196: request throttled.")
		return
	case Unavailable:
		oauthError(w, http.StatusServiceUnavailable, "temporarily_unavailable", "AADSTS90006: service unavailable.")
		return
	case NotFound:
		http.NotFound(w, r)
		return
	case BadRequest:
		oauthError(w, http.StatusBadRequest, "invalid_request", "AADSTS900144: emulated bad request.")
		return
	case Deny:
		oauthError(w, http.StatusUnauthorized, "invalid_client", "AADSTS7000215: Invalid client secret provided.")
		return
	}
	body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	form, err := url.ParseQuery(string(body))
	if err != nil || form.Get("grant_type") != "client_credentials" {
		oauthError(w, http.StatusBadRequest, "unsupported_grant_type", "AADSTS70003: unsupported grant type.")
		return
	}
	tenant, client := r.PathValue("tenant"), form.Get("client_id")
	z.mu.Lock()
	aud := z.audience
	p := z.principals[tenant+"/"+client]
	known := false
	for k := range z.principals {
		known = known || strings.HasPrefix(k, tenant+"/")
	}
	z.mu.Unlock()
	switch {
	case form.Get("scope") != aud+"/.default":
		oauthError(w, http.StatusBadRequest, "invalid_scope", "AADSTS70011: The provided value for scope is not valid.")
	case !known:
		oauthError(w, http.StatusBadRequest, "invalid_request", fmt.Sprintf("AADSTS90002: Tenant '%s' not found.", tenant))
	case p == nil:
		oauthError(w, http.StatusBadRequest, "unauthorized_client", fmt.Sprintf("AADSTS700016: Application with identifier '%s' was not found in the directory.", client))
	case p.secret != form.Get("client_secret"):
		oauthError(w, http.StatusUnauthorized, "invalid_client", "AADSTS7000215: Invalid client secret provided.")
	case p.expired:
		oauthError(w, http.StatusUnauthorized, "invalid_client", fmt.Sprintf("AADSTS7000222: The provided client secret keys for app '%s' are expired.", client))
	default:
		exp := time.Now().Add(aadTokenLife)
		if life < 0 {
			exp = time.Now().Add(life)
		}
		tok := signHS256(z.key, map[string]any{"aud": aud, "tid": tenant, "appid": client, "iat": time.Now().Unix(), "exp": exp.Unix()})
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"token_type": "Bearer", "expires_in": int(time.Until(exp).Seconds()), "ext_expires_in": 3599, "access_token": tok})
	}
}

func acrError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"errors": []map[string]string{{"code": code, "message": msg}}})
}

// acrFault answers the injected faults of the ACR endpoints.
func acrFault(w http.ResponseWriter, f Fault) bool {
	switch f {
	case Throttle:
		acrError(w, http.StatusTooManyRequests, "TOOMANYREQUESTS", "too many requests")
	case Unavailable:
		acrError(w, http.StatusServiceUnavailable, "UNAVAILABLE", "service unavailable")
	case NotFound:
		acrError(w, http.StatusNotFound, "NOTFOUND", "not found")
	case BadRequest:
		acrError(w, http.StatusBadRequest, "UNSUPPORTED", "AAD authentication is not enabled for this registry")
	case Deny:
		acrError(w, http.StatusUnauthorized, "UNAUTHORIZED", "authentication required")
	default:
		return false
	}
	return true
}

func (z *Azure) exchange(w http.ResponseWriter, r *http.Request) {
	fault, life := z.begin(r.Context(), APIACRExchange)
	if acrFault(w, fault) {
		return
	}
	body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	form, err := url.ParseQuery(string(body))
	if err != nil || form.Get("grant_type") != "access_token" {
		acrError(w, http.StatusBadRequest, "UNSUPPORTED", "grant_type must be access_token")
		return
	}
	if form.Get("service") != z.Host {
		acrError(w, http.StatusBadRequest, "UNSUPPORTED", "service does not name this registry")
		return
	}
	var claims struct {
		Aud string `json:"aud"`
		Tid string `json:"tid"`
		Exp int64  `json:"exp"`
	}
	z.mu.Lock()
	aud := z.audience
	z.mu.Unlock()
	if !verifyHS256(z.key, form.Get("access_token"), &claims) || claims.Exp <= time.Now().Unix() ||
		claims.Aud != aud || claims.Tid != form.Get("tenant") {
		acrError(w, http.StatusUnauthorized, "UNAUTHORIZED", "the AAD access token is invalid, expired, or for another tenant or audience")
		return
	}
	z.mu.Lock()
	z.exchanges = append(z.exchanges, ACRExchange{Tenant: form.Get("tenant"), Service: form.Get("service"), GrantType: form.Get("grant_type")})
	z.mu.Unlock()
	exp := time.Now().Add(life).Unix()
	refresh := signHS256(z.key, map[string]any{
		"jti": randomString("", 16), "iss": "Azure Container Registry", "aud": z.Host, "tenant": claims.Tid,
		"grant_type": "refresh_token", "iat": time.Now().Unix(), "exp": exp,
	})
	z.register(refresh, time.Unix(exp, 0))
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]string{"refresh_token": refresh})
}

func (z *Azure) acrToken(w http.ResponseWriter, r *http.Request) {
	fault, _ := z.begin(r.Context(), APIACRToken)
	if acrFault(w, fault) {
		return
	}
	body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	form, err := url.ParseQuery(string(body))
	if err != nil || form.Get("grant_type") != "refresh_token" || form.Get("service") != z.Host {
		acrError(w, http.StatusBadRequest, "UNSUPPORTED", "want grant_type=refresh_token and this registry's service")
		return
	}
	if !z.Valid(form.Get("refresh_token"), time.Now()) {
		acrError(w, http.StatusUnauthorized, "UNAUTHORIZED", "the refresh token is invalid or expired")
		return
	}
	exp := time.Now().Add(75 * time.Minute)
	tok := signHS256(z.key, map[string]any{"jti": randomString("", 16), "aud": z.Host, "scope": form.Get("scope"), "exp": exp.Unix()})
	z.mu.Lock()
	z.access[tok] = exp
	z.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]string{"access_token": tok})
}

func (z *Azure) v2(w http.ResponseWriter, r *http.Request) {
	h := r.Header.Get("Authorization")
	if tok, ok := strings.CutPrefix(h, "Bearer "); ok {
		z.mu.Lock()
		exp, known := z.access[tok]
		z.mu.Unlock()
		if known && time.Now().Before(exp) {
			w.WriteHeader(http.StatusOK)
			return
		}
	}
	if b, ok := strings.CutPrefix(h, "Basic "); ok {
		if raw, err := base64.StdEncoding.DecodeString(b); err == nil {
			if u, p, ok := strings.Cut(string(raw), ":"); ok && z.ValidBasic(u, p) {
				w.WriteHeader(http.StatusOK)
				return
			}
		}
	}
	w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Bearer realm="https://%s/oauth2/token",service="%s"`, z.Host, z.Host))
	acrError(w, http.StatusUnauthorized, "UNAUTHORIZED", "authentication required")
}

// CertPEM is the emulator's TLS certificate, for SSL_CERT_FILE in a child
// process that must trust it.
func (z *Azure) CertPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: z.srv.Certificate().Raw})
}
