// Package aws is the keychain provider for credential documents of type
// aws: it turns an access key (with an optional session token and role to
// assume) into an ECR or ECR Public registry credential through
// GetAuthorizationToken. The region and partition come from the ECR host,
// so one token serves every registry of that partition and region for the
// principal (CacheScope), and assumed-role sessions are cached and reused
// across mints so STS is not called per pull. A document never reaches the
// node's own AWS identity — the SDK's shared files, environment and IMDS —
// unless the node enables the ambient source (WithAmbient) and a node
// credential document (document.Document.Node) carries no keys; a pod's
// document without keys is an InvalidArgument error. Endpoints follow the SDK's standard overrides
// (AWS_ENDPOINT_URL_ECR, _ECR_PUBLIC, _STS, AWS_ENDPOINT_URL), and throttled
// calls back off with jitter inside the caller's deadline before failing
// with an error that names the API.
package aws
