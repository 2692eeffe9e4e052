package secret

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
	"testing"
)

// unkeyedFingerprint is what fingerprints used to be: the first 12 hex
// digits of sha256("<len>:"+value), which anyone can compute for a guess.
func unkeyedFingerprint(parts ...string) string {
	h := sha256.New()
	for _, p := range parts {
		fmt.Fprintf(h, "%d:", len(p))
		h.Write([]byte(p))
	}
	return hex.EncodeToString(h.Sum(nil))[:FingerprintDigits]
}

func TestFingerprinter(t *testing.T) {
	keyA, keyB := bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{2}, 32)
	a, b := NewFingerprinter(keyA), NewFingerprinter(keyB)
	fp := a.Secret(New(canary))
	if !strings.HasPrefix(fp, FingerprintPrefix) || len(fp) != len(FingerprintPrefix)+FingerprintDigits {
		t.Fatalf("fingerprint form %q", fp)
	}
	if fp != NewFingerprinter(keyA).Secret(New(canary)) {
		t.Fatal("same key, same value: fingerprints differ")
	}
	if fp == b.Secret(New(canary)) {
		t.Fatal("the same password has the same fingerprint under two keys")
	}
	if fp == a.Secret(New(canary+"x")) {
		t.Fatal("different secrets share a fingerprint")
	}
	if a.Of("ab", "c") == a.Of("a", "bc") {
		t.Fatal("parts are not separated")
	}
	if r := RandomFingerprinter(); r.Secret(New(canary)) == RandomFingerprinter().Secret(New(canary)) {
		t.Fatal("two random fingerprinters agree")
	}
	for _, f := range []Fingerprinter{a, b, RandomFingerprinter()} {
		got := f.Secret(New(canary))
		if strings.Contains(got, canary) || strings.Contains(got, unkeyedFingerprint(canary)) ||
			strings.Contains(got, Hash(canary)[len(hashPrefix):][:FingerprintDigits]) {
			t.Fatalf("fingerprint %q shows the secret or its unkeyed hash", got)
		}
	}
	// Mutating the caller's key slice does not change the Fingerprinter.
	key := bytes.Repeat([]byte{3}, 32)
	c := NewFingerprinter(key)
	before := c.Of("x")
	key[0] = 9
	if c.Of("x") != before {
		t.Fatal("Fingerprinter aliases the caller's key")
	}
}

// Without a key nothing is shown, rather than an unkeyed hash.
func TestFingerprinterZero(t *testing.T) {
	var z Fingerprinter
	if z.Keyed() || z.Of("x") != "" || z.Secret(New(canary)) != "" || NewFingerprinter(nil).Of("x") != "" {
		t.Fatal("a Fingerprinter without a key showed a fingerprint")
	}
	if RandomFingerprinter().Secret(New("")) != "" {
		t.Fatal("the empty secret has a fingerprint")
	}
}
