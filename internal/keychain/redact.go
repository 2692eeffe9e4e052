package keychain

import (
	"sort"
	"strings"

	"github.com/beam-cloud/b9-resolver/internal/keychain/document"
	"github.com/beam-cloud/b9-resolver/internal/secret"
)

// minRedactLen is the shortest document value cut out of messages: a
// shorter one would cut ordinary words, and no real credential is that
// short.
const minRedactLen = 4

// redactDocument cuts every value of doc — secret or not: a tenant id, a
// role ARN, a username are the tenant's too — out of err's message, as it
// is and as URL and JSON encodings render it. Providers never build
// messages from document values; this catches what a remote API echoes
// back (Azure AD names the tenant and application it did not find, STS the
// role it refused, a token endpoint whatever it likes). A value that is
// part of host stays: the message names the host anyway. The returned
// error keeps err's chain for errors.Is and errors.As.
func redactDocument(err error, doc document.Document, host string) error {
	if err == nil {
		return nil
	}
	var vals []string
	for _, v := range doc.Keys {
		for _, s := range secret.Renderings(v.Reveal()) {
			if len(s) >= minRedactLen && !strings.Contains(host, s) {
				vals = append(vals, s)
			}
		}
	}
	msg := err.Error()
	// Longest first, so a value containing another is cut whole.
	sort.Slice(vals, func(i, j int) bool { return len(vals[i]) > len(vals[j]) })
	cut := msg
	for _, v := range vals {
		cut = strings.ReplaceAll(cut, v, secret.Redacted)
	}
	if cut == msg {
		return err
	}
	return &redactedError{msg: cut, err: err}
}

// redactedError is an error whose message had document values cut out.
type redactedError struct {
	msg string
	err error
}

func (e *redactedError) Error() string { return e.msg }
func (e *redactedError) Unwrap() error { return e.err }
