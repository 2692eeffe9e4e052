package main

import (
	"encoding/json"
	"strings"
	"testing"

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
