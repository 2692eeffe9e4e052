package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/beam-cloud/b9-resolver/internal/resolver"

	"github.com/beam-cloud/b9-resolver/internal/testutil/registrytest"
)

// checkJSON runs `ctr-b9 check -o json` and decodes the result.
func checkJSON(t *testing.T, args ...string) (checkResult, result) {
	t.Helper()
	r := ctrB9(t, append([]string{"check", "-o", "json", "--timeout", "20s"}, args...)...)
	var res checkResult
	if err := json.Unmarshal([]byte(r.stdout), &res); err != nil {
		t.Fatalf("check output is not JSON (status %d, stderr %q): %v", r.status, r.stderr, err)
	}
	return res, r
}

func stepStatus(res checkResult) string {
	var s []string
	for _, st := range res.Steps {
		s = append(s, st.Name+"="+st.Status)
	}
	return strings.Join(s, " ")
}

func hostsDir(t *testing.T, host, toml string) string {
	t.Helper()
	root := t.TempDir()
	dir := filepath.Join(root, strings.ReplaceAll(host, ":", "_")+"_")
	if !strings.Contains(host, ":") {
		dir = filepath.Join(root, host)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "hosts.toml"), []byte(toml), 0o644); err != nil {
		t.Fatal(err)
	}
	return root
}

func TestCheckAgainstRegistry(t *testing.T) {
	basic := registrytest.Start(t, registrytest.WithBasicAuth(), registrytest.WithUser("alice", canary))
	basic.PushRandomImage(t, "team/app", "v1", "alice", canary)
	token := registrytest.Start(t, registrytest.WithTokenAuth(),
		registrytest.WithUser("alice", canary, "team/app"), registrytest.WithUser("bob", canary+"b", "other/app"))
	token.PushRandomImage(t, "team/app", "v1", "alice", canary)
	ecr := registrytest.Start(t, registrytest.WithBasicAuth(), registrytest.WithUser("AWS", canary),
		registrytest.WithMiddleware(func(next http.Handler) http.Handler {
			return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if strings.Contains(r.URL.Path, "/manifests/") && r.Header.Get("Authorization") != "" {
					w.Header().Set("Content-Type", "application/json")
					w.WriteHeader(http.StatusForbidden)
					fmt.Fprint(w, `{"errors":[{"code":"DENIED","message":"Your authorization token has expired. Reauthenticate and try again."}]}`)
					return
				}
				next.ServeHTTP(w, r)
			})
		}))
	tlsReg := registrytest.Start(t, registrytest.WithBasicAuth(), registrytest.WithUser("alice", canary), registrytest.WithTLS("registry.test"))
	tlsReg.PushRandomImage(t, "team/app", "v1", "alice", canary)
	mirrorUpstream := "upstream.b9test:5000"
	mirror := hostsDir(t, mirrorUpstream, fmt.Sprintf("server = \"http://%s\"\n[host.\"http://%s\"]\n  capabilities = [\"pull\", \"resolve\"]\n", basic.Addr, basic.Addr))
	trustedTLS := hostsDir(t, "registry.test", fmt.Sprintf("[host.\"https://%s\"]\n  capabilities = [\"pull\", \"resolve\"]\n  ca = %q\n", tlsReg.Addr, tlsReg.CAFile))
	untrustedTLS := hostsDir(t, "registry.test", fmt.Sprintf("[host.\"https://%s\"]\n  capabilities = [\"pull\", \"resolve\"]\n", tlsReg.Addr))

	for _, tc := range []struct {
		name      string
		args      []string
		ok        bool
		steps     string
		diagnosis string
	}{
		{"basic ok", []string{"--creds", "alice:" + canary, basic.Host + "/team/app:v1"}, true,
			"reference=ok kind=ok document=ok provider=ok ping=ok challenge=ok token=ok manifest=ok", ""},
		{"basic wrong password", []string{"--creds", "alice:wrong-" + canary, basic.Host + "/team/app:v1"}, false,
			"manifest=failed", "wrong username or password: " + basic.Host + " rejected the credential from auth"},
		{"basic no credentials", []string{basic.Host + "/team/app:v1"}, false,
			"token=failed", "no credentials for " + basic.Host},
		{"annotation document used", []string{"--document", `{"registry":"` + basic.Host + `","credentials":{"USERNAME":"alice","PASSWORD":"` + canary + `"}}`, basic.Host + "/team/app:v1"}, true,
			"manifest=ok", ""},
		{"token ok", []string{"--creds", "alice:" + canary, token.Host + "/team/app:v1"}, true,
			"challenge=ok token=ok manifest=ok", ""},
		{"token wrong password", []string{"--creds", "alice:nope-" + canary, token.Host + "/team/app:v1"}, false,
			"token=failed", "wrong username or password: the token endpoint rejected the credential from auth"},
		{"token valid but no access", []string{"--creds", "bob:" + canary + "b", token.Host + "/team/app:v1"}, false,
			"manifest=failed", "is valid but may not pull team/app"},
		{"not found", []string{"--creds", "alice:" + canary, basic.Host + "/team/nope:v1"}, false,
			"manifest=failed", "team/nope:v1 does not exist"},
		{"expired ECR token", []string{"--creds", "AWS:" + canary, ecr.Host + "/app:v1"}, false,
			"manifest=failed", "expired ECR token"},
		{"mirror without credentials", []string{"--hosts-dir", mirror, "--document", `{"registry":"` + mirrorUpstream + `","credentials":{"USERNAME":"alice","PASSWORD":"` + canary + `"}}`, mirrorUpstream + "/team/app:v1"}, false,
			"ping=ok challenge=ok token=failed", "mirror without credentials: " + basic.Addr + " (a mirror of " + mirrorUpstream + ")"},
		{"request auth is not sent to a mirror", []string{"--hosts-dir", mirror, "--creds", "alice:" + canary, mirrorUpstream + "/team/app:v1"}, false,
			"token=failed", "mirror without credentials: " + basic.Addr},
		{"mirror with its own credentials", []string{"--hosts-dir", mirror, "--document", `[{"registry":"` + mirrorUpstream + `","credentials":{"USERNAME":"x","PASSWORD":"y"}},{"registry":"` + basic.Addr + `","credentials":{"USERNAME":"alice","PASSWORD":"` + canary + `"}}]`, mirrorUpstream + "/team/app:v1"}, true,
			"manifest=ok", ""},
		// The hosts.toml endpoint is another host than the reference's, so
		// it takes only a document naming it (as a pull's resolver does).
		{"TLS trusted through hosts.toml", []string{"--hosts-dir", trustedTLS, "--document", `{"registry":"` + tlsReg.Addr + `","credentials":{"USERNAME":"alice","PASSWORD":"` + canary + `"}}`, "registry.test/team/app:v1"}, true,
			"manifest=ok", ""},
		{"TLS untrusted", []string{"--hosts-dir", untrustedTLS, "--creds", "alice:" + canary, "registry.test/team/app:v1"}, false,
			"ping=failed", "TLS trust: " + tlsReg.Addr + "'s certificate is signed by an unknown authority"},
		{"nothing listening", []string{"127.0.0.1:1/app:v1"}, false,
			"ping=failed", "refused the connection"},
		{"bad document", []string{"--document", `{"type":"aws","credentials":{"AWS_SECRET_ACCESS_KEY":"` + canary + `"}}`, basic.Host + "/team/app:v1"}, false,
			"document=failed provider=skipped", "the credential document is malformed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, r := checkJSON(t, tc.args...)
			if res.OK != tc.ok {
				t.Fatalf("ok=%v, want %v; steps %s; diagnosis %q", res.OK, tc.ok, stepStatus(res), res.Diagnosis)
			}
			if want := map[bool]int{true: 0, false: 1}[tc.ok]; r.status != want {
				t.Errorf("exit status %d, want %d", r.status, want)
			}
			if !strings.Contains(stepStatus(res), tc.steps) {
				t.Errorf("steps %s, want %s", stepStatus(res), tc.steps)
			}
			if !strings.Contains(res.Diagnosis, tc.diagnosis) {
				t.Errorf("diagnosis %q, want %q", res.Diagnosis, tc.diagnosis)
			}
			if !tc.ok && !strings.Contains(r.stderr, res.Diagnosis) {
				t.Errorf("stderr %q does not carry the diagnosis", r.stderr)
			}
			if len(res.Steps) != 8 {
				t.Errorf("%d steps, want 8", len(res.Steps))
			}
		})
	}

	// Text output: one line per step with its milliseconds.
	r := ctrB9(t, "check", "--creds", "alice:"+canary, token.Host+"/team/app:v1")
	if r.status != 0 || strings.Count(r.stdout, "ms ") < 8 || !strings.Contains(r.stdout, "bearer realm=") {
		t.Fatalf("text check: %+v", r)
	}
}

func TestCheckDNS(t *testing.T) {
	// Send every DNS lookup to a closed loopback port, so the failure is
	// local and certain (tests only talk to 127.0.0.0/8).
	l, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := l.LocalAddr().String()
	l.Close()
	orig := net.DefaultResolver
	net.DefaultResolver = &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
		d := net.Dialer{Timeout: time.Second}
		return d.DialContext(ctx, "udp", dead)
	}}
	t.Cleanup(func() { net.DefaultResolver = orig })

	res, r := checkJSON(t, "--creds", "u:"+canary, "no-such-registry.b9test:5000/app:v1")
	if res.OK || r.status != 1 || !strings.Contains(res.Diagnosis, "DNS: no-such-registry.b9test does not resolve") {
		t.Fatalf("diagnosis %q, steps %s", res.Diagnosis, stepStatus(res))
	}
}

// The token endpoint's status decides the diagnosis, not digits elsewhere
// in the message (a port, a repository name). (The GET fallback is the
// resolver's, shared with pulls, and tested there.)
func TestTokenStatusIsTheAnswersNotTheURLs(t *testing.T) {
	unavailable := &resolver.TokenError{Host: "registry.example:401", Endpoint: "https://auth.example:4001/token", Method: "POST",
		Status: 503, Err: errors.New("answered 503 Service Unavailable for repository:team/ml-401k:pull")}
	c := &checker{}
	c.cred.Source = "--creds"
	if d := c.diagnoseToken(unavailable); strings.Contains(d, "wrong username") || !strings.Contains(d, "token endpoint failed") {
		t.Errorf("503 diagnosed as %q", d)
	}
	rejected := &resolver.TokenError{Host: "registry.example", Endpoint: "https://auth.example/token", Method: "GET", Status: 401, Err: errors.New("answered 401 Unauthorized")}
	if d := c.diagnoseToken(rejected); !strings.Contains(d, "wrong username or password") {
		t.Errorf("401 diagnosed as %q", d)
	}
}

// Flags given wrong are a usage error for check as for creds: exit 2,
// before any registry is contacted.
func TestCheckBadFlagsAreUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{"check", "--creds", "nocolon", "registry.example/a:1"},
		{"check", "--document", "robot:x", "--annotations", "/nonexistent.json", "registry.example/a:1"},
	} {
		if r := ctrB9(t, args...); r.status != 2 {
			t.Errorf("%v: status %d (%s), want 2", args, r.status, r.stderr)
		}
	}
}

// check's requests carry the credential to the registry's origin only: a
// manifest request redirected to the same host name on another port (Go's
// client would copy the header there) arrives without it.
func TestCheckRedirectGetsNoCredentials(t *testing.T) {
	var leaked, reached atomic.Int64
	elsewhere := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reached.Add(1)
		if r.Header.Get("Authorization") != "" {
			leaked.Add(1)
		}
		w.WriteHeader(http.StatusNotFound)
	}))
	defer elsewhere.Close()
	reg := registrytest.Start(t, registrytest.WithBasicAuth(), registrytest.WithUser("alice", canary),
		registrytest.WithMiddleware(func(next http.Handler) http.Handler {
			return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.Method == http.MethodHead && strings.Contains(r.URL.Path, "/manifests/") && r.Header.Get("Authorization") != "" {
					http.Redirect(w, r, elsewhere.URL+r.URL.Path, http.StatusTemporaryRedirect)
					return
				}
				next.ServeHTTP(w, r)
			})
		}))
	reg.PushRandomImage(t, "team/app", "v1", "alice", canary)
	res, _ := checkJSON(t, "--creds", "alice:"+canary, reg.Host+"/team/app:v1")
	if reached.Load() == 0 {
		t.Fatalf("the redirect was not followed (%s); the test proves nothing", stepStatus(res))
	}
	if leaked.Load() != 0 {
		t.Fatalf("%d redirected requests carried the registry's credential to %s", leaked.Load(), elsewhere.URL)
	}
}
