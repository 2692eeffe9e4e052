package aws

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/containerd/errdefs"

	"github.com/beam-cloud/b9-resolver/internal/keychain/document"
	"github.com/beam-cloud/b9-resolver/internal/testutil/cloudemu"
)

// A document with keys is minted with those keys only: the node's
// environment, shared files and IMDS are never read, even when the node
// enables its ambient identity — and a wrong tenant key fails rather than
// falling back to the node's. A node document without keys gets the
// node's identity only when ambient is enabled; a pod's never does.
func TestIsolationFromNodeCredentials(t *testing.T) {
	var imdsCalls atomic.Int32
	imds := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		imdsCalls.Add(1)
		http.Error(w, "no", http.StatusNotFound)
	}))
	defer imds.Close()
	dir := t.TempDir()
	creds := filepath.Join(dir, "credentials")
	conf := filepath.Join(dir, "config")
	if err := os.WriteFile(creds, []byte("[default]\naws_access_key_id = "+nodeAKID+"\naws_secret_access_key = "+nodeSecret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(conf, []byte("[default]\nregion = us-west-2\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("AWS_ACCESS_KEY_ID", nodeAKID)
	t.Setenv("AWS_SECRET_ACCESS_KEY", nodeSecret)
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", creds)
	t.Setenv("AWS_CONFIG_FILE", conf)
	t.Setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", imds.URL)

	e := newEmu(t)
	e.AddUser(nodeAKID, nodeSecret)
	ambient := newProvider(e, WithAmbient(true))
	strict := newProvider(e)
	ctx := context.Background()

	_, err := ambient.Mint(ctx, reg(ecrHost), awsDoc(t, "AWS_ACCESS_KEY_ID", tenantAKID, "AWS_SECRET_ACCESS_KEY", "CANARY-wrong"))
	if !errdefs.IsUnauthorized(err) {
		t.Fatalf("wrong tenant key: %v, want Unauthenticated", err)
	}
	if _, err := ambient.Mint(ctx, reg(ecrHost), staticDoc(t)); err != nil {
		t.Fatalf("tenant key: %v", err)
	}
	for _, r := range e.Requests() {
		if r.AccessKeyID != tenantAKID {
			t.Errorf("a tenant document's call was signed with %s", r.AccessKeyID)
		}
	}
	node := awsDoc(t)
	node.Node = true
	_, err = strict.Mint(ctx, reg(ecrHost), node)
	if !errdefs.IsInvalidArgument(err) {
		t.Fatalf("no keys, ambient off: %v, want InvalidArgument", err)
	}
	n := len(e.Requests())
	// A pod's keyless document ({"type":"aws"} in an annotation, or with
	// only AWS_ROLE_ARN) never borrows the node's identity, ambient or not.
	for _, pod := range []document.Document{awsDoc(t), awsDoc(t, document.KeyAWSRoleARN, roleARN)} {
		_, err = ambient.Mint(ctx, reg(ecrHost), pod)
		if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "a pod's aws document needs keys") ||
			!strings.Contains(err.Error(), "only for node credentials") {
			t.Fatalf("pod document without keys, ambient on: %v, want InvalidArgument", err)
		}
	}
	if len(e.Requests()) != n {
		t.Fatalf("a pod's keyless document made %d AWS calls", len(e.Requests())-n)
	}
	// Nor does a host that is no ECR, even for a node document: it is
	// whatever registry a pod named, and an ECR token would go to it.
	generic := awsDoc(t, document.KeyAWSRegion, "us-east-1")
	generic.Node = true
	_, err = ambient.Mint(ctx, reg("registry.evil.example"), generic)
	if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "only sent to ecr/ecr-public registries") || len(e.Requests()) != n {
		t.Fatalf("generic host, node document without keys: %v (%d AWS calls); want InvalidArgument and none", err, len(e.Requests())-n)
	}
	if _, err := ambient.Mint(ctx, reg(ecrHost), node); err != nil {
		t.Fatalf("node document without keys, ambient on: %v", err)
	}
	reqs := e.Requests()
	if len(reqs) != n+1 || reqs[n].AccessKeyID != nodeAKID {
		t.Errorf("ambient mint signed with %+v, want the node's key", reqs[n:])
	}
	// Through the keychain: the node document's cached ECR token is not
	// served to a pod's keyless document (the tier is in the cache key).
	kc := newKeychain(t, ambient)
	if _, err := kc.Resolve(ctx, reg(ecrHost), node); err != nil {
		t.Fatalf("keychain, node document: %v", err)
	}
	if c, err := kc.Resolve(ctx, reg(ecrHost), awsDoc(t)); !errdefs.IsInvalidArgument(err) {
		t.Fatalf("keychain, pod document after a node mint: %v (provider %q), want InvalidArgument", err, c.Provider)
	}
	if c := imdsCalls.Load(); c != 0 {
		t.Errorf("IMDS was called %d times", c)
	}
	cloudemu.AssertNoSecrets(t, "error", []string{err.Error()})
}
