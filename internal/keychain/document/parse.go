package document

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/beam-cloud/b9-resolver/internal/keychain/registry"
	"github.com/beam-cloud/b9-resolver/internal/secret"
)

// Limits on what a document may hold. Kubernetes caps all of a pod's
// annotations at 256 KiB; a service-account key is ~2.4 KiB.
const (
	MaxDocumentBytes = 256 << 10
	MaxValueBytes    = 64 << 10
	MaxKeyBytes      = 128
	MaxDocuments     = 64
)

// Document is one credential document, ready for a provider.
type Document struct {
	// Source says where it came from: an annotation key, "auth", "config".
	Source string
	// Registry is the canonical host the document is for; empty means the
	// image being pulled.
	Registry string
	// Type is the document's type, explicit or detected.
	Type Type
	// TypeExplicit is true when the document said its type.
	TypeExplicit bool
	// Keys holds the known credential keys. Unknown keys are dropped (and
	// listed in Ignored) as beta9's ParseCredentialsFromEnv does.
	Keys    map[string]secret.Secret
	Ignored []string
	// Node marks a node credential (the plugin config's documents and
	// files, docker config.json, ctr-b9 --node-document), as opposed to a
	// pod's (annotations, PullImageRequest.auth). Only node documents may
	// use the node's own cloud identity. Parse never sets it:
	// whoever builds a node document does. It is part of Identity.
	Node bool
	// Sealed marks a document that arrived sealed (ParseValue): it was
	// bound to the pod's namespace and is never shown or kept in clear.
	Sealed bool

	identity string
}

// Get returns a key's value (empty if absent).
func (d Document) Get(key string) secret.Secret { return d.Keys[key] }

// Has reports whether a key is present with a non-empty value.
func (d Document) Has(key string) bool { return !d.Keys[key].IsZero() }

// Identity identifies the source credential: the full sha256 over the
// type, registry and every key and value. Two documents with the same
// identity mint the same registry credential, so the tier is part of it:
// a node document and a pod's with the same keys (none, for the node's
// cloud identity) never share a cache entry. Caches and maps key a source
// credential by it, so no two tenants' documents share an entry short of
// a sha256 collision. Never show an Identity, nor any part of it: it is
// unsalted, and a guessable secret could be tested against it offline.
// What people see is a keyed fingerprint of it (secret.Fingerprinter).
func (d Document) Identity() string {
	if d.Node && d.identity != "" {
		return secret.Hash("node", d.identity)
	}
	return d.identity
}

// Matches reports whether the document applies to a canonical host.
func (d Document) Matches(host string) bool { return d.Registry == "" || d.Registry == host }

// Parse reads one annotation value (or any other carrier) into documents.
// host is the canonical host of the image being pulled, used only to
// detect a type from the host when the keys do not decide it; it may be
// empty.
func Parse(source, text, host string) ([]Document, error) {
	if len(text) > MaxDocumentBytes {
		return nil, fieldErr(source, "", "document is %d bytes, more than the %d allowed", len(text), MaxDocumentBytes)
	}
	if !utf8.ValidString(text) {
		return nil, fieldErr(source, "", "document is not valid UTF-8")
	}
	trimmed := strings.TrimSpace(text)
	if trimmed == "" {
		return nil, fieldErr(source, "", "document is empty")
	}
	if IsSealed(trimmed) {
		return nil, fieldErr(source, "", "a sealed document (%s…) where only a plain one is accepted; only pod annotations may be sealed", SealedPrefix)
	}
	if trimmed[0] != '[' && trimmed[0] != '{' {
		return parseUserPass(source, trimmed, host)
	}
	// One decoding pass into generic values; the shapes are checked below
	// so each error can name its field.
	var v any
	if err := json.Unmarshal([]byte(trimmed), &v); err != nil {
		return nil, jsonErr(source, "", err)
	}
	if obj, ok := v.(map[string]any); ok {
		d, err := parseObject(source, "", obj, host)
		if err != nil {
			return nil, err
		}
		return []Document{d}, nil
	}
	arr, _ := v.([]any)
	if len(arr) == 0 {
		return nil, fieldErr(source, "", "empty array of documents")
	}
	if len(arr) > MaxDocuments {
		return nil, fieldErr(source, "", "%d documents, more than the %d allowed", len(arr), MaxDocuments)
	}
	docs := make([]Document, 0, len(arr))
	for i, el := range arr {
		field := fmt.Sprintf("[%d]", i)
		obj, ok := el.(map[string]any)
		if !ok {
			return nil, fieldErr(source, field, "want a JSON object")
		}
		d, err := parseObject(source, field, obj, host)
		if err != nil {
			return nil, err
		}
		docs = append(docs, d)
	}
	return docs, nil
}

// parseUserPass reads "username:password", split at the first colon so a
// password may contain colons.
func parseUserPass(source, text, host string) ([]Document, error) {
	user, pass, ok := strings.Cut(text, ":")
	if !ok {
		return nil, fieldErr(source, "", "not a JSON document and not username:password (no colon)")
	}
	if user == "" {
		return nil, fieldErr(source, "username", "empty in username:password")
	}
	if pass == "" {
		return nil, fieldErr(source, "password", "empty in username:password")
	}
	if strings.ContainsAny(user, "\r\n") {
		return nil, fieldErr(source, "username", "contains a line break")
	}
	keys := map[string]secret.Secret{KeyUsername: secret.New(user), KeyPassword: secret.New(pass)}
	d, err := draft{source: source, keys: keys, host: host}.finish()
	if err != nil {
		return nil, err
	}
	return []Document{d}, nil
}

// parseObject reads an envelope or a flat map. field prefixes error fields
// ("[2]") for arrays.
func parseObject(source, field string, obj map[string]any, host string) (Document, error) {
	var reg, typ string
	for _, name := range []string{"registry", "type"} {
		v, ok := obj[name]
		if !ok {
			continue
		}
		s, ok := v.(string)
		if !ok {
			return Document{}, fieldErr(source, join(field, name), "want a string")
		}
		if name == "registry" {
			reg = s
		} else {
			typ = s
		}
	}
	values := obj
	credField := field
	if c, ok := obj["credentials"]; ok {
		// An envelope: only registry, type and credentials belong at the top.
		credField = join(field, "credentials")
		for k := range obj {
			if k != "registry" && k != "type" && k != "credentials" {
				return Document{}, fieldErr(source, join(field, safeKey(k)), "unexpected field in a credential envelope (want registry, type, credentials)")
			}
		}
		switch c := c.(type) {
		case map[string]any:
			values = c
		case nil:
			values = nil
		default:
			return Document{}, fieldErr(source, credField, "want an object of KEY: \"value\" strings")
		}
	}
	keys := make(map[string]secret.Secret, len(values))
	var ignored []string
	flat := credField == field
	for k, v := range values {
		if flat && (k == "registry" || k == "type") {
			continue
		}
		kf := join(credField, safeKey(k))
		s, ok := v.(string)
		if !ok {
			return Document{}, fieldErr(source, kf, "want a string value")
		}
		if !validKeyName(k) {
			return Document{}, fieldErr(source, kf, "not a credential key name (want A-Z, 0-9 and _)")
		}
		if len(s) > MaxValueBytes {
			return Document{}, fieldErr(source, kf, "value is %d bytes, more than the %d allowed", len(s), MaxValueBytes)
		}
		if !KnownKey(k) {
			ignored = append(ignored, k)
			continue
		}
		if s == "" {
			// beta9 writes empty strings for keys a user left unset.
			continue
		}
		keys[k] = secret.New(s)
	}
	return draft{source: source, field: field, reg: reg, typ: typ, keys: keys, ignored: ignored, host: host}.finish()
}

// draft is a document as read, before its registry, type and keys are
// checked.
type draft struct {
	source string // where it came from (annotation key, config key)
	field  string // prefix of error fields ("[2]" in an array)
	reg    string // "registry" as written
	typ    string // "type" as written
	keys   map[string]secret.Secret
	// ignored are unknown keys, kept by name only.
	ignored []string
	// host is the image's registry, for detecting the type of a document
	// naming none.
	host string
}

// finish checks the registry and type, detects a missing type and checks
// the keys fit it.
func (r draft) finish() (Document, error) {
	d := Document{Source: r.source, Keys: r.keys, Ignored: r.ignored}
	var err error
	if d.Registry, err = r.registry(); err != nil {
		return Document{}, err
	}
	if d.Type, d.TypeExplicit, err = r.documentType(d.Registry); err != nil {
		return Document{}, err
	}
	if err := checkKeys(r.source, join(r.field, "credentials"), d); err != nil {
		return Document{}, err
	}
	d.identity = identify(d)
	return d, nil
}

// registry is the normalised "registry", "" when absent.
func (r draft) registry() (string, error) {
	if r.reg == "" {
		return "", nil
	}
	h, err := registry.NormalizeHost(r.reg)
	if err != nil {
		return "", fieldErr(r.source, join(r.field, "registry"), "not a registry host (want host or host:port)")
	}
	return h, nil
}

// documentType is the "type" given (explicit), else the one detected from
// the keys and the document's registry (or the image's).
func (r draft) documentType(reg string) (t Type, explicit bool, err error) {
	if r.typ != "" {
		t := Type(strings.ToLower(r.typ))
		if !validType(t) {
			return "", false, fieldErr(r.source, join(r.field, "type"), "unknown credential type (want one of %s)", typeList())
		}
		return t, true, nil
	}
	if reg == "" {
		reg = r.host
	}
	t, ok := DetectType(r.keys, reg)
	if !ok {
		return "", false, fieldErr(r.source, join(r.field, "type"), "cannot tell the credential type from the keys; set \"type\" (one of %s)", typeList())
	}
	return t, false, nil
}

// checkKeys enforces what each type needs and, when the type was given,
// refuses secrets that belong to another type: such a document is a
// mistake, and guessing which half was meant would send the wrong secret.
func checkKeys(source, field string, d Document) error {
	if d.TypeExplicit {
		for k := range d.Keys {
			if IsPublicKey(k) || fits(k, d.Type) {
				continue
			}
			return fieldErr(source, join(field, k), "key does not belong to type %s", d.Type)
		}
	}
	need := func(keys ...string) error {
		for _, k := range keys {
			if !d.Has(k) {
				return fieldErr(source, join(field, k), "missing; type %s needs it", d.Type)
			}
		}
		return nil
	}
	switch d.Type {
	case TypePublic:
		for k := range d.Keys {
			if !IsPublicKey(k) {
				return fieldErr(source, join(field, k), "a public document carries no secrets")
			}
		}
	case TypeBasic:
		if firstPresent(d, usernameKeys...) == "" && anySuffix(d, "USERNAME") == "" {
			return fieldErr(source, join(field, KeyUsername), "missing; type basic needs a username (one of %s)", strings.Join(usernameKeys, ", "))
		}
		if firstPresent(d, passwordKeys...) == "" && anySuffix(d, "PASSWORD") == "" {
			return fieldErr(source, join(field, KeyPassword), "missing; type basic needs a password (one of %s)", strings.Join(passwordKeys, ", "))
		}
	case TypeToken:
		if firstPresent(d, TokenKeys...) == "" && !d.Has(KeyGCPAccessToken) {
			return fieldErr(source, field, "type token needs one of %s", strings.Join(TokenKeys, ", "))
		}
	case TypeAWS:
		// No keys at all means the node's ambient AWS identity: for a node
		// document, when the node enables it.
		if d.Has(KeyAWSAccessKeyID) != d.Has(KeyAWSSecretKey) {
			if d.Has(KeyAWSAccessKeyID) {
				return need(KeyAWSSecretKey)
			}
			return need(KeyAWSAccessKeyID)
		}
		if d.Has(KeyAWSSessionToken) && !d.Has(KeyAWSAccessKeyID) {
			return need(KeyAWSAccessKeyID, KeyAWSSecretKey)
		}
	case TypeAzure:
		if d.Has(KeyAzureClientID) || d.Has(KeyAzureClientSecret) {
			return need(KeyAzureClientID, KeyAzureClientSecret)
		}
	}
	return nil
}

func fits(key string, t Type) bool {
	for _, kt := range keyTypes[key] {
		if kt == t {
			return true
		}
	}
	return false
}

func validType(t Type) bool {
	for _, v := range Types {
		if v == t {
			return true
		}
	}
	return false
}

func typeList() string {
	s := make([]string, len(Types))
	for i, t := range Types {
		s[i] = string(t)
	}
	return strings.Join(s, ", ")
}

func validKeyName(k string) bool {
	if k == "" || len(k) > MaxKeyBytes {
		return false
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		if !(c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_') {
			return false
		}
	}
	return true
}

// safeKey is a key name fit for an error message: a well-formed name is
// shown, anything else (which could be a pasted secret) is not.
func safeKey(k string) string {
	if validKeyName(k) || k == "registry" || k == "type" || k == "credentials" {
		return k
	}
	return "<key>"
}

func join(prefix, name string) string {
	switch {
	case prefix == "":
		return name
	case name == "":
		return prefix
	}
	return prefix + "." + name
}

// jsonErr reports a JSON error by position only: encoding/json's messages
// quote the offending character, which may be part of a secret.
func jsonErr(source, field string, err error) error {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syn):
		return fieldErr(source, field, "malformed JSON at byte %d", syn.Offset)
	case errors.As(err, &typ):
		return fieldErr(source, field, "want a JSON %s, found a %s", jsonKind(typ.Type.Kind().String()), typ.Value)
	}
	return fieldErr(source, field, "malformed JSON (truncated)")
}

func jsonKind(goKind string) string {
	switch goKind {
	case "slice":
		return "array"
	case "map":
		return "object"
	}
	return goKind
}
