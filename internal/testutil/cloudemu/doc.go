// Package cloudemu runs loopback emulators of the cloud token APIs that
// b9-resolver's aws, gcp and azure providers call: ECR and ECR Public
// (awsJson1.1 with SigV4 checked against the registered keys), STS
// AssumeRole (query/XML), a Google OAuth token endpoint (JWT-bearer grant,
// signature checked with the service-account key's public half) and GCE
// metadata server, and Azure AD plus an ACR's /oauth2/exchange and
// /oauth2/token. They speak the real wire formats so the real SDKs talk to
// them through their standard endpoint overrides, and every emulator counts
// calls per API and can throttle, fail, delay or issue tokens of a chosen
// lifetime on demand (Control), so tests can assert how often a credential
// was minted and whether the token presented was valid when it was used.
// Emulators never log, and their errors never echo a secret they received.
package cloudemu
