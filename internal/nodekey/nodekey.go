// Package nodekey reads and creates the node key — 32 random bytes in a
// 0600 file, the plugin's one long-lived secret of its own — and derives
// from it, by HKDF, a separate key per further purpose (the credential-ref
// key, the fingerprint key). The raw key is used for one thing only, the
// credentials state file's encryption; the derivation lives here alone so
// the plugin and ctr-b9 derive the same keys.
package nodekey

import (
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/containerd/errdefs"
)

// Size is the node key's size, and the size of every derived key.
const Size = 32

// Purpose labels one derivation (the HKDF info). Changing a label changes
// every key derived for it.
type Purpose string

const (
	// CredentialRef keys the HMAC of the keychain's credential refs, the
	// snapshot labels lazy snapshotters look credentials up by.
	CredentialRef Purpose = "b9-resolver credential-ref key v1"
	// Fingerprint keys the HMAC of the fingerprints ListCredentials and
	// ctr-b9 show.
	Fingerprint Purpose = "b9-resolver fingerprint key v1"
	// ImageAccess keys the image access records of
	// ensure_secret_pulled_images: their sealed file and the HMAC
	// fingerprints of the credentials in them.
	ImageAccess Purpose = "b9-resolver image-access key v1"
)

// Derive returns the key for purpose p from the node key.
func Derive(key []byte, p Purpose) ([]byte, error) {
	k, err := hkdf.Key(sha256.New, key, nil, string(p), Size)
	if err != nil {
		return nil, fmt.Errorf("node key: derive %s: %w", p, err)
	}
	return k, nil
}

// Load reads the node key at path. A key readable by group or others, or
// of the wrong size, is refused (FailedPrecondition, naming the path,
// never the key).
func Load(path string) ([]byte, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("node key %s: %w", path, err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("node key %s is mode %s; it must be readable by its owner only (chmod 600): %w",
			path, fi.Mode().Perm(), errdefs.ErrFailedPrecondition)
	}
	key, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("node key %s: %w", path, err)
	}
	if len(key) != Size {
		return nil, fmt.Errorf("node key %s is %d bytes, want %d: %w", path, len(key), Size, errdefs.ErrFailedPrecondition)
	}
	return key, nil
}

// LoadOrCreate reads the node key, creating it (0600, O_EXCL so two
// starting plugins cannot each write their own) when it does not exist.
func LoadOrCreate(path string) ([]byte, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err == nil {
		key := make([]byte, Size)
		_, _ = rand.Read(key) // never fails: it panics if the OS cannot give randomness
		_, werr := f.Write(key)
		serr := f.Sync()
		cerr := f.Close()
		if err := errors.Join(werr, serr, cerr); err != nil {
			os.Remove(path)
			return nil, fmt.Errorf("node key %s: %w", path, err)
		}
		return key, nil
	}
	if !errors.Is(err, fs.ErrExist) {
		return nil, fmt.Errorf("node key %s: %w", path, err)
	}
	return Load(path)
}
