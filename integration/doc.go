// Package integration runs b9-resolver end to end on this machine, as
// root: bin/containerd-b9 (upstream containerd with the plugin) under a
// temp dir with the native snapshotter, the same binary's `standalone`
// daemon in front of it, crictl built from sigs.k8s.io/cri-tools, and
// real distribution registries (internal/testutil/registrytest) with
// htpasswd and token auth on 127.0.0.1.
//
// The tests skip with a message when not run as root. They build
// bin/containerd-b9 unless it is newer than every Go file it is built
// from (B9_CONTAINERD_BIN overrides), and install crictl into .cache/bin
// (B9_CRICTL overrides). Nothing they start outlives them: each process
// runs in its own process group, killed at cleanup.
package integration
