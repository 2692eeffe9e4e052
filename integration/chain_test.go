package integration

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/beam-cloud/b9-resolver/internal/testutil/registrytest"
)

// TestCredsAgreesWithPullForEveryTier: for each precedence tier — a pod's
// annotation document, PullImageRequest.auth, a node document, a node
// document file, a docker config.json auths entry and a docker credential
// helper — `ctr-b9 creds` names the credential a real crictl pull through
// the plugin presents. Each registry accepts only its own user, and the
// docker config also holds a wrong entry for the hosts a higher tier
// covers: a chain that let a lower tier win would show the wrong user in
// creds and fail the pull.
func TestCredsAgreesWithPullForEveryTier(t *testing.T) {
	binaries(t)
	type tier struct {
		name, user, pass string
		reg              *registrytest.Registry
		img              registrytest.Image
	}
	admin := canary("admin")
	tiers := map[string]*tier{}
	for _, name := range []string{"annotation", "auth", "nodedoc", "nodefile", "dockercfg", "helper"} {
		tr := &tier{name: name, user: "user-" + name, pass: canary(name)}
		tr.reg = registrytest.Start(t, registrytest.WithBasicAuth(),
			registrytest.WithUser(tr.user, tr.pass), registrytest.WithUser("admin", admin))
		tr.img = tr.reg.PushRandomImage(t, "tier/"+name, "v1", "admin", admin)
		tiers[name] = tr
	}
	dir := shortTempDir(t)

	// The docker credential helper, on the daemons' and ctr-b9's PATH.
	helper := tiers["helper"]
	script := fmt.Sprintf("#!/bin/sh\nread host\nif [ \"$host\" = %q ]; then echo '{\"Username\":%q,\"Secret\":%q}'; else echo 'credentials not found in native keychain'; exit 1; fi\n",
		helper.reg.Host, helper.user, helper.pass)
	if err := os.WriteFile(filepath.Join(dir, "docker-credential-b9chain"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	path := dir + string(os.PathListSeparator) + os.Getenv("PATH")
	t.Setenv("PATH", path)

	// The docker config: the right entry for its own tier (unpadded base64,
	// as some writers produce), the helper for the helper's host, and wrong
	// entries for every host a higher tier covers.
	unpadded := func(u, p string) string { return base64.RawStdEncoding.EncodeToString([]byte(u + ":" + p)) }
	auths := map[string]map[string]string{
		tiers["dockercfg"].reg.Host: {"auth": unpadded(tiers["dockercfg"].user, tiers["dockercfg"].pass)},
	}
	for _, higher := range []string{"annotation", "auth", "nodedoc", "nodefile"} {
		auths[tiers[higher].reg.Host] = map[string]string{"auth": unpadded("wrong", canary("wrong"))}
	}
	dockerCfg := filepath.Join(dir, "config.json")
	b, _ := json.Marshal(map[string]any{"auths": auths, "credHelpers": map[string]string{helper.reg.Host: "b9chain"}})
	if err := os.WriteFile(dockerCfg, b, 0o600); err != nil {
		t.Fatal(err)
	}
	nodeDoc := basicDoc(tiers["nodedoc"].reg.Host, tiers["nodedoc"].user, tiers["nodedoc"].pass)
	nodeFile := filepath.Join(dir, "node-doc.json")
	if err := os.WriteFile(nodeFile, []byte(basicDoc(tiers["nodefile"].reg.Host, tiers["nodefile"].user, tiers["nodefile"].pass)), 0o600); err != nil {
		t.Fatal(err)
	}
	n := newNode(t, nodeConfig{
		env: []string{"PATH=" + path},
		plugin: fmt.Sprintf("  [plugins.'io.containerd.grpc.v1.b9-resolver'.node_credentials]\n"+
			"    documents = ['%s']\n    document_files = ['%s']\n    docker_config = '%s'\n", nodeDoc, nodeFile, dockerCfg),
	})

	annDoc := basicDoc(tiers["annotation"].reg.Host, tiers["annotation"].user, tiers["annotation"].pass)
	authCreds := tiers["auth"].user + ":" + tiers["auth"].pass
	// The same inputs, as ctr-b9 flags and as the pull's.
	nodeFlags := []string{"--node-document", nodeDoc, "--node-document", "@" + nodeFile, "--docker-config", dockerCfg}
	for _, tc := range []struct {
		tier      string
		flags     []string
		ann       map[string]string
		pullExtra []string
	}{
		{"annotation", []string{"--document", annDoc}, map[string]string{"b9.beam.cloud/image-credentials": annDoc}, nil},
		{"auth", []string{"--creds", authCreds}, nil, []string{"--creds", authCreds}},
		{"nodedoc", nil, nil, nil},
		{"nodefile", nil, nil, nil},
		{"dockercfg", nil, nil, nil},
		{"helper", nil, nil, nil},
	} {
		t.Run(tc.tier, func(t *testing.T) {
			tr := tiers[tc.tier]
			args := append(append([]string{"creds", "-o", "json"}, tc.flags...), nodeFlags...)
			r := n.ctrB9(append(args, tr.img.Ref)...)
			var res struct {
				Username  string `json:"username"`
				Source    string `json:"source"`
				Anonymous bool   `json:"anonymous"`
			}
			if err := json.Unmarshal([]byte(r.stdout), &res); err != nil || r.status != 0 {
				t.Fatalf("creds: %d %s %s", r.status, r.stdout, r.stderr)
			}
			if res.Username != tr.user || res.Anonymous {
				t.Errorf("creds chose %q from %q, want %s's user %q", res.Username, res.Source, tc.tier, tr.user)
			}
			mustSucceed(t, n.pull(n.b9, tr.img.Ref, tc.ann, tc.pullExtra...), "crictl pull ("+tc.tier+")")
		})
	}
	secrets := []string{admin}
	for _, tr := range tiers {
		secrets = append(secrets, tr.pass)
	}
	n.assertNoSecrets(secrets...)
	if t.Failed() {
		t.Logf("node log:\n%s", tail(n.cd.logText(), 40))
	}
}
