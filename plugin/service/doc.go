// Package service is b9-resolver's CRI image service: a
// k8s.io/cri-api ImageServiceServer on its own unix socket that kubelet
// (--image-service-endpoint) or crictl (-i) talks to instead of
// containerd's CRI.
//
// PullImage reads the pod's credential annotations
// (b9.beam.cloud/image-credentials[.<name>]) from sandbox_config, the
// request's auth and the node's credential sources, resolves the
// credential for each registry host through the keychain, and either
// pulls the image itself with the containerd client (pull_mode "direct")
// or hands containerd's CRI the one resolved credential, pinned to its
// host (pull_mode "forward"). Every other ImageService call is forwarded
// to containerd's CRI unchanged. The same socket serves the Credentials
// service (package plugin/credentials), which every successful pull
// records into, so a remote snapshotter holding a layer's
// containerd.io/snapshot/b9.credential-ref label gets the credential that
// pulled it.
//
// The package knows nothing of how it is started: the containerd plugin
// in package plugin builds it from the plugin's TOML table and
// containerd's own socket, and `containerd-b9 standalone` builds it from
// a config file and a flag for a stock containerd's socket.
package service
