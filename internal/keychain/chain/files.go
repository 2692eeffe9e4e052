package chain

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/containerd/log"

	"github.com/beam-cloud/b9-resolver/internal/keychain/document"
)

// DocumentFiles offers the node's document files: each holds one node
// credential document naming its registry. Files are read at every lookup
// (once per pull and host) so a rotated secret applies without a restart;
// they are small and the pull that follows costs far more. A missing file
// is skipped with a warning.
type DocumentFiles struct {
	Paths []string
	// Label prefixes each file's path in Source and errors
	// ("node_credentials.document_files").
	Label string
}

// Lookup implements Source.
func (s DocumentFiles) Lookup(ctx context.Context, q Query) (Candidate, bool, error) {
	var docs []document.Document
	for _, f := range s.Paths {
		source := s.Label + " " + f
		b, err := os.ReadFile(f)
		if errors.Is(err, fs.ErrNotExist) {
			log.G(ctx).WithField("file", f).Warn("b9-resolver: node credential document file is missing; skipped")
			continue
		}
		if err != nil {
			return Candidate{}, false, fmt.Errorf("%s: %w", source, errors.Unwrap(err))
		}
		// The host is not passed: a node document states its registry or
		// type, so one file means the same for every image.
		parsed, err := document.Parse(source, string(b), "")
		if err == nil {
			parsed, err = document.AsNode(parsed)
		}
		if err != nil {
			return Candidate{}, false, err
		}
		docs = append(docs, parsed...)
	}
	return Documents{Tier: TierNode, Docs: docs}.Lookup(ctx, q)
}
