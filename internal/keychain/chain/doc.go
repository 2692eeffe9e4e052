// Package chain decides which credential applies to a registry host: one
// precedence chain of credential sources, tried in order, the first that
// has a candidate for the host winning — in the spirit of
// go-containerregistry's authn.NewMultiKeychain. Each source is a small
// type: a pod's annotation documents, PullImageRequest.auth, the node's
// documents and document files, and a docker config.json with its
// credential helpers. The CRI image service, the Credentials service and
// ctr-b9 all build their chain here, so `ctr-b9 creds` explains exactly
// what a pull presents.
//
// A candidate is a document for the keychain to resolve, or a ready
// credential (an identity token, which has no document form). Resolve
// walks a host's candidates lazily: a later source (files read, helpers
// run) is looked up only once the earlier ones are used up or failed.
package chain
