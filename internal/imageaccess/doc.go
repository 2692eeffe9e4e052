// Package imageaccess keeps what ensure_secret_pulled_images decides
// with: per (repository, image id), whether anyone on the node may use the
// image — a pull with no pod credential (anonymous, public, or the node's
// own) proved the repository serves it openly — and which credentials the
// registry accepted for it, as keyed fingerprints (HMAC-SHA256 under a key
// derived from the node key: nothing about a secret can be learnt or
// tested from them without that key). It is KEP-2535's pulled-image
// record, kept by the image service instead of kubelet: the policies
// (NeverVerify, NeverVerifyPreloadedImages, NeverVerifyAllowlistedImages
// with its allowlist, AlwaysVerify) and a verification TTL decide with it,
// and a registry outage is survived for credentials on the record.
//
// Records are per repository, never per digest alone: a digest is no
// secret, and a registry that answers with another tenant's digest proves
// nothing about the other tenant's repository. Updates are in memory
// under a short lock with no I/O; the records are persisted behind, in a
// sealed file (internal/sealedfile) beside the Credentials service's
// state, so they survive restarts.
package imageaccess
