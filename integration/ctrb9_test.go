package integration

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/beam-cloud/b9-resolver/internal/secret"
	"github.com/beam-cloud/b9-resolver/internal/testutil/registrytest"
)

var ctrB9Build builtOnce

// ctrB9Binary builds bin/ctr-b9 once per run.
func ctrB9Binary(t testing.TB) string {
	t.Helper()
	return ctrB9Build.get(t, "ctr-b9", func() (string, error) {
		bin := filepath.Join(moduleRoot, "bin", "ctr-b9")
		cmd := exec.Command("go", "build", "-o", bin, "./cmd/ctr-b9")
		cmd.Dir = moduleRoot
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			return "", fmt.Errorf("go build ./cmd/ctr-b9: %v\n%s", err, out)
		}
		return bin, nil
	})
}

type cliResult struct {
	status         int
	stdout, stderr string
}

// ctrB9 runs the ctr-b9 binary against the node's sockets.
func (n *node) ctrB9(args ...string) cliResult {
	n.t.Helper()
	bin := ctrB9Binary(n.t)
	full := append([]string{"--address", n.containerd, "--b9-address", n.b9}, args...)
	cmd := exec.Command(bin, full...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	r := cliResult{stdout: out.String(), stderr: errOut.String()}
	if ee, ok := err.(*exec.ExitError); ok {
		r.status = ee.ExitCode()
	} else if err != nil {
		n.t.Fatal(err)
	}
	n.mu.Lock()
	n.outputs = append(n.outputs, r.stdout, r.stderr)
	n.mu.Unlock()
	return r
}

// TestCtrB9AgainstNode drives every ctr-b9 command against containerd-b9
// and a registry with auth: pull (plain and on a terminal), check, creds,
// cache ls, version — with canary secrets that must appear nowhere.
func TestCtrB9AgainstNode(t *testing.T) {
	pass := canary("ctr")
	reg := registrytest.Start(t, registrytest.WithTokenAuth(), registrytest.WithUser("alice", pass, "team/app", "team/tty"))
	img := reg.PushRandomImage(t, "team/app", "v1", "alice", pass)
	tty := reg.PushRandomImage(t, "team/tty", "v1", "alice", pass)
	// A state dir gives the plugin a node key, which keys its fingerprints;
	// ctr-b9 given the same key shows the same ones.
	stateDir := t.TempDir()
	n := newNode(t, nodeConfig{plugin: "state_dir = '" + stateDir + "'"})
	doc := `{"registry":"` + reg.Host + `","credentials":{"USERNAME":"alice","PASSWORD":"` + pass + `"}}`

	t.Run("pull plain", func(t *testing.T) {
		r := n.ctrB9("pull", "--snapshotter", "native", "--document", doc, img.Ref)
		if r.status != 0 {
			t.Fatalf("pull: %d %s", r.status, r.stderr)
		}
		if !strings.Contains(r.stdout, "digest: "+img.Digest) || !strings.Contains(r.stdout, "pulled "+img.Ref) {
			t.Errorf("pull output lacks the digest/ref:\n%s", r.stdout)
		}
		for _, l := range img.Layers {
			if !strings.Contains(r.stdout, l[len("sha256:"):][:12]) && !strings.Contains(r.stdout, l) {
				t.Errorf("no progress line for layer %s:\n%s", l, r.stdout)
			}
		}
		if strings.Contains(r.stdout, "\x1b[") {
			t.Errorf("escape codes in non-terminal output:\n%q", r.stdout)
		}
		if !n.listedByCRI(img.Ref) {
			t.Error("CRI does not list the image ctr-b9 pulled into k8s.io")
		}
	})

	t.Run("pull on a terminal", func(t *testing.T) {
		// script(1) runs the command on a pseudo-terminal.
		bin := ctrB9Binary(t)
		command := strings.Join([]string{bin, "--address", n.containerd, "pull", "--snapshotter", "native", "--document", shellQuote(doc), tty.Ref}, " ")
		out, err := exec.Command("script", "-qec", command, "/dev/null").CombinedOutput()
		if err != nil {
			t.Fatalf("pull under script: %v\n%s", err, out)
		}
		s := string(out)
		if strings.Contains(s, pass) {
			t.Fatal("terminal output carries the secret")
		}
		if !strings.Contains(s, "\x1b[") || !strings.Contains(s, "elapsed:") || !strings.Contains(s, "total:") {
			t.Errorf("no ctr-style progress table on the terminal:\n%q", s)
		}
		if !strings.Contains(s, "digest: "+tty.Digest) {
			t.Errorf("no digest:\n%q", s)
		}
	})

	t.Run("pull wrong password", func(t *testing.T) {
		r := n.ctrB9("pull", "--snapshotter", "native", "--creds", "alice:wrong-"+pass, img.Ref)
		if r.status != 1 || strings.Count(strings.TrimSpace(r.stderr), "\n") != 0 || !strings.Contains(r.stderr, reg.Host) {
			t.Fatalf("status %d, stderr %q", r.status, r.stderr)
		}
	})

	t.Run("check", func(t *testing.T) {
		r := n.ctrB9("check", "-o", "json", "--document", doc, img.Ref)
		var res struct {
			OK    bool `json:"ok"`
			Steps []struct{ Name, Status string }
		}
		if err := json.Unmarshal([]byte(r.stdout), &res); err != nil || r.status != 0 || !res.OK || len(res.Steps) != 8 {
			t.Fatalf("check: %d %s %s", r.status, r.stdout, r.stderr)
		}
		r = n.ctrB9("check", "--creds", "alice:nope", img.Ref)
		if r.status != 1 || !strings.Contains(r.stderr, "wrong username or password") {
			t.Fatalf("check wrong password: %d %q", r.status, r.stderr)
		}
	})

	t.Run("creds and cache ls after a pod pull", func(t *testing.T) {
		mustSucceed(t, n.pull(n.b9, img.Ref, map[string]string{"b9.beam.cloud/image-credentials": doc}), "crictl pull")
		r := n.ctrB9("cache", "ls", "-o", "json")
		var out struct {
			Entries []struct {
				Host, Source, Fingerprint string
				ExpiresAt                 string `json:"expires_at"`
			}
		}
		if err := json.Unmarshal([]byte(r.stdout), &out); err != nil || r.status != 0 {
			t.Fatalf("cache ls: %d %s %s", r.status, r.stdout, r.stderr)
		}
		found := false
		for _, e := range out.Entries {
			if e.Host == reg.Host && e.Source == "annotation b9.beam.cloud/image-credentials" && strings.HasPrefix(e.Fingerprint, secret.FingerprintPrefix) {
				found = true
			}
		}
		if !found {
			t.Fatalf("the pod's credential is not in the plugin's cache: %s", r.stdout)
		}
		c := n.ctrB9("creds", "-o", "json", "--node-key", filepath.Join(stateDir, "node.key"), "--document", doc, img.Ref)
		var cr struct{ Fingerprint string }
		json.Unmarshal([]byte(c.stdout), &cr)
		if cr.Fingerprint == "" || !strings.Contains(r.stdout, cr.Fingerprint) {
			t.Errorf("creds --node-key fingerprint %q not the cached one:\n%s", cr.Fingerprint, r.stdout)
		}
		// Without the node key the fingerprint is keyed for that run only.
		c = n.ctrB9("creds", "-o", "json", "--document", doc, img.Ref)
		var once struct {
			Fingerprint string
			Key         string `json:"fingerprint_key"`
		}
		json.Unmarshal([]byte(c.stdout), &once)
		if once.Key != "invocation" || once.Fingerprint == "" || strings.Contains(r.stdout, once.Fingerprint) {
			t.Errorf("creds without --node-key: %s", c.stdout)
		}
	})

	t.Run("version", func(t *testing.T) {
		r := n.ctrB9("version")
		if r.status != 0 || !strings.Contains(r.stdout, "containerd 2.4") {
			t.Fatalf("%+v", r)
		}
	})

	n.assertNoSecrets(pass)
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }
