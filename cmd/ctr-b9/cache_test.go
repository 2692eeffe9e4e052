package main

import (
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/beam-cloud/b9-resolver/internal/testutil/asuser"
	"github.com/beam-cloud/b9-resolver/plugin/credentials"
	"github.com/beam-cloud/b9-resolver/plugin/credentials/credtest"
)

func TestCacheLs(t *testing.T) {
	env := credtest.Start(t, credentials.Config{})
	ref := env.Pull(t, "registry.example.com:5000", "team/app", `{"USERNAME":"robot","PASSWORD":"`+canary+`"}`)

	r := ctrB9(t, "--b9-address", env.Addr, "cache", "ls", "-o", "json")
	if r.status != 0 {
		t.Fatalf("status %d: %s", r.status, r.stderr)
	}
	var out struct {
		Entries []cacheEntry `json:"entries"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &out); err != nil {
		t.Fatal(err)
	}
	if len(out.Entries) != 1 {
		t.Fatalf("%d entries: %s", len(out.Entries), r.stdout)
	}
	e := out.Entries[0]
	if e.Host != "registry.example.com:5000" || e.Type != "basic" || e.Source != "annotation b9.beam.cloud/image-credentials" ||
		!strings.HasPrefix(e.Fingerprint, "sha256:") || e.CredentialRef != ref {
		t.Fatalf("entry %+v (ref %s)", e, ref)
	}
	var raw map[string][]map[string]any
	json.Unmarshal([]byte(r.stdout), &raw)
	for _, f := range []string{"host", "kind", "source", "fingerprint", "expires_at"} {
		if _, ok := raw["entries"][0][f]; !ok {
			t.Errorf("json lacks %q", f)
		}
	}

	r = ctrB9(t, "--b9-address", env.Addr, "cache", "ls")
	if r.status != 0 || !strings.Contains(r.stdout, "registry.example.com:5000") || !strings.Contains(r.stdout, "never") {
		t.Fatalf("text: %+v", r)
	}

	r = ctrB9(t, "--b9-address", t.TempDir()+"/none.sock", "cache", "ls")
	if r.status != 1 || !strings.Contains(r.stderr, "not serving on") {
		t.Fatalf("no plugin: %+v", r)
	}
}

// A user who cannot open the root-only b9 socket is told so, and how to
// reach the service (not that the plugin is down).
func TestCacheLsAsNonRoot(t *testing.T) {
	asuser.RequireRoot(t)
	env := credtest.Start(t, credentials.Config{})
	cmd := asuser.Command(t, 65534, 65534, "--b9-address", env.Addr, "cache", "ls")
	cmd.Env = append(os.Environ(), "CTR_B9_AS_MAIN=1")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Fatalf("as uid 65534: %v, want exit status 1", err)
	}
	if msg := stderr.String(); !strings.Contains(msg, "root-only") || !strings.Contains(msg, "credentials_address") {
		t.Fatalf("as uid 65534: %q, want the socket's permissions explained", msg)
	}
}
