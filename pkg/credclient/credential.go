package credclient

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"time"
)

// Credential is a registry credential the service answered.
type Credential struct {
	// Username is empty for identity tokens and anonymous answers.
	Username string
	// Secret is the password or token. It is printed by no fmt verb and
	// no String method of this type.
	Secret string
	// IdentityToken marks Secret as an OAuth2 refresh token.
	IdentityToken bool
	// Anonymous is an explicit "use no credentials" (the pull was public):
	// do not fall back to other credentials.
	Anonymous bool
	// ExpiresAt is when the registry stops accepting Secret; zero if never.
	ExpiresAt time.Time
	// Ref is the opaque id of the credential (never a secret).
	Ref string
	// Source names where the source credential came from.
	Source string
}

const redacted = "[redacted]"

// String shows everything but the secret, so a Credential that ends up in
// a log line leaks nothing.
func (c Credential) String() string {
	sec := ""
	if c.Secret != "" {
		sec = redacted
	}
	exp := "never"
	if !c.ExpiresAt.IsZero() {
		exp = c.ExpiresAt.UTC().Format(time.RFC3339)
	}
	return fmt.Sprintf("{username=%q secret=%s identity_token=%t anonymous=%t expires=%s ref=%s source=%q}",
		c.Username, sec, c.IdentityToken, c.Anonymous, exp, c.Ref, c.Source)
}

// GoString is String, for %#v.
func (c Credential) GoString() string { return c.String() }

// Format makes every verb (%v %+v %#v %s %q %x) print String.
func (c Credential) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(c.String())) }

// MarshalJSON encodes the credential with the secret redacted: JSON
// loggers read fields, not String.
func (c Credential) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		Username      string    `json:"username,omitempty"`
		Secret        string    `json:"secret,omitempty"`
		IdentityToken bool      `json:"identity_token,omitempty"`
		Anonymous     bool      `json:"anonymous,omitempty"`
		ExpiresAt     time.Time `json:"expires_at,omitzero"`
		Ref           string    `json:"ref,omitempty"`
		Source        string    `json:"source,omitempty"`
	}{c.Username, redactedIf(c.Secret), c.IdentityToken, c.Anonymous, c.ExpiresAt, c.Ref, c.Source})
}

// LogValue keeps log/slog from reaching the secret through reflection.
func (c Credential) LogValue() slog.Value { return slog.StringValue(c.String()) }

func redactedIf(s string) string {
	if s == "" {
		return ""
	}
	return redacted
}

// Request names what to ask for; see GetCredentialsRequest.
type Request struct {
	// Host as the caller knows it; Docker Hub's three names are one.
	Host string
	// Repository within the registry ("library/ubuntu").
	Repository string
	// ImageRef fills Host and Repository when they are empty.
	ImageRef string
	// CredentialRef is the snapshot's containerd.io/snapshot/b9.credential-ref
	// label: when set, only that pull's credential is answered.
	CredentialRef string
}

// Entry is a cached credential on the node, without its secret.
type Entry struct {
	Host, Kind, Type, Source, Provider string
	// Fingerprint identifies the source credential ("hmac:" + 12 hex of an
	// HMAC under a key derived from the plugin's node key; never an
	// unkeyed hash a guess could be tested against).
	Fingerprint string
	ExpiresAt   time.Time
	Ref         string
}
