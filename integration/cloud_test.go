package integration

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/beam-cloud/b9-resolver/internal/testutil/cloudemu"
	"github.com/beam-cloud/b9-resolver/internal/testutil/registrytest"
)

// cloudAuth makes a registry accept what a cloud registry accepts: basic
// auth whose username is the cloud's fixed one and whose password is a
// token the emulator issued and still holds valid — plus the test's
// admin, for pushing.
func cloudAuth(realm, user string, valid func(string, time.Time) bool, adminPass string) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			u, p, ok := r.BasicAuth()
			if ok && ((u == user && valid(p, time.Now())) || (u == "admin" && p == adminPass)) {
				next.ServeHTTP(w, r)
				return
			}
			w.Header().Set("WWW-Authenticate", fmt.Sprintf("Basic realm=%q", realm))
			http.Error(w, `{"errors":[{"code":"UNAUTHORIZED"}]}`, http.StatusUnauthorized)
		})
	}
}

func envelope(t *testing.T, host, typ string, creds map[string]string) string {
	t.Helper()
	b, err := json.Marshal(map[string]any{"registry": host, "type": typ, "credentials": creds})
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestCloud pulls with aws and gcp documents through both modes. The
// registries listen on 127.0.0.1 and are mapped to the ecr and gar kinds
// with registry_mappings, rather than reached under a real
// ECR/GAR name through a private /etc/hosts and a test CA: a mapping is
// how an operator points b9-resolver at a pull-through cache, so the test
// exercises a real configuration, and it needs no mount namespace. The
// providers reach the emulators through the SDKs' own overrides
// (AWS_ENDPOINT_URL_ECR in containerd's environment, the key's token_uri).
func TestCloud(t *testing.T) {
	binaries(t)
	admin, awsSecret := canary("admin"), canary("awssecret")
	const keyID = "AKIAB9TESTKEY0000001"

	aws := cloudemu.NewAWS(t)
	aws.AddUser(keyID, awsSecret)
	gcp := cloudemu.NewGCP(t)
	saKey := gcp.NewServiceAccountKey(t, "puller@emulated.iam.gserviceaccount.com")

	ecr := registrytest.Start(t, registrytest.WithMiddleware(cloudAuth("ecr", "AWS", aws.Valid, admin)))
	gar := registrytest.Start(t, registrytest.WithMiddleware(cloudAuth("gar", "oauth2accesstoken", gcp.Valid, admin)))

	plugin := fmt.Sprintf(`  [plugins.'io.containerd.grpc.v1.b9-resolver'.cloud]
    gcp_loopback_token_uri = true
  [[plugins.'io.containerd.grpc.v1.b9-resolver'.registry_mappings]]
    host = '%s'
    kind = 'ecr'
    account = '%s'
    region = 'us-east-1'
  [[plugins.'io.containerd.grpc.v1.b9-resolver'.registry_mappings]]
    host = '%s'
    kind = 'gar'
    region = 'us'
`, ecr.Host, cloudemu.DefaultAWSAccount, gar.Host)
	n := newNode(t, nodeConfig{pullMode: "direct", plugin: plugin,
		env: []string{"AWS_ENDPOINT_URL_ECR=" + aws.URL, "AWS_ENDPOINT_URL_STS=" + aws.URL, "AWS_EC2_METADATA_DISABLED=true"}})
	n.startStandalone("forward")

	awsDoc := envelope(t, ecr.Host, "aws", map[string]string{
		"AWS_ACCESS_KEY_ID": keyID, "AWS_SECRET_ACCESS_KEY": awsSecret, "AWS_REGION": "us-east-1"})
	gcpDoc := envelope(t, gar.Host, "gcp", map[string]string{"GOOGLE_APPLICATION_CREDENTIALS": string(saKey)})
	// Secrets whose leak the test looks for: the AWS secret key, the SA
	// key's private key, and every token the emulators issue (checked below).
	canaries := []string{awsSecret, admin, base64.StdEncoding.EncodeToString(saKey)[:40], privateKeyLine(saKey), "ecrpw-", "ya29."}

	for _, m := range []struct{ name, sock string }{{"forward", n.standAddr}, {"direct", n.b9}} {
		t.Run(m.name, func(t *testing.T) {
			t.Run("aws", func(t *testing.T) {
				img := ecr.PushRandomImage(t, "app/"+m.name, "v1", "admin", admin)
				before := aws.Calls(cloudemu.APIECRGetAuthorizationToken)
				for i := range 3 {
					mustSucceed(t, n.pull(m.sock, img.Ref, map[string]string{annKey: awsDoc}), fmt.Sprintf("aws pull %d", i))
				}
				if !n.listedByCRI(img.Ref) {
					t.Errorf("%s not listed by containerd's CRI", img.Ref)
				}
				calls := aws.Calls(cloudemu.APIECRGetAuthorizationToken) - before
				t.Logf("3 pulls with one aws document: %d ecr:GetAuthorizationToken calls", calls)
				if calls > 1 {
					t.Errorf("%d GetAuthorizationToken calls for 3 pulls, want at most 1 (the keychain caches the token)", calls)
				}
				wantCode(t, n.pull(m.sock, img.Ref, nil), "no document", "Unauthenticated")
				bad := envelope(t, ecr.Host, "aws", map[string]string{"AWS_ACCESS_KEY_ID": keyID, "AWS_SECRET_ACCESS_KEY": "wrong-" + awsSecret, "AWS_REGION": "us-east-1"})
				r := n.pull(m.sock, img.Ref, map[string]string{annKey: bad})
				wantCode(t, r, "wrong AWS secret", "Unauthenticated")
				if !strings.Contains(r.out, annKey) {
					t.Errorf("message does not name the annotation: %s", r.out)
				}
			})
			t.Run("gcp", func(t *testing.T) {
				img := gar.PushRandomImage(t, "proj/repo/"+m.name, "v1", "admin", admin)
				mustSucceed(t, n.pull(m.sock, img.Ref, map[string]string{annKey: gcpDoc}), "gcp pull")
				if !n.listedByCRI(img.Ref) {
					t.Errorf("%s not listed by containerd's CRI", img.Ref)
				}
				wantCode(t, n.pull(m.sock, img.Ref, nil), "no document", "Unauthenticated")
			})
		})
	}
	n.assertNoSecrets(canaries...)
	if aws.Issued() == 0 || gcp.Issued() == 0 {
		t.Fatalf("emulators issued aws %d gcp %d tokens; the pulls did not go through the providers", aws.Issued(), gcp.Issued())
	}
}

// privateKeyLine is one line from the middle of the key's PEM body.
func privateKeyLine(key []byte) string {
	var k struct {
		PrivateKey string `json:"private_key"`
	}
	_ = json.Unmarshal(key, &k)
	lines := strings.Split(k.PrivateKey, "\n")
	return lines[len(lines)/2]
}
