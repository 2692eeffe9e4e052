package azure

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"

	"github.com/beam-cloud/b9-resolver/internal/keychain"
	"github.com/beam-cloud/b9-resolver/internal/keychain/document"
	"github.com/beam-cloud/b9-resolver/internal/keychain/registry"
	"github.com/beam-cloud/b9-resolver/internal/testutil/cloudemu"
	"github.com/beam-cloud/b9-resolver/internal/testutil/keychaintest"
)

const userIdentity = "0d1e2f3a-0000-4000-8000-0000000000a1"

// nodeDoc is a node credential document of type azure without keys: the
// node's managed identity, where the node lends it.
func nodeDoc(tb testing.TB, kv ...string) document.Document {
	d := azureDoc(tb, kv...)
	d.Node = true
	return d
}

// identityProvider lends the node's managed identity, with IMDS at z.
func identityProvider(z *cloudemu.Azure, opts ...Option) *Provider {
	return newProvider(z, append([]Option{WithAmbient(true), WithIMDSEndpoint(z.IMDSURL)}, opts...)...)
}

func TestManagedIdentity(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name     string
		clientID string // the identity the provider asks for
	}{
		{"system-assigned", ""},
		{"user-assigned", userIdentity},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			z := newEmu(t)
			z.AssignIdentity(tenantID, tt.clientID)
			m, err := identityProvider(z, WithIdentityClientID(tt.clientID)).Mint(context.Background(), acr(z, "azure"), nodeDoc(t))
			if err != nil {
				t.Fatal(err)
			}
			if m.Username != RefreshTokenUsername || !m.IdentityToken || m.Provider != "azure/managed-identity" ||
				!z.Valid(m.Secret.Reveal(), time.Now()) || m.ExpiresAt.Before(time.Now()) {
				t.Errorf("minted %+v", m)
			}
			// The tenant came from the IMDS token: the document has none.
			if ex := z.Exchanges(); len(ex) != 1 || ex[0].Tenant != tenantID || ex[0].Service != z.Host {
				t.Errorf("exchanges %+v", ex)
			}
			if n := z.Calls(cloudemu.APIAADToken); n != 0 {
				t.Errorf("%d AAD client-credential calls; the identity needs none", n)
			}
		})
	}
}

// The IMDS endpoint moves with AZURE_POD_IDENTITY_AUTHORITY_HOST, the
// variable Azure's SDKs read.
func TestManagedIdentityEndpointFromEnvironment(t *testing.T) {
	t.Parallel()
	z := newEmu(t)
	z.AssignIdentity(tenantID, "")
	env := func(k string) string {
		if k == "AZURE_POD_IDENTITY_AUTHORITY_HOST" {
			return z.IMDSURL + "/"
		}
		return ""
	}
	p := newProvider(z, WithAmbient(true), WithGetenv(env))
	if _, err := p.Mint(context.Background(), acr(z, "azure"), nodeDoc(t)); err != nil {
		t.Fatal(err)
	}
	if n := z.Calls(cloudemu.APIIMDSToken); n != 1 {
		t.Errorf("IMDS calls %d, want 1", n)
	}
}

func TestManagedIdentityErrors(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name    string
		setup   func(*cloudemu.Azure)
		opts    []Option
		class   func(error) bool
		want    string
		imds    int
		generic bool // the registry is of kind generic
	}{
		{name: "no identity on the node", class: errdefs.IsUnauthorized, imds: 1,
			want: `IMDS refused the node's managed identity (system-assigned): HTTP 400 invalid_request: Identity not found`},
		{name: "user-assigned identity the node lacks", class: errdefs.IsUnauthorized, imds: 1,
			setup: func(z *cloudemu.Azure) { z.AssignIdentity(tenantID, "") }, opts: []Option{WithIdentityClientID(userIdentity)},
			want: `managed identity "` + userIdentity + `"`},
		{name: "IMDS updating (404) on every attempt", class: errdefs.IsUnavailable, imds: 3,
			setup: func(z *cloudemu.Azure) {
				z.AssignIdentity(tenantID, "")
				z.Fail(cloudemu.APIIMDSToken, cloudemu.NotFound, -1)
			},
			want: "IMDS not ready (HTTP 404, 3 attempts)"},
		{name: "IMDS throttles every attempt", class: errdefs.IsUnavailable, imds: 3,
			setup: func(z *cloudemu.Azure) {
				z.AssignIdentity(tenantID, "")
				z.Fail(cloudemu.APIIMDSToken, cloudemu.Throttle, -1)
			},
			want: "throttled (3 attempts)"},
		{name: "IMDS unreachable (not an Azure VM)", class: errdefs.IsUnavailable, opts: []Option{WithIMDSEndpoint("http://127.0.0.1:1")},
			want: "http://127.0.0.1:1 unreachable (is this an Azure VM with a managed identity?)"},
		{name: "a host that is no ACR (whatever registry a pod named)", class: errdefs.IsInvalidArgument,
			setup: func(z *cloudemu.Azure) { z.AssignIdentity(tenantID, "") }, generic: true,
			want: "managed identity is only sent to acr registries, and"},
		{name: "registry without AAD exchange", class: errdefs.IsNotImplemented, imds: 1,
			setup: func(z *cloudemu.Azure) {
				z.AssignIdentity(tenantID, "")
				z.Fail(cloudemu.APIACRExchange, cloudemu.NotFound, -1)
			},
			want: "has no AAD exchange, which the node's managed identity needs"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			z := newEmu(t)
			if tt.setup != nil {
				tt.setup(z)
			}
			reg := acr(z, "azure")
			if tt.generic {
				reg.Kind = registry.KindGeneric
			}
			_, err := identityProvider(z, tt.opts...).Mint(context.Background(), reg, nodeDoc(t))
			if err == nil {
				t.Fatal("Mint succeeded")
			}
			if !tt.class(err) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q: class ok %v, want text %q", err, tt.class(err), tt.want)
			}
			if n := z.Calls(cloudemu.APIIMDSToken); n != tt.imds {
				t.Errorf("IMDS calls %d, want %d", n, tt.imds)
			}
		})
	}
}

// IMDS recovers from a 404 (updating) within the retries, and the
// keychain then serves the refresh token from cache.
func TestManagedIdentityRecoversAndCaches(t *testing.T) {
	t.Parallel()
	z := newEmu(t)
	z.AssignIdentity(tenantID, "")
	z.Fail(cloudemu.APIIMDSToken, cloudemu.NotFound, 2)
	kc := keychaintest.New(t, keychain.WithProvider(identityProvider(z)))
	defer kc.Close()
	doc := nodeDoc(t)
	for range 5 {
		c, err := kc.Resolve(context.Background(), acr(z, "azure"), doc)
		if err != nil {
			t.Fatal(err)
		}
		if !z.Valid(c.Secret.Reveal(), time.Now()) {
			t.Fatal("invalid refresh token")
		}
	}
	if i, e := z.Calls(cloudemu.APIIMDSToken), z.Calls(cloudemu.APIACRExchange); i != 3 || e != 1 {
		t.Errorf("IMDS calls %d (want 3: two 404s, one token), exchanges %d (want 1)", i, e)
	}
}
