// Package credentialsv1 is the generated Go code of the b9 Credentials
// service (credentials.proto): the protocol lazy-loading snapshotters use
// to ask b9-resolver for registry credentials after a pull. Regenerate with
// `make proto`; the client most programs want is pkg/credclient.
package credentialsv1
