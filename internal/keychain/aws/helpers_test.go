package aws

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/beam-cloud/b9-resolver/internal/keychain"
	"github.com/beam-cloud/b9-resolver/internal/keychain/document"
	"github.com/beam-cloud/b9-resolver/internal/keychain/registry"
	"github.com/beam-cloud/b9-resolver/internal/testutil/cloudemu"
)

// Planted credentials. Secrets start with cloudemu.Canary so any leak into
// an error or a log line is found.
const (
	tenantAKID   = "AKIATENANT0000000001"
	tenantSecret = "CANARY-aws-secret-tenant-0001"
	otherAKID    = "AKIATENANT0000000002"
	otherSecret  = "CANARY-aws-secret-tenant-0002"
	nodeAKID     = "AKIANODE000000000001"
	nodeSecret   = "CANARY-aws-secret-node-0001"
	sessAKID     = "ASIATENANT000000001"
	sessSecret   = "CANARY-aws-secret-session-0001"
	sessToken    = "CANARY-aws-session-token-0001"
	roleARN      = "arn:aws:iam::123456789012:role/puller"

	ecrHost      = "123456789012.dkr.ecr.us-west-2.amazonaws.com"
	ecrHost2     = "210987654321.dkr.ecr.us-west-2.amazonaws.com"
	ecrHostEast  = "123456789012.dkr.ecr.us-east-1.amazonaws.com"
	ecrPublic    = "public.ecr.aws"
	docSource    = "annotation b9.beam.cloud/image-credentials"
	emulatorLife = time.Hour
)

var fastRetry = keychain.RetryPolicy{Attempts: 3, Base: time.Millisecond, Max: 4 * time.Millisecond}

func awsDoc(tb testing.TB, kv ...string) document.Document {
	tb.Helper()
	creds := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		creds[kv[i]] = kv[i+1]
	}
	b, err := json.Marshal(map[string]any{"type": "aws", "credentials": creds})
	if err != nil {
		tb.Fatal(err)
	}
	docs, err := document.Parse(docSource, string(b), "")
	if err != nil {
		tb.Fatalf("parse: %v", err)
	}
	return docs[0]
}

func staticDoc(tb testing.TB, extra ...string) document.Document {
	return awsDoc(tb, append([]string{document.KeyAWSAccessKeyID, tenantAKID, document.KeyAWSSecretKey, tenantSecret}, extra...)...)
}

// newEmu starts an AWS emulator that knows the tenant keys and the role.
func newEmu(tb testing.TB) *cloudemu.AWS {
	e := cloudemu.NewAWS(tb)
	e.AddUser(tenantAKID, tenantSecret)
	e.AddUser(otherAKID, otherSecret)
	e.AddRole(roleARN)
	return e
}

// newProvider points every AWS API at e through the options, never the
// process environment.
func newProvider(e *cloudemu.AWS, opts ...Option) *Provider {
	base := []Option{
		WithEndpoints(Endpoints{ECR: e.URL, ECRPublic: e.URL, STS: e.URL}),
		WithGetenv(func(string) string { return "" }),
		WithRetry(fastRetry),
	}
	p, err := New(append(base, opts...)...)
	if err != nil {
		panic(err) // the options above are valid; a test's own are its to get right
	}
	return p.(*Provider)
}

func reg(host string) registry.Registry { return registry.Detect(host) }
