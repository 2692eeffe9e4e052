// Package keychaintest builds keychains for tests in other packages: New
// with options that must be valid, failing the test when one is refused.
package keychaintest

import (
	"testing"

	"github.com/beam-cloud/b9-resolver/internal/keychain"
)

// New is keychain.New, failing t on an error.
func New(t testing.TB, opts ...keychain.Option) *keychain.Keychain {
	t.Helper()
	k, err := keychain.New(opts...)
	if err != nil {
		t.Fatalf("keychain.New: %v", err)
	}
	return k
}
