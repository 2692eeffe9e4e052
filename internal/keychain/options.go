package keychain

import (
	"fmt"
	"time"

	"github.com/containerd/errdefs"

	"github.com/beam-cloud/b9-resolver/internal/secret"
)

// Option configures a Keychain. An option given a value it cannot use
// returns an error rather than keep the default silently: a caller that
// asked for something and got something else finds out at New.
type Option func(*Keychain) error

// invalidOption is the error of an option refusing its value: the option's
// name and what is wrong, never a key's bytes.
func invalidOption(option, format string, args ...any) error {
	return fmt.Errorf("keychain.%s: %s: %w", option, fmt.Sprintf(format, args...), errdefs.ErrInvalidArgument)
}

// WithProvider adds (or replaces) the provider for its type.
func WithProvider(p Provider) Option {
	return func(k *Keychain) error {
		if p == nil {
			return invalidOption("WithProvider", "a nil Provider")
		}
		k.providers[p.Type()] = p
		return nil
	}
}

// WithCacheSize bounds the number of cached credentials; n > 0.
func WithCacheSize(n int) Option {
	return func(k *Keychain) error {
		if n <= 0 {
			return invalidOption("WithCacheSize", "%d is not a positive size", n)
		}
		k.cacheSize = n
		return nil
	}
}

// WithRefKey sets the key Credential.Ref is an HMAC under. Refs are
// labels on snapshots and appear in logs; under a secret key they tell
// nothing about the credential and cannot be searched for collisions.
// Give the same key (at least RefKeySize random bytes, kept secret) to
// every Keychain whose refs must match, such as the plugin across restarts
// when its pull records persist. Without it each Keychain makes a random
// key, so its refs mean nothing to another process; leave the option out
// for that rather than pass an empty key, which is refused.
func WithRefKey(key []byte) Option {
	return func(k *Keychain) error {
		if len(key) < RefKeySize {
			return invalidOption("WithRefKey", "a %d-byte key, want at least %d bytes", len(key), RefKeySize)
		}
		k.refKey = append([]byte(nil), key...)
		return nil
	}
}

// WithFingerprintKey sets the key a Credential's fingerprints
// (SourceFingerprint, SecretFingerprint) are an HMAC under: at least
// secret.FingerprintKeySize bytes. Give the same key to every process
// whose fingerprints must compare (the plugin and ctr-b9 both derive it
// from the node key). Without it each Keychain makes a random key: its
// fingerprints compare only with each other; leave the option out for
// that rather than pass an empty key, which is refused.
func WithFingerprintKey(key []byte) Option {
	return func(k *Keychain) error {
		if len(key) < secret.FingerprintKeySize {
			return invalidOption("WithFingerprintKey", "a %d-byte key, want at least %d bytes", len(key), secret.FingerprintKeySize)
		}
		k.fp = secret.NewFingerprinter(key)
		return nil
	}
}

// WithClock replaces time.Now (tests).
func WithClock(now func() time.Time) Option {
	return func(k *Keychain) error {
		if now == nil {
			return invalidOption("WithClock", "a nil function")
		}
		k.now = now
		return nil
	}
}

// WithRefreshFraction sets how much of a credential's life passes before
// a background refresh; 0 < f < 1.
func WithRefreshFraction(f float64) Option {
	return func(k *Keychain) error {
		// Written so NaN fails too.
		if !(f > 0 && f < 1) {
			return invalidOption("WithRefreshFraction", "%v is not between 0 and 1", f)
		}
		k.refreshFraction = f
		return nil
	}
}

// WithMintTimeout bounds one mint, foreground or background; d > 0.
func WithMintTimeout(d time.Duration) Option {
	return func(k *Keychain) error {
		if d <= 0 {
			return invalidOption("WithMintTimeout", "%s is not a positive duration", d)
		}
		k.mintTimeout = d
		return nil
	}
}
