package document

import (
	"strings"

	"github.com/containerd/errdefs"
)

// SealedPrefix starts a sealed annotation value: "age:" followed by the
// standard base64 of an age-encrypted envelope (see package sealed). The
// prefix is reserved in every carrier, so a sealed value is never read as
// username "age" and a password: a username:password whose username is
// "age" must be written as JSON.
const SealedPrefix = "age:"

// IsSealed reports whether text is a sealed value.
func IsSealed(text string) bool {
	return strings.HasPrefix(strings.TrimSpace(text), SealedPrefix)
}

// Unsealer opens sealed values. The node's identities (package sealed's
// Keyring) implement it; a pod's namespace is its input because a sealed
// document is bound to one namespace.
type Unsealer interface {
	// Unseal returns the document text sealed in value for a pod in
	// namespace. Its errors name source and never the value or anything
	// decrypted; they unwrap to an errdefs class.
	Unseal(source, value, namespace string) (string, error)
}

// Option changes how annotation values are read (FromAnnotations,
// ParseValue).
type Option func(*valueOptions)

type valueOptions struct {
	unsealer      Unsealer
	namespace     string
	requireSealed bool
}

// WithUnsealer opens sealed values with u, for a pod in podNamespace.
// Without it a sealed value is refused (FailedPrecondition): the reader
// has no identity to open it with.
func WithUnsealer(u Unsealer, podNamespace string) Option {
	return func(o *valueOptions) { o.unsealer, o.namespace = u, podNamespace }
}

// RequireSealed refuses plain (not sealed) values when on: a node that
// takes only sealed annotations never sees a pod's secret in clear.
func RequireSealed(on bool) Option {
	return func(o *valueOptions) { o.requireSealed = on }
}

// ParseValue reads one annotation value, plain or sealed, into documents.
// A sealed value is opened with the WithUnsealer identities and the text
// inside is parsed as Parse does; that text may not itself be sealed.
func ParseValue(source, value, host string, opts ...Option) ([]Document, error) {
	var o valueOptions
	for _, opt := range opts {
		opt(&o)
	}
	if !IsSealed(value) {
		if o.requireSealed {
			return nil, &Error{Source: source, Reason: "plain-text credential document refused: this node takes only sealed documents (sealed.require); seal it with `ctr-b9 seal` or the imagecreds package"}
		}
		return Parse(source, value, host)
	}
	if len(value) > MaxDocumentBytes {
		return nil, fieldErr(source, "", "sealed document is %d bytes, more than the %d allowed", len(value), MaxDocumentBytes)
	}
	if o.unsealer == nil {
		return nil, &Error{Source: source, Class: errdefs.ErrFailedPrecondition,
			Reason: "sealed document, but there is no identity to open it with (node: sealed.identity_files; ctr-b9: --identity)"}
	}
	text, err := o.unsealer.Unseal(source, value, o.namespace)
	if err != nil {
		return nil, err
	}
	if IsSealed(text) {
		return nil, fieldErr(source, "document", "a sealed document inside a sealed document")
	}
	docs, err := Parse(source, text, host)
	if err != nil {
		return nil, err
	}
	for i := range docs {
		docs[i].Sealed = true
	}
	return docs, nil
}
