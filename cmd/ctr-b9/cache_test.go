package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/beam-cloud/b9-resolver/internal/keychain"
	"github.com/beam-cloud/b9-resolver/internal/keychain/document"
	"github.com/beam-cloud/b9-resolver/internal/secret"
	"github.com/beam-cloud/b9-resolver/internal/testutil/asuser"
	"github.com/beam-cloud/b9-resolver/internal/testutil/keychaintest"
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
		!strings.HasPrefix(e.Fingerprint, secret.FingerprintPrefix) || e.CredentialRef != ref {
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

// nodeKeyedEnv serves the Credentials service as the plugin does with a
// state dir: refs and fingerprints keyed from the node key it creates.
func nodeKeyedEnv(t *testing.T) (*credtest.Env, string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "state")
	st, err := credentials.NewStore(context.Background(), credentials.StoreConfig{StateDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	kc := keychaintest.New(t, keychain.WithRefKey(st.RefKey()), keychain.WithFingerprintKey(st.FingerprintKey()))
	t.Cleanup(kc.Close)
	return credtest.Start(t, credentials.Config{Keychain: kc, Store: st}), filepath.Join(dir, credentials.KeyFileName)
}

// unkeyedHashes are what fingerprints used to show for password in doc:
// 12 hex digits of unsalted sha256s anyone can compute for a guess.
func unkeyedHashes(t *testing.T, doc, password string) []string {
	t.Helper()
	d, err := document.Parse("x", doc, "")
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.Sum256([]byte(fmt.Sprintf("%d:%s", len(password), password)))
	return []string{hex.EncodeToString(h[:])[:12], strings.TrimPrefix(d[0].Identity(), "sha256:")[:12]}
}

// Fingerprints are HMACs: ctr-b9 creds with the node key shows what
// cache ls (ListCredentials) shows; without it a per-invocation key that
// the output names, different on every run; another node key gives
// other fingerprints for the same password; and the old unsalted hash of
// the password appears in no output.
func TestFingerprintsKeyedByNodeKey(t *testing.T) {
	const host, password = "registry.example.com:5000", canary
	doc := `{"USERNAME":"robot","PASSWORD":"` + password + `"}`
	envA, keyA := nodeKeyedEnv(t)
	envB, keyB := nodeKeyedEnv(t)
	envA.Pull(t, host, "team/app", doc)
	envB.Pull(t, host, "team/app", doc)

	var outputs []string
	cacheFP := func(env *credtest.Env) string {
		t.Helper()
		r := ctrB9(t, "--b9-address", env.Addr, "cache", "ls", "-o", "json")
		text := ctrB9(t, "--b9-address", env.Addr, "cache", "ls")
		outputs = append(outputs, r.stdout, r.stderr, text.stdout, text.stderr)
		var out struct{ Entries []cacheEntry }
		if err := json.Unmarshal([]byte(r.stdout), &out); err != nil || len(out.Entries) != 1 {
			t.Fatalf("cache ls: %v %s", err, r.stdout)
		}
		return out.Entries[0].Fingerprint
	}
	creds := func(args ...string) credsResult {
		t.Helper()
		args = append(append([]string{"creds", "--document", doc}, args...), host+"/team/app")
		r := ctrB9(t, append(args[:1:1], append([]string{"-o", "json"}, args[1:]...)...)...)
		text := ctrB9(t, args...)
		outputs = append(outputs, r.stdout, r.stderr, text.stdout, text.stderr)
		if r.status != 0 || text.status != 0 {
			t.Fatalf("creds %v: %s %s", args, r.stderr, text.stderr)
		}
		if !strings.Contains(text.stdout, "fingerprint key:") {
			t.Errorf("text output does not say what keys its fingerprints:\n%s", text.stdout)
		}
		var res credsResult
		if err := json.Unmarshal([]byte(r.stdout), &res); err != nil {
			t.Fatal(err)
		}
		return res
	}

	fpA, fpB := cacheFP(envA), cacheFP(envB)
	if !strings.HasPrefix(fpA, secret.FingerprintPrefix) || fpA == fpB {
		t.Fatalf("ListCredentials fingerprints under two node keys: %s %s", fpA, fpB)
	}
	withA := creds("--node-key", keyA)
	if withA.FingerprintKey != "node" || withA.Fingerprint != fpA {
		t.Errorf("creds --node-key shows %q (key %q), cache ls %q", withA.Fingerprint, withA.FingerprintKey, fpA)
	}
	if withB := creds("--node-key", keyB); withB.Fingerprint != fpB || withB.SecretFingerprint == withA.SecretFingerprint {
		t.Errorf("creds under node key B: %+v", withB)
	}
	once, twice := creds(), creds()
	if once.FingerprintKey != "invocation" || once.Fingerprint == "" || once.Fingerprint == twice.Fingerprint ||
		once.Fingerprint == fpA || once.SecretFingerprint == twice.SecretFingerprint {
		t.Errorf("without --node-key: %+v then %+v", once, twice)
	}

	r := ctrB9(t, "creds", "--node-key", filepath.Join(t.TempDir(), "absent"), "--document", doc, host+"/x")
	if r.status == 0 || !strings.Contains(r.stderr, "--node-key") {
		t.Errorf("a missing node key: %+v", r)
	}

	for _, h := range unkeyedHashes(t, doc, password) {
		for _, out := range outputs {
			if strings.Contains(out, h) {
				t.Fatalf("output shows the unsalted hash %s of the password:\n%s", h, out)
			}
		}
	}
}
