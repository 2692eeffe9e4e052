// Package imagecreds is the control plane's side of b9-resolver: it turns
// the registry credentials of a beta9 ContainerRequest
// (ContainerRequest.ImageCredentials, and at build time
// BuildRegistryCredentials and BuildOptions.SourceImageCreds) into the pod
// annotations b9-resolver reads on the node, optionally sealed so only
// the fleet's nodes can read them and only in one namespace; it validates
// a value with the parser and type detection the node runs, so a bad
// document is refused at request time with the error text the node would
// give.
//
// It depends on neither containerd, the cloud SDKs nor the plugin's
// metrics: a scheduler imports it without pulling a node in.
package imagecreds
