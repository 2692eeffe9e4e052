package chain

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"

	"github.com/beam-cloud/b9-resolver/internal/keychain/document"
)

func TestDockerConfigAndHelper(t *testing.T) {
	// A credential helper as docker-credential-helpers writes them.
	helperOnPath(t, "b9test", `#!/bin/sh
read host
case "$host" in
  helper.example) echo '{"Username":"helperuser","Secret":"`+canaryToken+`"}' ;;
  idtok.example) echo '{"Username":"<token>","Secret":"`+canaryToken+`"}' ;;
  *) echo "credentials not found in native keychain"; exit 1 ;;
esac
`)
	cfg := filepath.Join(t.TempDir(), "config.json")
	writeFile(t, cfg, fmt.Sprintf(`{
  "auths": {"https://index.docker.io/v1/": {"auth": %q}, "plain.example": {"username":"p","password":"pw"}},
  "credHelpers": {"helper.example": "b9test", "idtok.example": "b9test", "nothing.example": "b9test"}
}`, b64("hubuser:"+canaryPass)))
	src := DockerConfig{Path: cfg, Label: "docker_config", HelperTimeout: 5 * time.Second}

	for host, want := range map[string]struct {
		user    string
		idtoken bool
		found   bool
	}{
		"docker.io":       {user: "hubuser", found: true},
		"plain.example":   {user: "p", found: true},
		"helper.example":  {user: "helperuser", found: true},
		"idtok.example":   {idtoken: true, found: true},
		"nothing.example": {},
		"unknown.example": {},
	} {
		c, ok, err := src.Lookup(ctxT(t), Query{Host: host, ImageHost: host})
		if err != nil {
			t.Fatalf("%s: %v", host, err)
		}
		if ok != want.found {
			t.Errorf("%s: found %v, want %v", host, ok, want.found)
			continue
		}
		if !ok {
			continue
		}
		if c.Tier != TierNode {
			t.Errorf("%s: tier %v, want node", host, c.Tier)
		}
		if want.idtoken {
			if c.Cred == nil || !c.Cred.IdentityToken {
				t.Errorf("%s: want an identity token, got %+v", host, c)
			}
			continue
		}
		if got := c.Doc.Get(document.KeyUsername).Reveal(); got != want.user {
			t.Errorf("%s: user %q, want %q", host, got, want.user)
		}
		if !c.Doc.Node {
			t.Errorf("%s: a docker config credential is not marked a node document", host)
		}
	}

	writeFile(t, cfg, `{"auths": {"x": "`+canaryPass)
	_, _, err := src.Lookup(ctxT(t), Query{Host: "x", ImageHost: "x"})
	if err == nil || strings.Contains(err.Error(), canaryPass) {
		t.Errorf("broken config.json: %v; want an error without its content", err)
	}
}

// Several keys can name one host; the choice must not depend on map order.
// Each case lists keys in the file; the user of the winning entry is its
// key. Run many times, a map-order pick would differ at least once.
func TestDockerConfigPicksTheMostSpecificEntry(t *testing.T) {
	for _, tc := range []struct {
		name string
		host string
		keys []string
		want string
	}{
		{"exact host before URL forms", "reg.example:5000", []string{"https://reg.example:5000/v2/", "reg.example:5000", "http://reg.example:5000"}, "reg.example:5000"},
		{"shorter URL form before longer", "reg.example", []string{"https://reg.example/v1/", "https://reg.example"}, "https://reg.example"},
		{"same length: lexically first", "reg.example", []string{"https://reg.example/b/", "https://reg.example/a/"}, "https://reg.example/a/"},
		{"docker hub: docker's own key first", "docker.io", []string{"docker.io", "index.docker.io", "https://index.docker.io/v1/", "registry-1.docker.io"}, "https://index.docker.io/v1/"},
		{"docker hub without docker's key: shortest", "docker.io", []string{"index.docker.io", "docker.io", "registry-1.docker.io"}, "docker.io"},
		{"other hosts never match", "reg.example", []string{"reg.example:5000", "other.example"}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Each entry's username is its index in keys.
			var entries []string
			for i, k := range tc.keys {
				entries = append(entries, fmt.Sprintf("%q: {\"auth\": %q}", k, b64(fmt.Sprint(i)+":pw")))
			}
			cfg := filepath.Join(t.TempDir(), "config.json")
			writeFile(t, cfg, `{"auths": {`+strings.Join(entries, ",")+`}}`)
			src := DockerConfig{Path: cfg, Label: "docker_config"}
			for range 50 {
				c, ok, err := src.Lookup(ctxT(t), Query{Host: tc.host, ImageHost: tc.host})
				if err != nil {
					t.Fatal(err)
				}
				got := ""
				if ok {
					var i int
					fmt.Sscan(c.Doc.Get(document.KeyUsername).Reveal(), &i)
					got = tc.keys[i]
				}
				if got != tc.want {
					t.Fatalf("picked %q, want %q", got, tc.want)
				}
			}
		})
	}
	// The same rule picks among credHelpers.
	helperOnPath(t, "b9a", "#!/bin/sh\necho '{\"Username\":\"a\",\"Secret\":\"s\"}'\n")
	helperOnPath(t, "b9b", "#!/bin/sh\necho '{\"Username\":\"b\",\"Secret\":\"s\"}'\n")
	cfg := filepath.Join(t.TempDir(), "config.json")
	writeFile(t, cfg, `{"credHelpers": {"https://reg.example/v2/": "b9b", "reg.example": "b9a"}, "credsStore": "b9b"}`)
	for range 20 {
		c, ok, err := DockerConfig{Path: cfg, Label: "docker_config"}.Lookup(ctxT(t), Query{Host: "reg.example", ImageHost: "reg.example"})
		if err != nil || !ok || c.Doc.Get(document.KeyUsername).Reveal() != "a" {
			t.Fatalf("credHelpers: got %v %v %v, want the exact key's helper", c.Doc.Get(document.KeyUsername).Reveal(), ok, err)
		}
	}
}

// A helper that overruns its timeout is killed with its whole process
// group: a script's child still holding the output pipe must not keep the
// pull (and every pull of the host) waiting.
func TestCredentialHelperTimeoutStopsItsChildren(t *testing.T) {
	dir := t.TempDir()
	done := filepath.Join(dir, "done")
	// The grandchild holds the output pipe and leaves a mark when it is
	// done: without the group kill, the call returns only after the mark.
	helperOnPath(t, "b9slow", "#!/bin/sh\nsh -c 'sleep 3; touch "+done+"'\n")
	cfg := filepath.Join(dir, "config.json")
	writeFile(t, cfg, `{"credHelpers": {"slow.example": "b9slow"}}`)
	src := DockerConfig{Path: cfg, Label: "docker_config", HelperTimeout: 200 * time.Millisecond}

	_, found, err := src.Lookup(ctxT(t), Query{Host: "slow.example", ImageHost: "slow.example"})
	if found || !errdefs.IsUnavailable(err) {
		t.Fatalf("overrunning helper: found %v, err %v; want Unavailable", found, err)
	}
	// Had the call waited for the grandchild, its mark would be there.
	if _, err := os.Stat(done); !os.IsNotExist(err) {
		t.Fatalf("the call waited for the helper's child to finish (%v)", err)
	}
	time.Sleep(3500 * time.Millisecond)
	if _, err := os.Stat(done); !os.IsNotExist(err) {
		t.Fatalf("the helper's child outlived the timeout (%v)", err)
	}
}
