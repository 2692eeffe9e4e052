package sealed

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"filippo.io/age"
	"github.com/containerd/errdefs"

	"github.com/beam-cloud/b9-resolver/internal/keychain/document"
)

// Version is the envelope version this package writes and reads.
const Version = 1

// maxNamespace is Kubernetes' limit on a namespace name (a DNS label).
const maxNamespace = 63

// Envelope is the plaintext of a sealed value.
type Envelope struct {
	// Namespace is the only pod namespace the document may be used in.
	Namespace string
	// Document is the credential document's text, in any form Parse reads.
	// It holds secrets: never print it.
	Document string
	// NotAfter, when not zero, is when the value stops being accepted.
	NotAfter time.Time
}

// envelopeJSON is the envelope on the wire.
type envelopeJSON struct {
	V         int             `json:"v"`
	Namespace string          `json:"namespace"`
	Document  json.RawMessage `json:"document"`
	NotAfter  string          `json:"not_after,omitempty"`
}

// Seal encrypts doc for recipients ("age1…" strings), bound to namespace
// and, when notAfter is not zero, valid until then. doc is any credential
// document form; it must not itself be sealed. The result is the
// annotation value.
func Seal(doc string, recipients []string, namespace string, notAfter time.Time) (string, error) {
	if len(recipients) == 0 {
		return "", fmt.Errorf("seal: no recipients: %w", errdefs.ErrInvalidArgument)
	}
	if len(recipients) > MaxRecipients {
		return "", fmt.Errorf("seal: %d recipients, more than the %d a node accepts: %w", len(recipients), MaxRecipients, errdefs.ErrInvalidArgument)
	}
	if err := checkNamespace(namespace); err != nil {
		return "", fmt.Errorf("seal: %w", err)
	}
	doc = strings.TrimSpace(doc)
	if doc == "" {
		return "", fmt.Errorf("seal: empty document: %w", errdefs.ErrInvalidArgument)
	}
	if document.IsSealed(doc) {
		return "", fmt.Errorf("seal: the document is already sealed: %w", errdefs.ErrInvalidArgument)
	}
	rs := make([]age.Recipient, 0, len(recipients))
	for _, s := range recipients {
		r, err := ParseRecipient(s)
		if err != nil {
			return "", fmt.Errorf("seal: %w: %w", err, errdefs.ErrInvalidArgument)
		}
		rs = append(rs, r)
	}
	env := envelopeJSON{V: Version, Namespace: namespace}
	// A JSON document is embedded as it is; anything else as a string.
	if (doc[0] == '{' || doc[0] == '[') && json.Valid([]byte(doc)) {
		env.Document = json.RawMessage(doc)
	} else {
		env.Document, _ = json.Marshal(doc)
	}
	if !notAfter.IsZero() {
		env.NotAfter = notAfter.UTC().Format(time.RFC3339)
	}
	plain, err := json.Marshal(env)
	if err != nil {
		return "", fmt.Errorf("seal: %w", err)
	}
	var buf bytes.Buffer
	w, err := age.Encrypt(&buf, rs...)
	if err != nil {
		return "", fmt.Errorf("seal: %w: %w", err, errdefs.ErrInvalidArgument)
	}
	if _, err := w.Write(plain); err != nil {
		return "", fmt.Errorf("seal: %w", err)
	}
	if err := w.Close(); err != nil {
		return "", fmt.Errorf("seal: %w", err)
	}
	v := encode(buf.Bytes())
	if len(v) > document.MaxDocumentBytes {
		return "", fmt.Errorf("seal: the sealed value is %d bytes, more than the %d a node accepts: %w", len(v), document.MaxDocumentBytes, errdefs.ErrInvalidArgument)
	}
	return v, nil
}

// Open decrypts value with identities and reads its envelope. It does not
// check the namespace or the expiry (Envelope.Check does). Errors name
// source, never the value or anything decrypted: a value none of the
// identities opens is FailedPrecondition and names the recipients it was
// sealed for and those the identities have; a malformed or altered one
// is InvalidArgument.
func Open(source, value string, identities []age.Identity) (Envelope, error) {
	raw, err := decode(source, value)
	if err != nil {
		return Envelope{}, err
	}
	if len(identities) == 0 {
		return Envelope{}, &document.Error{Source: source, Class: errdefs.ErrFailedPrecondition,
			Reason: "sealed document, but no identity is loaded to open it"}
	}
	h := &hints{}
	r, err := age.Decrypt(bytes.NewReader(raw), append(identities[:len(identities):len(identities)], h)...)
	if err != nil {
		return Envelope{}, openError(source, err, h, identities)
	}
	// The envelope holds at most a document and a few fields.
	plain, err := readAll(r, document.MaxDocumentBytes+1024)
	if errors.Is(err, errTooLarge) {
		return Envelope{}, invalid(source, "sealed document: the plaintext is larger than %d bytes", document.MaxDocumentBytes)
	}
	if err != nil {
		return Envelope{}, invalid(source, "sealed document does not decrypt: the ciphertext is truncated or altered")
	}
	return parseEnvelope(source, plain)
}

// openError explains why no identity opened a value.
func openError(source string, err error, h *hints, identities []age.Identity) error {
	var nm *age.NoIdentityMatchError
	if !errors.As(err, &nm) {
		return invalid(source, "sealed document does not decrypt: the age header is malformed, truncated or altered")
	}
	have := Fingerprints(identities)
	for _, fp := range h.fps {
		for _, mine := range have {
			if fp == mine {
				// Named for a key we hold, yet it does not open: the stanza
				// was altered.
				return invalid(source, "sealed document names this node's recipient %s but does not open with it: the value is altered or corrupted", fp)
			}
		}
	}
	sealedFor := strings.Join(h.fps, ", ")
	if sealedFor == "" {
		sealedFor = fmt.Sprintf("%d recipients it does not name", h.stanzas)
	}
	return &document.Error{Source: source, Class: errdefs.ErrFailedPrecondition,
		Reason: fmt.Sprintf("sealed for %s; the identities here are %s: none of them opens it (seal it for this node's recipient too)", sealedFor, strings.Join(have, ", "))}
}

// Fingerprints are the recipient fingerprints of identities, in order.
func Fingerprints(identities []age.Identity) []string {
	out := make([]string, 0, len(identities))
	for _, id := range identities {
		switch i := id.(type) {
		case *age.X25519Identity:
			out = append(out, RecipientFingerprint(i.Recipient().String()))
		case *age.HybridIdentity:
			out = append(out, RecipientFingerprint(i.Recipient().String()))
		}
	}
	return out
}

// parseEnvelope reads the plaintext strictly: unknown fields, another
// version or a malformed field are errors naming the field.
func parseEnvelope(source string, plain []byte) (Envelope, error) {
	var ej envelopeJSON
	dec := json.NewDecoder(bytes.NewReader(plain))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&ej); err != nil {
		// encoding/json's messages can quote input; give the kind only.
		var ute *json.UnmarshalTypeError
		if errors.As(err, &ute) && ute.Field != "" {
			return Envelope{}, envErr(source, ute.Field, "wrong JSON type")
		}
		if strings.Contains(err.Error(), "unknown field") {
			return Envelope{}, envErr(source, "", "unknown field (want v, namespace, document, not_after)")
		}
		return Envelope{}, envErr(source, "", "the envelope is not a JSON object")
	}
	if dec.More() {
		return Envelope{}, envErr(source, "", "data after the envelope")
	}
	if ej.V != Version {
		return Envelope{}, envErr(source, "v", fmt.Sprintf("version %d is not supported (want %d)", ej.V, Version))
	}
	if err := checkNamespace(ej.Namespace); err != nil {
		return Envelope{}, envErr(source, "namespace", "not a Kubernetes namespace name")
	}
	env := Envelope{Namespace: ej.Namespace}
	raw := bytes.TrimSpace(ej.Document)
	switch {
	case len(raw) == 0 || bytes.Equal(raw, []byte("null")):
		return Envelope{}, envErr(source, "document", "missing")
	case raw[0] == '"':
		if err := json.Unmarshal(raw, &env.Document); err != nil {
			return Envelope{}, envErr(source, "document", "not a JSON string")
		}
	case raw[0] == '{' || raw[0] == '[':
		env.Document = string(raw)
	default:
		return Envelope{}, envErr(source, "document", "want an object, an array or a string")
	}
	if !utf8.ValidString(env.Document) {
		return Envelope{}, envErr(source, "document", "not valid UTF-8")
	}
	if ej.NotAfter != "" {
		t, err := time.Parse(time.RFC3339, ej.NotAfter)
		if err != nil {
			return Envelope{}, envErr(source, "not_after", "not an RFC 3339 time")
		}
		env.NotAfter = t
	}
	return env, nil
}

// Check refuses the envelope for a pod in another namespace
// (PermissionDenied) or after NotAfter (InvalidArgument). The message
// never names the envelope's namespace: the pod that copied a value from
// another namespace learns nothing of it.
func (e Envelope) Check(source, podNamespace string, now time.Time) error {
	if podNamespace == "" {
		return &document.Error{Source: source, Class: errdefs.ErrPermissionDenied,
			Reason: "sealed document, but there is no pod namespace to check it against (sandbox_config.metadata.namespace; ctr-b9: --pod-namespace)"}
	}
	if e.Namespace != podNamespace {
		return &document.Error{Source: source, Class: errdefs.ErrPermissionDenied,
			Reason: fmt.Sprintf("sealed for another namespace than the pod's (%s)", podNamespace)}
	}
	if !e.NotAfter.IsZero() && now.After(e.NotAfter) {
		return &document.Error{Source: source, Field: "not_after",
			Reason: fmt.Sprintf("sealed document expired at %s", e.NotAfter.UTC().Format(time.RFC3339))}
	}
	return nil
}

func envErr(source, field, reason string) error {
	f := "envelope"
	if field != "" {
		f += "." + field
	}
	return &document.Error{Source: source, Field: f, Reason: reason}
}

// checkNamespace accepts a Kubernetes namespace name (RFC 1123 label).
func checkNamespace(ns string) error {
	if ns == "" {
		return fmt.Errorf("namespace is empty: %w", errdefs.ErrInvalidArgument)
	}
	if len(ns) > maxNamespace {
		return fmt.Errorf("namespace is longer than %d characters: %w", maxNamespace, errdefs.ErrInvalidArgument)
	}
	for i := 0; i < len(ns); i++ {
		c := ns[i]
		ok := c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' && i > 0 && i < len(ns)-1
		if !ok {
			return fmt.Errorf("namespace is not a Kubernetes namespace name (lower-case letters, digits, inner dashes): %w", errdefs.ErrInvalidArgument)
		}
	}
	return nil
}
