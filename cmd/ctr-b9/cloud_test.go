package main

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/beam-cloud/b9-resolver/internal/testutil/cloudemu"
)

// TestMain lets a test run ctr-b9 as a child process (the test binary
// re-executed), for settings Go reads once per process such as
// SSL_CERT_FILE.
func TestMain(m *testing.M) {
	// distribution's per-request logs (logrus' standard logger) would bury
	// the test output.
	logrus.SetLevel(logrus.ErrorLevel)
	if os.Getenv("CTR_B9_AS_MAIN") == "1" {
		os.Exit(run(contextBackground(), append([]string{"ctr-b9"}, os.Args[1:]...), os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

func ctrB9Child(t *testing.T, env []string, args ...string) result {
	t.Helper()
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(append(os.Environ(), "CTR_B9_AS_MAIN=1"), env...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	status := 0
	if ee, ok := err.(*exec.ExitError); ok {
		status = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	r := result{status, out.String(), errOut.String()}
	if strings.Contains(r.stdout+r.stderr, canary) {
		t.Fatalf("ctr-b9 %v printed the canary secret", args)
	}
	return r
}

func credsJSON(t *testing.T, r result) credsResult {
	t.Helper()
	if r.status != 0 {
		t.Fatalf("status %d: %s", r.status, r.stderr)
	}
	var c credsResult
	if err := json.Unmarshal([]byte(r.stdout), &c); err != nil {
		t.Fatal(err)
	}
	return c
}

func TestCredsAWSAgainstEmulator(t *testing.T) {
	emu := cloudemu.NewAWS(t)
	emu.AddUser("AKIDB9TEST", canary)
	emu.SetLifetime(12 * time.Hour)
	t.Setenv("AWS_ENDPOINT_URL_ECR", emu.URL)
	t.Setenv("AWS_ENDPOINT_URL_STS", emu.URL)
	ref := "123456789012.dkr.ecr.us-west-2.amazonaws.com/team/app:v1"
	doc := `{"registry":"123456789012.dkr.ecr.us-west-2.amazonaws.com","credentials":{"AWS_ACCESS_KEY_ID":"AKIDB9TEST","AWS_SECRET_ACCESS_KEY":"` + canary + `"}}`

	c := credsJSON(t, ctrB9(t, "creds", "-o", "json", "--document", doc, ref))
	if c.Kind != "ecr" || c.Type != "aws" || c.Provider != "aws/ecr" || c.Username != "AWS" || c.Account != "123456789012" || c.Region != "us-west-2" {
		t.Fatalf("%+v", c)
	}
	exp, err := time.Parse(time.RFC3339, c.ExpiresAt)
	if err != nil || time.Until(exp) < 11*time.Hour || time.Until(exp) > 13*time.Hour {
		t.Fatalf("ECR expiry %q, want ~12h ahead", c.ExpiresAt)
	}
	if emu.Calls(cloudemu.APIECRGetAuthorizationToken) < 1 {
		t.Fatal("the emulator saw no ECR call")
	}

	// A region that contradicts the host is an error that says so, naming
	// the field and the host's region, never the document's value.
	bad := strings.Replace(doc, `"AWS_ACCESS_KEY_ID"`, `"AWS_REGION":"eu-west-1","AWS_ACCESS_KEY_ID"`, 1)
	r := ctrB9(t, "creds", "--document", bad, ref)
	if r.status != 1 || !strings.Contains(r.stderr, "AWS_REGION") || !strings.Contains(r.stderr, "us-west-2") || strings.Contains(r.stderr, "eu-west-1") {
		t.Fatalf("region mismatch: %+v", r)
	}
	res, _ := checkJSON(t, "--document", bad, ref)
	if res.OK || !strings.HasPrefix(res.Diagnosis, "region mismatch") {
		t.Fatalf("check diagnosis %q", res.Diagnosis)
	}

	// Wrong keys: the cloud says no, and check says so in words.
	wrong := strings.Replace(doc, canary, "wrong-"+canary, 1)
	res, _ = checkJSON(t, "--document", wrong, ref)
	if res.OK || !strings.Contains(res.Diagnosis, "rejected the source credential") {
		t.Fatalf("check diagnosis %q (steps %s)", res.Diagnosis, stepStatus(res))
	}
}

func TestCredsGCPAgainstEmulator(t *testing.T) {
	emu := cloudemu.NewGCP(t)
	key := emu.NewServiceAccountKey(t, "puller@proj.iam.gserviceaccount.com")
	doc := `{"credentials":{"GOOGLE_APPLICATION_CREDENTIALS":` + jsonString(string(key)) + `}}`
	ref := "us-docker.pkg.dev/proj/repo/app:v1"

	c := credsJSON(t, ctrB9(t, "creds", "-o", "json", "--allow-loopback-token-uri", "--document", doc, ref))
	if c.Kind != "gar" || c.Type != "gcp" || c.Provider != "gcp/service-account" || c.Username != "oauth2accesstoken" || c.ExpiresAt == "" {
		t.Fatalf("%+v", c)
	}
	// By default a key may only send its JWT to Google.
	r := ctrB9(t, "creds", "--document", doc, ref)
	if r.status != 1 || !strings.Contains(r.stderr, "token_uri") {
		t.Fatalf("loopback token_uri accepted by default: %+v", r)
	}
	if strings.Contains(r.stderr, "PRIVATE KEY") {
		t.Fatal("key material in the error")
	}
}

func TestCredsAzureAgainstEmulator(t *testing.T) {
	emu := cloudemu.NewAzure(t)
	emu.AddServicePrincipal("tenant-1", "client-1", canary)
	certFile := filepath.Join(t.TempDir(), "emu.pem")
	if err := os.WriteFile(certFile, emu.CertPEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	doc := `{"type":"azure","credentials":{"AZURE_CLIENT_ID":"client-1","AZURE_CLIENT_SECRET":"` + canary + `","AZURE_TENANT_ID":"tenant-1"}}`
	// The emulator is an ACR login server on 127.0.0.1: map it as one.
	env := []string{"SSL_CERT_FILE=" + certFile, "AZURE_AUTHORITY_HOST=" + emu.URL}
	r := ctrB9Child(t, env, "creds", "-o", "json", "--registry-mapping", emu.Host+"=acr,account=myreg,partition=azure", "--document", doc, emu.Host+"/app:v1")
	c := credsJSON(t, r)
	if c.Kind != "acr" || c.Provider != "azure/acr-exchange" || c.Username != "00000000-0000-0000-0000-000000000000" || !c.IdentityToken || c.ExpiresAt == "" {
		t.Fatalf("%+v", c)
	}
	if len(emu.Exchanges()) != 1 {
		t.Fatalf("%d exchanges", len(emu.Exchanges()))
	}
}

// --gcp-ambient lends the metadata server's identity to a --node-document
// without keys only: the same document given as a pod's (--document) fails
// with InvalidArgument, and a pod's document outranks a node document even
// when only the node document names the registry.
func TestNodeDocumentAmbient(t *testing.T) {
	emu := cloudemu.NewGCP(t)
	env := []string{"GCE_METADATA_HOST=" + emu.MetadataHost()}
	ref := "us-docker.pkg.dev/proj/repo/app:v1"

	r := ctrB9Child(t, env, "creds", "--gcp-ambient", "--document", `{"type":"gcp"}`, ref)
	if r.status != 1 || !strings.Contains(r.stderr, "a pod's gcp document needs") || !strings.Contains(r.stderr, "only for node credentials") {
		t.Fatalf("pod document without keys, ambient on: %+v", r)
	}
	if n := emu.Calls(cloudemu.APIGCEMetadataToken); n != 0 {
		t.Fatalf("a pod document reached the metadata server %d times", n)
	}
	r = ctrB9Child(t, env, "creds", "--gcp-ambient", "--node-document", `{"type":"gcp"}`, ref)
	if r.status != 1 || !strings.Contains(r.stderr, "field registry: missing; a node credential must name its registry") {
		t.Fatalf("node document without a registry: %+v", r)
	}
	c := credsJSON(t, ctrB9Child(t, env, "creds", "-o", "json", "--gcp-ambient", "--node-document", `{"registry":"us-docker.pkg.dev","type":"gcp"}`, ref))
	if c.Provider != "gcp/metadata" || c.Source != "--node-document" || c.Username != "oauth2accesstoken" {
		t.Fatalf("node document, ambient on: %+v", c)
	}
	file := writeFile(t, "node.json", `{"registry":"us-docker.pkg.dev","type":"gcp"}`)
	c = credsJSON(t, ctrB9Child(t, env, "creds", "-o", "json", "--gcp-ambient", "--document", "robot:"+canary, "--node-document", "@"+file, ref))
	if c.Source != "--document" || c.Type != "basic" {
		t.Fatalf("a node document outranked the pod's: %+v", c)
	}
	c = credsJSON(t, ctrB9Child(t, env, "creds", "-o", "json", "--gcp-ambient", "--node-document", "@"+file, ref))
	if c.Source != "--node-document "+file || c.Provider != "gcp/metadata" {
		t.Fatalf("node document file: %+v", c)
	}
}

// --azure-ambient lends the VM's managed identity (IMDS, moved by
// AZURE_POD_IDENTITY_AUTHORITY_HOST) to a keyless azure --node-document,
// never to a pod's.
func TestNodeDocumentAzureManagedIdentity(t *testing.T) {
	emu := cloudemu.NewAzure(t)
	emu.AssignIdentity("tenant-1", "uami-1")
	certFile := filepath.Join(t.TempDir(), "emu.pem")
	if err := os.WriteFile(certFile, emu.CertPEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	env := []string{"SSL_CERT_FILE=" + certFile, "AZURE_POD_IDENTITY_AUTHORITY_HOST=" + emu.IMDSURL}
	args := []string{"creds", "-o", "json", "--registry-mapping", emu.Host + "=acr,account=myreg,partition=azure",
		"--azure-ambient", "--azure-identity-client-id", "uami-1"}
	ref := emu.Host + "/app:v1"

	r := ctrB9Child(t, env, append(args, "--document", `{"type":"azure"}`, ref)...)
	if r.status != 1 || !strings.Contains(r.stderr, "only for node credentials") {
		t.Fatalf("pod document without keys, ambient on: %+v", r)
	}
	c := credsJSON(t, ctrB9Child(t, env, append(args, "--node-document", `{"registry":"`+emu.Host+`","type":"azure"}`, ref)...))
	if c.Provider != "azure/managed-identity" || c.Source != "--node-document" || !c.IdentityToken || c.Username != "00000000-0000-0000-0000-000000000000" {
		t.Fatalf("node document, ambient on: %+v", c)
	}
	if i, ex := emu.Calls(cloudemu.APIIMDSToken), emu.Exchanges(); i != 1 || len(ex) != 1 || ex[0].Tenant != "tenant-1" {
		t.Fatalf("IMDS calls %d, exchanges %+v", i, ex)
	}
}
