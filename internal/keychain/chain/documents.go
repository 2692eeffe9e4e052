package chain

import (
	"context"

	"github.com/beam-cloud/b9-resolver/internal/keychain/document"
)

// Documents offers, of parsed documents in order, the first naming the
// host, else — for the image's own host only — the first naming none. A
// pod's annotation documents (the unnamed annotation, then the named ones
// in name order) are one such source; the node's inline documents another.
type Documents struct {
	Tier Tier
	Docs []document.Document
}

// Lookup implements Source.
func (s Documents) Lookup(_ context.Context, q Query) (Candidate, bool, error) {
	if d, ok := pick(s.Docs, q); ok {
		return Candidate{Tier: s.Tier, Doc: d}, true, nil
	}
	return Candidate{}, false, nil
}

func pick(docs []document.Document, q Query) (document.Document, bool) {
	if d, ok := document.SelectNamed(docs, q.Host); ok {
		return d, true
	}
	if q.Host == q.ImageHost {
		return document.SelectUnnamed(docs)
	}
	return document.Document{}, false
}
