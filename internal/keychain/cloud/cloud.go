package cloud

import (
	"github.com/beam-cloud/b9-resolver/internal/keychain"
	"github.com/beam-cloud/b9-resolver/internal/keychain/aws"
	"github.com/beam-cloud/b9-resolver/internal/keychain/azure"
	"github.com/beam-cloud/b9-resolver/internal/keychain/gcp"
)

// Config is what a node decides about cloud credentials. The zero value is
// the safe default: tenant documents only, no node identity, Google-only
// token endpoints, no key files on the node.
type Config struct {
	// AWSAmbient lets a node credential document (Document.Node) of type
	// aws without keys use the node's AWS identity (the SDK default chain:
	// IRSA, Pod Identity, instance profile). A pod's document never does.
	AWSAmbient bool
	// GCPAmbient lets a node credential document of type gcp without keys
	// use the metadata server's token (GCE_METADATA_HOST overrides its
	// address). A pod's document never does.
	GCPAmbient bool
	// AzureAmbient lets a node credential document of type azure without
	// keys use the node's managed identity through IMDS
	// (AZURE_POD_IDENTITY_AUTHORITY_HOST overrides its address). A pod's
	// document never does.
	AzureAmbient bool
	// AzureIdentityClientID picks a user-assigned managed identity; empty
	// means the system-assigned one.
	AzureIdentityClientID string
	// GCPKeyDirs are the directories GOOGLE_APPLICATION_CREDENTIALS may
	// name a key file under.
	GCPKeyDirs []string
	// AllowLoopbackTokenURI accepts service-account keys whose token_uri is
	// on 127.0.0.0/8 (emulators, tests). Off on real nodes: a tenant's key
	// could otherwise aim the node at internal addresses.
	AllowLoopbackTokenURI bool
}

// Options returns keychain options that add the cloud providers; an error
// names the option c made that a provider refused.
func Options(c Config) ([]keychain.Option, error) {
	gopts := []gcp.Option{gcp.WithAmbient(c.GCPAmbient)}
	if len(c.GCPKeyDirs) > 0 {
		gopts = append(gopts, gcp.WithKeyFileDirs(c.GCPKeyDirs...))
	}
	if c.AllowLoopbackTokenURI {
		gopts = append(gopts, gcp.WithTokenURICheck(gcp.LoopbackOrGoogleTokenURI))
	}
	a, err := aws.New(aws.WithAmbient(c.AWSAmbient))
	if err != nil {
		return nil, err
	}
	g, err := gcp.New(gopts...)
	if err != nil {
		return nil, err
	}
	z, err := azure.New(azure.WithAmbient(c.AzureAmbient), azure.WithIdentityClientID(c.AzureIdentityClientID))
	if err != nil {
		return nil, err
	}
	return []keychain.Option{keychain.WithProvider(a), keychain.WithProvider(g), keychain.WithProvider(z)}, nil
}

// New returns a keychain with every provider, configured by c, plus opts.
func New(c Config, opts ...keychain.Option) (*keychain.Keychain, error) {
	copts, err := Options(c)
	if err != nil {
		return nil, err
	}
	return keychain.New(append(copts, opts...)...)
}
