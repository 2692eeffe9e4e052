package resolver

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/containerd/errdefs"

	"github.com/beam-cloud/b9-resolver/internal/testutil/keychaintest"
	"github.com/beam-cloud/b9-resolver/internal/testutil/registrytest"
)

// A mirror gets its own credentials, or the upstream's only when trusted
// with them. The mirror in every case would accept alice's upstream
// password, so a leak would show as an authorised request to it.
func TestMirrorCredentials(t *testing.T) {
	for _, tc := range []struct {
		name string
		// mirror users besides alice
		mirrorBob bool
		trusted   bool
		// documents name the mirror with bob's credentials
		mirrorDoc bool
		// a public document names the mirror
		mirrorPublic bool
		// who serves the pull
		servedByMirror bool
	}{
		{name: "untrusted mirror gets nothing, pull falls back to upstream", servedByMirror: false},
		{name: "trusted mirror gets upstream credentials", trusted: true, servedByMirror: true},
		{name: "mirror gets its own document's credentials", mirrorBob: true, mirrorDoc: true, servedByMirror: true},
		// "public never falls back": not to the upstream's secret either.
		{name: "trusted mirror named by a public document gets nothing", trusted: true, mirrorPublic: true, servedByMirror: false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, logs := testContext(t)
			up := registrytest.Start(t, registrytest.WithBasicAuth(), registrytest.WithUser("alice", alicePass))
			mopts := []registrytest.Option{registrytest.WithBasicAuth(), registrytest.WithUser("alice", alicePass)}
			if tc.mirrorBob {
				mopts = []registrytest.Option{registrytest.WithBasicAuth(), registrytest.WithUser("bob", bobPass)}
			}
			mirror := registrytest.Start(t, mopts...)
			img := up.PushRandomImage(t, "lib/app", "v1", "alice", alicePass)
			if tc.mirrorBob {
				mirror.PushImage(t, "lib/app", "v1", img.Image, "bob", bobPass)
			} else {
				mirror.PushImage(t, "lib/app", "v1", img.Image, "alice", alicePass)
			}
			up.Reset()
			mirror.Reset()

			root := t.TempDir()
			writeHosts(t, root, up.Host, fmt.Sprintf(`server = "http://%s"

[host."http://%s"]
  capabilities = ["pull", "resolve"]
`, up.Host, mirror.Host))
			opts := []Option{WithConfigPath(root)}
			if tc.trusted {
				opts = append(opts, WithTrustedMirrors(mirror.Host))
			}
			entries := [][3]string{{"", "alice", alicePass}}
			if tc.mirrorDoc {
				entries = append(entries, [3]string{mirror.Host, "bob", bobPass})
			}
			d := docs(t, entries...)
			if tc.mirrorPublic {
				d = withPublic(t, d, mirror.Host)
			}
			kc := keychaintest.New(t)
			defer kc.Close()
			res := mustNew(t, opts...)
			if err := pull(ctx, res.Hosts(FromKeychain(kc, d)), img.Ref, newStore(t)); err != nil {
				t.Fatalf("pull: %v\nupstream:\n%smirror:\n%s", err, up.Summary(), mirror.Summary())
			}
			mirrorAuthed := count(mirror, withAuth)
			if tc.servedByMirror {
				if up.Count(nil) != 0 || mirrorAuthed != 5 {
					t.Fatalf("want all 5 authorised requests at the mirror, none upstream\nupstream:\n%smirror:\n%s", up.Summary(), mirror.Summary())
				}
			} else {
				if mirrorAuthed != 0 {
					t.Fatalf("upstream credentials reached the mirror (untrusted, or named by a public document):\n%s", mirror.Summary())
				}
				if count(up, isHead, withAuth) == 0 || count(up, withoutAuth) != 1 {
					t.Fatalf("want the pull served upstream after one first-contact 401:\n%s", up.Summary())
				}
			}
			noCanary(t, logs.String())
		})
	}
}

// A hosts.toml containerd could not parse fails the pull with an error that
// names the file and the problem (containerd alone logs and ignores it),
// without quoting values (a header may hold a token).
func TestBadHostsFile(t *testing.T) {
	for _, tc := range []struct {
		name, body string
		want       []string
	}{
		{"syntax", "server = \"https://m\"\n[host.\"https://m\"\ncapabilities = [\"pull\"]\n", []string{"line 2"}},
		{"capability", "[host.\"https://m\"]\n  capabilities = [\"pull\", \"fetch\"]\n", []string{`unknown capability "fetch"`, `[host."https://m"]`}},
		{"capabilities type", "[host.\"https://m\"]\n  capabilities = \"pull\"\n", []string{"capabilities"}},
		{"header type", "[host.\"https://m\"]\n  header = { Authorization = 42 }\n", []string{`header "Authorization"`, "a number"}},
		{"secret not quoted", "[host.\"https://m\"]\n  header = { Authorization = \"Bearer " + alicePass + "\", X = [1] }\n  dial_timeout = \"soon\"\n", []string{"hosts.toml"}},
		{"dial timeout", "[host.\"https://m\"]\n  dial_timeout = \"soon\"\n", []string{"dial_timeout"}},
		{"server", "server = \"ftp://x\"\n", []string{"server", `scheme "ftp"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			path := writeHosts(t, root, "registry.example.com", tc.body)
			_, err := mustNew(t, WithConfigPath(t.TempDir()+":"+root)).Hosts(Anonymous)("registry.example.com")
			if err == nil {
				t.Fatal("bad hosts.toml accepted")
			}
			if !errdefs.IsInvalidArgument(err) {
				t.Errorf("not InvalidArgument: %v", err)
			}
			for _, want := range append(tc.want, path) {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error does not name %q: %v", want, err)
				}
			}
			t.Logf("%v", err)
			noCanary(t, err.Error())
		})
	}
	// And a good one configures the mirror, with our authorizer on it.
	root := t.TempDir()
	writeHosts(t, root, "registry.example.com", "server = \"https://registry.example.com\"\n[host.\"https://m.example.com\"]\n  capabilities = [\"pull\", \"resolve\"]\n  header = { X-Test = \"1\" }\n")
	hosts, err := mustNew(t, WithConfigPath(root)).Hosts(Anonymous)("registry.example.com")
	if err != nil {
		t.Fatal(err)
	}
	if len(hosts) != 2 || hosts[0].Host != "m.example.com" || hosts[1].Host != "registry.example.com" || hosts[0].Header.Get("X-Test") != "1" {
		t.Fatalf("hosts: %+v", hosts)
	}
	for _, h := range hosts {
		if _, ok := h.Authorizer.(*hostAuthorizer); !ok {
			t.Errorf("%s: authorizer %T is not ours", h.Host, h.Authorizer)
		}
	}
}

// Docker Hub resolves to registry-1.docker.io, with the credentials for
// docker.io.
func TestDefaultHosts(t *testing.T) {
	res := mustNew(t)
	hosts, err := res.Hosts(Anonymous)("docker.io")
	if err != nil {
		t.Fatal(err)
	}
	if len(hosts) != 1 || hosts[0].Host != "registry-1.docker.io" || hosts[0].Scheme != "https" {
		t.Fatalf("docker.io: %+v", hosts)
	}
	ha := hosts[0].Authorizer.(*hostAuthorizer)
	if ha.b.Registry.Host != "docker.io" || ha.b.Mirror {
		t.Errorf("docker hub binding: registry %s mirror %v", ha.b.Registry.Host, ha.b.Mirror)
	}
	// containerd tries https first on localhost (falling back to http);
	// WithDefaultScheme makes a host plain http.
	hosts, err = mustNew(t, WithDefaultScheme("http")).Hosts(Anonymous)("registry.internal:5000")
	if err != nil || hosts[0].Scheme != "http" {
		t.Fatalf("default scheme: %+v %v", hosts, err)
	}
	if _, err := res.Hosts(Anonymous)("bad host!"); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("bad host: %v", err)
	}
}
