// Package azure is the keychain provider for credential documents of type
// azure, for ACR: a service principal's client id, secret and tenant get
// an Azure AD token for the registry audience of the registry's cloud
// (public, China, US Government, Germany), which the registry's
// /oauth2/exchange turns into an ACR refresh token; that is presented as
// an identity token with the null-GUID username, and cached per registry
// until shortly before the expiry written in it. Where no exchange is
// possible — no tenant, or a registry that answers the exchange with 404
// or 400 — the principal itself is used as basic auth, which ACR also
// accepts. The AAD call is a plain OAuth2 client-credentials request
// (golang.org/x/oauth2/clientcredentials), not azidentity: one POST per
// mint, no instance or tenant discovery and no token cache of its own to
// hide calls from the keychain's, and any authority URL (AZURE_AUTHORITY_HOST,
// an emulator) works.
package azure
