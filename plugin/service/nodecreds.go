package service

import (
	"bytes"
	"context"
	"encoding/base64"
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
	"github.com/containerd/log"

	"github.com/beam-cloud/b9-resolver/internal/keychain/document"
	"github.com/beam-cloud/b9-resolver/internal/keychain/registry"
	"github.com/beam-cloud/b9-resolver/internal/secret"
)

// nodeCredentials are the node's own credential sources, looked up per
// host in this order: documents from the config, document files, then
// the docker config.json (its helpers first, as the docker CLI does).
type nodeCredentials struct {
	docs         []document.Document
	files        []string
	dockerConfig string
	detector     *registry.Detector
	// helperTimeout bounds one docker-credential-* call.
	helperTimeout time.Duration
}

// Source names of node credentials, as errors and logs show them.
const (
	sourceNodeDocuments = "node_credentials.documents"
	sourceNodeFile      = "node_credentials.document_files "
	sourceDockerConfig  = "node_credentials.docker_config "
)

// lookup returns the node's candidate for a canonical host. Files are read
// on every call (a pull) so a rotated secret applies without a restart;
// they are small and the pull that follows costs far more.
func (n *nodeCredentials) lookup(ctx context.Context, host string, imageHost bool) (candidate, bool, error) {
	docs := n.docs
	for _, f := range n.files {
		b, err := os.ReadFile(f)
		if errors.Is(err, fs.ErrNotExist) {
			log.G(ctx).WithField("file", f).Warn("b9-resolver: node credential document file is missing; skipped")
			continue
		}
		if err != nil {
			return candidate{}, false, fmt.Errorf("%s%s: %w", sourceNodeFile, f, errors.Unwrap(err))
		}
		// The host is not passed: a node document states its registry or
		// type, so one file means the same for every image.
		parsed, err := document.Parse(sourceNodeFile+f, string(b), "")
		if err == nil {
			parsed, err = document.AsNode(parsed)
		}
		if err != nil {
			return candidate{}, false, err
		}
		docs = append(docs[:len(docs):len(docs)], parsed...)
	}
	if d, ok := pickDocument(docs, host, imageHost); ok {
		return candidate{tier: tierNode, doc: d}, true, nil
	}
	if n.dockerConfig == "" {
		return candidate{}, false, nil
	}
	return n.fromDockerConfig(ctx, host)
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

// dockerHubServerURL is the key docker login writes for Docker Hub.
const dockerHubServerURL = "https://index.docker.io/v1/"

func (n *nodeCredentials) fromDockerConfig(ctx context.Context, host string) (candidate, bool, error) {
	source := sourceDockerConfig + n.dockerConfig
	b, err := os.ReadFile(n.dockerConfig)
	if errors.Is(err, fs.ErrNotExist) {
		return candidate{}, false, nil
	}
	if err != nil {
		return candidate{}, false, fmt.Errorf("%s: %w", source, errors.Unwrap(err))
	}
	var cfg dockerConfigFile
	if err := json.Unmarshal(b, &cfg); err != nil {
		// encoding/json quotes the offending text, which may be a secret.
		return candidate{}, false, fmt.Errorf("%s: not a docker config.json (malformed JSON): %w", source, errdefs.ErrInvalidArgument)
	}
	// The docker CLI's order: a per-host helper, else the store, else auths.
	helper := cfg.CredsStore
	for k, h := range cfg.CredHelpers {
		if nk, err := registry.NormalizeHost(k); err == nil && nk == host {
			helper = h
		}
	}
	if helper != "" {
		return n.fromHelper(ctx, source, helper, host)
	}
	for k, a := range cfg.Auths {
		nk, err := registry.NormalizeHost(k)
		if err != nil || nk != host {
			continue
		}
		return n.fromAuthEntry(source+" auths."+nk, host, a)
	}
	return candidate{}, false, nil
}

func (n *nodeCredentials) fromAuthEntry(source, host string, a dockerAuth) (candidate, bool, error) {
	user, pass := a.Username, a.Password
	if a.Auth != "" {
		raw, err := base64.StdEncoding.DecodeString(a.Auth)
		if err != nil {
			return candidate{}, false, &document.Error{Source: source, Field: "auth", Reason: "not base64"}
		}
		u, p, ok := strings.Cut(string(raw), ":")
		if !ok {
			return candidate{}, false, &document.Error{Source: source, Field: "auth", Reason: "decoded value is not username:password"}
		}
		user, pass = u, p
	}
	if a.IdentityToken != "" {
		c := identityCredential(n.detector.Detect(host), source, user, a.IdentityToken)
		return candidate{tier: tierNode, cred: &c}, true, nil
	}
	if user == "" && pass == "" {
		return candidate{}, false, nil
	}
	d, err := document.New(source, host, document.TypeBasic, map[string]secret.Secret{
		document.KeyUsername: secret.New(user), document.KeyPassword: secret.New(pass),
	}, host)
	if err != nil {
		return candidate{}, false, err
	}
	d.Node = true
	return candidate{tier: tierNode, doc: d}, true, nil
}

// helperOutput is the docker-credential-helpers "get" answer.
type helperOutput struct {
	Username string `json:"Username"`
	Secret   string `json:"Secret"`
}

// fromHelper runs docker-credential-<name> get. A helper that knows no
// credential for the host means none (anonymous), not an error.
func (n *nodeCredentials) fromHelper(ctx context.Context, source, name, host string) (candidate, bool, error) {
	source = source + " helper " + name
	serverURL := host
	if host == registry.DockerHubHost {
		serverURL = dockerHubServerURL
	}
	ctx, cancel := context.WithTimeout(ctx, n.helperTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "docker-credential-"+name, "get")
	cmd.Stdin = strings.NewReader(serverURL)
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
			return candidate{}, false, nil
		}
		// The helper's output is not repeated: it is not ours to vet.
		return candidate{}, false, fmt.Errorf("%s: %w: %w", source, err, errdefs.ErrUnavailable)
	}
	var out helperOutput
	if err := json.Unmarshal(stdout.Bytes(), &out); err != nil {
		return candidate{}, false, fmt.Errorf("%s: answer is not the helper JSON: %w", source, errdefs.ErrUnavailable)
	}
	if out.Secret == "" {
		return candidate{}, false, nil
	}
	// "<token>" is the helpers' marker for an identity token.
	if out.Username == "<token>" {
		c := identityCredential(n.detector.Detect(host), source, "", out.Secret)
		return candidate{tier: tierNode, cred: &c}, true, nil
	}
	return n.fromAuthEntry(source, host, dockerAuth{Username: out.Username, Password: out.Secret})
}
