package imagecreds

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"filippo.io/age"
	"github.com/containerd/errdefs"

	"github.com/beam-cloud/b9-resolver/internal/keychain/document"
	"github.com/beam-cloud/b9-resolver/internal/sealed"
)

const canary = "CANARY-imagecreds-9c1d"

// A control plane imports this package without containerd, the cloud
// SDKs or the plugin's metrics.
func TestDependencies(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	for _, dep := range strings.Fields(string(out)) {
		for _, banned := range []string{
			"github.com/containerd/containerd", "github.com/aws/", "cloud.google.com/", "golang.org/x/oauth2",
			"github.com/Azure/", "google.golang.org/grpc", "github.com/beam-cloud/b9-resolver/internal/metrics",
			"github.com/beam-cloud/b9-resolver/internal/keychain/aws", "github.com/beam-cloud/b9-resolver/internal/keychain/gcp",
			"github.com/beam-cloud/b9-resolver/internal/keychain/azure", "github.com/beam-cloud/b9-resolver/plugin",
		} {
			if strings.HasPrefix(dep, banned) {
				t.Errorf("imagecreds depends on %s", dep)
			}
		}
	}
}

// What FromContainerRequest writes, the node reads back: same documents,
// same precedence.
func TestFromContainerRequestPrecedence(t *testing.T) {
	const ecr = "123456789012.dkr.ecr.us-east-1.amazonaws.com"
	envelope := `{"credentials":{"AWS_ACCESS_KEY_ID":"AKIA1","AWS_SECRET_ACCESS_KEY":"` + canary + `"},"registry":"` + ecr + `","type":"aws"}`
	cases := []struct {
		name     string
		creds    string
		opts     []Option
		wantKeys []string
		// host → the annotation whose document the node picks for it
		pick map[string]string
	}{
		{"envelope only", envelope, nil, []string{"b9.beam.cloud/image-credentials"}, map[string]string{ecr: "b9.beam.cloud/image-credentials"}},
		{"named, own prefix", "robot:" + canary, []Option{WithName("app"), WithPrefix("example.com/")}, []string{"example.com/image-credentials.app"}, nil},
		{"build registry beside", envelope, []Option{WithBuildRegistryCredentials("build.internal:5000", "AWS:"+canary)},
			[]string{"b9.beam.cloud/image-credentials", "b9.beam.cloud/image-credentials.build-registry"},
			map[string]string{ecr: "b9.beam.cloud/image-credentials", "build.internal:5000": "b9.beam.cloud/image-credentials.build-registry"}},
		// The runtime secret already covers the build registry: beta9 uses
		// it first, and so must the node.
		{"runtime secret covers the build registry", "robot:" + canary,
			[]Option{WithImage("build.internal:5000/ws/app:v1"), WithBuildRegistryCredentials("build.internal:5000", "AWS:x"+canary)},
			[]string{"b9.beam.cloud/image-credentials"}, map[string]string{"build.internal:5000": "b9.beam.cloud/image-credentials"}},
		{"source image", "", []Option{WithSourceImageCredentials("docker.io/library/ubuntu:22.04", "hubuser:"+canary)},
			[]string{"b9.beam.cloud/image-credentials.source-image"}, map[string]string{"docker.io": "b9.beam.cloud/image-credentials.source-image"}},
		{"build before source for one host", "", []Option{WithBuildRegistryCredentials("ghcr.io", "bot:"+canary), WithSourceImageCredentials("ghcr.io/acme/base", "other:"+canary)},
			[]string{"b9.beam.cloud/image-credentials.build-registry"}, map[string]string{"ghcr.io": "b9.beam.cloud/image-credentials.build-registry"}},
		{"nothing", "", nil, nil, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ann, err := FromContainerRequest(c.creds, c.opts...)
			if err != nil {
				t.Fatal(err)
			}
			if len(ann) != len(c.wantKeys) {
				t.Fatalf("annotations %v, want keys %v", keys(ann), c.wantKeys)
			}
			prefix := DefaultPrefix
			for _, k := range c.wantKeys {
				if _, ok := ann[k]; !ok {
					t.Errorf("no %s in %v", k, keys(ann))
				}
				prefix = k[:strings.Index(k, "/")+1]
			}
			for host, want := range c.pick {
				docs, err := document.FromAnnotations(ann, prefix, host)
				if err != nil {
					t.Fatal(err)
				}
				d, ok := document.Select(docs, host)
				if !ok || d.Source != "annotation "+want {
					t.Errorf("node picks %q for %s, want %s", d.Source, host, want)
				}
			}
		})
	}
}

func keys(m map[string]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

func TestFromContainerRequestRefuses(t *testing.T) {
	r := mustIdentity(t).Recipient().String()
	for _, c := range []struct {
		name  string
		creds string
		opts  []Option
		text  string
	}{
		{"bad document", `{"type":"aws","credentials":{"AWS_ACCESS_KEY_ID":"` + canary + `"}}`, nil, "annotation b9.beam.cloud/image-credentials: field credentials.AWS_SECRET_ACCESS_KEY"},
		{"bad name", "u:" + canary, []Option{WithName("Has_Caps")}, "credential name"},
		{"bad prefix", "u:" + canary, []Option{WithPrefix("nope")}, "prefix"},
		{"bad image", "u:" + canary, []Option{WithImage("UPPER/Case::")}, "image"},
		{"bad build registry", "", []Option{WithBuildRegistryCredentials("not a host", "u:"+canary)}, "build registry"},
		{"build creds naming another registry", "", []Option{WithBuildRegistryCredentials("build.internal", `{"registry":"ghcr.io","GITHUB_TOKEN":"`+canary+`"}`)}, "names another registry"},
		{"build creds without knowing the image", "u:" + canary, []Option{WithBuildRegistryCredentials("build.internal", "AWS:"+canary)}, "WithImage"},
		{"seal to nobody", "u:" + canary, []Option{WithSealing(nil, "ns", time.Time{})}, "no recipients"},
		{"seal to a bad namespace", "u:" + canary, []Option{WithSealing([]string{r}, "Bad NS", time.Time{})}, "namespace"},
	} {
		_, err := FromContainerRequest(c.creds, c.opts...)
		if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), c.text) {
			t.Errorf("%s: %v, want InvalidArgument saying %q", c.name, err, c.text)
		}
		if err != nil && strings.Contains(err.Error(), canary) {
			t.Errorf("%s: error quotes a secret: %v", c.name, err)
		}
	}
}

// Validate gives the node's text: the same parser.
func TestValidateIsTheNodesParser(t *testing.T) {
	for _, v := range []string{
		`{"type":"gcp","credentials":{"AWS_SECRET_ACCESS_KEY":"` + canary + `"}}`,
		`{"registry":"bad host!","USERNAME":"u","PASSWORD":"p"}`,
		"no-colon-" + canary, `[]`, `{"type":"weird"}`,
	} {
		want := func() error {
			_, err := document.FromAnnotations(map[string]string{"b9.beam.cloud/image-credentials.x": v}, "", "")
			return err
		}()
		got := Validate(v, WithName("x"))
		if want == nil || got == nil || got.Error() != want.Error() {
			t.Errorf("Validate(%.30q) = %v, node says %v", v, got, want)
		}
	}
	// A sealed value is checked by form: truncated is refused.
	id := mustIdentity(t)
	v, err := Seal("robot:"+canary, []string{id.Recipient().String()}, "ns", time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	if err := Validate(v); err != nil {
		t.Errorf("sealed value: %v", err)
	}
	if err := Validate(v[:len(v)/3]); !errdefs.IsInvalidArgument(err) {
		t.Errorf("truncated sealed value: %v", err)
	}
}

// Sealed annotations open on a node holding the identity, for the pod's
// namespace only, and carry the same documents.
func TestSealedRoundTrip(t *testing.T) {
	id := mustIdentity(t)
	p := filepath.Join(t.TempDir(), "node.key")
	os.WriteFile(p, []byte(id.String()+"\n"), 0o600)
	// A node wants root's files; the test's own uid stands in for root.
	kr, err := sealed.NewKeyring([]string{p}, sealed.WithOwners(uint32(os.Geteuid())))
	if err != nil {
		t.Fatal(err)
	}
	ann, err := FromContainerRequest(`{"registry":"ghcr.io","credentials":{"GITHUB_TOKEN":"`+canary+`"}}`,
		WithBuildRegistryCredentials("build.internal", "AWS:"+canary),
		WithSealing([]string{id.Recipient().String()}, "ws-42", time.Now().Add(time.Hour)))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range ann {
		if !strings.HasPrefix(v, "age:") || strings.Contains(v, canary) {
			t.Errorf("%s is not sealed", k)
		}
	}
	docs, err := document.FromAnnotations(ann, "", "ghcr.io", document.WithUnsealer(kr, "ws-42"), document.RequireSealed(true))
	if err != nil || len(docs) != 2 {
		t.Fatalf("node reads %d documents, %v", len(docs), err)
	}
	if d, _ := document.Select(docs, "build.internal"); d.Get(document.KeyPassword).Reveal() != canary || d.Get(document.KeyUsername).Reveal() != "AWS" {
		t.Errorf("build registry document lost its credential")
	}
	if _, err := document.FromAnnotations(ann, "", "ghcr.io", document.WithUnsealer(kr, "other")); !errdefs.IsPermissionDenied(err) {
		t.Errorf("other namespace: %v", err)
	}
}

func mustIdentity(t *testing.T) *age.X25519Identity {
	t.Helper()
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// A value sealed elsewhere passes through as it is, and build-time
// credentials for the image's registry do not outrank it.
func TestSealedImageCredentialsPassThrough(t *testing.T) {
	v, err := Seal("robot:"+canary, []string{mustIdentity(t).Recipient().String()}, "ns", time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	ann, err := FromContainerRequest(v, WithImage("build.internal:5000/ws/app:v1"),
		WithBuildRegistryCredentials("build.internal:5000", "AWS:"+canary),
		WithSourceImageCredentials("ghcr.io/acme/base", "bot:"+canary))
	if err != nil {
		t.Fatal(err)
	}
	if ann[DefaultPrefix+Name] != v || len(ann) != 2 || ann[DefaultPrefix+Name+"."+SourceImageName] == "" {
		t.Errorf("annotations %v: want the sealed value as it is and the source image's only", keys(ann))
	}
}
