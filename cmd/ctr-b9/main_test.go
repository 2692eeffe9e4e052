package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/beam-cloud/b9-resolver/internal/secret"
)

const canary = "CANARY-ctr-b9-0d7e"

type result struct {
	status         int
	stdout, stderr string
}

func ctrB9(t *testing.T, args ...string) result {
	t.Helper()
	var out, errOut bytes.Buffer
	status := run(t.Context(), append([]string{"ctr-b9"}, args...), &out, &errOut)
	r := result{status, out.String(), errOut.String()}
	if strings.Contains(r.stdout+r.stderr, canary) {
		t.Fatalf("ctr-b9 %v printed the canary secret:\n%s\n%s", args, r.stdout, r.stderr)
	}
	return r
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestDetect(t *testing.T) {
	for _, tc := range []struct {
		ref  string
		want detectResult
	}{
		{"ubuntu", detectResult{Reference: "docker.io/library/ubuntu:latest", Host: "docker.io", Kind: "dockerhub", Repository: "library/ubuntu"}},
		{"210987654321.dkr.ecr.cn-north-1.amazonaws.com.cn/app:v1", detectResult{Reference: "210987654321.dkr.ecr.cn-north-1.amazonaws.com.cn/app:v1", Host: "210987654321.dkr.ecr.cn-north-1.amazonaws.com.cn", Kind: "ecr", Repository: "app", Account: "210987654321", Region: "cn-north-1", Partition: "aws-cn"}},
		{"123456789012.dkr-ecr-fips.us-gov-east-1.on.aws/app", detectResult{Reference: "123456789012.dkr-ecr-fips.us-gov-east-1.on.aws/app:latest", Host: "123456789012.dkr-ecr-fips.us-gov-east-1.on.aws", Kind: "ecr", Repository: "app", Account: "123456789012", Region: "us-gov-east-1", Partition: "aws-us-gov", FIPS: true, DualStack: true}},
		{"myreg.eastus.geo.azurecr.io/app", detectResult{Reference: "myreg.eastus.geo.azurecr.io/app:latest", Host: "myreg.eastus.geo.azurecr.io", Kind: "acr", Repository: "app", Account: "myreg", Region: "eastus", Partition: "azure"}},
	} {
		r := ctrB9(t, "detect", "-o", "json", tc.ref)
		if r.status != 0 {
			t.Fatalf("status %d: %s", r.status, r.stderr)
		}
		var got detectResult
		if err := json.Unmarshal([]byte(r.stdout), &got); err != nil {
			t.Fatal(err)
		}
		if got != tc.want {
			t.Errorf("detect %s:\n got %+v\nwant %+v", tc.ref, got, tc.want)
		}
		// Every field docs/design.md names is in the JSON.
		var raw map[string]any
		json.Unmarshal([]byte(r.stdout), &raw)
		for _, f := range []string{"reference", "host", "kind", "account", "region", "partition", "fips", "dualstack"} {
			if _, ok := raw[f]; !ok {
				t.Errorf("json lacks %q", f)
			}
		}
	}
	r := ctrB9(t, "detect", "nvcr.io/nvidia/pytorch:24.01-py3")
	if r.status != 0 || !strings.Contains(r.stdout, "kind:") || !strings.Contains(r.stdout, "ngc") {
		t.Fatalf("text output: %+v", r)
	}
}

func TestCreds(t *testing.T) {
	ann := `{"registry":"nvcr.io","credentials":{"NGC_API_KEY":"` + canary + `"}}`
	podJSON := writeFile(t, "pod.json", `{"metadata":{"name":"p","namespace":"default","uid":"u"},"annotations":{"b9.beam.cloud/image-credentials":`+jsonString(ann)+`,"b9.beam.cloud/image-credentials.hub":`+jsonString(`{"registry":"docker.io","credentials":{"DOCKERHUB_USERNAME":"me","DOCKERHUB_PASSWORD":"`+canary+`"}}`)+`}}`)
	podYAML := writeFile(t, "pod.yaml", "metadata:\n  name: p\nannotations:\n  b9.beam.cloud/image-credentials: '"+ann+"'\n")
	annFile := writeFile(t, "ann.json", `{"b9.beam.cloud/image-credentials":`+jsonString(ann)+`}`)
	docFile := writeFile(t, "doc.json", ann)

	for _, tc := range []struct {
		name string
		args []string
		want credsResult
	}{
		{"pod json", []string{"--pod-config", podJSON, "nvcr.io/nvidia/pytorch:24.01-py3"},
			credsResult{Host: "nvcr.io", Kind: "ngc", Type: "token", Source: "annotation b9.beam.cloud/image-credentials", Provider: "token/ngc", Username: "$oauthtoken"}},
		{"pod json, second annotation", []string{"--pod-config", podJSON, "ubuntu"},
			credsResult{Host: "docker.io", Kind: "dockerhub", Type: "basic", Source: "annotation b9.beam.cloud/image-credentials.hub", Provider: "basic", Username: "me"}},
		{"pod yaml", []string{"--pod-config", podYAML, "nvcr.io/nvidia/cuda"},
			credsResult{Host: "nvcr.io", Kind: "ngc", Type: "token", Source: "annotation b9.beam.cloud/image-credentials", Provider: "token/ngc", Username: "$oauthtoken"}},
		{"annotations file", []string{"--annotations", annFile, "nvcr.io/nvidia/cuda"},
			credsResult{Host: "nvcr.io", Kind: "ngc", Type: "token", Source: "annotation b9.beam.cloud/image-credentials", Provider: "token/ngc", Username: "$oauthtoken"}},
		{"document", []string{"--document", "robot:" + canary, "localhost:5000/app"},
			credsResult{Host: "localhost:5000", Kind: "generic", Type: "basic", Source: "--document", Provider: "basic", Username: "robot"}},
		{"document file", []string{"--document", "@" + docFile, "nvcr.io/x"},
			credsResult{Host: "nvcr.io", Kind: "ngc", Type: "token", Source: "--document " + docFile, Provider: "token/ngc", Username: "$oauthtoken"}},
		{"document for another registry falls to --creds", []string{"--document", ann, "--creds", "u:" + canary, "quay.io/org/app"},
			credsResult{Host: "quay.io", Kind: "quay", Type: "basic", Source: "auth", Provider: "basic", Username: "u"}},
		{"--creds from a file", []string{"--document", ann, "--creds", "@" + writeFile(t, "creds", "u:"+canary+"\n"), "quay.io/org/app"},
			credsResult{Host: "quay.io", Kind: "quay", Type: "basic", Source: "auth", Provider: "basic", Username: "u"}},
		{"nothing applies", []string{"--document", ann, "quay.io/org/app"},
			credsResult{Host: "quay.io", Kind: "quay", Type: "anonymous", Source: "none", Provider: "anonymous", Anonymous: true}},
		{"public", []string{"--document", `{"type":"public"}`, "ghcr.io/o/i"},
			credsResult{Host: "ghcr.io", Kind: "ghcr", Type: "public", Source: "--document", Provider: "public", Anonymous: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := ctrB9(t, append([]string{"creds", "-o", "json"}, tc.args...)...)
			if r.status != 0 {
				t.Fatalf("status %d: %s", r.status, r.stderr)
			}
			var got credsResult
			if err := json.Unmarshal([]byte(r.stdout), &got); err != nil {
				t.Fatal(err)
			}
			if got.Host != tc.want.Host || got.Kind != tc.want.Kind || got.Type != tc.want.Type || got.Source != tc.want.Source ||
				got.Provider != tc.want.Provider || got.Username != tc.want.Username || got.Anonymous != tc.want.Anonymous {
				t.Errorf("\n got %+v\nwant %+v", got, tc.want)
			}
			if !got.Anonymous && (!strings.HasPrefix(got.Fingerprint, secret.FingerprintPrefix) || !strings.HasPrefix(got.SecretFingerprint, secret.FingerprintPrefix)) {
				t.Errorf("fingerprints missing: %+v", got)
			}
			var raw map[string]any
			json.Unmarshal([]byte(r.stdout), &raw)
			for _, f := range []string{"host", "kind", "type", "source", "provider", "username", "fingerprint", "expires_at"} {
				if _, ok := raw[f]; !ok {
					t.Errorf("json lacks %q", f)
				}
			}
			// Text output says the same without the secret.
			if r := ctrB9(t, append([]string{"creds"}, tc.args...)...); r.status != 0 || !strings.Contains(r.stdout, "provider:") {
				t.Errorf("text: %+v", r)
			}
		})
	}
}

func TestErrorsAndUsage(t *testing.T) {
	for _, tc := range []struct {
		name   string
		args   []string
		status int
		stderr string
	}{
		{"no reference", []string{"detect"}, 2, "exactly one image reference"},
		{"two references", []string{"detect", "a", "b"}, 2, "exactly one image reference"},
		{"unknown flag", []string{"detect", "--nope", "a"}, 2, "flag provided but not defined"},
		{"bad output", []string{"detect", "-o", "xml", "a"}, 2, "--output must be text or json"},
		{"unknown command", []string{"frobnicate"}, 2, ""},
		{"bad reference", []string{"detect", "UPPER/Case"}, 1, "must be lowercase"},
		{"two inputs", []string{"creds", "--document", "u:p", "--annotations", "x", "a"}, 2, "only one of"},
		{"bad document", []string{"creds", "--document", `{"USERNAME":"u","PASSWORD":` + canary + `}`, "a"}, 1, "--document: malformed JSON at byte"},
		{"bad annotation", []string{"creds", "--annotations", writeFile(t, "a.json", `{"b9.beam.cloud/image-credentials.gpu":"{\"type\":\"aws\",\"credentials\":{\"AWS_SECRET_ACCESS_KEY\":\"`+canary+`\"}}"}`), "a"}, 1, "annotation b9.beam.cloud/image-credentials.gpu: field credentials.AWS_ACCESS_KEY_ID: missing"},
		{"missing pod config", []string{"creds", "--pod-config", "/nonexistent/pod.json", "a"}, 1, "--pod-config"},
		{"pod config not a pod", []string{"creds", "--pod-config", writeFile(t, "p.json", "[1,2]"), "a"}, 1, "not a pod config"},
		{"bad --creds", []string{"creds", "--creds", canary, "a"}, 2, "USER:PASS"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := ctrB9(t, tc.args...)
			if r.status != tc.status {
				t.Fatalf("status %d, want %d (stderr %q)", r.status, tc.status, r.stderr)
			}
			if !strings.Contains(r.stderr, tc.stderr) {
				t.Errorf("stderr %q, want %q", r.stderr, tc.stderr)
			}
			if tc.status == 1 && strings.Count(strings.TrimSpace(r.stderr), "\n") != 0 {
				t.Errorf("error is more than one line: %q", r.stderr)
			}
		})
	}
}

func TestVersion(t *testing.T) {
	r := ctrB9(t, "version")
	if r.status != 0 || !strings.Contains(r.stdout, "ctr-b9 ") || !strings.Contains(r.stdout, "containerd 2.4") {
		t.Fatalf("%+v", r)
	}
}

func TestHelpHasExamples(t *testing.T) {
	for _, c := range newApp(nil, nil).Commands {
		if !strings.Contains(c.Description, "Example") {
			t.Errorf("%s --help has no example", c.Name)
		}
	}
}

func jsonString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

func contextBackground() context.Context { return context.Background() }
