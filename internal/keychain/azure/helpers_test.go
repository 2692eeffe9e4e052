package azure

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/beam-cloud/b9-resolver/internal/keychain"
	"github.com/beam-cloud/b9-resolver/internal/keychain/document"
	"github.com/beam-cloud/b9-resolver/internal/keychain/registry"
	"github.com/beam-cloud/b9-resolver/internal/testutil/cloudemu"
)

const (
	tenantID  = "72f988bf-86f1-41af-91ab-2d7cd011db47"
	clientID  = "5e6f7a8b-0000-4000-8000-00000000c11e"
	spSecret  = "CANARY-azure-client-secret-0001"
	docSource = "annotation b9.beam.cloud/image-credentials"
)

var fastRetry = keychain.RetryPolicy{Attempts: 3, Base: time.Millisecond, Max: 4 * time.Millisecond}

func azureDoc(tb testing.TB, kv ...string) document.Document {
	tb.Helper()
	creds := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		creds[kv[i]] = kv[i+1]
	}
	b, _ := json.Marshal(map[string]any{"type": "azure", "credentials": creds})
	docs, err := document.Parse(docSource, string(b), "")
	if err != nil {
		tb.Fatalf("parse: %v", err)
	}
	return docs[0]
}

func spDoc(tb testing.TB, extra ...string) document.Document {
	return azureDoc(tb, append([]string{document.KeyAzureClientID, clientID, document.KeyAzureClientSecret, spSecret,
		document.KeyAzureTenantID, tenantID}, extra...)...)
}

func newEmu(tb testing.TB) *cloudemu.Azure {
	z := cloudemu.NewAzure(tb)
	z.AddServicePrincipal(tenantID, clientID, spSecret)
	return z
}

// newProvider sends AAD and the exchange to z over TLS with a client that
// trusts it, and ignores the process environment.
func newProvider(z *cloudemu.Azure, opts ...Option) *Provider {
	base := []Option{WithHTTPClient(z.Client()), WithAuthorityHost(z.URL), WithRetry(fastRetry),
		WithGetenv(func(string) string { return "" })}
	p, err := New(append(base, opts...)...)
	if err != nil {
		panic(err) // the options above are valid; a test's own are its to get right
	}
	return p.(*Provider)
}

// acr is the emulator's registry as an ACR of a cloud.
func acr(z *cloudemu.Azure, partition string) registry.Registry {
	return registry.Registry{Host: z.Host, Kind: registry.KindACR, Account: "emulated", Partition: partition}
}
