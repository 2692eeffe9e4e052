package remotehosts

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/containerd/containerd/v2/core/remotes/docker"
	"github.com/containerd/containerd/v2/core/remotes/docker/config"
	"github.com/containerd/containerd/v2/pkg/snapshotters"
	"github.com/containerd/errdefs"

	"github.com/beam-cloud/b9-resolver/internal/keychain/registry"
	"github.com/beam-cloud/b9-resolver/internal/origin"
	"github.com/beam-cloud/b9-resolver/pkg/credclient"
)

// CredentialRefLabel is the snapshot label b9-resolver's direct pulls set
// on every layer: the opaque id of the credential that pulled it.
const CredentialRefLabel = "containerd.io/snapshot/b9.credential-ref"

// credentialsTimeout bounds one credentials call made from containerd's
// context-less Credentials callback.
const credentialsTimeout = 30 * time.Second

// Options say which credential to ask for.
type Options struct {
	// CredentialRef pins the credential (CredentialRefLabel's value).
	CredentialRef string
	// ImageRef is the image the layer belongs to; its repository selects
	// the most recent credential that pulled it when CredentialRef is
	// empty. Its host is not used: containerd asks per request host.
	ImageRef string
	// ConfigPath is a hosts.toml root (like CRI's config_path); empty uses
	// the default host for each registry.
	ConfigPath string
	// AuthorizerOpts add to the docker authorizer's options.
	AuthorizerOpts []docker.AuthorizerOpt
}

// FromLabels reads Options from a snapshot's labels.
func FromLabels(labels map[string]string) Options {
	return Options{CredentialRef: labels[CredentialRefLabel], ImageRef: labels[snapshotters.TargetRefLabel]}
}

// RegistryHosts returns containerd registry hosts that authorize with
// credentials from c.
func RegistryHosts(ctx context.Context, c *credclient.Client, o Options) docker.RegistryHosts {
	ho := config.HostOptions{Credentials: CredentialsFunc(c, o), AuthorizerOpts: o.AuthorizerOpts, UpdateClient: bindToOrigin}
	if o.ConfigPath != "" {
		ho.HostDir = config.HostDirFromRoot(o.ConfigPath)
	}
	return config.ConfigureHosts(ctx, ho)
}

// bindToOrigin keeps each host's credential on its origin: containerd's
// authorizer sets Authorization on the first request, and Go's client
// copies it to a redirect to the same host name on plain http, another
// port or a subdomain; the wrapped transport drops it there.
func bindToOrigin(c *http.Client) error {
	c.Transport = origin.Transport(c.Transport)
	return nil
}

// CredentialsFunc is the per-host callback containerd's authorizer calls
// on a challenge (docker.WithAuthCreds / HostOptions.Credentials). host is
// the request host (registry-1.docker.io, a mirror): the service folds
// Docker Hub's names together. An identity token comes back with an empty
// username, which containerd takes as a refresh token; no credential (or
// a public pull) is anonymous.
func CredentialsFunc(c *credclient.Client, o Options) func(host string) (string, string, error) {
	repository := ""
	if o.ImageRef != "" {
		if ref, err := registry.ParseReference(o.ImageRef); err == nil {
			repository = ref.Repository
		}
	}
	return func(host string) (string, string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), credentialsTimeout)
		defer cancel()
		cred, err := c.GetCredentials(ctx, credclient.Request{Host: host, Repository: repository, CredentialRef: o.CredentialRef})
		switch {
		case errdefs.IsNotFound(err):
			return "", "", nil
		case err != nil:
			return "", "", fmt.Errorf("registry credentials for %s: %w", host, err)
		case cred.Anonymous:
			return "", "", nil
		case cred.IdentityToken:
			return "", cred.Secret, nil
		}
		return cred.Username, cred.Secret, nil
	}
}
