package document

import (
	"sort"
	"strings"

	"github.com/beam-cloud/b9-resolver/internal/secret"
)

// DefaultAnnotationPrefix is the default prefix of the annotation keys.
const DefaultAnnotationPrefix = "b9.beam.cloud/"

// AnnotationName is the key's name after the prefix.
const AnnotationName = "image-credentials"

// FromAnnotations parses the credential documents in a pod's annotations:
// "<prefix>image-credentials" first, then "<prefix>image-credentials.<name>"
// in name order. host is the image's canonical host (see Parse); opts say
// how sealed values are opened (ParseValue). An error names the annotation
// key; nothing of other annotations is read.
func FromAnnotations(annotations map[string]string, prefix, host string, opts ...Option) ([]Document, error) {
	if prefix == "" {
		prefix = DefaultAnnotationPrefix
	}
	main := prefix + AnnotationName
	var named []string
	for k := range annotations {
		if strings.HasPrefix(k, main+".") {
			named = append(named, k)
		}
	}
	sort.Strings(named)
	keys := named
	if _, ok := annotations[main]; ok {
		keys = append([]string{main}, named...)
	}
	var docs []Document
	for _, k := range keys {
		if k == main+"." {
			return nil, fieldErr("annotation "+k, "", "annotation name is empty after the dot")
		}
		d, err := ParseValue("annotation "+k, annotations[k], host, opts...)
		if err != nil {
			return nil, err
		}
		docs = append(docs, d...)
		if len(docs) > MaxDocuments {
			return nil, fieldErr("annotation "+k, "", "more than %d credential documents in the pod", MaxDocuments)
		}
	}
	return docs, nil
}

// Select returns the document for the image's own registry: the first
// naming that host, else the first naming none. A pod's documents come
// before the node's (Node) whatever their order: node credentials are
// the lowest precedence. Pulls decide with the precedence chain
// (internal/keychain/chain), whose document sources use SelectNamed and
// SelectUnnamed; Select is their composition for one flat list.
func Select(docs []Document, host string) (Document, bool) {
	pod, node := splitNode(docs)
	for _, docs := range [][]Document{pod, node} {
		if d, ok := SelectNamed(docs, host); ok {
			return d, true
		}
		if d, ok := SelectUnnamed(docs); ok {
			return d, true
		}
	}
	return Document{}, false
}

func splitNode(docs []Document) (pod, node []Document) {
	for _, d := range docs {
		if d.Node {
			node = append(node, d)
		} else {
			pod = append(pod, d)
		}
	}
	return pod, node
}

// SelectNamed returns the first document naming host. A host serving as a
// mirror of the image's registry takes only these: a document without a
// registry means "the image's registry", and its secret is not the
// mirror's.
func SelectNamed(docs []Document, host string) (Document, bool) {
	for _, d := range docs {
		if d.Registry == host {
			return d, true
		}
	}
	return Document{}, false
}

// SelectUnnamed returns the first document naming no registry: for the
// image's own registry only.
func SelectUnnamed(docs []Document) (Document, bool) {
	for _, d := range docs {
		if d.Registry == "" {
			return d, true
		}
	}
	return Document{}, false
}

// identify hashes the type, registry and sorted key/value pairs: the
// document's identity (cache keys).
func identify(d Document) string {
	keys := make([]string, 0, len(d.Keys))
	for k := range d.Keys {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, 0, 2+2*len(keys))
	parts = append(parts, string(d.Type), d.Registry)
	for _, k := range keys {
		parts = append(parts, k, d.Keys[k].Reveal())
	}
	return secret.Hash(parts...)
}

// New builds a document from keys (for PullImageRequest.auth and node
// config), detecting the type as Parse does.
func New(source, reg string, typ Type, keys map[string]secret.Secret, host string) (Document, error) {
	return draft{source: source, reg: reg, typ: string(typ), keys: keys, host: host}.finish()
}

// AsNode marks docs as node credentials (Document.Node), the only ones
// that may use the node's own cloud identity. Each must name its registry:
// a node credential for "any image" would go to whatever registry a pod
// names, and that registry would keep it.
func AsNode(docs []Document) ([]Document, error) {
	for i := range docs {
		if docs[i].Registry == "" {
			return nil, &Error{Source: docs[i].Source, Field: "registry",
				Reason: "missing; a node credential must name its registry (without one it would be sent to any registry a pod pulls from)"}
		}
		docs[i].Node = true
	}
	return docs, nil
}
