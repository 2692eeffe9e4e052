package keychain

import (
	"math"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"
)

// Every option refuses a value it cannot use with InvalidArgument naming
// the option and the value, instead of keeping its default silently, and
// accepts a good one.
func TestOptionValues(t *testing.T) {
	key := []byte(strings.Repeat("k", RefKeySize))
	for _, tt := range []struct {
		name string
		opt  Option
		// want is what the error says besides the option's name; "" for
		// a value that is accepted.
		want string
		// check reports whether an accepted value was applied.
		check func(*Keychain) bool
	}{
		{"WithProvider", WithProvider(nil), "nil Provider", nil},
		{"WithProvider", WithProvider(&fakeProvider{typ: "fake"}), "", func(k *Keychain) bool { return k.providers["fake"] != nil }},
		{"WithCacheSize", WithCacheSize(0), "0 is not a positive size", nil},
		{"WithCacheSize", WithCacheSize(-3), "-3 is not a positive size", nil},
		{"WithCacheSize", WithCacheSize(7), "", func(k *Keychain) bool { return k.cacheSize == 7 }},
		{"WithRefreshFraction", WithRefreshFraction(0), "0 is not between 0 and 1", nil},
		{"WithRefreshFraction", WithRefreshFraction(1), "1 is not between 0 and 1", nil},
		{"WithRefreshFraction", WithRefreshFraction(-0.5), "-0.5 is not between 0 and 1", nil},
		{"WithRefreshFraction", WithRefreshFraction(math.NaN()), "NaN is not between 0 and 1", nil},
		{"WithRefreshFraction", WithRefreshFraction(0.8), "", func(k *Keychain) bool { return k.refreshFraction == 0.8 }},
		{"WithMintTimeout", WithMintTimeout(0), "0s is not a positive duration", nil},
		{"WithMintTimeout", WithMintTimeout(-time.Second), "-1s is not a positive duration", nil},
		{"WithMintTimeout", WithMintTimeout(time.Second), "", func(k *Keychain) bool { return k.mintTimeout == time.Second }},
		{"WithRefKey", WithRefKey(nil), "a 0-byte key, want at least 32 bytes", nil},
		{"WithRefKey", WithRefKey(key[:RefKeySize-1]), "a 31-byte key, want at least 32 bytes", nil},
		{"WithRefKey", WithRefKey(key), "", func(k *Keychain) bool { return string(k.refKey) == string(key) }},
		{"WithFingerprintKey", WithFingerprintKey([]byte{}), "a 0-byte key, want at least 32 bytes", nil},
		{"WithFingerprintKey", WithFingerprintKey(key[:16]), "a 16-byte key, want at least 32 bytes", nil},
		{"WithFingerprintKey", WithFingerprintKey(key), "", func(k *Keychain) bool { return k.fp.Keyed() }},
		{"WithClock", WithClock(nil), "nil function", nil},
		{"WithClock", WithClock(func() time.Time { return time.Unix(42, 0) }), "", func(k *Keychain) bool { return k.now().Unix() == 42 }},
	} {
		k, err := New(tt.opt)
		if tt.want == "" {
			if err != nil {
				t.Errorf("%s: a good value refused: %v", tt.name, err)
				continue
			}
			if !tt.check(k) {
				t.Errorf("%s: a good value accepted but not applied", tt.name)
			}
			k.Close()
			continue
		}
		if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "keychain."+tt.name+": ") || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: error %v, want InvalidArgument naming %s and saying %q", tt.name, err, "keychain."+tt.name, tt.want)
		}
		if k != nil {
			t.Errorf("%s: a refused option still returned a keychain", tt.name)
		}
	}
}

// A key's bytes never appear in the error refusing it.
func TestRefusedKeyIsNotShown(t *testing.T) {
	short := []byte(canary[:8])
	for _, o := range []Option{WithRefKey(short), WithFingerprintKey(short)} {
		if _, err := New(o); err == nil || strings.Contains(err.Error(), string(short)) {
			t.Errorf("error %v shows the key or is nil", err)
		}
	}
}
