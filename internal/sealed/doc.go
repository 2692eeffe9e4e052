// Package sealed reads and writes sealed credential documents: an
// annotation value that only the nodes holding an age identity can read,
// bound to one Kubernetes namespace.
//
// The wire form is "age:" followed by the standard base64 (with padding)
// of a binary age file (age-encryption.org/v1) encrypted to one or more
// X25519 recipients. Beside each recipient's stanza the file carries a
// "b9-recipient" stanza naming the recipient's fingerprint (RecipientFingerprint),
// so a node that cannot open a value can say which keys it was sealed
// for; age ignores stanzas it does not know and the header MAC covers
// them. The plaintext is a small JSON envelope:
//
//	{"v":1,"namespace":"team-a","document":<document>,"not_after":"2026-12-01T00:00:00Z"}
//
// where <document> is any credential document form — an object or array,
// or a JSON string holding the text (username:password, or JSON). The
// node refuses an envelope for another namespace (PermissionDenied) or
// past not_after (InvalidArgument). Keyring holds a node's identities,
// reloads them when their files change, and caches each opened value by
// the sha256 of its text, so a warm pull costs a hash and a map lookup.
package sealed
