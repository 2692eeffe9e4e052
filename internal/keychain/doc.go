// Package keychain turns a credential document and a registry into the
// credential that registry accepts. A Provider per credential type (public,
// basic, token here; aws, gcp and azure in their own packages) mints a
// Credential from a Document; the Keychain picks the document for a host,
// calls the provider once per (registry identity, type, source-credential
// identity, the full sha256) — concurrent misses share one call — and keeps
// the result in a bounded cache until it nears expiry, refreshing it in the
// background so no pull waits on a token call after the first.
package keychain
