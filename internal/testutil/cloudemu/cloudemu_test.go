package cloudemu

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
)

// The SigV4 check accepts what the SDK's signer produces and rejects a
// changed body, a changed signed header and the wrong secret.
func TestVerifySigV4(t *testing.T) {
	body := []byte(`{}`)
	sign := func(secret string) *http.Request {
		r := httptest.NewRequest(http.MethodPost, "http://api.ecr.us-west-2.amazonaws.com/", bytes.NewReader(body))
		r.Header.Set("Content-Type", amzJSON)
		r.Header.Set("X-Amz-Target", ecrTarget)
		sum := sha256.Sum256(body)
		err := v4.NewSigner().SignHTTP(context.Background(), aws.Credentials{AccessKeyID: "AKID", SecretAccessKey: secret},
			r, hex.EncodeToString(sum[:]), "ecr", "us-west-2", time.Now())
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	check := func(r *http.Request, b []byte, secret string) error {
		a, err := parseSigV4(r.Header.Get("Authorization"))
		if err != nil {
			return err
		}
		return verifySigV4(r, b, a, secret, time.Now())
	}
	if err := check(sign("s3cret"), body, "s3cret"); err != nil {
		t.Fatalf("a correct signature was refused: %v", err)
	}
	if check(sign("s3cret"), []byte(`{"registryIds":["1"]}`), "s3cret") == nil {
		t.Error("a changed body was accepted")
	}
	r := sign("s3cret")
	r.Header.Set("X-Amz-Target", ecrPublicTarget)
	if check(r, body, "s3cret") == nil {
		t.Error("a changed signed header was accepted")
	}
	if check(sign("other"), body, "s3cret") == nil {
		t.Error("the wrong secret was accepted")
	}
}

func TestControlFaultsAndCounts(t *testing.T) {
	c := newControl()
	c.Fail("api", Throttle, 2)
	var got []Fault
	for range 3 {
		f, _ := c.begin(context.Background(), "api")
		got = append(got, f)
	}
	if got[0] != Throttle || got[1] != Throttle || got[2] != 0 || c.Calls("api") != 3 {
		t.Errorf("faults %v, calls %d", got, c.Calls("api"))
	}
	c.Fail("api", Unavailable, -1)
	c.begin(context.Background(), "api")
	if f, _ := c.begin(context.Background(), "api"); f != Unavailable {
		t.Error("a fault without a count stopped")
	}
	c.Heal("")
	if f, _ := c.begin(context.Background(), "api"); f != 0 {
		t.Error("Heal left a fault")
	}
	c.Fail("api", IssueExpired, 1)
	if _, life := c.begin(context.Background(), "api"); life >= 0 {
		t.Errorf("IssueExpired gave life %v", life)
	}
	c.SetDelay(50 * time.Millisecond)
	start := time.Now()
	c.begin(context.Background(), "api")
	if time.Since(start) < 50*time.Millisecond {
		t.Error("delay not applied")
	}
	c.register("tok", time.Now().Add(time.Hour))
	if !c.Valid("tok", time.Now()) || c.Valid("nope", time.Now()) || c.Valid("tok", time.Now().Add(2*time.Hour)) {
		t.Error("Valid is wrong")
	}
	c.Expire("tok")
	if c.Valid("tok", time.Now().Add(time.Millisecond)) {
		t.Error("Expire did not take")
	}
}

// The metadata server insists on Metadata-Flavor, as GCE's does.
func TestMetadataFlavor(t *testing.T) {
	g := NewGCP(t)
	resp, err := http.Get(g.URL + metadataTokenURL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden || g.Calls(APIGCEMetadataToken) != 0 {
		t.Errorf("no header: %d, %d calls", resp.StatusCode, g.Calls(APIGCEMetadataToken))
	}
	req, _ := http.NewRequest(http.MethodGet, g.URL+metadataTokenURL, nil)
	req.Header.Set("Metadata-Flavor", "Google")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Metadata-Flavor") != "Google" || !strings.Contains(string(b), "ya29.gce-emu-") {
		t.Errorf("with header: %d %q", resp.StatusCode, b)
	}
}

func TestRedirectKeepsHost(t *testing.T) {
	var host string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { host = r.Host }))
	defer srv.Close()
	c := &http.Client{Transport: Redirect(srv.URL, nil)}
	resp, err := c.Get("https://api.ecr-fips.us-gov-west-1.amazonaws.com/x")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if host != "api.ecr-fips.us-gov-west-1.amazonaws.com" {
		t.Errorf("emulator saw host %q", host)
	}
}
