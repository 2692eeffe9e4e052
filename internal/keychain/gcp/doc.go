// Package gcp is the keychain provider for credential documents of type
// gcp, for GCR and Artifact Registry: a service-account key (inline JSON,
// its base64, or a key file under a directory the node allows) is traded
// for an access token at the key's token_uri through golang.org/x/oauth2's
// JWT-bearer flow; a bare GCP_ACCESS_TOKEN is passed through; and, when the
// node enables it, a document without keys gets the node's metadata-server
// token. Registries take all of them as the username "oauth2accesstoken",
// and one token serves every Google registry, so entries are scoped to
// "gcp". Only keys of type service_account are accepted, and token_uri
// must be a Google endpoint unless the node widens that (emulators): other
// credential types and arbitrary URLs would let a tenant's document make
// the node read its files or call its internal services.
package gcp
