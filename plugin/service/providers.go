package service

import (
	"slices"

	"github.com/beam-cloud/b9-resolver/internal/keychain"
	"github.com/beam-cloud/b9-resolver/internal/keychain/cloud"
	"github.com/beam-cloud/b9-resolver/internal/keychain/document"
)

// cloudProviders are the aws, gcp and azure providers as the config sets
// them up — the same assembly ctr-b9 uses, so both resolve alike.
func cloudProviders(c Cloud) ([]keychain.Option, error) {
	return cloud.Options(cloud.Config{
		AWSAmbient:            slices.Contains(c.Ambient, string(document.TypeAWS)),
		GCPAmbient:            slices.Contains(c.Ambient, string(document.TypeGCP)),
		AzureAmbient:          slices.Contains(c.Ambient, string(document.TypeAzure)),
		AzureIdentityClientID: c.AzureIdentityClientID,
		GCPKeyDirs:            c.GCPKeyDirs,
		AllowLoopbackTokenURI: c.GCPLoopbackTokenURI,
	})
}
