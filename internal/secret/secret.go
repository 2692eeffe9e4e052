package secret

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
)

// Redacted is what every formatting of a Secret prints.
const Redacted = "[redacted]"

// Secret is a credential value (password, token, key) that never prints.
// The zero value is the empty secret.
type Secret struct {
	value string
}

// New wraps s.
func New(s string) Secret { return Secret{value: s} }

// Reveal returns the secret's bytes. Call it only where the value leaves
// the process for its owner (an Authorization header, a token request).
func (s Secret) Reveal() string { return s.value }

// IsZero reports whether the secret is empty.
func (s Secret) IsZero() bool { return s.value == "" }

// Len is the length of the value, for validation messages that must not
// include the value itself.
func (s Secret) Len() int { return len(s.value) }

// Equal compares two secrets without revealing either.
func (s Secret) Equal(o Secret) bool { return s.value == o.value }

// hashPrefix starts every Hash.
const hashPrefix = "sha256:"

// Hash is the full-length identity of any material: "sha256:" and the 64
// hex digits of the sha256 over the parts, each length-prefixed so
// ("ab","c") and ("a","bc") differ. Use it for cache and map keys that
// must keep tenants apart. It is unsalted: keep it in memory, never show
// it — a hash of a guessable secret can be tested offline.
func Hash(parts ...string) string {
	h := sha256.New()
	for _, p := range parts {
		fmt.Fprintf(h, "%d:", len(p))
		h.Write([]byte(p))
	}
	return hashPrefix + hex.EncodeToString(h.Sum(nil))
}

func (s Secret) String() string   { return Redacted }
func (s Secret) GoString() string { return Redacted }

// Format makes every verb (%v %+v %#v %s %q %x ...) print Redacted.
func (s Secret) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(Redacted)) }

// MarshalJSON always encodes Redacted; secrets are never serialised.
func (s Secret) MarshalJSON() ([]byte, error) { return []byte(`"` + Redacted + `"`), nil }

// MarshalText covers encoders that prefer TextMarshaler (TOML, YAML, logfmt).
func (s Secret) MarshalText() ([]byte, error) { return []byte(Redacted), nil }

// LogValue keeps log/slog from reaching the value through reflection.
func (s Secret) LogValue() slog.Value { return slog.StringValue(Redacted) }

// Renderings are the forms a value takes in text that quotes it: as it
// is, trimmed (what a provider sends, and so what a remote echoes), and
// URL- and JSON-escaped. Cutting a value out of a message means cutting
// each of them.
func Renderings(v string) []string {
	var out []string
	for _, s := range []string{v, strings.TrimSpace(v)} {
		j, _ := json.Marshal(s) // a string always marshals
		out = append(out, s, url.QueryEscape(s), url.PathEscape(s), strings.Trim(string(j), `"`))
	}
	return out
}
