// Package credtest runs a Credentials service on a temporary unix socket
// for tests of its clients (pkg/credclient, CLIP, remote snapshotters),
// with a pull recorder that does what the CRI service does after a pull.
package credtest
