package secret

import (
	"crypto/hmac"
	crand "crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
)

// FingerprintPrefix starts every fingerprint. It says what the digits
// are: a keyed MAC, which nobody without the key can test a guess against.
const FingerprintPrefix = "hmac:"

// FingerprintDigits is how many hex digits of the HMAC a fingerprint
// keeps: enough for a person to tell credentials apart, far too few to key
// anything by (use Hash, or the full HMAC, for that).
const FingerprintDigits = 12

// FingerprintKeySize is the size of the key RandomFingerprinter makes.
const FingerprintKeySize = 32

// Fingerprinter makes the short handles people see for secrets and
// source credentials (ctr-b9, ListCredentials, cache listings):
// FingerprintPrefix and the first FingerprintDigits hex digits of
// HMAC-SHA256 under its key. An unkeyed hash of a password would let
// anyone holding pasted output test guesses offline; an HMAC tells them
// nothing without the key. Two fingerprints compare only when made under
// the same key: the plugin's key is derived from the node key, so ctr-b9
// given that key shows what the plugin shows.
//
// The zero Fingerprinter has no key and shows nothing: every method
// returns "".
type Fingerprinter struct {
	key []byte
}

// NewFingerprinter returns a Fingerprinter under key (at least 32 secret
// random bytes). An empty key gives the zero Fingerprinter.
func NewFingerprinter(key []byte) Fingerprinter {
	if len(key) == 0 {
		return Fingerprinter{}
	}
	return Fingerprinter{key: append([]byte(nil), key...)}
}

// RandomFingerprinter returns a Fingerprinter under a fresh random key:
// its fingerprints compare with each other and with nothing else.
func RandomFingerprinter() Fingerprinter {
	key := make([]byte, FingerprintKeySize)
	// crypto/rand.Read never fails (it panics if the OS cannot give
	// randomness).
	_, _ = crand.Read(key)
	return Fingerprinter{key: key}
}

// Keyed reports whether f has a key (and so shows fingerprints at all).
func (f Fingerprinter) Keyed() bool { return len(f.key) > 0 }

// Of fingerprints any material, each part length-prefixed as in Hash so
// ("ab","c") and ("a","bc") differ.
func (f Fingerprinter) Of(parts ...string) string {
	if !f.Keyed() {
		return ""
	}
	m := hmac.New(sha256.New, f.key)
	for _, p := range parts {
		fmt.Fprintf(m, "%d:", len(p))
		m.Write([]byte(p))
	}
	return FingerprintPrefix + hex.EncodeToString(m.Sum(nil))[:FingerprintDigits]
}

// Secret fingerprints a secret's value; "" for the empty secret.
func (f Fingerprinter) Secret(s Secret) string {
	if s.IsZero() {
		return ""
	}
	return f.Of(s.value)
}
