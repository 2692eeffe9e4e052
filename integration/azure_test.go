package integration

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/beam-cloud/b9-resolver/internal/testutil/cloudemu"
	"github.com/beam-cloud/b9-resolver/internal/testutil/registrytest"
)

// acrExchange makes a token-auth registrytest registry answer ACR's
// POST /oauth2/exchange: it forwards the request to the Azure emulator,
// which checks the AAD token (signature, audience, tenant, expiry) and
// issues the refresh token, and then makes that refresh token valid for
// the OAuth2 refresh_token grant at the registry's own token endpoint.
type acrExchange struct {
	az   *cloudemu.Azure
	user string // the registry user the refresh tokens act as

	mu  sync.Mutex
	reg *registrytest.Registry // set once Start returns
	// seen holds every AAD and refresh token that passed, for the leak check.
	seen []string
	// wrongService counts exchanges naming another registry as service.
	wrongService int
}

func (x *acrExchange) middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/oauth2/exchange" {
			next.ServeHTTP(w, r)
			return
		}
		x.mu.Lock()
		reg := x.reg
		x.mu.Unlock()
		body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		form, err := url.ParseQuery(string(body))
		if r.Method != http.MethodPost || err != nil || reg == nil {
			http.Error(w, `{"errors":[{"code":"UNSUPPORTED","message":"bad exchange request"}]}`, http.StatusBadRequest)
			return
		}
		if form.Get("service") != reg.Host {
			// Real ACR checks that the service names itself.
			x.mu.Lock()
			x.wrongService++
			x.mu.Unlock()
			http.Error(w, `{"errors":[{"code":"UNSUPPORTED","message":"service does not name this registry"}]}`, http.StatusBadRequest)
			return
		}
		if aad := form.Get("access_token"); aad != "" {
			x.mu.Lock()
			x.seen = append(x.seen, aad)
			x.mu.Unlock()
		}
		// The emulator is its own login server; it wants its own name.
		form.Set("service", x.az.Host)
		resp, err := x.az.Client().Post(x.az.URL+"/oauth2/exchange", "application/x-www-form-urlencoded", strings.NewReader(form.Encode()))
		if err != nil {
			http.Error(w, `{"errors":[{"code":"UNAVAILABLE","message":"emulator unreachable"}]}`, http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		out, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		if resp.StatusCode == http.StatusOK {
			var rt struct {
				RefreshToken string `json:"refresh_token"`
			}
			if json.Unmarshal(out, &rt) == nil && rt.RefreshToken != "" {
				reg.AddIdentityToken(x.user, rt.RefreshToken)
				x.mu.Lock()
				x.seen = append(x.seen, rt.RefreshToken)
				x.mu.Unlock()
			}
		}
		w.Header().Set("Content-Type", resp.Header.Get("Content-Type"))
		w.WriteHeader(resp.StatusCode)
		_, _ = w.Write(out)
	})
}

func (x *acrExchange) tokens() []string {
	x.mu.Lock()
	defer x.mu.Unlock()
	return append([]string(nil), x.seen...)
}

// TestAzure pulls with azure documents through both modes. The ACR
// stand-in is a token-auth registry serving HTTPS (a test CA) on
// 127.0.0.1, mapped to kind acr with registry_mappings, as TestCloud maps
// its ECR and GAR (and for the same reasons). Its /oauth2/exchange goes
// to the Azure emulator, which is also the AAD authority
// (AZURE_AUTHORITY_HOST); the refresh token it issues is then good for the
// refresh_token grant at the registry's token endpoint. The daemons trust
// both certificates through SSL_CERT_FILE (AAD and the exchange use Go's
// default roots); containerd's registry client gets the registry's CA from
// hosts.toml.
func TestAzure(t *testing.T) {
	binaries(t)
	admin, clientSecret := canary("admin"), canary("azsecret")
	const (
		tenant   = "7d3c2a10-b9b9-4c1e-9e61-0123456789ab"
		clientID = "5f1e2d3c-4b5a-4968-8776-a1b2c3d4e5f6"
	)
	a := startACR(t, admin, "azure/forward", "azure/direct")
	az, x, reg := a.az, a.x, a.reg
	az.AddServicePrincipal(tenant, clientID, clientSecret)
	n := a.node(t, "", nil)
	n.startStandalone("forward")

	doc := envelope(t, reg.Host, "azure", map[string]string{
		"AZURE_CLIENT_ID": clientID, "AZURE_CLIENT_SECRET": clientSecret, "AZURE_TENANT_ID": tenant})
	bad := envelope(t, reg.Host, "azure", map[string]string{
		"AZURE_CLIENT_ID": clientID, "AZURE_CLIENT_SECRET": "wrong-" + clientSecret, "AZURE_TENANT_ID": tenant})

	for _, m := range []struct{ name, sock string }{{"forward", n.standAddr}, {"direct", n.b9}} {
		t.Run(m.name, func(t *testing.T) {
			img := reg.PushRandomImage(t, "azure/"+m.name, "v1", "admin", admin)
			before := len(az.Exchanges())
			reg.Reset()
			for i := range 2 {
				mustSucceed(t, n.pull(m.sock, img.Ref, map[string]string{annKey: doc}), fmt.Sprintf("azure pull %d", i))
			}
			if !n.listedByCRI(img.Ref) {
				t.Errorf("%s not listed by containerd's CRI", img.Ref)
			}
			ex := az.Exchanges()[before:]
			t.Logf("2 pulls with one azure document (%s): %d /oauth2/exchange at the emulator", m.name, len(ex))
			if len(ex) != 1 {
				t.Errorf("%d exchanges for 2 pulls, want 1 (one mint per credential; the keychain caches the refresh token)", len(ex))
			}
			for _, e := range ex {
				if e.Tenant != tenant || e.GrantType != "access_token" {
					t.Errorf("exchange %+v, want tenant %s and grant_type access_token", e, tenant)
				}
			}
			// The pulls used the refresh token (ACR's identity token), not
			// the service principal as basic auth.
			grants := reg.Count(func(q registrytest.Request) bool {
				return q.Server == registrytest.ServerToken && q.GrantType == "refresh_token" && q.Status == http.StatusOK
			})
			if grants == 0 {
				t.Errorf("no successful refresh_token grant at the registry's token endpoint:\n%s", reg.Summary())
			}

			wantCode(t, n.pull(m.sock, img.Ref, nil), "no document", "Unauthenticated")

			r := n.pull(m.sock, img.Ref, map[string]string{annKey: bad})
			wantCode(t, r, "wrong client secret", "Unauthenticated")
			if i := strings.Index(r.out, "code = "); i >= 0 {
				t.Logf("wrong client secret (%s): %s", m.name, strings.SplitN(r.out[i:], "\n", 2)[0])
			}
			for _, want := range []string{reg.Host, annKey} {
				if !strings.Contains(r.out, want) {
					t.Errorf("wrong-secret message does not name %q:\n%s", want, r.out)
				}
			}
			if got := len(az.Exchanges()) - before; got != 1 {
				t.Errorf("%d exchanges after the wrong secret, want still 1 (AAD refuses it first)", got)
			}
		})
	}
	x.mu.Lock()
	wrong := x.wrongService
	x.mu.Unlock()
	if wrong != 0 {
		t.Errorf("%d exchanges named another service than %s", wrong, reg.Host)
	}
	toks := x.tokens()
	if len(toks) == 0 {
		t.Fatal("no AAD or refresh token passed through the exchange")
	}
	n.assertNoSecrets(append([]string{clientSecret, admin}, toks...)...)
}

// acrSetup is an ACR stand-in (token-auth registry over TLS whose
// /oauth2/exchange is the Azure emulator's) for a node to pull from.
type acrSetup struct {
	az     *cloudemu.Azure
	x      *acrExchange
	reg    *registrytest.Registry
	bundle string // both CAs, for the daemons' SSL_CERT_FILE
}

// startACR starts the stand-in; the registry's puller user may pull repos
// and admin (password admin) may push anything.
func startACR(t *testing.T, admin string, repos ...string) *acrSetup {
	t.Helper()
	const puller = "acr-puller"
	az := cloudemu.NewAzure(t)
	x := &acrExchange{az: az, user: puller}
	reg := registrytest.Start(t, registrytest.WithTokenAuth(), registrytest.WithTLS("127.0.0.1"),
		registrytest.WithUser(puller, canary("puller"), repos...),
		registrytest.WithUser("admin", admin, "*"),
		registrytest.WithMiddleware(x.middleware))
	x.mu.Lock()
	x.reg = reg
	x.mu.Unlock()
	bundle := filepath.Join(t.TempDir(), "ca-bundle.pem")
	if err := os.WriteFile(bundle, append(reg.CACertPEM(), az.CertPEM()...), 0o644); err != nil {
		t.Fatal(err)
	}
	return &acrSetup{az: az, x: x, reg: reg, bundle: bundle}
}

// node starts a node that maps the registry to kind acr and trusts it,
// with more plugin TOML and daemon environment.
func (a *acrSetup) node(t *testing.T, plugin string, env []string) *node {
	t.Helper()
	plugin += fmt.Sprintf(`  [[plugins.'io.containerd.grpc.v1.b9-resolver'.registry_mappings]]
    host = '%s'
    kind = 'acr'
    account = 'b9test'
    partition = 'azure'
`, a.reg.Host)
	n := newNode(t, nodeConfig{pullMode: "direct", plugin: plugin,
		env: append([]string{"AZURE_AUTHORITY_HOST=" + a.az.URL, "SSL_CERT_FILE=" + a.bundle}, env...)})
	// containerd reads hosts.toml at each resolve, so writing it now is in time.
	hostsDir := filepath.Join(n.dir, "certs.d", a.reg.Host)
	if err := os.MkdirAll(hostsDir, 0o755); err != nil {
		t.Fatal(err)
	}
	hosts := fmt.Sprintf("server = %q\n\n[host.%q]\n  capabilities = [\"pull\", \"resolve\"]\n  ca = %q\n", a.reg.URL, a.reg.URL, a.reg.CAFile)
	if err := os.WriteFile(filepath.Join(hostsDir, "hosts.toml"), []byte(hosts), 0o644); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestAzureManagedIdentity: a node whose config lends its managed identity
// (cloud.ambient = ['azure'], a keyless node document for the registry)
// pulls with it — IMDS token, /oauth2/exchange, refresh token — while a
// pod's keyless azure annotation is refused, never given the node's
// identity.
func TestAzureManagedIdentity(t *testing.T) {
	binaries(t)
	const tenant = "0c0ffee0-b9b9-4c1e-9e61-0123456789ab"
	admin := canary("admin")
	a := startACR(t, admin, "azure/identity")
	a.az.AssignIdentity(tenant, "")
	plugin := fmt.Sprintf(`  [plugins.'io.containerd.grpc.v1.b9-resolver'.cloud]
    ambient = ['azure']
  [plugins.'io.containerd.grpc.v1.b9-resolver'.node_credentials]
    documents = ['{"registry":"%s","type":"azure"}']
`, a.reg.Host)
	n := a.node(t, plugin, []string{"AZURE_POD_IDENTITY_AUTHORITY_HOST=" + a.az.IMDSURL})
	img := a.reg.PushRandomImage(t, "azure/identity", "v1", "admin", admin)
	a.reg.Reset()

	mustSucceed(t, n.pull(n.b9, img.Ref, nil), "pull with the node's managed identity")
	if !n.listedByCRI(img.Ref) {
		t.Errorf("%s not listed by containerd's CRI", img.Ref)
	}
	imds, ex := a.az.Calls(cloudemu.APIIMDSToken), a.az.Exchanges()
	t.Logf("pull with the node's managed identity: %d IMDS token call(s), %d exchange(s)", imds, len(ex))
	if imds != 1 || len(ex) != 1 || ex[0].Tenant != tenant {
		t.Errorf("IMDS calls %d, exchanges %+v; want 1 and 1 for tenant %s", imds, ex, tenant)
	}

	keyless := envelope(t, a.reg.Host, "azure", map[string]string{})
	r := n.pull(n.b9, img.Ref, map[string]string{annKey: keyless})
	wantCode(t, r, "a pod's keyless azure document", "InvalidArgument")
	if !strings.Contains(r.out, "only for node credentials") {
		t.Errorf("refusal does not say why:\n%s", r.out)
	}
	if got := a.az.Calls(cloudemu.APIIMDSToken); got != imds {
		t.Errorf("the pod's document reached IMDS (%d calls, was %d)", got, imds)
	}
	n.assertNoSecrets(append([]string{admin}, a.x.tokens()...)...)
}
