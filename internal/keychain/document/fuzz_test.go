package document

import (
	"strings"
	"testing"

	"github.com/containerd/errdefs"
)

func FuzzParse(f *testing.F) {
	for _, s := range []string{
		`{"registry":"ghcr.io","type":"token","credentials":{"GITHUB_TOKEN":"t"}}`,
		`[{"registry":"nvcr.io","credentials":{"NGC_API_KEY":"k"}},{"USERNAME":"u","PASSWORD":"p"}]`,
		`{"AWS_ACCESS_KEY_ID":"a","AWS_SECRET_ACCESS_KEY":"s","AWS_REGION":"us-east-1"}`,
		`{"GOOGLE_APPLICATION_CREDENTIALS":"e30="}`,
		`{"AZURE_CLIENT_ID":"i","AZURE_CLIENT_SECRET":"s","AZURE_TENANT_ID":"t"}`,
		"user:pass", ":", "{", "[", `{"credentials":null}`, `{"type":"PUBLIC"}`, "\xff",
	} {
		f.Add(s, "")
		f.Add(s, "123456789012.dkr.ecr.us-east-1.amazonaws.com")
	}
	f.Fuzz(func(t *testing.T, text, host string) {
		docs, err := Parse("annotation k", text, host)
		if err != nil {
			if !errdefs.IsInvalidArgument(err) {
				t.Fatalf("error %v is not InvalidArgument", err)
			}
			if !strings.Contains(err.Error(), "annotation k") {
				t.Fatalf("error %q does not name the source", err)
			}
			// No value of the input may come back: check every string
			// value long enough to be recognisable.
			for _, v := range candidateValues(text) {
				if strings.Contains(err.Error(), v) {
					t.Fatalf("error %q echoes input %q", err, v)
				}
			}
			return
		}
		if len(docs) == 0 || len(docs) > MaxDocuments {
			t.Fatalf("%d documents", len(docs))
		}
		for _, d := range docs {
			if !validType(d.Type) || d.Identity() == "" {
				t.Fatalf("document %+v", d)
			}
			for k, v := range d.Keys {
				if !KnownKey(k) || v.IsZero() {
					t.Fatalf("key %q kept", k)
				}
			}
		}
	})
}

func FuzzFromAnnotations(f *testing.F) {
	f.Add("b9.beam.cloud/image-credentials", "u:p", "b9.beam.cloud/image-credentials.x", `{"USERNAME":"a","PASSWORD":"b"}`)
	f.Add("b9.beam.cloud/image-credentials.", "u:p", "other", "{")
	f.Add("b9.beam.cloud/image-credentials", "age:YWdl", "b9.beam.cloud/image-credentials.x", "age:")
	f.Fuzz(func(t *testing.T, k1, v1, k2, v2 string) {
		docs, err := FromAnnotations(map[string]string{k1: v1, k2: v2}, "", "docker.io")
		if err != nil {
			// A sealed value with no identity to open it is FailedPrecondition.
			if !(errdefs.IsInvalidArgument(err) || errdefs.IsFailedPrecondition(err) && (IsSealed(v1) || IsSealed(v2))) || !strings.Contains(err.Error(), "annotation ") {
				t.Fatalf("error %v", err)
			}
			return
		}
		for _, d := range docs {
			if !strings.HasPrefix(d.Source, "annotation "+DefaultAnnotationPrefix+AnnotationName) {
				t.Fatalf("document from %q", d.Source)
			}
		}
	})
}

// candidateValues pulls the quoted strings and user:pass halves out of a
// fuzz input, for the no-echo check. Short strings are skipped: they occur
// in any message by chance.
func candidateValues(text string) []string {
	var out []string
	for _, part := range strings.Split(text, `"`) {
		if len(part) >= 12 && !strings.ContainsAny(part, "{}[]") && part != strings.ToUpper(part) {
			out = append(out, part)
		}
	}
	if u, p, ok := strings.Cut(text, ":"); ok && !strings.HasPrefix(strings.TrimSpace(text), "{") && !strings.HasPrefix(strings.TrimSpace(text), "[") {
		if len(p) >= 12 {
			out = append(out, p)
		}
		_ = u
	}
	return out
}
