// Package cloud assembles the node's keychain: the built-in providers plus
// aws, gcp and azure configured from one Config, shared by the plugin and
// ctr-b9 so both resolve a document the same way. Endpoint overrides are
// the SDKs' own environment variables (AWS_ENDPOINT_URL_*, a key's
// token_uri, GCE_METADATA_HOST, AZURE_AUTHORITY_HOST, AZURE_POD_IDENTITY_AUTHORITY_HOST).
package cloud
