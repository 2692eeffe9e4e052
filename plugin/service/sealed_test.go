package service

import (
	"bytes"
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"filippo.io/age"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/beam-cloud/b9-resolver/internal/sealed"
)

// sealedNode writes a fresh identity file and returns its path and the
// identity.
func sealedNode(t *testing.T) (string, *age.X25519Identity) {
	t.Helper()
	id, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "node.key")
	if err := os.WriteFile(p, []byte(id.String()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p, id
}

func sealFor(t *testing.T, doc, ns string, notAfter time.Time, ids ...*age.X25519Identity) string {
	t.Helper()
	var rs []string
	for _, id := range ids {
		rs = append(rs, id.Recipient().String())
	}
	v, err := sealed.Seal(doc, rs, ns, notAfter)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func podReq(image, namespace string, annotations map[string]string) *runtime.PullImageRequest {
	r := pullReq(image, annotations, nil)
	r.SandboxConfig.Metadata = &runtime.PodSandboxMetadata{Name: "p", Namespace: namespace, Uid: "u"}
	return r
}

// The plugin opens a sealed annotation for the pod's namespace and
// forwards the credential inside; every refusal has its code, names the
// key and never the value or the plaintext.
func TestSealedAnnotations(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("identity files must be root-owned; run as root")
	}
	f := &fakeCRI{pull: func(*runtime.PullImageRequest) (*runtime.PullImageResponse, error) {
		return &runtime.PullImageResponse{ImageRef: "sha256:abc"}, nil
	}}
	keyFile, node := sealedNode(t)
	stranger, _ := age.GenerateX25519Identity()
	criSock := startFakeCRI(t, f)
	_, cli := startService(t, Config{ContainerdAddress: criSock, PullMode: PullForward,
		Sealed: Sealed{IdentityFiles: []string{keyFile}}})
	_, strict := startService(t, Config{ContainerdAddress: criSock, PullMode: PullForward,
		Sealed: Sealed{IdentityFiles: []string{keyFile}, Require: true}})
	_, none := startService(t, Config{ContainerdAddress: criSock, PullMode: PullForward})

	const image = "127.0.0.1:5000/team/app:v1"
	doc := `{"registry":"127.0.0.1:5000","type":"basic","credentials":{"USERNAME":"alice","PASSWORD":"` + canaryPass + `"}}`
	good := sealFor(t, doc, "team-a", time.Now().Add(time.Hour), stranger, node)
	key := annKey + ".sealed"

	before := len(f.pulls())
	if _, err := cli.PullImage(ctxT(t), podReq(image, "team-a", map[string]string{key: good})); err != nil {
		t.Fatalf("sealed annotation: %v", err)
	}
	got := f.pulls()[before]
	if got.GetAuth().GetUsername() != "alice" || got.GetAuth().GetPassword() != canaryPass {
		t.Errorf("forwarded auth user %q, want the sealed credential", got.GetAuth().GetUsername())
	}
	if _, ok := got.GetSandboxConfig().GetAnnotations()[key]; ok {
		t.Error("the sealed annotation was forwarded to containerd")
	}
	if _, err := strict.PullImage(ctxT(t), podReq(image, "team-a", map[string]string{key: good})); err != nil {
		t.Errorf("sealed annotation under sealed.require: %v", err)
	}

	for _, c := range []struct {
		name string
		cli  runtime.ImageServiceClient
		ns   string
		val  string
		code codes.Code
		text string
	}{
		{"another namespace", cli, "team-b", good, codes.PermissionDenied, "sealed for another namespace than the pod's (team-b)"},
		{"no namespace", cli, "", good, codes.PermissionDenied, "no pod namespace"},
		{"expired", cli, "team-a", sealFor(t, doc, "team-a", time.Now().Add(-time.Minute), node), codes.InvalidArgument, "expired"},
		{"sealed for another node", cli, "team-a", sealFor(t, doc, "team-a", time.Time{}, stranger), codes.FailedPrecondition,
			sealed.RecipientFingerprint(stranger.Recipient().String())},
		{"plain under require", strict, "team-a", "alice:" + canaryPass, codes.InvalidArgument, "sealed.require"},
		{"node without identities", none, "team-a", good, codes.FailedPrecondition, "no identity to open it"},
		{"truncated", cli, "team-a", good[:len(good)/2], codes.InvalidArgument, "sealed document"},
		{"bit flipped", cli, "team-a", flipLast(t, good), codes.InvalidArgument, "truncated or altered"},
		{"huge", cli, "team-a", "age:" + strings.Repeat("QUFB", 70<<10), codes.InvalidArgument, "more than the"},
		{"nested sealed", cli, "team-a", ageSeal(t, node, `{"v":1,"namespace":"team-a","document":"`+good+`"}`), codes.InvalidArgument, "a sealed document inside a sealed document"},
		{"wrong version", cli, "team-a", ageSeal(t, node, `{"v":2,"namespace":"team-a","document":"alice:`+canaryPass+`"}`), codes.InvalidArgument, "version 2 is not supported"},
	} {
		t.Run(c.name, func(t *testing.T) {
			before := len(f.pulls())
			_, err := c.cli.PullImage(ctxT(t), podReq(image, c.ns, map[string]string{key: c.val}))
			st := status.Convert(err)
			if st.Code() != c.code || !strings.Contains(st.Message(), c.text) || !strings.Contains(st.Message(), key) {
				t.Fatalf("%s: %s, want %s saying %q and naming %s", c.name, st.Message(), c.code, c.text, key)
			}
			if strings.Contains(st.Message(), canaryPass) || (len(c.val) > 40 && strings.Contains(st.Message(), c.val[10:40])) || strings.Contains(st.Message(), "team-a") {
				t.Errorf("message quotes the value, its plaintext or its namespace: %s", st.Message())
			}
			if len(f.pulls()) != before {
				t.Error("containerd was called for a refused annotation")
			}
		})
	}
}

func TestSealedConfig(t *testing.T) {
	for key, cfg := range map[string]Config{
		"sealed.identity_files[0]": {Sealed: Sealed{IdentityFiles: []string{"relative.key"}}},
		"sealed.require":           {Sealed: Sealed{Require: true}},
	} {
		if _, err := cfg.validate(); err == nil || !strings.Contains(err.Error(), key+":") {
			t.Errorf("%s: %v", key, err)
		}
	}
	// A file others can read stops the plugin at start, naming it.
	id, _ := age.GenerateX25519Identity()
	p := filepath.Join(t.TempDir(), "loose.key")
	os.WriteFile(p, []byte(id.String()+"\n"), 0o644)
	os.Chmod(p, 0o644)
	_, err := New(Config{Address: filepath.Join(shortDir(t), "b9.sock"), ContainerdAddress: "/nonexistent.sock",
		Sealed: Sealed{IdentityFiles: []string{p}}})
	if err == nil || !strings.Contains(err.Error(), "sealed.identity_files") || !strings.Contains(err.Error(), p+": mode 0644") {
		t.Errorf("0644 identity file: %v", err)
	}
	if err != nil && strings.Contains(err.Error(), id.String()) {
		t.Error("the error quotes the identity")
	}
}

// flipLast flips a bit of a sealed value's last ciphertext byte.
func flipLast(t *testing.T, v string) string {
	t.Helper()
	raw, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(v, "age:"))
	if err != nil {
		t.Fatal(err)
	}
	raw[len(raw)-1] ^= 1
	return "age:" + base64.StdEncoding.EncodeToString(raw)
}

// ageSeal encrypts any plaintext for id in the wire form, as a tool other
// than ours would (no recipient hints).
func ageSeal(t *testing.T, id *age.X25519Identity, plain string) string {
	t.Helper()
	var buf bytes.Buffer
	w, err := age.Encrypt(&buf, id.Recipient())
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte(plain))
	w.Close()
	return "age:" + base64.StdEncoding.EncodeToString(buf.Bytes())
}
