// Package registrytest runs a real OCI registry (distribution/distribution
// v3, in memory) inside a test process, for tests that need a registry's real
// auth handshake rather than a fake one.
//
// A Registry can require no auth, htpasswd (basic) auth, or token auth with a
// small JWT issuer of its own (GET and OAuth2 POST /token, per-user scopes,
// configurable expires_in, refresh tokens). Every request that reaches any of
// its servers (registry, token issuer, blob redirect target) is recorded —
// method, path, status, host, whether it carried an Authorization header — so
// tests can assert exact request counts.
//
// Nothing here is global: many registries can run in one test process. The
// recorder never keeps header values or request bodies, so passwords and
// tokens never appear in what a test prints. distribution itself logs
// through logrus' standard logger (request URIs and errors, never
// Authorization headers); this package does not reconfigure it.
package registrytest
