package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/beam-cloud/b9-resolver/internal/sealed"
)

// withStdin runs fn with os.Stdin reading text.
func withStdin(t *testing.T, text string, fn func()) {
	t.Helper()
	f := writeFile(t, "stdin", text)
	in, err := os.Open(f)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	old := os.Stdin
	os.Stdin = in
	defer func() { os.Stdin = old }()
	fn()
}

// keygen writes a 0600 identity and prints its recipient; seal turns a
// document into an annotation value creds opens with --identity, for the
// pod's namespace only. No step prints the secret.
func TestKeygenSealCreds(t *testing.T) {
	dir := t.TempDir()
	key := filepath.Join(dir, "node.key")
	r := ctrB9(t, "keygen", key)
	if r.status != 0 {
		t.Fatalf("keygen: %d %s", r.status, r.stderr)
	}
	recipient := strings.TrimSpace(r.stdout)
	if !strings.HasPrefix(recipient, "age1") || !strings.Contains(r.stderr, sealed.RecipientFingerprint(recipient)) {
		t.Fatalf("keygen printed %q / %q", r.stdout, r.stderr)
	}
	fi, err := os.Stat(key)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("identity file: %v %v", fi.Mode(), err)
	}
	b, _ := os.ReadFile(key)
	if strings.Contains(r.stdout+r.stderr, strings.TrimSpace(string(b[strings.LastIndex(string(b), "AGE-SECRET-KEY"):]))) {
		t.Error("keygen printed the secret key")
	}
	if r := ctrB9(t, "keygen", key); r.status != 1 || !strings.Contains(r.stderr, "exists") {
		t.Errorf("keygen over an existing file: %+v", r)
	}
	if r := ctrB9(t, "keygen", "-o", "json", filepath.Join(dir, "second.key")); r.status != 0 || !strings.Contains(r.stdout, `"fingerprint": "sha256:`) {
		t.Errorf("keygen -o json: %+v", r)
	}

	doc := `{"registry":"nvcr.io","credentials":{"NGC_API_KEY":"` + canary + `"}}`
	var value, line string
	withStdin(t, doc, func() {
		r = ctrB9(t, "seal", "--recipient", recipient, "--namespace", "team-a", "--not-after", "1h")
	})
	if r.status != 0 || !strings.HasPrefix(r.stdout, "age:") {
		t.Fatalf("seal: %+v", r)
	}
	value = strings.TrimSpace(r.stdout)
	withStdin(t, doc, func() {
		r = ctrB9(t, "seal", "-r", recipient, "--namespace", "team-a", "--annotation", "--name", "ngc")
	})
	line = strings.TrimSpace(r.stdout)
	if r.status != 0 || !strings.HasPrefix(line, "b9.beam.cloud/image-credentials.ngc: age:") {
		t.Fatalf("seal --annotation: %+v", r)
	}

	pod := func(ns string) string {
		b, _ := json.Marshal(map[string]any{"metadata": map[string]string{"name": "p", "namespace": ns},
			"annotations": map[string]string{"b9.beam.cloud/image-credentials": value}})
		return writeFile(t, "pod-"+ns+".json", string(b))
	}
	r = ctrB9(t, "creds", "-o", "json", "--pod-config", pod("team-a"), "--identity", key, "nvcr.io/nvidia/pytorch:24.01-py3")
	if r.status != 0 || !strings.Contains(r.stdout, `"provider": "token/ngc"`) || !strings.Contains(r.stdout, `"sealed": true`) {
		t.Fatalf("creds with a sealed annotation: %+v", r)
	}
	for _, c := range []struct {
		name string
		args []string
		text string
	}{
		{"other namespace", []string{"--pod-config", pod("team-b"), "--identity", key}, "sealed for another namespace than the pod's (team-b)"},
		{"no identity", []string{"--pod-config", pod("team-a")}, "no identity to open it"},
		{"wrong identity", []string{"--pod-config", pod("team-a"), "--identity", filepath.Join(dir, "second.key")}, "none of them opens it"},
		{"document flag, namespace given", []string{"--document", value, "--identity", key, "--pod-namespace", "team-b"}, "another namespace"},
		{"plain under --require-sealed", []string{"--document", "robot:" + canary, "--identity", key, "--require-sealed"}, "sealed.require"},
	} {
		r := ctrB9(t, append(append([]string{"creds"}, c.args...), "nvcr.io/nvidia/pytorch:24.01-py3")...)
		if r.status != 1 || !strings.Contains(r.stderr, c.text) {
			t.Errorf("%s: status %d, %q; want %q", c.name, r.status, r.stderr, c.text)
		}
	}
	// A loose identity file is refused.
	os.Chmod(key, 0o644)
	if r := ctrB9(t, "creds", "--pod-config", pod("team-a"), "--identity", key, "nvcr.io/x"); r.status != 1 || !strings.Contains(r.stderr, "mode 0644") {
		t.Errorf("0644 identity: %+v", r)
	}
}

func TestSealUsage(t *testing.T) {
	for _, c := range []struct {
		name  string
		args  []string
		stdin string
		text  string
	}{
		{"no recipient", []string{"seal", "--namespace", "a"}, "u:p", "at least one --recipient"},
		{"no namespace", []string{"seal", "-r", "age1x"}, "u:p", "namespace"},
		{"secret key as recipient", []string{"seal", "-r", "AGE-SECRET-KEY-1" + canary, "--namespace", "a"}, "u:p", "identity (secret key)"},
		{"bad not-after", []string{"seal", "-r", "age1x", "--namespace", "a", "--not-after", "tomorrow"}, "u:p", "--not-after"},
		{"past not-after", []string{"seal", "-r", "age1x", "--namespace", "a", "--not-after", "2001-01-01T00:00:00Z"}, "u:p", "in the past"},
		{"empty stdin", []string{"seal", "-r", "age1x", "--namespace", "a"}, "", "no document"},
		{"keygen to stdout", []string{"keygen", "-"}, "", "never to stdout"},
	} {
		var r result
		withStdin(t, c.stdin, func() { r = ctrB9(t, c.args...) })
		if r.status != 2 || !strings.Contains(r.stderr, c.text) {
			t.Errorf("%s: status %d %q, want 2 and %q", c.name, r.status, r.stderr, c.text)
		}
	}
	// A bad document is refused with the node's message (exit 1).
	var r result
	withStdin(t, `{"type":"aws","credentials":{"AWS_ACCESS_KEY_ID":"`+canary+`"}}`, func() {
		r = ctrB9(t, "seal", "-r", "age1prjswwx8kqx2khh9xxexz53p2c3nn3pp6rmxzcxvqaqxu04s43ds5hpwe2", "--namespace", "a")
	})
	if r.status != 1 || !strings.Contains(r.stderr, "AWS_SECRET_ACCESS_KEY: missing") {
		t.Errorf("bad document: %+v", r)
	}
}
