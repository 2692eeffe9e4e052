// Package deploy holds the Kubernetes manifests that run b9-resolver in
// standalone mode next to each node's stock containerd (namespace.yaml,
// configmap.yaml, daemonset.yaml; README.md says how to apply them and
// point kubelet at the socket). The package exists for its tests, which
// check the manifests offline: strict decoding into the Kubernetes API
// types (an unknown or misspelt field is an error, as kubeconform's
// strict mode would say), the rules the API server would apply to them,
// and that the paths, ports and flags agree with the daemon's config.
package deploy

import "embed"

// Manifests are the YAML files of this folder.
//
//go:embed *.yaml
var Manifests embed.FS
