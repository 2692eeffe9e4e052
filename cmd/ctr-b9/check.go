package main

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/containerd/containerd/v2/core/remotes/docker"
	"github.com/containerd/containerd/v2/core/remotes/docker/config"
	"github.com/containerd/errdefs"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/urfave/cli/v3"

	"github.com/beam-cloud/b9-resolver/internal/keychain"
	"github.com/beam-cloud/b9-resolver/internal/keychain/chain"
	"github.com/beam-cloud/b9-resolver/internal/keychain/registry"
	"github.com/beam-cloud/b9-resolver/internal/origin"
	"github.com/beam-cloud/b9-resolver/internal/resolver"
)

// step is one stage of `ctr-b9 check`.
type step struct {
	Name   string `json:"name"`
	Status string `json:"status"` // ok, failed, skipped
	MS     int64  `json:"ms"`
	Detail string `json:"detail,omitempty"`
	Error  string `json:"error,omitempty"`
}

// checkResult is `ctr-b9 check -o json`.
type checkResult struct {
	Reference string `json:"reference"`
	Steps     []step `json:"steps"`
	OK        bool   `json:"ok"`
	Diagnosis string `json:"diagnosis,omitempty"`
	// FingerprintKey is what keyed the provider step's fingerprint: "node"
	// (--node-key) or "invocation" (random, this run only).
	FingerprintKey string `json:"fingerprint_key,omitempty"`
}

func checkCommand() *cli.Command {
	return &cli.Command{
		Name:      "check",
		Usage:     "run the registry auth handshake for REF step by step, timed, and say what is wrong",
		ArgsUsage: "REF",
		Description: `Steps: reference, kind, document, provider, ping (GET /v2/), challenge,
token, manifest (HEAD). Each prints its status and milliseconds; on failure a
diagnosis in plain words (wrong password, expired ECR token, region mismatch,
mirror without credentials, TLS trust, DNS...). Exit status 1 on a failure.

Example:
   ctr-b9 check --pod-config pod.json 123456789012.dkr.ecr.us-east-1.amazonaws.com/app:v1
   ctr-b9 check --creds robot:secret --hosts-dir /etc/containerd/certs.d registry.corp:5000/team/app
   ctr-b9 check -o json ghcr.io/beam-cloud/beta9`,
		Flags: append(credFlags(), outputFlag(),
			&cli.StringFlag{Name: "hosts-dir", Usage: "hosts.toml root (containerd's config_path)"},
			&cli.BoolFlag{Name: "plain-http", Usage: "use http for the registry"},
			&cli.DurationFlag{Name: "timeout", Value: 30 * time.Second, Usage: "overall deadline"},
		),
		Action: func(ctx context.Context, cmd *cli.Command) error {
			ctx, cancel := context.WithTimeout(ctx, cmd.Duration("timeout"))
			defer cancel()
			if cmd.NArg() != 1 {
				return usagef("check takes exactly one image reference (got %d arguments)", cmd.NArg())
			}
			res, usage := runCheck(ctx, cmd)
			if usage != nil {
				// Flags given wrong are not a registry problem: exit 2, as
				// creds does.
				return usage
			}
			format := cmd.String("output")
			if err := emitCheck(cmd.Root().Writer, format, res); err != nil {
				return err
			}
			if !res.OK {
				return errors.New(res.Diagnosis)
			}
			return nil
		},
	}
}

// checker carries the state the steps share.
type checker struct {
	kc    *keychain.Keychain
	res   checkResult
	ref   registry.Reference
	src   flagSources
	det   *registry.Detector
	cred  keychain.Credential
	usage error // the flags were given wrong (exit 2)
	host  docker.RegistryHost
	// chal is the challenge of the registry's 401 to GET /v2/, read as
	// pulls read it; asked reports whether it sent any challenge at all.
	chal  resolver.Challenge
	asked bool
	token string
}

// run times fn as step name; a failed step ends the check with its diagnosis.
func (c *checker) run(name string, fn func() (detail string, diagnosis string, err error)) bool {
	start := time.Now()
	detail, diagnosis, err := fn()
	s := step{Name: name, Status: "ok", MS: time.Since(start).Milliseconds(), Detail: detail}
	if err != nil {
		s.Status, s.Error = "failed", oneLine(err.Error())
		c.res.Diagnosis = diagnosis
		if c.res.Diagnosis == "" {
			c.res.Diagnosis = s.Error
		}
	}
	c.res.Steps = append(c.res.Steps, s)
	return err == nil
}

func (c *checker) skip(name, why string) {
	c.res.Steps = append(c.res.Steps, step{Name: name, Status: "skipped", Detail: why})
}

// runCheck runs the steps; a usage error (bad flags) is returned apart
// from the result.
func runCheck(ctx context.Context, cmd *cli.Command) (checkResult, error) {
	kc, keyedBy, err := newKeychain(cmd)
	if err != nil {
		return checkResult{}, err
	}
	defer kc.Close()
	c := &checker{kc: kc, res: checkResult{Reference: cmd.Args().First(), FingerprintKey: keyedBy}}
	steps := []struct {
		name string
		fn   func() (string, string, error)
	}{
		{"reference", func() (string, string, error) {
			ref, err := parseRefArg(cmd)
			c.ref = ref
			if err != nil {
				return "", "the image reference is not valid: " + err.Error(), err
			}
			c.res.Reference = ref.String()
			return ref.String(), "", nil
		}},
		{"kind", func() (string, string, error) {
			r := c.ref.Registry
			d := fmt.Sprintf("%s %s", r.Host, r.Kind)
			if r.Account != "" || r.Region != "" {
				d += fmt.Sprintf(" account=%s region=%s partition=%s", r.Account, r.Region, r.Partition)
			}
			return d, "", nil
		}},
		{"document", func() (string, string, error) {
			src, err := sourcesFromFlags(cmd, c.ref.Registry.Host)
			c.src = src
			if err == nil {
				c.det, err = detectorFromFlags(cmd)
			}
			if errors.As(err, new(usageError)) {
				c.usage = err
			}
			if err != nil {
				return "", "the credential document is malformed: " + err.Error(), err
			}
			host := c.ref.Registry.Host
			cand, ok, err := c.src.chain(c.det).For(chain.Query{Host: host, ImageHost: host}).At(ctx, 0)
			switch {
			case err != nil:
				return "", diagnoseProvider(err), err
			case !ok:
				return "no credential source for " + host + "; anonymous", "", nil
			case cand.Cred != nil:
				return fmt.Sprintf("%s identity token (%s)", cand.Cred.Source, cand.Tier), "", nil
			}
			return fmt.Sprintf("%s type=%s (%s)", cand.Doc.Source, cand.Doc.Type, cand.Tier), "", nil
		}},
		{"provider", func() (string, string, error) {
			r, err := c.src.resolve(ctx, kc, c.det, c.ref.Registry)
			cred := r.Cred
			c.cred = cred
			if err != nil {
				return "", diagnoseProvider(err), err
			}
			d := fmt.Sprintf("%s username=%q fingerprint=%s (key: %s)", cred.Provider, cred.Username, cred.SecretFingerprint, c.res.FingerprintKey)
			if cred.Anonymous {
				d = cred.Provider + " (anonymous)"
			}
			if !cred.ExpiresAt.IsZero() {
				d += " expires_in=" + time.Until(cred.ExpiresAt).Round(time.Second).String()
			}
			return d, "", nil
		}},
		{"ping", func() (string, string, error) { return c.ping(ctx, cmd) }},
		{"challenge", func() (string, string, error) { return c.challenge() }},
		{"token", func() (string, string, error) { return c.fetchToken(ctx) }},
		{"manifest", func() (string, string, error) { return c.headManifest(ctx) }},
	}
	for i, s := range steps {
		if !c.run(s.name, s.fn) {
			for _, rest := range steps[i+1:] {
				c.skip(rest.name, "an earlier step failed")
			}
			return c.res, c.usage
		}
	}
	c.res.OK = true
	return c.res, nil
}

// ping sends GET /v2/ to the first host hosts.toml gives for the registry.
func (c *checker) ping(ctx context.Context, cmd *cli.Command) (string, string, error) {
	opts := config.HostOptions{}
	if dir := cmd.String("hosts-dir"); dir != "" {
		opts.HostDir = config.HostDirFromRoot(dir)
	}
	if cmd.Bool("plain-http") {
		opts.DefaultScheme = "http"
	}
	hosts, err := config.ConfigureHosts(ctx, opts)(c.ref.Registry.Host)
	if err != nil {
		return "", "the hosts.toml for " + c.ref.Registry.Host + " is invalid: " + err.Error(), err
	}
	if len(hosts) == 0 {
		return "", "hosts.toml lists no endpoint for " + c.ref.Registry.Host, fmt.Errorf("no hosts: %w", errdefs.ErrNotFound)
	}
	c.host = hosts[0]
	// Its own client, never http.DefaultClient: a redirect leaving the
	// host's origin (plain http, another port, a subdomain) loses the
	// credential, as on the pull path.
	hc := &http.Client{}
	if c.host.Client != nil {
		hc = &http.Client{Transport: c.host.Client.Transport, Timeout: c.host.Client.Timeout}
	}
	hc.Transport = origin.Transport(hc.Transport)
	hc.CheckRedirect = origin.CheckRedirect
	c.host.Client = hc
	mirror := ""
	if c.isMirror() {
		// A mirror gets the credential of the host actually contacted, as
		// the plugin's resolver does: the upstream's secret is not its.
		mirror = " (mirror of " + c.ref.Registry.Host + ")"
		cred, err := c.src.credentials(c.kc, c.det).Credential(ctx, c.det.Detect(c.host.Host), true)
		if err != nil {
			return "", diagnoseProvider(err), err
		}
		c.cred = cred
		mirror += ", credential " + cred.Provider
	}
	resp, err := c.do(ctx, http.MethodGet, c.url("/"), nil)
	if err != nil {
		return "", diagnoseTransport(c.host.Host, err), err
	}
	resp.Body.Close()
	c.asked = resp.StatusCode == http.StatusUnauthorized || resp.Header.Get("WWW-Authenticate") != ""
	if ch, ok := resolver.ParseChallenge(resp.Header); ok {
		c.chal = ch
	}
	detail := fmt.Sprintf("%s://%s%s/ %d%s", c.host.Scheme, c.host.Host, c.host.Path, resp.StatusCode, mirror)
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusUnauthorized {
		return detail, fmt.Sprintf("%s answered %d to /v2/: not a registry API endpoint (check the host and hosts.toml path)", c.host.Host, resp.StatusCode),
			fmt.Errorf("GET /v2/ on %s: %s", c.host.Host, resp.Status)
	}
	return detail, "", nil
}

func (c *checker) challenge() (string, string, error) {
	switch {
	case !c.asked:
		return "none: the registry allows anonymous access", "", nil
	case c.chal.Scheme == "basic":
		return fmt.Sprintf("basic realm=%q", c.chal.Realm), "", nil
	case c.chal.Scheme == "bearer":
		return fmt.Sprintf("bearer realm=%q service=%q", c.chal.Realm, c.chal.Service), "", nil
	}
	return "", "the registry asks for an authentication scheme containerd does not support", fmt.Errorf("unsupported challenge from %s: %w", c.host.Host, errdefs.ErrNotImplemented)
}

func (c *checker) fetchToken(ctx context.Context) (string, string, error) {
	if !c.asked {
		return "not needed", "", nil
	}
	if c.chal.Scheme == "basic" {
		if c.cred.Anonymous {
			return "", c.noCredentials(), fmt.Errorf("%s wants basic auth and there are no credentials for it: %w", c.host.Host, errdefs.ErrUnauthenticated)
		}
		return "basic: credentials go with each request", "", nil
	}
	scope := "repository:" + c.ref.Repository + ":pull"
	realm := c.chal.Realm
	start := time.Now()
	// The same fetch every pull makes: realm rule on every hop, OAuth2 POST
	// with the GET fallback, the resolver's client id.
	tok, err := resolver.FetchToken(ctx, resolver.TokenRequest{
		Client: c.host.Client, Header: c.host.Header,
		RegistryScheme: c.host.Scheme, RegistryHost: c.host.Host,
		Realm: realm, Service: c.chal.Service, Scopes: []string{scope}, Credential: c.cred,
	})
	if err != nil {
		var te *resolver.TokenError
		if !errors.As(err, &te) {
			return "", "the registry's token endpoint is not one credentials may be sent to: " + oneLine(err.Error()), err
		}
		return "", c.diagnoseToken(te), err
	}
	c.token = tok.Value
	how := "credentials"
	if c.cred.Anonymous {
		how = "anonymous"
	}
	return fmt.Sprintf("%s token for %s (%s) in %dms, expires_in=%ds", how, scope, realm, time.Since(start).Milliseconds(), int(tok.Life.Seconds())), "", nil
}

func (c *checker) headManifest(ctx context.Context) (string, string, error) {
	ref := c.ref.Tag
	if c.ref.Digest != "" {
		ref = c.ref.Digest
	}
	h := http.Header{"Accept": {ocispec.MediaTypeImageIndex, ocispec.MediaTypeImageManifest,
		"application/vnd.docker.distribution.manifest.list.v2+json", "application/vnd.docker.distribution.manifest.v2+json"}}
	resp, err := c.do(ctx, http.MethodHead, c.url("/"+c.ref.Repository+"/manifests/"+ref), h)
	if err != nil {
		return "", diagnoseTransport(c.host.Host, err), err
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusOK:
		return fmt.Sprintf("%s %s", resp.Header.Get("Docker-Content-Digest"), resp.Header.Get("Content-Type")), "", nil
	case resp.StatusCode == http.StatusUnauthorized:
		if ch, ok := resolver.ParseChallenge(resp.Header); ok && ch.Error == resolver.CodeInsufficientScope {
			return "", fmt.Sprintf("the credential from %s is valid but may not pull %s", c.cred.Source, c.ref.Repository),
				fmt.Errorf("HEAD manifest on %s: 401 insufficient_scope: %w", c.host.Host, errdefs.ErrPermissionDenied)
		}
		if c.cred.Anonymous {
			return "", c.noCredentials(), fmt.Errorf("HEAD manifest on %s: 401 without credentials: %w", c.host.Host, errdefs.ErrUnauthenticated)
		}
		return "", fmt.Sprintf("wrong username or password: %s rejected the credential from %s", c.host.Host, c.cred.Source),
			fmt.Errorf("HEAD manifest on %s: 401: %w", c.host.Host, errdefs.ErrUnauthenticated)
	case resp.StatusCode == http.StatusForbidden:
		if len(body) == 0 && resp.Header.Get("WWW-Authenticate") == "" {
			// HEAD carries no body; ECR says "expired" only in one.
			if g, err := c.do(ctx, http.MethodGet, c.url("/"+c.ref.Repository+"/manifests/"+ref), h); err == nil {
				body, _ = io.ReadAll(io.LimitReader(g.Body, 4096))
				g.Body.Close()
			}
		}
		if isECRExpired(resp, body) {
			return "", "expired ECR token: the registry says the authorization token has expired; the keychain re-mints it on the next pull (check the node clock if this repeats)",
				fmt.Errorf("HEAD manifest on %s: 403 token expired: %w", c.host.Host, errdefs.ErrUnauthenticated)
		}
		return "", fmt.Sprintf("the credential from %s is valid but may not pull %s", c.cred.Source, c.ref.Repository),
			fmt.Errorf("HEAD manifest on %s: 403: %w", c.host.Host, errdefs.ErrPermissionDenied)
	case resp.StatusCode == http.StatusNotFound:
		return "", fmt.Sprintf("%s:%s does not exist on %s (or the credential cannot see it)", c.ref.Repository, ref, c.host.Host),
			fmt.Errorf("HEAD manifest on %s: 404: %w", c.host.Host, errdefs.ErrNotFound)
	}
	return "", fmt.Sprintf("%s answered %s to the manifest request", c.host.Host, resp.Status), fmt.Errorf("HEAD manifest on %s: %s", c.host.Host, resp.Status)
}

// do sends a request with the credential the challenge asks for.
func (c *checker) do(ctx context.Context, method, url string, h http.Header) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, url, nil)
	if err != nil {
		return nil, err
	}
	for k, v := range c.host.Header {
		req.Header[k] = v
	}
	for k, v := range h {
		req.Header[k] = v
	}
	switch {
	case c.token != "":
		req.Header.Set("Authorization", "Bearer "+c.token)
	case c.chal.Scheme == "basic" && !c.cred.Anonymous:
		req.SetBasicAuth(c.cred.Username, c.cred.Secret.Reveal())
	}
	resp, err := c.host.Client.Do(req)
	if err != nil {
		return nil, redactErr(err, c.cred.Secret.Reveal())
	}
	return resp, nil
}

func (c *checker) isMirror() bool {
	return c.host.Host != c.ref.Registry.Host && !(registry.IsDockerHub(c.host.Host) && c.ref.Registry.Kind == registry.KindDockerHub)
}

func (c *checker) url(path string) string {
	return c.host.Scheme + "://" + c.host.Host + c.host.Path + path
}

func (c *checker) noCredentials() string {
	if c.isMirror() {
		return fmt.Sprintf("mirror without credentials: %s (a mirror of %s) requires authentication and no document names it", c.host.Host, c.ref.Registry.Host)
	}
	return fmt.Sprintf("no credentials for %s: no document names this registry and no --creds given, and it requires authentication", c.ref.Registry.Host)
}

func (c *checker) diagnoseToken(err *resolver.TokenError) string {
	switch err.Status {
	case http.StatusUnauthorized:
		if c.cred.Anonymous {
			return c.noCredentials()
		}
		return fmt.Sprintf("wrong username or password: the token endpoint rejected the credential from %s", c.cred.Source)
	case http.StatusForbidden:
		return fmt.Sprintf("the token endpoint refused the credential from %s access to %s", c.cred.Source, c.ref.Repository)
	}
	return "the token endpoint failed: " + oneLine(err.Error())
}

func isECRExpired(resp *http.Response, body []byte) bool {
	return resp.Header.Get("WWW-Authenticate") == "" && strings.Contains(string(body), "authorization token has expired")
}

func diagnoseProvider(err error) string {
	msg := err.Error()
	switch {
	case strings.Contains(msg, "region"):
		return "region mismatch or missing region: " + oneLine(msg)
	case errdefs.IsUnauthorized(err), errdefs.IsPermissionDenied(err):
		return "the cloud rejected the source credential (wrong or revoked keys): " + oneLine(msg)
	case strings.Contains(strings.ToLower(msg), "throttl"):
		return "the cloud token API is throttling: " + oneLine(msg)
	case errdefs.IsNotImplemented(err):
		return "this credential type is not enabled on this node: " + oneLine(msg)
	}
	return "could not get a registry credential: " + oneLine(msg)
}

func diagnoseTransport(host string, err error) string {
	var dnsErr *net.DNSError
	var unknownCA x509.UnknownAuthorityError
	var hostErr x509.HostnameError
	var opErr *net.OpError
	switch {
	case errors.As(err, &dnsErr):
		return fmt.Sprintf("DNS: %s does not resolve on this node (check the name, /etc/hosts and resolv.conf)", dnsErr.Name)
	case errors.As(err, &unknownCA):
		return fmt.Sprintf("TLS trust: %s's certificate is signed by an unknown authority; put its CA in hosts.toml (ca = ...) under --hosts-dir", host)
	case errors.As(err, &hostErr):
		return fmt.Sprintf("TLS trust: %s's certificate is not valid for that name", host)
	case strings.Contains(err.Error(), "server gave HTTP response to HTTPS client"):
		return fmt.Sprintf("%s speaks plain http; use --plain-http or a hosts.toml with an http:// server", host)
	case errors.As(err, &opErr) && strings.Contains(err.Error(), "connection refused"):
		return fmt.Sprintf("%s refused the connection: nothing listens there", host)
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Sprintf("%s did not answer before the deadline", host)
	}
	return fmt.Sprintf("cannot reach %s: %s", host, oneLine(err.Error()))
}

// redactErr removes a secret from an error text, for errors of libraries
// that may echo a request (url.Error does not include headers, but a
// realm URL could carry userinfo).
func redactErr(err error, secretValue string) error {
	if err == nil || secretValue == "" || !strings.Contains(err.Error(), secretValue) {
		return err
	}
	return errors.New(strings.ReplaceAll(err.Error(), secretValue, "[redacted]"))
}

func emitCheck(w io.Writer, format string, res checkResult) error {
	if format == "json" {
		return emit(w, format, res, nil)
	}
	fmt.Fprintf(w, "check %s\n", res.Reference)
	for _, s := range res.Steps {
		line := fmt.Sprintf("  %-10s %-7s %5dms  %s", s.Name, s.Status, s.MS, s.Detail)
		if s.Error != "" {
			line += "  error: " + s.Error
		}
		fmt.Fprintln(w, strings.TrimRight(line, " "))
	}
	if res.OK {
		fmt.Fprintln(w, "ok")
	} else {
		fmt.Fprintf(w, "diagnosis: %s\n", res.Diagnosis)
	}
	return nil
}
