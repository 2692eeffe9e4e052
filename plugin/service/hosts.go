package service

import (
	"context"
	"path/filepath"

	"github.com/containerd/containerd/v2/core/remotes/docker"
	"github.com/containerd/containerd/v2/core/remotes/docker/config"
	"github.com/containerd/errdefs"
)

// hostsFunc gives the registry hosts (endpoints, TLS, authorizer) for one
// direct pull. It is the one place direct mode learns how to reach a
// registry, so the resolver can be swapped without touching the pull.
type hostsFunc func(ctx context.Context, pa *pullAuth) docker.RegistryHosts

// registryHosts is hosts.toml (config_path) plus containerd's authorizer
// fed by the pull's credentials.
//
// TODO(lead): switch to internal/resolver's RegistryHosts once it lands:
// its Authorizer keeps tokens across pulls (a re-pull of a present image
// is then 1 registry request instead of 2, and K pulls within a token's
// life 1 token call instead of K). This one builds a fresh authorizer per
// pull, as containerd's CRI does.
func (s *Service) registryHosts(ctx context.Context, pa *pullAuth) docker.RegistryHosts {
	return config.ConfigureHosts(ctx, config.HostOptions{
		HostDir:     hostDirFromRoots(filepath.SplitList(s.cfg.ConfigPath)),
		Credentials: pa.credentialsFunc(ctx),
	})
}

// hostDirFromRoots searches the roots in order, as CRI does for its
// config_path list: the first root with a folder for the host wins.
func hostDirFromRoots(roots []string) func(string) (string, error) {
	fns := make([]func(string) (string, error), len(roots))
	for i, r := range roots {
		fns[i] = config.HostDirFromRoot(r)
	}
	return func(host string) (string, error) {
		for _, fn := range fns {
			dir, err := fn(host)
			if err != nil && !errdefs.IsNotFound(err) {
				return "", err
			}
			if dir != "" {
				return dir, nil
			}
		}
		return "", nil
	}
}
