// Package credclient is the Go client of the b9 Credentials service
// (api/credentials/v1), for lazy-loading snapshotters that need registry
// credentials after the pull: CLIP (subpackage clipprovider) and
// containerd remote snapshotters (subpackage remotehosts).
//
// Client dials the b9-resolver socket (root only) and keeps a small cache
// of answers, honouring each credential's expiry, because CLIP asks on
// every layer fetch: a warm answer costs well under a microsecond, and a
// credential is never used past (its expiry - a margin).
package credclient
