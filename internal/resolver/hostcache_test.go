package resolver

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/core/remotes"
	"github.com/containerd/containerd/v2/core/remotes/docker"
	"github.com/containerd/errdefs"
	"golang.org/x/sync/semaphore"

	"github.com/beam-cloud/b9-resolver/internal/testutil/keychaintest"
	"github.com/beam-cloud/b9-resolver/internal/testutil/registrytest"
)

// pullSerial is pull one request at a time, so a pull needs one connection
// per host and reuse is exact (in parallel, a pull may need more
// connections than the transport keeps idle).
func pullSerial(ctx context.Context, hosts docker.RegistryHosts, ref string, store content.Store) error {
	res := docker.NewResolver(docker.ResolverOptions{Hosts: hosts})
	name, desc, err := res.Resolve(ctx, ref)
	if err != nil {
		return err
	}
	f, err := res.Fetcher(ctx, name)
	if err != nil {
		return err
	}
	return images.Dispatch(ctx, images.Handlers(remotes.FetchHandler(store, f), images.ChildrenHandler(store)), semaphore.NewWeighted(1), desc)
}

// Pulls share the hosts' transports: a later pull, with fresh Hosts and its
// own credentials, opens no TCP connection (no TLS handshake) to a registry
// an earlier pull left connections to.
func TestPullReusesConnections(t *testing.T) {
	for _, tc := range []struct {
		name string
		tls  bool
	}{{"http", false}, {"tls", true}} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, logs := testContext(t)
			var conns atomic.Int64
			opts := []registrytest.Option{
				registrytest.WithBasicAuth(), registrytest.WithUser("alice", alicePass),
				registrytest.WithConnState(func(_ registrytest.Server, _ net.Conn, st http.ConnState) {
					if st == http.StateNew {
						conns.Add(1)
					}
				}),
			}
			if tc.tls {
				opts = append(opts, registrytest.WithTLS())
			}
			reg := registrytest.Start(t, opts...)
			v1 := reg.PushRandomImage(t, "alice/app", "v1", "alice", alicePass)
			reg.Reset()
			conns.Store(0)

			var ropts []Option
			if tc.tls {
				ropts = append(ropts,
					WithTLSConfig(&tls.Config{RootCAs: reg.CertPool(), MinVersion: tls.VersionTLS12}),
					WithUpdateClient(func(c *http.Client) error {
						c.Transport.(*http.Transport).DialContext = reg.DialContext
						return nil
					}))
			}
			res := mustNew(t, ropts...)
			kc := keychaintest.New(t)
			defer kc.Close()
			d := docs(t, [3]string{"", "alice", alicePass})

			if err := pullSerial(ctx, res.Hosts(FromKeychain(kc, d)), v1.Ref, newStore(t)); err != nil {
				t.Fatalf("first pull: %v\n%s", err, reg.Summary())
			}
			first := conns.Load()
			reg.Reset()
			// A new store: the second pull makes every request again.
			if err := pullSerial(ctx, res.Hosts(FromKeychain(kc, d)), v1.Ref, newStore(t)); err != nil {
				t.Fatalf("second pull: %v\n%s", err, reg.Summary())
			}
			second := conns.Load() - first
			t.Logf("new connections: first pull %d, second pull %d (%d requests)", first, second, reg.Count(nil))
			if first == 0 || second != 0 || count(reg, withoutAuth) != 0 {
				t.Fatalf("first pull opened %d connections, second %d; want the second to open none and send every request authorised\n%s", first, second, reg.Summary())
			}
			noCanary(t, logs.String())
		})
	}
}

// Each pull's hosts carry their own Authorizer, bound to that pull's
// credentials, over a shared client; the cached hosts carry none.
func TestHostsPerPullAuthorizer(t *testing.T) {
	root := t.TempDir()
	writeHosts(t, root, "registry.example.com", "server = \"https://registry.example.com\"\n[host.\"https://m.example.com\"]\n  capabilities = [\"pull\", \"resolve\"]\n  header = { X-Test = \"1\" }\n")
	res := mustNew(t, WithConfigPath(root))
	kc := keychaintest.New(t)
	defer kc.Close()
	ca := &countingCreds{Credentials: FromKeychain(kc, docs(t, [3]string{"", "alice", alicePass}))}
	cb := &countingCreds{Credentials: FromKeychain(kc, docs(t, [3]string{"", "bob", bobPass}))}
	ha, err := res.Hosts(ca)("registry.example.com")
	if err != nil {
		t.Fatal(err)
	}
	hb, err := res.Hosts(cb)("registry.example.com")
	if err != nil {
		t.Fatal(err)
	}
	for i := range ha {
		a, b := ha[i].Authorizer.(*hostAuthorizer), hb[i].Authorizer.(*hostAuthorizer)
		if a == b || a.b.Credentials != Credentials(ca) || b.b.Credentials != Credentials(cb) {
			t.Fatalf("%s: authorizers shared or bound to the wrong pull", ha[i].Host)
		}
		if ha[i].Client == hb[i].Client || transportOf(ha[i].Client).(expiryTransport).next != transportOf(hb[i].Client).(expiryTransport).next {
			t.Fatalf("%s: want per-pull clients over one shared transport", ha[i].Host)
		}
		// A pull changing its hosts' headers changes no other pull's.
		if ha[i].Header == nil {
			continue
		}
		ha[i].Header.Set("X-Pull", "a")
		if hb[i].Header.Get("X-Pull") != "" {
			t.Fatalf("%s: header map shared between pulls", ha[i].Host)
		}
	}
	res.hostsCache.mu.Lock()
	defer res.hostsCache.mu.Unlock()
	for _, e := range res.hostsCache.m {
		for _, h := range e.hosts {
			if h.Authorizer != nil || h.Header.Get("X-Pull") != "" {
				t.Fatalf("cached host %s holds per-pull state", h.Host)
			}
		}
	}
}

// hosts.toml is re-read when it changes: its directory appearing (a
// mirror), an edit (a header), its directory going away.
func TestHostsFileChangesApply(t *testing.T) {
	ctx, _ := testContext(t)
	var mu sync.Mutex
	var seen []string
	up := registrytest.Start(t)
	mirror := registrytest.Start(t, registrytest.WithMiddleware(func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			seen = append(seen, r.Header.Get("X-B9-Test"))
			mu.Unlock()
			next.ServeHTTP(w, r)
		})
	}))
	img := up.PushRandomImage(t, "lib/app", "v1", "", "")
	mirror.PushImage(t, "lib/app", "v1", img.Image, "", "")
	root := t.TempDir()
	res := mustNew(t, WithConfigPath(root))

	step := func(name string, wantUp, wantMirror bool, wantHeader string) {
		t.Helper()
		up.Reset()
		mirror.Reset()
		mu.Lock()
		seen = nil
		mu.Unlock()
		if err := pull(ctx, res.Hosts(Anonymous), img.Ref, newStore(t)); err != nil {
			t.Fatalf("%s: pull: %v", name, err)
		}
		if (up.Count(nil) > 0) != wantUp || (mirror.Count(nil) > 0) != wantMirror {
			t.Fatalf("%s: want upstream %v mirror %v\nupstream:\n%smirror:\n%s", name, wantUp, wantMirror, up.Summary(), mirror.Summary())
		}
		mu.Lock()
		defer mu.Unlock()
		for _, h := range seen {
			if h != wantHeader {
				t.Fatalf("%s: mirror got X-B9-Test %q, want %q", name, h, wantHeader)
			}
		}
	}
	mirrorToml := fmt.Sprintf("server = \"http://%s\"\n\n[host.\"http://%s\"]\n  capabilities = [\"pull\", \"resolve\"]\n", up.Host, mirror.Host)

	step("no hosts.toml", true, false, "")
	writeHosts(t, root, up.Host, mirrorToml)
	step("mirror added", false, true, "")
	writeHosts(t, root, up.Host, mirrorToml+"  header = { X-B9-Test = \"edited\" }\n")
	step("header added", false, true, "edited")
	if err := os.RemoveAll(filepath.Join(root, up.Host)); err != nil {
		t.Fatal(err)
	}
	step("hosts directory removed", true, false, "")
}

// A hosts.toml broken after a good pull fails every later pull, naming the
// file, until it is fixed.
func TestHostsFileBrokenAfterPull(t *testing.T) {
	ctx, _ := testContext(t)
	reg := registrytest.Start(t)
	img := reg.PushRandomImage(t, "lib/app", "v1", "", "")
	root := t.TempDir()
	good := fmt.Sprintf("server = \"http://%s\"\n\n[host.\"http://%s\"]\n  capabilities = [\"pull\", \"resolve\"]\n", reg.Host, reg.Host)
	path := writeHosts(t, root, reg.Host, good)
	res := mustNew(t, WithConfigPath(root))
	if err := pull(ctx, res.Hosts(Anonymous), img.Ref, newStore(t)); err != nil {
		t.Fatalf("good pull: %v", err)
	}
	writeHosts(t, root, reg.Host, good+"  dial_timeout = \"soon\"\n")
	for i := range 2 {
		err := pull(ctx, res.Hosts(Anonymous), img.Ref, newStore(t))
		if err == nil || !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), path) {
			t.Fatalf("pull %d with a broken hosts.toml: %v; want InvalidArgument naming %s", i, err, path)
		}
		t.Logf("%v", err)
	}
	writeHosts(t, root, reg.Host, good+"  dial_timeout = \"5s\"\n")
	if err := pull(ctx, res.Hosts(Anonymous), img.Ref, newStore(t)); err != nil {
		t.Fatalf("pull after the fix: %v", err)
	}
}

// Concurrent pulls while hosts.toml changes (run with -race).
func TestHostsCacheConcurrent(t *testing.T) {
	root := t.TempDir()
	body := "server = \"https://registry.example.com\"\n[host.\"https://m.example.com\"]\n  capabilities = [\"pull\", \"resolve\"]\n"
	writeHosts(t, root, "registry.example.com", body)
	res := mustNew(t, WithConfigPath(root))
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 50 {
				if g == 0 && i%10 == 0 {
					// Atomically, as config management writes: a reader
					// of a half-written file would see no mirror.
					tmp := filepath.Join(root, "hosts.tmp")
					if err := os.WriteFile(tmp, []byte(body+strings.Repeat("#", i)+"\n"), 0o644); err != nil {
						t.Error(err)
						return
					}
					if err := os.Rename(tmp, filepath.Join(root, "registry.example.com", "hosts.toml")); err != nil {
						t.Error(err)
						return
					}
				}
				hosts, err := res.Hosts(Anonymous)("registry.example.com")
				if err != nil || len(hosts) != 2 {
					t.Errorf("hosts: %v %v", hosts, err)
					return
				}
				hosts[0].Header = http.Header{"X": {"y"}}
			}
		}()
	}
	wg.Wait()
}

// A certificate or key rewritten in place (cp over it: the folder's mtime
// does not change) makes a new stamp, so the next pull loads it; an
// untouched folder keeps its stamp within a recheck period.
func TestHostsStampSeesFilesRewrittenInPlace(t *testing.T) {
	dir := t.TempDir()
	cert := filepath.Join(dir, "client.cert")
	if err := os.WriteFile(cert, []byte("old certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	before, ok := stampOf(dir)
	if !ok {
		t.Fatal("stamp failed")
	}
	if again, _ := stampOf(dir); again != before && again.period == before.period {
		t.Fatal("an untouched folder changed its stamp")
	}
	f, err := os.OpenFile(cert, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString("new certificate, rotated"); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if after, _ := stampOf(dir); after.files == before.files {
		t.Error("a certificate rewritten in place left the stamp unchanged")
	}
}
