// Package resolver gives containerd (and remote snapshotters) registry hosts
// whose Authorizer is b9-resolver's own.
//
// containerd builds a fresh resolver and authorizer for every pull, so every
// pull repeats the registry's 401 challenge and, on token registries, the
// token fetch. Here one Authorizer lives as long as the node process and is
// shared by every pull: it remembers each host's challenge and the scopes
// it asked for (so requests are authorised up front, with no wasted 401
// after a host's first contact, whichever binding learnt it) and
// caches bearer tokens per (host, scope set, full credential hash),
// honouring expires_in. What differs per pull — whose credentials to present
// — comes from a Credentials value bound to each pull's RegistryHosts.
//
// Rules it keeps:
//   - a host only ever receives the credentials resolved for that host: a
//     mirror gets its own, or the upstream's only when configured as trusted;
//     a redirect to another host (object storage) gets none;
//   - a rejected token or credential (401 with error=, ECR's 403 "expired")
//     is invalidated — in the token cache and, through Credentials, in the
//     keychain — and the request retried once; a second rejection fails
//     with a message naming the host and the credential's source;
//   - secrets never appear in errors or logs.
//
// Hosts come from containerd's hosts.toml support (core/remotes/docker/config),
// which this package validates first: containerd silently ignores a hosts.toml
// it cannot parse, which is how a mirror or CA setting quietly stops applying.
// Each host's validated configuration, with its http.Client and so its open
// connections, is kept across pulls until its hosts.toml (or directory)
// changes; only the Authorizer is bound per pull.
package resolver
