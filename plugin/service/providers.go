package service

import (
	"slices"

	"github.com/beam-cloud/b9-resolver/internal/keychain"
	"github.com/beam-cloud/b9-resolver/internal/keychain/aws"
	"github.com/beam-cloud/b9-resolver/internal/keychain/azure"
	"github.com/beam-cloud/b9-resolver/internal/keychain/document"
	"github.com/beam-cloud/b9-resolver/internal/keychain/gcp"
)

// cloudProviders are the aws, gcp and azure providers as the config sets
// them up; the keychain has public, basic and token built in.
func cloudProviders(c Cloud) []keychain.Option {
	gopts := []gcp.Option{
		gcp.WithAmbient(slices.Contains(c.Ambient, string(document.TypeGCP))),
		gcp.WithKeyFileDirs(c.GCPKeyDirs...),
	}
	if c.GCPLoopbackTokenURI {
		gopts = append(gopts, gcp.WithTokenURICheck(gcp.LoopbackOrGoogleTokenURI))
	}
	return []keychain.Option{
		keychain.WithProvider(aws.New(aws.WithAmbient(slices.Contains(c.Ambient, string(document.TypeAWS))))),
		keychain.WithProvider(gcp.New(gopts...)),
		keychain.WithProvider(azure.New()),
	}
}
