package chain

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"github.com/containerd/errdefs"

	"github.com/beam-cloud/b9-resolver/internal/keychain/document"
	"github.com/beam-cloud/b9-resolver/internal/keychain/registry"
	"github.com/beam-cloud/b9-resolver/internal/secret"
)

// DefaultHelperTimeout bounds one docker-credential-* call.
const DefaultHelperTimeout = 10 * time.Second

// DockerConfig offers what a docker config.json holds for the host, in
// the docker CLI's order: the host's credHelpers entry, else credsStore,
// else the host's auths entry. The file is read at every lookup, so edits
// apply without a restart; a missing file offers nothing.
//
// Keys are compared as registry hosts (scheme and path dropped, Docker
// Hub's names one registry), so several keys can name one host. The most
// specific wins, as docker's lookup does: the key docker itself would look
// up (the host, or https://index.docker.io/v1/ for Docker Hub), else the
// shortest key, else the lexically first — never whichever a map
// iteration happens to give.
type DockerConfig struct {
	Path string
	// Label prefixes Source and errors ("node_credentials.docker_config").
	Label    string
	Detector *registry.Detector
	// HelperTimeout bounds one helper run; 0 means DefaultHelperTimeout.
	HelperTimeout time.Duration
}

// dockerConfigFile is the part of ~/.docker/config.json that holds
// credentials.
type dockerConfigFile struct {
	Auths       map[string]dockerAuth `json:"auths"`
	CredHelpers map[string]string     `json:"credHelpers"`
	CredsStore  string                `json:"credsStore"`
}

type dockerAuth struct {
	Auth          string `json:"auth"`
	Username      string `json:"username"`
	Password      string `json:"password"`
	IdentityToken string `json:"identitytoken"`
}

// DockerHubServerURL is the key docker login writes for Docker Hub, and
// what helpers are asked for it.
const DockerHubServerURL = "https://index.docker.io/v1/"

// serverURL is what docker looks up for a canonical host.
func serverURL(host string) string {
	if host == registry.DockerHubHost {
		return DockerHubServerURL
	}
	return host
}

// Lookup implements Source.
func (s DockerConfig) Lookup(ctx context.Context, q Query) (Candidate, bool, error) {
	if s.Path == "" {
		return Candidate{}, false, nil
	}
	source := s.Label + " " + s.Path
	b, err := os.ReadFile(s.Path)
	if errors.Is(err, fs.ErrNotExist) {
		return Candidate{}, false, nil
	}
	if err != nil {
		return Candidate{}, false, fmt.Errorf("%s: %w", source, errors.Unwrap(err))
	}
	var cfg dockerConfigFile
	if err := json.Unmarshal(b, &cfg); err != nil {
		// encoding/json quotes the offending text, which may be a secret.
		return Candidate{}, false, fmt.Errorf("%s: not a docker config.json (malformed JSON): %w", source, errdefs.ErrInvalidArgument)
	}
	helper := cfg.CredsStore
	if _, h, ok := mostSpecific(cfg.CredHelpers, q.Host); ok {
		helper = h
	}
	if helper != "" {
		return s.fromHelper(ctx, source, helper, q.Host)
	}
	if key, a, ok := mostSpecific(cfg.Auths, q.Host); ok {
		return s.fromAuthEntry(source+" auths."+key, q.Host, a)
	}
	return Candidate{}, false, nil
}

// mostSpecific returns the entry of m whose key names host, by the rule in
// DockerConfig's comment.
func mostSpecific[V any](m map[string]V, host string) (key string, v V, ok bool) {
	exact := serverURL(host)
	for k, val := range m {
		nk, err := registry.NormalizeHost(k)
		if err != nil || nk != host {
			continue
		}
		if !ok || moreSpecific(k, key, exact) {
			key, v, ok = k, val, true
		}
	}
	return key, v, ok
}

// moreSpecific orders two keys naming one host: the exact key first, then
// shorter, then lexically smaller.
func moreSpecific(a, b, exact string) bool {
	if (a == exact) != (b == exact) {
		return a == exact
	}
	if c := cmp.Compare(len(a), len(b)); c != 0 {
		return c < 0
	}
	return a < b
}

func (s DockerConfig) fromAuthEntry(source, host string, a dockerAuth) (Candidate, bool, error) {
	user, pass := a.Username, a.Password
	if a.Auth != "" {
		var err error
		if user, pass, err = DecodeDockerAuth(source, a.Auth); err != nil {
			return Candidate{}, false, err
		}
	}
	if a.IdentityToken != "" {
		c := IdentityCredential(s.Detector.Detect(host), source, user, a.IdentityToken)
		return Candidate{Tier: TierNode, Cred: &c}, true, nil
	}
	if user == "" && pass == "" {
		return Candidate{}, false, nil
	}
	d, err := document.New(source, host, document.TypeBasic, map[string]secret.Secret{
		document.KeyUsername: secret.New(user), document.KeyPassword: secret.New(pass),
	}, host)
	if err != nil {
		return Candidate{}, false, err
	}
	d.Node = true
	return Candidate{Tier: TierNode, Doc: d}, true, nil
}

// helperOutput is the docker-credential-helpers "get" answer.
type helperOutput struct {
	Username string `json:"Username"`
	Secret   string `json:"Secret"`
}

// fromHelper runs docker-credential-<name> get. A helper that knows no
// credential for the host means none (anonymous), not an error.
func (s DockerConfig) fromHelper(ctx context.Context, source, name, host string) (Candidate, bool, error) {
	source = source + " helper " + name
	timeout := cmp.Or(s.HelperTimeout, DefaultHelperTimeout)
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "docker-credential-"+name, "get")
	cmd.Stdin = strings.NewReader(serverURL(host))
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	// A helper is often a script: on timeout kill its whole process group,
	// and stop waiting for pipes a straggler still holds, or the pull (and
	// every other pull of the host) would wait for it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = time.Second
	if err := cmd.Run(); err != nil {
		// The helper protocol reports "credentials not found" on stdout.
		if strings.Contains(stdout.String()+stderr.String(), "credentials not found") {
			return Candidate{}, false, nil
		}
		// The helper's output is not repeated: it is not ours to vet.
		return Candidate{}, false, fmt.Errorf("%s: %w: %w", source, err, errdefs.ErrUnavailable)
	}
	var out helperOutput
	if err := json.Unmarshal(stdout.Bytes(), &out); err != nil {
		return Candidate{}, false, fmt.Errorf("%s: answer is not the helper JSON: %w", source, errdefs.ErrUnavailable)
	}
	if out.Secret == "" {
		return Candidate{}, false, nil
	}
	// "<token>" is the helpers' marker for an identity token.
	if out.Username == "<token>" {
		c := IdentityCredential(s.Detector.Detect(host), source, "", out.Secret)
		return Candidate{Tier: TierNode, Cred: &c}, true, nil
	}
	return s.fromAuthEntry(source, host, dockerAuth{Username: out.Username, Password: out.Secret})
}
