package sealed

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"

	"filippo.io/age"

	"github.com/beam-cloud/b9-resolver/internal/keychain/document"
)

// Limits on a sealed value. A value is an annotation, so it is bounded by
// document.MaxDocumentBytes; recipients are bounded so a crafted value
// cannot make a node try thousands of key agreements per pull.
const (
	MaxRecipients = 16
	// hintStanza names a recipient by fingerprint; see RecipientFingerprint.
	hintStanza = "b9-recipient"
)

// RecipientFingerprint is the short, public handle of a recipient ("age1…"
// string): "sha256:" and the first 12 hex digits of the sha256 of the
// string, the same as `printf %s age1… | sha256sum | cut -c1-12`. A
// recipient is a public key, so its fingerprint reveals nothing secret.
func RecipientFingerprint(recipient string) string {
	sum := sha256.Sum256([]byte(recipient))
	return "sha256:" + hex.EncodeToString(sum[:])[:12]
}

// ParseRecipient reads one recipient: an X25519 "age1…" key (or a
// post-quantum "age1pq1…" one; age does not mix the two in one value).
func ParseRecipient(s string) (age.Recipient, error) {
	s = strings.TrimSpace(s)
	var (
		r   age.Recipient
		err error
	)
	if strings.HasPrefix(s, "age1pq1") {
		r, err = age.ParseHybridRecipient(s)
	} else {
		r, err = age.ParseX25519Recipient(s)
	}
	if err != nil {
		// age's message quotes the string, which is public; keep ours short.
		return nil, fmt.Errorf("recipient %q is not an age X25519 recipient (age1…)", s)
	}
	return hinted{r: r, fp: RecipientFingerprint(s)}, nil
}

// hinted adds a b9-recipient stanza beside the recipient's own.
type hinted struct {
	r  age.Recipient
	fp string
}

func (h hinted) Wrap(fileKey []byte) ([]*age.Stanza, error) {
	s, _, err := h.WrapWithLabels(fileKey)
	return s, err
}

// WrapWithLabels keeps the wrapped recipient's labels, so age still
// refuses to mix post-quantum and classic recipients.
func (h hinted) WrapWithLabels(fileKey []byte) ([]*age.Stanza, []string, error) {
	var (
		s      []*age.Stanza
		labels []string
		err    error
	)
	if rl, ok := h.r.(age.RecipientWithLabels); ok {
		s, labels, err = rl.WrapWithLabels(fileKey)
	} else {
		s, err = h.r.Wrap(fileKey)
	}
	if err != nil {
		return nil, nil, err
	}
	return append(s, &age.Stanza{Type: hintStanza, Args: []string{h.fp}}), labels, nil
}

// encode is the wire form of an age file.
func encode(ciphertext []byte) string {
	return document.SealedPrefix + base64.StdEncoding.EncodeToString(ciphertext)
}

// decode returns the age file of a wire-form value, checking its size and
// how many recipient stanzas it has before any key agreement is tried.
func decode(source, value string) ([]byte, error) {
	v := strings.TrimSpace(value)
	if !strings.HasPrefix(v, document.SealedPrefix) {
		return nil, invalid(source, "not a sealed document (want %s and base64)", document.SealedPrefix)
	}
	if len(v) > document.MaxDocumentBytes {
		return nil, invalid(source, "sealed document is %d bytes, more than the %d allowed", len(v), document.MaxDocumentBytes)
	}
	raw, err := base64.StdEncoding.DecodeString(v[len(document.SealedPrefix):])
	if err != nil {
		var ce base64.CorruptInputError
		if errors.As(err, &ce) {
			return nil, invalid(source, "sealed document: not base64 at byte %d", int64(ce)+int64(len(document.SealedPrefix)))
		}
		return nil, invalid(source, "sealed document: not base64")
	}
	if !bytes.HasPrefix(raw, []byte("age-encryption.org/v1\n")) {
		return nil, invalid(source, "sealed document: not an age file (age-encryption.org/v1)")
	}
	// Stanzas start with "-> "; the header ends at "--- ". Counting them in
	// the header bounds the work Decrypt will do.
	hdr := raw
	if i := bytes.Index(raw, []byte("\n--- ")); i >= 0 {
		hdr = raw[:i]
	}
	if n := bytes.Count(hdr, []byte("\n-> ")); n > 2*MaxRecipients {
		return nil, invalid(source, "sealed document has %d recipient stanzas, more than the %d allowed", n, 2*MaxRecipients)
	}
	return raw, nil
}

// hints is an age Identity that opens nothing: tried last, it records the
// b9-recipient stanzas of a file no real identity opened.
type hints struct {
	fps      []string
	stanzas  int
	recorded bool
}

func (h *hints) Unwrap(stanzas []*age.Stanza) ([]byte, error) {
	h.recorded = true
	for _, s := range stanzas {
		if s.Type == hintStanza && len(s.Args) == 1 {
			h.fps = append(h.fps, s.Args[0])
		} else if s.Type != hintStanza {
			h.stanzas++
		}
	}
	return nil, age.ErrIncorrectIdentity
}

// Info is what can be read of a sealed value without an identity.
type Info struct {
	// Recipients are the fingerprints the value names (RecipientFingerprint);
	// empty for a value sealed by another tool.
	Recipients []string
	// Stanzas is the number of recipient stanzas (one per recipient).
	Stanzas int
}

// Inspect checks a sealed value's form — prefix, base64, age header —
// without opening it, and returns the recipients it names.
func Inspect(source, value string) (Info, error) {
	raw, err := decode(source, value)
	if err != nil {
		return Info{}, err
	}
	h := &hints{}
	_, err = age.Decrypt(bytes.NewReader(raw), h)
	var nm *age.NoIdentityMatchError
	if !errors.As(err, &nm) || !h.recorded {
		return Info{}, invalid(source, "sealed document: malformed age header (truncated or altered)")
	}
	if h.stanzas == 0 {
		return Info{}, invalid(source, "sealed document has no recipients")
	}
	return Info{Recipients: h.fps, Stanzas: h.stanzas}, nil
}

// readAll reads at most limit bytes of plaintext.
func readAll(r io.Reader, limit int) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, int64(limit)+1))
	if err != nil {
		return nil, err
	}
	if len(b) > limit {
		return nil, errTooLarge
	}
	return b, nil
}

var errTooLarge = errors.New("too large")

func invalid(source, format string, args ...any) error {
	return &document.Error{Source: source, Reason: fmt.Sprintf(format, args...)}
}
