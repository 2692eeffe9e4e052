// Package origin binds credentials to the origin they were resolved for:
// scheme, lower-cased host name and effective port, compared the way
// browsers and containerd's fetcher compare them. A credential for
// https://registry.example is sent to https://REGISTRY.example:443 too, and
// never to http://registry.example, https://registry.example:8443 or
// https://blobs.registry.example.
//
// Go's http.Client copies an Authorization header set on a request to every
// redirect target on the same host name or a subdomain of it, whatever the
// scheme or port; containerd's authorizer does not remove it. Transport
// wraps any RoundTripper so that a redirect leaving the first request's
// origin goes without it, whoever set it.
package origin
