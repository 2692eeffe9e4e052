package document

import (
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
)

// canary is in every secret value of these tests; no error may contain it.
const canary = "CANARY-doc-91c3"

func TestParseForms(t *testing.T) {
	for _, tc := range []struct {
		name     string
		text     string
		host     string
		wantDocs []struct {
			reg      string
			typ      Type
			explicit bool
			keys     []string
		}
	}{
		{name: "envelope", text: `{"registry":"123456789012.dkr.ecr.us-east-1.amazonaws.com","type":"aws","credentials":{"AWS_ACCESS_KEY_ID":"AKID","AWS_SECRET_ACCESS_KEY":"` + canary + `","AWS_REGION":"us-east-1"}}`,
			wantDocs: docs(doc("123456789012.dkr.ecr.us-east-1.amazonaws.com", TypeAWS, true, KeyAWSAccessKeyID, KeyAWSRegion, KeyAWSSecretKey))},
		{name: "envelope without type", text: `{"registry":"ghcr.io","credentials":{"GITHUB_TOKEN":"` + canary + `"}}`,
			wantDocs: docs(doc("ghcr.io", TypeToken, false, KeyGitHubToken))},
		{name: "envelope with docker hub alias", text: `{"registry":"https://index.docker.io/v1/","credentials":{"DOCKERHUB_USERNAME":"u","DOCKERHUB_PASSWORD":"` + canary + `"}}`,
			wantDocs: docs(doc("docker.io", TypeBasic, false, KeyDockerHubPassword, KeyDockerHubUsername))},
		{name: "envelope, type upper-case", text: `{"type":"BASIC","credentials":{"USERNAME":"u","PASSWORD":"` + canary + `"}}`,
			wantDocs: docs(doc("", TypeBasic, true, KeyPassword, KeyUsername))},
		{name: "envelope with null credentials is public", text: `{"registry":"quay.io","type":"public","credentials":null}`,
			wantDocs: docs(doc("quay.io", TypePublic, true))},
		{name: "array", text: `[{"registry":"ghcr.io","credentials":{"GITHUB_TOKEN":"` + canary + `"}},{"registry":"nvcr.io","type":"token","credentials":{"NGC_API_KEY":"` + canary + `"}}]`,
			wantDocs: docs(doc("ghcr.io", TypeToken, false, KeyGitHubToken), doc("nvcr.io", TypeToken, true, KeyNGCAPIKey))},
		{name: "flat map", text: `{"USERNAME":"u","PASSWORD":"` + canary + `"}`,
			wantDocs: docs(doc("", TypeBasic, false, KeyPassword, KeyUsername))},
		{name: "flat map with registry and type (CLIP merges them)", text: `{"registry":"r.example.com","type":"basic","REGISTRY_USERNAME":"u","REGISTRY_PASSWORD":"` + canary + `"}`,
			wantDocs: docs(doc("r.example.com", TypeBasic, true, KeyRegistryPassword, KeyRegistryUsername))},
		{name: "flat map, unknown keys dropped", text: `{"USERNAME":"u","PASSWORD":"` + canary + `","HOME":"/root","PATH":"/bin"}`,
			wantDocs: docs(doc("", TypeBasic, false, KeyPassword, KeyUsername))},
		{name: "flat map, empty values dropped", text: `{"USERNAME":"u","PASSWORD":"` + canary + `","AWS_REGION":""}`,
			wantDocs: docs(doc("", TypeBasic, false, KeyPassword, KeyUsername))},
		{name: "user:pass", text: "robot$ci:" + canary,
			wantDocs: docs(doc("", TypeBasic, false, KeyPassword, KeyUsername))},
		{name: "user:pass with colons in the password", text: "u:" + canary + ":x:y",
			wantDocs: docs(doc("", TypeBasic, false, KeyPassword, KeyUsername))},
		{name: "whitespace around JSON", text: "\n  {\"USERNAME\":\"u\",\"PASSWORD\":\"" + canary + "\"}\n",
			wantDocs: docs(doc("", TypeBasic, false, KeyPassword, KeyUsername))},
		{name: "empty object is public", text: `{}`, wantDocs: docs(doc("", TypePublic, false))},
		{name: "empty object is public even for an ECR host (beta9 order)", text: `{}`, host: "123456789012.dkr.ecr.us-east-1.amazonaws.com",
			wantDocs: docs(doc("", TypePublic, false))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Parse("annotation b9.beam.cloud/image-credentials", tc.text, tc.host)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if len(got) != len(tc.wantDocs) {
				t.Fatalf("%d documents, want %d", len(got), len(tc.wantDocs))
			}
			for i, w := range tc.wantDocs {
				d := got[i]
				if d.Registry != w.reg || d.Type != w.typ || d.TypeExplicit != w.explicit || !sameKeys(d, w.keys) {
					t.Errorf("doc %d = {reg %q type %q explicit %v keys %v}, want %+v", i, d.Registry, d.Type, d.TypeExplicit, keyNames(d), w)
				}
				if d.Source != "annotation b9.beam.cloud/image-credentials" {
					t.Errorf("source %q", d.Source)
				}
				if !strings.HasPrefix(d.Identity(), "sha256:") {
					t.Errorf("identity %q", d.Identity())
				}
				if strings.Contains(fmt.Sprintf("%v %+v %#v", d, d, d), canary) {
					t.Errorf("formatting a document leaks its secret")
				}
			}
		})
	}
}

func TestUserPassValues(t *testing.T) {
	d, err := Parse("auth", "robot$ci:"+canary+":x", "")
	if err != nil {
		t.Fatal(err)
	}
	if d[0].Get(KeyUsername).Reveal() != "robot$ci" || d[0].Get(KeyPassword).Reveal() != canary+":x" {
		t.Fatal("user:pass split at the wrong colon")
	}
}

// TestDetectType walks beta9's DetectCredentialType order.
func TestDetectType(t *testing.T) {
	s := func(keys ...string) map[string]string {
		m := map[string]string{}
		for _, k := range keys {
			m[k] = canary
		}
		return m
	}
	for _, tc := range []struct {
		name string
		keys map[string]string
		host string
		want Type
		ok   bool
	}{
		{"no keys → public", s(), "", TypePublic, true},
		{"aws key+secret", s(KeyAWSAccessKeyID, KeyAWSSecretKey), "", TypeAWS, true},
		{"aws beats gcp", s(KeyAWSAccessKeyID, KeyAWSSecretKey, KeyGCPAccessToken), "", TypeAWS, true},
		{"aws key alone is not aws", s(KeyAWSAccessKeyID, KeyUsername, KeyPassword), "", TypeBasic, true},
		{"gcp application credentials", s(KeyGoogleAppCreds), "", TypeGCP, true},
		{"gcp project id", s(KeyGCPProjectID), "", TypeGCP, true},
		{"gcp access token", s(KeyGCPAccessToken), "", TypeGCP, true},
		{"gcp beats azure", s(KeyGCPAccessToken, KeyAzureClientID, KeyAzureClientSecret), "", TypeGCP, true},
		{"azure id+secret", s(KeyAzureClientID, KeyAzureClientSecret, KeyAzureTenantID), "", TypeAzure, true},
		{"azure id alone is not azure", s(KeyAzureClientID), "", "", false},
		{"azure beats token", s(KeyAzureClientID, KeyAzureClientSecret, KeyGitHubToken), "", TypeAzure, true},
		{"ngc token", s(KeyNGCAPIKey), "", TypeToken, true},
		{"github token", s(KeyGitHubToken, KeyGitHubUsername), "", TypeToken, true},
		{"dockerhub token", s(KeyDockerHubToken), "", TypeToken, true},
		{"token beats basic", s(KeyDockerHubToken, KeyUsername, KeyPassword), "", TypeToken, true},
		{"username+password", s(KeyUsername, KeyPassword), "", TypeBasic, true},
		{"any *USERNAME + *PASSWORD", s(KeyDockerHubUsername, KeyRegistryPassword), "", TypeBasic, true},
		{"username alone", s(KeyUsername), "", "", false},
		{"ecr host", s(KeyAWSRegion), "123456789012.dkr.ecr.us-east-1.amazonaws.com", TypeAWS, true},
		{"ecr public host", s(KeyAWSRegion), "public.ecr.aws", TypeAWS, true},
		{"gcr host", s(KeyUsername), "gcr.io", TypeGCP, true},
		{"gar host", s(KeyUsername), "us-docker.pkg.dev", TypeGCP, true},
		{"acr host", s(KeyAzureTenantID), "myreg.azurecr.io", TypeAzure, true},
		{"ecr lookalike host decides nothing", s(KeyUsername), "1.dkr.ecr.us-east-1.amazonaws.com.evil.io", "", false},
		{"generic host decides nothing", s(KeyUsername), "registry.example.com", "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			keys := map[string]Secret{}
			for k, v := range tc.keys {
				keys[k] = newSecret(v)
			}
			got, ok := DetectType(keys, tc.host)
			if got != tc.want || ok != tc.ok {
				t.Errorf("DetectType = %q, %v; want %q, %v", got, ok, tc.want, tc.ok)
			}
		})
	}
}

// TestMalformed covers every class of bad input: the error is
// InvalidArgument, names the source and the field, and never the value.
func TestMalformed(t *testing.T) {
	big := strings.Repeat("A", MaxValueBytes+1)
	for _, tc := range []struct {
		name, text, field, reason string
	}{
		{"empty", "  ", "", "empty"},
		{"not json, no colon", canary, "", "not a JSON document"},
		{"empty username", ":" + canary, "username", "empty"},
		{"empty password", "user:", "password", "empty"},
		{"broken json", `{"USERNAME":"u","PASSWORD":"` + canary + `"`, "", "malformed JSON"},
		{"bad json char", `{"USERNAME":"u","PASSWORD":` + canary + `}`, "", "malformed JSON at byte"},
		{"trailing data", `{"USERNAME":"u","PASSWORD":"p"} {"x":"` + canary + `"}`, "", "malformed JSON at byte"},
		{"array of strings", `["` + canary + `"]`, "[0]", "want a JSON object"},
		{"empty array", `[]`, "", "empty array"},
		{"too many documents", "[" + strings.TrimSuffix(strings.Repeat(`{},`, MaxDocuments+1), ",") + "]", "", "more than"},
		{"null document", `null`, "", "not a JSON document"},
		{"number value", `{"USERNAME":"u","PASSWORD":12345}`, "PASSWORD", "want a string"},
		{"object value", `{"USERNAME":"u","PASSWORD":{"v":"` + canary + `"}}`, "PASSWORD", "want a string"},
		{"registry not a string", `{"registry":5,"credentials":{}}`, "registry", "want a string"},
		{"type not a string", `{"type":["aws"],"credentials":{}}`, "type", "want a string"},
		{"credentials not an object", `{"type":"basic","credentials":"` + canary + `"}`, "credentials", "want an object"},
		{"unexpected envelope field", `{"registry":"x.io","credentials":{},"password":"` + canary + `"}`, "<key>", "unexpected field"},
		{"bad registry", `{"registry":"not a host!","credentials":{"USERNAME":"u","PASSWORD":"p"}}`, "registry", "not a registry host"},
		{"unknown type", `{"type":"kerberos-` + canary + `","credentials":{}}`, "type", "unknown credential type"},
		{"type undecidable", `{"USERNAME":"u"}`, "type", "cannot tell"},
		{"lower-case key", `{"username":"u","password":"` + canary + `"}`, "<key>", "not a credential key name"},
		{"secret as a key", `{"` + canary + `":"x"}`, "<key>", "not a credential key name"},
		{"oversized value", `{"USERNAME":"u","PASSWORD":"` + big + `"}`, "PASSWORD", "more than"},
		{"oversized document", `{"PASSWORD":"` + strings.Repeat("A", MaxDocumentBytes) + `"}`, "", "more than"},
		{"invalid utf-8", "u:\xff\xfe" + canary, "", "UTF-8"},
		{"basic without password", `{"type":"basic","credentials":{"USERNAME":"u"}}`, "PASSWORD", "missing"},
		{"basic without username", `{"type":"basic","credentials":{"PASSWORD":"` + canary + `"}}`, "USERNAME", "missing"},
		{"aws key id without secret", `{"type":"aws","credentials":{"AWS_ACCESS_KEY_ID":"AKID"}}`, "AWS_SECRET_ACCESS_KEY", "missing"},
		{"aws secret without key id", `{"type":"aws","credentials":{"AWS_SECRET_ACCESS_KEY":"` + canary + `"}}`, "AWS_ACCESS_KEY_ID", "missing"},
		{"aws session token alone", `{"type":"aws","credentials":{"AWS_SESSION_TOKEN":"` + canary + `"}}`, "AWS_ACCESS_KEY_ID", "missing"},
		{"azure id without secret", `{"type":"azure","credentials":{"AZURE_CLIENT_ID":"id"}}`, "AZURE_CLIENT_SECRET", "missing"},
		{"token without token key", `{"type":"token","credentials":{"USERNAME":"u"}}`, "credentials", "needs one of"},
		{"wrong-type key", `{"type":"basic","credentials":{"USERNAME":"u","PASSWORD":"p","AWS_SECRET_ACCESS_KEY":"` + canary + `"}}`, "AWS_SECRET_ACCESS_KEY", "does not belong to type basic"},
		{"public with a secret", `{"type":"public","credentials":{"PASSWORD":"` + canary + `"}}`, "PASSWORD", "does not belong"},
		{"array element bad", `[{"registry":"ghcr.io","credentials":{"GITHUB_TOKEN":"x"}},{"type":"nope","credentials":{}}]`, "[1].type", "unknown credential type"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("annotation b9.beam.cloud/image-credentials.gpu", tc.text, "")
			if err == nil {
				t.Fatal("no error")
			}
			if !errdefs.IsInvalidArgument(err) {
				t.Errorf("not InvalidArgument: %v", err)
			}
			var de *Error
			if !errors.As(err, &de) {
				t.Fatalf("not a *document.Error: %T", err)
			}
			msg := err.Error()
			if !strings.Contains(msg, "annotation b9.beam.cloud/image-credentials.gpu") {
				t.Errorf("error does not name the annotation: %s", msg)
			}
			if !strings.Contains(de.Field, tc.field) {
				t.Errorf("field %q, want it to contain %q (%s)", de.Field, tc.field, msg)
			}
			if !strings.Contains(msg, tc.reason) {
				t.Errorf("error %q, want %q", msg, tc.reason)
			}
			if strings.Contains(msg, canary) || strings.Contains(msg, "AAAAAAAA") {
				t.Errorf("error echoes a value: %s", msg)
			}
		})
	}
}

func TestFromAnnotations(t *testing.T) {
	ann := map[string]string{
		"b9.beam.cloud/image-credentials.zz-ngc": `{"registry":"nvcr.io","credentials":{"NGC_API_KEY":"` + canary + `"}}`,
		"b9.beam.cloud/image-credentials":        `{"registry":"ghcr.io","credentials":{"GITHUB_TOKEN":"` + canary + `"}}`,
		"b9.beam.cloud/image-credentials.aa-hub": `{"DOCKERHUB_USERNAME":"u","DOCKERHUB_TOKEN":"` + canary + `"}`,
		"b9.beam.cloud/other":                    "not a document",
		"io.kubernetes.pod/x":                    "{",
	}
	docs, err := FromAnnotations(ann, "", "docker.io")
	if err != nil {
		t.Fatal(err)
	}
	var order []string
	for _, d := range docs {
		order = append(order, d.Source)
	}
	want := []string{"annotation b9.beam.cloud/image-credentials", "annotation b9.beam.cloud/image-credentials.aa-hub", "annotation b9.beam.cloud/image-credentials.zz-ngc"}
	if strings.Join(order, ",") != strings.Join(want, ",") {
		t.Fatalf("order %v, want %v", order, want)
	}
	for host, wantSrc := range map[string]string{
		"ghcr.io":   want[0],
		"nvcr.io":   want[2],
		"docker.io": want[1], // no registry named: the first registry-less document
		"quay.io":   want[1],
	} {
		d, ok := Select(docs, host)
		if !ok || d.Source != wantSrc {
			t.Errorf("Select(%s) = %q, %v; want %q", host, d.Source, ok, wantSrc)
		}
	}
	if _, ok := Select(docs[:1], "quay.io"); ok {
		t.Error("a document for ghcr.io was selected for quay.io")
	}

	// A custom prefix reads only its own keys.
	docs, err = FromAnnotations(map[string]string{"corp.io/image-credentials": "u:" + canary, "b9.beam.cloud/image-credentials": "{"}, "corp.io/", "")
	if err != nil || len(docs) != 1 || docs[0].Source != "annotation corp.io/image-credentials" {
		t.Fatalf("custom prefix: %v %v", docs, err)
	}

	// A bad annotation names its key.
	_, err = FromAnnotations(map[string]string{"b9.beam.cloud/image-credentials.bad": `{"type":"x"}`}, "", "")
	if err == nil || !strings.Contains(err.Error(), "annotation b9.beam.cloud/image-credentials.bad") || !errdefs.IsInvalidArgument(err) {
		t.Fatalf("bad annotation error: %v", err)
	}
	_, err = FromAnnotations(map[string]string{"b9.beam.cloud/image-credentials.": "u:p"}, "", "")
	if err == nil {
		t.Fatal("empty name after the dot accepted")
	}
	if docs, err := FromAnnotations(nil, "", ""); err != nil || len(docs) != 0 {
		t.Fatalf("no annotations: %v %v", docs, err)
	}
}

func TestUsernamePrecedence(t *testing.T) {
	for _, tc := range []struct {
		keys           []string
		user, password string
	}{
		{[]string{KeyUsername, KeyPassword, KeyRegistryUsername, KeyRegistryPassword, KeyDockerUsername, KeyDockerPassword}, KeyRegistryUsername, KeyRegistryPassword},
		{[]string{KeyUsername, KeyPassword, KeyDockerUsername, KeyDockerPassword, KeyDockerHubUsername, KeyDockerHubPassword}, KeyDockerUsername, KeyDockerPassword},
		{[]string{KeyUsername, KeyPassword, KeyDockerHubUsername, KeyDockerHubPassword}, KeyDockerHubUsername, KeyDockerHubPassword},
		{[]string{KeyUsername, KeyPassword}, KeyUsername, KeyPassword},
		// A username without its own password takes the first password.
		{[]string{KeyRegistryUsername, KeyPassword}, KeyRegistryUsername, KeyPassword},
		{[]string{KeyGitHubUsername, KeyDockerPassword}, KeyGitHubUsername, KeyDockerPassword},
	} {
		d := Document{Keys: map[string]Secret{}}
		for _, k := range tc.keys {
			d.Keys[k] = newSecret(k + "-value")
		}
		u := Username(d)
		if u != tc.user || Password(d, u) != tc.password {
			t.Errorf("%v: user %s password %s; want %s %s", tc.keys, u, Password(d, u), tc.user, tc.password)
		}
	}
}

func TestGoogleCredentialsBase64IsOneValue(t *testing.T) {
	key := base64.StdEncoding.EncodeToString([]byte(`{"type":"service_account","private_key":"` + canary + `"}`))
	d, err := Parse("x", `{"GOOGLE_APPLICATION_CREDENTIALS":"`+key+`"}`, "us-docker.pkg.dev")
	if err != nil || d[0].Type != TypeGCP || d[0].Get(KeyGoogleAppCreds).Reveal() != key {
		t.Fatalf("gcp key document: %v", err)
	}
}

// helpers

type wantDoc = struct {
	reg      string
	typ      Type
	explicit bool
	keys     []string
}

func doc(reg string, typ Type, explicit bool, keys ...string) wantDoc {
	return wantDoc{reg, typ, explicit, keys}
}
func docs(d ...wantDoc) []wantDoc { return d }

func keyNames(d Document) []string {
	var out []string
	for k := range d.Keys {
		out = append(out, k)
	}
	return out
}

func sameKeys(d Document, keys []string) bool {
	if len(d.Keys) != len(keys) {
		return false
	}
	for _, k := range keys {
		if !d.Has(k) {
			return false
		}
	}
	return true
}

func TestSelectNamed(t *testing.T) {
	docs, err := Parse("x", `[{"USERNAME":"u","PASSWORD":"p"},{"registry":"mirror.corp","USERNAME":"m","PASSWORD":"q"}]`, "")
	if err != nil {
		t.Fatal(err)
	}
	if d, ok := SelectNamed(docs, "mirror.corp"); !ok || d.Get(KeyUsername).Reveal() != "m" {
		t.Fatal("the mirror's own document was not selected")
	}
	if _, ok := SelectNamed(docs, "other.corp"); ok {
		t.Fatal("a registry-less document was given to a mirror")
	}
	if d, ok := Select(docs, "other.corp"); !ok || d.Get(KeyUsername).Reveal() != "u" {
		t.Fatal("Select lost the registry-less document for the image's registry")
	}
}

// Identity is the full sha256 of the credential: stable across forms and
// key orders, distinct per credential, registry and tier.
func TestIdentity(t *testing.T) {
	doc := func(text string) Document {
		d, err := Parse("x", text, "")
		if err != nil {
			t.Fatal(err)
		}
		return d[0]
	}
	a := doc(`{"USERNAME":"u","PASSWORD":"p1"}`)
	id := a.Identity()
	if !strings.HasPrefix(id, "sha256:") || len(id) != len("sha256:")+64 {
		t.Fatalf("identity form %q", id)
	}
	for _, other := range []string{`{"USERNAME":"u","PASSWORD":"p2"}`, `{"USERNAME":"v","PASSWORD":"p1"}`, `{"registry":"x.io","USERNAME":"u","PASSWORD":"p1"}`} {
		if doc(other).Identity() == id {
			t.Errorf("%s shares an identity with another credential", other)
		}
	}
	if id != doc("u:p1").Identity() || id != doc(`{"PASSWORD":"p1","USERNAME":"u"}`).Identity() {
		t.Error("the same credential in two forms has two identities")
	}
	if doc(`{"USERNAME":"u","PASSWORD":"p2"}`).Identity() == id {
		t.Error("two credentials share an identity")
	}
	node := a
	node.Node = true
	if node.Identity() == id || len(node.Identity()) != len(id) {
		t.Errorf("a node document shares the pod document's identity (%q)", node.Identity())
	}
}
