package service

import (
	"github.com/beam-cloud/b9-resolver/internal/keychain/chain"
	"github.com/beam-cloud/b9-resolver/internal/keychain/document"
)

// SourceAuth is the Source of credentials taken from PullImageRequest.auth.
const SourceAuth = chain.SourceAuth

// Source labels of node credentials, as errors and logs show them: the
// plugin config's keys.
const (
	sourceNodeFile     = "node_credentials.document_files"
	sourceDockerConfig = "node_credentials.docker_config"
)

// nodeChain is the node's own credential sources, lowest in precedence:
// documents from the config, document files, then the docker config.json
// (its helpers first, as the docker CLI does).
func nodeChain(s *settings) chain.Chain {
	return chain.Chain{
		chain.Documents{Tier: chain.TierNode, Docs: s.nodeDocs},
		chain.DocumentFiles{Paths: s.NodeCredentials.DocumentFiles, Label: sourceNodeFile},
		chain.DockerConfig{Path: s.NodeCredentials.DockerConfig, Label: sourceDockerConfig,
			Detector: s.detector, HelperTimeout: s.mintTimeout},
	}
}

// requestSources are the credential sources of one PullImage call.
type requestSources struct {
	imageHost   string
	annotations []document.Document
	// auth is the request's auth, if any; its registry is pinned by
	// server_address ("" means the image's host).
	auth *chain.Candidate
	// node is the node's sources (nodeChain), nil for none.
	node chain.Chain
	// annotationKey is the credential annotation's key (the prefix
	// configured), for messages that tell a pod what to set.
	annotationKey string
}

// chain is the request's precedence chain: annotation documents, the
// request's auth, the node's sources.
func (r *requestSources) chain() chain.Chain {
	return append(chain.Chain{
		chain.Documents{Tier: chain.TierAnnotation, Docs: r.annotations},
		chain.Auth{Candidate: r.auth},
	}, r.node...)
}

// candidates are host's candidates in this request, looked up lazily.
func (r *requestSources) candidates(host string) *chain.Candidates {
	return r.chain().For(chain.Query{Host: host, ImageHost: r.imageHost})
}
