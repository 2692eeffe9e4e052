package gcp

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/beam-cloud/b9-resolver/internal/keychain"
	"github.com/beam-cloud/b9-resolver/internal/keychain/document"
	"github.com/beam-cloud/b9-resolver/internal/keychain/registry"
	"github.com/beam-cloud/b9-resolver/internal/testutil/cloudemu"
)

const (
	saEmail     = "puller@emulated.iam.gserviceaccount.com"
	tokenCanary = "CANARY-gcp-access-token-0001"
	docSource   = "annotation b9.beam.cloud/image-credentials"
)

var fastRetry = keychain.RetryPolicy{Attempts: 3, Base: time.Millisecond, Max: 4 * time.Millisecond}

func gcpDoc(tb testing.TB, kv ...string) document.Document {
	tb.Helper()
	creds := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		creds[kv[i]] = kv[i+1]
	}
	b, _ := json.Marshal(map[string]any{"type": "gcp", "credentials": creds})
	docs, err := document.Parse(docSource, string(b), "")
	if err != nil {
		tb.Fatalf("parse: %v", err)
	}
	return docs[0]
}

func keyDoc(tb testing.TB, key []byte) document.Document {
	return gcpDoc(tb, document.KeyGoogleAppCreds, string(key))
}

func newProvider(opts ...Option) *Provider {
	base := []Option{WithTokenURICheck(LoopbackOrGoogleTokenURI), WithRetry(fastRetry)}
	p, err := New(append(base, opts...)...)
	if err != nil {
		panic(err) // the options above are valid; a test's own are its to get right
	}
	return p.(*Provider)
}

func reg(host string) registry.Registry { return registry.Detect(host) }

// keySecrets are pieces of a key's private half that must never show up
// in an error or a log line.
func keySecrets(key []byte) []string {
	var k struct {
		PrivateKey string `json:"private_key"`
	}
	_ = json.Unmarshal(key, &k)
	var out []string
	for _, line := range strings.Split(k.PrivateKey, "\n") {
		if len(line) >= 32 && !strings.HasPrefix(line, "-----") {
			out = append(out, line[:32])
		}
	}
	return out
}

func assertNoSecrets(tb testing.TB, key []byte, texts ...string) {
	tb.Helper()
	cloudemu.AssertNoSecrets(tb, "error", texts, keySecrets(key)...)
}
