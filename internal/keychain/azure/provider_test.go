package azure

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"

	"github.com/beam-cloud/b9-resolver/internal/keychain/document"
	"github.com/beam-cloud/b9-resolver/internal/keychain/registry"
	"github.com/beam-cloud/b9-resolver/internal/testutil/cloudemu"
)

func TestMint(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		partition string
		audience  string
		setup     func(*cloudemu.Azure)
		doc       func(testing.TB) document.Document
		opts      func(*cloudemu.Azure) []Option
		exchange  bool // an ACR refresh token, else the principal as basic
		provider  string
		aadCalls  int
	}{
		{name: "exchange, public cloud", partition: "azure", exchange: true, provider: "azure/acr-exchange", aadCalls: 1},
		{name: "exchange, US Government", partition: "azure-us-gov", audience: "https://containerregistry.azure.us", exchange: true, provider: "azure/acr-exchange", aadCalls: 1},
		{name: "exchange, China", partition: "azure-china", audience: "https://containerregistry.azure.cn", exchange: true, provider: "azure/acr-exchange", aadCalls: 1},
		{name: "generic host is treated as the public cloud", partition: "", exchange: true, provider: "azure/acr-exchange", aadCalls: 1},
		{name: "AZURE_AUTHORITY_HOST", partition: "azure", exchange: true, provider: "azure/acr-exchange", aadCalls: 1,
			opts: func(z *cloudemu.Azure) []Option {
				return []Option{WithAuthorityHost(""), WithGetenv(func(k string) string {
					if k == "AZURE_AUTHORITY_HOST" {
						return z.URL + "/"
					}
					return ""
				})}
			}},
		{name: "no tenant: principal as basic", partition: "azure", provider: "azure/service-principal",
			doc: func(tb testing.TB) document.Document {
				return azureDoc(tb, document.KeyAzureClientID, clientID, document.KeyAzureClientSecret, spSecret)
			}},
		{name: "exchange answers 404: principal as basic", partition: "azure", provider: "azure/service-principal (registry has no AAD exchange)", aadCalls: 1,
			setup: func(z *cloudemu.Azure) { z.Fail(cloudemu.APIACRExchange, cloudemu.NotFound, -1) }},
		{name: "exchange answers 400: principal as basic", partition: "azure", provider: "azure/service-principal (registry has no AAD exchange)", aadCalls: 1,
			setup: func(z *cloudemu.Azure) { z.Fail(cloudemu.APIACRExchange, cloudemu.BadRequest, -1) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			z := newEmu(t)
			if tt.audience != "" {
				z.SetAudience(tt.audience)
			}
			if tt.setup != nil {
				tt.setup(z)
			}
			var opts []Option
			if tt.opts != nil {
				opts = tt.opts(z)
			}
			doc := spDoc(t)
			if tt.doc != nil {
				doc = tt.doc(t)
			}
			r := acr(z, tt.partition)
			if tt.partition == "" {
				r = registry.Registry{Host: z.Host, Kind: registry.KindGeneric}
			}
			m, err := newProvider(z, opts...).Mint(context.Background(), r, doc)
			if err != nil {
				t.Fatalf("Mint: %v", err)
			}
			if m.Provider != tt.provider {
				t.Errorf("provider %q, want %q", m.Provider, tt.provider)
			}
			if n := z.Calls(cloudemu.APIAADToken); n != tt.aadCalls {
				t.Errorf("AAD calls %d, want %d", n, tt.aadCalls)
			}
			if !tt.exchange {
				if m.Username != clientID || m.Secret.Reveal() != spSecret || m.IdentityToken || !m.ExpiresAt.IsZero() ||
					!z.ValidBasic(m.Username, m.Secret.Reveal()) {
					t.Errorf("basic fallback minted %+v", m)
				}
				return
			}
			if m.Username != RefreshTokenUsername || !m.IdentityToken {
				t.Errorf("minted %+v, want the null-GUID identity token", m)
			}
			if !z.Valid(m.Secret.Reveal(), time.Now()) || !m.ExpiresAt.Equal(z.ExpiresAt(m.Secret.Reveal())) {
				t.Errorf("refresh token valid=%v, expiry %v vs emulator %v", z.Valid(m.Secret.Reveal(), time.Now()), m.ExpiresAt, z.ExpiresAt(m.Secret.Reveal()))
			}
			ex := z.Exchanges()
			if len(ex) != 1 || ex[0] != (cloudemu.ACRExchange{Tenant: tenantID, Service: z.Host, GrantType: "access_token"}) {
				t.Errorf("exchanges %+v", ex)
			}
			// The refresh token works as a registry client uses it.
			if !pullWithRefreshToken(t, z, m.Secret.Reveal()) {
				t.Error("the registry did not accept the refresh token")
			}
		})
	}
}

// pullWithRefreshToken does what containerd does with an identity token:
// POST /oauth2/token for an access token, then GET /v2/ with it.
func pullWithRefreshToken(t *testing.T, z *cloudemu.Azure, refresh string) bool {
	t.Helper()
	resp, err := z.Client().PostForm(z.URL+"/oauth2/token", url.Values{
		"grant_type": {"refresh_token"}, "service": {z.Host}, "scope": {"repository:app:pull"}, "refresh_token": {refresh},
	})
	if err != nil {
		t.Fatal(err)
	}
	var body struct {
		AccessToken string `json:"access_token"`
	}
	err = decodeJSON(resp, &body)
	if err != nil || body.AccessToken == "" {
		return false
	}
	req, _ := http.NewRequest(http.MethodGet, z.URL+"/v2/", nil)
	req.Header.Set("Authorization", "Bearer "+body.AccessToken)
	resp, err = z.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

func TestMintErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		partition string
		doc       func(testing.TB) document.Document
		setup     func(*cloudemu.Azure)
		reg       func(*cloudemu.Azure) registry.Registry
		opts      []Option
		class     func(error) bool
		want      string
		exchanges int
	}{
		{name: "wrong client secret", class: errdefs.IsUnauthorized, want: "Azure AD refused the service principal: HTTP 401 invalid_client: AADSTS7000215",
			doc: func(tb testing.TB) document.Document {
				return azureDoc(tb, "AZURE_CLIENT_ID", clientID, "AZURE_CLIENT_SECRET", "CANARY-wrong", "AZURE_TENANT_ID", tenantID)
			}},
		{name: "expired client secret", class: errdefs.IsUnauthorized, want: "AADSTS7000222",
			setup: func(z *cloudemu.Azure) { z.ExpireClientSecret(tenantID, clientID) }},
		{name: "unknown tenant", class: errdefs.IsUnauthorized, want: "AADSTS90002",
			doc: func(tb testing.TB) document.Document {
				return azureDoc(tb, "AZURE_CLIENT_ID", clientID, "AZURE_CLIENT_SECRET", spSecret, "AZURE_TENANT_ID", "contoso.onmicrosoft.com")
			}},
		{name: "unknown client", class: errdefs.IsUnauthorized, want: "AADSTS700016",
			doc: func(tb testing.TB) document.Document {
				return azureDoc(tb, "AZURE_CLIENT_ID", "11111111-2222-3333-4444-555555555555", "AZURE_CLIENT_SECRET", spSecret, "AZURE_TENANT_ID", tenantID)
			}},
		{name: "scope of another cloud", partition: "azure-us-gov", class: errdefs.IsUnauthorized, want: "invalid_scope"},
		{name: "AAD throttles every attempt", class: errdefs.IsUnavailable, want: "Azure AD token throttled (3 attempts): HTTP 429",
			setup: func(z *cloudemu.Azure) { z.Fail(cloudemu.APIAADToken, cloudemu.Throttle, -1) }},
		{name: "AAD answers 503", class: errdefs.IsUnavailable, want: "Azure AD token unavailable (3 attempts)",
			setup: func(z *cloudemu.Azure) { z.Fail(cloudemu.APIAADToken, cloudemu.Unavailable, -1) }},
		{name: "exchange throttles every attempt", class: errdefs.IsUnavailable, want: "/oauth2/exchange throttled (3 attempts): HTTP 429 TOOMANYREQUESTS", exchanges: 3,
			setup: func(z *cloudemu.Azure) { z.Fail(cloudemu.APIACRExchange, cloudemu.Throttle, -1) }},
		{name: "exchange answers 503", class: errdefs.IsUnavailable, want: "/oauth2/exchange unavailable (3 attempts)", exchanges: 3,
			setup: func(z *cloudemu.Azure) { z.Fail(cloudemu.APIACRExchange, cloudemu.Unavailable, -1) }},
		{name: "exchange refuses the AAD token", class: errdefs.IsUnauthorized, want: "refused the AAD token: HTTP 401 UNAUTHORIZED", exchanges: 1,
			setup: func(z *cloudemu.Azure) { z.Fail(cloudemu.APIACRExchange, cloudemu.Deny, -1) }},
		{name: "AAD hands out an expired token", class: errdefs.IsUnauthorized, want: "refused the AAD token", exchanges: 1,
			setup: func(z *cloudemu.Azure) { z.Fail(cloudemu.APIAADToken, cloudemu.IssueExpired, -1) }},
		{name: "authority down", class: errdefs.IsUnavailable, want: "authority unreachable",
			opts: []Option{WithAuthorityHost("https://127.0.0.1:1")}},
		{name: "registry down", class: errdefs.IsUnavailable, want: "registry unreachable",
			reg: func(*cloudemu.Azure) registry.Registry {
				return registry.Registry{Host: "127.0.0.1:1", Kind: registry.KindACR, Partition: "azure"}
			}},
		{name: "a pod's keyless document never gets the node's identity", class: errdefs.IsInvalidArgument,
			want: "managed identity is only for node credentials", opts: []Option{WithAmbient(true)},
			setup: func(z *cloudemu.Azure) { z.AssignIdentity(tenantID, "") },
			doc:   func(tb testing.TB) document.Document { return azureDoc(tb, "AZURE_TENANT_ID", tenantID) }},
		{name: "a node's keyless document where the node lends no identity", class: errdefs.IsInvalidArgument,
			want: "does not lend its managed identity; cloud.ambient", setup: func(z *cloudemu.Azure) { z.AssignIdentity(tenantID, "") },
			doc: func(tb testing.TB) document.Document { return nodeDoc(tb) }},
		{name: "malformed tenant", class: errdefs.IsInvalidArgument, want: "credentials.AZURE_TENANT_ID",
			doc: func(tb testing.TB) document.Document {
				return azureDoc(tb, "AZURE_CLIENT_ID", clientID, "AZURE_CLIENT_SECRET", spSecret, "AZURE_TENANT_ID", "../x?y")
			}},
		{name: "not an Azure registry", class: errdefs.IsInvalidArgument, want: "type azure cannot make credentials for gcr.io",
			reg: func(*cloudemu.Azure) registry.Registry { return registry.Detect("gcr.io") }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			z := newEmu(t)
			if tt.setup != nil {
				tt.setup(z)
			}
			doc := spDoc(t)
			if tt.doc != nil {
				doc = tt.doc(t)
			}
			partition := tt.partition
			if partition == "" {
				partition = "azure"
			}
			r := acr(z, partition)
			if tt.reg != nil {
				r = tt.reg(z)
			}
			_, err := newProvider(z, tt.opts...).Mint(context.Background(), r, doc)
			if err == nil {
				t.Fatal("Mint succeeded")
			}
			if !tt.class(err) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q: class ok %v, want text %q", err, tt.class(err), tt.want)
			}
			if n := z.Calls(cloudemu.APIACRExchange); n != tt.exchanges {
				t.Errorf("exchange calls %d, want %d", n, tt.exchanges)
			}
			cloudemu.AssertNoSecrets(t, "error", []string{err.Error()})
		})
	}
}

func TestThrottleRecovers(t *testing.T) {
	t.Parallel()
	z := newEmu(t)
	z.Fail(cloudemu.APIAADToken, cloudemu.Throttle, 2)
	z.Fail(cloudemu.APIACRExchange, cloudemu.Throttle, 1)
	m, err := newProvider(z).Mint(context.Background(), acr(z, "azure"), spDoc(t))
	if err != nil {
		t.Fatal(err)
	}
	if a, e := z.Calls(cloudemu.APIAADToken), z.Calls(cloudemu.APIACRExchange); a != 3 || e != 2 || !z.Valid(m.Secret.Reveal(), time.Now()) {
		t.Errorf("AAD calls %d (want 3), exchange calls %d (want 2)", a, e)
	}
}

func TestRefreshExpiryWithoutExp(t *testing.T) {
	t.Parallel()
	np, _ := New()
	p := np.(*Provider)
	now := time.Now()
	for _, tok := range []string{"opaque", "a.b.c", "a." + "eyJub3QiOiJleHAifQ" + ".c"} {
		if d := p.refreshExpiry(tok).Sub(now); d < DefaultRefreshTokenLife-time.Second || d > DefaultRefreshTokenLife+time.Second {
			t.Errorf("%q: life %v, want the %v default", tok, d, DefaultRefreshTokenLife)
		}
	}
	// {"exp":2000000000}
	if got := p.refreshExpiry("h.eyJleHAiOjIwMDAwMDAwMDB9.s"); got.Unix() != 2000000000 {
		t.Errorf("exp read as %v", got)
	}
}

// Options given a value they cannot use refuse it, naming the option.
func TestBadOptionsAreErrors(t *testing.T) {
	for name, o := range map[string]Option{
		"azure.WithHTTPClient": WithHTTPClient(nil),
		"azure.WithGetenv":     WithGetenv(nil),
	} {
		if _, err := New(o); !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), name) {
			t.Errorf("%s: %v, want InvalidArgument naming it", name, err)
		}
	}
}
