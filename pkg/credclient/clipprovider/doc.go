// Package clipprovider makes the b9 Credentials service a CLIP registry
// credential provider (github.com/beam-cloud/clip/pkg/common
// RegistryCredentialProvider): pass a *Provider as
// clip.MountOptions.RegistryCredProvider or
// clip.CreateFromOCIImageOptions.CredProvider.
//
// CLIP takes those fields as interface{} and silently falls back to its
// own keychain when the assertion fails, so this package asserts the
// interface at compile time against the CLIP version in go.mod.
package clipprovider
